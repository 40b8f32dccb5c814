//! What the Patroni follower knows, shared: the file's config the topology is derived from (a reload replaces it),
//! Patroni's last answer and who gave it, whether Patroni is reachable, the leader it names and whether PostgreSQL
//! confirmed it, the hold on writes and the last switchover followed. The follower writes it; `status` and a
//! reload read it. Behind one mutex, never held across an await and never on a session's path.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::derive::{Derived, derive};
use super::view::ClusterView;
use crate::config::{Config, LeaderConfig};

/// Patroni's view beside pgsplit's, for `GET /status` and `pgsplit status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatroniStatus {
    /// The REST APIs pgsplit asks, in order.
    pub urls: Vec<String>,
    /// The one whose answer is in use.
    #[serde(default)]
    pub answered_by: Option<String>,
    /// How long ago that answer came (milliseconds); None before the first.
    #[serde(default)]
    pub answer_age_ms: Option<u64>,
    /// Why no Patroni answered the last poll; pgsplit keeps the last known topology meanwhile.
    #[serde(default)]
    pub unreachable: Option<String>,
    /// Patroni's last answer to `/cluster`.
    #[serde(default)]
    pub view: Option<ClusterView>,
    /// The leader Patroni names in it.
    #[serde(default)]
    pub named_leader: Option<String>,
    /// Why pgsplit does not (yet) take the named leader as its own: PostgreSQL has not confirmed it.
    #[serde(default)]
    pub not_confirmed: Option<String>,
    /// Why new writes are held now, if they are.
    #[serde(default)]
    pub holding_writes: Option<String>,
    /// Members in no follower pool, and why.
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
    /// The last time writes were held and released.
    #[serde(default)]
    pub last_hold: Option<HoldRecord>,
    /// The last scheduled switchover pgsplit followed.
    #[serde(default)]
    pub switchover: Option<SwitchoverRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub name: String,
    pub reason: String,
}

/// One hold on writes, from its start to its release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// Why it began.
    pub reason: String,
    /// When it began, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// How long writes were held (None while they still are).
    #[serde(default)]
    pub held_ms: Option<u64>,
    /// The leader writes were released onto.
    #[serde(default)]
    pub released_on: Option<String>,
}

/// A switchover Patroni scheduled ahead, as pgsplit followed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRecord {
    pub at: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// From the hold's start until no write pgsplit routed to the old leader was running (None: not yet).
    #[serde(default)]
    pub drained_ms: Option<u64>,
    /// Write units still running on the old leader at the scheduled time (they are cut by its shutdown).
    #[serde(default)]
    pub running_at_time: Option<u32>,
}

#[derive(Default)]
struct Inner {
    /// The file's config (no leader, pools declared without instances).
    base: Option<Config>,
    status: PatroniStatus,
    answered_at: Option<Instant>,
    hold_started: Option<Instant>,
}

/// The follower's state, shared with the control plane and the admin API.
#[derive(Default)]
pub struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(base: &Config) -> Shared {
        let urls = base
            .patroni()
            .map(|p| p.urls.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        Shared {
            inner: Mutex::new(Inner {
                base: Some(base.clone()),
                status: PatroniStatus {
                    urls,
                    ..PatroniStatus::default()
                },
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reload's file: later derivations start from it.
    pub fn set_base(&self, base: &Config) {
        let mut inner = self.lock();
        inner.status.urls = base
            .patroni()
            .map(|p| p.urls.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        inner.base = Some(base.clone());
    }

    /// The config for `leader` and Patroni's last answer (no followers before the first), from the file's config;
    /// the members left out are recorded for `status`.
    pub fn derive(&self, leader: &LeaderConfig) -> Option<Config> {
        let mut inner = self.lock();
        let base = inner.base.clone()?;
        let view = inner.status.view.clone().unwrap_or_default();
        let Derived { config, left_out } = derive(&base, &view, leader);
        inner.status.left_out = left_out
            .into_iter()
            .map(|(name, reason)| LeftOut { name, reason })
            .collect();
        Some(config)
    }

    pub fn answered(&self, by: &str, view: &ClusterView) {
        let mut inner = self.lock();
        inner.answered_at = Some(Instant::now());
        inner.status.answered_by = Some(by.to_owned());
        inner.status.unreachable = None;
        inner.status.named_leader = view.leader().map(|m| m.name.clone());
        inner.status.view = Some(view.clone());
    }

    /// No Patroni answered; returns whether this is news (the last poll was answered).
    pub fn unreachable(&self, why: &str) -> bool {
        let mut inner = self.lock();
        let news = inner.status.unreachable.is_none();
        inner.status.unreachable = Some(format!("{why}; keeping the last known topology"));
        news
    }

    pub fn not_confirmed(&self, why: Option<String>) {
        self.lock().status.not_confirmed = why;
    }

    /// Writes are held for `reason`; returns whether the hold is new.
    pub fn holding(&self, reason: &str) -> bool {
        let mut inner = self.lock();
        inner.status.holding_writes = Some(reason.to_owned());
        if inner.hold_started.is_some() {
            return false;
        }
        inner.hold_started = Some(Instant::now());
        inner.status.last_hold = Some(HoldRecord {
            reason: reason.to_owned(),
            started_ms: unix_ms(SystemTime::now()),
            held_ms: None,
            released_on: None,
        });
        true
    }

    /// Writes are released onto `leader`; returns how long they were held, if they were.
    pub fn released(&self, leader: &str) -> Option<Duration> {
        let mut inner = self.lock();
        inner.status.holding_writes = None;
        let held = inner.hold_started.take()?.elapsed();
        if let Some(record) = inner.status.last_hold.as_mut() {
            record.held_ms = Some(held.as_millis() as u64);
            record.released_on = Some(leader.to_owned());
        }
        Some(held)
    }

    /// How long the current hold has lasted, if writes are held.
    pub fn held_for(&self) -> Option<Duration> {
        self.lock().hold_started.map(|t| t.elapsed())
    }

    /// Records (or updates) the switchover being followed.
    pub fn switchover(&self, update: impl FnOnce(&mut Option<SwitchoverRecord>)) {
        update(&mut self.lock().status.switchover);
    }

    pub fn status(&self) -> PatroniStatus {
        let inner = self.lock();
        let mut status = inner.status.clone();
        status.answer_age_ms = inner.answered_at.map(|t| t.elapsed().as_millis() as u64);
        status
    }
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
