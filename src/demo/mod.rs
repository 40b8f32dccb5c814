//! `pgsplit demo`: a throwaway local cluster (leader + 2 streaming followers, from the machine's PostgreSQL server
//! binaries) with pgsplit in front on the address of the root `proxy.toml`. Ctrl-C stops and removes everything;
//! a watchdog process does the same if pgsplit dies some other way. `cluster` owns the PostgreSQL side (also used
//! by every integration test through tests/support).

pub mod cluster;

use std::future::Future;

use cluster::{ClusterError, ClusterOptions, LocalCluster, Toolbox, Watchdog};

use crate::config::{Config, ConfigErrors};
use crate::proxy::{Proxy, StartError};

/// The demo runs the repository's own example config, with the cluster's ports filled in.
const DEMO_CONFIG: &str = include_str!("../../proxy.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("starting the local cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("the built-in demo config: {0}")]
    Config(#[from] ConfigErrors),
    #[error("{0} (is another pgsplit or PgBouncer running?)")]
    Start(#[from] StartError),
    #[error("the cluster start task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs until `stop` resolves.
pub async fn run(stop: impl Future<Output = ()>) -> Result<(), DemoError> {
    let tools = Toolbox::locate()?;
    let base_dir = cluster::unique_base_dir()?;
    let _watchdog = Watchdog::spawn(&tools, &base_dir)?;
    eprintln!("starting a leader and 2 followers in {} ...", base_dir.display());
    let options = ClusterOptions {
        followers: 2,
        base_dir: Some(base_dir),
        ..ClusterOptions::default()
    };
    let mut local = tokio::task::spawn_blocking(move || LocalCluster::start(options)).await??;

    let mut config = Config::parse(DEMO_CONFIG, "proxy.toml")?;
    config.leader.port = local.leader().port;
    let mut followers = local.followers().iter();
    for instance in config
        .follower_pools
        .iter_mut()
        .flat_map(|pool| pool.instances.iter_mut())
    {
        if let Some(follower) = followers.next() {
            instance.port = follower.port;
        }
    }
    let proxy = match Proxy::start(config).await {
        Ok(proxy) => proxy,
        Err(error) => {
            let _ = local.stop();
            return Err(error.into());
        }
    };
    let addr = proxy.local_addr();
    let url = format!(
        "postgres://{}:{}@{}:{}/{}",
        local.app_user(),
        local.app_password(),
        addr.ip(),
        addr.port(),
        local.app_database()
    );
    println!("pgsplit is listening in front of a local cluster:");
    for instance in local.instances() {
        println!("  {:<8} 127.0.0.1:{}", instance.name, instance.port);
    }
    println!("\nDATABASE_URL={url}\n\ntry:  psql '{url}'");
    println!(
        "      pgsplit status --admin {}    (also: pgsplit promote f1)",
        proxy.admin_addr()
    );
    println!("\nCtrl-C stops pgsplit and removes the cluster.");
    stop.await;
    eprintln!("stopping ...");
    proxy.shutdown(std::time::Duration::from_secs(5)).await;
    tokio::task::spawn_blocking(move || local.stop()).await??;
    Ok(())
}
