//! Pause and resume: holds new units of work at their start, per direction, while running ones finish.
//!
//! A session asks the gate before it routes a unit ([`Gate::wait_open`]) and again right after it has counted the
//! unit on its instance ([`Gate::is_paused`]); whoever pauses sets the flag first and then waits for the counts to
//! fall. Both sides use `SeqCst`, so either the pauser sees the unit or the unit sees the pause and backs out —
//! no unit slips past a pause unseen. Waiters are woken in the order they arrived. The gate never routes and
//! never touches a connection.
//!
//! Besides the operator's pause (and the changeover's, which uses it), writes can be *held* while no confirmed
//! leader exists ([`Gate::hold_writes`]: Patroni names a leader PostgreSQL has not confirmed yet, a switchover is
//! due). A hold is separate from the pause — resuming does not lift it, lifting it does not resume — and bounded
//! per unit: a write that has waited for it longer than the hold's timeout is refused ([`Refused`], ERROR 57P03
//! for the client), as a write to a lost leader is after `checkout_timeout`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::protocol::error::{Severity, SqlError, code};

/// Which units a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Units for the leader (anything that may write).
    Writes,
    /// Units for followers.
    Reads,
}

/// Why writes are held, and for how long one unit may wait.
#[derive(Debug, Clone)]
struct Hold {
    reason: std::sync::Arc<str>,
    timeout: Duration,
}

/// A write waited for a confirmed leader longer than the hold allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no confirmed leader within {waited:?}: {reason}; retry later")]
pub struct Refused {
    pub reason: String,
    pub waited: Duration,
}

impl From<Refused> for SqlError {
    fn from(refused: Refused) -> SqlError {
        SqlError::new(Severity::Error, code::CANNOT_CONNECT_NOW, refused.to_string())
    }
}

#[derive(Default)]
pub struct Gate {
    writes: AtomicBool,
    reads: AtomicBool,
    /// Writes are held for a leader change (see [`Gate::hold_writes`]); the details are in `hold`.
    held: AtomicBool,
    hold: Mutex<Option<Hold>>,
    resumed: Notify,
}

impl Gate {
    fn flag(&self, direction: Direction) -> &AtomicBool {
        match direction {
            Direction::Writes => &self.writes,
            Direction::Reads => &self.reads,
        }
    }

    pub fn pause(&self, direction: Direction) {
        self.flag(direction).store(true, Ordering::SeqCst);
    }

    /// Opens both directions and wakes every held unit, oldest first. A hold for a leader change stays.
    pub fn resume(&self) {
        self.writes.store(false, Ordering::SeqCst);
        self.reads.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Opens one direction (the changeover releases writes, leaving an operator's read pause alone).
    pub fn open(&self, direction: Direction) {
        self.flag(direction).store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Holds new write units until [`Gate::release_writes`]: each waits at most `timeout`, then is refused. Called
    /// again while held, it updates the reason and the timeout.
    pub fn hold_writes(&self, reason: &str, timeout: Duration) {
        let mut hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        if hold
            .as_ref()
            .is_none_or(|h| &*h.reason != reason || h.timeout != timeout)
        {
            *hold = Some(Hold {
                reason: reason.into(),
                timeout,
            });
        }
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lifts the hold and wakes the units it held, oldest first (an operator's pause still holds them).
    pub fn release_writes(&self) {
        self.held.store(false, Ordering::SeqCst);
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.resumed.notify_waiters();
    }

    /// Why writes are held for a leader change, if they are.
    pub fn writes_held(&self) -> Option<std::sync::Arc<str>> {
        if !self.held.load(Ordering::SeqCst) {
            return None;
        }
        let hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        hold.as_ref().map(|h| h.reason.clone())
    }

    /// Paused, or (for writes) held.
    pub fn is_paused(&self, direction: Direction) -> bool {
        self.flag(direction).load(Ordering::SeqCst)
            || (direction == Direction::Writes && self.held.load(Ordering::SeqCst))
    }

    /// Returns at once when `direction` is open (one or two atomic loads: this is on every unit's path), else when
    /// it is resumed and released. A write held only by a hold for longer than its timeout is refused.
    pub async fn wait_open(&self, direction: Direction) -> Result<(), Refused> {
        let mut since: Option<Instant> = None;
        while self.is_paused(direction) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the second look, so a resume in between is not missed.
            resumed.as_mut().enable();
            if !self.is_paused(direction) {
                return Ok(());
            }
            let only_held = direction == Direction::Writes && !self.writes.load(Ordering::SeqCst);
            let hold = only_held
                .then(|| self.hold.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .flatten();
            let Some(hold) = hold else {
                resumed.await;
                continue;
            };
            let started = *since.get_or_insert_with(Instant::now);
            let left = (started + hold.timeout).saturating_duration_since(Instant::now());
            // Sessions run on a runtime without tokio's timer: the clock is borrowed (`runtime`).
            if crate::runtime::timeout(left, resumed).await.is_err() && self.is_paused(direction) {
                let still_held = self.writes_held();
                if !self.writes.load(Ordering::SeqCst) && still_held.is_some() {
                    return Err(Refused {
                        reason: still_held.as_deref().unwrap_or(&hold.reason).to_owned(),
                        waited: started.elapsed(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_paused_direction_holds_until_resume_and_the_other_flows() {
        let gate = Arc::new(Gate::default());
        gate.pause(Direction::Writes);
        tokio::time::timeout(Duration::from_secs(1), gate.wait_open(Direction::Reads))
            .await
            .expect("reads are not paused")
            .unwrap();
        let held = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open(Direction::Writes).await }
        });
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        gate.resume();
        tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .expect("resume releases the held unit")
            .unwrap()
            .unwrap();
        assert!(!gate.is_paused(Direction::Writes));
    }

    #[tokio::test]
    async fn a_hold_releases_its_writes_or_refuses_them_after_its_timeout() {
        let gate = Arc::new(Gate::default());
        gate.hold_writes("waiting for n2", Duration::from_secs(30));
        assert!(gate.is_paused(Direction::Writes));
        assert!(!gate.is_paused(Direction::Reads));
        assert_eq!(gate.writes_held().as_deref(), Some("waiting for n2"));
        let held = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open(Direction::Writes).await }
        });
        tokio::task::yield_now().await;
        gate.resume();
        tokio::task::yield_now().await;
        assert!(!held.is_finished(), "resume does not lift a hold");
        gate.release_writes();
        let released = tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .expect("released");
        assert_eq!(released.unwrap(), Ok(()));

        gate.hold_writes("Patroni names no leader", Duration::from_millis(50));
        let refused = tokio::time::timeout(Duration::from_secs(5), gate.wait_open(Direction::Writes))
            .await
            .expect("bounded by the hold's timeout")
            .unwrap_err();
        assert_eq!(refused.reason, "Patroni names no leader");
        assert!(refused.waited >= Duration::from_millis(50));
        let error = SqlError::from(refused);
        assert_eq!(error.code, code::CANNOT_CONNECT_NOW);
    }

    #[tokio::test]
    async fn an_operator_pause_under_a_hold_waits_without_a_bound() {
        let gate = Arc::new(Gate::default());
        gate.hold_writes("held", Duration::from_millis(20));
        gate.pause(Direction::Writes);
        let held = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open(Direction::Writes).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished(), "a pause is never refused");
        gate.release_writes();
        gate.resume();
        let released = tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .expect("released");
        assert_eq!(released.unwrap(), Ok(()));
    }
}
