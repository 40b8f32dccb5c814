//! What each subcommand does, at the edge of the program: load config, start things, map failures to exit codes
//! (0 ok, 1 usage/config error, 2 runtime failure).

use std::path::Path;
use std::process::ExitCode;

pub fn run(_config_path: &Path) -> ExitCode {
    eprintln!("pgsplit run: not wired yet");
    ExitCode::from(2)
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
    eprintln!("pgsplit demo: not wired yet");
    ExitCode::from(2)
}
