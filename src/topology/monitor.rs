//! The health monitor: one task that, every `health.interval`, checks every instance of the current topology and
//! writes what it found into that instance's [`Health`](super::Health): up or down, role as the server reports it
//! (`pg_is_in_recovery()`), WAL position, and for a follower its lag behind the leader in bytes, seconds and
//! commits, plus the verdict whether it may serve reads and, if not, why ([`verdict`]): a follower must belong to
//! the leader's cluster (`system_identifier`, read once per connection) and receive the timeline the leader writes
//! on, besides being in recovery and within its lag limits.
//!
//! It owns one tokio-postgres connection per instance (its own, outside the server-connection pools) and the
//! leader's recent WAL history. It never routes, never touches client traffic or the pools, and never changes the
//! topology: an instance answering in an unexpected role is logged and kept away from reads, not promoted or
//! demoted — that is for promotion detection and the changeover, which read what the monitor writes.

mod lag;
mod verdict;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_postgres::SimpleQueryMessage;

use super::conn::{Conn, error_chain, own_login, statement_deadline};
use super::health::Observation;
use super::{Instance, Role, SharedTopology};
use crate::config::Config;
use crate::tls::{ServerTls, Tls};
use lag::{LeaderHistory, Limits, Reading, follower_observation};
use verdict::{Receiver, Reference, verdict};

pub use lag::{format_lsn, parse_lsn};

/// The whole check, one round trip (simple protocol, no prepare). The CASEs keep `pg_current_wal_lsn()`, which a
/// standby refuses, off standbys; xmax is one past the newest finished transaction that had an xid; a primary's
/// timeline is the first 8 hex digits of its current WAL file's name (`pg_control_checkpoint()` would lag until
/// the first checkpoint after a promotion). The last column is the WAL receiver's timeline: NULL without a
/// receiver (a primary, or a standby not streaming now), empty when its details are hidden from the login.
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     pg_snapshot_xmax(pg_current_snapshot())::text, \
     CASE WHEN pg_is_in_recovery() THEN '' ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
     (SELECT coalesce(received_tli::text, '') FROM pg_stat_wal_receiver LIMIT 1)";

/// The cluster an instance belongs to; it cannot change while a connection lasts, so it is read once per
/// connection.
const IDENTITY_SQL: &str = "SELECT system_identifier::text FROM pg_control_system()";

/// Ends the monitor task (and closes its connections) when dropped or [`stop`](MonitorHandle::stop)ped.
#[must_use = "dropping the handle stops the monitor"]
pub struct MonitorHandle {
    task: JoinHandle<()>,
    rounds: watch::Receiver<u64>,
}

impl MonitorHandle {
    pub fn stop(self) {
        // Drop aborts the task.
    }

    /// Counts finished rounds: changes after every round, once every instance's health has been written.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the monitor's connection to one instance goes; a changed address is a new instance.
type Key = (Arc<str>, Arc<str>, u16);

fn key_of(instance: &Instance) -> Key {
    (instance.name.clone(), instance.host.clone(), instance.port)
}

/// The monitor task's state.
pub struct Monitor {
    topology: SharedTopology,
    /// `health.timeout` of the topology's config, read every round.
    timeout: Duration,
    /// TLS towards the instances, as loaded last; the login itself comes from the config of each round.
    tls: Arc<Tls>,
    watched: HashMap<Key, Watched>,
    /// Whose WAL `history` holds; a different leader starts a new history.
    leader: Option<Key>,
    history: LeaderHistory,
    /// The cluster's `system_identifier`, as the leader last said. Kept across leader changes: a new leader is
    /// adopted or promoted only from the same cluster.
    cluster: Option<u64>,
}

impl Monitor {
    /// Starts the monitor on the current Tokio runtime (must be called from within one). It loads the topology
    /// afresh every round, so swapped-in instances are watched from the next round and removed ones forgotten,
    /// and a reloaded `[health]` applies from the next round.
    pub fn spawn(topology: SharedTopology, tls: Arc<Tls>) -> MonitorHandle {
        let health = topology.load().config.health.clone();
        let monitor = Monitor {
            topology,
            timeout: health.timeout,
            tls,
            watched: HashMap::new(),
            leader: None,
            history: LeaderHistory::default(),
            cluster: None,
        };
        let (done, rounds) = watch::channel(0);
        let task = tokio::spawn(monitor.run(done));
        MonitorHandle { task, rounds }
    }

    async fn run(mut self, done: watch::Sender<u64>) {
        let ticker = |interval: Duration| {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (tick, interval)
        };
        let (mut tick, mut interval) = ticker(self.topology.load().config.health.interval);
        loop {
            tick.tick().await;
            self.round().await;
            done.send_modify(|n| *n += 1);
            let health = self.topology.load().config.health.clone();
            self.timeout = health.timeout;
            if health.interval != interval {
                (tick, interval) = ticker(health.interval);
                tick.tick().await; // the first tick is immediate
            }
        }
    }

    /// Checks every instance concurrently, each bounded by the timeout, and records each result as it arrives —
    /// except that followers wait for the leader's result of the same round, to be compared with it. A round lasts
    /// as long as its slowest check: a hung instance slows the next round to one per `health.timeout`.
    async fn round(&mut self) {
        let topology = self.topology.load_full();
        let mut targets: Vec<(Arc<Instance>, Option<Limits>)> = vec![(topology.leader.clone(), None)];
        for pool in &topology.pools {
            let limits = Limits {
                max_lag_bytes: pool.max_lag_bytes,
                max_lag: pool.max_lag_seconds,
            };
            targets.extend(pool.instances.iter().map(|i| (i.clone(), Some(limits))));
        }
        // Forget instances swapped out (closing their connections); a new leader starts a new history.
        let current: HashSet<Key> = targets.iter().map(|(i, _)| key_of(i)).collect();
        self.watched.retain(|key, _| current.contains(key));
        let leader = key_of(&topology.leader);
        if self.leader.as_ref() != Some(&leader) {
            self.history = LeaderHistory::default();
            self.leader = Some(leader);
        }

        let mut checks = JoinSet::new();
        // Logins as the config says now: a reloaded password or TLS setting applies to the next connection.
        let login = Arc::new(own_login(
            &topology.config,
            "pgsplit-monitor",
            statement_deadline(self.timeout),
        ));
        let servers = self.tls.servers();
        for (index, (instance, _)) in targets.iter().enumerate() {
            let conn = self.watched.get_mut(&key_of(instance)).and_then(|w| w.conn.take());
            let target = Target {
                login: login.clone(),
                tls: servers.clone(),
                config: topology.config.clone(),
                instance: instance.clone(),
            };
            let timeout = self.timeout;
            checks.spawn(async move {
                let result = tokio::time::timeout(timeout, probe(conn, &target, timeout)).await;
                (index, result.unwrap_or(Err(CheckError::Timeout(timeout))))
            });
        }
        let mut recorded = vec![false; targets.len()];
        let mut early_followers = Vec::new();
        while let Some(joined) = checks.join_next().await {
            let (index, result) = match joined {
                Ok(done) => done,
                Err(error) => {
                    tracing::error!(%error, "a health check task failed");
                    continue; // its instance is recorded as down below
                }
            };
            if index != 0 && !recorded[0] {
                early_followers.push((index, result));
                continue;
            }
            let generation = topology.generation;
            self.record(&targets[index], result, generation);
            recorded[index] = true;
            if index == 0 {
                for (index, result) in early_followers.drain(..) {
                    self.record(&targets[index], result, generation);
                    recorded[index] = true;
                }
            }
        }
        for (index, result) in early_followers {
            self.record(&targets[index], result, topology.generation);
            recorded[index] = true;
        }
        for (target, done) in targets.iter().zip(recorded) {
            if !done {
                self.record(target, Err(CheckError::Task), topology.generation);
            }
        }
    }

    /// Writes one check's outcome into the instance's health; `limits` is None for the leader. `generation` is the
    /// topology the round started from: a follower judged against a leader that has since been swapped out is not
    /// made usable by this round (the swap left it unusable until judged against the new one).
    fn record(
        &mut self,
        (instance, limits): &(Arc<Instance>, Option<Limits>),
        result: Result<(Identified, Reading), CheckError>,
        generation: u64,
    ) {
        let watched = self.watched.entry(key_of(instance)).or_default();
        let name = &*instance.name;
        let role = if limits.is_none() { Role::Leader } else { Role::Follower };
        let (conn, reading) = match result {
            Ok(found) => found,
            Err(error) => {
                instance.health.mark_down();
                // Its pooled connections are as unreachable as it is: no client should borrow one.
                instance.pool.close_idle();
                watched.note_down(name, role, &error);
                instance.health.set_reason(Some(&format!("down: {error}")));
                instance.health.mark_judged();
                watched.usable = Some(false);
                return;
            }
        };
        let identity = conn.identity;
        instance.health.set_system_identifier(identity);
        watched.conn = Some(conn);
        watched.note_up(name, role, &reading);
        watched.note_role(name, role, reading.in_recovery);
        match limits {
            None => {
                self.history.record(reading);
                instance.health.observe(Observation {
                    in_recovery: reading.in_recovery,
                    lsn: reading.lsn,
                    lag_bytes: 0,
                    lag: Duration::ZERO,
                    lag_commits: 0,
                    timeline: reading.timeline,
                });
                if let Some(known) = self.cluster.filter(|&known| known != identity) {
                    tracing::warn!(
                        instance = name,
                        was = known,
                        now = identity,
                        "the leader belongs to another cluster than before; followers are judged against it now"
                    );
                }
                self.cluster = Some(identity);
                let reason = reading
                    .in_recovery
                    .then_some("in recovery: a leader must not be (demoted, or a standby's address?)");
                instance.health.set_reason(reason);
                instance.health.mark_judged();
            }
            Some(limits) => {
                let seen = follower_observation(&reading, &self.history);
                instance.health.observe(seen);
                let reference = Reference {
                    cluster: self.cluster,
                    timeline: self.history.timeline(),
                };
                let judged = verdict(&seen, identity, reading.receiver, reference, *limits);
                let swapped_meanwhile = self.topology.load().generation != generation;
                if judged.is_err() || !swapped_meanwhile {
                    instance.health.set_usable(judged.is_ok());
                    instance.health.mark_judged();
                }
                let reason = judged.as_ref().err().map(ToString::to_string);
                instance.health.set_reason(reason.as_deref());
                watched.note_usable(name, &judged, &seen);
            }
        }
    }
}

/// The monitor's connection to one instance and what it last logged about it (so only changes are logged).
#[derive(Default)]
struct Watched {
    /// Taken out while a check runs; None after a failure (the next check reconnects).
    conn: Option<Identified>,
    up: Option<bool>,
    role_as_configured: Option<bool>,
    usable: Option<bool>,
    /// What kind of reason kept it from reads at the last check (None: usable, or not judged yet).
    unusable: Option<std::mem::Discriminant<verdict::Unusable>>,
}

/// A connection and the cluster its server belongs to.
struct Identified {
    conn: Conn,
    identity: u64,
}

impl Watched {
    fn note_up(&mut self, name: &str, role: Role, reading: &Reading) {
        if self.up != Some(true) {
            let lsn = format_lsn(reading.lsn);
            tracing::info!(instance = name, ?role, in_recovery = reading.in_recovery, %lsn, "instance up");
        }
        self.up = Some(true);
    }

    fn note_down(&mut self, name: &str, role: Role, error: &CheckError) {
        if self.up != Some(false) {
            tracing::warn!(instance = name, ?role, %error, "instance down");
        }
        self.up = Some(false);
        self.unusable = None;
    }

    /// A leader must not be in recovery; a follower must be.
    fn note_role(&mut self, name: &str, role: Role, in_recovery: bool) {
        let as_configured = (role == Role::Follower) == in_recovery;
        if self.role_as_configured == Some(as_configured) {
            return;
        }
        if !as_configured && role == Role::Follower {
            tracing::warn!(
                instance = name,
                "follower answers as NOT in recovery (promoted?): no reads go to it while it does"
            );
        } else if !as_configured {
            tracing::warn!(instance = name, "leader answers as in recovery (demoted or a standby?)");
        } else if self.role_as_configured == Some(false) {
            tracing::info!(instance = name, ?role, "instance answers in its configured role again");
        }
        self.role_as_configured = Some(as_configured);
    }

    /// Logs when a follower becomes usable or not, and when the kind of reason changes (not every new lag figure).
    fn note_usable(&mut self, name: &str, judged: &Result<(), verdict::Unusable>, seen: &Observation) {
        let usable = judged.is_ok();
        let kind = judged.as_ref().err().map(std::mem::discriminant);
        if self.usable == Some(usable) && self.unusable == kind {
            return;
        }
        let (lag_bytes, lag, lag_commits) = (seen.lag_bytes, seen.lag, seen.lag_commits);
        match judged {
            Ok(()) => tracing::info!(
                instance = name,
                lag_bytes,
                ?lag,
                lag_commits,
                "follower usable for reads"
            ),
            Err(reason @ (verdict::Unusable::OtherCluster { .. } | verdict::Unusable::OtherTimeline { .. })) => {
                tracing::warn!(instance = name, %reason, "follower not usable for reads")
            }
            Err(reason) => {
                tracing::info!(instance = name, %reason, lag_bytes, ?lag, lag_commits, "follower not usable for reads")
            }
        }
        self.usable = Some(usable);
        self.unusable = kind;
    }
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("check query failed: {0}")]
    Query(String),
    #[error("no answer within {0:?} (health.timeout)")]
    Timeout(Duration),
    #[error("unexpected answer to the check query: {0}")]
    Answer(String),
    #[error("the check task failed")]
    Task,
}

/// Where one check connects, and how it logs in.
struct Target {
    login: Arc<tokio_postgres::Config>,
    tls: Arc<ServerTls>,
    config: Arc<Config>,
    instance: Arc<Instance>,
}

/// Reuses `conn` if it is still open, else connects and reads which cluster the server belongs to; then runs the
/// check query. The caller bounds it by the timeout; on any failure the connection is dropped, so the next check
/// starts from a fresh one.
async fn probe(
    conn: Option<Identified>,
    target: &Target,
    timeout: Duration,
) -> Result<(Identified, Reading), CheckError> {
    let conn = match conn {
        Some(known) if !known.conn.is_closed() => known,
        _ => {
            let instance = &target.instance;
            let conn = Conn::open(
                &target.login,
                &instance.host,
                instance.port,
                &target.tls,
                &target.config,
                timeout,
                &instance.name,
            )
            .await
            .map_err(|e| CheckError::Connect(error_chain(&e)))?;
            let answer = first_row(&conn, IDENTITY_SQL).await?;
            let identity = answer
                .first()
                .cloned()
                .flatten()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| CheckError::Answer(format!("system identifier {answer:?}")))?;
            Identified { conn, identity }
        }
    };
    let row = first_row(&conn.conn, CHECK_SQL).await?;
    let at = Instant::now();
    let column = |i: usize| row.get(i).and_then(Option::as_deref);
    let reading = parse_reading([column(0), column(1), column(2), column(3), column(4)], at)?;
    Ok((conn, reading))
}

/// The columns of the first row `sql` answers.
async fn first_row(conn: &Conn, sql: &str) -> Result<Vec<Option<String>>, CheckError> {
    let messages = conn
        .client
        .simple_query(sql)
        .await
        .map_err(|e| CheckError::Query(error_chain(&e)))?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| CheckError::Answer("no row".into()))?;
    Ok((0..row.len())
        .map(|i| row.try_get(i).ok().flatten().map(str::to_owned))
        .collect())
}

/// The check row: in recovery, WAL position, snapshot xmax, timeline (hex; empty on a standby), WAL receiver's
/// timeline (NULL: no receiver; empty: hidden).
fn parse_reading(
    [in_recovery, lsn, xmax, timeline, received]: [Option<&str>; 5],
    at: Instant,
) -> Result<Reading, CheckError> {
    let in_recovery = match in_recovery {
        Some("t") => true,
        Some("f") => false,
        other => return Err(CheckError::Answer(format!("pg_is_in_recovery() = {other:?}"))),
    };
    let lsn = lsn
        .and_then(parse_lsn)
        .ok_or_else(|| CheckError::Answer(format!("WAL position {lsn:?}")))?;
    let xmax = xmax
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| CheckError::Answer(format!("snapshot xmax {xmax:?}")))?;
    let timeline = match timeline {
        Some("") if in_recovery => 0,
        Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| CheckError::Answer(format!("timeline {timeline:?}")))?,
        None => return Err(CheckError::Answer("no timeline column".into())),
    };
    let receiver = match received {
        None => Receiver::Absent,
        Some("") => Receiver::Hidden,
        Some(tli) => Receiver::Timeline(
            tli.parse()
                .map_err(|_| CheckError::Answer(format!("received timeline {tli:?}")))?,
        ),
    };
    Ok(Reading {
        at,
        in_recovery,
        lsn,
        xmax,
        timeline,
        receiver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_row_parses_or_fails_as_a_value() {
        let at = Instant::now();
        let ok = parse_reading([Some("t"), Some("0/3016048"), Some("725"), Some(""), Some("3")], at).unwrap();
        let want = Reading {
            at,
            in_recovery: true,
            lsn: 0x3016048,
            xmax: 725,
            timeline: 0,
            receiver: Receiver::Timeline(3),
        };
        assert_eq!(ok, want);
        let primary = parse_reading([Some("f"), Some("0/1"), Some("1"), Some("0000000A"), None], at).unwrap();
        assert_eq!((primary.in_recovery, primary.timeline), (false, 10));
        assert_eq!(primary.receiver, Receiver::Absent);
        let hidden = parse_reading([Some("t"), Some("0/1"), Some("1"), Some(""), Some("")], at).unwrap();
        assert_eq!(hidden.receiver, Receiver::Hidden);
        assert!(parse_reading([None, Some("0/1"), Some("1"), Some(""), None], at).is_err());
        assert!(parse_reading([Some("t"), None, Some("1"), Some(""), None], at).is_err());
        assert!(parse_reading([Some("t"), Some("0/1"), Some("x"), Some(""), None], at).is_err());
        assert!(parse_reading([Some("t"), Some("0/1"), Some("1"), Some(""), Some("x")], at).is_err());
        assert!(
            parse_reading([Some("f"), Some("0/1"), Some("1"), Some(""), None], at).is_err(),
            "a primary has a timeline"
        );
    }
}
