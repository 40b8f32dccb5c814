//! Topology changes under load, against a private local cluster and pgsplit in-process: how long a reload takes
//! to put a new snapshot in use (called directly, and from a file change), and how long an orchestrated changeover
//! holds writes while pgbench runs tpcb-like — by pgsplit's own measure and by the slowest transaction pgbench
//! logged. Two changeovers run back to back: to f1 with `--repoint` (so f2 follows f1), then to f2.
//! `cargo bench --bench topology`; docs/benchmarks.md holds the last results.
//!
//! Environment: PGSPLIT_BENCH_SECS (15, pgbench run per changeover), PGSPLIT_BENCH_RELOADS (200).

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::env_number;
use pgsplit::demo::cluster::{ClusterOptions, LocalCluster, Toolbox, Watchdog, unique_base_dir};
use pgsplit::proxy::Proxy;
use pgsplit::topology::changeover::{self, Outcome, PromoteRequest};

fn main() -> ExitCode {
    common::bench_main_async("topology", run)
}

async fn run() -> Result<()> {
    let secs: u64 = env_number("PGSPLIT_BENCH_SECS", 15)?;
    let reloads: usize = env_number("PGSPLIT_BENCH_RELOADS", 200)?;
    let tools = Toolbox::locate()?;
    let base_dir = unique_base_dir()?;
    // Declared before the cluster, so dropped after it: it finds nothing left unless the bench died first.
    let _watchdog = Watchdog::spawn(&tools, &base_dir)?;
    let mut cluster = LocalCluster::start(ClusterOptions {
        followers: 2,
        base_dir: Some(base_dir.clone()),
        ..ClusterOptions::default()
    })?;
    let outcome = with_cluster(&cluster, &base_dir, secs, reloads).await;
    let stopped = cluster.stop();
    outcome?;
    stopped.context("stopping the cluster")
}

fn config_text(cluster: &LocalCluster, f2_weight: u32) -> String {
    let f = cluster.followers();
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\
         [leader]\nname = \"leader\"\nhost = \"127.0.0.1\"\nport = {}\nmax_connections = 8\n\
         [[follower_pools]]\nname = \"default\"\ninstances = [\n\
           {{ name = \"{}\", host = \"127.0.0.1\", port = {} }},\n\
           {{ name = \"{}\", host = \"127.0.0.1\", port = {}, weight = {f2_weight} }},\n]\n\
         [health]\ninterval = \"100ms\"\n",
        cluster.leader().port,
        f[0].name,
        f[0].port,
        f[1].name,
        f[1].port,
    )
}

async fn with_cluster(cluster: &LocalCluster, base_dir: &Path, secs: u64, reloads: usize) -> Result<()> {
    common::pgbench_init(cluster)?;
    cluster.wait_replayed(Duration::from_secs(60))?;
    let dir = base_dir.join("bench-config");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config_text(cluster, 1))?;
    let proxy = Proxy::start_from_file(&path).await?;
    let ctx = proxy.context().clone();
    wait_usable(&proxy).await?;
    let port = proxy.local_addr().port();

    // Reloads while pgbench -S runs through the proxy.
    let load = pgbench(port, args(&format!("-S -c 8 -j 2 -T {}", secs.max(5))), dir.clone());
    let load = tokio::spawn(load);
    let mut direct = Vec::with_capacity(reloads);
    for i in 0..reloads {
        std::fs::write(&path, config_text(cluster, 2 - (i as u32 % 2)))?;
        let started = Instant::now();
        // The file watcher reloads the same change ~200 ms later (and then finds nothing to do): only reloads
        // that swapped count.
        if ctx.control.reload().await?.changed {
            direct.push(started.elapsed());
        }
    }
    let mut watched = Vec::new();
    for i in 0..5u32 {
        let before = ctx.topology.load().generation;
        let started = Instant::now();
        let temp = dir.join("proxy.toml.new");
        std::fs::write(&temp, config_text(cluster, 3 + i % 2))?;
        std::fs::rename(&temp, &path)?;
        while ctx.topology.load().generation == before {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the file change was not picked up");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        watched.push(started.elapsed());
    }
    let reads = load.await??;
    println!(
        "\n== Swap latency (pgbench -S -c 8 running: {} transactions, {} failed)",
        reads.0, reads.1
    );
    println!(
        "{}",
        summary("POST /reload path (parse, validate, rebuild, swap)", &mut direct)
    );
    println!(
        "{}",
        summary("file rename → new snapshot in use (200 ms debounce)", &mut watched)
    );

    println!("\n== Changeover under pgbench tpcb-like -c 8, {secs} s, promote at 5 s");
    for (target, repoint) in [("f1", true), ("f2", false)] {
        let run = tokio::spawn(pgbench(port, args(&format!("-c 8 -j 8 -T {secs} -l")), dir.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut request = PromoteRequest::new(target);
        request.repoint = repoint;
        let progress = changeover::run(&ctx.control, &request).await?;
        let (processed, failed) = run.await??;
        if progress.outcome != Outcome::Done {
            bail!("changeover to {target}: {progress:#?}");
        }
        let slowest = slowest_logged(&dir)?;
        println!(
            "promote {target}{}: {processed} transactions, {failed} failed; writes held {} ms; slowest transaction \
             {:.1} ms",
            if repoint { " --repoint" } else { "" },
            progress.write_pause_ms.unwrap_or(0),
            slowest.as_secs_f64() * 1000.0,
        );
        for step in &progress.steps {
            println!(
                "  {:<12} {:>5} ms  {}",
                format!("{:?}", step.step),
                step.millis,
                step.detail
            );
        }
        if target == "f1" {
            // f2 now follows f1; wait until it is a usable follower again before promoting it.
            wait_usable(&proxy).await?;
        }
    }
    proxy.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn wait_usable(proxy: &Proxy) -> Result<()> {
    let started = Instant::now();
    loop {
        let topology = proxy.context().topology.load();
        if topology
            .pools
            .iter()
            .flat_map(|p| p.instances.iter())
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

fn args(line: &str) -> Vec<String> {
    line.split(' ').map(String::from).collect()
}

/// Runs pgbench through the proxy in `dir` (where `-l` logs land); returns (processed, failed).
async fn pgbench(port: u16, args: Vec<String>, dir: std::path::PathBuf) -> Result<(u64, u64)> {
    for old in std::fs::read_dir(&dir)? {
        let old = old?.path();
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("pgbench_log"))
        {
            std::fs::remove_file(old)?;
        }
    }
    let out = tokio::process::Command::new("pgbench")
        .current_dir(&dir)
        .args(["-n", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", "app")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    }
    let count = |label: &str| -> Result<u64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .context("pgbench summary")?;
        let digits: String = line[label.len()..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Ok(digits.parse()?)
    };
    Ok((
        count("number of transactions actually processed:")?,
        count("number of failed transactions:")?,
    ))
}

/// The longest transaction in pgbench's `-l` logs (third column: latency in µs).
fn slowest_logged(dir: &Path) -> Result<Duration> {
    let mut slowest = 0u64;
    for file in std::fs::read_dir(dir)? {
        let file = file?.path();
        if !file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("pgbench_log"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&file)?.lines() {
            if let Some(micros) = line.split(' ').nth(2).and_then(|v| v.parse::<u64>().ok()) {
                slowest = slowest.max(micros);
            }
        }
    }
    Ok(Duration::from_micros(slowest))
}

fn summary(what: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{what}: n={} median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    )
}
