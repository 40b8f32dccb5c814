//! What `pgsplit bench` costs as a load generator, next to pgbench: the same workload (select-only, `-S`), clients
//! and threads against one PostgreSQL server on this machine, in interleaved rounds. Per round: pgbench's tps,
//! bench's tps (their ratio is the measure), each tool's CPU per transaction, and bench's latency percentiles next
//! to those computed from a pgbench run with its per-transaction log (`--log`, which costs pgbench a little tps,
//! so it is a run of its own). `cargo bench --bench bench_cost`; docs/benchmarks.md holds the method and results.
//!
//! Environment: PGSPLIT_BENCH_SECS (10), PGSPLIT_BENCH_ROUNDS (3), PGSPLIT_BENCH_SCALE (10), PGSPLIT_BENCH_CLIENTS
//! (16), PGSPLIT_BENCH_THREADS (2).

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, Result, bail};
use common::env_number;
use pgsplit::demo::cluster::{ClusterOptions, LocalCluster, Toolbox, Watchdog, unique_base_dir};

struct Settings {
    secs: u64,
    rounds: u32,
    scale: u32,
    clients: u32,
    threads: u32,
}

/// One tool's run: tps, CPU per transaction (user + system, microseconds), and latency percentiles in ms
/// (p50, p90, p99) when known.
#[derive(Debug, Clone, Copy)]
struct Run {
    tps: f64,
    cpu_us: f64,
    latency: Option<[f64; 3]>,
}

fn main() -> ExitCode {
    common::bench_main("bench_cost", run)
}

fn run() -> Result<()> {
    let settings = Settings {
        secs: env_number("PGSPLIT_BENCH_SECS", 10)?,
        rounds: env_number("PGSPLIT_BENCH_ROUNDS", 3)?.max(1),
        scale: env_number("PGSPLIT_BENCH_SCALE", 10)?,
        clients: env_number("PGSPLIT_BENCH_CLIENTS", 16)?,
        threads: env_number("PGSPLIT_BENCH_THREADS", 2)?,
    };
    let tools = Toolbox::locate()?;
    let base_dir = unique_base_dir()?;
    // Declared before the cluster, so dropped after it: it finds nothing left unless the bench died first.
    let _watchdog = Watchdog::spawn(&tools, &base_dir)?;
    let mut cluster = LocalCluster::start(ClusterOptions {
        followers: 0,
        base_dir: Some(base_dir),
        ..ClusterOptions::default()
    })?;
    let outcome = compare(&cluster, &tools, &settings);
    let stopped = cluster.stop();
    outcome?;
    stopped.context("stopping the cluster")
}

fn compare(cluster: &LocalCluster, tools: &Toolbox, settings: &Settings) -> Result<()> {
    let leader = cluster.leader();
    let init = tools
        .command("pgbench")
        .args(["-i", "-q", "-s", &settings.scale.to_string(), "-h"])
        .arg(&leader.socket_dir)
        .args(["-p", &leader.port.to_string(), "-U", "app", "app"])
        .output()
        .context("running pgbench -i")?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let log_dir = std::env::temp_dir().join(format!("pgsplit-bench-cost-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    tools.chown(&log_dir)?;
    let outcome = rounds(cluster, tools, settings, &log_dir);
    let _ = std::fs::remove_dir_all(&log_dir);
    outcome
}

fn rounds(cluster: &LocalCluster, tools: &Toolbox, settings: &Settings, log_dir: &Path) -> Result<()> {
    let port = cluster.leader().port;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n## pgsplit bench against pgbench\n");
    println!(
        "- {cores} cores; select-only (`pgbench -S`, `--workload select`), {} clients, {} threads, {} s per run, \
         scale {}, {} rounds; TCP to one PostgreSQL server on 127.0.0.1",
        settings.clients, settings.threads, settings.secs, settings.scale, settings.rounds
    );
    // Warm-up: the tables into the buffer cache, the server's processes started once.
    pgbench(tools, port, settings, 3, None)?;
    println!(
        "\n| round | pgbench tps | bench tps | bench/pgbench | pgbench CPU µs/txn | bench CPU µs/txn | pgbench --log \
         p50 / p90 / p99 ms | bench p50 / p90 / p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---|");
    let (mut tps_ratios, mut latency_ratios) = (Vec::new(), [Vec::new(), Vec::new(), Vec::new()]);
    for round in 1..=settings.rounds {
        // Alternate which tool goes first, so a drift in the machine's load does not favour one.
        let (plain, ours) = if round % 2 == 1 {
            let plain = pgbench(tools, port, settings, settings.secs, None)?;
            (plain, bench(port, settings)?)
        } else {
            let ours = bench(port, settings)?;
            (pgbench(tools, port, settings, settings.secs, None)?, ours)
        };
        let prefix = log_dir.join(format!("round{round}"));
        let logged = pgbench(tools, port, settings, settings.secs, Some(&prefix))?;
        let (log, mine) = (
            logged.latency.context("pgbench's log")?,
            ours.latency.context("bench's JSON")?,
        );
        tps_ratios.push(ours.tps / plain.tps);
        for (i, ratios) in latency_ratios.iter_mut().enumerate() {
            ratios.push(mine[i] / log[i]);
        }
        let triple = |l: [f64; 3]| format!("{:.3} / {:.3} / {:.3}", l[0], l[1], l[2]);
        println!(
            "| {round} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {} | {} |",
            plain.tps,
            ours.tps,
            ours.tps / plain.tps,
            plain.cpu_us,
            ours.cpu_us,
            triple(log),
            triple(mine)
        );
    }
    println!(
        "\nmedian bench/pgbench: tps {:.3}; latency p50 {:.3}, p90 {:.3}, p99 {:.3} (bench's percentiles over those \
         of pgbench's per-transaction log)",
        median(tps_ratios),
        median(latency_ratios[0].clone()),
        median(latency_ratios[1].clone()),
        median(latency_ratios[2].clone())
    );
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// User + system CPU of the children waited for so far, in microseconds.
fn children_cpu_us() -> f64 {
    // SAFETY: getrusage only writes the struct we pass, which we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// One pgbench -S run; with `log`, its per-transaction log is written under that prefix and read back.
fn pgbench(tools: &Toolbox, port: u16, settings: &Settings, secs: u64, log: Option<&Path>) -> Result<Run> {
    let mut cmd = tools.command("pgbench");
    cmd.args(["-n", "-S", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(["-c", &settings.clients.to_string(), "-j", &settings.threads.to_string()])
        .args(["-T", &secs.to_string()])
        .env("PGPASSWORD", "app");
    if let Some(prefix) = log {
        cmd.arg("--log").arg(format!("--log-prefix={}", prefix.display()));
    }
    cmd.arg("app");
    let cpu_before = children_cpu_us();
    let out = cmd.stdin(Stdio::null()).output().context("running pgbench")?;
    let cpu = children_cpu_us() - cpu_before;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let number_after = |label: &str| -> Result<f64> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .with_context(|| format!("no {label:?} in pgbench's output:\n{stdout}"))?;
        let word = line.split_whitespace().next().unwrap_or_default();
        word.parse().with_context(|| format!("{label}{line}"))
    };
    let tps = number_after("tps = ")?;
    let processed = number_after("number of transactions actually processed: ")?;
    let latency = match log {
        Some(prefix) => Some(percentiles(logged_latencies(prefix)?)?),
        None => None,
    };
    Ok(Run {
        tps,
        cpu_us: cpu / processed.max(1.0),
        latency,
    })
}

/// Every transaction's latency in ms from pgbench's log files (`PREFIX.PID` and `PREFIX.PID.N`, one per thread;
/// the third field of a line is the latency in microseconds).
fn logged_latencies(prefix: &Path) -> Result<Vec<f64>> {
    let dir = prefix.parent().context("the log prefix has a directory")?;
    let stem = prefix
        .file_name()
        .context("the log prefix has a name")?
        .to_string_lossy();
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|f| f.parse::<f64>().ok()) {
                latencies.push(us / 1000.0);
            }
        }
    }
    Ok(latencies)
}

/// p50, p90, p99 by nearest rank.
fn percentiles(mut values: Vec<f64>) -> Result<[f64; 3]> {
    if values.is_empty() {
        bail!("pgbench logged no transaction");
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Ok([at(0.50), at(0.90), at(0.99)])
}

/// One `pgsplit bench --workload select` run; its figures from the JSON it writes.
fn bench(port: u16, settings: &Settings) -> Result<Run> {
    let json = std::env::temp_dir().join(format!("pgsplit-bench-cost-{}.json", std::process::id()));
    let cpu_before = children_cpu_us();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["bench", "--url", &format!("postgres://app:app@127.0.0.1:{port}/app")])
        .args(["--workload", "select", "-c", &settings.clients.to_string()])
        .args([
            "-j",
            &settings.threads.to_string(),
            "-T",
            &format!("{}s", settings.secs),
        ])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .context("running pgsplit bench")?;
    let cpu = children_cpu_us() - cpu_before;
    if !out.status.success() {
        bail!(
            "pgsplit bench ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&json).context("reading bench's JSON")?;
    let _ = std::fs::remove_file(&json);
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let number = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no {pointer} in bench's JSON"))
    };
    Ok(Run {
        tps: number("/tps")?,
        cpu_us: cpu / number("/committed")?.max(1.0),
        latency: Some([
            number("/latency_ms/p50")?,
            number("/latency_ms/p90")?,
            number("/latency_ms/p99")?,
        ]),
    })
}
