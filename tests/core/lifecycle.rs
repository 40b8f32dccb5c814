//! The `pgsplit` process: SIGTERM stops accepting, lets a running transaction commit, then exits 0.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::support::{WAIT, cluster, psql};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_transactions_then_exits_zero() {
    let c = cluster();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pgsplit-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [[users]]\nname = \"app\"\npassword = \"app\"\n[leader]\nhost = \"127.0.0.1\"\nport = {leader}\n",
            admin = free_port(),
            leader = c.leader().port
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["run", "-c"])
        .arg(&config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("pgsplit starts");
    let conninfo = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let deadline = Instant::now() + WAIT;
    let (client, connection) = loop {
        match tokio_postgres::connect(&conninfo, NoTls).await {
            Ok(pair) => break pair,
            Err(e) if Instant::now() < deadline => {
                assert!(child.try_wait().unwrap().is_none(), "pgsplit exited early: {e}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("pgsplit never accepted: {e}"),
        }
    };
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS lifecycle (v text); BEGIN; INSERT INTO lifecycle VALUES ('drained')")
        .await
        .unwrap();

    let pid = child.id().expect("running") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::task::yield_now().await;
    }
    client
        .batch_execute("COMMIT")
        .await
        .expect("the running transaction may finish");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        psql(c, c.leader(), "SELECT count(*) FROM lifecycle WHERE v = 'drained'"),
        "1"
    );
    psql(c, c.leader(), "DROP TABLE lifecycle");
    std::fs::remove_dir_all(&dir).unwrap();
}
