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

/// A proxy.toml following `cluster` through Patroni, with test-fast polls; `extra` is appended.
pub fn config_text(cluster: &PatroniCluster, extra: &str) -> String {
    let urls: Vec<String> = cluster.api_urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[server]
checkout_timeout = "5s"
[[users]]
name = "{user}"
password = "{password}"
[topology]
source = "patroni"
patroni = [{urls}]
poll_interval = "100ms"
request_timeout = "1s"
drain_before_switchover = "1s"
write_hold_timeout = "10s"
promote_ahead = "3s"
[health]
interval = "100ms"
timeout = "2s"
[[follower_pools]]
name = "default"
max_connections_per_instance = 4
[[follower_pools]]
name = "analytics"
{extra}"#,
        user = cluster.app_user(),
        password = cluster.app_password(),
        urls = urls.join(", "),
    )
}

/// pgsplit in process, following `cluster` through Patroni; stopped by [`PatroniProxy::stop`] (or dropped).
pub struct PatroniProxy {
    pub proxy: pgsplit::proxy::Proxy,
    database: String,
}

impl PatroniProxy {
    /// Starts pgsplit with [`config_text`] and waits until it has confirmed Patroni's leader and every replica is
    /// usable for reads.
    pub async fn start(cluster: &PatroniCluster, extra: &str) -> PatroniProxy {
        let config = pgsplit::config::Config::parse(&config_text(cluster, extra), "patroni-test.toml")
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let proxy = pgsplit::proxy::Proxy::start(config).await.expect("pgsplit starts");
        let p = PatroniProxy {
            proxy,
            database: cluster.app_database().to_owned(),
        };
        p.wait_following(cluster).await;
        p
    }

    /// Waits until pgsplit's leader is the one Patroni names, writes are not held, and every other member serves
    /// reads.
    pub async fn wait_following(&self, cluster: &PatroniCluster) {
        let topology = self.proxy.context().topology.clone();
        let control = self.proxy.context().control.clone();
        super::eventually("pgsplit follows Patroni's leader with every replica usable", || {
            let named = cluster
                .view()
                .map_err(|e| e.to_string())?
                .leader()
                .map(|m| m.name.clone());
            let t = topology.load();
            if Some(t.leader.name.to_string()) != named {
                return Err(format!(
                    "pgsplit leads with {:?}, Patroni names {named:?}",
                    t.leader.name
                ));
            }
            if let Some(held) = control.gate.writes_held() {
                return Err(format!("writes held: {held}"));
            }
            let followers: Vec<_> = t.pools.iter().flat_map(|p| p.instances.iter()).collect();
            if followers.len() != cluster.members().len() - 1 {
                return Err(format!("{} followers", followers.len()));
            }
            match followers.iter().find(|f| f.health.usable_for().is_none()) {
                Some(f) => Err(format!("{} not usable: {:?}", f.name, f.health.reason())),
                None => Ok(()),
            }
        })
        .await;
    }

    pub fn port(&self) -> u16 {
        self.proxy.local_addr().port()
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=app password=app dbname={} connect_timeout=10",
            self.port(),
            self.database
        )
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls)
            .await
            .expect("app connects through pgsplit");
        tokio::spawn(connection);
        client
    }

    pub async fn stop(self) {
        assert!(
            self.proxy.shutdown(Duration::from_secs(5)).await,
            "sessions ended within the grace period"
        );
    }
}

/// `pgbench -i -s 1` into the app database on Patroni's leader (as the app user, over the socket), then waits
/// until every replica has replayed it.
pub fn pgbench_init(cluster: &PatroniCluster) {
    let leader = cluster.leader().expect("a leader").clone();
    let out = cluster
        .tools()
        .command("pgbench")
        .args(["-i", "-s", "1", "-q", "-h"])
        .arg(&leader.socket_dir)
        .args([
            "-p",
            &leader.port.to_string(),
            "-U",
            cluster.app_user(),
            cluster.app_database(),
        ])
        .output()
        .expect("pgbench -i runs");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_replayed(HEAL).expect("replicas replay pgbench's tables");
}

/// pgbench tpcb-like through pgsplit on `port` with `clients` clients for `seconds`, logging every transaction
/// under `<base>/<log>` (its latency in microseconds is the third field); not started until awaited.
pub fn pgbench_run(
    cluster: &PatroniCluster,
    port: u16,
    clients: u32,
    seconds: u32,
    log: &str,
) -> impl std::future::Future<Output = std::io::Result<std::process::Output>> + use<> {
    let mut cmd = cluster.tools().command("pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", cluster.app_user()])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            "1",
            "-T",
            &seconds.to_string(),
            "-n",
            "-l",
        ])
        .arg(format!("--log-prefix={}", cluster.base_dir().join(log).display()))
        .arg(cluster.app_database())
        // After `command`, which clears the PG* variables.
        .env("PGPASSWORD", cluster.app_password());
    tokio::process::Command::from(cmd).output()
}

/// The longest transaction latency in pgbench's per-transaction logs `<base>/<log>.*`, in milliseconds.
pub fn longest_transaction_ms(cluster: &PatroniCluster, log: &str) -> f64 {
    let mut longest = 0u64;
    let entries = std::fs::read_dir(cluster.base_dir()).expect("the base dir");
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&format!("{log}.")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("a pgbench log");
        for line in text.lines() {
            if let Some(micros) = line.split_whitespace().nth(2).and_then(|f| f.parse::<u64>().ok()) {
                longest = longest.max(micros);
            }
        }
    }
    longest as f64 / 1000.0
}
