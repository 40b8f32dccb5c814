//! The orchestrated changeover, `pgsplit promote f1` (SPEC §6): a follower becomes the leader while clients see a
//! pause, not an error, and no acknowledged write is lost.
//!
//! The steps, each recorded on the control plane's [`Board`] for `status`: check the target → hold new write
//! units at the gate → wait for running write units on the leader to end (bounded, then cancel) → fence the old
//! leader read-only → quiesce: wait until no transaction there can still commit, whoever runs it (bounded, then
//! cancel, then terminate) → wait until the target has replayed the old leader's last WAL position → promote it →
//! swap the topology → release the held writes → write the new roles into proxy.toml → (optionally) point the
//! other followers at the new leader.
//!
//! Everything before the promotion is bounded — each statement by the control plane's deadline, each wait by its
//! timeout, the whole by their sum — and an operator may abort it ([`abort`]); a failure, a timeout or an abort
//! there rolls back: the fence is lifted and writes resume on the old leader. Once the target has been told to
//! promote there is no way back. This module is the orchestrator: it drives the control plane through its port
//! (the gate, [`Exclusive::swap_promoted`], [`Control::connect`], the board); the SQL of each step is in `steps`.

mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Instance;
use super::conn::SqlError;
use super::control::{ConnectError, Control, Exclusive, SwapError};
use super::gate::Direction;
use super::monitor::format_lsn;
pub use super::progress::{AbortRefused, Outcome, Progress, Refused, Step, StepState};
use super::progress::{Board, StepReport};
use steps::{Parties, PromoteFailed};

/// How long the rollback keeps trying to lift the fence from an old leader that does not answer; writes are
/// released before the first retry.
const UNFENCE_RETRY: Duration = Duration::from_secs(30);
const UNFENCE_PAUSE: Duration = Duration::from_millis(250);
/// A transaction committing on the fenced leader while the target catches up (a session that overrode the fence,
/// autovacuum's ANALYZE) sends the changeover back to quiesce; this many times at most.
const MAX_SETTLE_ROUNDS: u32 = 5;

/// What `pgsplit promote` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteRequest {
    /// The follower to promote.
    pub instance: String,
    /// How long transactions on the old leader may take to finish — write units pgsplit routed there, then every
    /// transaction that could still commit there — before they are cancelled.
    pub drain_timeout: Duration,
    /// How long the target may take to replay the old leader's last WAL position.
    pub catchup_timeout: Duration,
    /// Point the other followers' `primary_conninfo` at the new leader and reload them.
    pub repoint: bool,
}

impl PromoteRequest {
    pub fn new(instance: &str) -> PromoteRequest {
        PromoteRequest {
            instance: instance.to_owned(),
            drain_timeout: Duration::from_secs(5),
            catchup_timeout: Duration::from_secs(30),
            repoint: false,
        }
    }

    /// The most the steps before the promotion may take together, with statements bounded by `deadline`: the two
    /// timeouts, the waits after cancelling and terminating (twice: drain, quiesce), and a few statements' worth.
    pub fn bound_before_promotion(&self, deadline: Duration) -> Duration {
        self.drain_timeout + self.catchup_timeout + 4 * steps::AFTER_CANCEL + 16 * deadline
    }
}

/// Why a changeover stopped. Never holds a value sent to a server: statements are named, not quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeoverError {
    #[error("no instance named \"{0}\"")]
    UnknownInstance(String),
    #[error("\"{0}\" is the leader already")]
    AlreadyLeader(String),
    #[error("\"{name}\" is not a usable follower: {reason}")]
    NotUsable { name: String, reason: String },
    #[error("{instance} runs PostgreSQL {version}; the changeover needs 15 or later")]
    TooOld { instance: String, version: String },
    #[error(
        "{target} belongs to another cluster than {leader} (system identifier {target_id}, the leader's {leader_id})"
    )]
    OtherCluster {
        target: String,
        leader: String,
        target_id: String,
        leader_id: String,
    },
    #[error(
        "user \"{user}\" may not promote, fence, reload and watch transactions; as a superuser run: GRANT EXECUTE ON \
         FUNCTION pg_promote(boolean, integer), pg_reload_conf() TO {user}; GRANT ALTER SYSTEM ON PARAMETER \
         default_transaction_read_only, primary_conninfo TO {user}; GRANT pg_signal_backend, pg_read_all_settings, \
         pg_read_all_stats TO {user};"
    )]
    Privileges { user: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{instance}: {source}")]
    Sql {
        instance: String,
        #[source]
        source: SqlError,
    },
    #[error("{instance}: unexpected {what} {answer:?}")]
    Answer {
        instance: String,
        what: &'static str,
        answer: String,
    },
    #[error("{running} write units still run on {instance} after cancelling and terminating")]
    DrainStuck { running: u32, instance: String },
    #[error("{instance}: default_transaction_read_only = on did not take effect within {after:?}")]
    FenceUnseen { instance: String, after: Duration },
    #[error("{count} transactions on {instance} could still commit after cancelling and terminating them")]
    QuiesceStuck { count: u64, instance: String },
    #[error(
        "{count} prepared transactions (two-phase commit) are open on {instance}: COMMIT PREPARED or ROLLBACK \
         PREPARED them, then try again"
    )]
    Prepared { count: u64, instance: String },
    #[error("{target} did not replay {lsn} within {timeout:?} (catch-up timeout)")]
    CatchUpTimeout {
        target: String,
        lsn: String,
        timeout: Duration,
    },
    #[error(
        "transactions kept committing on the fenced {instance} ({rounds} times); is a client overriding \
         default_transaction_read_only there?"
    )]
    Unsettled { instance: String, rounds: u32 },
    #[error("{target} was told to promote but is still in recovery after {after:?}")]
    PromoteTimeout { target: String, after: Duration },
    #[error("aborted by the operator")]
    Aborted,
    #[error("the steps before the promotion did not end within their bound, {0:?}")]
    Bound(Duration),
    #[error(transparent)]
    Swap(#[from] SwapError),
}

/// Starts a changeover in the background; its steps show on the control plane's board. Refused while another
/// runs.
pub fn start(control: &Arc<Control>, request: PromoteRequest) -> Result<(), Refused> {
    control.board().open(&request.instance)?;
    let control = control.clone();
    tokio::spawn(async move { execute(&control, &request).await });
    Ok(())
}

/// Runs a changeover to its end and returns its record. Refused while another runs.
pub async fn run(control: &Control, request: &PromoteRequest) -> Result<Progress, Refused> {
    control.board().open(&request.instance)?;
    Ok(execute(control, request).await)
}

/// Asks the running changeover to stop and roll back; refused when none runs or it has asked for the promotion.
pub fn abort(control: &Control) -> Result<Progress, AbortRefused> {
    let progress = control.board().request_abort()?;
    tracing::warn!(target = progress.target, "changeover abort requested");
    Ok(progress)
}

/// Runs every step once the record is open; the outcome and each step land on the board.
async fn execute(control: &Control, request: &PromoteRequest) -> Progress {
    let mut tracker = Tracker {
        board: control.board(),
        step_started: Instant::now(),
    };
    // A reload or an adoption may hold the apply lock; an abort meanwhile ends the wait.
    tokio::select! {
        exclusive = control.exclusive() => orchestrate(&mut tracker, control, &exclusive, request).await,
        () = control.board().aborted() => tracker.finish(Outcome::RolledBack, Some(&ChangeoverError::Aborted)),
    }
    control
        .board()
        .current()
        .unwrap_or_else(|| Progress::new(&request.instance))
}

async fn orchestrate(
    tracker: &mut Tracker<'_>,
    control: &Control,
    exclusive: &Exclusive<'_>,
    request: &PromoteRequest,
) {
    tracker.begin(Step::Check);
    let checked = tokio::select! {
        checked = steps::check(control, request) => checked,
        () = control.board().aborted() => Err(ChangeoverError::Aborted),
    };
    let parties = match checked {
        Ok(parties) => parties,
        Err(error) => {
            tracker.fail(&error);
            return tracker.finish(Outcome::RolledBack, Some(&error));
        }
    };
    let (old, target) = (parties.old.clone(), parties.target.clone());
    tracker.update(|p| p.from = Some(old.name.to_string()));
    tracker.done(format!(
        "{} is a healthy follower of {}'s cluster; {} answers as the leader",
        target.name, old.name, old.name
    ));

    tracker.begin(Step::HoldWrites);
    control.gate.pause(Direction::Writes);
    let paused_at = Instant::now();
    tracker.done("new write units wait; reads go on");

    let mut fenced = false;
    let bound = request.bound_before_promotion(control.deadline());
    let reached = tokio::select! {
        reached = tokio::time::timeout(bound, before_promotion(tracker, control, &parties, request, &mut fenced)) => {
            reached.unwrap_or(Err(ChangeoverError::Bound(bound)))
        }
        () = control.board().aborted() => Err(ChangeoverError::Aborted),
    };
    // The point of no return: an abort that came in time wins over the promotion.
    let reached = reached.and_then(|()| {
        if control.board().close_abort() {
            Ok(())
        } else {
            Err(ChangeoverError::Aborted)
        }
    });
    if let Err(error) = reached {
        tracker.fail_running(&error);
        rollback(tracker, control, &old, fenced, paused_at).await;
        return tracker.finish(Outcome::RolledBack, Some(&error));
    }

    tracker.begin(Step::Promote);
    match steps::promote(&target, &parties.target_conn, control.deadline()).await {
        Ok(detail) => tracker.done(detail),
        Err(PromoteFailed::Refused(error)) => {
            // The target refused: it is not promoting, so going back is safe.
            tracker.fail(&error);
            rollback(tracker, control, &old, fenced, paused_at).await;
            return tracker.finish(Outcome::RolledBack, Some(&error));
        }
        Err(PromoteFailed::Unknown(error)) => {
            // It may still leave recovery: the old leader must not take writes again (never two leaders). The held
            // writes are released so that they fail on the fenced leader instead of waiting without end.
            tracker.fail(&error);
            tracker.begin(Step::Release);
            control.gate.open(Direction::Writes);
            let pause = tracker.released(paused_at);
            tracker.done(format!(
                "held writes released after {} ms; they fail on the fenced {} until {} is the leader",
                pause.as_millis(),
                old.name,
                target.name
            ));
            let advice = format!(
                "{error}; {} stays fenced. Once {} leaves recovery, follow_promotions adopts it (or run `pgsplit \
                 reload` after naming it the leader); if it never does, lift the fence on {}",
                old.name, target.name, old.name
            );
            return tracker.finish_with(Outcome::Failed, Some(advice));
        }
    }

    tracker.begin(Step::Swap);
    let swapped = exclusive.swap_promoted(&target.name);
    match &swapped {
        Ok(generation) => tracker.done(format!("generation {generation}: {} is the leader", target.name)),
        Err(error) => tracker.fail(&ChangeoverError::Swap(error.clone())),
    }
    // The old leader takes no more writes either way; holding them longer helps nobody.
    tracker.begin(Step::Release);
    control.gate.open(Direction::Writes);
    let pause = tracker.released(paused_at);
    tracker.done(format!("held writes released after {} ms", pause.as_millis()));
    if let Err(error) = swapped {
        return tracker.finish(Outcome::Failed, Some(&ChangeoverError::Swap(error)));
    }

    let mut warnings = Vec::new();
    tracker.begin(Step::WriteConfig);
    match control.config_path() {
        None => tracker.end(StepState::Skipped, "no config file".into()),
        Some(path) => match crate::config::rewrite::write_promotion(path, &target.name) {
            Ok(()) => tracker.done(format!("{} names {} as the leader", path.display(), target.name)),
            Err(error) => {
                let error = format!("proxy.toml not updated: {error}");
                tracker.end(StepState::Failed, error.clone());
                warnings.push(error);
            }
        },
    }

    tracker.begin(Step::Repoint);
    if request.repoint {
        let repointed = steps::repoint(control, &target).await;
        if repointed.failed.is_empty() {
            tracker.done(repointed.to_string());
        } else {
            tracker.end(StepState::Failed, repointed.to_string());
            warnings.push(repointed.to_string());
        }
    } else {
        tracker.end(StepState::Skipped, "not asked (--repoint)".into());
    }
    tracker.finish_with(Outcome::Done, (!warnings.is_empty()).then(|| warnings.join("; ")));
}

/// Drain, fence, quiesce, catch up. Errors here are rolled back by the caller; `fenced` says whether a fence may
/// be in place (set before the statement is sent: a timed-out one may still have taken effect).
async fn before_promotion(
    tracker: &mut Tracker<'_>,
    control: &Control,
    parties: &Parties,
    request: &PromoteRequest,
    fenced: &mut bool,
) -> Result<(), ChangeoverError> {
    let deadline = control.deadline();
    let Parties {
        old,
        target,
        old_conn,
        target_conn,
        wal,
    } = parties;
    // Drain and quiesce share the drain timeout: together they are "let running transactions finish".
    let drain_until = Instant::now() + request.drain_timeout;

    tracker.begin(Step::Drain);
    tracker.done(steps::drain(old, old_conn, drain_until, deadline).await?);

    tracker.begin(Step::Fence);
    *fenced = true;
    let fence = steps::fence(old, old_conn, deadline).await?;
    tracker.done(format!(
        "{} is read-only for new transactions (default_transaction_read_only = on)",
        old.name
    ));

    let mut catch_up_until = None;
    for round in 1..=MAX_SETTLE_ROUNDS {
        tracker.begin(Step::Quiesce);
        let settled = steps::quiesce(old, old_conn, &fence, drain_until, deadline).await?;
        tracker.done(settled.to_string());

        tracker.begin(Step::CatchUp);
        let until = *catch_up_until.get_or_insert_with(|| Instant::now() + request.catchup_timeout);
        let lsn = wal.record_end(settled.insert_lsn);
        steps::catch_up(target, target_conn, lsn, until, request.catchup_timeout, deadline).await?;
        if steps::still_settled(old, old_conn, &settled, deadline).await? {
            tracker.done(format!(
                "{} replayed {}'s last WAL position {}",
                target.name,
                old.name,
                format_lsn(lsn)
            ));
            return Ok(());
        }
        tracker.done(format!(
            "{} replayed {}, but a transaction ended on {} meanwhile (round {round}): quiescing again",
            target.name,
            format_lsn(lsn),
            old.name
        ));
    }
    Err(ChangeoverError::Unsettled {
        instance: old.name.to_string(),
        rounds: MAX_SETTLE_ROUNDS,
    })
}

/// Lifts the fence (if there may be one) and releases the held writes. An old leader that does not answer gets
/// the writes released after the first try, and further tries for [`UNFENCE_RETRY`].
async fn rollback(tracker: &mut Tracker<'_>, control: &Control, old: &Arc<Instance>, fenced: bool, paused_at: Instant) {
    tracker.begin(Step::Rollback);
    let mut lifted = if fenced {
        steps::unfence(control, old).await
    } else {
        Ok(())
    };
    control.gate.open(Direction::Writes);
    tracker.released(paused_at);
    let give_up = Instant::now() + UNFENCE_RETRY;
    let mut tries = 1;
    while let Err(error) = &lifted {
        if Instant::now() >= give_up {
            return tracker.end(
                StepState::Failed,
                format!(
                    "writes resumed, but the fence stays on {} ({tries} tries; last: {error}): lift it there with \
                     ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();",
                    old.name
                ),
            );
        }
        tracker.note(format!(
            "writes resumed; lifting the fence on {} failed ({error}); trying again",
            old.name
        ));
        tokio::time::sleep(UNFENCE_PAUSE).await;
        tries += 1;
        lifted = steps::unfence(control, old).await;
    }
    let lifted = if fenced { ", fence lifted" } else { "" };
    tracker.done(format!("writes resumed on {}{lifted}", old.name));
}

/// Records the steps on the board as they happen, and logs them (details never hold a value sent to a server).
struct Tracker<'a> {
    board: &'a Board,
    step_started: Instant,
}

impl Tracker<'_> {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        self.board.update(change);
    }

    fn begin(&mut self, step: Step) {
        self.step_started = Instant::now();
        tracing::info!(%step, "changeover step");
        self.update(|p| {
            p.steps.push(StepReport {
                step,
                state: StepState::Running,
                detail: String::new(),
                millis: 0,
            })
        });
    }

    fn end(&self, state: StepState, detail: String) {
        let millis = self.step_started.elapsed().as_millis() as u64;
        tracing::info!(%state, detail, millis, "changeover step ended");
        self.update(|p| {
            if let Some(last) = p.steps.last_mut() {
                last.state = state;
                last.detail = detail;
                last.millis = millis;
            }
        });
    }

    fn done(&self, detail: impl Into<String>) {
        self.end(StepState::Done, detail.into());
    }

    fn fail(&self, error: &ChangeoverError) {
        self.end(StepState::Failed, error.to_string());
    }

    /// Marks the running step failed, if one runs (an abort may come between steps).
    fn fail_running(&self, error: &ChangeoverError) {
        let running = self.board.current().and_then(|p| p.steps.last().map(|s| s.state)) == Some(StepState::Running);
        if running {
            self.fail(error);
        }
    }

    /// What the running step is doing now.
    fn note(&self, detail: String) {
        let millis = self.step_started.elapsed().as_millis() as u64;
        self.update(|p| {
            if let Some(last) = p.steps.last_mut() {
                last.detail = detail;
                last.millis = millis;
            }
        });
    }

    /// Records how long writes were held, once they are released.
    fn released(&self, paused_at: Instant) -> Duration {
        let pause = paused_at.elapsed();
        self.update(|p| p.write_pause_ms = Some(pause.as_millis() as u64));
        pause
    }

    fn finish(&self, outcome: Outcome, error: Option<&ChangeoverError>) {
        self.finish_with(outcome, error.map(ToString::to_string));
    }

    fn finish_with(&self, outcome: Outcome, error: Option<String>) {
        match &error {
            Some(error) => tracing::error!(%outcome, error, "changeover over"),
            None => tracing::info!(%outcome, "changeover over"),
        }
        self.update(|p| {
            p.outcome = outcome;
            p.error = error;
        });
    }
}
