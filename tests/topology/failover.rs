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
