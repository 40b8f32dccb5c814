//! Sessions over TLS on both sides — the client's TLS session carried through the relay, pgsplit's pooled
//! connections verified (`verify-full`) to a server that takes TCP logins only over TLS — with real clients: pgbench
//! in every protocol, tokio-postgres with COPY both ways, large results and a cancel, and a bare client pipelining
//! thousands of statements while it reads their answers.

use std::pin::pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;

use crate::support::{WAIT, pgbench_counts, psql, raw, tls};
use crate::{SERVER_SIDE_TLS, client_tls, cluster, start, start_with};

/// pgsplit verifies the server's certificate and name.
pub const VERIFIED: &str = "tls = \"verify-full\"\ntls_ca = \"$CA\"";
/// The app user, let in without a password (for the bare clients).
pub const APP_TRUST: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\nauth = \"trust\"\n";

/// `pgbench -i -s 1` on the leader once (over its unix socket, as the app user).
fn pgbench_init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        let leader = c.leader();
        let out = c
            .tools()
            .command("pgbench")
            .args(["-i", "-s", "1", "-q", "-h"])
            .arg(&leader.socket_dir)
            .args(["-p", &leader.port.to_string(), "-U", "app", "app"])
            .output()
            .expect("pgbench runs");
        assert!(
            out.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// tokio-postgres over verified TLS to pgsplit on `port` as app.
async fn connect(port: u16) -> tokio_postgres::Client {
    let conninfo = format!("host=localhost port={port} user=app password=app dbname=app");
    tls::tokio_postgres(&conninfo).await.expect("connects over TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_over_tls_in_every_protocol_has_no_failures() {
    pgbench_init();
    let p = start(&client_tls(), VERIFIED, "").await;
    for protocol in ["simple", "extended", "prepared"] {
        let run = tokio::process::Command::new("pgbench")
            .args([
                "-n",
                "-c",
                "4",
                "-j",
                "2",
                "-t",
                "100",
                "-M",
                protocol,
                "-h",
                "localhost",
                "-p",
            ])
            .arg(p.local_addr().port().to_string())
            .args(["-U", "app", "app"])
            .env("PGHOSTADDR", "127.0.0.1")
            .env("PGPASSWORD", "app")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &tls::pki().ca)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("pgbench ends in time")
            .expect("pgbench runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{protocol}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(pgbench_counts(&stdout), (400, 0), "{protocol}: {stdout}");
    }
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_both_ways_and_large_results_cross_tls_whole() {
    let p = start(&client_tls(), VERIFIED, "").await;
    let client = connect(p.local_addr().port()).await;
    assert_eq!(crate::support::value(&client, SERVER_SIDE_TLS).await, "t");
    client
        .batch_execute("DROP TABLE IF EXISTS tls_copy; CREATE TABLE tls_copy (i int, t text)")
        .await
        .expect("table");
    // 100,000 rows, about 10 MB, in chunks of 64 KiB.
    let rows: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("{i}\trow {i} {}\n", "w".repeat(80)).into_bytes())
        .collect();
    let mut sink = pin!(
        client
            .copy_in::<_, bytes::Bytes>("COPY tls_copy FROM STDIN")
            .await
            .expect("COPY IN")
    );
    for chunk in rows.chunks(64 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("COPY data");
    }
    assert_eq!(sink.finish().await.expect("COPY IN ends"), 100_000);
    let mut back = Vec::with_capacity(rows.len());
    let mut stream = pin!(
        client
            .copy_out("COPY (SELECT * FROM tls_copy ORDER BY i) TO STDOUT")
            .await
            .expect("COPY OUT")
    );
    while let Some(chunk) = stream.next().await {
        back.extend_from_slice(&chunk.expect("COPY OUT data"));
    }
    assert!(
        back == rows,
        "COPY TO STDOUT gave back other bytes ({} of {})",
        back.len(),
        rows.len()
    );
    let all = client
        .query("SELECT i, t FROM tls_copy ORDER BY i", &[])
        .await
        .expect("every row");
    assert_eq!(all.len(), 100_000);
    assert_eq!(all[99_999].get::<_, &str>(1), format!("row 99999 {}", "w".repeat(80)));
    let big = client
        .query_one("SELECT repeat('z', 64000000)", &[])
        .await
        .expect("a 64 MB value");
    assert_eq!(big.get::<_, &str>(0).len(), 64_000_000);
    client.batch_execute("DROP TABLE tls_copy").await.expect("drop");
    drop(client);
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_over_tls_stops_the_query_on_its_tls_server_connection() {
    let p = start(&client_tls(), VERIFIED, "").await;
    let client = connect(p.local_addr().port()).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60) /* tls-cancel-me */").await });
    let c = cluster();
    let active = "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                  WHERE query LIKE '%tls-cancel-me%' AND state = 'active' AND s.ssl AND a.pid <> pg_backend_pid()";
    let deadline = Instant::now() + WAIT;
    while psql(c, c.leader(), active) != "1" {
        assert!(Instant::now() < deadline, "the query never started on a TLS connection");
        tokio::task::yield_now().await;
    }
    // The cancel goes to pgsplit over TLS too, and from pgsplit to the server as server.tls says.
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::pki().client_config());
    token.cancel_query(tls).await.expect("cancel sent");
    let error = sleeper.await.expect("task").expect_err("canceled");
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
    p.shutdown(Duration::from_secs(5)).await;
}

/// Statements a pipelining client sends, half simple and half extended protocol, each with 1 KiB of comment and
/// a 4 KiB result, so that both directions fill every buffer on the way.
const PIPELINED: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pipelining_over_tls_gets_every_answer_in_order() {
    let p = start_with(&client_tls(), VERIFIED, APP_TRUST, "").await;
    let stream = tls::login(p.local_addr().port(), "app", "app").await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let pad = "p".repeat(1024);
    let mut batch = Vec::new();
    for i in 0..PIPELINED {
        let sql = format!("SELECT {i}, repeat('y', 4096) /* {pad} */");
        if i % 2 == 0 {
            batch.extend(raw::message(b'Q', format!("{sql}\0").as_bytes()));
        } else {
            batch.extend([raw::parse("", &sql), raw::bind(""), raw::execute(), raw::sync()].concat());
        }
    }
    let sent = batch.len();
    // Everything is written at once while the answers are read: neither side waits for the other to finish.
    let writing = tokio::spawn(async move {
        writer.write_all(&batch).await?;
        writer.flush().await?;
        std::io::Result::Ok(writer)
    });
    let reading = async {
        let (mut ready, mut next) = (0, 0usize);
        while ready < PIPELINED {
            let mut header = [0u8; 5];
            reader.read_exact(&mut header).await.expect("a message header");
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 4;
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).await.expect("a message body");
            match header[0] {
                b'E' => panic!("error after {ready} answers: {}", String::from_utf8_lossy(&body)),
                b'D' => {
                    let first = raw::first_columns(&[(b'D', body)]);
                    assert_eq!(first, [next.to_string()], "answers out of order");
                    next += 1;
                }
                b'Z' => ready += 1,
                _ => {}
            }
        }
        next
    };
    let rows = tokio::time::timeout(Duration::from_secs(120), reading)
        .await
        .expect("every answer within 120 s");
    assert_eq!(rows, PIPELINED);
    let writer = writing.await.expect("writer task").expect("every statement sent");
    let mut stream = reader.unsplit(writer);
    // The session goes on after the storm.
    let answer = raw::exchange(&mut stream, &[raw::message(b'Q', b"SELECT 'after'\0")]).await;
    assert_eq!(raw::first_columns(&answer), ["after"]);
    eprintln!("pipelined over TLS: {PIPELINED} statements, {} KiB sent", sent >> 10);
    p.shutdown(Duration::from_secs(5)).await;
}
