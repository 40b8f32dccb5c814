//! Admin actions at set moments of a run (`--promote-at 10s f1`, `--event 5s pause:writes`): carried out through
//! pgsplit's admin API while the load runs, each followed to its end (a changeover until its outcome), and paired
//! with what the clients saw from its start to the next event or the end of the run — the longest stretch without
//! a completed write, failures, the worst latency. That pairing is the point: the proxy's own account of a
//! changeover next to the clients' one.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::BenchError;
use super::admin::AdminWatch;
use super::driver::stopped;
use super::options::parse_run_duration;
use super::stats::{Stats, WindowFigures};
use crate::admin::{PauseBody, PauseDirection, PausedAnswer, PromoteBody, Status};
use crate::cli::{AdminClient, AdminError};
use crate::topology::changeover::Progress;
use crate::topology::control::SwapOutcome;

/// How often a running changeover is looked at.
const CHANGEOVER_POLL: Duration = Duration::from_millis(100);
/// A changeover still running after this long is reported as such (its own steps are bounded well below it).
const CHANGEOVER_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Promote(String),
    Pause(PauseDirection),
    Resume,
    Reload,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Promote(instance) => write!(f, "promote {instance}"),
            Action::Pause(PauseDirection::Both) => f.write_str("pause"),
            Action::Pause(PauseDirection::Writes) => f.write_str("pause writes"),
            Action::Pause(PauseDirection::Reads) => f.write_str("pause reads"),
            Action::Resume => f.write_str("resume"),
            Action::Reload => f.write_str("reload"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// From the start of the run.
    pub at: Duration,
    pub action: Action,
}

impl Event {
    pub fn parse(at: &str, action: &str) -> Result<Event, BenchError> {
        let at = parse_run_duration(at).map_err(|e| BenchError::Usage(format!("event time: {e}")))?;
        let action = match action.split_once(':') {
            Some(("promote", instance)) if !instance.is_empty() => Action::Promote(instance.to_owned()),
            None if action == "pause" => Action::Pause(PauseDirection::Both),
            Some(("pause", "writes")) => Action::Pause(PauseDirection::Writes),
            Some(("pause", "reads")) => Action::Pause(PauseDirection::Reads),
            None if action == "resume" => Action::Resume,
            None if action == "reload" => Action::Reload,
            _ => {
                return Err(BenchError::Usage(format!(
                    "unknown event action \"{action}\": use promote:INSTANCE, pause, pause:writes, pause:reads, \
                     resume or reload"
                )));
            }
        };
        Ok(Event { at, action })
    }
}

/// One event as it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventReport {
    pub action: String,
    /// Seconds from the start of the run: when it was due, when it was asked for, when it was over.
    pub at_s: f64,
    pub started_at_s: f64,
    pub finished_at_s: f64,
    /// `done`, or the changeover's own outcome (`rolled_back`, `failed`, `running` if it outlived the run), or
    /// `error` when the admin API refused or could not be reached.
    pub outcome: String,
    pub detail: Option<String>,
    /// How long pgsplit says it held writes (changeovers).
    pub proxy_write_pause_ms: Option<u64>,
    /// What the clients saw from this event to the next one or the end of the run.
    pub clients: Option<WindowFigures>,
}

impl EventReport {
    /// The action did not happen as asked.
    pub fn failed(&self) -> bool {
        self.outcome != "done"
    }
}

/// Runs `events` (sorted by time) against the admin API, adding to `reports` as each is over; each closes the
/// previous event's window of client figures. The last window is closed by the caller when the run ends.
pub async fn run(
    events: Vec<Event>,
    admin: Arc<AdminWatch>,
    stats: Arc<Stats>,
    reports: Arc<Mutex<Vec<EventReport>>>,
    mut stop: watch::Receiver<bool>,
) {
    let started = stats.started();
    let since = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    for event in events {
        tokio::select! {
            _ = tokio::time::sleep_until((started + event.at).into()) => {}
            _ = stopped(&mut stop) => return,
        }
        let now = Instant::now();
        let window = stats.take_window(now);
        if let Some(previous) = lock(&reports).last_mut() {
            previous.clients = Some(window);
        }
        let (outcome, detail, pause) = match perform(&event.action, admin.client(), &mut stop).await {
            Ok(done) => done,
            Err(error) => ("error".to_owned(), Some(error.to_string().replace('\n', " ")), None),
        };
        lock(&reports).push(EventReport {
            action: event.action.to_string(),
            at_s: event.at.as_secs_f64(),
            started_at_s: since(now),
            finished_at_s: since(Instant::now()),
            outcome,
            detail,
            proxy_write_pause_ms: pause,
            clients: None,
        });
    }
}

pub fn lock(reports: &Mutex<Vec<EventReport>>) -> std::sync::MutexGuard<'_, Vec<EventReport>> {
    match reports.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

type Done = (String, Option<String>, Option<u64>);

async fn perform(action: &Action, admin: &AdminClient, stop: &mut watch::Receiver<bool>) -> Result<Done, AdminError> {
    match action {
        Action::Promote(instance) => {
            let body = PromoteBody {
                instance: instance.clone(),
                repoint: false,
                drain_timeout_ms: None,
                catchup_timeout_ms: None,
            };
            let mut progress: Option<Progress> = admin.post("/promote", Some(&body)).await?;
            let deadline = Instant::now() + CHANGEOVER_LIMIT;
            loop {
                // Once the run has ended (or the limit passed), the last look tells how far it got.
                let over = *stop.borrow() || Instant::now() >= deadline;
                match &progress {
                    Some(current) if over || !current.is_running() => return Ok(changeover_done(current)),
                    None if over => return Ok(("error".into(), Some("pgsplit reported no changeover".into()), None)),
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHANGEOVER_POLL) => {}
                    _ = stopped(stop) => {}
                }
                progress = admin.get::<Status>("/status").await?.changeover;
            }
        }
        Action::Pause(direction) => {
            let answer: PausedAnswer = admin.post("/pause", Some(&PauseBody { direction: *direction })).await?;
            let paused = answer.paused;
            let detail = format!("paused: writes {}, reads {}", paused.writes, paused.reads);
            Ok(("done".into(), Some(detail), None))
        }
        Action::Resume => {
            let _: PausedAnswer = admin.post("/resume", None::<&()>).await?;
            Ok(("done".into(), None, None))
        }
        Action::Reload => {
            let outcome: SwapOutcome = admin.post("/reload", None::<&()>).await?;
            let detail = format!("generation {} (changed: {})", outcome.generation, outcome.changed);
            Ok(("done".into(), Some(detail), None))
        }
    }
}

fn changeover_done(progress: &Progress) -> Done {
    let outcome = progress.outcome.to_string();
    let detail = progress.error.clone().or_else(|| {
        let steps: Vec<String> = progress
            .steps
            .iter()
            .map(|s| format!("{} {} ms", s.step, s.millis))
            .collect();
        Some(steps.join(", "))
    });
    (outcome, detail, progress.write_pause_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_their_time_and_action() {
        let event = Event::parse("10s", "promote:f1").unwrap();
        assert_eq!(
            (event.at, event.action.to_string()),
            (Duration::from_secs(10), "promote f1".into())
        );
        assert_eq!(Event::parse("2", "pause:writes").unwrap().at, Duration::from_secs(2));
        assert_eq!(
            Event::parse("1s", "pause").unwrap().action,
            Action::Pause(PauseDirection::Both)
        );
        assert_eq!(Event::parse("500ms", "reload").unwrap().action, Action::Reload);
        for (at, action) in [
            ("1s", "promote:"),
            ("1s", "explode"),
            ("soon", "resume"),
            ("1s", "pause:all"),
        ] {
            let error = Event::parse(at, action).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
