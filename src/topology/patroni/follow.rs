//! The Patroni follower: one task per pgsplit that reads `/cluster` every `poll_interval` and keeps the topology in
//! step with it, through the same swap a reload uses. It is the only writer of the leader while the source is
//! Patroni, and it never lets a write go anywhere but a leader PostgreSQL confirmed:
//!
//! - The leader Patroni names is confirmed on the server ([`confirm`](super::confirm)) at every poll; while it is
//!   not (Patroni names a new one before it is promoted, the leader stopped answering, Patroni names none), new
//!   writes are held at the gate, each for at most `write_hold_timeout`, and released the moment a confirmed
//!   leader is swapped in. Confirmation is retried every 20 ms meanwhile.
//! - A switchover Patroni scheduled ahead (`scheduled_switchover`) holds new writes from `drain_before_switchover`
//!   before its time, so those running on the old leader finish before Patroni shuts it down, and keeps them held
//!   until the new leader is confirmed — or until Patroni, `write_hold_timeout` past the time, still names the old
//!   leader (it did not carry the switchover out), which is then confirmed again and takes the writes back.
//! - No Patroni answering: the last known topology stays, `status` says so, and the leader is still confirmed.
//!
//! Every instance of pgsplit does this on its own; none knows about the others.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;

use super::api;
use super::confirm::{CONFIRM_INTERVAL, Confirmer, Known};
use super::state::{Shared, SwitchoverRecord};
use super::view::{ClusterView, Member};
use crate::config::{LeaderConfig, PatroniConfig};
use crate::topology::control::Control;

/// Why writes wait before Patroni has answered once.
const FIRST_ANSWER: &str = "no leader yet: waiting for Patroni's first answer";

pub struct Follower {
    control: Arc<Control>,
    shared: Arc<Shared>,
    confirmer: Confirmer,
    known: Known,
    /// Index of the URL that answered last: asked first next time.
    preferred: usize,
}

/// Starts following Patroni (the topology's config must have `source = "patroni"`). Writes are held from now until
/// the first leader is confirmed.
pub fn spawn(control: Arc<Control>, shared: Arc<Shared>) -> JoinHandle<()> {
    let config = control.topology.load().config.clone();
    if let Some(patroni) = config.patroni() {
        control.gate.hold_writes(FIRST_ANSWER, patroni.write_hold_timeout);
        shared.holding(FIRST_ANSWER);
    }
    let follower = Follower {
        control,
        shared,
        confirmer: Confirmer::default(),
        known: Known::default(),
        preferred: 0,
    };
    tokio::spawn(follower.run())
}

/// A scheduled switchover as it stands at one poll.
struct Due<'a> {
    at: SystemTime,
    from: Option<&'a str>,
    to: Option<&'a str>,
    text: &'a str,
}

impl Follower {
    async fn run(mut self) {
        loop {
            let config = self.control.topology.load().config.clone();
            let Some(patroni) = config.patroni().cloned() else {
                return; // the source changed: only a restart does that, so this is the end
            };
            let next_poll = Instant::now() + patroni.poll_interval;
            match api::cluster(&patroni.urls, self.preferred, patroni.request_timeout).await {
                Ok((index, view)) => {
                    self.preferred = index;
                    if let Some(url) = patroni.urls.get(index) {
                        self.shared.answered(&url.to_string(), &view);
                    }
                    self.step(&view, &patroni, next_poll).await;
                }
                Err(unreachable) => {
                    if self.shared.unreachable(&unreachable.to_string()) {
                        tracing::warn!(error = %unreachable, "no Patroni REST API answers; keeping the last known topology");
                    }
                    // Still make sure the leader in use answers as one.
                    let leader = self.control.topology.load().leader.clone();
                    if !leader.name.is_empty() {
                        let leader = LeaderConfig {
                            name: leader.name.to_string(),
                            host: leader.host.to_string(),
                            port: leader.port,
                            max_connections: 0,
                        };
                        self.confirm_and_follow(&leader, &patroni, next_poll).await;
                    }
                }
            }
            tokio::time::sleep_until(next_poll.into()).await;
        }
    }

    /// One poll's answer: hold, confirm, swap and release as it says.
    async fn step(&mut self, view: &ClusterView, patroni: &PatroniConfig, until: Instant) {
        let current = self.control.topology.load().leader.name.to_string();
        let named = view.leader().and_then(leader_config);
        if let Some(due) = self.due(view, patroni, &current) {
            let named_is_old = named
                .as_ref()
                .is_some_and(|n| Some(n.name.as_str()) == due.from.or(Some(&*current)));
            let overdue = SystemTime::now() > due.at + patroni.write_hold_timeout;
            if named_is_old && !overdue {
                // Before the switchover: new writes wait, running ones finish on the old leader.
                let reason = format!(
                    "a switchover Patroni scheduled for {} ({} -> {})",
                    due.text,
                    due.from.unwrap_or(&current),
                    due.to.unwrap_or("any replica")
                );
                self.hold(&reason, patroni);
                self.note_drain(&due);
                return;
            }
            if named_is_old {
                tracing::warn!(at = due.text, leader = %current, "Patroni did not carry out the switchover it scheduled; writes go on on the leader it names");
            }
        }
        match named {
            None => {
                self.hold("Patroni names no leader (a failover under way?)", patroni);
                self.shared.not_confirmed(None);
            }
            Some(leader) => self.confirm_and_follow(&leader, patroni, until).await,
        }
    }

    /// Asks `leader` whether it is the primary, every [`CONFIRM_INTERVAL`] until it is or `until` passes: once it
    /// is, it becomes (or stays) the topology's leader, Patroni's other members its followers, and held writes go
    /// to it; until then, writes are held and the pools stay as they are (the replicas are about to follow the new
    /// leader anyway).
    async fn confirm_and_follow(&mut self, leader: &LeaderConfig, patroni: &PatroniConfig, until: Instant) {
        loop {
            let answer = self
                .confirmer
                .confirm(&self.control, &leader.name, &leader.host, leader.port, &self.known)
                .await;
            match answer {
                Ok(confirmed) => {
                    self.known.confirmed(&leader.name, confirmed);
                    self.shared.not_confirmed(None);
                    self.install(leader).await;
                    self.release(&leader.name);
                    return;
                }
                Err(why) => {
                    let why = why.to_string();
                    self.shared.not_confirmed(Some(why.clone()));
                    self.hold(
                        &format!("waiting until PostgreSQL confirms {} as the leader: {why}", leader.name),
                        patroni,
                    );
                    if Instant::now() + CONFIRM_INTERVAL >= until {
                        return;
                    }
                    tokio::time::sleep(CONFIRM_INTERVAL).await;
                }
            }
        }
    }

    /// The switchover Patroni scheduled, if its drain has begun (and it concerns the leader in use).
    fn due<'a>(&self, view: &'a ClusterView, patroni: &PatroniConfig, current: &str) -> Option<Due<'a>> {
        let scheduled = view.scheduled_switchover.as_ref()?;
        let at = match scheduled.at() {
            Ok(at) => at,
            Err(error) => {
                tracing::warn!(%error, "Patroni's scheduled_switchover has a time pgsplit cannot read; not draining for it");
                return None;
            }
        };
        let from = scheduled.from.as_deref();
        if from.is_some_and(|from| from != current) && !current.is_empty() {
            return None; // not from the leader pgsplit uses: Patroni will refuse it, or it is stale
        }
        (SystemTime::now() + patroni.drain_before_switchover >= at).then_some(Due {
            at,
            from,
            to: scheduled.to.as_deref(),
            text: &scheduled.at,
        })
    }

    /// Records the drain before a switchover for `status`: when the old leader ran no more writes, or how many
    /// still ran at the scheduled time.
    fn note_drain(&self, due: &Due<'_>) {
        let writing = self.control.topology.load().leader.writing();
        let held_for = self.shared.held_for().unwrap_or_default();
        let past_time = SystemTime::now() >= due.at;
        self.shared.switchover(|record| {
            let record = match record {
                Some(record) if record.at == due.text => record,
                _ => record.insert(SwitchoverRecord {
                    at: due.text.to_owned(),
                    from: due.from.map(str::to_owned),
                    to: due.to.map(str::to_owned),
                    drained_ms: None,
                    running_at_time: None,
                }),
            };
            if writing == 0 && record.drained_ms.is_none() {
                record.drained_ms = Some(held_for.as_millis() as u64);
            }
            if past_time && record.running_at_time.is_none() && record.drained_ms.is_none() {
                record.running_at_time = Some(writing);
            }
        });
    }

    fn hold(&self, reason: &str, patroni: &PatroniConfig) {
        self.control.gate.hold_writes(reason, patroni.write_hold_timeout);
        if self.shared.holding(reason) {
            tracing::warn!(reason, "holding new writes");
        }
    }

    fn release(&self, leader: &str) {
        if let Some(held) = self.shared.released(leader) {
            self.control.gate.release_writes();
            tracing::info!(
                leader,
                held_ms = held.as_millis() as u64,
                "writes released on the confirmed leader"
            );
        }
    }

    /// Swaps in the config with `leader` as the leader and Patroni's other members as followers.
    async fn install(&self, leader: &LeaderConfig) {
        let Some(config) = self.shared.derive(leader) else {
            return;
        };
        let outcome = self.control.install(config).await;
        if outcome.changed {
            tracing::info!(
                generation = outcome.generation,
                leader = %leader.name,
                added = ?outcome.added,
                removed = ?outcome.removed,
                "topology follows Patroni"
            );
        }
    }
}

/// The leader Patroni names, as a config entry (its connection limit comes from the file when derived).
fn leader_config(member: &Member) -> Option<LeaderConfig> {
    let (host, port) = member.address()?;
    Some(LeaderConfig {
        name: member.name.clone(),
        host: host.to_owned(),
        port,
        max_connections: 0,
    })
}
