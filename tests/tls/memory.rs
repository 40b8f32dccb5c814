//! Memory stays bounded with TLS on both sides (docs/robustness.md): the relay's read rule and outflow limits hold,
//! and TLS adds at most `MAX_PENDING_TLS` of ciphertext per direction — measured on the pgsplit process itself, as
//! `tests/core/memory.rs` does without TLS: a client that keeps sending behind `pg_sleep`, and a 200 MB row and a
//! 100 MB notice streaming through two TLS sessions.

use super::sessions::{APP_TRUST, VERIFIED};
use crate::support::process::ProxyProcess;
use crate::support::{raw, tls};
use crate::{client_tls, config_rest};

/// What pgsplit's peak memory may grow by over the idle process (as without TLS).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// pgsplit as a process: clients over TLS only, the leader verified, the app user let in without a password.
async fn proxy(name: &str) -> ProxyProcess {
    ProxyProcess::start(name, &config_rest(&client_tls(), VERIFIED, APP_TRUST, "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_keeps_sending_behind_a_long_statement_is_not_read_further() {
    let p = proxy("tls-closes").await;
    let mut s = tls::login(p.port, "app", "app").await;
    let idle = p.memory_kib("VmRSS");

    raw::send(&mut s, &raw::message(b'Q', b"SELECT pg_sleep(3)\0")).await;
    let chunk = raw::close_statement("s").repeat((1 << 20) / 8);
    let taken = raw::offer_until_refused(&mut s, &chunk, 512 << 20).await;
    let peak = p.memory_kib("VmHWM");
    assert!(
        taken < 64 << 20,
        "pgsplit took {} MB while the statement ran",
        taken >> 20
    );
    assert!(peak < idle + MAX_GROWTH_KIB, "peak {peak} KiB, idle {idle} KiB");
    eprintln!(
        "TLS: closes behind pg_sleep: taken {} KiB, idle {idle} KiB, peak {peak} KiB (+{} KiB)",
        taken >> 10,
        peak.saturating_sub(idle)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_row_and_a_huge_notice_stream_through_tls_on_both_sides() {
    let p = proxy("tls-huge-row").await;
    let mut s = tls::login(p.port, "app", "app").await;
    let idle = p.memory_kib("VmRSS");
    for (sql, tag, at_least) in [
        (
            "SELECT repeat('x', 200000000), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            b'D',
            200_000_000,
        ),
        (
            "DO $$BEGIN RAISE NOTICE '%', repeat('y', 100000000); END$$",
            b'N',
            100_000_000,
        ),
    ] {
        raw::send(&mut s, &raw::message(b'Q', format!("{sql}\0").as_bytes())).await;
        let (largest, last_bytes) = raw::read_to_ready_streaming(&mut s).await;
        assert_eq!(largest.0, tag, "{sql}");
        assert!(largest.1 >= at_least, "{sql}: largest message {} bytes", largest.1);
        if tag == b'D' {
            // The row's last column: the server connection it came through was TLS.
            assert!(last_bytes.ends_with(b"\x00\x00\x00\x01t"), "{:?}", &last_bytes);
        }
    }
    let peak = p.memory_kib("VmHWM");
    assert!(peak < idle + MAX_GROWTH_KIB, "peak {peak} KiB, idle {idle} KiB");
    eprintln!(
        "TLS: 200 MB row and 100 MB notice: idle {idle} KiB, peak {peak} KiB (+{} KiB)",
        peak.saturating_sub(idle)
    );
}
