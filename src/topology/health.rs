//! What the monitor last learned about one instance, as atomics: written by the monitor task, read lock-free by
//! every routing decision.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Health {
    /// The last check succeeded within `health.timeout`.
    up: AtomicBool,
    /// `pg_is_in_recovery()` at the last check.
    in_recovery: AtomicBool,
    /// Replay LSN (followers) or current WAL LSN (leader) at the last check.
    lsn: AtomicU64,
    lag_bytes: AtomicU64,
    lag_millis: AtomicU64,
    lag_commits: AtomicU64,
    /// The timeline a primary writes on; 0 for a standby or before the first check.
    timeline: AtomicU32,
    /// `pg_control_system().system_identifier`, read once per monitor connection; 0 = not known yet.
    system_identifier: AtomicU64,
    /// Why the instance is not used, in words for `status` and the log (None while it is). Not on the hot path.
    reason: Mutex<Option<Arc<str>>>,
    /// Millis since `EPOCH` when the instance last became usable for reads (for slow start); 0 = not usable.
    usable_since_millis: AtomicU64,
    /// Millis since `EPOCH` when the last successful check was recorded; 0 = never.
    observed_at_millis: AtomicU64,
    /// Successful checks recorded so far.
    checks: AtomicU64,
    /// How long the follower recently took to replay a client's write, counted from when pgsplit learned the
    /// write's position (microseconds, a moving average), and when that was last learned (millis since `EPOCH`).
    catch_up_micros: AtomicU64,
    catch_up_at_millis: AtomicU64,
    /// The monitor has given its first verdict (usable or not, or down): until then a read that finds no usable
    /// follower may wait for it rather than fail (a pool a reload just added).
    judged: AtomicBool,
    judged_now: tokio::sync::Notify,
}

/// How long a learned catch-up time is trusted: after that, reads try the follower again and learn afresh.
const CATCH_UP_MEMORY: Duration = Duration::from_secs(1);

/// A copy of [`Health`] for status output and decisions that read several fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub up: bool,
    pub in_recovery: bool,
    pub lsn: u64,
    pub lag_bytes: u64,
    pub lag: Duration,
    pub lag_commits: u64,
    pub timeline: u32,
    /// The cluster it belongs to (`system_identifier`); 0 = not known yet.
    pub system_identifier: u64,
}

/// What one health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub in_recovery: bool,
    pub lsn: u64,
    pub lag_bytes: u64,
    pub lag: Duration,
    pub lag_commits: u64,
    pub timeline: u32,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Health {
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            up: self.up.load(Ordering::Acquire),
            in_recovery: self.in_recovery.load(Ordering::Acquire),
            lsn: self.lsn.load(Ordering::Acquire),
            lag_bytes: self.lag_bytes.load(Ordering::Acquire),
            lag: Duration::from_millis(self.lag_millis.load(Ordering::Acquire)),
            lag_commits: self.lag_commits.load(Ordering::Acquire),
            timeline: self.timeline.load(Ordering::Acquire),
            system_identifier: self.system_identifier.load(Ordering::Acquire),
        }
    }

    /// Records the cluster the instance belongs to, as its `pg_control_system()` says.
    pub fn set_system_identifier(&self, id: u64) {
        self.system_identifier.store(id, Ordering::Release);
    }

    /// Why the instance is not used now (None while it is, or before the first check).
    pub fn reason(&self) -> Option<Arc<str>> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records why the instance is not used (None: it is); true if that changed.
    pub fn set_reason(&self, reason: Option<&str>) -> bool {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_deref() == reason {
            return false;
        }
        *current = reason.map(Arc::from);
        true
    }

    /// Records a successful check.
    pub fn observe(&self, seen: Observation) {
        self.in_recovery.store(seen.in_recovery, Ordering::Release);
        self.lsn.store(seen.lsn, Ordering::Release);
        self.lag_bytes.store(seen.lag_bytes, Ordering::Release);
        self.lag_millis.store(seen.lag.as_millis() as u64, Ordering::Release);
        self.lag_commits.store(seen.lag_commits, Ordering::Release);
        self.timeline.store(seen.timeline, Ordering::Release);
        self.up.store(true, Ordering::Release);
        self.observed_at_millis.store(now_millis(), Ordering::Release);
        self.checks.fetch_add(1, Ordering::AcqRel);
    }

    /// Successful checks recorded so far: a waiter can tell that the monitor has looked again.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Acquire)
    }

    /// A replay position learned outside the monitor (a session asked the follower): the known position only
    /// moves forward, so every reader keeps a lower bound of what the follower has replayed.
    pub fn replayed_at_least(&self, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// A session asking when the follower was forecast to have replayed a client's write found it had not, and
    /// saw it there only `took` after the write's position was learned — or never, when it gave up waiting (`took`
    /// is then a lower bound, as good a forecast).
    pub fn caught_up_after(&self, took: Duration) {
        self.learn_catch_up(took.as_micros() as u64);
    }

    /// A session asking at the forecast found the write replayed: the forecast may be too late, so the next one
    /// comes a quarter earlier (forecasts only learn from asks that come too early otherwise).
    pub fn caught_up_by_forecast(&self) {
        if let Some(recent) = self.catch_up() {
            self.learn_catch_up(recent.as_micros() as u64 * 3 / 4);
        }
    }

    fn learn_catch_up(&self, micros: u64) {
        self.catch_up_micros.store(micros.max(1), Ordering::Relaxed);
        self.catch_up_at_millis.store(now_millis(), Ordering::Relaxed);
    }

    /// How long the follower recently took to replay a client's write, if learned within [`CATCH_UP_MEMORY`].
    pub fn catch_up(&self) -> Option<Duration> {
        let at = self.catch_up_at_millis.load(Ordering::Relaxed);
        let fresh = at != 0 && now_millis().saturating_sub(at) <= CATCH_UP_MEMORY.as_millis() as u64;
        fresh.then(|| Duration::from_micros(self.catch_up_micros.load(Ordering::Relaxed)))
    }

    /// The WAL position of a check whose query was sent after `since`, if the last recorded check is one: a check
    /// recorded more than `timeout` (the longest a check may take) after `since` was sent after it.
    pub fn lsn_checked_after(&self, since: Instant, timeout: Duration) -> Option<u64> {
        let observed = self.observed_at_millis.load(Ordering::Acquire);
        let since = since.saturating_duration_since(epoch()).as_millis() as u64 + 1;
        // Millisecond rounding on both sides: one more millisecond of margin.
        (observed > since + timeout.as_millis() as u64 + 1).then(|| self.lsn.load(Ordering::Acquire))
    }

    /// The monitor has given its verdict on the instance at least once.
    pub fn is_judged(&self) -> bool {
        self.judged.load(Ordering::Acquire)
    }

    /// The monitor gave a verdict (usable or not, or down): readers waiting for the first one go on.
    pub fn mark_judged(&self) {
        if !self.judged.swap(true, Ordering::AcqRel) {
            self.judged_now.notify_waiters();
        }
    }

    /// Waits, at most `limit`, until the monitor has given its first verdict; whether it has.
    pub async fn judged_within(&self, limit: std::time::Duration) -> bool {
        let notified = self.judged_now.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a verdict given in between still wakes this waiter.
        notified.as_mut().enable();
        if self.is_judged() {
            return true;
        }
        let _ = crate::runtime::timeout(limit, notified).await;
        self.is_judged()
    }

    /// Records a failed or timed-out check.
    pub fn mark_down(&self) {
        self.up.store(false, Ordering::Release);
        self.usable_since_millis.store(0, Ordering::Release);
    }

    /// Called by the monitor with its verdict on read-usability, so the balancer can ramp a returning follower.
    pub fn set_usable(&self, usable: bool) {
        let now = now_millis();
        if usable {
            let _ = self
                .usable_since_millis
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        } else {
            self.usable_since_millis.store(0, Ordering::Release);
        }
    }

    /// How long the instance has been usable for reads, or None if it is not.
    pub fn usable_for(&self) -> Option<Duration> {
        match self.usable_since_millis.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_millis().saturating_sub(since))),
        }
    }
}

/// Millis since `EPOCH`, plus one so that 0 can mean "never".
fn now_millis() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}
