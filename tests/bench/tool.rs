//! Running `pgsplit bench` as a child process, and reading back what it wrote.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// No bench run in these tests comes near this; a hung one fails its test instead of the whole binary.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// How a run ended.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The run succeeded; otherwise the test fails with everything it printed.
    pub fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "pgsplit bench failed:\n{}\n{}", self.stdout, self.stderr);
        self
    }
}

/// `pgsplit bench <args>`, to its end.
pub async fn bench(args: &[&str]) -> Ran {
    let child = command(args).output();
    let out = tokio::time::timeout(RUN_LIMIT, child)
        .await
        .unwrap_or_else(|_| panic!("pgsplit bench {args:?} ran past {RUN_LIMIT:?}"))
        .expect("pgsplit runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsplit"));
    command
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A directory for a test's files, removed when dropped.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pgsplit-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// `path(file)` as a command-line argument.
    pub fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    pub fn write(&self, file: &str, text: &str) -> String {
        std::fs::write(self.path(file), text).expect("write scratch file");
        self.arg(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

pub fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value:#}"))
}

/// The latency percentiles at `pointer` are positive and in order.
pub fn assert_percentiles(value: &Value, pointer: &str) {
    let keys = ["p50", "p90", "p99", "p99_9", "max"];
    let values: Vec<f64> = keys.iter().map(|k| number(value, &format!("{pointer}/{k}"))).collect();
    assert!(values[0] > 0.0, "{pointer}: {values:?}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{pointer} out of order: {values:?}"
    );
}
