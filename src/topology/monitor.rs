//! The health monitor: one task that, every `health.interval`, checks every instance of the current topology and
//! writes what it found into that instance's [`Health`](super::Health): up or down, role as the server reports it
//! (`pg_is_in_recovery()`), WAL position, and for a follower its lag behind the leader in bytes, seconds and
//! commits, plus the verdict whether it may serve reads.
//!
//! It owns one tokio-postgres connection per instance (its own, outside the server-connection pools) and the
//! leader's recent WAL history. It never routes, never touches client traffic or the pools, and never changes the
//! topology: an instance answering in an unexpected role is logged and kept away from reads, not promoted or
//! demoted — that is for promotion detection and the changeover, which read what the monitor writes.

mod lag;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::health::Observation;
use super::{Instance, Role, SharedTopology};
use lag::{LeaderHistory, Limits, Reading, follower_observation, usable_for_reads};

pub use lag::{format_lsn, parse_lsn};

/// The whole check, one round trip (simple protocol, no prepare). The CASEs keep `pg_current_wal_lsn()`, which a
/// standby refuses, off standbys; xmax is one past the newest finished transaction that had an xid; a primary's
/// timeline is the first 8 hex digits of its current WAL file's name (`pg_control_checkpoint()` would lag until
/// the first checkpoint after a promotion).
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     pg_snapshot_xmax(pg_current_snapshot())::text, \
     CASE WHEN pg_is_in_recovery() THEN '' ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END";

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
    /// User, password, database `postgres`, connect timeout; host and port are added per instance.
    base: tokio_postgres::Config,
    watched: HashMap<Key, Watched>,
    /// Whose WAL `history` holds; a different leader starts a new history.
    leader: Option<Key>,
    history: LeaderHistory,
}

impl Monitor {
    /// Starts the monitor on the current Tokio runtime (must be called from within one). It loads the topology
    /// afresh every round, so swapped-in instances are watched from the next round and removed ones forgotten,
    /// and a reloaded `[health]` applies from the next round.
    pub fn spawn(topology: SharedTopology, user: String, password: String) -> MonitorHandle {
        let health = topology.load().config.health.clone();
        let mut base = tokio_postgres::Config::new();
        base.user(&user)
            .password(password)
            .dbname("postgres")
            .application_name("pgsplit-monitor")
            .connect_timeout(health.timeout);
        let monitor = Monitor {
            topology,
            timeout: health.timeout,
            base,
            watched: HashMap::new(),
            leader: None,
            history: LeaderHistory::default(),
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
            self.base.connect_timeout(health.timeout);
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
        for (index, (instance, _)) in targets.iter().enumerate() {
            let conn = self.watched.get_mut(&key_of(instance)).and_then(|w| w.conn.take());
            let mut config = self.base.clone();
            config.host(&*instance.host).port(instance.port);
            let (name, timeout) = (instance.name.clone(), self.timeout);
            checks.spawn(async move {
                let result = tokio::time::timeout(timeout, probe(conn, &config, &name)).await;
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
            self.record(&targets[index], result);
            recorded[index] = true;
            if index == 0 {
                for (index, result) in early_followers.drain(..) {
                    self.record(&targets[index], result);
                    recorded[index] = true;
                }
            }
        }
        for (index, result) in early_followers {
            self.record(&targets[index], result);
            recorded[index] = true;
        }
        for (target, done) in targets.iter().zip(recorded) {
            if !done {
                self.record(target, Err(CheckError::Task));
            }
        }
    }

    /// Writes one check's outcome into the instance's health; `limits` is None for the leader.
    fn record(
        &mut self,
        (instance, limits): &(Arc<Instance>, Option<Limits>),
        result: Result<(Conn, Reading), CheckError>,
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
                watched.usable = Some(false);
                return;
            }
        };
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
            }
            Some(limits) => {
                let seen = follower_observation(&reading, &self.history);
                instance.health.observe(seen);
                let usable = usable_for_reads(Some(&seen), *limits);
                instance.health.set_usable(usable);
                watched.note_usable(name, usable, &seen, *limits);
            }
        }
    }
}

/// The monitor's connection to one instance and what it last logged about it (so only changes are logged).
#[derive(Default)]
struct Watched {
    /// Taken out while a check runs; None after a failure (the next check reconnects).
    conn: Option<Conn>,
    up: Option<bool>,
    role_as_configured: Option<bool>,
    usable: Option<bool>,
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

    fn note_usable(&mut self, name: &str, usable: bool, seen: &Observation, limits: Limits) {
        if self.usable != Some(usable) {
            let (lag_bytes, lag_commits) = (seen.lag_bytes, seen.lag_commits);
            let (lag, max_lag, max_lag_bytes) = (seen.lag, limits.max_lag, limits.max_lag_bytes);
            if usable {
                tracing::info!(
                    instance = name,
                    lag_bytes,
                    ?lag,
                    lag_commits,
                    "follower usable for reads"
                );
            } else {
                tracing::info!(
                    instance = name,
                    in_recovery = seen.in_recovery,
                    lag_bytes,
                    max_lag_bytes,
                    ?lag,
                    ?max_lag,
                    lag_commits,
                    "follower not usable for reads"
                );
            }
        }
        self.usable = Some(usable);
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

/// A tokio-postgres connection whose background task ends with it: dropping a `Conn` also stops the task, which
/// would otherwise wait forever for the answer to a query abandoned on a hung server.
pub(super) struct Conn {
    pub(super) client: Client,
    task: JoinHandle<()>,
}

impl Conn {
    pub(super) async fn open(config: &tokio_postgres::Config, name: &str) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(instance = name, %error, "monitoring connection ended");
            }
        });
        Ok(Conn { client, task })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reuses `conn` if it is still open, else connects; then runs the check query. The caller bounds it by the
/// timeout; on any failure the connection is dropped, so the next check starts from a fresh one.
async fn probe(conn: Option<Conn>, config: &tokio_postgres::Config, name: &str) -> Result<(Conn, Reading), CheckError> {
    let conn = match conn {
        Some(conn) if !conn.client.is_closed() => conn,
        _ => Conn::open(config, name)
            .await
            .map_err(|e| CheckError::Connect(error_chain(&e)))?,
    };
    let messages = conn
        .client
        .simple_query(CHECK_SQL)
        .await
        .map_err(|e| CheckError::Query(error_chain(&e)))?;
    let at = Instant::now();
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| CheckError::Answer("no row".into()))?;
    let column = |i: usize| row.try_get(i).ok().flatten();
    let reading = parse_reading([column(0), column(1), column(2), column(3)], at)?;
    Ok((conn, reading))
}

/// An error with its causes, `outer: inner: …` (tokio-postgres's own Display leaves the cause out, e.g. "error
/// connecting to server" without "Connection refused").
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The check row: in recovery, WAL position, snapshot xmax, timeline (hex; empty on a standby).
fn parse_reading([in_recovery, lsn, xmax, timeline]: [Option<&str>; 4], at: Instant) -> Result<Reading, CheckError> {
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
    Ok(Reading {
        at,
        in_recovery,
        lsn,
        xmax,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_row_parses_or_fails_as_a_value() {
        let at = Instant::now();
        let ok = parse_reading([Some("t"), Some("0/3016048"), Some("725"), Some("")], at).unwrap();
        let want = Reading {
            at,
            in_recovery: true,
            lsn: 0x3016048,
            xmax: 725,
            timeline: 0,
        };
        assert_eq!(ok, want);
        let primary = parse_reading([Some("f"), Some("0/1"), Some("1"), Some("0000000A")], at).unwrap();
        assert_eq!((primary.in_recovery, primary.timeline), (false, 10));
        assert!(parse_reading([None, Some("0/1"), Some("1"), Some("")], at).is_err());
        assert!(parse_reading([Some("t"), None, Some("1"), Some("")], at).is_err());
        assert!(parse_reading([Some("t"), Some("0/1"), Some("x"), Some("")], at).is_err());
        assert!(
            parse_reading([Some("f"), Some("0/1"), Some("1"), Some("")], at).is_err(),
            "a primary has a timeline"
        );
    }
}
