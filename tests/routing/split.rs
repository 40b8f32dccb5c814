//! Read/write splitting through pgsplit against a real cluster: which instance serves what (asked of the server
//! itself with `inet_server_port()`), balance by weight, and followers leaving and rejoining the read set.

use std::collections::HashMap;
use std::time::Duration;

use pgsplit::config::FollowerPoolConfig;
use pgsplit::router::route::SLOW_START;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::support::proxy::routed;
use crate::support::{LocalCluster, StopMode, cluster, eventually, private_cluster, psql, value, wait_replayed};

fn ports(cluster: &LocalCluster) -> (String, Vec<String>) {
    (
        cluster.leader().port.to_string(),
        cluster.followers().iter().map(|f| f.port.to_string()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_followers_and_writes_and_transactions_to_the_leader() {
    let c = cluster();
    // Without read-your-writes: after the CREATE TABLE below, a follower whose replay position the monitor has not
    // seen pass the client's write yet would rightly get none of its reads (on a loaded machine, for all 200).
    let p = routed(c, |config| config.routing.read_your_writes = false).await;
    let client = p.connect().await;
    let (leader, followers) = ports(c);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS split_rw (port int)")
        .await
        .unwrap();

    let mut served = HashMap::new();
    for _ in 0..200 {
        *served
            .entry(value(&client, "SELECT inet_server_port()").await)
            .or_insert(0) += 1;
    }
    assert!(
        served.keys().all(|port| followers.contains(port)),
        "reads served by {served:?}"
    );
    assert_eq!(served.len(), 2, "both followers serve reads: {served:?}");
    assert_eq!(
        value(&client, "SHOW pgsplit.route").await.split(' ').nth(1),
        Some("reason=read")
    );

    let inserted = value(&client, "INSERT INTO split_rw SELECT inet_server_port() RETURNING port").await;
    assert_eq!(inserted, leader);
    assert_eq!(
        value(&client, "SHOW pgsplit.route").await,
        "instance=leader reason=write"
    );
    assert_eq!(value(&client, "SELECT inet_server_port() FOR UPDATE").await, leader);
    assert_eq!(
        value(
            &client,
            "WITH w AS (DELETE FROM split_rw RETURNING 1) SELECT inet_server_port()"
        )
        .await,
        leader
    );
    assert_eq!(
        value(
            &client,
            "SELECT inet_server_port() FROM (SELECT txid_current()) AS assigns_an_xid"
        )
        .await,
        leader
    );

    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        leader,
        "a plain BEGIN runs on the leader"
    );
    client.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    let port = value(&client, "SELECT inet_server_port()").await;
    assert!(
        followers.contains(&port),
        "BEGIN READ ONLY runs on a follower, got {port}"
    );
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        port,
        "the whole transaction stays there"
    );
    client.batch_execute("COMMIT").await.unwrap();

    // A read-only session's plain BEGIN is a read-only transaction: a follower's.
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert!(followers.contains(&value(&client, "SELECT inet_server_port()").await));
    client.batch_execute("COMMIT").await.unwrap();
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        .await
        .unwrap();

    // No write ever reached a follower.
    for follower in p.proxy.context().topology.load().pools[0].instances.iter() {
        let routed = follower.routed();
        assert!(
            routed
                .iter()
                .all(|(reason, _)| matches!(*reason, "read" | "read_only_transaction")),
            "{}: {routed:?}",
            follower.name
        );
    }
    client.batch_execute("DROP TABLE split_rw").await.unwrap();
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_two_split_a_thousand_reads_one_to_two() {
    let c = cluster();
    let p = routed(c, |config| config.follower_pools[0].instances[1].weight = 2).await;
    let topology = p.proxy.context().topology.clone();
    eventually("slow start over", || {
        let t = topology.load();
        let ramping = t.pools[0]
            .instances
            .iter()
            .any(|i| i.health.usable_for().is_none_or(|d| d < SLOW_START));
        (!ramping).then_some(()).ok_or("still ramping".into())
    })
    .await;
    let client = p.connect().await;
    let (_, followers) = ports(c);
    let mut to_second = 0;
    for _ in 0..1000 {
        let port = value(&client, "SELECT inet_server_port()").await;
        assert!(followers.contains(&port), "a read went to {port}");
        to_second += usize::from(port == followers[1]);
    }
    // Weight 2 of 3: 667 expected; ±10% of that.
    assert!((600..=733).contains(&to_second), "f2 served {to_second} of 1000");
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_gets_no_reads_until_it_catches_up() {
    let c = private_cluster(2);
    let p = routed(&c, |config| {
        config.follower_pools[0].max_lag_seconds = Duration::from_secs(1)
    })
    .await;
    let (lagging, steady) = (&c.followers()[1], c.followers()[0].port.to_string());
    psql(&c, c.leader(), "CREATE TABLE lag_probe (v int)");
    psql(&c, lagging, "ALTER SYSTEM SET recovery_min_apply_delay = '10min'");
    psql(&c, lagging, "SELECT pg_reload_conf()");
    let topology = p.proxy.context().topology.clone();
    let lagging_name = lagging.name.clone();
    let instance = move || {
        topology
            .load()
            .instances()
            .find(|i| *i.name == lagging_name)
            .cloned()
            .unwrap()
    };
    let leader = c.leader().clone();
    let mut writes = 0;
    eventually("the delayed follower becomes unusable", || {
        writes += 1;
        psql(&c, &leader, &format!("INSERT INTO lag_probe VALUES ({writes})"));
        instance()
            .health
            .usable_for()
            .is_none()
            .then_some(())
            .ok_or(format!("{:?}", instance().health.snapshot()))
    })
    .await;
    let client = p.connect().await;
    for _ in 0..100 {
        assert_eq!(
            value(&client, "SELECT inet_server_port()").await,
            steady,
            "reads avoid the lagging follower"
        );
    }
    psql(&c, lagging, "ALTER SYSTEM RESET recovery_min_apply_delay");
    psql(&c, lagging, "SELECT pg_reload_conf()");
    eventually("the follower catches up and is usable again", || {
        instance()
            .health
            .usable_for()
            .is_some()
            .then_some(())
            .ok_or(format!("{:?}", instance().health.snapshot()))
    })
    .await;
    let lagging_port = lagging.port.to_string();
    let mut back = false;
    for _ in 0..200 {
        back |= value(&client, "SELECT inet_server_port()").await == lagging_port;
    }
    assert!(back, "the caught-up follower serves reads again");
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_is_ejected_and_reads_keep_succeeding() {
    let c = private_cluster(2);
    let p = routed(&c, |_| {}).await;
    let client = p.connect().await;
    for _ in 0..50 {
        value(&client, "SELECT 1").await;
    }
    let stopped = c.followers()[0].clone();
    c.stop_instance(&stopped, StopMode::Fast).unwrap();
    let stopped_port = stopped.port.to_string();
    for _ in 0..300 {
        let port = value(&client, "SELECT inet_server_port()").await;
        assert_ne!(port, stopped_port);
    }
    c.start_instance(&stopped).unwrap();
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_user_function_that_inserts_runs_on_the_leader() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "CREATE TABLE IF NOT EXISTS fn_audit (port int); \
         CREATE OR REPLACE FUNCTION record_visit() RETURNS int LANGUAGE sql \
         AS $$ INSERT INTO fn_audit SELECT inet_server_port() RETURNING port $$; \
         GRANT ALL ON fn_audit TO app",
    );
    wait_replayed(c);
    let p = routed(c, |_| {}).await;
    let client = p.connect().await;
    let (leader, _) = ports(c);
    assert_eq!(value(&client, "SELECT record_visit()").await, leader);
    assert_eq!(
        value(&client, "SHOW pgsplit.route").await,
        "instance=leader reason=function"
    );
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_endpoint_serves_only_its_own_instances() {
    let c = cluster();
    let f2 = c.followers()[1].clone();
    let p = routed(c, |config| {
        let mut analytics: FollowerPoolConfig = config.follower_pools[0].clone();
        analytics.name = "analytics".into();
        analytics.listen = Some("127.0.0.1:0".parse().unwrap());
        analytics.instances.retain(|i| i.name == f2.name);
        config.follower_pools.push(analytics);
    })
    .await;
    let topology = p.proxy.context().topology.clone();
    eventually("the analytics follower is usable", || {
        let ok = topology.load().pools[1].instances[0].health.usable_for().is_some();
        ok.then_some(()).ok_or("not yet".into())
    })
    .await;
    let addr = p.proxy.pool_addr("analytics").expect("the pool listens");
    let conninfo = format!("host=127.0.0.1 port={} user=app password=app dbname=app", addr.port());
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..50 {
        assert_eq!(value(&client, "SELECT inet_server_port()").await, f2.port.to_string());
    }
    let err = client
        .simple_query("CREATE TABLE never_on_a_follower (id int)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    drop(client);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_a_follower_refuses_runs_again_on_the_leader_unseen_and_is_remembered() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "CREATE TABLE IF NOT EXISTS sneaky_log (port int); \
         CREATE OR REPLACE FUNCTION sneaky_write(v int) RETURNS int LANGUAGE sql \
         AS $$ INSERT INTO sneaky_log SELECT inet_server_port() RETURNING v $$; \
         GRANT ALL ON sneaky_log TO app",
    );
    wait_replayed(c);
    // Declared safe by mistake: the classifier sends it to a follower, which refuses it (25006).
    let p = routed(c, |config| {
        config.routing.read_only_functions = vec!["sneaky_write".into()]
    })
    .await;
    let client = p.connect().await;
    assert_eq!(
        value(&client, "SELECT sneaky_write(7)").await,
        "7",
        "the client never sees the refusal"
    );
    assert_eq!(
        value(&client, "SHOW pgsplit.route").await,
        "instance=leader reason=retry_25006"
    );
    assert_eq!(value(&client, "SELECT sneaky_write(8)").await, "8");
    assert_eq!(
        value(&client, "SHOW pgsplit.route").await,
        "instance=leader reason=known_write"
    );

    // The extended protocol: an unnamed statement parsed, bound and run in one batch (as most drivers send it).
    let typed = "SELECT sneaky_write($1) AS typed";
    for (v, reason) in [(9, "retry_25006"), (10, "known_write")] {
        let row = client.query_typed_one(typed, &[(&v, Type::INT4)]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), v, "the client never sees the refusal");
        assert_eq!(
            value(&client, "SHOW pgsplit.route").await,
            format!("instance=leader reason={reason}")
        );
    }
    // A named statement prepared in one batch, then bound and run in later ones.
    let named = client.prepare("SELECT sneaky_write($1) AS named").await.unwrap();
    for (v, reason) in [(11, "retry_25006"), (12, "known_write")] {
        let row = client.query_one(&named, &[&v]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), v, "the client never sees the refusal");
        assert_eq!(
            value(&client, "SHOW pgsplit.route").await,
            format!("instance=leader reason={reason}")
        );
    }
    let (leader, _) = ports(c);
    assert_eq!(
        psql(
            c,
            c.leader(),
            "SELECT count(*) FROM sneaky_log WHERE port <> inet_server_port()"
        ),
        "0"
    );
    assert_ne!(
        value(&client, "SELECT inet_server_port()").await,
        leader,
        "plain reads still use followers"
    );
    drop(client);
    p.stop().await;
}

/// A follower backend ended while its connection sat in pgsplit's pool (terminated; a fast shutdown does the same):
/// the next reads borrow those connections within the second in which they are not probed, find them gone (FATAL
/// 57P01, or the socket closed), and run again elsewhere. The client sees every answer and no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_pooled_follower_connections_whose_sessions_ended_run_again_unseen() {
    let c = private_cluster(2);
    let p = routed(&c, |config| config.routing.read_your_writes = false).await;
    let client = p.connect().await;
    let (_, followers) = ports(&c);
    // Both followers serve reads, so both hold pooled connections.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(value(&client, "SELECT inet_server_port()").await);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "reads reached {seen:?} of the followers {followers:?}");
    let others = "FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid() \
                  AND backend_type = 'client backend' AND application_name NOT LIKE 'pgsplit-%'";
    for follower in c.followers() {
        let direct = crate::support::proxy::connect_direct(&c, follower).await;
        let terminated = value(&direct, &format!("SELECT count(pg_terminate_backend(pid)) {others}")).await;
        assert_ne!(terminated, "0", "pgsplit kept no connection to {}", follower.name);
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        while value(&direct, &format!("SELECT count(*) {others}")).await != "0" {
            assert!(
                std::time::Instant::now() < give_up,
                "the terminated backends of {} did not exit",
                follower.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for _ in 0..20 {
        let port = client
            .simple_query("SELECT inet_server_port()")
            .await
            .unwrap_or_else(|e| panic!("a read after the follower sessions ended: {e:?}"));
        assert!(!port.is_empty());
    }
    drop(client);
    p.stop().await;
}
