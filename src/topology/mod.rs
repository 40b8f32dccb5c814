//! The cluster as pgsplit knows it now: one immutable [`Topology`] value behind an `ArcSwap`, loaded once per
//! routing decision and never locked on the hot path. A swap (reload, promotion, changeover) never disturbs a
//! transaction already running: it keeps the `Arc<Instance>` it was routed to.
//!
//! An [`Instance`] is one server, known by name and address; it owns its server-connection pool and the
//! [`Health`] the monitor writes and the router reads. Its role is not its own: it is the leader when the topology
//! says so, so a promoted follower keeps its pool, counters and health across the swap. Building a topology from
//! a config reuses the previous topology's instances ([`Topology::rebuild`]); instances left out are retired.
//! [`control`] makes every change; [`changeover`] orchestrates a promotion through it and records its steps in
//! [`progress`]; [`conn`] is how pgsplit's own connections log in and run their bounded statements; [`watch`]
//! says when the config file should be reloaded (SIGHUP, file changes).

pub mod catalog;
pub mod changeover;
pub mod conn;
pub mod control;
pub mod counters;
pub mod gate;
pub mod health;
pub mod monitor;
pub mod patroni;
pub mod progress;
pub mod promotion;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use counters::{FreshnessCounts, RouteCounters, Served};
pub use health::Health;

use crate::config::Config;
use crate::pool::{ConnectOptions, InstancePool};
use crate::router::RouteReason;
use crate::runtime::PerWorker;

/// The shared, swappable current topology.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

pub struct Instance {
    pub name: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
    /// Share of reads relative to the pool's other instances (followers only); a reload may change it.
    weight: AtomicU32,
    pub pool: Arc<InstancePool>,
    pub health: Health,
    /// Left out of the topology: idle connections are closed, busy ones when their unit ends.
    retired: AtomicBool,
    /// Units routed here and not finished: the balancer's measure of load. One shared counter, not one per worker:
    /// every read's routing decision reads it, and summing per-worker counters there would cost more cache misses
    /// than the shared adds do.
    outstanding: AtomicU32,
    /// Of those, units that may write: what a changeover waits for before fencing. Per worker (read only by a
    /// changeover), counted up and down on the same stripe.
    writing: PerWorker<AtomicU32>,
    /// Units routed here, by reason.
    routed: RouteCounters,
}

impl Instance {
    pub fn new(name: &str, host: &str, port: u16, weight: u32, max_connections: usize, config: &Config) -> Self {
        Instance {
            name: name.into(),
            host: host.into(),
            port,
            weight: AtomicU32::new(weight),
            pool: Arc::new(InstancePool::new(
                name,
                host,
                port,
                max_connections,
                ConnectOptions::of(config),
            )),
            health: Health::default(),
            retired: AtomicBool::new(false),
            outstanding: AtomicU32::new(0),
            writing: PerWorker::default(),
            routed: RouteCounters::default(),
        }
    }

    /// Same server: same name and address.
    pub fn is(&self, name: &str, host: &str, port: u16) -> bool {
        &*self.name == name && &*self.host == host && self.port == port
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
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

    /// Units that may write, running here now.
    pub fn writing(&self) -> u32 {
        let stripes = self.writing.iter().map(|stripe| stripe.load(Ordering::SeqCst));
        stripes.fold(0, u32::wrapping_add)
    }

    /// Counts a unit routed here until the returned guard drops. A unit that may write is counted before the
    /// session looks at the write gate (both `SeqCst`, on each stripe): a pause either sees the unit or the unit
    /// sees the pause.
    pub fn begin_work(self: &Arc<Self>, writes: bool) -> WorkGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let writing = writes.then(|| {
            let stripe = PerWorker::<AtomicU32>::stripe();
            self.writing.at(stripe).fetch_add(1, Ordering::SeqCst);
            stripe
        });
        WorkGuard {
            instance: self.clone(),
            writing,
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Takes the instance out of service: its idle connections close now, lent-out ones as they come back.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.pool.retire();
    }
}

/// Held while a unit of work runs on an instance.
pub struct WorkGuard {
    instance: Arc<Instance>,
    /// The stripe of `writing` counted, for a unit that may write.
    writing: Option<usize>,
}

impl WorkGuard {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.instance.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(stripe) = self.writing {
            self.instance.writing.at(stripe).fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub struct FollowerPool {
    pub name: Arc<str>,
    pub listen: Option<SocketAddr>,
    pub max_lag_bytes: u64,
    pub max_lag_seconds: Duration,
    pub instances: Vec<Arc<Instance>>,
    /// Reads with a read-your-writes floor, by where they were served; carried across swaps by pool name.
    pub freshness: Arc<counters::FreshnessCounters>,
}

impl FollowerPool {
    pub fn freshness(&self) -> FreshnessCounts {
        self.freshness.snapshot()
    }
}

pub struct Topology {
    /// Bumped by every swap.
    pub generation: u64,
    /// The config this topology was built from (with the roles as pgsplit now knows them).
    pub config: Arc<Config>,
    pub leader: Arc<Instance>,
    pub pools: Vec<Arc<FollowerPool>>,
    /// Index into `pools` of the pool serving reads on the main endpoint.
    pub read_pool: Option<usize>,
}

impl Topology {
    /// The topology a config describes, with fresh pools and unknown health.
    pub fn from_config(config: &Config) -> Topology {
        Self::rebuild(config, None)
    }

    /// The topology `config` describes. Instances of `previous` with the same name and address are kept — their
    /// connections, health and counters — with the new weight and connection limit applied at once; the others
    /// are new. What `previous` had and this one lacks is for the caller to [`retire`](Instance::retire).
    pub fn rebuild(config: &Config, previous: Option<&Topology>) -> Topology {
        let instance = |name: &str, host: &str, port: u16, weight: u32, max_connections: usize| {
            let known = previous.and_then(|t| t.instances().find(|i| i.is(name, host, port)));
            match known {
                Some(known) => {
                    known.weight.store(weight, Ordering::Relaxed);
                    known.pool.set_limits(max_connections, ConnectOptions::of(config));
                    known.clone()
                }
                None => Arc::new(Instance::new(name, host, port, weight, max_connections, config)),
            }
        };
        let leader = &config.leader;
        let leader = instance(&leader.name, &leader.host, leader.port, 1, leader.max_connections);
        let pools: Vec<Arc<FollowerPool>> = config
            .follower_pools
            .iter()
            .map(|pool| {
                let freshness = previous
                    .and_then(|t| t.pools.iter().find(|p| *p.name == *pool.name))
                    .map(|p| p.freshness.clone())
                    .unwrap_or_default();
                Arc::new(FollowerPool {
                    freshness,
                    name: pool.name.as_str().into(),
                    listen: pool.listen,
                    max_lag_bytes: pool.max_lag_bytes,
                    max_lag_seconds: pool.max_lag_seconds,
                    instances: pool
                        .instances
                        .iter()
                        .map(|f| instance(&f.name, &f.host, f.port, f.weight, pool.max_connections_per_instance))
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
            generation: previous.map_or(1, |t| t.generation + 1),
            config: Arc::new(config.clone()),
            leader,
            pools,
            read_pool,
        }
    }

    /// Every instance: the leader first, then followers pool by pool.
    pub fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        std::iter::once(&self.leader).chain(self.pools.iter().flat_map(|p| p.instances.iter()))
    }

    /// The role an instance has here, or None if it is not part of this topology.
    pub fn role_of(&self, instance: &Instance) -> Option<Role> {
        if std::ptr::eq(&*self.leader, instance) {
            return Some(Role::Leader);
        }
        self.pools
            .iter()
            .flat_map(|p| p.instances.iter())
            .any(|i| std::ptr::eq(&**i, instance))
            .then_some(Role::Follower)
    }

    /// Instances of `self` that `next` no longer has.
    pub fn left_out_of(&self, next: &Topology) -> Vec<Arc<Instance>> {
        self.instances()
            .filter(|i| !next.instances().any(|n| Arc::ptr_eq(i, n)))
            .cloned()
            .collect()
    }
}
