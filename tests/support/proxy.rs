//! pgsplit in front of a test cluster, in-process, on a free loopback port, plus the client helpers tests share.

use std::net::SocketAddr;
use std::time::Duration;

use pgsplit::config::{Config, FollowerConfig, FollowerPoolConfig, HealthConfig, PoolMode};
use pgsplit::topology::control::Control;
use pgsplit::topology::progress::Progress;

use super::eventually;
use pgsplit::demo::cluster::LocalCluster;
use pgsplit::proxy::Proxy;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// A config pointing at `cluster`'s leader, listening on ephemeral ports; tests adjust fields before starting.
pub fn config_for(cluster: &LocalCluster) -> Config {
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[server]
checkout_timeout = "5s"
[[users]]
name = "{user}"
password = "{password}"
[leader]
host = "127.0.0.1"
port = {port}
max_connections = 4
"#,
        user = cluster.app_user(),
        password = cluster.app_password(),
        port = cluster.leader().port,
    );
    Config::parse(&text, "test.toml").expect("test config is valid")
}

/// Health checks fast enough for tests to see changes within a fraction of a second.
pub const HEALTH: HealthConfig = HealthConfig {
    interval: Duration::from_millis(100),
    timeout: Duration::from_secs(2),
};

/// `cluster`'s leader plus its followers as the read pool "default" (weight 1 each), with these lag limits.
pub fn config_with_followers(cluster: &LocalCluster, max_lag_bytes: u64, max_lag_seconds: Duration) -> Config {
    let mut config = config_for(cluster);
    config.follower_pools.push(FollowerPoolConfig {
        name: "default".into(),
        listen: None,
        max_connections_per_instance: 2,
        max_lag_bytes,
        max_lag_seconds,
        instances: cluster
            .followers()
            .iter()
            .map(|f| FollowerConfig {
                name: f.name.clone(),
                host: "127.0.0.1".into(),
                port: f.port,
                weight: 1,
            })
            .collect(),
    });
    config.routing.read_pool = Some("default".into());
    config.health = HEALTH;
    config
}

pub struct TestProxy {
    pub proxy: Proxy,
    pub database: String,
}

impl TestProxy {
    pub async fn start(config: Config, cluster: &LocalCluster) -> TestProxy {
        let proxy = Proxy::start(config).await.expect("proxy starts");
        TestProxy {
            proxy,
            database: cluster.app_database().to_owned(),
        }
    }

    /// Starts from a config file, which pgsplit then watches and reloads.
    pub async fn start_from_file(path: &std::path::Path, cluster: &LocalCluster) -> TestProxy {
        let proxy = Proxy::start_from_file(path).await.expect("proxy starts");
        TestProxy {
            proxy,
            database: cluster.app_database().to_owned(),
        }
    }

    pub fn port(&self) -> u16 {
        self.proxy.local_addr().port()
    }

    /// A libpq-style connection string for `user`/`password` through the proxy.
    pub fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={} connect_timeout=10",
            self.port(),
            self.database
        )
    }

    pub async fn connect_as(&self, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(user, password), NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A client as the app user whose notices and notifications arrive on the returned channel.
    pub async fn connect_with_messages(&self, extra: &str) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
        let conninfo = format!("{} {extra}", self.conninfo("app", "app"));
        let (client, mut connection) = tokio_postgres::connect(&conninfo, NoTls).await.expect("connects");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                let _ = tx.send(message);
            }
        });
        (client, rx)
    }

    pub async fn connect(&self) -> Client {
        self.connect_as("app", "app")
            .await
            .expect("app connects through pgsplit")
    }

    pub async fn stop(self) {
        assert!(
            self.proxy.shutdown(Duration::from_secs(5)).await,
            "sessions ended within the grace period"
        );
    }
}

/// Starts a proxy for `cluster` in `mode` with `pool_size` leader connections.
pub async fn start(cluster: &LocalCluster, mode: PoolMode, pool_size: usize) -> TestProxy {
    let mut config = config_for(cluster);
    config.proxy.pool_mode = mode;
    config.leader.max_connections = pool_size;
    TestProxy::start(config, cluster).await
}

/// pgsplit in transaction mode in front of `cluster` with its followers as the read pool (lag limits 16 MB and
/// 5 s), adjusted by `edit`, once every follower is usable.
pub async fn routed(cluster: &LocalCluster, edit: impl FnOnce(&mut Config)) -> TestProxy {
    let mut config = config_with_followers(cluster, 16 << 20, Duration::from_secs(5));
    config.proxy.pool_mode = PoolMode::Transaction;
    edit(&mut config);
    let p = TestProxy::start(config, cluster).await;
    let topology = p.proxy.context().topology.clone();
    eventually("every follower usable", || {
        let t = topology.load();
        let waiting: Vec<_> = t.pools[0]
            .instances
            .iter()
            .filter(|i| i.health.usable_for().is_none())
            .map(|i| i.name.clone())
            .collect();
        waiting
            .is_empty()
            .then_some(())
            .ok_or(format!("not usable yet: {waiting:?}"))
    })
    .await;
    p
}

/// A client connected straight to `instance` as the app user — not through pgsplit.
pub async fn connect_direct(cluster: &LocalCluster, instance: &pgsplit::demo::cluster::Instance) -> Client {
    let (client, connection) = tokio_postgres::connect(&cluster.app_url(instance), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {} directly: {e}", instance.name));
    tokio::spawn(connection);
    client
}

/// Polls the changeover's record until `reached` holds; returns it then.
pub async fn changeover_until(control: &Control, what: &str, reached: impl Fn(&Progress) -> bool) -> Progress {
    eventually(what, || match control.board().current() {
        Some(progress) if reached(&progress) => Ok(()),
        Some(progress) => Err(format!("{:?}: {:?}", progress.outcome, progress.steps.last())),
        None => Err("no changeover yet".into()),
    })
    .await;
    control
        .board()
        .current()
        .unwrap_or_else(|| panic!("{what}: the record went away"))
}

/// `pgsplit <args> --admin <addr>`, the real binary, with no config file and no token from the environment:
/// (exit code, stdout, stderr).
pub async fn pgsplit_cli(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(args)
        .args(["--admin", &admin.to_string(), "-c", "/nonexistent/proxy.toml"])
        .env_remove("PGSPLIT_CONFIG")
        .env_remove("PGSPLIT_ADMIN_TOKEN")
        .output()
        .await
        .expect("the pgsplit binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}
