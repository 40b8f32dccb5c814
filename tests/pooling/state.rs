//! Session state across pooled server connections: settings follow the client, state that lives on one server
//! connection pins the client there until it is gone, and a server connection goes to the next client clean.

use pgsplit::config::PoolMode;
use tokio_postgres::error::SqlState;

use std::sync::atomic::Ordering;

use crate::support::proxy::{self, TestProxy, routed};
use crate::support::{cluster, eventually, value};

/// A client's SET survives later transactions on other server connections; SET LOCAL ends with its transaction;
/// RESET ALL returns to the server's defaults. Another client shares the connection meanwhile.
#[tokio::test]
async fn settings_follow_the_client_across_transactions() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS pooling_a; CREATE TABLE IF NOT EXISTS pooling_a.only_here (x int); \
         TRUNCATE pooling_a.only_here; INSERT INTO pooling_a.only_here VALUES (42)",
    )
    .await
    .unwrap();
    a.batch_execute("SET search_path TO pooling_a, public").await.unwrap();
    for _ in 0..3 {
        assert_eq!(value(&b, "SHOW search_path").await, "\"$user\", public");
        a.batch_execute("BEGIN").await.unwrap();
        assert_eq!(value(&a, "SELECT x FROM only_here").await, "42");
        a.batch_execute("SET LOCAL statement_timeout = '7s'").await.unwrap();
        assert_eq!(value(&a, "SHOW statement_timeout").await, "7s");
        a.batch_execute("COMMIT").await.unwrap();
        assert_eq!(
            value(&a, "SHOW statement_timeout").await,
            "0",
            "SET LOCAL ends with the transaction"
        );
    }
    a.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(value(&a, "SHOW search_path").await, "\"$user\", public");
    let missing = a.simple_query("SELECT x FROM only_here").await.unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE));
    a.batch_execute("DROP SCHEMA pooling_a CASCADE").await.unwrap();
    drop((a, b));
    p.stop().await;
}

fn pinned(p: &TestProxy) -> usize {
    p.proxy.context().gauges.pinned.load(Ordering::Relaxed)
}

/// Temp tables, session advisory locks and WITH HOLD cursors live on one server connection: the client keeps it
/// (and its reads stay on the leader) until DISCARD ALL or disconnect, while others share the rest of the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_the_client_to_one_leader_connection() {
    let c = cluster();
    let p = routed(c, |config| {
        config.leader.max_connections = 2;
        // The reads here follow the client's own writes; whether a follower has replayed them yet is not the
        // point (read-your-writes may rightly keep such a read on the leader).
        config.routing.read_your_writes = false;
    })
    .await;
    let a = p.connect().await;
    let b = p.connect().await;
    let leader = c.leader().port.to_string();

    a.batch_execute("CREATE TEMP TABLE pooling_temp (x int); INSERT INTO pooling_temp VALUES (1)")
        .await
        .unwrap();
    assert_eq!(pinned(&p), 1);
    for _ in 0..3 {
        assert_eq!(value(&a, "SELECT count(*) FROM pooling_temp").await, "1");
        assert_eq!(
            value(&a, "SELECT inet_server_port()").await,
            leader,
            "a pinned read stays"
        );
        assert_eq!(
            value(&b, "SELECT 2").await,
            "2",
            "the other connection serves everyone else"
        );
    }
    a.batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 3)")
        .await
        .unwrap();
    assert_eq!(value(&a, "FETCH 1 FROM held").await, "1");
    assert_eq!(value(&b, "SELECT 3").await, "3");
    assert_eq!(value(&a, "FETCH 1 FROM held").await, "2");
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(pinned(&p), 0);
    assert_ne!(
        value(&a, "SELECT inet_server_port()").await,
        leader,
        "unpinned reads split again"
    );

    // A session advisory lock is held across transactions and released when its client leaves.
    assert_eq!(value(&a, "SELECT pg_advisory_lock(4242)::text").await, "");
    assert_eq!(value(&b, "SELECT pg_try_advisory_lock(4242)::text").await, "false");
    assert_eq!(value(&a, "SELECT pg_advisory_unlock(4242)::text").await, "true");
    assert_eq!(value(&a, "SELECT pg_advisory_lock(4242)::text").await, "");
    drop(a);
    // Only b is left pinned (its pg_try_advisory_lock might have taken the lock).
    eventually("a's session ends", || {
        (pinned(&p) == 1).then_some(()).ok_or(format!("{} pinned", pinned(&p)))
    })
    .await;
    assert_eq!(value(&b, "SELECT pg_try_advisory_lock(4242)::text").await, "true");
    assert_eq!(value(&b, "SELECT pg_advisory_unlock(4242)::text").await, "true");
    drop(b);
    p.stop().await;
}

/// A client that leaves mid-transaction: its transaction is rolled back and the connection serves the next
/// client clean.
#[tokio::test]
async fn a_client_leaving_mid_transaction_leaves_nothing_behind() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let setup = p.connect().await;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS pooling_left (x int); TRUNCATE pooling_left")
        .await
        .unwrap();
    let leaver = p.connect().await;
    leaver
        .batch_execute("BEGIN; INSERT INTO pooling_left VALUES (1); SET LOCAL work_mem = '77MB'")
        .await
        .unwrap();
    drop(leaver);
    eventually("the leaver's connection is back", || {
        let stats = p.proxy.context().topology.load().leader.pool.stats();
        (stats.total == stats.idle).then_some(()).ok_or(format!("{stats:?}"))
    })
    .await;
    assert_eq!(value(&setup, "SELECT count(*) FROM pooling_left").await, "0");
    assert_eq!(value(&setup, "SHOW work_mem").await, "4MB");
    assert_eq!(value(&setup, "SELECT count(*) FROM pg_prepared_statements").await, "0");
    setup.batch_execute("DROP TABLE pooling_left").await.unwrap();
    drop(setup);
    p.stop().await;
}
