//! The orchestrated changeover, `pgsplit promote f1` (SPEC §6): a follower becomes the leader while clients see a
//! pause, never an error, and no acknowledged write is lost.
//!
//! The steps, each recorded in [`Progress`] for `status`: check the target → hold new write units at the gate →
//! wait for running write units on the leader to end (bounded, then cancel) → fence the old leader read-only →
//! wait until the target has replayed the old leader's last WAL position → promote it and wait until it leaves
//! recovery → swap the topology → release the held writes → write the new roles into proxy.toml → (optionally)
//! point the other followers at the new leader. A failure before the promotion rolls back: the fence is lifted
//! and writes resume on the old leader. Runs under the control plane's apply lock, so nothing else swaps meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::control::Control;
use super::gate::Direction;
use super::monitor::{Conn, error_chain, parse_lsn};
use super::{Instance, Role};

/// How often the drain and catch-up waits look again.
const POLL: Duration = Duration::from_millis(2);
/// After cancelling the queries of write units that outran the drain timeout, how long they get to end.
const AFTER_CANCEL: Duration = Duration::from_secs(2);
/// How long a promoted target may take to leave recovery.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// What `pgsplit promote` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteRequest {
    /// The follower to promote.
    pub instance: String,
    /// How long running write units on the old leader may take to finish before they are cancelled.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Check,
    HoldWrites,
    Drain,
    Fence,
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
    /// Failed before anything changed, or rolled back to the old leader.
    RolledBack,
    /// Failed after the promotion: the target is a primary, see `error`.
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
        }
    }

    pub fn is_running(&self) -> bool {
        self.outcome == Outcome::Running
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a changeover is already running")]
    Running,
}

/// Records the steps into the control plane's progress as they happen.
struct Tracker<'a> {
    control: &'a Control,
    step_started: Instant,
}

impl Tracker<'_> {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        if let Some(progress) = self.control.progress().as_mut() {
            change(progress);
        }
    }

    fn begin(&mut self, step: Step) {
        self.step_started = Instant::now();
        tracing::info!(?step, "changeover step");
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
        tracing::info!(?state, detail, millis, "changeover step ended");
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

    fn finish(&self, outcome: Outcome, error: Option<String>) {
        match &error {
            Some(error) => tracing::error!(?outcome, error, "changeover over"),
            None => tracing::info!(?outcome, "changeover over"),
        }
        self.update(|p| {
            p.outcome = outcome;
            p.error = error;
        });
    }
}

/// The old leader, the target and pgsplit's connections to both.
struct Parties {
    old: Arc<Instance>,
    target: Arc<Instance>,
    old_conn: Conn,
    target_conn: Conn,
}

/// Runs every step; the outcome and each step land in the control plane's progress.
pub(super) async fn run(control: &Control, request: &PromoteRequest) {
    let mut tracker = Tracker {
        control,
        step_started: Instant::now(),
    };
    tracker.begin(Step::Check);
    let parties = match check(control, request).await {
        Ok(parties) => parties,
        Err(error) => {
            tracker.end(StepState::Failed, error.clone());
            return tracker.finish(Outcome::RolledBack, Some(error));
        }
    };
    let (old_name, target_name) = (parties.old.name.to_string(), parties.target.name.to_string());
    tracker.update(|p| p.from = Some(old_name.clone()));
    tracker.done(format!(
        "{target_name} is a healthy follower; {old_name} answers as the leader"
    ));

    tracker.begin(Step::HoldWrites);
    control.gate.pause(Direction::Writes);
    let paused_at = Instant::now();
    tracker.done("new write units wait; reads go on");

    let mut fenced = false;
    let promoted = before_promotion(&mut tracker, &parties, request, &mut fenced).await;
    if let Err(error) = promoted {
        tracker.end(StepState::Failed, error.clone());
        tracker.begin(Step::Rollback);
        let lifted = if fenced {
            unfence(&parties.old_conn).await
        } else {
            Ok(())
        };
        control.gate.open(Direction::Writes);
        match lifted {
            Ok(()) => tracker.done(format!("writes resumed on {old_name}")),
            Err(lift) => tracker.end(
                StepState::Failed,
                format!("writes resumed, but the fence stays: {lift}"),
            ),
        }
        return tracker.finish(Outcome::RolledBack, Some(error));
    }

    tracker.begin(Step::Swap);
    let swapped = control.swap_promoted(&target_name);
    match &swapped {
        Ok(generation) => tracker.done(format!("generation {generation}: {target_name} is the leader")),
        Err(error) => tracker.end(StepState::Failed, error.clone()),
    }
    // The old leader takes no more writes either way; holding them longer helps nobody.
    tracker.begin(Step::Release);
    control.gate.open(Direction::Writes);
    let pause = paused_at.elapsed();
    tracker.update(|p| p.write_pause_ms = Some(pause.as_millis() as u64));
    tracker.done(format!("held writes released after {} ms", pause.as_millis()));
    if let Err(error) = swapped {
        return tracker.finish(Outcome::Failed, Some(error));
    }

    tracker.begin(Step::WriteConfig);
    let mut warnings = Vec::new();
    match control.config_path() {
        None => tracker.end(StepState::Skipped, "no config file".into()),
        Some(path) => match crate::config::rewrite::write_promotion(path, &target_name) {
            Ok(()) => tracker.done(format!("{} names {target_name} as the leader", path.display())),
            Err(error) => {
                let error = format!("proxy.toml not updated: {error}");
                tracker.end(StepState::Failed, error.clone());
                warnings.push(error);
            }
        },
    }

    tracker.begin(Step::Repoint);
    if request.repoint {
        match repoint(control, &parties.target).await {
            Ok(detail) => tracker.done(detail),
            Err(error) => {
                tracker.end(StepState::Failed, error.clone());
                warnings.push(error);
            }
        }
    } else {
        tracker.end(StepState::Skipped, "not asked (--repoint)".into());
    }
    tracker.finish(Outcome::Done, (!warnings.is_empty()).then(|| warnings.join("; ")));
}

/// Step 1: the target is a follower of this topology, up, in recovery and within its lag limits; both instances
/// answer pgsplit's own login, which may promote, fence and reload.
async fn check(control: &Control, request: &PromoteRequest) -> Result<Parties, String> {
    let topology = control.topology.load_full();
    let name = request.instance.as_str();
    let target = topology
        .instances()
        .find(|i| &*i.name == name)
        .cloned()
        .ok_or_else(|| format!("no instance named \"{name}\""))?;
    if topology.role_of(&target) != Some(Role::Follower) {
        return Err(format!("\"{name}\" is the leader already"));
    }
    let seen = target.health.snapshot();
    if !seen.up || !seen.in_recovery {
        return Err(format!(
            "\"{name}\" is not a healthy follower (up: {}, in recovery: {})",
            seen.up, seen.in_recovery
        ));
    }
    if target.health.usable_for().is_none() {
        return Err(format!(
            "\"{name}\" is behind its pool's lag limits ({} bytes, {:?}); wait for it (`pgsplit wait`)",
            seen.lag_bytes, seen.lag
        ));
    }
    let old = topology.leader.clone();
    let old_conn = control.connect(&old.host, old.port, &old.name).await?;
    let target_conn = control.connect(&target.host, target.port, &target.name).await?;
    let mut privileges = String::from(
        "SELECT has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE') \
         AND has_function_privilege('pg_reload_conf()', 'EXECUTE') \
         AND has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM')",
    );
    if request.repoint {
        privileges.push_str(" AND has_parameter_privilege('primary_conninfo', 'ALTER SYSTEM')");
    }
    if one_value(&old_conn, &privileges).await? != "t" {
        let user = topology.config.users[0].name.as_str();
        return Err(format!(
            "user \"{user}\" may not promote, fence and reload; as a superuser run: GRANT EXECUTE ON FUNCTION \
             pg_promote(boolean, integer), pg_reload_conf() TO {user}; GRANT ALTER SYSTEM ON PARAMETER \
             default_transaction_read_only, primary_conninfo TO {user}; GRANT pg_signal_backend, \
             pg_read_all_settings TO {user};"
        ));
    }
    Ok(Parties {
        old,
        target,
        old_conn,
        target_conn,
    })
}

/// Steps 3 to 6. Errors here are rolled back by the caller; `fenced` says whether there is a fence to lift.
async fn before_promotion(
    tracker: &mut Tracker<'_>,
    parties: &Parties,
    request: &PromoteRequest,
    fenced: &mut bool,
) -> Result<(), String> {
    let Parties {
        old,
        target,
        old_conn,
        target_conn,
    } = parties;

    tracker.begin(Step::Drain);
    let detail = drain(old, old_conn, request.drain_timeout).await?;
    tracker.done(detail);

    tracker.begin(Step::Fence);
    *fenced = true;
    run_sql(old_conn, "ALTER SYSTEM SET default_transaction_read_only = on").await?;
    run_sql(old_conn, "SELECT pg_reload_conf()").await?;
    // Its idle pooled connections go now; none is busy with a write (drained), and new writes are held.
    old.pool.close_idle();
    tracker.done(format!(
        "{} is read-only (default_transaction_read_only = on)",
        old.name
    ));

    tracker.begin(Step::CatchUp);
    let lsn = one_value(old_conn, "SELECT pg_current_wal_lsn()::text").await?;
    parse_lsn(&lsn).ok_or_else(|| format!("unexpected WAL position {lsn:?}"))?;
    let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    let deadline = Instant::now() + request.catchup_timeout;
    while one_value(target_conn, &caught_up).await? != "t" {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not replay {lsn} within {:?} (catch-up timeout)",
                target.name, request.catchup_timeout
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    tracker.done(format!(
        "{} replayed {}'s last WAL position {lsn}",
        target.name, old.name
    ));

    tracker.begin(Step::Promote);
    // pg_promote(wait => true) looks only every 100 ms whether recovery ended; writes are held meanwhile, so
    // pgsplit signals without waiting and looks itself, every few milliseconds.
    let answer = one_value(target_conn, "SELECT pg_promote(false)").await;
    let deadline = Instant::now() + PROMOTE_TIMEOUT;
    while one_value(target_conn, "SELECT pg_is_in_recovery()").await? != "f" {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} is still in recovery {PROMOTE_TIMEOUT:?} after pg_promote ({answer:?})",
                target.name
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let timeline = one_value(
        target_conn,
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    )
    .await?;
    let timeline = u32::from_str_radix(&timeline, 16).unwrap_or(0);
    tracker.done(format!("{} left recovery on timeline {timeline}", target.name));
    Ok(())
}

/// Step 3: waits for write units running on `old` to end; past the timeout, cancels the queries of the
/// sessions in a transaction there, then waits a little more. Units pgsplit does not see (other clients) are
/// cancelled too: their commits would land after the final WAL position is read.
async fn drain(old: &Instance, conn: &Conn, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    if wait_until(|| old.writing() == 0, timeout).await {
        return Ok(format!(
            "no write unit running after {} ms",
            started.elapsed().as_millis()
        ));
    }
    let running = old.writing();
    let cancel = "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL";
    let cancelled = one_value(conn, cancel).await?;
    if wait_until(|| old.writing() == 0, AFTER_CANCEL).await {
        return Ok(format!(
            "{running} write units outran {timeout:?}; cancelled {cancelled} queries; drained after {} ms",
            started.elapsed().as_millis()
        ));
    }
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL";
    let ended = one_value(conn, terminate).await?;
    if wait_until(|| old.writing() == 0, AFTER_CANCEL).await {
        return Ok(format!(
            "{running} write units outran {timeout:?}; cancelled {cancelled} queries, ended {ended} sessions"
        ));
    }
    Err(format!(
        "{} write units still run on {} after cancelling",
        old.writing(),
        old.name
    ))
}

async fn wait_until(mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

async fn unfence(conn: &Conn) -> Result<(), String> {
    run_sql(conn, "ALTER SYSTEM RESET default_transaction_read_only").await?;
    run_sql(conn, "SELECT pg_reload_conf()").await
}

/// The optional last step: every other follower's `primary_conninfo` gets the new leader's host and port.
async fn repoint(control: &Control, leader: &Instance) -> Result<String, String> {
    let topology = control.topology.load_full();
    let mut done = Vec::new();
    for follower in topology.pools.iter().flat_map(|p| p.instances.iter()) {
        let conn = control.connect(&follower.host, follower.port, &follower.name).await?;
        let current = one_value(&conn, "SHOW primary_conninfo").await?;
        let next = with_host_port(&current, &leader.host, leader.port);
        let set = format!("ALTER SYSTEM SET primary_conninfo = '{}'", next.replace('\'', "''"));
        run_sql(&conn, &set).await?;
        run_sql(&conn, "SELECT pg_reload_conf()").await?;
        done.push(follower.name.to_string());
    }
    Ok(format!("following {} now: {}", leader.name, done.join(", ")))
}

/// A libpq conninfo string (`key=value …`, values maybe single-quoted) with `host` and `port` replaced or added.
fn with_host_port(conninfo: &str, host: &str, port: u16) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = conninfo.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut end = 0;
            let bytes = quoted.as_bytes();
            while end < bytes.len() && bytes[end] != b'\'' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = end.min(quoted.len());
            (format!("'{}'", &quoted[..end]), quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if key != "host" && key != "port" && key != "hostaddr" {
            parts.push(format!("{key}={value}"));
        }
        rest = tail.trim_start();
    }
    parts.push(format!("host={host}"));
    parts.push(format!("port={port}"));
    parts.join(" ")
}

async fn run_sql(conn: &Conn, sql: &str) -> Result<(), String> {
    conn.client
        .simple_query(sql)
        .await
        .map(drop)
        .map_err(|e| format!("{sql}: {}", error_chain(&e)))
}

/// The first column of the first row of `sql`'s answer.
async fn one_value(conn: &Conn, sql: &str) -> Result<String, String> {
    let messages = conn
        .client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {}", error_chain(&e)))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .ok_or_else(|| format!("{sql}: no row"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_gets_the_new_host_and_port_and_keeps_the_rest() {
        let old = "user=postgres passfile='/var/lib/pg pass' channel_binding=prefer host=127.0.0.1 port=15432 \
                   sslmode=prefer application_name=f2";
        let new = with_host_port(old, "127.0.0.1", 15433);
        assert_eq!(
            new,
            "user=postgres passfile='/var/lib/pg pass' channel_binding=prefer sslmode=prefer application_name=f2 \
             host=127.0.0.1 port=15433"
        );
        assert_eq!(with_host_port("", "h", 1), "host=h port=1");
    }
}
