//! What a run found, as one value: built once the run is over from the collector's totals and intervals, the
//! admin figures and the events; serialised as the `--json` file (docs/bench.md lists the fields) and printed as
//! the text summary on stdout. Pure: a value in, text out.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::admin::AdminSummary;
use super::events::EventReport;
use super::options::{Options, StopAfter};
use super::stats::{Collector, Interval, Percentiles, Stats};

/// The JSON layout's version: bumped when a field changes meaning or goes away (new fields do not bump it).
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format: u32,
    pub target: TargetInfo,
    pub settings: Settings,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    /// Stopped by Ctrl-C: the figures cover the run so far.
    pub interrupted: bool,
    pub committed: u64,
    pub failed: u64,
    pub tps: f64,
    pub latency_ms: Option<Percentiles>,
    pub longest_gap: LongestGaps,
    pub connections: ConnectionFigures,
    pub errors: Vec<ErrorEntry>,
    pub scripts: Vec<ScriptSummary>,
    pub intervals: Vec<Interval>,
    pub admin: Option<AdminSummary>,
    pub events: Vec<EventReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    /// `host:port` (never the password).
    pub endpoint: String,
    pub database: String,
    pub user: String,
    pub sslmode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub workload: String,
    pub protocol: String,
    pub clients: u32,
    pub threads: usize,
    pub duration_s: Option<f64>,
    pub transactions_per_client: Option<u64>,
    pub rate: Option<f64>,
    pub connect_per_txn: bool,
    pub scale: i64,
}

/// The longest stretches in which no transaction (or no writing one) completed, and when they ended.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LongestGaps {
    pub all_ms: f64,
    pub all_ended_at_s: f64,
    pub writes_ms: f64,
    pub writes_ended_at_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionFigures {
    pub opened: u64,
    pub failed: u64,
    pub connect_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    /// The SQLSTATE, or `connect`, `closed`, `client`, `script` for failures without one.
    pub code: String,
    pub count: u64,
    pub example: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScriptSummary {
    pub name: String,
    pub weight: u32,
    pub writes: bool,
    pub committed: u64,
    pub failed: u64,
    pub tps: f64,
    pub latency_ms: Option<Percentiles>,
}

/// How the run went, besides its counts.
pub struct RunFacts {
    pub scale: i64,
    pub started_unix_ms: u64,
    pub elapsed: Duration,
    pub interrupted: bool,
}

impl Summary {
    pub fn new(
        options: &Options,
        facts: RunFacts,
        collector: &Collector,
        stats: &Stats,
        admin: Option<AdminSummary>,
        events: Vec<EventReport>,
    ) -> Summary {
        let totals = &collector.totals;
        let seconds = facts.elapsed.as_secs_f64();
        let per_second = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        let [(all, all_at), (writes, writes_at)] = stats.longest_gaps();
        Summary {
            format: FORMAT,
            target: TargetInfo {
                endpoint: options.target.to_string(),
                database: options.target.database().to_owned(),
                user: options.target.user().to_owned(),
                sslmode: options.target.mode().as_str().to_owned(),
            },
            settings: Settings {
                workload: options.workload.name.clone(),
                protocol: options.protocol.as_str().to_owned(),
                clients: options.clients,
                threads: options.threads,
                duration_s: match options.stop {
                    StopAfter::Duration(d) => Some(d.as_secs_f64()),
                    StopAfter::Transactions(_) => None,
                },
                transactions_per_client: match options.stop {
                    StopAfter::Transactions(n) => Some(n),
                    StopAfter::Duration(_) => None,
                },
                rate: options.rate,
                connect_per_txn: options.connect_per_txn,
                scale: facts.scale,
            },
            started_unix_ms: facts.started_unix_ms,
            elapsed_s: seconds,
            interrupted: facts.interrupted,
            committed: totals.committed,
            failed: totals.failed,
            tps: per_second(totals.committed),
            latency_ms: Percentiles::of(&totals.latency),
            longest_gap: LongestGaps {
                all_ms: all * 1000.0,
                all_ended_at_s: all_at,
                writes_ms: writes * 1000.0,
                writes_ended_at_s: writes_at,
            },
            connections: ConnectionFigures {
                opened: totals.connects,
                failed: totals.connect_failures,
                connect_ms: Percentiles::of(&totals.connect_latency),
            },
            errors: totals
                .errors
                .iter()
                .map(|(code, tally)| ErrorEntry {
                    code: code.clone(),
                    count: tally.count,
                    example: tally.example.clone(),
                })
                .collect(),
            scripts: options
                .workload
                .scripts
                .iter()
                .zip(&totals.scripts)
                .map(|((script, weight), tally)| ScriptSummary {
                    name: script.name.clone(),
                    weight: *weight,
                    writes: script.writes,
                    committed: tally.committed,
                    failed: tally.failed,
                    tps: per_second(tally.committed),
                    latency_ms: Percentiles::of(&tally.latency),
                })
                .collect(),
            intervals: collector.intervals.clone(),
            admin,
            events,
        }
    }

    /// The text summary printed at the end of a run.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let length = match (s.duration_s, s.transactions_per_client) {
            (_, Some(n)) => format!("{n} transactions per client"),
            (Some(d), None) => format!("{d} s"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "pgsplit bench: {} over the {} protocol{}, {} clients on {} threads, {length}{}, against {} (database {}, \
             sslmode {})",
            s.workload,
            s.protocol,
            if s.connect_per_txn {
                " (a connection per transaction)"
            } else {
                ""
            },
            s.clients,
            s.threads,
            s.rate.map_or(String::new(), |r| format!(" at {r} tps")),
            self.target.endpoint,
            self.target.database,
            self.target.sslmode,
        );
        if self.interrupted {
            let _ = writeln!(out, "interrupted:     the figures cover the run until Ctrl-C");
        }
        let _ = writeln!(out, "elapsed:         {:.2} s", self.elapsed_s);
        let _ = writeln!(
            out,
            "transactions:    {} committed, {} failed",
            thousands(self.committed),
            thousands(self.failed)
        );
        let _ = writeln!(out, "tps:             {:.1}", self.tps);
        let _ = writeln!(out, "latency ms:      {}", percentiles(self.latency_ms));
        let c = &self.connections;
        let _ = writeln!(
            out,
            "connections:     {} opened, {} failed; connect ms {}",
            thousands(c.opened),
            thousands(c.failed),
            percentiles(c.connect_ms)
        );
        let g = &self.longest_gap;
        let _ = write!(
            out,
            "longest gap:     {:.1} ms with no transaction completing (ended at {:.2} s)",
            g.all_ms, g.all_ended_at_s
        );
        if self.scripts.iter().any(|s| s.writes) {
            let _ = write!(
                out,
                "; {:.1} ms with no write (ended at {:.2} s)",
                g.writes_ms, g.writes_ended_at_s
            );
        }
        out.push('\n');
        if self.scripts.len() > 1 {
            let _ = writeln!(out, "scripts:");
            for script in &self.scripts {
                let _ = writeln!(
                    out,
                    "  {:<8} weight {:>3}  {:>10.1} tps  {} failed  latency ms {}",
                    script.name,
                    script.weight,
                    script.tps,
                    thousands(script.failed),
                    percentiles(script.latency_ms)
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors:          none");
        } else {
            let _ = writeln!(out, "errors:");
            for error in &self.errors {
                let _ = writeln!(
                    out,
                    "  {:<8} {:>9}  {}",
                    error.code,
                    thousands(error.count),
                    error.example
                );
            }
        }
        if let Some(admin) = &self.admin {
            admin_text(&mut out, admin);
        }
        if !self.events.is_empty() {
            let _ = writeln!(out, "events:");
            for event in &self.events {
                event_text(&mut out, event);
            }
        }
        out
    }
}

fn admin_text(out: &mut String, admin: &AdminSummary) {
    let _ = writeln!(
        out,
        "pgsplit ({}): {} units of work routed during the run",
        admin.address,
        thousands(admin.units)
    );
    let _ = writeln!(
        out,
        "  {:<12} {:<18} {:>10} {:>7}  {:<26} {:>12}  most waiting",
        "instance", "role", "units", "share", "largest lag", "pool waits"
    );
    for i in &admin.instances {
        let role = if i.role == i.role_at_start {
            i.role.clone()
        } else {
            format!("{} -> {}", i.role_at_start, i.role)
        };
        let lag = match (i.max_lag_bytes, i.max_lag_seconds) {
            (Some(bytes), Some(seconds)) => format!("{} B, {seconds:.3} s", thousands(bytes)),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<18} {:>10} {:>6.1}%  {:<26} {:>12}  {}",
            i.name,
            role,
            thousands(i.units),
            i.share * 100.0,
            lag,
            thousands(i.waits),
            i.max_waiting
        );
    }
    let ryw = admin.read_your_writes;
    let _ = writeln!(
        out,
        "  read-your-writes reads: {} on a follower known to be caught up, {} after asking a follower, {} on the \
         leader",
        thousands(ryw.caught_up),
        thousands(ryw.confirmed),
        thousands(ryw.on_leader)
    );
    if admin.failed_polls > 0 {
        let _ = writeln!(
            out,
            "  {} of {} looks at /status failed; last: {}",
            admin.failed_polls,
            admin.polls,
            admin.last_poll_error.as_deref().unwrap_or("?")
        );
    }
}

fn event_text(out: &mut String, event: &EventReport) {
    let _ = write!(
        out,
        "  at {:.2} s  {}: {} after {:.2} s",
        event.started_at_s,
        event.action,
        event.outcome,
        event.finished_at_s - event.started_at_s
    );
    if let Some(ms) = event.proxy_write_pause_ms {
        let _ = write!(out, "; pgsplit held writes {ms} ms");
    }
    let _ = writeln!(out);
    if let Some(detail) = &event.detail {
        let _ = writeln!(out, "    {detail}");
    }
    if let Some(c) = &event.clients {
        let _ = writeln!(
            out,
            "    clients saw: longest gap without a write {:.1} ms, without any transaction {:.1} ms; max latency \
             {:.1} ms (writes {:.1} ms); {} failed, {} committed",
            c.longest_write_gap_ms,
            c.longest_gap_ms,
            c.max_latency_ms,
            c.max_write_latency_ms,
            thousands(c.failed),
            thousands(c.committed)
        );
    }
}

fn percentiles(p: Option<Percentiles>) -> String {
    match p {
        None => "-".into(),
        Some(p) => format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            p.p50, p.p90, p.p99, p.p99_9, p.max, p.mean
        ),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
