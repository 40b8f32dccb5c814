//! Release by ownership: a session ended at once, wherever it is — mid-transaction, mid-COPY, pinned, waiting for a
//! server connection, or with a follower read armed for a re-run — gives back every pool place, work count, pin and
//! client slot it held.

use std::time::Duration;

use pgsplit::config::AuthMethod;

use crate::support::proxy::{self, TestProxy};
use crate::support::{cluster, eventually, raw, wait_replayed};

/// Leader pool 3, one connection per follower, trust auth; `sleepy_write()` writes but is listed as read-only, so a
/// follower runs it, sleeps, and only then refuses it (25006).
async fn proxy_for_ownership() -> TestProxy {
    let c = cluster();
    let setup = c.leader();
    crate::support::psql(
        c,
        setup,
        "CREATE TABLE IF NOT EXISTS ownership_t (x int);
         CREATE OR REPLACE FUNCTION sleepy_write() RETURNS int LANGUAGE plpgsql AS
           $$BEGIN PERFORM pg_sleep(5); INSERT INTO ownership_t VALUES (1); RETURN 1; END$$;
         GRANT ALL ON ownership_t TO app;",
    );
    wait_replayed(c);
    let mut config = proxy::config_with_followers(c, 16 << 20, Duration::from_secs(5));
    config.users[0].auth = AuthMethod::Trust;
    config.leader.max_connections = 3;
    config.server.checkout_timeout = Duration::from_secs(20);
    config.routing.read_your_writes = false;
    config.routing.read_only_functions = vec!["sleepy_write".into()];
    for pool in &mut config.follower_pools {
        pool.max_connections_per_instance = 1;
    }
    let p = TestProxy::start(config, c).await;
    let topology = p.proxy.context().topology.clone();
    eventually("every follower usable", || {
        let t = topology.load();
        let unusable: Vec<_> = t.pools[0]
            .instances
            .iter()
            .filter(|i| i.health.usable_for().is_none())
            .collect();
        unusable
            .is_empty()
            .then_some(())
            .ok_or(format!("{} not usable", unusable.len()))
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_in_every_state_give_everything_back() {
    let p = proxy_for_ownership().await;
    let port = p.port();
    let mut sessions = Vec::new();

    // Mid-transaction on the leader.
    let (mut s, pid) = raw::login_with_pid(port, "app", "app").await;
    let answer = raw::exchange(
        &mut s,
        &[raw::message(b'Q', b"BEGIN; INSERT INTO ownership_t VALUES (0)\0")],
    )
    .await;
    assert_eq!(raw::tags(&answer).chars().last(), Some('Z'), "{answer:?}");
    sessions.push((s, pid));

    // Mid-COPY FROM STDIN on the leader.
    let (mut s, pid) = raw::login_with_pid(port, "app", "app").await;
    raw::send(&mut s, &raw::message(b'Q', b"COPY ownership_t FROM STDIN\0")).await;
    raw::read_until(&mut s, b'G').await;
    raw::send(&mut s, &raw::message(b'd', b"7\n")).await;
    sessions.push((s, pid));

    // Pinned to its leader connection.
    let (mut s, pid) = raw::login_with_pid(port, "app", "app").await;
    raw::exchange(&mut s, &[raw::message(b'Q', b"LISTEN ownership\0")]).await;
    sessions.push((s, pid));

    // Waiting for a leader connection: all three are taken.
    let (mut s, pid) = raw::login_with_pid(port, "app", "app").await;
    raw::send(&mut s, &raw::message(b'Q', b"INSERT INTO ownership_t VALUES (2)\0")).await;
    sessions.push((s, pid));

    // A read on a follower, armed for a re-run on the leader should the follower refuse it: it sleeps first.
    let (mut s, pid) = raw::login_with_pid(port, "app", "app").await;
    raw::send(&mut s, &raw::message(b'Q', b"SELECT sleepy_write()\0")).await;
    sessions.push((s, pid));

    let topology = p.proxy.context().topology.load_full();
    let leader = topology.leader.clone();
    eventually("a unit waits for the leader and a follower runs the armed read", || {
        let waiting = leader.pool.stats().waiting;
        let on_followers: u32 = topology.pools[0].instances.iter().map(|i| i.outstanding()).sum();
        (waiting == 1 && on_followers == 1)
            .then_some(())
            .ok_or(format!("waiting {waiting}, on followers {on_followers}"))
    })
    .await;
    let gauges = &p.proxy.context().gauges;
    assert_eq!(gauges.clients.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(gauges.pinned.load(std::sync::atomic::Ordering::Relaxed), 1);

    for (_, pid) in &sessions {
        assert!(p.proxy.terminate_client(*pid), "session {pid} exists");
    }
    eventually("every place, count and gauge back at baseline", || {
        let mut problems = Vec::new();
        for instance in topology.instances() {
            let stats = instance.pool.stats();
            if stats.total != stats.idle || stats.waiting != 0 || instance.outstanding() != 0 || instance.writing() != 0
            {
                problems.push(format!(
                    "{}: {stats:?}, outstanding {}, writing {}",
                    instance.name,
                    instance.outstanding(),
                    instance.writing()
                ));
            }
        }
        for (gauge, value) in [("clients", &gauges.clients), ("pinned", &gauges.pinned)] {
            let value = value.load(std::sync::atomic::Ordering::Relaxed);
            if value != 0 {
                problems.push(format!("{gauge} = {value}"));
            }
        }
        problems.is_empty().then_some(()).ok_or(problems.join("; "))
    })
    .await;
    // The ended sessions' clients see their connections closed.
    for (mut s, _) in sessions {
        raw::read_until_close(&mut s).await;
    }
    // The whole leader pool serves again.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = p.connect().await;
        client
            .batch_execute("BEGIN; INSERT INTO ownership_t VALUES (3)")
            .await
            .expect("a leader connection");
        clients.push(client);
    }
    for client in &clients {
        client.batch_execute("ROLLBACK").await.expect("rolled back");
    }
    drop(clients);
    p.stop().await;
}
