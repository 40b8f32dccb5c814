//! How the admin subcommands print what the admin API answered: `pgsplit status` in the shape of Heroku's
//! `pg:info` (a header line and a workers line, then one `=== name` block per instance and one for the
//! changeover), the changeover's step lines, and `pgsplit wait`'s account of who is behind. Pure: values in, text
//! out.

use std::fmt::Write;

use crate::admin::{InstanceStatus, Paused, PoolStatus, Status, WorkersStatus};
use crate::topology::progress::{Progress, StepReport};

/// `pgsplit status`.
pub fn status(status: &Status) -> String {
    let mut out = format!(
        "pgsplit: generation {}, {} client{} ({} pinned), {}\n",
        status.generation,
        status.clients,
        if status.clients == 1 { "" } else { "s" },
        status.pinned_clients,
        paused(status.paused),
    );
    if let Some(workers) = &status.workers {
        out.push_str(&self::workers(workers));
    }
    for instance in &status.instances {
        block(&mut out, instance, &status.leader);
    }
    for pool in &status.pools {
        read_your_writes(&mut out, pool);
    }
    if let Some(patroni) = &status.patroni {
        super::patroni::block(&mut out, patroni, &status.leader);
    }
    if let Some(changeover) = &status.changeover {
        out.push_str(&self::changeover(changeover));
    }
    out
}

/// The workers line: how many, how the number was chosen, and the sessions on each.
fn workers(workers: &WorkersStatus) -> String {
    let chosen = match workers.from_cpus {
        Some(1) => "auto, 1 CPU".to_owned(),
        Some(cpus) => format!("auto, {cpus} CPUs"),
        None => "configured".to_owned(),
    };
    let sessions: Vec<String> = workers.sessions.iter().map(ToString::to_string).collect();
    format!(
        "workers: {} ({chosen}), sessions per worker {}\n",
        workers.threads,
        sessions.join(" ")
    )
}

/// A pool's read-your-writes line, once it has served such a read.
fn read_your_writes(out: &mut String, pool: &PoolStatus) {
    let counts = pool.read_your_writes;
    if counts.caught_up + counts.confirmed + counts.on_leader > 0 {
        let _ = writeln!(
            out,
            "=== pool {}: reads after own writes: {} on caught-up followers, {} confirmed first, {} on the leader",
            pool.name, counts.caught_up, counts.confirmed, counts.on_leader
        );
    }
}

/// What the pause gate holds, in a few words.
pub fn paused(paused: Paused) -> &'static str {
    match (paused.writes, paused.reads) {
        (false, false) => "not paused",
        (true, false) => "writes paused",
        (false, true) => "reads paused",
        (true, true) => "writes and reads paused",
    }
}

fn block(out: &mut String, instance: &InstanceStatus, leader: &str) {
    let _ = match &instance.pool {
        Some(pool) => writeln!(out, "=== {} (follower, pool {pool})", instance.name),
        None => writeln!(out, "=== {} (leader)", instance.name),
    };
    let mut field = |label: &str, value: String| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{:<17}{value}", format!("{label}:"));
    };
    field("Status", availability(instance).to_owned());
    if let Some(reason) = &instance.reason {
        field("Not used", reason.clone());
    }
    let host = &instance.host;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    field("Address", format!("{host}:{}", instance.port));
    if instance.pool.is_some() {
        field("Following", leader.to_owned());
        field("Replay LSN", instance.lsn.clone());
        field(
            "Behind By",
            format!(
                "{} bytes, {:.1} s, {} commits",
                instance.lag_bytes, instance.lag_seconds, instance.lag_commits
            ),
        );
        field("Weight", instance.weight.to_string());
    } else {
        field("Timeline", instance.timeline.to_string());
        field("WAL LSN", instance.lsn.clone());
    }
    let c = instance.server_connections;
    field(
        "Connections",
        format!(
            "{} active, {} idle, {} waiting ({}/{})",
            c.active,
            c.idle,
            c.waiting,
            c.active + c.idle,
            c.max
        ),
    );
    let routed: Vec<String> = instance
        .routed
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    field(
        "Routed",
        if routed.is_empty() {
            "nothing yet".to_owned()
        } else {
            routed.join(", ")
        },
    );
}

fn availability(instance: &InstanceStatus) -> &'static str {
    match (instance.healthy, instance.pool.is_some(), instance.in_recovery) {
        (false, _, _) => "unavailable",
        (true, false, true) => "available, but in recovery (read-only)",
        (true, true, false) => "available, but not in recovery (promoted outside pgsplit?)",
        (true, _, _) => "available",
    }
}

/// The changeover block of `pgsplit status`.
pub fn changeover(changeover: &Progress) -> String {
    let from = changeover
        .from
        .as_deref()
        .map_or(String::new(), |from| format!(" (from {from})"));
    let mut out = format!(
        "=== changeover to {}{from}: {}\n",
        changeover.target, changeover.outcome
    );
    for step in &changeover.steps {
        out.push_str(&step_line(step));
        out.push('\n');
    }
    if let Some(ms) = changeover.write_pause_ms {
        let _ = writeln!(out, "{:<17}{ms} ms", "Writes held:");
    }
    if let Some(error) = &changeover.error {
        let _ = writeln!(out, "{:<17}{error}", "Error:");
    }
    out
}

/// One changeover step: name, state, how long it took, what it found.
pub fn step_line(step: &StepReport) -> String {
    let line = format!(
        "{:<13}{:<9}{:>7} ms  {}",
        step.step, step.state, step.millis, step.detail
    );
    line.trim_end().to_owned()
}

/// What keeps `pgsplit wait` waiting: each follower that is down, not used (another cluster, another timeline,
/// over its pool's lag limits…), not following, or more than `max_lag` bytes behind, with the reason.
pub fn behind(status: &Status, max_lag: u64) -> Vec<String> {
    status
        .instances
        .iter()
        .filter(|i| i.pool.is_some())
        .filter_map(|f| {
            let why = if !f.healthy {
                "is unavailable".to_owned()
            } else if let Some(reason) = &f.reason {
                format!("is not used: {reason}")
            } else if !f.in_recovery {
                "is not in recovery (not following)".to_owned()
            } else if f.lag_bytes > max_lag {
                format!("is {} bytes behind (at most {max_lag} wanted)", f.lag_bytes)
            } else {
                return None;
            };
            Some(format!("{} {why}", f.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admin::Connections;
    use crate::topology::progress::{Outcome, Step, StepState};

    fn fixed() -> Status {
        let mut leader = InstanceStatus::example("leader", None);
        leader.routed = BTreeMap::from([("write".into(), 5), ("transaction".into(), 2)]);
        let mut f1 = InstanceStatus::example("f1", Some("default"));
        f1.port = 15433;
        f1.lag_bytes = 8192;
        f1.lag_seconds = 1.5;
        f1.lag_commits = 2;
        f1.server_connections = Connections {
            active: 0,
            idle: 2,
            waiting: 0,
            waits: 0,
            moves: 0,
            max: 10,
        };
        let mut f2 = InstanceStatus::example("f2", Some("default"));
        f2.healthy = false;
        f2.weight = 2;
        f2.reason = Some("down: cannot connect: connection refused".into());
        Status {
            generation: 3,
            leader: "leader".into(),
            paused: Paused {
                writes: true,
                reads: false,
            },
            clients: 12,
            pinned_clients: 1,
            workers: Some(WorkersStatus {
                threads: 8,
                from_cpus: Some(16),
                sessions: vec![16, 16, 15, 16, 16, 16, 17, 16],
            }),
            instances: vec![leader, f1, f2],
            pools: Vec::new(),
            changeover: None,
            patroni: None,
        }
    }

    #[test]
    fn status_prints_like_pg_info() {
        let expected = "\
pgsplit: generation 3, 12 clients (1 pinned), writes paused
workers: 8 (auto, 16 CPUs), sessions per worker 16 16 15 16 16 16 17 16
=== leader (leader)
Status:          available
Address:         127.0.0.1:15432
Timeline:        1
WAL LSN:         0/3000060
Connections:     3 active, 1 idle, 0 waiting (4/20)
Routed:          transaction 2, write 5
=== f1 (follower, pool default)
Status:          available
Address:         127.0.0.1:15433
Following:       leader
Replay LSN:      0/3000060
Behind By:       8192 bytes, 1.5 s, 2 commits
Weight:          1
Connections:     0 active, 2 idle, 0 waiting (2/10)
Routed:          nothing yet
=== f2 (follower, pool default)
Status:          unavailable
Not used:        down: cannot connect: connection refused
Address:         127.0.0.1:15432
Following:       leader
Replay LSN:      0/3000060
Behind By:       0 bytes, 0.0 s, 0 commits
Weight:          2
Connections:     3 active, 1 idle, 0 waiting (4/20)
Routed:          nothing yet
";
        assert_eq!(status(&fixed()), expected);
    }

    #[test]
    fn the_workers_line_says_how_their_number_was_chosen() {
        let mut status = fixed();
        status.workers = Some(WorkersStatus {
            threads: 4,
            from_cpus: None,
            sessions: vec![3, 0, 1, 2],
        });
        let text = self::status(&status);
        assert!(
            text.contains("\nworkers: 4 (configured), sessions per worker 3 0 1 2\n"),
            "{text}"
        );
        status.workers = Some(WorkersStatus {
            threads: 1,
            from_cpus: Some(1),
            sessions: vec![0],
        });
        let text = self::status(&status);
        assert!(
            text.contains("\nworkers: 1 (auto, 1 CPU), sessions per worker 0\n"),
            "{text}"
        );
        status.workers = None;
        let text = self::status(&status);
        assert!(
            !text.contains("workers:"),
            "an older pgsplit does not report its workers: {text}"
        );
    }

    #[test]
    fn status_ends_with_the_changeover_steps() {
        let mut with_changeover = fixed();
        with_changeover.changeover = Some(Progress {
            target: "f1".into(),
            from: Some("leader".into()),
            outcome: Outcome::Done,
            steps: vec![
                StepReport {
                    step: Step::Check,
                    state: StepState::Done,
                    detail: "f1 is a healthy follower".into(),
                    millis: 12,
                },
                StepReport {
                    step: Step::WriteConfig,
                    state: StepState::Skipped,
                    detail: "no config file".into(),
                    millis: 0,
                },
            ],
            error: None,
            write_pause_ms: Some(120),
            started_unix_ms: 0,
            abort_requested: false,
        });
        let text = status(&with_changeover);
        let expected = "\
=== changeover to f1 (from leader): done
check        done          12 ms  f1 is a healthy follower
write_config skipped        0 ms  no config file
Writes held:     120 ms
";
        assert!(text.ends_with(expected), "{text}");
    }

    #[test]
    fn a_running_step_has_no_trailing_blanks() {
        let step = StepReport {
            step: Step::CatchUp,
            state: StepState::Running,
            detail: String::new(),
            millis: 0,
        };
        assert_eq!(step_line(&step), "catch_up     running        0 ms");
    }

    #[test]
    fn odd_roles_and_addresses_are_called_out() {
        let mut status = fixed();
        status.instances[0].in_recovery = true;
        status.instances[1].in_recovery = false;
        status.instances[1].host = "::1".into();
        let text = self::status(&status);
        assert!(
            text.contains("Status:          available, but in recovery (read-only)\n"),
            "{text}"
        );
        assert!(text.contains("not in recovery (promoted outside pgsplit?)\n"), "{text}");
        assert!(text.contains("Address:         [::1]:15433\n"), "{text}");
    }

    #[test]
    fn wait_names_each_follower_that_is_down_or_behind() {
        let status = fixed();
        assert_eq!(
            behind(&status, 0),
            ["f1 is 8192 bytes behind (at most 0 wanted)", "f2 is unavailable"]
        );
        assert_eq!(behind(&status, 8192), ["f2 is unavailable"]);
        let mut all_up = status;
        all_up.instances[2].healthy = true;
        all_up.instances[2].reason = Some("receives timeline 1, the leader writes on timeline 2".into());
        assert_eq!(
            behind(&all_up, 16384),
            ["f2 is not used: receives timeline 1, the leader writes on timeline 2"]
        );
        all_up.instances[2].reason = None;
        assert!(behind(&all_up, 16384).is_empty());
    }
}
