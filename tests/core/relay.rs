//! The relay is transparent: psql, pgbench and tokio-postgres behave through pgsplit as they do directly, in
//! transaction and session pooling.

use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pgsplit::config::PoolMode;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

use crate::support::{WAIT, cluster, pgbench_init, pgbench_through, proxy, psql};

fn first_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("the query returned a row")
}

#[tokio::test]
async fn psql_runs_statements_and_copy_through_the_proxy() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 2).await;
    let out = tokio::process::Command::new("psql")
        .arg(p.conninfo("app", "app"))
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", "CREATE TABLE psql_relay (id int, name text)"])
        .args(["-c", "\\copy psql_relay FROM STDIN"])
        .args([
            "-c",
            "SELECT sum(id) || ':' || string_agg(name, ',' ORDER BY id) FROM psql_relay",
        ])
        .args(["-c", "\\copy (SELECT name FROM psql_relay ORDER BY id DESC) TO STDOUT"])
        .args(["-c", "DROP TABLE psql_relay"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut child = out;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin piped");
        stdin.write_all(b"1\tone\n2\ttwo\n3\tthree\n\\.\n").await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["6:one,two,three", "three", "two", "one"],
        "{stdout}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_16_clients_share_a_pool_of_4_without_errors() {
    tokio::task::spawn_blocking(pgbench_init).await.unwrap();
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 4).await;
    // One thread per client: pgbench prepares each statement with a blocking PQprepare, which stalls every other
    // client of its thread; clients of that thread holding a server connection mid-transaction would then hold
    // it until the checkout timeout (a pool-size deadlock of pgbench's own, through any transaction pooler).
    for (protocol, script) in [
        ("simple", "-S"),
        ("extended", "-S"),
        ("simple", "-N"),
        ("extended", "-N"),
        // Named prepared statements, prepared once per client and bound on whichever connection serves it.
        ("prepared", "-S"),
        ("prepared", "-btpcb-like"),
    ] {
        let args = ["-c", "16", "-j", "16", "-t", "40", "-M", protocol, script];
        let counts = pgbench_through(p.port(), &args).await;
        assert_eq!(counts, (16 * 40, 0), "pgbench -M {protocol} {script}");
    }
    let stats = p.proxy.context().topology.load().leader.pool.stats();
    assert!(stats.total <= 4, "pool cap held: {stats:?}");
    p.stop().await;
}

#[tokio::test]
async fn transactions_errors_and_empty_queries_behave_as_on_postgres() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 2).await;
    let mut client = p.connect().await;
    client
        .batch_execute("CREATE TABLE relay_txn (id int primary key)")
        .await
        .unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO relay_txn VALUES ($1)", &[&1i32]).await.unwrap();
    let rows = tx
        .query("SELECT count(*) FROM relay_txn WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    tx.rollback().await.unwrap();
    assert_eq!(
        first_value(&client.simple_query("SELECT count(*) FROM relay_txn").await.unwrap()),
        "0"
    );

    client.batch_execute("BEGIN").await.unwrap();
    let err = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(first_value(&client.simple_query("SELECT 41 + 1").await.unwrap()), "42");

    let empty = client.simple_query("").await.expect("an empty query is not an error");
    assert!(!empty.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    let results = client.simple_query("SELECT 1; SELECT 2").await.unwrap();
    assert_eq!(
        results
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count(),
        2
    );
    client.batch_execute("DROP TABLE relay_txn").await.unwrap();
    drop(client);
    p.stop().await;
}

#[tokio::test]
async fn session_mode_carries_prepared_statements_copy_notices_and_notifications() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Session, 2).await;
    let (client, mut messages) = p.connect_with_messages("").await;
    client
        .batch_execute("CREATE TABLE relay_copy (id int, name text)")
        .await
        .unwrap();

    let statement = client.prepare("SELECT $1::int * 2").await.unwrap();
    for i in 0..5i32 {
        assert_eq!(
            client.query_one(&statement, &[&i]).await.unwrap().get::<_, i32>(0),
            i * 2
        );
    }

    let sink = client.copy_in("COPY relay_copy FROM STDIN BINARY").await.unwrap();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]));
    for i in 0..1000i32 {
        writer.as_mut().write(&[&i, &format!("row {i}")]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 1000);
    let mut out = Vec::new();
    let mut stream = pin!(
        client
            .copy_out("COPY (SELECT name FROM relay_copy ORDER BY id) TO STDOUT")
            .await
            .unwrap()
    );
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1000);
    assert_eq!(text.lines().last(), Some("row 999"));

    let mut bad = pin!(
        client
            .copy_in::<_, bytes::Bytes>("COPY relay_copy FROM STDIN")
            .await
            .unwrap()
    );
    bad.send(bytes::Bytes::from_static(b"not-a-number\tx\n")).await.unwrap();
    let err = bad.finish().await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    assert_eq!(
        first_value(&client.simple_query("SELECT count(*) FROM relay_copy").await.unwrap()),
        "1000"
    );

    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        .await
        .unwrap();
    let notice = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert!(matches!(notice, AsyncMessage::Notice(n) if n.message() == "hello from the server"));

    client.batch_execute("LISTEN relay_channel").await.unwrap();
    let other = p.connect().await;
    other.batch_execute("NOTIFY relay_channel, 'ping'").await.unwrap();
    let notification = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert!(
        matches!(notification, AsyncMessage::Notification(n) if n.channel() == "relay_channel" && n.payload() == "ping")
    );

    client.batch_execute("DROP TABLE relay_copy").await.unwrap();
    drop((client, other));
    p.stop().await;
}

#[tokio::test]
async fn cancel_request_stops_the_query_on_its_server_connection() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 2).await;
    let client = p.connect().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60) /* cancel-me */").await });
    // The cancel must reach a running query: wait until the server shows it.
    let deadline = Instant::now() + WAIT;
    let active_sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%cancel-me%' AND state = 'active' \
                      AND pid <> pg_backend_pid()";
    while psql(c, c.leader(), active_sql) != "1" {
        assert!(Instant::now() < deadline, "the query never started");
        tokio::task::yield_now().await;
    }
    token.cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(30));
    p.stop().await;
}

#[tokio::test]
async fn each_client_keeps_its_own_settings_on_shared_server_connections() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let (alpha, _) = p
        .connect_with_messages("application_name=alpha options='-c search_path=alpha_schema'")
        .await;
    let (beta, _) = p
        .connect_with_messages("application_name=beta options='-c statement_timeout=1234'")
        .await;
    for _ in 0..3 {
        let a = alpha
            .simple_query("SHOW application_name; SHOW search_path; SHOW statement_timeout")
            .await
            .unwrap();
        let b = beta
            .simple_query("SHOW application_name; SHOW search_path; SHOW statement_timeout")
            .await
            .unwrap();
        let values = |m: &[SimpleQueryMessage]| -> Vec<String> {
            m.iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(values(&a), ["alpha", "alpha_schema", "0"]);
        assert_eq!(values(&b), ["beta", "\"$user\", public", "1234ms"]);
    }
    // A SET of a reported parameter becomes part of the client's session, on any server connection.
    alpha.batch_execute("SET application_name = 'alpha2'").await.unwrap();
    assert_eq!(
        first_value(&beta.simple_query("SHOW application_name").await.unwrap()),
        "beta"
    );
    assert_eq!(
        first_value(&alpha.simple_query("SHOW application_name").await.unwrap()),
        "alpha2"
    );
    drop((alpha, beta));
    p.stop().await;
}
