//! The monitor watching a real cluster: roles as the servers report them, lag in bytes, seconds and commits, and
//! the read-usability verdict as followers lag, stop and return; the function catalog finding VOLATILE user
//! functions. Assertions poll the instances' health with a bounded deadline, never after a fixed sleep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pgsplit::config::Config;
use pgsplit::tls::Tls;
use pgsplit::topology::catalog::{FunctionCatalog, volatile_user_functions};
use pgsplit::topology::health::HealthSnapshot;
use pgsplit::topology::monitor::{Monitor, MonitorHandle};
use pgsplit::topology::{Instance, SharedTopology, Topology};
use tokio_postgres::NoTls;

use crate::support::proxy::{HEALTH, config_with_followers};
use crate::support::{LocalCluster, StopMode, WAIT, cluster, eventually, private_cluster, proxy, psql, wait_replayed};

/// Starts a monitor on `config`'s topology. Its state-change logs go to the test's captured output.
fn watch(cluster: &LocalCluster, config: &Config) -> (SharedTopology, MonitorHandle) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("pgsplit=info")
        .try_init();
    let topology: SharedTopology = Arc::new(ArcSwap::from_pointee(Topology::from_config(config)));
    // The config's first user (the cluster's app user) is the control role.
    assert_eq!(config.users[0].name, cluster.app_user());
    let tls = Arc::new(Tls::load(config).expect("TLS config loads"));
    let monitor = Monitor::spawn(topology.clone(), tls);
    (topology, monitor)
}

fn instance(topology: &SharedTopology, name: &str) -> Arc<Instance> {
    let found = topology.load().instances().find(|i| &*i.name == name).cloned();
    found.unwrap_or_else(|| panic!("no instance {name} in the topology"))
}

fn caught_up_and_usable(instance: &Instance) -> Result<(), String> {
    let seen = instance.health.snapshot();
    let usable = instance.health.usable_for();
    let ok = seen.up && seen.in_recovery && usable.is_some() && seen.lag_bytes == 0 && seen.lag_commits == 0;
    let ok = ok && seen.lag == Duration::ZERO;
    ok.then_some(())
        .ok_or_else(|| format!("{seen:?}, usable for {usable:?}"))
}

fn expect(ok: bool, seen: &HealthSnapshot) -> Result<(), String> {
    ok.then_some(()).ok_or_else(|| format!("{seen:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_confirms_roles_and_caught_up_followers() {
    let c = cluster();
    wait_replayed(c);
    let config = config_with_followers(c, 16 << 20, Duration::from_secs(5));
    let (topology, _monitor) = watch(c, &config);
    let leader = instance(&topology, "leader");

    eventually("the leader is up and not in recovery", || {
        let seen = leader.health.snapshot();
        expect(seen.up && !seen.in_recovery && seen.lsn > 0, &seen)
    })
    .await;
    for follower in c.followers() {
        let follower = instance(&topology, &follower.name);
        eventually(&format!("{} is up, in recovery, usable, lag 0", follower.name), || {
            caught_up_and_usable(&follower)
        })
        .await;
        assert!(follower.health.snapshot().lsn > 0);
    }
    assert_eq!(
        leader.health.usable_for(),
        None,
        "the leader gets no read-usability verdict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_swapped_in_are_watched_from_the_next_round() {
    let c = cluster();
    let leader_only = {
        let mut config = proxy::config_for(c);
        config.health = HEALTH;
        config
    };
    let (topology, _monitor) = watch(c, &leader_only);
    let leader = instance(&topology, "leader");
    eventually("the leader is up", || {
        let seen = leader.health.snapshot();
        expect(seen.up && !seen.in_recovery, &seen)
    })
    .await;

    let config = config_with_followers(c, 16 << 20, Duration::from_secs(5));
    topology.store(Arc::new(Topology::from_config(&config)));
    for follower in c.followers() {
        let follower = instance(&topology, &follower.name);
        eventually(&format!("swapped-in {} usable", follower.name), || {
            caught_up_and_usable(&follower)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_follower_lags_and_is_unusable_until_it_catches_up() {
    let c = private_cluster(1);
    let (leader_pg, f1_pg) = (c.leader().clone(), c.followers()[0].clone());
    let config = config_with_followers(&c, 16 << 20, Duration::from_secs(1));
    let (topology, _monitor) = watch(&c, &config);
    let (leader, f1) = (instance(&topology, "leader"), instance(&topology, "f1"));
    eventually("f1 usable before the delay", || caught_up_and_usable(&f1)).await;

    // Long enough that the test, not the delay, decides when f1 catches up.
    psql(
        &c,
        &f1_pg,
        "ALTER SYSTEM SET recovery_min_apply_delay = '10min'; SELECT pg_reload_conf();",
    );
    psql(&c, &leader_pg, "CREATE TABLE lag_probe (n int)");
    // The startup process may pick up the delay a moment after pg_reload_conf() returns: write until f1 lags.
    let mut writes = 0;
    eventually("f1 stops replaying the leader's commits", || {
        let seen = f1.health.snapshot();
        if seen.lag_commits > 0 && seen.lag_bytes > 0 {
            return Ok(());
        }
        writes += 1;
        psql(&c, &leader_pg, &format!("INSERT INTO lag_probe VALUES ({writes})"));
        Err(format!("{seen:?}"))
    })
    .await;
    eventually("f1 lags over max_lag_seconds and is unusable", || {
        let seen = f1.health.snapshot();
        let lagging = seen.up && seen.in_recovery && seen.lag > Duration::from_secs(1) && seen.lag_bytes > 0;
        expect(
            lagging && seen.lag_commits > 0 && f1.health.usable_for().is_none(),
            &seen,
        )
    })
    .await;
    let (leader_seen, f1_seen) = (leader.health.snapshot(), f1.health.snapshot());
    assert!(leader_seen.lsn > f1_seen.lsn, "leader {leader_seen:?}, f1 {f1_seen:?}");

    psql(
        &c,
        &f1_pg,
        "ALTER SYSTEM RESET recovery_min_apply_delay; SELECT pg_reload_conf();",
    );
    eventually("f1 catches up and is usable again", || caught_up_and_usable(&f1)).await;
    let replayed = psql(&c, &f1_pg, "SELECT count(*) FROM lag_probe");
    assert_eq!(replayed, writes.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_follower_is_marked_down_and_returns_after_restart() {
    let c = private_cluster(1);
    let f1_pg = c.followers()[0].clone();
    let config = config_with_followers(&c, 16 << 20, Duration::from_secs(5));
    let (topology, _monitor) = watch(&c, &config);
    let (leader, f1) = (instance(&topology, "leader"), instance(&topology, "f1"));
    eventually("f1 usable", || caught_up_and_usable(&f1)).await;

    c.stop_instance(&f1_pg, StopMode::Fast).expect("f1 stops");
    eventually("f1 marked down and unusable", || {
        let seen = f1.health.snapshot();
        expect(!seen.up && f1.health.usable_for().is_none(), &seen)
    })
    .await;
    assert!(leader.health.snapshot().up, "the leader is unaffected");

    c.start_instance(&f1_pg).expect("f1 starts");
    eventually("f1 up, in recovery and usable again", || caught_up_and_usable(&f1)).await;
    assert!(leader.health.snapshot().up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_volatile_user_functions_not_immutable_ones() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "CREATE SCHEMA IF NOT EXISTS catalog_probe;
         CREATE OR REPLACE FUNCTION catalog_probe.bump() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
         CREATE OR REPLACE FUNCTION public.catalog_probe_pure(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
         CREATE OR REPLACE FUNCTION public.catalog_probe_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';",
    );
    let bump = ("catalog_probe".to_string(), "bump".to_string());
    let pure = ("public".to_string(), "catalog_probe_pure".to_string());
    let stable = ("public".to_string(), "catalog_probe_stable".to_string());

    let (client, connection) = tokio_postgres::connect(&c.app_url(c.leader()), NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let found = volatile_user_functions(&client).await.expect("the catalog query runs");
    assert!(found.contains(&bump), "{found:?}");
    assert!(!found.contains(&pure) && !found.contains(&stable), "{found:?}");
    assert!(
        found
            .iter()
            .all(|(schema, _)| schema != "pg_catalog" && schema != "information_schema"),
        "{found:?}"
    );

    let config = config_with_followers(c, 16 << 20, Duration::from_secs(5));
    let topology: SharedTopology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
    let tls = Arc::new(Tls::load(&config).expect("TLS config loads"));
    let catalog = FunctionCatalog::with_max_age(topology, tls, &HEALTH, Duration::from_millis(200));
    let listed = catalog.get(c.app_database()).await;
    assert!(listed.contains(&bump) && !listed.contains(&pure), "{listed:?}");

    // A function created later shows up once the list is older than its max age (reloaded in the background).
    psql(
        c,
        c.leader(),
        "CREATE OR REPLACE FUNCTION catalog_probe.later() RETURNS int LANGUAGE sql AS 'SELECT 2'",
    );
    let later = ("catalog_probe".to_string(), "later".to_string());
    let deadline = Instant::now() + WAIT;
    while !catalog.get(c.app_database()).await.contains(&later) {
        assert!(Instant::now() < deadline, "catalog_probe.later never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn catalog_answers_empty_and_fast_when_the_leader_is_unreachable() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    // A port nobody listens on: bound, then released.
    config.leader.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let topology: SharedTopology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
    let tls = Arc::new(Tls::load(&config).expect("TLS config loads"));
    let catalog = FunctionCatalog::new(topology, tls, &HEALTH);
    let started = Instant::now();
    assert!(catalog.get("app").await.is_empty());
    assert!(
        catalog.get("app").await.is_empty(),
        "a failed load is not retried on every call"
    );
    assert!(started.elapsed() < HEALTH.timeout * 2, "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_answering_as_not_in_recovery_is_never_usable() {
    let c = private_cluster(1);
    let f1_pg = c.followers()[0].clone();
    let config = config_with_followers(&c, 16 << 20, Duration::from_secs(5));
    let (topology, _monitor) = watch(&c, &config);
    let f1 = instance(&topology, "f1");
    eventually("f1 usable", || caught_up_and_usable(&f1)).await;

    psql(&c, &f1_pg, "SELECT pg_promote()");
    eventually("promoted f1 up, not in recovery, unusable", || {
        let seen = f1.health.snapshot();
        expect(seen.up && !seen.in_recovery && f1.health.usable_for().is_none(), &seen)
    })
    .await;
    assert!(instance(&topology, "leader").health.snapshot().up);
}
