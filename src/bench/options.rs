//! `pgsplit bench`'s command line (clap) and its validation into [`Options`]: every flag checked, the script
//! loaded and the target URL parsed before anything connects, so bad input fails in one line with exit 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::BenchError;
use super::events::Event;
use super::target::Target;
use super::workload::Workload;
use crate::cli::AdminClient;

/// Most clients one run may open (SPEC §7; each is a connection and a task).
pub const MAX_CLIENTS: u32 = 10_000;
/// The run's length when neither `-T` nor `-t` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `pgsplit bench --url URL …`: load test any PostgreSQL endpoint (pgsplit, a pool endpoint, PgBouncer, a server).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  pgsplit bench --url postgres://app:app@127.0.0.1:6432/app --init --scale 10\n  \
    pgsplit bench --url postgres://app:app@127.0.0.1:6432/app -c 16 -j 2 -T 30s --admin 127.0.0.1:9930 \
    --report run.html\n  pgsplit bench --url … --workload mixed:90 --promote-at 10s f1 --admin 127.0.0.1:9930 \
    --json run.json\n\ndocs/bench.md describes the output and the JSON fields."
)]
pub struct BenchArgs {
    /// Where to connect: postgres://user:password@host:port/db?sslmode=… (disable, prefer, require, verify-ca,
    /// verify-full; sslrootcert=FILE for the verify modes)
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Concurrent clients, each with its own connection
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS as i64))]
    pub clients: u32,
    /// Threads running the clients [default: the number of CPUs, at most one per client]
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// How long to run (`30s`, `2min`; a bare number is seconds) [default: 10s]
    #[arg(short = 'T', long, value_parser = parse_run_duration, value_name = "DURATION", conflicts_with = "transactions")]
    pub time: Option<Duration>,
    /// Transactions each client runs, instead of a duration
    #[arg(short = 't', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub transactions: Option<u64>,
    /// select (pgbench -S), tpcb (pgbench's TPC-B-like), mixed:N (N% select, the rest tpcb), or a script FILE
    #[arg(short = 'w', long, default_value = "select", value_name = "WORKLOAD")]
    pub workload: String,
    /// How statements are sent: simple (one Query message), extended (unnamed statements), prepared (named
    /// statements, prepared once per connection)
    #[arg(short = 'M', long, value_enum, default_value_t = Protocol::Simple)]
    pub protocol: Protocol,
    /// Open a new connection for every transaction (connection storms; the expensive case with TLS)
    #[arg(short = 'C', long)]
    pub connect_per_txn: bool,
    /// Open loop: start this many transactions per second in all, on a schedule; latency counts from the
    /// scheduled start, so a stalled endpoint shows up as latency instead of as fewer transactions
    #[arg(short = 'R', long, value_name = "TPS", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Create pgbench's tables (pgbench_accounts, …) at --scale, then exit; like `pgbench -i`
    #[arg(short = 'i', long)]
    pub init: bool,
    /// Scale for --init, and the :scale of scripts [default for the built-in workloads: read from
    /// pgbench_branches]
    #[arg(short = 's', long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub scale: Option<u32>,
    /// pgsplit's admin API: which instance served what, replication lag, read-your-writes and pool waits, events
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// Bearer token for the admin API's mutating calls (events)
    #[arg(long, env = "PGSPLIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Run an orchestrated changeover to INSTANCE this far into the run (needs --admin); the same as
    /// `--event AT promote:INSTANCE`
    #[arg(long, num_args = 2, value_names = ["AT", "INSTANCE"])]
    pub promote_at: Vec<String>,
    /// An admin action this far into the run (needs --admin): promote:INSTANCE, pause[:writes|:reads], resume,
    /// reload. May be given several times
    #[arg(long, num_args = 2, value_names = ["AT", "ACTION"])]
    pub event: Vec<String>,
    /// Write everything measured as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML page with the run plotted over time to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print a progress line this often (stderr); without it the live line shows only on a terminal
    #[arg(short = 'P', long, value_parser = parse_run_duration, value_name = "DURATION")]
    pub progress: Option<Duration>,
    /// Not for bench, which reads no config file: stands in for the global `-c/--config`, so that bench's `-c` can
    /// be the client count as in pgbench (clap leaves a global argument out of a subcommand that has one of the same
    /// name). It also receives the global's default, so it cannot tell a given value from none: it is ignored.
    #[arg(id = "config", long = "config", hide = true)]
    pub _config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Simple,
    Extended,
    Prepared,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        }
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    Duration(Duration),
    /// Transactions per client.
    Transactions(u64),
}

/// A validated run.
pub struct Options {
    pub target: Target,
    pub clients: u32,
    pub threads: usize,
    pub stop: StopAfter,
    pub workload: Workload,
    pub protocol: Protocol,
    pub connect_per_txn: bool,
    pub rate: Option<f64>,
    /// `--scale` as given; the built-in workloads read it from the database when it is not.
    pub scale: Option<u32>,
    pub admin: Option<AdminClient>,
    pub events: Vec<Event>,
    pub json: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub progress: Option<Duration>,
}

/// What the command line asks for: a run, or creating the tables.
pub enum Request {
    Run(Box<Options>),
    Init { target: Box<Target>, scale: u32 },
}

impl BenchArgs {
    pub fn validate(self) -> Result<Request, BenchError> {
        let target = Target::parse(&self.url)?;
        if self.init {
            return Ok(Request::Init {
                target: Box::new(target),
                scale: self.scale.unwrap_or(1),
            });
        }
        let workload = Workload::parse(&self.workload)?;
        let stop = match (self.time, self.transactions) {
            (_, Some(n)) => StopAfter::Transactions(n),
            (Some(time), None) => StopAfter::Duration(time),
            (None, None) => StopAfter::Duration(DEFAULT_DURATION),
        };
        let mut events = Vec::new();
        for pair in self.promote_at.chunks(2) {
            events.push(Event::parse(&pair[0], &format!("promote:{}", pair[1]))?);
        }
        for pair in self.event.chunks(2) {
            events.push(Event::parse(&pair[0], &pair[1])?);
        }
        events.sort_by_key(|event| event.at);
        if !events.is_empty() && self.admin.is_none() {
            return Err(BenchError::Usage(
                "events (--promote-at, --event) act through pgsplit's admin API: give --admin HOST:PORT".into(),
            ));
        }
        if let (StopAfter::Duration(run), Some(late)) = (stop, events.iter().find(|e| e.at >= stop_duration(stop))) {
            return Err(BenchError::Usage(format!(
                "the event at {:?} ({}) would come after the run ends ({run:?})",
                late.at, late.action
            )));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.map_or(cpus, |t| t as usize).min(self.clients as usize);
        Ok(Request::Run(Box::new(Options {
            target,
            clients: self.clients,
            threads,
            stop,
            workload,
            protocol: self.protocol,
            connect_per_txn: self.connect_per_txn,
            rate: self.rate,
            scale: self.scale,
            admin: self.admin.map(|addr| AdminClient::new(addr, self.admin_token)),
            events,
            json: self.json,
            report: self.report,
            progress: self.progress,
        })))
    }
}

/// The run's length, or `Duration::MAX` when it ends by transaction count.
fn stop_duration(stop: StopAfter) -> Duration {
    match stop {
        StopAfter::Duration(d) => d,
        StopAfter::Transactions(_) => Duration::MAX,
    }
}

/// A duration as proxy.toml writes them (`500ms`, `30s`, `2min`), or a bare number of seconds as pgbench takes it.
pub fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => crate::config::parse_duration(text)?,
    };
    if duration.is_zero() {
        return Err(format!("\"{text}\" is no time at all"));
    }
    Ok(duration)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "\"{text}\" is not a positive number of transactions per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_run_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_run_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_run_duration("2min"), Ok(Duration::from_secs(120)));
        assert!(parse_run_duration("0s").is_err());
        assert!(parse_run_duration("ten").is_err());
    }

    #[test]
    fn rates_are_positive_numbers() {
        assert_eq!(parse_rate("1500.5"), Ok(1500.5));
        for bad in ["0", "-3", "inf", "NaN", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
