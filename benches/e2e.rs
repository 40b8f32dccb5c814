//! End-to-end comparison of pgsplit with PgBouncer and with no proxy at all, measured with pgbench against a real
//! local cluster (`pgsplit::demo::cluster`); the read-splitting section also runs `pgsplit bench` beside pgbench,
//! for latency percentiles and pgsplit's own per-instance counts. `cargo bench --bench e2e`; docs/benchmarks.md explains the method and
//! holds the last results.
//!
//! Within each workload the targets run back to back (direct, PgBouncer, pgsplit, then a baseline pgsplit build if one
//! is given), so ratios compare within one run on a noisy machine. Per run: tps, average latency, latency added over
//! direct at one client, the proxy's CPU time per transaction (utime+stime from /proc), failed transactions; then each
//! proxy's memory per idle client. Every child process is stopped by PID on the way out, also on error or panic.
//!
//! Environment: PGSPLIT_BENCH_SECS (8), PGSPLIT_BENCH_POOL (8), PGSPLIT_BENCH_FOLLOWERS (2),
//! PGSPLIT_BENCH_IDLE_CLIENTS (500), PGSPLIT_BENCH_SCALE (10), PGSPLIT_BENCH_BASELINE (another pgsplit binary to run
//! beside this one in transaction pooling, for an A/B comparison; none by default), PGSPLIT_BENCH_BASELINE_WORKERS (1:
//! the baseline's `proxy.workers`; set alone, the baseline is this build with that many workers, so the A/B is one
//! session thread against several), PGSPLIT_BENCH_ROUNDS (1: how many times each workload goes round its targets;
//! the ratios are then the median of the rounds' own ratios).

#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/tls.rs"]
mod tls;

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use common::env_number;
use pgsplit::demo::cluster::{ClusterOptions, LocalCluster, Toolbox, Watchdog, free_ports, unique_base_dir};
use procs::{ProxyProcess, WorkDir};
use report::{Measured, Memory, Row};

const USER: &str = "app";
const PASSWORD: &str = "app";
const DATABASE: &str = "app";
/// `(clients, threads)`: one client for latency, sixteen for throughput.
const CLIENTS: [(u32, u32); 2] = [(1, 1), (16, 2)];
/// Session pooling gives each client its own server connection, so session pools hold this many at least.
const MOST_CLIENTS: usize = 16;
/// PgBouncer's database names for the two pooling modes (both lead to the app database).
const BOUNCER_TXN_DB: &str = "app_txn";
const BOUNCER_SESSION_DB: &str = "app_session";
/// The baseline build's file name in the scratch dir (beside `pgsplit`, this build).
const BASELINE_BINARY: &str = "pgsplit-baseline";

struct Settings {
    secs: u64,
    pool: usize,
    followers: usize,
    idle_clients: usize,
    scale: u32,
    /// Another pgsplit build, compared with this one in transaction pooling.
    baseline: Option<PathBuf>,
    /// The baseline's session threads (`proxy.workers`); other than 1 without a baseline build, this build is its
    /// own baseline with that many.
    baseline_workers: usize,
    /// Rounds per workload and client count, the targets interleaved within each.
    rounds: u32,
    /// Run the TLS comparison instead (`tls.rs`).
    tls: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        Ok(Settings {
            secs: env_number("PGSPLIT_BENCH_SECS", 8)?,
            pool: env_number("PGSPLIT_BENCH_POOL", 8)?,
            followers: env_number("PGSPLIT_BENCH_FOLLOWERS", 2)?,
            idle_clients: env_number("PGSPLIT_BENCH_IDLE_CLIENTS", 500)?,
            scale: env_number("PGSPLIT_BENCH_SCALE", 10)?,
            baseline: std::env::var_os("PGSPLIT_BENCH_BASELINE").map(PathBuf::from),
            baseline_workers: env_number("PGSPLIT_BENCH_BASELINE_WORKERS", 1)?.max(1),
            rounds: env_number("PGSPLIT_BENCH_ROUNDS", 1)?.max(1),
            tls: env_number::<u32>("PGSPLIT_BENCH_TLS", 0)? != 0,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    PgBouncer,
    Pgsplit,
    /// The baseline build (`PGSPLIT_BENCH_BASELINE`).
    Baseline,
}

/// Somewhere pgbench can connect to.
struct Target {
    name: &'static str,
    kind: Kind,
    port: u16,
    database: &'static str,
    /// The proxy process whose CPU and memory are measured; `None` for direct.
    pid: Option<u32>,
}

/// The read-splitting pgsplit, with its admin API.
struct SplitTarget {
    target: Target,
    admin_port: u16,
}

struct Workload {
    title: &'static str,
    args: &'static [&'static str],
    /// Runs against the session-pooling proxies.
    session: bool,
    /// PgBouncer takes part (1.18 has no prepared statements in transaction pooling).
    pgbouncer: bool,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        title: "select-only, simple protocol (`pgbench -S -M simple`), transaction pooling",
        args: &["-S", "-M", "simple"],
        session: false,
        pgbouncer: true,
    },
    Workload {
        title: "select-only, extended protocol (`pgbench -S -M extended`), transaction pooling",
        args: &["-S", "-M", "extended"],
        session: false,
        pgbouncer: true,
    },
    Workload {
        title: "select-only, prepared statements (`pgbench -S -M prepared`), transaction pooling",
        args: &["-S", "-M", "prepared"],
        session: false,
        pgbouncer: false,
    },
    Workload {
        title: "select-only, prepared statements (`pgbench -S -M prepared`), session pooling",
        args: &["-S", "-M", "prepared"],
        session: true,
        pgbouncer: true,
    },
    Workload {
        title: "tpcb-like read/write (`pgbench -M simple`), transaction pooling",
        args: &["-M", "simple"],
        session: false,
        pgbouncer: true,
    },
];

fn main() -> ExitCode {
    common::bench_main("e2e", run)
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let tools = Toolbox::locate()?;
    let work = WorkDir::create(&tools)?;
    // Other builds in the same target dir may replace the binary while the bench runs: freeze the one cargo built.
    let pgsplit = work.path("pgsplit");
    std::fs::copy(env!("CARGO_BIN_EXE_pgsplit"), &pgsplit).context("copying the pgsplit binary")?;
    if let Some(baseline) = &settings.baseline {
        std::fs::copy(baseline, work.path(BASELINE_BINARY))
            .with_context(|| format!("copying the baseline binary {}", baseline.display()))?;
    }
    if settings.tls {
        return tls::run(&settings, &tools, &work);
    }
    let base_dir = unique_base_dir()?;
    // Declared before the cluster, so dropped after it: it finds nothing left unless the bench died first.
    let _watchdog = Watchdog::spawn(&tools, &base_dir)?;
    eprintln!("e2e: starting a leader and {} followers", settings.followers);
    let mut cluster = LocalCluster::start(ClusterOptions {
        followers: settings.followers,
        base_dir: Some(base_dir),
        ..ClusterOptions::default()
    })?;
    let outcome = with_cluster(&cluster, &tools, &work, &settings);
    let stopped = cluster.stop();
    outcome?;
    stopped.context("stopping the cluster")
}

fn with_cluster(cluster: &LocalCluster, tools: &Toolbox, work: &WorkDir, settings: &Settings) -> Result<()> {
    pgbench_init(cluster, settings.scale)?;
    let followers: Vec<u16> = cluster.followers().iter().map(|f| f.port).collect();
    let mut proxies = Proxies::start(work, tools, cluster.leader().port, &followers, settings)?;
    print_header(cluster, settings, proxies.session_pool)?;
    let (txn_targets, session_targets) = (proxies.targets(false), proxies.targets(true));
    let split_target = proxies.split_target();
    let proxy_targets = || {
        txn_targets
            .iter()
            .chain(&session_targets)
            .chain(std::iter::once(&split_target.target))
            .filter(|t| t.pid.is_some())
    };
    // Warm-up: every pool opens its server connections before anything is measured.
    for target in proxy_targets() {
        let args = pgbench_args(&["-S"], MOST_CLIENTS as u32, 2, 1);
        procs::pgbench(tools, (target.port, target.database), (USER, PASSWORD), &args, &[])
            .with_context(|| format!("warm-up through {}", target.name))?;
    }
    let mut memory = Vec::new();
    // One PgBouncer process serves both pooling modes: measure it once.
    for target in proxy_targets().filter(|t| !(t.kind == Kind::PgBouncer && t.database == BOUNCER_SESSION_DB)) {
        eprintln!("e2e: {} idle clients on {}", settings.idle_clients, target.name);
        memory.push((target.name, idle_memory(target, settings.idle_clients, None)));
    }

    let (mut ratios, mut baseline_ratios) = (Vec::new(), Vec::new());
    for workload in &WORKLOADS {
        let targets = if workload.session {
            &session_targets
        } else {
            &txn_targets
        };
        let mut rows = Vec::new();
        for (clients, threads) in CLIENTS {
            for round in 1..=settings.rounds {
                for target in targets
                    .iter()
                    .filter(|t| workload.pgbouncer || t.kind != Kind::PgBouncer)
                {
                    eprintln!("e2e: {} | {} | {clients} clients", workload.args.join(" "), target.name);
                    let args = pgbench_args(workload.args, clients, threads, settings.secs);
                    let outcome = measure(tools, target, &args, &[]);
                    rows.push(Row {
                        target: target.name,
                        kind: target.kind,
                        clients,
                        round,
                        outcome,
                    });
                }
            }
        }
        report::print_table(workload, &rows);
        ratios.extend(report::cpu_ratios(workload, &rows, Kind::PgBouncer));
        baseline_ratios.extend(report::cpu_ratios(workload, &rows, Kind::Baseline));
    }
    report::print_ratios("pgbouncer", &ratios, settings.rounds);
    if proxies.pgsplit_baseline.is_some() {
        report::print_ratios("baseline", &baseline_ratios, settings.rounds);
    }
    split_reads(cluster, tools, work, &split_target, settings)?;
    report::print_memory(&memory);
    proxies.stop_all();
    Ok(())
}

/// The proxies under test: pgsplit once per pooling mode, one PgBouncer (if installed) with a database per mode.
struct Proxies {
    leader_port: u16,
    session_pool: usize,
    /// `[transaction, session]` listen ports; then PgBouncer's; then the read-splitting pgsplit's; then the
    /// baseline's.
    ports: [u16; 5],
    pgsplit_txn: ProxyProcess,
    pgsplit_session: ProxyProcess,
    /// Transaction pooling with the followers as its read pool.
    pgsplit_split: ProxyProcess,
    /// Its admin API's port (`pgsplit bench --admin`).
    split_admin: u16,
    /// Another build in transaction pooling (`PGSPLIT_BENCH_BASELINE`).
    pgsplit_baseline: Option<ProxyProcess>,
    pgbouncer: Option<ProxyProcess>,
}

impl Proxies {
    fn start(
        work: &WorkDir,
        tools: &Toolbox,
        leader_port: u16,
        followers: &[u16],
        settings: &Settings,
    ) -> Result<Proxies> {
        let session_pool = settings.pool.max(MOST_CLIENTS);
        let p = free_ports(9)?;
        let transaction = PgsplitSpec {
            label: "transaction",
            binary: "pgsplit",
            mode: "transaction",
            ports: [p[0], p[1]],
            leader_port,
            pool: settings.pool,
            followers: &[],
            workers: 1,
            extra: "",
        };
        let pgsplit_txn = start_pgsplit(work, tools, &transaction)?;
        let session = PgsplitSpec {
            label: "session",
            mode: "session",
            ports: [p[2], p[3]],
            pool: session_pool,
            ..transaction
        };
        let pgsplit_session = start_pgsplit(work, tools, &session)?;
        let split = PgsplitSpec {
            label: "split",
            ports: [p[5], p[6]],
            followers,
            ..transaction
        };
        let pgsplit_split = start_pgsplit(work, tools, &split)?;
        let baseline = PgsplitSpec {
            label: "baseline",
            binary: if settings.baseline.is_some() {
                BASELINE_BINARY
            } else {
                "pgsplit"
            },
            ports: [p[7], p[8]],
            workers: settings.baseline_workers,
            ..transaction
        };
        let pgsplit_baseline = match settings.baseline.is_some() || settings.baseline_workers != 1 {
            true => Some(start_pgsplit(work, tools, &baseline)?),
            false => None,
        };
        let pgbouncer = match pgbouncer_binary() {
            Some(bin) => {
                let pools = [settings.pool, session_pool];
                Some(start_pgbouncer(
                    work,
                    tools,
                    &bin,
                    (p[4], leader_port),
                    pools,
                    (PASSWORD, ""),
                )?)
            }
            None => {
                println!("PgBouncer not found (/usr/sbin/pgbouncer, PATH): its rows are skipped");
                None
            }
        };
        Ok(Proxies {
            leader_port,
            session_pool,
            ports: [p[0], p[2], p[4], p[5], p[7]],
            pgsplit_txn,
            pgsplit_session,
            pgsplit_split,
            split_admin: p[6],
            pgsplit_baseline,
            pgbouncer,
        })
    }

    /// Direct, PgBouncer, pgsplit (and the baseline in transaction pooling): for transaction pooling, or for session
    /// pooling.
    fn targets(&self, session: bool) -> Vec<Target> {
        let direct = Target {
            name: "direct",
            kind: Kind::Direct,
            port: self.leader_port,
            database: DATABASE,
            pid: None,
        };
        let bouncer = self.pgbouncer.as_ref().map(|p| Target {
            name: if session { "pgbouncer (session)" } else { "pgbouncer" },
            kind: Kind::PgBouncer,
            port: self.ports[2],
            database: if session { BOUNCER_SESSION_DB } else { BOUNCER_TXN_DB },
            pid: Some(p.pid()),
        });
        let (pgsplit, port) = if session {
            (&self.pgsplit_session, self.ports[1])
        } else {
            (&self.pgsplit_txn, self.ports[0])
        };
        let split = Target {
            name: if session { "pgsplit (session)" } else { "pgsplit" },
            kind: Kind::Pgsplit,
            port,
            database: DATABASE,
            pid: Some(pgsplit.pid()),
        };
        let baseline = self.pgsplit_baseline.as_ref().filter(|_| !session).map(|p| Target {
            name: "pgsplit (baseline)",
            kind: Kind::Baseline,
            port: self.ports[4],
            database: DATABASE,
            pid: Some(p.pid()),
        });
        [Some(direct), bouncer, Some(split), baseline]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The read-splitting pgsplit.
    fn split_target(&self) -> SplitTarget {
        SplitTarget {
            target: Target {
                name: "pgsplit (reads split)",
                kind: Kind::Pgsplit,
                port: self.ports[3],
                database: DATABASE,
                pid: Some(self.pgsplit_split.pid()),
            },
            admin_port: self.split_admin,
        }
    }

    /// Stops each proxy by SIGTERM and reports how it went, with the warnings and errors it logged.
    fn stop_all(&mut self) {
        println!();
        let mut all = vec![
            &mut self.pgsplit_txn,
            &mut self.pgsplit_session,
            &mut self.pgsplit_split,
        ];
        all.extend(self.pgsplit_baseline.as_mut());
        all.extend(self.pgbouncer.as_mut());
        for proxy in all {
            let problems = problem_lines(&proxy.log);
            match proxy.stop() {
                Ok((status, took)) => println!("{} stopped on SIGTERM within {took:.0?} ({status})", proxy.name),
                Err(e) => println!("{}: {e:#}", proxy.name),
            }
            if !problems.is_empty() {
                let first = problems[..problems.len().min(5)].join("\n");
                println!(
                    "{} logged {} warnings/errors, first ones:\n{first}",
                    proxy.name,
                    problems.len()
                );
            }
        }
    }
}

/// `pgbench -S` and `pgsplit bench --workload select` through the read-splitting pgsplit, one after the other:
/// throughput, latency, CPU per transaction, and which instance ran the reads — for pgbench each instance's own
/// count of committed transactions in the database (before and after), for bench pgsplit's own count of the units
/// it routed there (its admin API, `--admin`).
fn split_reads(
    cluster: &LocalCluster,
    tools: &Toolbox,
    work: &WorkDir,
    split: &SplitTarget,
    settings: &Settings,
) -> Result<()> {
    let target = &split.target;
    println!("\n### select-only with reads split over the followers (`pgbench -S -M simple`), transaction pooling\n");
    let names: Vec<&str> = cluster.instances().map(|i| i.name.as_str()).collect();
    println!(
        "| clients | load from | tps | avg latency ms | p50 / p99 ms | proxy CPU µs/txn | failed txns | {} |",
        names.join(" share | ") + " share"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|{}", "---:|".repeat(names.len()));
    let commits = || -> Result<Vec<u64>> {
        let sql = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{DATABASE}'");
        cluster
            .instances()
            .map(|i| Ok(cluster.psql(i, &sql)?.trim().parse()?))
            .collect()
    };
    let percent = |part: f64, total: f64| format!("{:.1}%", part * 100.0 / total.max(1.0));
    for (clients, threads) in CLIENTS {
        eprintln!("e2e: -S split | {} | {clients} clients", target.name);
        let before = commits()?;
        let outcome = measure(
            tools,
            target,
            &pgbench_args(&["-S"], clients, threads, settings.secs),
            &[],
        );
        let after = commits()?;
        let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect();
        let total = deltas.iter().sum::<u64>() as f64;
        let shares: Vec<String> = deltas.iter().map(|d| percent(*d as f64, total)).collect();
        match outcome {
            Ok(m) => println!(
                "| {clients} | pgbench | {:.0} | {:.3} | – | {} | {} | {} |",
                m.run.tps,
                m.run.latency_ms,
                m.cpu_per_txn.map_or("–".into(), |c| format!("{c:.1}")),
                m.run.failed,
                shares.join(" | ")
            ),
            Err(e) => println!("| {clients} | pgbench | failed: {e} |"),
        }
        eprintln!(
            "e2e: bench --workload select split | {} | {clients} clients",
            target.name
        );
        match bench_split(work, target, split.admin_port, (clients, threads), settings.secs) {
            Ok((run, cpu_per_txn)) => {
                let number = |pointer: &str| run.pointer(pointer).and_then(serde_json::Value::as_f64);
                let units = number("/admin/units").unwrap_or_default();
                let shares: Vec<String> = names
                    .iter()
                    .map(|name| {
                        let instance = run["admin"]["instances"]
                            .as_array()
                            .and_then(|all| all.iter().find(|i| i["name"] == *name));
                        let served = instance.and_then(|i| i["units"].as_f64()).unwrap_or_default();
                        percent(served, units)
                    })
                    .collect();
                let ms = |pointer: &str| number(pointer).map_or("–".into(), |v| format!("{v:.3}"));
                println!(
                    "| {clients} | pgsplit bench | {:.0} | {} | {} / {} | {cpu_per_txn:.1} | {} | {} |",
                    number("/tps").unwrap_or_default(),
                    ms("/latency_ms/mean"),
                    ms("/latency_ms/p50"),
                    ms("/latency_ms/p99"),
                    number("/failed").unwrap_or_default(),
                    shares.join(" | ")
                );
            }
            Err(e) => println!("| {clients} | pgsplit bench | failed: {e:#} |"),
        }
    }
    println!(
        "\n(pgbench rows: shares of every committed transaction in the database on each instance, pgsplit's own \
         health checks included; the leader's share is those and nothing else when every read is split. pgsplit \
         bench rows: shares of the units of work pgsplit routed during the run, clients only.)"
    );
    Ok(())
}

/// `pgsplit bench --workload select` through `target` with pgsplit's admin API: its JSON, and the proxy's CPU per
/// transaction.
fn bench_split(
    work: &WorkDir,
    target: &Target,
    admin_port: u16,
    (clients, threads): (u32, u32),
    secs: u64,
) -> Result<(serde_json::Value, f64)> {
    let json = work.path("bench-split.json");
    let pid = target.pid.context("the split target is a proxy")?;
    let cpu_before = procs::cpu_micros(pid)?;
    let out = Command::new(work.path("pgsplit"))
        .args(["bench", "--workload", "select", "--url"])
        .arg(format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{}",
            target.port, target.database
        ))
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &threads.to_string(),
            "-T",
            &format!("{secs}s"),
        ])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .arg("--json")
        .arg(&json)
        .output()
        .context("running pgsplit bench")?;
    let cpu = procs::cpu_micros(pid)?.saturating_sub(cpu_before) as f64;
    if !out.status.success() {
        bail!(
            "pgsplit bench ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let committed = run["committed"].as_f64().unwrap_or_default().max(1.0);
    Ok((run, cpu / committed))
}

/// `pgbench -i -s <scale>` on the leader as the app user, then waits for the followers to replay it.
fn pgbench_init(cluster: &LocalCluster, scale: u32) -> Result<()> {
    eprintln!("e2e: pgbench -i -s {scale}");
    let leader = cluster.leader();
    let mut cmd = cluster.tools().command("pgbench");
    cmd.args(["-i", "-q", "-s", &scale.to_string(), "-h"])
        .arg(&leader.socket_dir)
        .args(["-p", &leader.port.to_string(), "-U", USER, DATABASE]);
    let out = cmd.output().context("running pgbench -i")?;
    if !out.status.success() {
        bail!(
            "pgbench -i failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster.wait_replayed(Duration::from_secs(300))?;
    Ok(())
}

fn pgbench_args(workload: &[&str], clients: u32, threads: u32, secs: u64) -> Vec<String> {
    let mut args: Vec<String> = format!("-n -T {secs} -c {clients} -j {threads}")
        .split(' ')
        .map(String::from)
        .collect();
    args.extend(workload.iter().map(|s| s.to_string()));
    args
}

/// One timed pgbench run (`env` added to its environment), with the proxy's CPU time and context switches read
/// before and after.
fn measure(tools: &Toolbox, target: &Target, args: &[String], env: &[(&str, &str)]) -> Result<Measured, String> {
    let usage = |pid| anyhow::Ok((procs::cpu_micros(pid)?, procs::context_switches(pid)?));
    let text = |e: anyhow::Error| format!("{e:#}");
    let before = target.pid.map(usage).transpose().map_err(text)?;
    let run = procs::pgbench(tools, (target.port, target.database), (USER, PASSWORD), args, env).map_err(text)?;
    let after = target.pid.map(usage).transpose().map_err(text)?;
    if !run.problem.is_empty() {
        eprintln!("e2e: {}: {}", target.name, run.problem);
    }
    let txns = run.processed.max(1) as f64;
    let per_txn = |from: u64, to: u64| to.saturating_sub(from) as f64 / txns;
    let (cpu_per_txn, switches_per_txn) = match (before, after) {
        (Some((cpu0, switches0)), Some((cpu1, switches1))) => {
            (Some(per_txn(cpu0, cpu1)), Some(per_txn(switches0, switches1)))
        }
        _ => (None, None),
    };
    Ok(Measured {
        run,
        cpu_per_txn,
        switches_per_txn,
    })
}

/// One pgsplit to start: `binary` is a file name in the scratch dir; `label` names its config, log and process;
/// `extra` is appended to its config (tables of its own: `[proxy.tls]`, `[server]`).
#[derive(Clone, Copy)]
struct PgsplitSpec<'a> {
    label: &'a str,
    binary: &'a str,
    mode: &'a str,
    ports: [u16; 2],
    leader_port: u16,
    pool: usize,
    followers: &'a [u16],
    /// `proxy.workers`.
    workers: usize,
    extra: &'a str,
}

fn start_pgsplit(work: &WorkDir, tools: &Toolbox, spec: &PgsplitSpec) -> Result<ProxyProcess> {
    let PgsplitSpec {
        label,
        binary,
        mode,
        ports,
        leader_port,
        pool,
        followers,
        workers,
        extra,
    } = *spec;
    let mut config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\npool_mode = \"{mode}\"\n\
         workers = {workers}\n\n\
         [[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n\n\
         [leader]\nhost = \"127.0.0.1\"\nport = {leader_port}\nmax_connections = {pool}\n",
        ports[0], ports[1]
    );
    if !followers.is_empty() {
        config.push_str(&format!(
            "\n[[follower_pools]]\nname = \"default\"\nmax_connections_per_instance = {pool}\ninstances = [\n"
        ));
        for (i, port) in followers.iter().enumerate() {
            config.push_str(&format!(
                "  {{ name = \"f{}\", host = \"127.0.0.1\", port = {port} }},\n",
                i + 1
            ));
        }
        config.push_str("]\n");
    }
    config.push_str(extra);
    let path = work.write(tools, &format!("pgsplit-{label}.toml"), &config)?;
    let mut cmd = Command::new(work.path(binary));
    cmd.arg("run").arg("-c").arg(&path).env("RUST_LOG", "info");
    let mut proxy = ProxyProcess::spawn(
        &format!("pgsplit ({label})"),
        cmd,
        work.path(&format!("pgsplit-{label}.log")),
    )?;
    proxy.wait_listening(ports[0])?;
    Ok(proxy)
}

fn pgbouncer_binary() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/sbin/pgbouncer");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
}

/// One PgBouncer on `port` with a database per pooling mode ([`BOUNCER_TXN_DB`], [`BOUNCER_SESSION_DB`]), the
/// app user's `secret` in its auth_file (the password, or the server's SCRAM secret) and `extra` settings (TLS).
/// Runs as the PostgreSQL OS user when we are root (PgBouncer refuses root).
fn start_pgbouncer(
    work: &WorkDir,
    tools: &Toolbox,
    bin: &Path,
    (port, leader_port): (u16, u16),
    [pool, session_pool]: [usize; 2],
    (secret, extra): (&str, &str),
) -> Result<ProxyProcess> {
    let auth_file = work.write(tools, "userlist.txt", &format!("\"{USER}\" \"{secret}\"\n"))?;
    let server = format!("host=127.0.0.1 port={leader_port} dbname={DATABASE}");
    let ini = format!(
        "[databases]\n\
         {BOUNCER_TXN_DB} = {server} pool_mode=transaction pool_size={pool}\n\
         {BOUNCER_SESSION_DB} = {server} pool_mode=session pool_size={session_pool}\n\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = {}\n\
         pool_mode = transaction\ndefault_pool_size = {pool}\nmax_client_conn = 1000\n\
         log_connections = 0\nlog_disconnections = 0\n{extra}",
        auth_file.display()
    );
    let ini = work.write(tools, "pgbouncer.ini", &ini)?;
    let mut cmd = Command::new(bin);
    cmd.arg(&ini);
    tools.prepare(&mut cmd);
    let mut proxy = ProxyProcess::spawn("pgbouncer", cmd, work.path("pgbouncer.log"))?;
    proxy.wait_listening(port)?;
    Ok(proxy)
}

/// RSS of the target's proxy idle and with `clients` idle clients (over TLS when `tls` gives a client config).
fn idle_memory(target: &Target, clients: usize, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Memory> {
    let pid = target.pid.context("no proxy process")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let idle_kib = procs::rss_kib(pid)?;
    let open = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), open_clients(target, clients, tls)).await });
    let open = open.map_err(|_| anyhow::anyhow!("opening {clients} clients took over 120 s"))??;
    std::thread::sleep(Duration::from_millis(500));
    let loaded_kib = procs::rss_kib(pid)?;
    drop(open);
    drop(runtime); // closes every client socket
    Ok(Memory {
        idle_kib,
        loaded_kib,
        clients,
    })
}

/// Logs `n` clients in (16 handshakes at a time; over TLS with `tls`) and keeps them open, idle.
async fn open_clients(
    target: &Target,
    n: usize,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Vec<tokio_postgres::Client>> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(target.port)
        .user(USER)
        .password(PASSWORD)
        .dbname(target.database)
        .connect_timeout(Duration::from_secs(10));
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    if tls.is_some() {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    for _ in 0..n {
        let (config, limit, tls) = (config.clone(), limit.clone(), tls.cloned());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let client = match tls {
                Some(tls) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(connection);
                    client
                }
                None => {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    client
                }
            };
            anyhow::Ok(client)
        });
    }
    let mut clients = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined??);
    }
    Ok(clients)
}

fn print_header(cluster: &LocalCluster, settings: &Settings, session_pool: usize) -> Result<()> {
    let server = cluster.psql(cluster.leader(), "SHOW server_version")?;
    let bouncer = pgbouncer_binary()
        .and_then(|bin| Command::new(bin).arg("--version").output().ok())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "not installed".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n## pgsplit end-to-end benchmark\n");
    println!(
        "- machine: {cores} cores; PostgreSQL {server}; {bouncer}; pgsplit {}",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "- cluster: leader + {} followers, pgbench scale {}; {} s per run, {} round(s); pool size {} (transaction), \
         {session_pool} (session)",
        cluster.followers().len(),
        settings.scale,
        settings.secs,
        settings.rounds,
        settings.pool
    );
    if settings.baseline.is_some() || settings.baseline_workers != 1 {
        let build = match &settings.baseline {
            Some(path) => path.display().to_string(),
            None => "this build".to_owned(),
        };
        println!(
            "- baseline: {build} with proxy.workers = {} (pgsplit: this build, 1 worker)",
            settings.baseline_workers
        );
    }
    Ok(())
}

/// Lines of a proxy log that look like trouble (pgsplit's WARN/ERROR, PgBouncer's WARNING/ERROR).
fn problem_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("WARNING") || l.contains("ERROR"))
        .map(str::to_string)
        .collect()
}
