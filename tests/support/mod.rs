//! The integration-test harness: real PostgreSQL clusters (`pgsplit::demo::cluster`) for the tests of one binary.
//!
//! - [`cluster()`]: one leader + 2 followers per test binary, started on first use and shared by its tests. Treat
//!   it as read-mostly: tests that stop, promote or reconfigure instances use [`private_cluster`].
//! - [`freeze::Frozen`] stops a server in its tracks (SIGSTOP, resumed on drop); [`logs::capture`] keeps what
//!   pgsplit logs, to look for what must never be there.
//! - Every cluster is covered by a [`Watchdog`] armed before its first server starts, so it is stopped and removed
//!   however the test process ends (statics are never dropped; panics, aborts and SIGKILL skip destructors).

#![allow(dead_code, unused_imports)] // each test binary uses its own subset of the harness and its re-exports

pub mod freeze;
pub mod logs;
pub mod patroni;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod relay;
pub mod tls;

use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

pub use pgsplit::demo::cluster::{
    ClusterOptions, Instance, LocalCluster, ServerCertificate, StopMode, Toolbox, Watchdog,
};

/// Bound for the harness's waits (replication catch-up, pgbench setup).
pub const WAIT: Duration = Duration::from_secs(30);

struct Shared {
    cluster: LocalCluster,
    /// Never dropped: its pipe closes when the process ends, which fires the cleanup.
    watchdog: Watchdog,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// The binary's shared cluster: leader + 2 followers, user/password/database `app`, started on first use.
pub fn cluster() -> &'static LocalCluster {
    &shared().cluster
}

/// `/proc` identity (`pipe:[inode]`) of the shared cluster's watchdog pipe, to check that no server holds it.
pub fn shared_watchdog_pipe() -> String {
    shared().watchdog.pipe_id().expect("the shared watchdog's pipe is open")
}

fn shared() -> &'static Shared {
    let shared = SHARED.get_or_init(|| {
        let started = Instant::now();
        let (cluster, watchdog) = start_guarded(2).map_err(|e| e.to_string())?;
        eprintln!(
            "shared test cluster up in {:?} at {}",
            started.elapsed(),
            cluster.base_dir().display()
        );
        Ok(Shared { cluster, watchdog })
    });
    match shared {
        Ok(shared) => shared,
        Err(e) => panic!("the shared test cluster did not start: {e}"),
    }
}

/// A cluster of one test's own, for destructive tests (stopping, promoting, reconfiguring instances). Stopped and
/// removed when dropped — also on panic — and by its watchdog if the process dies first.
pub struct PrivateCluster {
    /// `None` only after [`PrivateCluster::into_parts`].
    cluster: Option<LocalCluster>,
    watchdog: Option<Watchdog>,
}

/// Starts a [`PrivateCluster`] with a leader and `followers` followers; panics (failing the test) if it cannot.
pub fn private_cluster(followers: usize) -> PrivateCluster {
    match start_guarded(followers) {
        Ok((cluster, watchdog)) => PrivateCluster {
            cluster: Some(cluster),
            watchdog: Some(watchdog),
        },
        Err(e) => panic!("a private test cluster did not start: {e}"),
    }
}

impl PrivateCluster {
    /// Hands out both parts, e.g. to end the cluster by its watchdog alone. Dropping the watchdog fires it.
    pub fn into_parts(mut self) -> (LocalCluster, Watchdog) {
        let parts = (self.cluster.take(), self.watchdog.take());
        (
            parts.0.expect("present until into_parts"),
            parts.1.expect("armed until into_parts"),
        )
    }
}

impl Deref for PrivateCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        self.cluster.as_ref().expect("present until into_parts")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.cluster.as_mut().map(LocalCluster::stop) {
            eprintln!("stopping a private test cluster: {e}");
        }
        // Then `watchdog` drops: it fires, finds nothing left, and is reaped.
    }
}

/// A [`PrivateCluster`] started with `options` (its base dir is chosen here).
pub fn private_cluster_with(options: ClusterOptions) -> PrivateCluster {
    match start_guarded_with(options) {
        Ok((cluster, watchdog)) => PrivateCluster {
            cluster: Some(cluster),
            watchdog: Some(watchdog),
        },
        Err(e) => panic!("a private test cluster did not start: {e}"),
    }
}

/// Arms a watchdog on a fresh base dir, then starts the cluster in it.
fn start_guarded(followers: usize) -> Result<(LocalCluster, Watchdog), pgsplit::demo::cluster::ClusterError> {
    start_guarded_with(ClusterOptions {
        followers,
        ..ClusterOptions::default()
    })
}

fn start_guarded_with(
    options: ClusterOptions,
) -> Result<(LocalCluster, Watchdog), pgsplit::demo::cluster::ClusterError> {
    let tools = Toolbox::locate()?;
    let base_dir = pgsplit::demo::cluster::unique_base_dir()?;
    let watchdog = Watchdog::spawn(&tools, &base_dir)?;
    let options = ClusterOptions {
        base_dir: Some(base_dir),
        ..options
    };
    let cluster = LocalCluster::start(options)?;
    Ok((cluster, watchdog))
}

/// `pgbench -i -s 1` into the shared cluster's app database as the app user, once per binary; returns after every
/// follower has replayed it.
pub fn pgbench_init() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let done = DONE.get_or_init(|| {
        let cluster = cluster();
        let leader = cluster.leader();
        let mut cmd = cluster.tools().command("pgbench");
        cmd.args(["-i", "-s", "1", "-q", "-h"]).arg(&leader.socket_dir).args([
            "-p",
            &leader.port.to_string(),
            "-U",
            cluster.app_user(),
            cluster.app_database(),
        ]);
        let out = cmd.output().map_err(|e| format!("running pgbench: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pgbench -i failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_replayed(WAIT).map_err(|e| e.to_string())
    });
    if let Err(e) = done {
        panic!("{e}");
    }
}

/// Polls `check` until it passes, failing the test with its last complaint after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not within {WAIT:?}; last seen: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Returns once every follower of `cluster` has replayed the leader's current WAL position (bounded by [`WAIT`]).
pub fn wait_replayed(cluster: &LocalCluster) {
    if let Err(e) = cluster.wait_replayed(WAIT) {
        panic!("followers did not catch up: {e}");
    }
}

/// Runs `sql` through psql on `instance` (superuser, app database) and returns its output; panics on error.
pub fn psql(cluster: &LocalCluster, instance: &Instance, sql: &str) -> String {
    match cluster.psql(instance, sql) {
        Ok(out) => out,
        Err(e) => panic!("psql on {}: {e}", instance.name),
    }
}

/// The first column of the first row `sql` returns (simple protocol); panics with the statement on an error.
pub async fn value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Runs pgbench as the app user against pgsplit on `port` with `args` (database `app`), which must succeed;
/// returns its verdict: transactions processed and failed.
pub async fn pgbench_through(port: u16, args: &[&str]) -> (u64, u64) {
    let out = tokio::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", "app")
        .output()
        .await
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    pgbench_counts(&stdout)
}

/// pgbench's own verdict from its output: transactions processed and failed.
pub fn pgbench_counts(output: &str) -> (u64, u64) {
    let number_after = |label: &str| -> u64 {
        let line = output
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' in:\n{output}"));
        let digits: String = line[label.len()..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().expect("a count")
    };
    (
        number_after("number of transactions actually processed:"),
        number_after("number of failed transactions:"),
    )
}
