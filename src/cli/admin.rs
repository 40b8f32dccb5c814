//! The admin subcommands — `status`, `reload`, `pause`, `resume`, `promote [--abort]`, `wait` — as an operator runs them:
//! the calls to the running proxy's admin API, what to print, and the exit code (0 ok; 2 when the API cannot be
//! reached, refuses, or what was asked for does not happen). Never talks to PostgreSQL or changes anything itself.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::admin_client::{AdminClient, AdminError};
use super::render;
use crate::admin::{PauseBody, PauseDirection, PausedAnswer, PromoteBody, Status};
use crate::topology::control::SwapOutcome;
use crate::topology::progress::{Outcome, Progress, StepReport};

/// How often `promote` looks at the changeover's progress.
const PROMOTE_POLL: Duration = Duration::from_millis(200);
/// How often `wait` looks at the followers.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// `pgsplit status [--json]`.
pub fn status(client: &AdminClient, json: bool) -> ExitCode {
    block_on(async {
        if json {
            print!("{}", String::from_utf8_lossy(&client.get_raw("/status").await?));
        } else {
            let status: Status = client.get("/status").await?;
            print!("{}", render::status(&status));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `pgsplit reload`.
pub fn reload(client: &AdminClient) -> ExitCode {
    block_on(async {
        let outcome: SwapOutcome = client.post("/reload", None::<&()>).await?;
        if outcome.changed {
            println!("reloaded: generation {}", outcome.generation);
            for (label, names) in [("added", &outcome.added), ("removed", &outcome.removed)] {
                if !names.is_empty() {
                    println!("{label}: {}", names.join(", "));
                }
            }
        } else {
            println!("no change: generation {} stays", outcome.generation);
        }
        if !outcome.needs_restart.is_empty() {
            println!("changed but kept until a restart: {}", outcome.needs_restart.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `pgsplit pause [--writes | --reads]`: neither flag pauses both directions.
pub fn pause(client: &AdminClient, writes: bool, reads: bool) -> ExitCode {
    let direction = match (writes, reads) {
        (true, false) => PauseDirection::Writes,
        (false, true) => PauseDirection::Reads,
        _ => PauseDirection::Both,
    };
    block_on(async {
        let answer: PausedAnswer = client.post("/pause", Some(&PauseBody { direction })).await?;
        println!("{}", render::paused(answer.paused));
        Ok(ExitCode::SUCCESS)
    })
}

/// `pgsplit resume`.
pub fn resume(client: &AdminClient) -> ExitCode {
    block_on(async {
        let answer: PausedAnswer = client.post("/resume", None::<&()>).await?;
        println!("{}", render::paused(answer.paused));
        Ok(ExitCode::SUCCESS)
    })
}

/// `pgsplit promote <instance>`: starts the changeover, then prints each step as it changes until it is over.
/// Exit 0 when the instance is the leader, 2 otherwise. Timeouts not given are the proxy's defaults.
pub fn promote(
    client: &AdminClient,
    instance: &str,
    repoint: bool,
    drain_timeout: Option<Duration>,
    catchup_timeout: Option<Duration>,
) -> ExitCode {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let body = PromoteBody {
        instance: instance.to_owned(),
        repoint,
        drain_timeout_ms: drain_timeout.map(millis),
        catchup_timeout_ms: catchup_timeout.map(millis),
    };
    block_on(async {
        if client.get::<Status>("/status").await?.patroni.is_some() {
            // Patroni promotes: pgsplit asks it for a scheduled switchover, then follows it.
            if repoint || drain_timeout.is_some() || catchup_timeout.is_some() {
                eprintln!(
                    "pgsplit: --repoint, --drain-timeout and --catchup-timeout do not apply when Patroni carries the \
                     switchover out"
                );
                return Ok(ExitCode::from(1));
            }
            return super::patroni::promote(client, instance).await;
        }
        let progress: Option<Progress> = client.post("/promote", Some(&body)).await?;
        let over = follow(client, progress).await?;
        if let Some(ms) = over.write_pause_ms {
            println!("writes were held for {ms} ms");
        }
        if over.outcome == Outcome::Done {
            println!("{} is the leader", over.target);
            if let Some(warning) = &over.error {
                println!("warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        } else {
            let error = over.error.as_deref().unwrap_or("no reason given");
            eprintln!("changeover {}: {error}", over.outcome);
            Ok(ExitCode::from(2))
        }
    })
}

/// `pgsplit promote --abort`: asks the running changeover to roll back, then prints its steps until it is over.
/// Exit 0 when it rolled back, 2 when there was none to abort, it was past the promotion, or it ended otherwise.
pub fn abort_promote(client: &AdminClient) -> ExitCode {
    block_on(async {
        let progress: Progress = client.post("/promote/abort", None::<&()>).await?;
        println!("abort requested: changeover to {}", progress.target);
        let over = follow(client, Some(progress)).await?;
        if let Some(ms) = over.write_pause_ms {
            println!("writes were held for {ms} ms");
        }
        let error = over.error.as_deref().unwrap_or("no reason given");
        if over.outcome == Outcome::RolledBack {
            println!("changeover rolled back: {error}");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("changeover {}: {error}", over.outcome);
            Ok(ExitCode::from(2))
        }
    })
}

/// Prints the changeover's steps as they change until it is over; returns its record then.
async fn follow(client: &AdminClient, mut progress: Option<Progress>) -> Result<Progress, AdminError> {
    let mut printed: Vec<StepReport> = Vec::new();
    loop {
        if let Some(current) = &progress {
            print_new_steps(&current.steps, &mut printed);
            if !current.is_running() {
                return Ok(current.clone());
            }
        }
        tokio::time::sleep(PROMOTE_POLL).await;
        progress = client.get::<Status>("/status").await?.changeover;
    }
}

/// Prints the steps that are new or changed since the last look (a step is seen running, then ended).
fn print_new_steps(steps: &[StepReport], printed: &mut Vec<StepReport>) {
    for (i, step) in steps.iter().enumerate() {
        if printed.get(i) != Some(step) {
            println!("{}", render::step_line(step));
        }
    }
    *printed = steps.to_vec();
}

/// `pgsplit wait`: until every follower is healthy, following, and at most `max_lag` bytes behind.
pub fn wait(client: &AdminClient, max_lag: u64, timeout: Duration) -> ExitCode {
    block_on(async {
        let deadline = Instant::now() + timeout;
        loop {
            let status: Status = client.get("/status").await?;
            let behind = render::behind(&status, max_lag);
            if behind.is_empty() {
                let followers = status.instances.iter().filter(|i| i.pool.is_some()).count();
                println!("{followers} follower(s) healthy and caught up");
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() >= deadline {
                eprintln!("gave up after {timeout:?}: {}", behind.join("; "));
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    })
}

/// Runs one command; a failure to reach or be served by the admin API prints the reason and exits 2.
fn block_on(command: impl Future<Output = Result<ExitCode, AdminError>>) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(command).unwrap_or_else(|error| {
        eprintln!("pgsplit: {error}");
        ExitCode::from(2)
    })
}
