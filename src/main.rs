//! The `pgsplit` command line: parses arguments and hands over to the library. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgsplit::cli::AdminClient;
use pgsplit::config::parse_duration;

#[derive(Parser)]
#[command(
    name = "pgsplit",
    version,
    about = "PostgreSQL proxy: one endpoint, writes to the leader, reads over followers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for `run` and `check`; admin commands read the admin address and token from it)
    #[arg(short, long, env = "PGSPLIT_CONFIG", default_value = "proxy.toml", global = true)]
    config: PathBuf,
    /// Log format on stderr
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: pgsplit::logging::LogFormat,
    /// Admin API of the running proxy, HOST:PORT [default: proxy.admin_listen from the config, else 127.0.0.1:9930]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Bearer token for the admin API's mutating calls [default: proxy.admin_token from the config]
    #[arg(long, env = "PGSPLIT_ADMIN_TOKEN", global = true, hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Run,
    /// Validate a config file; exit 1 with file:line:col for every problem
    Check,
    /// Start a throwaway local cluster (leader + 2 followers) with pgsplit in front; Ctrl-C removes it
    Demo,
    /// The cluster as the running proxy sees it: roles, health, lag, connections (like pg:info)
    Status {
        /// Print the admin API's JSON as it came
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config file into the running proxy; an invalid file is refused and the old config kept
    Reload,
    /// Hold new transactions (both directions unless one is given) while running ones finish
    Pause {
        /// Hold only units for the leader (anything that may write)
        #[arg(long, conflicts_with = "reads")]
        writes: bool,
        /// Hold only units for followers
        #[arg(long)]
        reads: bool,
    },
    /// Release everything paused
    Resume,
    /// Orchestrated changeover: make a follower the leader while clients see a pause, not an error
    Promote {
        /// The follower to promote
        #[arg(required_unless_present = "abort")]
        instance: Option<String>,
        /// Stop the running changeover and roll back to the old leader (refused once the promotion was asked for)
        #[arg(long, conflicts_with_all = ["instance", "repoint", "drain_timeout", "catchup_timeout"])]
        abort: bool,
        /// Also point the other followers at the new leader
        #[arg(long)]
        repoint: bool,
        /// How long running transactions on the old leader may take before they are cancelled [default: 5s]
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        drain_timeout: Option<Duration>,
        /// How long the follower may take to replay the old leader's last WAL [default: 30s]
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        catchup_timeout: Option<Duration>,
    },
    /// Block until every follower is healthy and caught up (like pg:wait)
    Wait {
        /// Bytes of WAL a follower may still be behind
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        max_lag: u64,
        /// Give up (exit 2) after this long
        #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
        timeout: Duration,
    },
    /// Load test any PostgreSQL endpoint: live progress, tps, latency percentiles, errors by SQLSTATE; with
    /// --admin, which pgsplit instance served what and the replication lag seen; JSON and an HTML report
    Bench(Box<pgsplit::bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors; a usage error exits 1 (SPEC §1), not clap's 2.
            return if error.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    pgsplit::logging::init(cli.log_format);
    let admin = || AdminClient::locate(&cli.config, cli.admin.clone(), cli.admin_token.clone());
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => pgsplit::cli::run(&cli.config),
        Command::Check => pgsplit::cli::check(&cli.config),
        Command::Demo => pgsplit::cli::demo(),
        Command::Status { json } => pgsplit::cli::status(&admin(), json),
        Command::Reload => pgsplit::cli::reload(&admin()),
        Command::Pause { writes, reads } => pgsplit::cli::pause(&admin(), writes, reads),
        Command::Resume => pgsplit::cli::resume(&admin()),
        Command::Promote { abort: true, .. } => pgsplit::cli::abort_promote(&admin()),
        Command::Promote {
            instance,
            repoint,
            drain_timeout,
            catchup_timeout,
            abort: false,
        } => {
            // clap requires an instance without --abort.
            let instance = instance.unwrap_or_default();
            pgsplit::cli::promote(&admin(), &instance, repoint, drain_timeout, catchup_timeout)
        }
        Command::Wait { max_lag, timeout } => pgsplit::cli::wait(&admin(), max_lag, timeout),
        Command::Bench(args) => pgsplit::bench::main(*args),
    }
}
