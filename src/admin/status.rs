//! The `/status` value: one consistent picture of the cluster as pgsplit sees it, taken from a single topology
//! snapshot plus the proxy's counters, the session workers, the pause gate and the changeover record. `/metrics` renders the same value,
//! and the CLI reads it back (hence `Deserialize`), so the three never disagree.
//!
//! Building it only reads: it never locks the topology, never waits on a pool beyond the moment `stats` takes, and
//! never changes anything.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::config::WorkerCount;
use crate::context::AdminContext;
use crate::runtime::Placement;
use crate::topology::gate::{Direction, Gate};
use crate::topology::monitor::format_lsn;
use crate::topology::patroni::state::PatroniStatus;
use crate::topology::progress::Progress;
use crate::topology::{FreshnessCounts, Instance, Role, Topology};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Bumped by every topology swap.
    pub generation: u64,
    /// The leader's name.
    pub leader: String,
    pub paused: Paused,
    /// Logged-in clients.
    pub clients: usize,
    /// Of those, clients pinned to one server connection.
    pub pinned_clients: usize,
    /// The threads that run client sessions; None from a pgsplit too old to report them.
    #[serde(default)]
    pub workers: Option<WorkersStatus>,
    /// The leader first, then the followers pool by pool.
    pub instances: Vec<InstanceStatus>,
    /// Each follower pool's own figures.
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
    /// The running or last orchestrated changeover.
    pub changeover: Option<Progress>,
    /// With `[topology] source = "patroni"`: Patroni's view beside pgsplit's, and whether writes are held for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniStatus>,
}

/// The session threads (`proxy.workers`) and how the sessions are spread over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersStatus {
    pub threads: usize,
    /// The CPUs pgsplit could use when it chose `threads` itself (no `proxy.workers`, or "auto"); None when the
    /// config gives the number.
    pub from_cpus: Option<usize>,
    /// Client connections on each worker now (logged in or not), worker 0 first.
    pub sessions: Vec<usize>,
}

impl WorkersStatus {
    pub fn of(placement: &Placement, count: WorkerCount) -> WorkersStatus {
        let sessions = placement.sessions();
        WorkersStatus {
            threads: sessions.len(),
            from_cpus: count.from_cpus,
            sessions,
        }
    }
}

/// Which directions the pause gate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub writes: bool,
    pub reads: bool,
}

impl Paused {
    pub fn of(gate: &Gate) -> Paused {
        Paused {
            writes: gate.is_paused(Direction::Writes),
            reads: gate.is_paused(Direction::Reads),
        }
    }
}

/// The answer to `POST /pause` and `POST /resume`: what the gate holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedAnswer {
    pub paused: Paused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    /// The follower pool it belongs to; `None` for the leader.
    pub pool: Option<String>,
    /// "leader" or "follower".
    pub role: String,
    pub host: String,
    pub port: u16,
    /// The monitor's last check succeeded.
    pub healthy: bool,
    pub in_recovery: bool,
    /// Replay LSN (followers) or current WAL LSN (leader), as PostgreSQL prints a `pg_lsn`.
    pub lsn: String,
    /// The timeline a primary writes on; 0 for a standby.
    pub timeline: u32,
    /// The cluster it belongs to (`pg_control_system().system_identifier`, a 64-bit number as a string: JSON
    /// readers lose digits of larger numbers); None until it has answered.
    #[serde(default)]
    pub system_identifier: Option<String>,
    /// Why pgsplit does not use it now (down, another cluster, another timeline, behind…); None while it does.
    #[serde(default)]
    pub reason: Option<String>,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub lag_commits: u64,
    pub weight: u32,
    pub server_connections: Connections,
    /// Units of work routed here and not finished.
    pub outstanding: u32,
    /// Units routed here so far, by reason.
    pub routed: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    /// Reads that had to see the client's own last write, by where they were served.
    pub read_your_writes: FreshnessCounts,
}

/// Server connections to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Lent out to a client now.
    pub active: usize,
    pub idle: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
    /// Checkouts that had to wait for a connection, since pgsplit started (a counter).
    #[serde(default)]
    pub waits: u64,
    /// Connections lent to a session on another worker thread than the one they were on, since pgsplit started
    /// (a counter; each move costs two `epoll_ctl` calls).
    #[serde(default)]
    pub moves: u64,
    /// The instance's connection limit.
    pub max: usize,
}

impl Status {
    /// The proxy as it is now.
    pub fn capture(ctx: &AdminContext) -> Status {
        let topology = ctx.topology.load();
        Status {
            workers: Some(WorkersStatus::of(&ctx.placement, topology.config.proxy.workers)),
            patroni: ctx.control.patroni().map(|p| p.status()),
            ..Status::of(
                &topology,
                &ctx.control.gate,
                ctx.gauges.clients.load(Ordering::Relaxed),
                ctx.gauges.pinned.load(Ordering::Relaxed),
                ctx.control.board().current().as_ref(),
            )
        }
    }

    fn of(
        topology: &Topology,
        gate: &Gate,
        clients: usize,
        pinned_clients: usize,
        changeover: Option<&Progress>,
    ) -> Status {
        let config = &topology.config;
        let leader = instance_status(&topology.leader, Role::Leader, None, config.leader.max_connections);
        let followers = topology.pools.iter().flat_map(|pool| {
            let max = config
                .follower_pools
                .iter()
                .find(|p| p.name == *pool.name)
                .map_or(0, |p| p.max_connections_per_instance);
            pool.instances
                .iter()
                .map(move |instance| instance_status(instance, Role::Follower, Some(&pool.name), max))
        });
        Status {
            generation: topology.generation,
            leader: topology.leader.name.to_string(),
            paused: Paused::of(gate),
            clients,
            pinned_clients,
            workers: None,
            instances: std::iter::once(leader).chain(followers).collect(),
            pools: topology
                .pools
                .iter()
                .map(|pool| PoolStatus {
                    name: pool.name.to_string(),
                    read_your_writes: pool.freshness(),
                })
                .collect(),
            changeover: changeover.cloned(),
            patroni: None,
        }
    }
}

fn instance_status(instance: &Instance, role: Role, pool: Option<&str>, max: usize) -> InstanceStatus {
    let health = instance.health.snapshot();
    let stats = instance.pool.stats();
    InstanceStatus {
        name: instance.name.to_string(),
        pool: pool.map(str::to_owned),
        role: role_name(role).to_owned(),
        host: instance.host.to_string(),
        port: instance.port,
        healthy: health.up,
        in_recovery: health.in_recovery,
        lsn: format_lsn(health.lsn),
        timeline: health.timeline,
        system_identifier: (health.system_identifier != 0).then(|| health.system_identifier.to_string()),
        reason: instance.health.reason().map(|r| r.to_string()),
        lag_bytes: health.lag_bytes,
        lag_seconds: health.lag.as_secs_f64(),
        lag_commits: health.lag_commits,
        weight: instance.weight(),
        server_connections: Connections {
            active: stats.total.saturating_sub(stats.idle),
            idle: stats.idle,
            waiting: stats.waiting,
            waits: stats.waits,
            moves: stats.moves,
            max,
        },
        outstanding: instance.outstanding(),
        routed: instance
            .routed()
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect(),
    }
}

#[cfg(test)]
impl InstanceStatus {
    /// A healthy, caught-up instance with 3 active and 1 idle connections of 20, for tests of what renders a status.
    pub(crate) fn example(name: &str, pool: Option<&str>) -> InstanceStatus {
        let follower = pool.is_some();
        InstanceStatus {
            name: name.into(),
            pool: pool.map(Into::into),
            role: if follower { "follower" } else { "leader" }.into(),
            host: "127.0.0.1".into(),
            port: 15432,
            healthy: true,
            in_recovery: follower,
            lsn: "0/3000060".into(),
            timeline: if follower { 0 } else { 1 },
            system_identifier: Some("7312345678901234567".into()),
            reason: None,
            lag_bytes: 0,
            lag_seconds: 0.0,
            lag_commits: 0,
            weight: 1,
            server_connections: Connections {
                active: 3,
                idle: 1,
                waiting: 0,
                waits: 0,
                moves: 0,
                max: 20,
            },
            outstanding: 0,
            routed: BTreeMap::new(),
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::router::RouteReason;
    use crate::runtime::Workers;
    use crate::topology::health::Observation;
    use crate::topology::progress::{Outcome, Step, StepReport, StepState};

    const CONFIG: &str = r#"
[leader]
name = "main"
host = "127.0.0.1"
port = 15432
max_connections = 7

[[users]]
name = "app"
password = "app"

[[follower_pools]]
name = "default"
max_connections_per_instance = 3
instances = [{ name = "f1", host = "10.0.0.2", port = 5433, weight = 2 }]
"#;

    fn topology() -> Topology {
        Topology::from_config(&Config::parse(CONFIG, "t.toml").expect("valid test config"))
    }

    #[test]
    fn status_lists_the_leader_first_with_roles_pools_and_limits() {
        let topology = topology();
        let status = Status::of(&topology, &Gate::default(), 4, 1, None);
        assert_eq!(status.generation, 1);
        assert_eq!(status.leader, "main");
        assert_eq!((status.clients, status.pinned_clients), (4, 1));
        let names: Vec<_> = status
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.role.as_str()))
            .collect();
        assert_eq!(names, [("main", "leader"), ("f1", "follower")]);
        let (leader, f1) = (&status.instances[0], &status.instances[1]);
        assert_eq!(leader.pool, None);
        assert_eq!(f1.pool.as_deref(), Some("default"));
        assert_eq!((f1.host.as_str(), f1.port, f1.weight), ("10.0.0.2", 5433, 2));
        assert_eq!(leader.server_connections.max, 7);
        assert_eq!(f1.server_connections.max, 3);
        assert!(!leader.healthy, "unknown until the monitor's first check");
        assert_eq!(status.changeover, None);
    }

    #[test]
    fn status_shows_health_lag_routes_and_pauses() {
        let topology = topology();
        let f1 = &topology.pools[0].instances[0];
        f1.health.observe(Observation {
            in_recovery: true,
            lsn: 0x3000060,
            lag_bytes: 4096,
            lag: std::time::Duration::from_millis(1500),
            lag_commits: 3,
            timeline: 0,
        });
        f1.count_route(RouteReason::Read);
        f1.count_route(RouteReason::Read);
        let gate = Gate::default();
        gate.pause(Direction::Writes);
        let status = Status::of(&topology, &gate, 0, 0, None);
        let f1 = &status.instances[1];
        assert!(f1.healthy && f1.in_recovery);
        assert_eq!(f1.lsn, "0/3000060");
        assert_eq!((f1.lag_bytes, f1.lag_seconds, f1.lag_commits), (4096, 1.5, 3));
        assert_eq!(f1.routed.get("read"), Some(&2));
        assert_eq!(
            status.paused,
            Paused {
                writes: true,
                reads: false
            }
        );
    }

    #[test]
    fn status_says_why_an_instance_is_not_used_and_which_cluster_it_belongs_to() {
        let topology = topology();
        let f1 = &topology.pools[0].instances[0];
        f1.health.set_system_identifier(7_312_345_678_901_234_567);
        f1.health.set_reason(Some("another cluster"));
        let status = Status::of(&topology, &Gate::default(), 0, 0, None);
        let (leader, f1) = (&status.instances[0], &status.instances[1]);
        assert_eq!(f1.reason.as_deref(), Some("another cluster"));
        assert_eq!(f1.system_identifier.as_deref(), Some("7312345678901234567"));
        assert_eq!(
            (leader.reason.as_deref(), leader.system_identifier.as_deref()),
            (None, None)
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["instances"][1]["system_identifier"], "7312345678901234567",
            "a string: no digit lost"
        );
    }

    #[test]
    fn changeover_steps_and_outcomes_have_their_json_names() {
        let mut progress = Progress::new("f1");
        progress.outcome = Outcome::RolledBack;
        progress.steps.push(StepReport {
            step: Step::CatchUp,
            state: StepState::Failed,
            detail: "behind".into(),
            millis: 30_000,
        });
        let json = serde_json::to_value(&progress).unwrap();
        assert_eq!(json["outcome"], "rolled_back");
        assert_eq!(json["steps"][0]["step"], "catch_up");
        assert_eq!(progress.outcome.to_string(), "rolled_back");
        assert_eq!(format!("{:<10}|", Step::CatchUp), "catch_up  |");
        assert!(!progress.is_running());
    }

    #[test]
    fn status_reads_back_from_its_json() {
        let mut status = Status::of(&topology(), &Gate::default(), 2, 0, Some(&Progress::new("f1")));
        status.workers = Some(WorkersStatus {
            threads: 2,
            from_cpus: Some(4),
            sessions: vec![3, 2],
        });
        let json = serde_json::to_string(&status).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
        assert!(back.changeover.is_some_and(|c| c.is_running()));

        // The CLI and the bench read the status of older proxies too.
        let mut older = serde_json::to_value(&status).unwrap();
        older.as_object_mut().unwrap().remove("workers");
        let back: Status = serde_json::from_value(older).unwrap();
        assert_eq!(back.workers, None);
    }

    #[test]
    fn workers_show_their_count_how_it_was_chosen_and_the_sessions_on_each() {
        let workers = Workers::start(2).expect("the workers start");
        let seats: Vec<_> = (0..3).map(|_| workers.placement().place().0).collect();
        let auto = WorkersStatus::of(workers.placement(), WorkerCount::auto(4));
        assert_eq!((auto.threads, auto.from_cpus), (2, Some(4)));
        let mut spread = auto.sessions.clone();
        spread.sort_unstable();
        assert_eq!(spread, [1, 2], "the three sessions are spread over both workers");
        drop(seats);
        let written = WorkerCount {
            threads: 2,
            from_cpus: None,
        };
        let written = WorkersStatus::of(workers.placement(), written);
        assert_eq!((written.from_cpus, written.sessions), (None, vec![0, 0]));
    }
}
