//! Pause and resume: holds new units of work at their start, per direction, while running ones finish.
//!
//! A session asks the gate before it routes a unit ([`Gate::wait_open`]) and again right after it has counted the
//! unit on its instance ([`Gate::is_paused`]); whoever pauses sets the flag first and then waits for the counts to
//! fall. Both sides use `SeqCst`, so either the pauser sees the unit or the unit sees the pause and backs out —
//! no unit slips past a pause unseen. Waiters are woken in the order they arrived. The gate never routes and
//! never touches a connection.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Which units a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Units for the leader (anything that may write).
    Writes,
    /// Units for followers.
    Reads,
}

#[derive(Default)]
pub struct Gate {
    writes: AtomicBool,
    reads: AtomicBool,
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

    /// Opens both directions and wakes every held unit, oldest first.
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

    pub fn is_paused(&self, direction: Direction) -> bool {
        self.flag(direction).load(Ordering::SeqCst)
    }

    /// Returns at once when `direction` is open (one atomic load: this is on every unit's path), else when it is
    /// resumed.
    pub async fn wait_open(&self, direction: Direction) {
        while self.is_paused(direction) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the second look, so a resume in between is not missed.
            resumed.as_mut().enable();
            if !self.is_paused(direction) {
                return;
            }
            resumed.await;
        }
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
            .expect("reads are not paused");
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
            .unwrap();
        assert!(!gate.is_paused(Direction::Writes));
    }
}
