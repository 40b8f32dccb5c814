//! Memory is bounded per client with backpressure, never by buffering (SPEC §4): a client that keeps sending while
//! its statement runs is not read further, and a huge row or notice streams through in pieces — measured on the
//! pgsplit process itself.

use crate::support::process::ProxyProcess;
use crate::support::{cluster, raw, wait_replayed};

/// What the tests allow pgsplit's peak memory to grow by over the idle process (the goal).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// `[[users]]` (trust, for the raw client), the leader and the shared cluster's followers as the read pool.
fn cluster_config() -> String {
    let c = cluster();
    let followers: Vec<String> = c
        .followers()
        .iter()
        .map(|f| format!("{{ name = \"{}\", host = \"127.0.0.1\", port = {} }}", f.name, f.port))
        .collect();
    format!(
        "[[users]]\nname = \"app\"\npassword = \"app\"\nauth = \"trust\"\n\
         [leader]\nhost = \"127.0.0.1\"\nport = {leader}\n\
         [[follower_pools]]\nname = \"default\"\ninstances = [{followers}]\n\
         [routing]\nread_your_writes = false\n[health]\ninterval = \"100ms\"\n",
        leader = c.leader().port,
        followers = followers.join(", ")
    )
}

/// Behind `SELECT pg_sleep(3)` the client streams Close messages — which pgsplit answers itself, so nothing ever
/// slows them down on the way to a server — for as long as pgsplit takes them (up to 512 MB). pgsplit stops
/// reading: it takes far less than 64 MB of them, and its memory stays within 64 MB of idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_behind_a_long_statement_is_not_read_further() {
    let p = ProxyProcess::start("closes", &cluster_config()).await;
    let mut s = raw::login(p.port, "app", "app").await;
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
        "closes behind pg_sleep: taken {} KiB, idle {idle} KiB, peak {peak} KiB",
        taken >> 10
    );
}

/// A 200 MB row read through a follower (where the read is armed for a re-run on the leader) and a 100 MB notice
/// from the leader reach the client whole, while pgsplit's memory stays within 64 MB of idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_row_from_a_follower_and_a_huge_notice_stream_through() {
    wait_replayed(cluster());
    let p = ProxyProcess::start("huge-row", &cluster_config()).await;
    let mut s = raw::login(p.port, "app", "app").await;
    let idle = p.memory_kib("VmRSS");
    for (sql, tag, at_least) in [
        ("SELECT repeat('x', 200000000), inet_server_port()", b'D', 200_000_000),
        (
            "DO $$BEGIN RAISE NOTICE '%', repeat('y', 100000000); END$$",
            b'N',
            100_000_000,
        ),
    ] {
        raw::send(&mut s, &raw::message(b'Q', format!("{sql}\0").as_bytes())).await;
        let (largest, _) = raw::read_to_ready_streaming(&mut s).await;
        assert_eq!(largest.0, tag, "{sql}");
        assert!(largest.1 >= at_least, "{sql}: largest message {} bytes", largest.1);
    }
    let peak = p.memory_kib("VmHWM");
    assert!(peak < idle + MAX_GROWTH_KIB, "peak {peak} KiB, idle {idle} KiB");
    eprintln!("200 MB row and 100 MB notice: idle {idle} KiB, peak {peak} KiB");
}
