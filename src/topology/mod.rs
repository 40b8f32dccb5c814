//! The cluster as pgsplit knows it now: one immutable [`Topology`] value behind an `ArcSwap`, loaded once per
//! routing decision and never locked on the hot path. A swap (reload, promotion) never disturbs a transaction
//! already running: it keeps the `Arc<Instance>` it was routed to.
//!
//! Each [`Instance`] owns its server-connection pool and the [`Health`] the monitor writes and the router reads.
//! [`watch`] says when the config should be reloaded (SIGHUP, file changes).

pub mod catalog;
pub mod counters;
pub mod health;
pub mod monitor;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use counters::RouteCounters;
pub use health::Health;

use crate::config::Config;
use crate::pool::InstancePool;
use crate::router::RouteReason;

/// The shared, swappable current topology.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

pub struct Instance {
    pub name: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
    pub role: Role,
    /// Share of reads relative to the pool's other instances (followers only).
    pub weight: u32,
    pub pool: Arc<InstancePool>,
    pub health: Health,
    /// Transactions routed here and not finished: the balancer's measure of load.
    outstanding: AtomicU32,
    /// Units routed here, by reason.
    routed: RouteCounters,
}

impl Instance {
    pub fn new(
        name: &str,
        host: &str,
        port: u16,
        role: Role,
        weight: u32,
        max_connections: usize,
        config: &Config,
    ) -> Self {
        Instance {
            name: name.into(),
            host: host.into(),
            port,
            role,
            weight,
            pool: Arc::new(InstancePool::new(
                name,
                host,
                port,
                max_connections,
                config.server.connect_timeout,
            )),
            health: Health::default(),
            outstanding: AtomicU32::new(0),
            routed: RouteCounters::default(),
        }
    }

    pub fn count_route(&self, reason: RouteReason) {
        self.routed.count(reason);
    }

    /// Units routed here so far, by reason (reasons never used are left out).
    pub fn routed(&self) -> Vec<(&'static str, u64)> {
        self.routed.snapshot()
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a transaction routed here until the returned guard drops.
    pub fn begin_work(self: &Arc<Self>) -> WorkGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        WorkGuard(self.clone())
    }
}

/// Held while a transaction runs on an instance.
pub struct WorkGuard(Arc<Instance>);

impl WorkGuard {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.0
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct FollowerPool {
    pub name: Arc<str>,
    pub listen: Option<SocketAddr>,
    pub max_lag_bytes: u64,
    pub max_lag_seconds: Duration,
    pub instances: Vec<Arc<Instance>>,
}

pub struct Topology {
    /// Bumped by every swap.
    pub generation: u64,
    pub leader: Arc<Instance>,
    pub pools: Vec<Arc<FollowerPool>>,
    /// Index into `pools` of the pool serving reads on the main endpoint.
    pub read_pool: Option<usize>,
}

impl Topology {
    /// The topology a config describes, with fresh pools and unknown health.
    pub fn from_config(config: &Config) -> Topology {
        let leader = &config.leader;
        let pools: Vec<Arc<FollowerPool>> = config
            .follower_pools
            .iter()
            .map(|pool| {
                Arc::new(FollowerPool {
                    name: pool.name.as_str().into(),
                    listen: pool.listen,
                    max_lag_bytes: pool.max_lag_bytes,
                    max_lag_seconds: pool.max_lag_seconds,
                    instances: pool
                        .instances
                        .iter()
                        .map(|f| {
                            let max = pool.max_connections_per_instance;
                            Arc::new(Instance::new(
                                &f.name,
                                &f.host,
                                f.port,
                                Role::Follower,
                                f.weight,
                                max,
                                config,
                            ))
                        })
                        .collect(),
                })
            })
            .collect();
        let read_pool = config
            .routing
            .read_pool
            .as_ref()
            .and_then(|name| pools.iter().position(|p| &*p.name == name));
        Topology {
            generation: 1,
            leader: Arc::new(Instance::new(
                &leader.name,
                &leader.host,
                leader.port,
                Role::Leader,
                1,
                leader.max_connections,
                config,
            )),
            pools,
            read_pool,
        }
    }

    /// Every instance: the leader first, then followers pool by pool.
    pub fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        std::iter::once(&self.leader).chain(self.pools.iter().flat_map(|p| p.instances.iter()))
    }
}
