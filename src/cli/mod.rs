//! What each subcommand does, at the edge of the program: load config, start things, map failures to exit codes
//! (0 ok, 1 usage/config error, 2 runtime failure).
//!
//! This file runs the proxy, checks configs and starts the demo; `admin` holds the subcommands that talk to a
//! running proxy through `admin_client`, `render` prints their answers, and `patroni` does both for a cluster
//! Patroni manages.

mod admin;
mod admin_client;
mod patroni;
mod render;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::proxy::Proxy;

pub use admin::{abort_promote, pause, promote, reload, resume, status, wait};
pub use admin_client::{AdminClient, AdminError};

/// How long a stopping proxy lets clients finish their transactions.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn run(config_path: &Path) -> ExitCode {
    // Checked before anything starts, so that a bad file exits 1 like `pgsplit check`.
    if let Err(errors) = crate::config::Config::load(config_path) {
        eprintln!("{errors}");
        return ExitCode::from(1);
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let proxy = match Proxy::start_from_file(config_path).await {
            Ok(proxy) => proxy,
            Err(error) => {
                tracing::error!(%error, "pgsplit cannot start");
                return ExitCode::from(2);
            }
        };
        if let Err(error) = stop_signal().await {
            tracing::error!(%error, "cannot install signal handlers");
            return ExitCode::from(2);
        }
        tracing::info!(grace = ?SHUTDOWN_GRACE, "stopping: no new connections; running transactions may finish");
        if proxy.shutdown(SHUTDOWN_GRACE).await {
            tracing::info!("all sessions ended; bye");
        } else {
            tracing::warn!("grace period over; closing the remaining sessions");
        }
        ExitCode::SUCCESS
    })
}

/// The main thread's runtime: signals, the admin API, health checks, reloads. Sessions run on the proxy's own
/// threads (`proxy.workers`, see `runtime::Workers`).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("pgsplit: cannot start the runtime: {error}");
            ExitCode::from(2)
        })
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stop_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

pub fn check(config_path: &Path) -> ExitCode {
    match crate::config::Config::load(config_path) {
        Ok(config) => {
            println!("{}: ok", config_path.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

pub fn demo() -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let stop = async {
        if let Err(error) = stop_signal().await {
            eprintln!("pgsplit demo: cannot install signal handlers: {error}");
        }
    };
    match runtime.block_on(crate::demo::run(stop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgsplit demo: {error}");
            ExitCode::from(2)
        }
    }
}
