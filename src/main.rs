//! The `pgsplit` command line: parses arguments and hands over to the library. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgsplit",
    version,
    about = "PostgreSQL proxy: one endpoint, writes to the leader, reads over followers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run`)
    #[arg(short, long, env = "PGSPLIT_CONFIG", default_value = "proxy.toml", global = true)]
    config: PathBuf,
    /// Log format on stderr
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: pgsplit::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Run,
    /// Validate a config file; exit 1 with file:line:col for every problem
    Check,
    /// Start a throwaway local cluster (leader + 2 followers) with pgsplit in front; Ctrl-C removes it
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgsplit::logging::init(cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => pgsplit::cli::run(&cli.config),
        Command::Check => pgsplit::cli::check(&cli.config),
        Command::Demo => pgsplit::cli::demo(),
    }
}
