//! Fuzz target `config`: proxy.toml text through `config::Config::parse` (TOML, serde, units, validation, error
//! positions), which must answer any text with a config or with errors, each placed on a line of the text. A config
//! that parses is then promoted both ways pgsplit does it — `Config::promoted` in memory and
//! `config::rewrite::promote_in_text` on the file's text — for each follower, and the two must agree.
//!
//! Input: the file's text (bytes that are not UTF-8 are replaced, as no file read as a `String` holds them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsplit::config::rewrite::promote_in_text;
use pgsplit::config::{Config, parse_duration};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = match Config::parse(&text, FILE) {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error names at least one problem");
            let lines = text.split('\n').count();
            for error in &errors.errors {
                assert_eq!(error.file, FILE);
                assert!(error.line <= lines, "{error} is past the last line ({lines})");
                assert_eq!(error.line == 0, error.col == 0, "{error}");
                assert!(
                    !error.message.is_empty() && !error.message.contains(char::is_control),
                    "{error:?}"
                );
            }
            let _ = errors.to_string();
            if text.len() <= 64 {
                let _ = parse_duration(&text);
            }
            return;
        }
    };
    let _ = config.summary();
    for pool in &config.follower_pools {
        for follower in &pool.instances {
            let in_memory = config.promoted(&follower.name).expect("a follower of the config");
            // The rewrite refuses some promotions (one that leaves an invalid file); one it writes must read back
            // as the same promotion made in memory.
            if let Ok(rewritten) = promote_in_text(&text, FILE, &follower.name) {
                let reread = Config::parse(&rewritten, FILE).expect("promote_in_text checks what it writes");
                assert_eq!(
                    reread, in_memory,
                    "promoting {:?} in the text and in memory differ",
                    follower.name
                );
            }
        }
    }
});
