//! Named prepared statements across server connections: extended protocol (tokio-postgres, raw messages) and SQL
//! `PREPARE` / `EXECUTE` / `DEALLOCATE`, with clients sharing one or two server connections.

use pgsplit::config::{AuthMethod, PoolMode};
use tokio_postgres::error::SqlState;

use crate::support::proxy::{self, TestProxy, routed};
use crate::support::raw::{
    self, bind, close_statement, describe_statement, exchange, execute, first_columns, parse, sync, tags,
};
use crate::support::{cluster, value};

/// 16 clients over 2 leader connections and 1 per follower, each preparing the same two statements and running
/// them 25 times: every execution succeeds, reads run on followers and writes on the leader, and the server
/// connections hold one shared copy of each statement rather than one per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_run_their_statements_on_whichever_connection_serves_them() {
    let c = cluster();
    let p = routed(c, |config| {
        config.leader.max_connections = 2;
        config.follower_pools[0].max_connections_per_instance = 1;
        // Each read follows the client's own write: with read-your-writes, a read may rightly run on the leader
        // when no follower has replayed that write in time. Here only where statements are prepared matters.
        config.routing.read_your_writes = false;
    })
    .await;
    let setup = p.connect().await;
    setup
        .batch_execute("DROP TABLE IF EXISTS pooling_prepared; CREATE TABLE pooling_prepared (client int, n int)")
        .await
        .unwrap();
    let leader = c.leader().port as i32;
    let followers: Vec<i32> = c.followers().iter().map(|f| f.port as i32).collect();
    let mut clients = Vec::new();
    for id in 0..16i32 {
        let client = p.connect().await;
        let followers = followers.clone();
        clients.push(tokio::spawn(async move {
            let read = client.prepare("SELECT $1::int + 1, inet_server_port()").await.unwrap();
            let write = client
                .prepare("INSERT INTO pooling_prepared VALUES ($1, $2) RETURNING inet_server_port()")
                .await
                .unwrap();
            for n in 0..25i32 {
                let row = client.query_one(&read, &[&n]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), n + 1);
                assert!(followers.contains(&row.get(1)), "a prepared read runs on a follower");
                let row = client.query_one(&write, &[&id, &n]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), leader, "a prepared write runs on the leader");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let on_leader = "(SELECT txid_current()) AS on_the_leader";
    assert_eq!(
        value(&setup, &format!("SELECT count(*) FROM pooling_prepared, {on_leader}")).await,
        "400"
    );
    // Through any of its connections, the leader has pgsplit's shared names only, a handful of them. (The
    // connection that serves this query may hold none: one opened after the clients finished.)
    let prepared = value(
        &setup,
        &format!(
            "SELECT count(*) || ' ' || coalesce(bool_and(name LIKE 'pgsplit\\_%'), true) \
             FROM pg_prepared_statements, {on_leader}"
        ),
    )
    .await;
    let (count, all_renamed) = prepared.split_once(' ').unwrap();
    assert_eq!(all_renamed, "true", "{prepared}");
    assert!(
        count.parse::<u32>().unwrap() <= 4,
        "statements on one connection: {prepared}"
    );
    setup.batch_execute("DROP TABLE pooling_prepared").await.unwrap();
    drop(setup);
    p.stop().await;
}

async fn trust_proxy(pool: usize) -> TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.proxy.pool_mode = PoolMode::Transaction;
    config.leader.max_connections = pool;
    TestProxy::start(config, c).await
}

/// Two clients use the same statement name for different statements on one shared server connection; each gets
/// its own. Duplicate names, Close, unknown names and a failing batch answer as Postgres does.
#[tokio::test]
async fn statement_names_belong_to_their_client() {
    let c = cluster();
    let p = trust_proxy(1).await;
    let (user, db) = (c.app_user(), c.app_database());
    let mut a = raw::login(p.port(), user, db).await;
    let mut b = raw::login(p.port(), user, db).await;
    assert_eq!(tags(&exchange(&mut a, &[parse("q", "SELECT 'a'"), sync()]).await), "1Z");
    assert_eq!(tags(&exchange(&mut b, &[parse("q", "SELECT 'b'"), sync()]).await), "1Z");
    let run = [bind("q"), execute(), sync()];
    for _ in 0..5 {
        assert_eq!(first_columns(&exchange(&mut a, &run).await), ["a"]);
        assert_eq!(first_columns(&exchange(&mut b, &run).await), ["b"]);
    }

    // A name the client already uses: 42P05, and the statement is unchanged.
    let dup = exchange(&mut a, &[parse("q", "SELECT 'c'"), sync()]).await;
    assert_eq!(raw::error_code(&dup).as_deref(), Some("42P05"));
    assert_eq!(first_columns(&exchange(&mut a, &run).await), ["a"]);

    // Close, then the name is free: unknown until prepared again.
    assert_eq!(tags(&exchange(&mut a, &[close_statement("q"), sync()]).await), "3Z");
    let gone = exchange(&mut a, &run).await;
    assert_eq!(raw::error_code(&gone).as_deref(), Some("26000"));
    assert_eq!(tags(&exchange(&mut a, &[close_statement("never"), sync()]).await), "3Z");
    // A name shaped like pgsplit's own never reaches another client's statement.
    let foreign = exchange(&mut a, &[bind("pgsplit_1"), execute(), sync()]).await;
    assert_eq!(raw::error_code(&foreign).as_deref(), Some("26000"));

    // One batch: a statement the connection already has (answered by pgsplit), then one that fails to parse.
    // The failure skips the rest of the batch, so the second statement was never prepared.
    let batch = exchange(
        &mut a,
        &[
            parse("r", "SELECT 'b'"),
            bind("r"),
            execute(),
            parse("bad", "SELEC 1"),
            bind("bad"),
            execute(),
            sync(),
        ],
    )
    .await;
    assert_eq!(tags(&batch), "12DCEZ");
    assert_eq!(raw::error_code(&batch).as_deref(), Some("42601"));
    let bad = exchange(&mut a, &[bind("bad"), execute(), sync()]).await;
    assert_eq!(raw::error_code(&bad).as_deref(), Some("26000"));
    assert_eq!(
        first_columns(&exchange(&mut a, &[bind("r"), execute(), sync()]).await),
        ["b"]
    );
    assert_eq!(first_columns(&exchange(&mut b, &run).await), ["b"]);
    drop((a, b));
    p.stop().await;
}

/// SQL-level prepared statements: per client, routed as what they run, and DEALLOCATE / errors as on Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_and_deallocate_follow_the_client() {
    let c = cluster();
    let p = routed(c, |config| {
        config.leader.max_connections = 1;
        config.follower_pools[0].max_connections_per_instance = 1;
    })
    .await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute("PREPARE q AS SELECT 'a'").await.unwrap();
    b.batch_execute("PREPARE q (int) AS SELECT 'b' || $1").await.unwrap();
    for _ in 0..3 {
        assert_eq!(value(&a, "EXECUTE q").await, "a");
        assert_eq!(value(&b, "EXECUTE q(7)").await, "b7");
    }
    let dup = a.batch_execute("PREPARE q AS SELECT 1").await.unwrap_err();
    assert_eq!(dup.code(), Some(&SqlState::DUPLICATE_PSTATEMENT));
    assert_eq!(value(&a, "EXECUTE q").await, "a");

    // An EXECUTE runs where its statement would: reads on a follower, writes on the leader.
    let leader = c.leader().port.to_string();
    a.batch_execute("PREPARE port AS SELECT inet_server_port()")
        .await
        .unwrap();
    let port = value(&a, "EXECUTE port").await;
    assert_ne!(port, leader, "a prepared read runs on a follower");
    a.batch_execute("DISCARD ALL").await.unwrap();
    let gone = a.simple_query("EXECUTE port").await.unwrap_err();
    assert_eq!(
        gone.code(),
        Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
        "DISCARD ALL drops them"
    );

    a.batch_execute("PREPARE w AS SELECT inet_server_port() FROM (SELECT txid_current()) AS x")
        .await
        .unwrap();
    assert_eq!(value(&a, "EXECUTE w").await, leader);
    a.batch_execute("DEALLOCATE w").await.unwrap();
    let gone = a.simple_query("EXECUTE w").await.unwrap_err();
    assert_eq!(gone.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
    let unknown = a.simple_query("DEALLOCATE nothere").await.unwrap_err();
    assert_eq!(unknown.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
    let message = unknown
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("nothere"), "{message}");

    // A PREPARE run through the extended protocol creates the client's own name on the server: that pins too.
    b.execute("PREPARE px AS SELECT 'x'", &[]).await.unwrap();
    assert_eq!(value(&b, "EXECUTE px").await, "x");
    assert_eq!(
        value(&b, "SELECT inet_server_port()").await,
        leader,
        "pinned: reads stay on the leader"
    );
    b.batch_execute("DISCARD ALL").await.unwrap();
    // PREPARE among other statements pins the client to its leader connection, where the statement lives.
    assert_eq!(value(&b, "PREPARE m AS SELECT 'm'; EXECUTE m").await, "m");
    assert_eq!(value(&b, "EXECUTE m").await, "m");
    assert_eq!(
        value(&b, "SELECT inet_server_port()").await,
        leader,
        "pinned: reads stay on the leader"
    );
    b.batch_execute("DISCARD ALL").await.unwrap();
    drop((a, b));
    p.stop().await;
}

/// A Parse, Describe or Close of a statement pgsplit already knows (same text, same parameter types, described
/// once) is answered without a server connection, while another client holds the only one mid-transaction; the
/// statement is prepared on the connection that runs it later.
#[tokio::test]
async fn a_known_statement_is_prepared_described_and_closed_without_a_server_connection() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.leader.max_connections = 1;
    config.server.checkout_timeout = std::time::Duration::from_millis(500);
    let p = TestProxy::start(config, c).await;
    let (user, db) = (c.app_user(), c.app_database());
    let sql = "SELECT $1::int + 1 AS next";
    let mut a = raw::login(p.port(), user, db).await;
    let first = exchange(&mut a, &[parse("s", sql), describe_statement("s"), sync()]).await;
    assert_eq!(tags(&first), "1tTZ");

    let mut holder = raw::login(p.port(), user, db).await;
    assert_eq!(tags(&exchange(&mut holder, &[raw::query("BEGIN")]).await), "CZ");

    let mut c2 = raw::login(p.port(), user, db).await;
    let started = std::time::Instant::now();
    let answered = exchange(&mut c2, &[parse("mine", sql), describe_statement("mine"), sync()]).await;
    assert_eq!(tags(&answered), "1tTZ", "{answered:?}");
    assert_eq!(answered[1..3], first[1..3], "the same description as the server gave");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "no wait for a connection"
    );
    assert_eq!(tags(&exchange(&mut c2, &[close_statement("mine"), sync()]).await), "3Z");
    assert_eq!(tags(&exchange(&mut c2, &[parse("mine", sql), sync()]).await), "1Z");
    // A statement never prepared needs a server to say whether it is valid: it waits, and times out.
    let unknown = exchange(&mut c2, &[parse("other", "SELECT 'never seen'"), sync()]).await;
    assert_eq!(raw::error_code(&unknown).as_deref(), Some("53300"));

    assert_eq!(tags(&exchange(&mut holder, &[raw::query("COMMIT")]).await), "CZ");
    let run = exchange(&mut c2, &[raw::bind_text("mine", &["41"]), execute(), sync()]).await;
    assert_eq!(first_columns(&run), ["42"], "prepared on the connection that runs it");
    drop((a, holder, c2));
    p.stop().await;
}

/// `pgbench -M prepared -b tpcb-like -c 16 -j 2` through a leader pool of 4: pgbench prepares with a blocking call
/// while other clients of its thread hold connections mid-transaction. Known statements need no connection to be
/// prepared, so nothing waits on a connection its own thread holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_two_threads_fails_no_transaction_through_a_pool_of_four() {
    tokio::task::spawn_blocking(crate::support::pgbench_init).await.unwrap();
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 4).await;
    let args = ["-c", "16", "-j", "2", "-t", "50", "-M", "prepared", "-b", "tpcb-like"];
    let (processed, failed) = crate::support::pgbench_through(p.port(), &args).await;
    eprintln!("pgbench -M prepared -c 16 -j 2 through a pool of 4: {processed} transactions, {failed} failed");
    assert_eq!((processed, failed), (16 * 50, 0));
    p.stop().await;
}
