//! Chaos under load: pgbench runs tpcb-like transactions through a leader pool of 4 while 1,000 hostile connections
//! come and go — garbage, half logins, malformed bodies, floods, disconnects mid-message and mid-transaction, stray
//! cancel requests. No pgbench transaction fails, pgsplit's memory stays bounded, and afterwards every pool place
//! and client count is back at baseline (read from the admin API of the pgsplit process).

use std::sync::Arc;
use std::time::Duration;

use pgsplit::admin::Status;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::support::process::ProxyProcess;
use crate::support::{cluster, eventually, pgbench_counts, pgbench_init, raw};

const HOSTILE: usize = 1000;
/// Hostile connections open at once.
const AT_ONCE: usize = 32;

/// One hostile connection of kind `kind` (0..8), to the end.
async fn hostile(port: u16, kind: usize) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let login = raw::startup("app", "app");
    let bytes: Vec<u8> = match kind {
        // Garbage instead of a startup packet.
        0 => b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        // Half a startup packet, then gone.
        1 => login[..login.len() / 2].to_vec(),
        // Logged in, then a Query without its NUL and one that is not UTF-8.
        2 => [
            &login[..],
            &raw::message(b'Q', b"SELECT 1"),
            &raw::message(b'Q', b"SELECT '\xff'\0"),
        ]
        .concat(),
        // Logged in, then a message that promises 1,000 bytes and sends ten.
        3 => [&login[..], b"Q\x00\x00\x03\xec", b"SELECT 1; "].concat(),
        // Logged in, a write transaction started, then gone.
        4 => [
            &login[..],
            &raw::message(
                b'Q',
                b"BEGIN; UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1\0",
            ),
        ]
        .concat(),
        // Logged in, then a flood of Close messages behind a sleeping statement.
        5 => {
            let flood = raw::close_statement("s").repeat(4096);
            [&login[..], &raw::message(b'Q', b"SELECT pg_sleep(0.05)\0"), &flood].concat()
        }
        // A cancel request with a key nobody has.
        6 => [
            16u32.to_be_bytes(),
            80877102u32.to_be_bytes(),
            7u32.to_be_bytes(),
            9u32.to_be_bytes(),
        ]
        .concat(),
        // A length claim of 1 GiB after logging in.
        _ => [&login[..], b"Q\x40\x00\x00\x00"].concat(),
    };
    let _ = s.write_all(&bytes).await;
    if kind == 4 || kind == 5 {
        // Let the statement start before vanishing.
        let _ = tokio::time::timeout(Duration::from_millis(20), raw::read_until_error_or_close(&mut s)).await;
    }
    // Dropped: the connection closes, wherever pgsplit was.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_clean_while_a_thousand_hostile_connections_come_and_go() {
    tokio::task::spawn_blocking(pgbench_init).await.expect("pgbench tables");
    let c = cluster();
    let config = format!(
        "[[users]]\nname = \"app\"\npassword = \"app\"\nauth = \"trust\"\n\
         [leader]\nhost = \"127.0.0.1\"\nport = {}\nmax_connections = 4\n\
         [server]\ncheckout_timeout = \"20s\"\n",
        c.leader().port
    );
    let p = ProxyProcess::start("chaos", &config).await;
    let idle = p.memory_kib("VmRSS");

    let pgbench = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-b",
            "tpcb-like",
            "-c",
            "16",
            "-j",
            "16",
            "-t",
            "100",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(p.port.to_string())
        .args(["-U", "app", "app"])
        .output();
    let port = p.port;
    let chaos = tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(AT_ONCE));
        let mut tasks = Vec::new();
        for i in 0..HOSTILE {
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            tasks.push(tokio::spawn(async move {
                hostile(port, i % 8).await;
                drop(permit);
            }));
        }
        for task in tasks {
            task.await.expect("hostile task");
        }
    });
    let output = pgbench.await.expect("pgbench runs");
    chaos.await.expect("chaos ran");
    let text = String::from_utf8_lossy(&output.stdout);
    let (processed, failed) = pgbench_counts(&text);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!((processed, failed), (1600, 0), "{text}");

    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], p.admin_port));
    eventually("pool and client counts back at baseline", || {
        let answer = futures_block(raw::http_get(admin, "/status"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let status: Status = serde_json::from_str(body).map_err(|e| format!("{e}: {answer}"))?;
        let leader = &status.instances[0];
        let ok = status.clients == 0
            && status.pinned_clients == 0
            && leader.server_connections.active == 0
            && leader.server_connections.waiting == 0
            && leader.outstanding == 0;
        ok.then_some(()).ok_or(format!(
            "clients {}, leader {:?}",
            status.clients, leader.server_connections
        ))
    })
    .await;
    let peak = p.memory_kib("VmHWM");
    eprintln!("chaos: {processed} transactions, 0 failed; idle {idle} KiB, peak {peak} KiB");
    assert!(peak < idle + 64 * 1024, "peak {peak} KiB, idle {idle} KiB");
}

/// Runs a future to completion from synchronous code inside the test's runtime.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}
