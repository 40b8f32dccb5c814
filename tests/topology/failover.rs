//! Promotions made outside pgsplit, and a leader that is gone.

use std::time::{Duration, Instant};

use pgsplit::config::Config;
use pgsplit::demo::cluster::StopMode;

use super::files::{ConfigDir, config_text};
use crate::support::proxy::TestProxy;
use crate::support::{eventually, private_cluster, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_promoted_outside_pgsplit_takes_the_writes_from_a_leader_still_up() {
    let c = private_cluster(2);
    let dir = ConfigDir::new(&config_text(&c, &[1, 1], ""));
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let topology = p.proxy.context().topology.clone();
    let client = p.connect().await;
    let write_port = "BEGIN; SELECT inet_server_port(); COMMIT";
    assert_eq!(value(&client, write_port).await, c.leader().port.to_string());
    let old_leader = topology.load().leader.clone();

    // As Patroni or a console would: promote f2 behind pgsplit's back; the old leader stays up and writable.
    let f2 = c.instance("f2").unwrap().clone();
    c.psql(&f2, "SELECT pg_promote()").expect("f2 promoted");
    let promoted_at = Instant::now();
    eventually("f2 adopted as the leader", || {
        let leader = topology.load().leader.name.clone();
        (&*leader == "f2").then_some(()).ok_or(format!("leader is {leader}"))
    })
    .await;
    println!(
        "promotion adopted {} ms after pg_promote returned",
        promoted_at.elapsed().as_millis()
    );
    assert!(old_leader.is_retired(), "the old leader takes nothing new");
    for _ in 0..20 {
        assert_eq!(
            value(&client, write_port).await,
            f2.port.to_string(),
            "writes go to f2 only"
        );
    }
    let leader_writable = c.psql(c.leader(), "SELECT pg_is_in_recovery()").unwrap();
    assert_eq!(
        leader_writable.trim(),
        "f",
        "the old leader was up and writable all along"
    );
    let written = Config::load(&dir.path()).expect("rewritten file is valid");
    assert_eq!(written.leader.name, "f2", "a later reload keeps f2 as the leader");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_fails_writes_with_57p03_after_the_checkout_timeout_and_reads_go_on() {
    let c = private_cluster(1);
    let text = config_text(&c, &[1], "").replace("checkout_timeout = \"5s\"", "checkout_timeout = \"1s\"");
    let dir = ConfigDir::new(&text);
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let topology = p.proxy.context().topology.clone();
    eventually("f1 usable", || {
        topology.load().pools[0].instances[0]
            .health
            .usable_for()
            .map(drop)
            .ok_or("not yet".into())
    })
    .await;
    let client = p.connect().await;
    c.stop_instance(c.leader(), StopMode::Immediate).expect("leader killed");
    // A unit already sent on a connection the crash cut gets 08006 (pgsplit cannot know whether it committed);
    // this test is about the writes that come after the monitor has seen the leader go.
    eventually("the monitor sees the leader down", || {
        (!topology.load().leader.health.snapshot().up)
            .then_some(())
            .ok_or("still up".into())
    })
    .await;

    let started = Instant::now();
    let error = client
        .simple_query("CREATE TABLE lost (id int)")
        .await
        .expect_err("no leader to write to");
    let waited = started.elapsed();
    let code = error.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("57P03"), "{error}");
    assert!(
        waited >= Duration::from_millis(900),
        "waited for the leader: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "but not much longer than checkout_timeout: {waited:?}"
    );
    // The session goes on, and reads are served by the follower.
    // (pg_is_in_recovery() itself is read on the leader: a follower would answer for the wrong instance.)
    let follower_port = c.followers()[0].port.to_string();
    assert_eq!(value(&client, "SELECT inet_server_port()").await, follower_port);
    assert_eq!(topology.load().leader.name.as_ref(), "leader", "nothing was promoted");
    p.stop().await;
}

/// Units queued for a connection while the topology swaps: a write waiting for the old leader's only connection is
/// failed at once by its retired pool and runs on the new leader (the old one lends nothing, and closes what it
/// has); a read that waited for a follower's only connection while that follower was promoted is routed again once
/// it gets the connection, not run as a follower read on what is now the leader (`role_still_holds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_queued_across_a_promotion_never_run_on_a_retired_leader_nor_in_a_stale_role() {
    let c = private_cluster(2);
    // One leader connection; f2 alone in the read pool, with one connection; a generous checkout bound.
    let text: String = config_text(&c, &[1, 1], "")
        .lines()
        .filter(|line| !line.contains("name = \"f1\""))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("max_connections_per_instance = 10", "max_connections_per_instance = 1")
        .replace("max_connections = 10", "max_connections = 1")
        .replace("checkout_timeout = \"5s\"", "checkout_timeout = \"60s\"");
    let dir = ConfigDir::new(&text);
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let topology = p.proxy.context().topology.clone();
    let old_leader = topology.load().leader.clone();
    let f2 = topology.load().pools[0].instances[0].clone();
    assert_eq!(&*f2.name, "f2");
    eventually("f2 usable", || f2.health.usable_for().map(drop).ok_or("not yet".into())).await;

    // A holds f2's one connection in a read-only transaction; B's read waits for it.
    let a = p.connect().await;
    a.batch_execute("BEGIN READ ONLY").await.unwrap();
    let port = c.instance("f2").unwrap().port.to_string();
    assert_eq!(value(&a, "SELECT inet_server_port()").await, port);
    let b = std::sync::Arc::new(p.connect().await);
    let read = tokio::spawn({
        let b = b.clone();
        async move { value(&b, "SELECT inet_server_port()").await }
    });
    eventually("B waits for f2's connection", || {
        let waiting = f2.pool.stats().waiting;
        (waiting == 1).then_some(()).ok_or(format!("{waiting} waiting"))
    })
    .await;
    // W holds the leader's one connection in a transaction; D's write waits for it.
    let w = p.connect().await;
    w.batch_execute("BEGIN; SELECT txid_current()").await.unwrap();
    let d = p.connect().await;
    let write = tokio::spawn(async move {
        let sql = "BEGIN; SELECT inet_server_port(); COMMIT";
        match d.simple_query(sql).await {
            Ok(messages) => messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(e) => format!("{sql}: {:?}", e.as_db_error()),
        }
    });
    eventually("D waits for the leader's connection", || {
        let waiting = old_leader.pool.stats().waiting;
        (waiting == 1).then_some(()).ok_or(format!("{waiting} waiting"))
    })
    .await;

    // f2 promoted behind pgsplit's back and adopted: the same instance is now the leader.
    let f2_instance = c.instance("f2").unwrap().clone();
    c.psql(&f2_instance, "SELECT pg_promote()").expect("f2 promoted");
    eventually("f2 adopted as the leader", || {
        let leader = topology.load().leader.clone();
        std::sync::Arc::ptr_eq(&leader, &f2)
            .then_some(())
            .ok_or(format!("leader is {}", leader.name))
    })
    .await;
    // Retired just after the new topology is stored: its waiter fails then, while W still holds its connection.
    eventually("the old leader retired, its waiter failed", || {
        let waiting = old_leader.pool.stats().waiting;
        (old_leader.is_retired() && waiting == 0)
            .then_some(())
            .ok_or(format!("retired: {}, {waiting} waiting", old_leader.is_retired()))
    })
    .await;
    let reads_before = f2.routed().iter().find(|(r, _)| *r == "read").map_or(0, |(_, n)| *n);
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(read.await.expect("B's read"), port, "f2 is the only server left");
    // W still holds the old leader's connection: D, failed by the retired pool, ran on the new leader (once A
    // gave back f2's one connection) instead of waiting for W's.
    assert_eq!(write.await.expect("D's write"), port, "the write ran on the new leader");
    drop(w);
    eventually("the old leader's connections closed", || {
        let total = old_leader.pool.stats().total;
        (total == 0).then_some(()).ok_or(format!("{total} open"))
    })
    .await;
    let route = value(&b, "SHOW pgsplit.route").await;
    assert!(
        route.starts_with("instance=f2 ") && !route.ends_with("reason=read"),
        "routed again on the new topology, as a read on the leader: {route}"
    );
    let reads_after = f2.routed().iter().find(|(r, _)| *r == "read").map_or(0, |(_, n)| *n);
    assert_eq!(reads_after, reads_before, "not counted as a follower read on f2");
    drop((a, b));
    p.stop().await;
}
