//! Reloading proxy.toml while clients run: nobody is dropped, kept instances keep their connections, new weights
//! apply at once, an invalid file changes nothing, a removed follower drains, a removed pool's endpoint
//! answers 57P03.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pgsplit::topology::{Instance, SharedTopology};

use super::files::{ConfigDir, config_text};
use crate::support::proxy::TestProxy;
use crate::support::{cluster, eventually};

const CLIENTS: usize = 20;
/// Each client's bound on statements, whatever happens.
const MAX_STATEMENTS: usize = 200_000;

fn instance(topology: &SharedTopology, name: &str) -> Option<Arc<Instance>> {
    topology.load().instances().find(|i| &*i.name == name).cloned()
}

fn reads(instance: &Instance) -> u64 {
    instance
        .routed()
        .iter()
        .find(|(r, _)| *r == "read")
        .map_or(0, |(_, n)| *n)
}

async fn all_usable(topology: &SharedTopology, names: &[&str]) {
    eventually("followers usable", || {
        let waiting: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| instance(topology, n).is_none_or(|i| i.health.usable_for().is_none()))
            .collect();
        waiting
            .is_empty()
            .then_some(())
            .ok_or(format!("not usable: {waiting:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_no_client_applies_weights_and_drains_removed_followers() {
    let c = cluster();
    let dir = ConfigDir::new(&config_text(c, &[1, 1], ""));
    let p = TestProxy::start_from_file(&dir.path(), c).await;
    let topology = p.proxy.context().topology.clone();
    all_usable(&topology, &["f1", "f2"]).await;
    let first = topology.load_full();
    let (leader, f1, f2) = (
        first.leader.clone(),
        instance(&topology, "f1").unwrap(),
        instance(&topology, "f2").unwrap(),
    );

    // 20 clients: reads over the followers and write-path transactions on the leader, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = p.connect().await;
        let (stop, errors) = (stop.clone(), errors.clone());
        clients.push(tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) && done < MAX_STATEMENTS {
                let sql = if done % 4 == 3 {
                    "BEGIN; SELECT 1; COMMIT"
                } else {
                    "SELECT count(*) FROM pg_class"
                };
                if let Err(e) = client.simple_query(sql).await {
                    eprintln!("client error: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
            }
            (client, done)
        }));
    }

    // Weights 1:9, written the way editors write (rename over).
    dir.write(&config_text(c, &[1, 9], ""));
    eventually("the file change reloaded", || {
        (topology.load().generation > first.generation)
            .then_some(())
            .ok_or("old generation".into())
    })
    .await;
    let second = topology.load_full();
    for (name, before) in [("leader", &leader), ("f1", &f1), ("f2", &f2)] {
        let now = instance(&topology, name).unwrap();
        assert!(Arc::ptr_eq(before, &now), "{name} kept (its pool and connections)");
    }
    assert_eq!((f1.weight(), f2.weight()), (1, 9));
    let (f1_before, f2_before) = (reads(&f1), reads(&f2));
    eventually("400 reads after the reload", || {
        let total = reads(&f1) - f1_before + reads(&f2) - f2_before;
        (total >= 400).then_some(()).ok_or(format!("{total} reads"))
    })
    .await;
    let (to_f1, to_f2) = (reads(&f1) - f1_before, reads(&f2) - f2_before);
    assert!(to_f2 > 3 * to_f1, "weight 9 vs 1: f2 got {to_f2} reads, f1 {to_f1}");

    // An invalid file: rejected, the old config keeps serving.
    dir.write("[proxy\nlisten = ");
    let rejected = p.proxy.context().control.reload().await;
    assert!(rejected.is_err(), "invalid file rejected");
    assert_eq!(topology.load().generation, second.generation, "old config kept");
    let bad_user = config_text(c, &[1, 9], "").replace("name = \"leader\"", "name = \"leader\"\nbogus = 1");
    dir.write(&bad_user);
    let error = p.proxy.context().control.reload().await.unwrap_err().to_string();
    assert!(
        error.contains("proxy.toml:") && error.contains("bogus"),
        "says where: {error}"
    );
    assert_eq!(topology.load().generation, second.generation, "old config kept");

    // f2 removed: it drains, and reads go to f1 only.
    dir.write(&config_text(c, &[1], ""));
    eventually("f2 removed", || {
        instance(&topology, "f2")
            .is_none()
            .then_some(())
            .ok_or("still there".into())
    })
    .await;
    assert!(f2.is_retired());
    eventually("f2's connections closed", || {
        let total = f2.pool.stats().total;
        (total == 0).then_some(()).ok_or(format!("{total} open"))
    })
    .await;
    let f1_reads = reads(&f1);
    eventually("reads continue on f1", || {
        (reads(&f1) > f1_reads + 100).then_some(()).ok_or("no reads".into())
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for task in clients {
        let (client, done) = task.await.expect("client task");
        assert!(done > 0);
        client
            .simple_query("SELECT 1")
            .await
            .expect("every client is still connected");
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no client saw an error");
    p.stop().await;
}

/// A reload adds a follower pool with its own endpoint: the endpoint opens at once, and its first reads wait for
/// the instance's first health check (within `checkout_timeout`) instead of failing with 57P03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_added_by_reload_serves_its_first_reads() {
    let c = cluster();
    let dir = ConfigDir::new(&config_text(c, &[1, 1], ""));
    let p = TestProxy::start_from_file(&dir.path(), c).await;
    let topology = p.proxy.context().topology.clone();
    all_usable(&topology, &["f1", "f2"]).await;
    let follower = &c.followers()[0];
    // A slow health interval first, so that the new instance's first check is still to come (up to 2 s) when its
    // endpoint opens.
    let slow = |extra: &str| config_text(c, &[1, 1], extra).replace("interval = \"100ms\"", "interval = \"2s\"");
    dir.write(&slow(""));
    let f1 = instance(&topology, "f1").unwrap();
    let checks = f1.health.checks();
    p.proxy.context().control.reload().await.expect("the reload is valid");
    // Two rounds later the monitor runs at the slow interval.
    eventually("the monitor at its new interval", || {
        (f1.health.checks() >= checks + 2).then_some(()).ok_or("not yet".into())
    })
    .await;
    let added = format!(
        "\n[[follower_pools]]\nname = \"analytics\"\nlisten = \"127.0.0.1:0\"\n\
         instances = [ {{ name = \"ana1\", host = \"127.0.0.1\", port = {} }} ]\n",
        follower.port
    );
    dir.write(&slow(&added));
    p.proxy.context().control.reload().await.expect("the reload is valid");
    eventually("the new pool's endpoint opens", || {
        p.proxy.pool_addr("analytics").map(drop).ok_or("not yet".into())
    })
    .await;
    let addr = p.proxy.pool_addr("analytics").expect("open");
    let url = format!("host=127.0.0.1 port={} user=app password=app dbname=app", addr.port());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for n in 0..20 {
        let port = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap_or_else(|e| panic!("read {n} on the new pool's endpoint: {e}"));
        assert_eq!(port.get::<_, i32>(0), i32::from(follower.port));
    }
    drop(client);
    p.stop().await;
}

/// The total of units `instance` was routed, whatever the reason.
fn routed_total(instance: &Instance) -> u64 {
    instance.routed().iter().map(|(_, n)| *n).sum()
}

/// A reload removes a follower pool with its own endpoint while a client is connected through it: that client's
/// reads and writes each get 57P03, and nothing it sends reaches the leader (no `NoReadPool` fallback there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_pools_endpoint_answers_57p03_and_never_reaches_the_leader() {
    let c = cluster();
    let follower = &c.followers()[0];
    let pool = format!(
        "\n[[follower_pools]]\nname = \"reporting\"\nlisten = \"127.0.0.1:0\"\n\
         instances = [ {{ name = \"rep1\", host = \"127.0.0.1\", port = {} }} ]\n",
        follower.port
    );
    let dir = ConfigDir::new(&config_text(c, &[1, 1], &pool));
    let p = TestProxy::start_from_file(&dir.path(), c).await;
    let topology = p.proxy.context().topology.clone();
    all_usable(&topology, &["f1", "f2", "rep1"]).await;
    let addr = p.proxy.pool_addr("reporting").expect("the pool's endpoint is open");
    let url = format!("host=127.0.0.1 port={} user=app password=app dbname=app", addr.port());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let port = client.query_one("SELECT inet_server_port()", &[]).await.unwrap();
    assert_eq!(port.get::<_, i32>(0), i32::from(follower.port), "served by its pool");

    dir.write(&config_text(c, &[1, 1], ""));
    eventually("the pool removed", || {
        instance(&topology, "rep1")
            .is_none()
            .then_some(())
            .ok_or("still there".into())
    })
    .await;
    let leader = topology.load().leader.clone();
    let on_leader = routed_total(&leader);

    let table = format!("removed_pool_{}", std::process::id());
    let units = [
        "SELECT 1".to_owned(),
        format!("CREATE TABLE {table} (id int)"),
        format!("BEGIN; CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1); COMMIT"),
    ];
    for sql in &units {
        let error = client
            .simple_query(sql)
            .await
            .expect_err(&format!("{sql}: refused on a removed pool's endpoint"));
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW),
            "{sql}: {error}"
        );
    }
    let error = client
        .execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&1i32])
        .await
        .expect_err("an extended-protocol write is refused too");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW),
        "{error}"
    );
    assert_eq!(
        routed_total(&leader),
        on_leader,
        "no unit of that client was routed to the leader"
    );
    let exists = crate::support::psql(
        c,
        c.leader(),
        &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
    );
    assert_eq!(exists, "f", "nothing reached the leader");
    drop(client);
    p.stop().await;
}
