//! pgsplit's own view of a run, read through its admin API (`--admin`): `/status` once before the run, every
//! [`POLL`] during it and once after. From the differences: the units of work each instance served and their
//! share, the largest replication lag seen per follower, read-your-writes reads by where they were served, and the
//! most clients seen queued for a server connection per instance. Counters that restart (an instance removed and
//! added again) are followed from their new start.
//!
//! Owns reading the admin API for the figures; never changes anything there (`events` does that).

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::admin::{InstanceStatus, Status};
use crate::cli::{AdminClient, AdminError};
use crate::topology::FreshnessCounts;

/// How often `/status` is read during a run: a few times per health-check interval at its usual settings.
pub const POLL: Duration = Duration::from_millis(250);
/// A look that takes longer is given up (and counted as failed): the run's end must not wait on it.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// One instance at one look: what it served since the previous look, its lag (followers) and waiting clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSample {
    pub name: String,
    pub units: u64,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub at_s: f64,
    pub instances: Vec<InstanceSample>,
}

/// One instance over the whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSummary {
    pub name: String,
    /// Its follower pool; `None` while it is the leader.
    pub pool: Option<String>,
    /// Its role at the end of the run, and at the start if that differs (a changeover).
    pub role: String,
    pub role_at_start: String,
    /// Units of work (statements, batches or transactions, as pgsplit routes them) it served during the run.
    pub units: u64,
    /// `units` over all instances' units.
    pub share: f64,
    /// Largest replication lag seen while it was a follower.
    pub max_lag_bytes: Option<u64>,
    pub max_lag_seconds: Option<f64>,
    pub max_lag_commits: Option<u64>,
    /// Most clients seen waiting for one of its server connections at once.
    pub max_waiting: usize,
    /// Units that had to wait for one of its server connections during the run (pgsplit's counter).
    pub waits: u64,
    pub healthy_at_end: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminSummary {
    pub address: String,
    pub units: u64,
    pub instances: Vec<InstanceSummary>,
    /// Reads with a read-your-writes floor during the run, by where they ran (all pools).
    pub read_your_writes: FreshnessCounts,
    pub polls: u64,
    pub failed_polls: u64,
    pub last_poll_error: Option<String>,
    pub samples: Vec<Sample>,
}

struct Track {
    pool: Option<String>,
    role: String,
    role_at_start: String,
    /// The instance's routed total at the last look.
    routed: u64,
    units: u64,
    max_lag_bytes: Option<u64>,
    max_lag_seconds: Option<f64>,
    max_lag_commits: Option<u64>,
    max_waiting: usize,
    /// The instance's checkout-wait counter at the last look, and the waits counted since the first.
    waits_counter: u64,
    waits: u64,
    healthy: bool,
}

struct State {
    /// In the order first seen: the leader first, then the followers pool by pool.
    tracks: Vec<(String, Track)>,
    read_your_writes_start: FreshnessCounts,
    read_your_writes: FreshnessCounts,
    samples: Vec<Sample>,
    polls: u64,
    failed_polls: u64,
    last_error: Option<String>,
}

pub struct AdminWatch {
    client: AdminClient,
    state: Mutex<State>,
}

fn routed_total(instance: &InstanceStatus) -> u64 {
    instance.routed.values().sum()
}

fn read_your_writes(status: &Status) -> FreshnessCounts {
    status.pools.iter().fold(FreshnessCounts::default(), |sum, pool| {
        let counts = pool.read_your_writes;
        FreshnessCounts {
            caught_up: sum.caught_up + counts.caught_up,
            confirmed: sum.confirmed + counts.confirmed,
            on_leader: sum.on_leader + counts.on_leader,
        }
    })
}

impl AdminWatch {
    /// Takes the first look, the baseline of every difference.
    pub async fn start(client: AdminClient) -> Result<AdminWatch, AdminError> {
        let status: Status = client.get("/status").await?;
        let tracks = status
            .instances
            .iter()
            .map(|instance| {
                let track = Track {
                    pool: instance.pool.clone(),
                    role: instance.role.clone(),
                    role_at_start: instance.role.clone(),
                    routed: routed_total(instance),
                    units: 0,
                    max_lag_bytes: None,
                    max_lag_seconds: None,
                    max_lag_commits: None,
                    max_waiting: instance.server_connections.waiting,
                    waits_counter: instance.server_connections.waits,
                    waits: 0,
                    healthy: instance.healthy,
                };
                (instance.name.clone(), track)
            })
            .collect();
        let counts = read_your_writes(&status);
        Ok(AdminWatch {
            client,
            state: Mutex::new(State {
                tracks,
                read_your_writes_start: counts,
                read_your_writes: counts,
                samples: Vec::new(),
                polls: 1,
                failed_polls: 0,
                last_error: None,
            }),
        })
    }

    pub fn client(&self) -> &AdminClient {
        &self.client
    }

    /// One more look, `at_s` seconds into the run; a failed one is counted and remembered, not fatal (the proxy
    /// may be busy with a changeover).
    pub async fn poll(&self, at_s: f64) {
        let answer = tokio::time::timeout(LOOK_TIMEOUT, self.client.get::<Status>("/status")).await;
        let Ok(mut state) = self.state.lock() else { return };
        state.polls += 1;
        let error = match answer {
            Ok(Ok(status)) => return state.observe(&status, at_s),
            Ok(Err(error)) => error.to_string().replace('\n', " "),
            Err(_) => format!("no answer within {LOOK_TIMEOUT:?}"),
        };
        state.failed_polls += 1;
        state.last_error = Some(error);
    }

    /// A last look, then the run's figures.
    pub async fn finish(&self, at_s: f64) -> AdminSummary {
        self.poll(at_s).await;
        let state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let units: u64 = state.tracks.iter().map(|(_, t)| t.units).sum();
        let start = state.read_your_writes_start;
        let end = state.read_your_writes;
        AdminSummary {
            address: self.client.addr().to_owned(),
            units,
            instances: state
                .tracks
                .iter()
                .map(|(name, t)| InstanceSummary {
                    name: name.clone(),
                    pool: t.pool.clone(),
                    role: t.role.clone(),
                    role_at_start: t.role_at_start.clone(),
                    units: t.units,
                    share: if units == 0 { 0.0 } else { t.units as f64 / units as f64 },
                    max_lag_bytes: t.max_lag_bytes,
                    max_lag_seconds: t.max_lag_seconds,
                    max_lag_commits: t.max_lag_commits,
                    max_waiting: t.max_waiting,
                    waits: t.waits,
                    healthy_at_end: t.healthy,
                })
                .collect(),
            read_your_writes: FreshnessCounts {
                caught_up: end.caught_up.saturating_sub(start.caught_up),
                confirmed: end.confirmed.saturating_sub(start.confirmed),
                on_leader: end.on_leader.saturating_sub(start.on_leader),
            },
            polls: state.polls,
            failed_polls: state.failed_polls,
            last_poll_error: state.last_error.clone(),
            samples: state.samples.clone(),
        }
    }
}

impl State {
    fn observe(&mut self, status: &Status, at_s: f64) {
        let mut sample = Sample {
            at_s,
            instances: Vec::with_capacity(status.instances.len()),
        };
        for instance in &status.instances {
            let index = match self.tracks.iter().position(|(name, _)| *name == instance.name) {
                Some(index) => index,
                None => {
                    // New during the run (a reload, an adopted promotion): everything it routed is the run's.
                    self.tracks.push((
                        instance.name.clone(),
                        Track {
                            pool: instance.pool.clone(),
                            role: instance.role.clone(),
                            role_at_start: "absent".into(),
                            routed: 0,
                            units: 0,
                            max_lag_bytes: None,
                            max_lag_seconds: None,
                            max_lag_commits: None,
                            max_waiting: 0,
                            waits_counter: 0,
                            waits: 0,
                            healthy: instance.healthy,
                        },
                    ));
                    self.tracks.len() - 1
                }
            };
            let track = &mut self.tracks[index].1;
            let routed = routed_total(instance);
            // A counter lower than before started again from zero.
            let served = routed.checked_sub(track.routed).unwrap_or(routed);
            track.routed = routed;
            track.units += served;
            track.role.clone_from(&instance.role);
            track.pool.clone_from(&instance.pool);
            track.healthy = instance.healthy;
            track.max_waiting = track.max_waiting.max(instance.server_connections.waiting);
            let counter = instance.server_connections.waits;
            track.waits += counter.checked_sub(track.waits_counter).unwrap_or(counter);
            track.waits_counter = counter;
            let follower = instance.pool.is_some();
            if follower {
                track.max_lag_bytes = Some(track.max_lag_bytes.unwrap_or(0).max(instance.lag_bytes));
                track.max_lag_seconds = Some(track.max_lag_seconds.unwrap_or(0.0).max(instance.lag_seconds));
                track.max_lag_commits = Some(track.max_lag_commits.unwrap_or(0).max(instance.lag_commits));
            }
            sample.instances.push(InstanceSample {
                name: instance.name.clone(),
                units: served,
                lag_bytes: follower.then_some(instance.lag_bytes),
                lag_seconds: follower.then_some(instance.lag_seconds),
                waiting: instance.server_connections.waiting,
            });
        }
        self.read_your_writes = read_your_writes(status);
        self.samples.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Paused, PoolStatus};

    fn status(leader_routed: u64, f1_routed: u64, f1_lag: u64) -> Status {
        let mut leader = InstanceStatus::example("leader", None);
        leader.routed.insert("write".into(), leader_routed);
        let mut f1 = InstanceStatus::example("f1", Some("default"));
        f1.routed.insert("read".into(), f1_routed);
        f1.lag_bytes = f1_lag;
        f1.server_connections.waiting = 2;
        Status {
            generation: 1,
            leader: "leader".into(),
            paused: Paused {
                writes: false,
                reads: false,
            },
            clients: 0,
            pinned_clients: 0,
            workers: None,
            instances: vec![leader, f1],
            pools: vec![PoolStatus {
                name: "default".into(),
                read_your_writes: FreshnessCounts {
                    caught_up: f1_routed,
                    confirmed: 1,
                    on_leader: 0,
                },
            }],
            changeover: None,
            patroni: None,
        }
    }

    #[test]
    fn units_lag_and_waits_come_from_the_differences() {
        let mut state = State {
            tracks: Vec::new(),
            read_your_writes_start: FreshnessCounts::default(),
            read_your_writes: FreshnessCounts::default(),
            samples: Vec::new(),
            polls: 0,
            failed_polls: 0,
            last_error: None,
        };
        state.observe(&status(10, 100, 0), 0.0);
        state.observe(&status(15, 400, 8192), 0.25);
        // f1 restarted its counter (removed and added again): 50 new units, not a negative number.
        state.observe(&status(25, 50, 0), 0.5);
        let f1 = &state.tracks[1].1;
        assert_eq!((f1.units, f1.max_lag_bytes, f1.max_waiting), (450, Some(8192), 2));
        let leader = &state.tracks[0].1;
        assert_eq!((leader.units, leader.max_lag_bytes), (25, None));
        assert_eq!(state.samples[1].instances[1].units, 300);
        assert_eq!(state.samples[1].instances[0].lag_bytes, None, "the leader has no lag");
    }
}
