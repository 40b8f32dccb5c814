//! The record of an orchestrated topology change as it goes — its steps, their states, its outcome — and the
//! operator's request to abort it ([`Board`]).
//!
//! A leaf: the changeover writes the record, the control plane keeps it between runs (so `status` shows the last
//! one), the admin API reads it and files abort requests. It never acts on anything: an abort request only sets a
//! flag and wakes whoever waits for it; what an abort undoes is the changeover's business.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Check,
    HoldWrites,
    Drain,
    Fence,
    /// Waits until no transaction on the fenced leader can still commit (SPEC §6 step 3, after the fence).
    Quiesce,
    CatchUp,
    Promote,
    Swap,
    Release,
    WriteConfig,
    Repoint,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    /// The target is the leader.
    Done,
    /// Failed or aborted before the promotion, and rolled back to the old leader.
    RolledBack,
    /// Failed after the promotion was asked for: see `error`.
    Failed,
}

/// Steps, states and outcomes print as their JSON names (`catch_up`, `rolled_back`), padded as asked.
macro_rules! display_as_serde_name {
    ($($kind:ty),*) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let name = serde_json::to_value(self).ok();
                f.pad(name.as_ref().and_then(|n| n.as_str()).unwrap_or("?"))
            }
        }
    )*};
}

display_as_serde_name!(Step, StepState, Outcome);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    pub step: Step,
    pub state: StepState,
    pub detail: String,
    pub millis: u64,
}

/// A changeover as it goes, and its record once over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub target: String,
    /// The leader when it started.
    pub from: Option<String>,
    pub outcome: Outcome,
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
    /// How long new write units were held, once released.
    pub write_pause_ms: Option<u64>,
    pub started_unix_ms: u64,
    /// An operator asked to abort it (`POST /promote/abort`).
    #[serde(default)]
    pub abort_requested: bool,
}

impl Progress {
    pub fn new(target: &str) -> Progress {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Progress {
            target: target.to_owned(),
            from: None,
            outcome: Outcome::Running,
            steps: Vec::new(),
            error: None,
            write_pause_ms: None,
            started_unix_ms: started.as_millis() as u64,
            abort_requested: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.outcome == Outcome::Running
    }

    /// The last report of `step`, if it has begun.
    pub fn step(&self, step: Step) -> Option<&StepReport> {
        self.steps.iter().rev().find(|s| s.step == step)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a changeover is already running")]
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AbortRefused {
    #[error("no changeover is running")]
    NotRunning,
    #[error("too late to abort: the target has been told to promote; the changeover goes forward")]
    TooLate,
}

/// Whether an abort can still change the course of the running changeover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Abort {
    /// Before the promotion: an abort request is taken.
    #[default]
    Open,
    /// Taken; the changeover rolls back at its next look.
    Requested,
    /// The promotion was asked for: no way back.
    Closed,
}

#[derive(Debug, Default)]
struct Slot {
    record: Option<Progress>,
    abort: Abort,
}

/// The running or last changeover's record, and the abort switch. One changeover at a time: [`Board::open`]
/// refuses while one runs.
#[derive(Debug, Default)]
pub struct Board {
    slot: Mutex<Slot>,
    abort_requested: Notify,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A poisoned lock only means a panic mid-update of plain data; the record is still readable.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running or last changeover.
    pub fn current(&self) -> Option<Progress> {
        self.lock().record.clone()
    }

    pub fn is_running(&self) -> bool {
        self.lock().record.as_ref().is_some_and(Progress::is_running)
    }

    /// Starts a fresh record for a changeover to `target`; refused while another runs.
    pub fn open(&self, target: &str) -> Result<(), Refused> {
        let mut slot = self.lock();
        if slot.record.as_ref().is_some_and(Progress::is_running) {
            return Err(Refused::Running);
        }
        *slot = Slot {
            record: Some(Progress::new(target)),
            abort: Abort::Open,
        };
        Ok(())
    }

    /// Changes the record (nothing happens when there is none).
    pub fn update(&self, change: impl FnOnce(&mut Progress)) {
        if let Some(progress) = self.lock().record.as_mut() {
            change(progress);
        }
    }

    /// Files an operator's abort: taken while the changeover runs and has not asked for the promotion yet.
    pub fn request_abort(&self) -> Result<Progress, AbortRefused> {
        let mut slot = self.lock();
        let Slot { record, abort } = &mut *slot;
        let Some(progress) = record.as_mut().filter(|p| p.is_running()) else {
            return Err(AbortRefused::NotRunning);
        };
        if *abort == Abort::Closed {
            return Err(AbortRefused::TooLate);
        }
        *abort = Abort::Requested;
        progress.abort_requested = true;
        let answer = progress.clone();
        drop(slot);
        self.abort_requested.notify_waiters();
        Ok(answer)
    }

    pub fn abort_requested(&self) -> bool {
        self.lock().abort == Abort::Requested
    }

    /// The changeover passes its point of no return. False, and nothing changes, if an abort came first.
    pub fn close_abort(&self) -> bool {
        let mut slot = self.lock();
        if slot.abort == Abort::Requested {
            return false;
        }
        slot.abort = Abort::Closed;
        true
    }

    /// Resolves once an abort has been requested.
    pub async fn aborted(&self) {
        loop {
            let requested = self.abort_requested.notified();
            tokio::pin!(requested);
            // Registered before the look, so a request in between is not missed.
            requested.as_mut().enable();
            if self.abort_requested() {
                return;
            }
            requested.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_changeover_at_a_time_and_a_finished_one_stays_readable() {
        let board = Board::default();
        assert_eq!(board.current(), None);
        board.open("f1").unwrap();
        assert_eq!(board.open("f2"), Err(Refused::Running));
        board.update(|p| p.outcome = Outcome::Done);
        assert_eq!(board.current().map(|p| p.target), Some("f1".into()));
        board.open("f2").unwrap();
        assert!(board.is_running());
    }

    #[tokio::test]
    async fn an_abort_is_taken_until_the_point_of_no_return() {
        let board = Arc::new(Board::default());
        assert_eq!(board.request_abort(), Err(AbortRefused::NotRunning));
        board.open("f1").unwrap();
        let waiting = tokio::spawn({
            let board = board.clone();
            async move { board.aborted().await }
        });
        let answer = board.request_abort().unwrap();
        assert!(answer.abort_requested);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the abort wakes the changeover")
            .unwrap();
        assert!(!board.close_abort(), "aborted before the promotion: no promotion");

        board.update(|p| p.outcome = Outcome::RolledBack);
        board.open("f1").unwrap();
        assert!(
            !board.abort_requested(),
            "a new changeover starts without the old request"
        );
        assert!(board.close_abort());
        assert_eq!(board.request_abort(), Err(AbortRefused::TooLate));
    }

    #[test]
    fn steps_and_outcomes_have_their_json_names() {
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
        assert_eq!(Step::Quiesce.to_string(), "quiesce");
        assert_eq!(format!("{:<10}|", Step::CatchUp), "catch_up  |");
        assert_eq!(progress.step(Step::CatchUp).map(|s| s.state), Some(StepState::Failed));
    }
}
