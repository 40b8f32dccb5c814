//! What the end-to-end benches share: their entry point (quick exit unless run as a benchmark, errors as a failing
//! exit code) and numbers read from the environment.

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};
use pgsplit::demo::cluster::LocalCluster;

/// Runs `run` when the binary was started as a benchmark (`cargo bench --bench <name>`); `cargo test
/// --all-targets` also runs harness-less benches, without `--bench`, and they must stay quick there.
pub fn bench_main(name: &str, run: impl FnOnce() -> Result<()>) -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name}: skipped (not run as a benchmark); use `cargo bench --bench {name}`");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Like [`bench_main`], for a bench that runs on a multi-thread Tokio runtime.
#[allow(dead_code)] // each bench binary uses one of the two entry points
pub fn bench_main_async<F: Future<Output = Result<()>>>(name: &str, run: impl FnOnce() -> F) -> ExitCode {
    bench_main(name, || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        runtime.block_on(run())
    })
}

/// `pgbench -i -s 1` on the cluster's leader, as the app user into its database.
#[allow(dead_code)] // e2e initialises its own cluster at its own scale
pub fn pgbench_init(cluster: &LocalCluster) -> Result<()> {
    let leader = cluster.leader();
    let init = cluster
        .tools()
        .command("pgbench")
        .args(["-i", "-q", "-s", "1", "-h"])
        .arg(&leader.socket_dir)
        .args(["-p", &leader.port.to_string(), "-U", "app", "app"])
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    Ok(())
}

/// The number in environment variable `name`, or `default` when it is not set.
pub fn env_number<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .with_context(|| format!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}
