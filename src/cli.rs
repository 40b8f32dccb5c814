//! What each subcommand does, at the edge of the program: load config, start things, map failures to exit codes
//! (0 ok, 1 usage/config error, 2 runtime failure).

use std::path::Path;
use std::process::ExitCode;

pub fn run(_config_path: &Path) -> ExitCode {
    eprintln!("pgsplit run: not wired yet");
    ExitCode::from(2)
}

pub fn check(_config_path: &Path) -> ExitCode {
    eprintln!("pgsplit check: not wired yet");
    ExitCode::from(2)
}

pub fn demo() -> ExitCode {
    eprintln!("pgsplit demo: not wired yet");
    ExitCode::from(2)
}
