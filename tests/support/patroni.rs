//! The Patroni-managed cluster of `tests/patroni.rs`: etcd and three PostgreSQL nodes under Patroni
//! (`pgsplit::demo::cluster::PatroniCluster`), started on first use and shared by the file's tests, which take
//! turns ([`turn`]): a switchover or failover moves the leader, and each test starts by waiting until the cluster
//! is whole again (one leader, two streaming replicas), whoever leads.
//!
//! A [`Watchdog`] armed before the first process starts kills Patroni and etcd and stops PostgreSQL when the test
//! process ends, however it ends.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgsplit::demo::cluster::{PatroniCluster, PatroniOptions, Toolbox, Watchdog};
use tokio::sync::{Mutex, MutexGuard};

/// How long a test waits for the cluster to be whole again after the previous test moved its leader.
pub const HEAL: Duration = Duration::from_secs(60);

struct Shared {
    cluster: PatroniCluster,
    /// Never dropped: its pipe closes when the process ends, which fires the cleanup.
    _watchdog: Watchdog,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
static TURN: Mutex<()> = Mutex::const_new(());

/// The file's cluster: members n1, n2, n3; n3 carries the tag `pgsplit_pool: analytics`.
pub fn patroni() -> &'static PatroniCluster {
    let shared = SHARED.get_or_init(|| {
        let started = Instant::now();
        let start = || -> Result<Shared, pgsplit::demo::cluster::ClusterError> {
            let tools = Toolbox::locate()?;
            let base_dir = pgsplit::demo::cluster::unique_base_dir()?;
            let watchdog = Watchdog::spawn(&tools, &base_dir)?;
            let options = PatroniOptions {
                base_dir: Some(base_dir),
                tags: vec![vec![], vec![], vec![("pgsplit_pool".into(), "analytics".into())]],
                ..PatroniOptions::default()
            };
            let cluster = PatroniCluster::start(options)?;
            Ok(Shared {
                cluster,
                _watchdog: watchdog,
            })
        };
        let shared = start().map_err(|e| e.to_string())?;
        eprintln!(
            "Patroni cluster up in {:?} at {}",
            started.elapsed(),
            shared.cluster.base_dir().display()
        );
        Ok(shared)
    });
    match shared {
        Ok(shared) => &shared.cluster,
        Err(e) => panic!("the Patroni test cluster did not start: {e}"),
    }
}

/// This test's turn with the shared cluster, once it is whole: one leader PostgreSQL confirms and two replicas
/// streaming from it. Hold the guard for the whole test.
pub async fn turn() -> (MutexGuard<'static, ()>, &'static PatroniCluster) {
    let guard = TURN.lock().await;
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = patroni();
        if let Err(e) = cluster.wait_healthy(HEAL) {
            panic!("the Patroni cluster did not heal: {e}");
        }
        cluster
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (guard, cluster)
}
