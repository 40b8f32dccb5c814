//! `pgsplit check -c FILE` as a user runs it: exit code, and every problem on stderr as `file:line:col: message`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pgsplit-config-check-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["check", "-c"])
        .arg(config)
        .env_remove("PGSPLIT_CONFIG")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn canonical_spec_example_passes_check() {
    let scratch = Scratch::new("spec");
    let path = scratch.write("proxy.toml", include_str!("data/spec_example.toml"));

    let output = check(&path);

    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with(&format!("{}: ok\n", path.display())), "{stdout}");
    assert!(
        stdout.contains("2 follower pools, 3 follower instances, 1 user"),
        "{stdout}"
    );
}

#[test]
fn root_proxy_toml_passes_check() {
    let output = check(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")));
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(&output));
}

#[test]
fn every_problem_is_listed_with_its_position() {
    let scratch = Scratch::new("broken");
    let path = scratch.write(
        "broken.toml",
        concat!(
            "[proxy]\n",
            "max_client_connections = 0\n",
            "\n",
            "[leader]\n",
            "host = \"127.0.0.1\"\n",
            "port = 0\n",
            "\n",
            "[[users]]\n",
            "name = \"app\"\n",
            "password = \"app\"\n",
            "\n",
            "[[follower_pools]]\n",
            "name = \"x\"\n",
            "instances = [ { name = \"leader\", host = \"h\", port = 1 } ]\n",
            "\n",
            "[health]\n",
            "interval = 250\n",
        ),
    );

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = stderr(&output);
    let file = path.display().to_string();
    let expected = [
        (2, 26, "max_client_connections must be at least 1"),
        (6, 8, "`port` of the leader must be from 1 to 65535"),
        (13, 8, "follower pool name \"x\""),
        (14, 24, "instance name \"leader\" is already used by the leader"),
        (17, 12, "us, ms, s, min, h, d"),
    ];
    for (line, col, words) in expected {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(words)),
            "no {prefix}…{words} in stderr:\n{stderr}"
        );
    }
    let problem_lines = stderr.lines().filter(|l| l.starts_with(&format!("{file}:"))).count();
    assert_eq!(problem_lines, expected.len(), "stderr:\n{stderr}");
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let scratch = Scratch::new("syntax");
    let path = scratch.write("syntax.toml", "[leader]\nhost = \"h\"\nport = = 5432\n");

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    let prefix = format!("{}:3:8: ", path.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&prefix)),
        "no {prefix} in stderr:\n{stderr}"
    );
}

#[test]
fn missing_file_is_a_config_error() {
    let output = check(Path::new("/nonexistent/pgsplit/proxy.toml"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("/nonexistent/pgsplit/proxy.toml: cannot read"),
        "{}",
        stderr(&output)
    );
}
