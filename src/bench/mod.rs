//! `pgsplit bench` (SPEC §7): a load test against any PostgreSQL endpoint — pgsplit's main or pool endpoint,
//! PgBouncer, a server. This file runs one from start to end: validate the command line, check the endpoint with
//! one connection, open the clients' connections, start the clock, tick the collector and the live view once a
//! second, watch pgsplit's admin API and carry out events when asked, stop at the deadline, the transaction count
//! or Ctrl-C, then print the summary and write the files. Exit codes: 0 ok, 1 bad input (flags, URL, script,
//! an endpoint that cannot be reached or refuses the login), 2 a run that went wrong once started.
//!
//! Needs nothing from the proxy's own code paths but the admin client.

mod admin;
mod driver;
mod events;
mod expr;
mod init;
mod live;
mod options;
mod report;
mod script;
mod stats;
mod summary;
mod svg;
mod target;
mod workload;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_postgres::SimpleQueryMessage;

use admin::AdminWatch;
use driver::{Connection, LoadClient, Plan, Workers};
use live::Live;
use options::{Options, Request, StopAfter};
use stats::{Collector, Stats};
use summary::{RunFacts, Summary};
use target::describe;

pub use options::BenchArgs;
pub use script::ScriptError;

/// How often the collector, the live view and the report's time series move on.
const TICK: Duration = Duration::from_secs(1);
/// After the deadline, transactions under way get this long to finish before they are cut off uncounted.
const GRACE: Duration = Duration::from_secs(5);
/// Logins in flight at once while the clients connect (a server or proxy takes a burst of handshakes in turn).
const CONNECT_CONCURRENCY: usize = 64;
/// Open files beyond one per client: the runtime, the admin API, stdio, the report.
const SPARE_FILES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad flags, URL or workload.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The endpoint could not be reached, or refused the login, before the run.
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// Something went wrong once the run was under way.
    #[error("{0}")]
    Runtime(String),
}

impl BenchError {
    fn exit_code(&self) -> u8 {
        match self {
            BenchError::Runtime(_) => 2,
            _ => 1,
        }
    }
}

/// `pgsplit bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    let outcome = args.validate().and_then(|request| match request {
        Request::Init { target, scale } => runtime()?
            .block_on(init::run(&target, scale))
            .map(|()| ExitCode::SUCCESS),
        Request::Run(options) => {
            raise_open_files(options.clients)?;
            runtime()?.block_on(run(*options))
        }
    });
    outcome.unwrap_or_else(|error| {
        eprintln!("pgsplit bench: {error}");
        ExitCode::from(error.exit_code())
    })
}

/// The main thread's runtime: the checks before the run, the clock, the live view, the admin API, events. The
/// clients have threads of their own (`driver::Workers`).
fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| BenchError::Runtime(format!("cannot start the runtime: {error}")))
}

/// Every client holds a socket: raise the soft limit on open files towards the hard one when the default is short.
fn raise_open_files(clients: u32) -> Result<(), BenchError> {
    let needed = u64::from(clients) + SPARE_FILES;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(BenchError::Usage(format!(
            "{clients} clients need about {needed} open files and the hard limit is {} (raise it: ulimit -Hn)",
            limit.rlim_max
        )));
    }
    limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY {
        needed
    } else {
        limit.rlim_max
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(BenchError::Usage(format!(
            "{clients} clients need about {needed} open files; raising the limit failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// One connection before anything else: the endpoint answers and takes the login, and the scale is known.
async fn preflight(options: &Options) -> Result<i64, BenchError> {
    let client = options.target.connect().await.map_err(|error| BenchError::Connect {
        target: options.target.to_string(),
        reason: describe(&error),
    })?;
    if let Some(scale) = options.scale {
        return Ok(i64::from(scale));
    }
    if !options.workload.on_pgbench_tables {
        return Ok(1);
    }
    let missing = |why: String| {
        BenchError::Usage(format!(
            "the {} workload runs on pgbench's tables, and {why}: create them with --init [--scale N]",
            options.workload.name
        ))
    };
    let rows = client
        .simple_query("SELECT count(*) FROM pgbench_branches")
        .await
        .map_err(|error| missing(describe(&error)))?;
    let count = rows.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|n| n.parse::<i64>().ok()),
        _ => None,
    });
    match count {
        Some(scale) if scale > 0 => Ok(scale),
        _ => Err(missing("pgbench_branches is empty".into())),
    }
}

/// Every client's connection, opened on its client's thread before the clock starts; any failure ends the run
/// before it begins.
async fn connect_all(
    plan: &Arc<Plan>,
    stats: &Arc<Stats>,
    workers: &Workers,
    clients: u32,
) -> Result<Vec<Connection>, BenchError> {
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for id in 0..clients as usize {
        let (plan, stats, limit) = (plan.clone(), stats.clone(), limit.clone());
        tasks.spawn_on(
            async move {
                let _permit = limit.acquire_owned().await;
                (id, driver::connect(&plan, &stats, 0).await.map_err(|e| describe(&e)))
            },
            workers.handle(id),
        );
    }
    let mut connections: Vec<Option<Connection>> = (0..clients).map(|_| None).collect();
    let (mut failed, mut first) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, Ok(connection))) => connections[id] = Some(connection),
            Ok((_, Err(reason))) => {
                failed += 1;
                first.get_or_insert(reason);
            }
            Err(error) => {
                failed += 1;
                first.get_or_insert(error.to_string());
            }
        }
    }
    if failed > 0 {
        return Err(BenchError::Runtime(format!(
            "{failed} of {clients} clients could not connect; the first said: {}",
            first.unwrap_or_default()
        )));
    }
    Ok(connections.into_iter().flatten().collect())
}

async fn run(mut options: Options) -> Result<ExitCode, BenchError> {
    let scale = preflight(&options).await?;
    let scripts = options.workload.scripts.len();
    let plan = Arc::new(Plan {
        target: options.target.clone(),
        workload: options.workload.clone(),
        protocol: options.protocol,
        connect_per_txn: options.connect_per_txn,
        rate_per_client: options.rate.map(|rate| rate / f64::from(options.clients)),
        transactions: match options.stop {
            StopAfter::Transactions(n) => Some(n),
            StopAfter::Duration(_) => None,
        },
        scale,
    });
    // The first look at pgsplit is the baseline of its figures (connecting the clients routes no work), and a
    // wrong --admin is found before thousands of connections are opened.
    let admin = match options.admin.take() {
        Some(client) => {
            let addr = client.addr().to_owned();
            let watch = AdminWatch::start(client).await.map_err(|error| {
                BenchError::Usage(format!("--admin {addr}: {}", error.to_string().replace('\n', " ")))
            })?;
            Some(Arc::new(watch))
        }
        None => None,
    };
    let mut live = Live::new(options.stop, options.clients, options.progress);
    let workers = Workers::start(options.threads)
        .map_err(|error| BenchError::Runtime(format!("cannot start the client threads: {error}")))?;
    let setup = Arc::new(Stats::new(Instant::now(), 1, scripts));
    let connections: Vec<Option<Connection>> = if options.connect_per_txn {
        (0..options.clients).map(|_| None).collect()
    } else {
        connect_all(&plan, &setup, &workers, options.clients)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    };

    let started = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let shards = (options.threads * 4).clamp(1, 256).min(options.clients as usize);
    let stats = Arc::new(Stats::new(started, shards, scripts));
    let deadline = match options.stop {
        StopAfter::Duration(d) => Some(started + d),
        StopAfter::Transactions(_) => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for (id, connection) in connections.into_iter().enumerate() {
        let client = LoadClient {
            shard: id % shards,
            plan: plan.clone(),
            stats: stats.clone(),
            stop: stop_rx.clone(),
            deadline,
            connection,
            rng: rand::make_rng::<SmallRng>(),
        };
        clients.spawn_on(client.run(u32::try_from(id).unwrap_or(u32::MAX)), workers.handle(id));
    }
    let poller = admin.clone().map(|watch| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(admin::POLL) => watch.poll(started.elapsed().as_secs_f64()).await,
                    _ = driver::stopped(&mut stop) => return,
                }
            }
        })
    });
    let reports = Arc::new(Mutex::new(Vec::new()));
    let events_task = match (&admin, options.events.is_empty()) {
        (Some(watch), false) => Some(tokio::spawn(events::run(
            std::mem::take(&mut options.events),
            watch.clone(),
            stats.clone(),
            reports.clone(),
            stop_rx.clone(),
        ))),
        _ => None,
    };

    let mut collector = Collector::new(scripts);
    setup.drain(&mut collector.totals);
    let mut ticker = tokio::time::interval_at((started + TICK).into(), TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let give_up = deadline.map(|deadline| deadline + GRACE);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let elapsed = started.elapsed();
                collector.tick(&stats, elapsed);
                let tps = collector.intervals.last().map_or(0.0, |i| i.tps);
                live.update(elapsed, collector.current(), &collector.totals, tps);
            }
            joined = clients.join_next() => if joined.is_none() { break },
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
            _ = tokio::time::sleep_until(give_up.unwrap_or(started).into()), if give_up.is_some() => break,
        }
    }
    let _ = stop_tx.send(true);
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    drop(workers);
    let ended = Instant::now();
    let elapsed = ended.duration_since(started);
    collector.tick(&stats, elapsed);
    live.finish();
    if let Some(task) = events_task
        && tokio::time::timeout(GRACE, task).await.is_err()
    {
        eprintln!("pgsplit bench: an event was still waiting on the admin API when the run ended");
    }
    let events = std::mem::take(&mut *events::lock(&reports));
    let mut events = events;
    if let Some(last) = events.last_mut() {
        last.clients = Some(stats.take_window(ended));
    }
    if let Some(poller) = poller {
        poller.abort();
    }
    let admin = match &admin {
        Some(watch) => Some(watch.finish(elapsed.as_secs_f64()).await),
        None => None,
    };
    let facts = RunFacts {
        scale,
        started_unix_ms,
        elapsed,
        interrupted,
    };
    let summary = Summary::new(&options, facts, &collector, &stats, admin, events);
    print!("{}", summary.text());
    Ok(finish(&options, &summary))
}

/// Writes the files asked for; exit 2 if one cannot be written, an event did not happen as asked, or not one
/// transaction succeeded in a run that tried.
fn finish(options: &Options, summary: &Summary) -> ExitCode {
    let mut problems = Vec::new();
    if let Some(path) = &options.json
        && let Err(error) = report::write_json(summary, path)
    {
        problems.push(error);
    }
    if let Some(path) = &options.report
        && let Err(error) = report::write_html(summary, path)
    {
        problems.push(error);
    }
    for event in summary.events.iter().filter(|e| e.failed()) {
        problems.push(format!(
            "the event \"{}\" ended {}: {}",
            event.action,
            event.outcome,
            event.detail.as_deref().unwrap_or("no detail")
        ));
    }
    if summary.committed == 0 && summary.failed > 0 && !summary.interrupted {
        problems.push(format!("no transaction succeeded ({} failed)", summary.failed));
    }
    for problem in &problems {
        eprintln!("pgsplit bench: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
