//! The admin subcommands' Patroni side: the block `pgsplit status` prints when the members come from Patroni
//! (Patroni's view beside pgsplit's: members, roles, timelines, lag, tags, a scheduled switchover, whether writes
//! are held and why), and `pgsplit promote` following the switchover it asked Patroni for until pgsplit leads with
//! the member. Rendering is pure; the promote flow only calls the admin API.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::admin_client::{AdminClient, AdminError};
use crate::admin::{PromoteBody, Status};
use crate::topology::patroni::api::Scheduled;
use crate::topology::patroni::state::PatroniStatus;

/// How often `promote` looks at the status while the switchover it asked for is under way.
const POLL: Duration = Duration::from_millis(200);
/// After the scheduled time: Patroni's own switchover (a checkpoint, a shutdown, a promotion) plus pgsplit's
/// confirmation take seconds; a minute means it is not coming.
const AFTER_TIME: Duration = Duration::from_secs(60);

/// The `=== Patroni` block of `pgsplit status`.
pub fn block(out: &mut String, patroni: &PatroniStatus, pgsplit_leader: &str) {
    let answered = match (&patroni.answered_by, patroni.answer_age_ms) {
        (Some(by), Some(age)) => format!("answered by {by} {age} ms ago"),
        _ => "no answer yet".to_owned(),
    };
    let _ = writeln!(out, "=== Patroni ({answered})");
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{:<17}{value}", format!("{label}:"));
    };
    if let Some(why) = &patroni.unreachable {
        field("Unreachable", why.clone());
    }
    let named = patroni.named_leader.as_deref().unwrap_or("none");
    let agreement = if named == pgsplit_leader {
        "pgsplit leads with it"
    } else {
        "pgsplit does not lead with it yet"
    };
    field("Names leader", format!("{named} ({agreement})"));
    if let Some(why) = &patroni.not_confirmed {
        field("Not confirmed", why.clone());
    }
    field(
        "Writes",
        patroni
            .holding_writes
            .as_ref()
            .map_or("flowing".to_owned(), |why| format!("held: {why}")),
    );
    if let Some(view) = &patroni.view {
        for member in &view.members {
            let mut line = format!(
                "{} {}, {}",
                member.role,
                member.state,
                address(member.host.as_deref(), member.port)
            );
            if let Some(timeline) = member.timeline {
                let _ = write!(line, ", timeline {timeline}");
            }
            if let Some(lag) = &member.lag {
                let _ = write!(line, ", lag {lag}");
            }
            if !member.tags.is_empty() {
                let tags: Vec<String> = member.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(line, ", tags {}", tags.join(" "));
            }
            field(&format!("Member {}", member.name), line);
        }
        if let Some(scheduled) = &view.scheduled_switchover {
            let from = scheduled.from.as_deref().unwrap_or("the leader");
            let to = scheduled.to.as_deref().unwrap_or("any replica");
            field("Switchover", format!("scheduled at {}: {from} -> {to}", scheduled.at));
        }
        if view.pause {
            field(
                "Paused",
                "Patroni's maintenance mode is on: it fails nothing over".to_owned(),
            );
        }
    }
    for left in &patroni.left_out {
        field("Left out", format!("{}: {}", left.name, left.reason));
    }
    if let Some(hold) = &patroni.last_hold {
        let outcome = match (&hold.held_ms, &hold.released_on) {
            (Some(ms), Some(on)) => format!("{ms} ms, released on {on}"),
            _ => "still held".to_owned(),
        };
        field("Last hold", format!("{outcome} ({})", hold.reason));
    }
    if let Some(switchover) = &patroni.switchover {
        let drained = match (switchover.drained_ms, switchover.running_at_time) {
            (Some(ms), _) => format!("drained {ms} ms into the hold"),
            (None, Some(n)) => format!("{n} write units still ran at the time"),
            (None, None) => "draining".to_owned(),
        };
        field("Followed", format!("switchover at {}: {drained}", switchover.at));
    }
}

fn address(host: Option<&str>, port: Option<u64>) -> String {
    match (host, port) {
        (Some(host), Some(port)) if host.contains(':') => format!("[{host}]:{port}"),
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => "no address".to_owned(),
    }
}

/// `pgsplit promote <member>` with Patroni: asks for the switchover, then waits until pgsplit leads with the
/// member and writes flow. Exit 0 then, 2 when Patroni refuses or it does not happen in time.
pub async fn promote(client: &AdminClient, member: &str) -> Result<ExitCode, AdminError> {
    let body = PromoteBody {
        instance: member.to_owned(),
        repoint: false,
        drain_timeout_ms: None,
        catchup_timeout_ms: None,
    };
    let scheduled: Scheduled = client.post("/promote", Some(&body)).await?;
    println!(
        "Patroni ({}) scheduled a switchover {} -> {} at {}: {}",
        scheduled.via, scheduled.leader, scheduled.candidate, scheduled.at, scheduled.answer
    );
    let at = crate::topology::patroni::time::parse(&scheduled.at)
        .ok()
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
        .unwrap_or_default();
    let deadline = Instant::now() + at + AFTER_TIME;
    let mut said_held = false;
    loop {
        let status: Status = client.get("/status").await?;
        let held = status.patroni.as_ref().and_then(|p| p.holding_writes.clone());
        if let (Some(why), false) = (&held, said_held) {
            println!("writes held: {why}");
            said_held = true;
        }
        if status.leader == member && held.is_none() {
            let last = status.patroni.and_then(|p| p.last_hold).and_then(|h| h.held_ms);
            if let Some(ms) = last {
                println!("writes were held for {ms} ms");
            }
            println!("{member} is the leader");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "pgsplit: {member} is not the leader {} s after the scheduled time (pgsplit leads with {}); see \
                 `pgsplit status`",
                AFTER_TIME.as_secs(),
                status.leader
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::patroni::state::{HoldRecord, LeftOut};
    use crate::topology::patroni::view::ClusterView;

    #[test]
    fn the_block_shows_patronis_view_beside_pgsplits() {
        let view = ClusterView::parse(
            br#"{"members": [
            {"name": "n1", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 5431, "timeline": 3},
            {"name": "n2", "role": "replica", "state": "running", "host": "::1", "port": 5432, "timeline": 3,
             "lag": 0, "tags": {"pgsplit_pool": "analytics"}}],
            "scheduled_switchover": {"at": "2026-12-04T22:17:33+00:00", "from": "n1", "to": "n2"}}"#,
        )
        .unwrap();
        let status = PatroniStatus {
            urls: vec!["http://127.0.0.1:8008".into()],
            answered_by: Some("http://127.0.0.1:8008".into()),
            answer_age_ms: Some(40),
            named_leader: Some("n1".into()),
            holding_writes: Some("a switchover Patroni scheduled".into()),
            view: Some(view),
            left_out: vec![LeftOut {
                name: "n9".into(),
                reason: "tagged noloadbalance".into(),
            }],
            last_hold: Some(HoldRecord {
                reason: "Patroni names no leader".into(),
                started_ms: 0,
                held_ms: Some(2570),
                released_on: Some("n1".into()),
            }),
            ..PatroniStatus::default()
        };
        let mut out = String::new();
        block(&mut out, &status, "n1");
        let expected = "\
=== Patroni (answered by http://127.0.0.1:8008 40 ms ago)
Names leader:    n1 (pgsplit leads with it)
Writes:          held: a switchover Patroni scheduled
Member n1:       leader running, 127.0.0.1:5431, timeline 3
Member n2:       replica running, [::1]:5432, timeline 3, lag 0, tags pgsplit_pool=\"analytics\"
Switchover:      scheduled at 2026-12-04T22:17:33+00:00: n1 -> n2
Left out:        n9: tagged noloadbalance
Last hold:       2570 ms, released on n1 (Patroni names no leader)
";
        assert_eq!(out, expected);
        let mut out = String::new();
        let unreachable = PatroniStatus {
            unreachable: Some("no Patroni REST API answered: …; keeping the last known topology".into()),
            ..status
        };
        block(&mut out, &unreachable, "n2");
        assert!(out.contains("Unreachable:     no Patroni REST API answered"), "{out}");
        assert!(out.contains("n1 (pgsplit does not lead with it yet)"), "{out}");
    }
}
