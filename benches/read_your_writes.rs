//! Read-your-writes by WAL position under pgbench load: a private local cluster (leader + 2 followers) and two
//! pgsplits in-process in front of it, one with `routing.read_your_writes = true` and one with `false`, compared
//! within one run.
//!
//! 1. What the feature costs a write transaction: pgbench's simple-update (`-N`: BEGIN, UPDATE, SELECT, INSERT, END)
//!    through each proxy, alternating on, off, off, on, …. Per run: tps, average latency, and the proxies' CPU per
//!    transaction — this process's utime+stime (both proxies live in it; pgbench is a child process and is not
//!    counted; the idle proxy's health checks are in both columns alike).
//! 2. Where reads go: each client inserts a row and selects it back by id (a miss is recorded on the leader), with the
//!    followers' `recovery_min_apply_delay` at 0, 10 ms and 500 ms. Per run: tps, latency, CPU, the share of reads
//!    the followers served (pgsplit's per-instance route counters), and misses — which must be 0 with the feature on.
//!
//! `cargo bench --bench read_your_writes`. Environment: PGSPLIT_BENCH_SECS (10, per pgbench run),
//! PGSPLIT_BENCH_CLIENTS (8), PGSPLIT_BENCH_ROUNDS (2: on/off pairs of part 1; the machine's run-to-run noise with
//! identical proxies can reach 10–20% in tps at a few seconds per run, so compare means, or raise it).

#[path = "e2e/procs.rs"]
#[allow(dead_code)] // the pgbench runner, scratch dir and /proc readings; the proxy processes are e2e's alone
mod procs;

#[path = "common.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::env_number;
use pgsplit::config::Config;
use pgsplit::demo::cluster::{ClusterOptions, LocalCluster, Toolbox, Watchdog, unique_base_dir};
use pgsplit::proxy::Proxy;
use procs::{PgbenchOutput, WorkDir};

/// Follower apply delays of the mixed workload (`recovery_min_apply_delay`; "0" resets it).
const DELAYS: [&str; 3] = ["0", "10ms", "500ms"];
/// Leader route reasons that are reads: sent there for freshness, or for want of a usable follower.
const LEADER_READS: [&str; 3] = ["read_your_writes", "fallback", "no_read_pool"];

/// Inserts a row, keeps its id, reads it back by id; a read that finds nothing is a miss, noted on the leader.
const MIXED_SCRIPT: &str = r"INSERT INTO ryw(payload) VALUES (:client_id) RETURNING id \gset
SELECT count(*) AS seen FROM ryw WHERE id = :id \gset
\if :seen = 0
INSERT INTO ryw_miss(id, client) VALUES (:id, :client_id);
\endif
";

fn main() -> ExitCode {
    common::bench_main_async("read_your_writes", run)
}

struct Bench {
    tools: Toolbox,
    work: WorkDir,
    secs: u64,
    clients: u32,
    rounds: u32,
}

/// One pgbench run through one proxy, with what the proxies did meanwhile.
struct Measured {
    run: PgbenchOutput,
    cpu_per_txn: f64,
    /// Reads the followers served / every read (follower units plus the leader's read reasons).
    follower_share: f64,
}

async fn run() -> Result<()> {
    let tools = Toolbox::locate()?;
    let bench = Bench {
        work: WorkDir::create(&tools)?,
        tools,
        secs: env_number("PGSPLIT_BENCH_SECS", 10)?,
        clients: env_number("PGSPLIT_BENCH_CLIENTS", 8)?,
        rounds: env_number::<u32>("PGSPLIT_BENCH_ROUNDS", 2)?.max(1),
    };
    let base_dir = unique_base_dir()?;
    // Declared before the cluster, so dropped after it: it finds nothing left unless the bench died first.
    let _watchdog = Watchdog::spawn(&bench.tools, &base_dir)?;
    eprintln!("read_your_writes: starting a leader and 2 followers");
    let mut cluster = LocalCluster::start(ClusterOptions {
        followers: 2,
        base_dir: Some(base_dir),
        ..ClusterOptions::default()
    })?;
    let outcome = with_cluster(&cluster, &bench).await;
    let stopped = cluster.stop();
    outcome?;
    stopped.context("stopping the cluster")
}

async fn with_cluster(cluster: &LocalCluster, bench: &Bench) -> Result<()> {
    setup(cluster)?;
    let on = Proxy::start(config(cluster, bench.clients, true)?).await?;
    let off = Proxy::start(config(cluster, bench.clients, false)?).await?;
    let proxies = [(true, &on), (false, &off)];
    for (_, proxy) in proxies {
        wait_usable(proxy).await?;
    }
    let script = bench.work.write(&bench.tools, "mixed.pgbench", MIXED_SCRIPT)?;
    let script = script.to_string_lossy().into_owned();
    print_header(cluster, bench)?;

    // Warm-up: every pool opens its server connections before anything is measured.
    for (_, proxy) in proxies {
        bench.measure(proxy, &["-N"], 2).await?;
    }
    println!("\n### 1. write transactions (`pgbench -N -M simple`), feature on vs off, alternating\n");
    println!("| run | read_your_writes | tps | avg latency ms | proxy CPU µs/txn | failed txns |");
    println!("|---:|---|---:|---:|---:|---:|");
    // Means over the rounds, [on, off]: tps, latency, CPU per transaction.
    let mut means = [[0.0; 3]; 2];
    // On, off, then off, on, …: neither side always runs first.
    for round in 1..=bench.rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let (flag, proxy) = proxies[i];
            eprintln!("read_your_writes: -N, round {round}, feature {}", on_off(flag));
            let m = bench.measure(proxy, &["-N"], bench.secs).await?;
            println!(
                "| {round} | {} | {:.0} | {:.3} | {:.1} | {} |",
                on_off(flag),
                m.run.tps,
                m.run.latency_ms,
                m.cpu_per_txn,
                m.run.failed
            );
            for (mean, value) in means[i].iter_mut().zip([m.run.tps, m.run.latency_ms, m.cpu_per_txn]) {
                *mean += value / f64::from(bench.rounds);
            }
        }
    }
    let [[tps_on, latency_on, cpu_on], [tps_off, latency_off, cpu_off]] = means;
    println!(
        "\nOn / off, means of {} rounds: tps ×{:.3}, latency ×{:.3}, proxy CPU per transaction ×{:.3} \
         ({:+.1} µs)",
        bench.rounds,
        tps_on / tps_off,
        latency_on / latency_off,
        cpu_on / cpu_off,
        cpu_on - cpu_off
    );

    println!("\n### 2. insert a row, select it back (custom script, `-M simple`), by follower apply delay\n");
    println!(
        "| apply delay | read_your_writes | tps | avg latency ms | proxy CPU µs/txn | reads on followers | misses | \
         failed txns |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut missed_with_feature = 0;
    for delay in DELAYS {
        set_apply_delay(cluster, delay)?;
        cluster.wait_replayed(Duration::from_secs(60))?;
        for (flag, proxy) in proxies {
            eprintln!("read_your_writes: mixed, delay {delay}, feature {}", on_off(flag));
            cluster.psql(cluster.leader(), "TRUNCATE ryw_miss")?;
            let m = bench.measure(proxy, &["-f", &script], bench.secs).await?;
            let misses: u64 = cluster
                .psql(cluster.leader(), "SELECT count(*) FROM ryw_miss")?
                .parse()?;
            if flag {
                missed_with_feature += misses;
            }
            println!(
                "| {delay} | {} | {:.0} | {:.3} | {:.1} | {:.1}% | {misses} | {} |",
                on_off(flag),
                m.run.tps,
                m.run.latency_ms,
                m.cpu_per_txn,
                m.follower_share * 100.0,
                m.run.failed
            );
        }
    }
    on.shutdown(Duration::from_secs(5)).await;
    off.shutdown(Duration::from_secs(5)).await;
    if missed_with_feature > 0 {
        bail!("{missed_with_feature} reads missed their client's own row with read_your_writes on");
    }
    Ok(())
}

impl Bench {
    /// Runs pgbench (`args`, `secs` seconds) through `proxy`; CPU and route counters are read around it.
    async fn measure(&self, proxy: &Proxy, args: &[&str], secs: u64) -> Result<Measured> {
        let mut all: Vec<String> = ["-n", "-M", "simple", "-j", "2", "-c"]
            .into_iter()
            .map(String::from)
            .collect();
        all.push(self.clients.to_string());
        all.extend(["-T".to_string(), secs.to_string()]);
        all.extend(args.iter().map(|a| a.to_string()));
        let (tools, port) = (self.tools.clone(), proxy.local_addr().port());
        let (cpu0, reads0) = (procs::cpu_micros(std::process::id())?, reads(proxy));
        let run = tokio::task::spawn_blocking(move || procs::pgbench(&tools, (port, "app"), ("app", "app"), &all, &[]))
            .await??;
        let (cpu1, reads1) = (procs::cpu_micros(std::process::id())?, reads(proxy));
        if !run.problem.is_empty() {
            bail!("{}", run.problem);
        }
        let (followers, leader) = (reads1.0 - reads0.0, reads1.1 - reads0.1);
        Ok(Measured {
            cpu_per_txn: (cpu1 - cpu0) as f64 / run.processed.max(1) as f64,
            follower_share: followers as f64 / (followers + leader).max(1) as f64,
            run,
        })
    }
}

/// (units the read pool's followers ran, reads the leader ran) by pgsplit's route counters.
fn reads(proxy: &Proxy) -> (u64, u64) {
    let topology = proxy.context().topology.load();
    let followers = topology.pools[0]
        .instances
        .iter()
        .flat_map(|i| i.routed())
        .map(|(_, n)| n)
        .sum();
    let leader = topology
        .leader
        .routed()
        .into_iter()
        .filter(|(reason, _)| LEADER_READS.contains(reason))
        .map(|(_, n)| n)
        .sum();
    (followers, leader)
}

fn on_off(flag: bool) -> &'static str {
    if flag { "on" } else { "off" }
}

/// pgbench's tables (scale 1) for `-N`, and the mixed workload's `ryw` and `ryw_miss`; returns once replayed.
fn setup(cluster: &LocalCluster) -> Result<()> {
    common::pgbench_init(cluster)?;
    let leader = cluster.leader();
    cluster.psql(
        leader,
        "CREATE TABLE ryw (id bigserial PRIMARY KEY, payload int NOT NULL); \
         CREATE TABLE ryw_miss (id bigint, client int); \
         GRANT ALL ON ryw, ryw_miss TO app; GRANT ALL ON SEQUENCE ryw_id_seq TO app",
    )?;
    cluster.wait_replayed(Duration::from_secs(60))?;
    Ok(())
}

/// A proxy in front of `cluster`: transaction pooling, the followers as read pool "default", `pool` server
/// connections per instance, read-your-writes as asked; everything else at its default.
fn config(cluster: &LocalCluster, pool: u32, read_your_writes: bool) -> Result<Config> {
    let f = cluster.followers();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\
         [leader]\nname = \"leader\"\nhost = \"127.0.0.1\"\nport = {}\nmax_connections = {pool}\n\
         [[follower_pools]]\nname = \"default\"\nmax_connections_per_instance = {pool}\ninstances = [\n\
           {{ name = \"{}\", host = \"127.0.0.1\", port = {} }},\n\
           {{ name = \"{}\", host = \"127.0.0.1\", port = {} }},\n]\n\
         [routing]\nread_your_writes = {read_your_writes}\n",
        cluster.leader().port,
        f[0].name,
        f[0].port,
        f[1].name,
        f[1].port,
    );
    Ok(Config::parse(&text, "read_your_writes.toml")?)
}

/// Sets the followers' `recovery_min_apply_delay` ("0": resets it) and waits until each reports it.
fn set_apply_delay(cluster: &LocalCluster, delay: &str) -> Result<()> {
    let statement = match delay {
        "0" => "ALTER SYSTEM RESET recovery_min_apply_delay".to_string(),
        delay => format!("ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'"),
    };
    for follower in cluster.followers() {
        // ALTER SYSTEM cannot run in a transaction block: its own psql call.
        cluster.psql(follower, &statement)?;
        cluster.psql(follower, "SELECT pg_reload_conf()")?;
        let started = Instant::now();
        loop {
            let now = cluster.psql(follower, "SHOW recovery_min_apply_delay")?;
            if now == delay {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{}: recovery_min_apply_delay is {now}, not {delay}", follower.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

async fn wait_usable(proxy: &Proxy) -> Result<()> {
    let started = Instant::now();
    loop {
        let topology = proxy.context().topology.load();
        if topology.pools[0]
            .instances
            .iter()
            .all(|i| i.health.usable_for().is_some())
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("followers not usable within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_header(cluster: &LocalCluster, bench: &Bench) -> Result<()> {
    let server = cluster.psql(cluster.leader(), "SHOW server_version")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n## pgsplit read-your-writes benchmark\n");
    println!(
        "- machine: {cores} cores; PostgreSQL {server}; pgsplit {}",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "- cluster: leader + 2 followers, pgbench scale 1; {} clients (`-j 2`), {} s per run; two pgsplits \
         in-process (read_your_writes on / off), transaction pooling, {} server connections per instance, default \
         health interval and read_your_writes_wait",
        bench.clients, bench.secs, bench.clients
    );
    Ok(())
}
