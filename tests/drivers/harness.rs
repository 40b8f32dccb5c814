//! The driver suites' toolchain: installs the pinned Python and node drivers under `target/drivers/` (once per test
//! binary, skipped when a previous run left them complete), compiles the JDBC suite against Debian's pgjdbc, and
//! runs a suite as a child process with a deadline, failing the test with the child's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Exact versions, for runs that behave the same on every machine.
const PYTHON_PACKAGES: &[&str] = &["psycopg[binary]==3.3.9", "asyncpg==0.32.0"];
const NODE_PACKAGES: &[&str] = &["pg@8.23.1", "pg-copy-streams@7.0.0"];
/// pgjdbc as Debian ships it (`libpostgresql-jdbc-java`).
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";
/// Longest a suite may run before its child is killed and the test fails.
pub const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

/// `target/drivers` (following `CARGO_TARGET_DIR`): everything installed or built for the suites.
fn drivers_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir")
        .join("drivers")
}

/// A suite's source in `tests/drivers/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers").join(name)
}

/// Runs a setup step, or describes how it failed: with `hint` (what to install) if the program is missing, else with
/// the step's output.
fn step(what: &str, cmd: &mut Command, hint: &str) -> Result<(), String> {
    let out = match cmd.stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) => return Err(format!("{what}: cannot run {:?} ({e}): {hint}", cmd.get_program())),
    };
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{what} failed ({}):\n{}", out.status, output_text(&out)))
}

fn output_text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Makes `dir` hold what `install` puts there, unless its marker already names exactly `packages`. A half-finished
/// install (no marker) is removed and redone; the marker is written only after `install` succeeded.
fn install_once(
    dir: &Path,
    packages: &[&str],
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let marker = dir.join(".pgsplit-installed");
    let wanted = packages.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    install(dir)?;
    fs::write(&marker, wanted).map_err(|e| format!("writing {}: {e}", marker.display()))
}

fn unwrap_setup<T>(result: &'static Result<T, String>) -> &'static T {
    result.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// The venv's `python` with psycopg and asyncpg installed (from PyPI on first use).
pub fn python() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    unwrap_setup(VENV.get_or_init(|| {
        let venv = drivers_dir().join("venv");
        install_once(&venv, PYTHON_PACKAGES, |venv| {
            let venv_hint = "needs python3 with its venv module (Debian: python3-venv)";
            step(
                "python3 -m venv",
                Command::new("python3").args(["-m", "venv"]).arg(venv),
                venv_hint,
            )?;
            step(
                "pip install (needs PyPI)",
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .args(PYTHON_PACKAGES),
                "the venv has no pip",
            )
        })?;
        Ok(venv.join("bin/python"))
    }))
    .as_path()
}

/// A `node_modules` holding pg and pg-copy-streams (from npm on first use), for `NODE_PATH`.
pub fn node_modules() -> &'static Path {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    unwrap_setup(NODE.get_or_init(|| {
        let prefix = drivers_dir().join("node");
        install_once(&prefix, NODE_PACKAGES, |prefix| {
            step(
                "npm install (needs the npm registry)",
                Command::new("npm")
                    .args(["install", "--save-exact", "--no-audit", "--no-fund", "--prefix"])
                    .arg(prefix)
                    .args(NODE_PACKAGES),
                "needs node and npm (Debian: nodejs, npm)",
            )
        })?;
        Ok(prefix.join("node_modules"))
    }))
    .as_path()
}

/// The class path running `JdbcSuite`: the suite compiled with `javac`, plus Debian's pgjdbc.
pub fn jdbc_classpath() -> &'static str {
    static CLASSPATH: OnceLock<Result<String, String>> = OnceLock::new();
    unwrap_setup(CLASSPATH.get_or_init(|| {
        if !Path::new(JDBC_JAR).exists() {
            return Err(format!(
                "{JDBC_JAR} is missing: apt-get install -y --no-install-recommends libpostgresql-jdbc-java"
            ));
        }
        let classes = drivers_dir().join("java");
        if classes.exists() {
            fs::remove_dir_all(&classes).map_err(|e| format!("removing {}: {e}", classes.display()))?;
        }
        let mut javac = Command::new("javac");
        javac
            .args(["-encoding", "UTF-8", "-cp", JDBC_JAR, "-d"])
            .arg(&classes)
            .arg(script("JdbcSuite.java"));
        let hint = "apt-get install -y --no-install-recommends default-jdk-headless";
        step("javac JdbcSuite.java", &mut javac, hint)?;
        Ok(format!("{}:{JDBC_JAR}", classes.display()))
    }))
    .as_str()
}

/// Runs `suite` with `DATABASE_URL` set, killing it (by its pid, as a process group) after [`SUITE_TIMEOUT`].
/// Returns its stdout; panics with everything it printed if it fails or runs out of time.
pub async fn run_suite(driver: &str, mut suite: tokio::process::Command, database_url: &str) -> String {
    let started = Instant::now();
    let mut child = suite
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0) // its own group, so a timeout kills whatever it started too
        .spawn()
        .unwrap_or_else(|e| panic!("{driver}: cannot start {suite:?}: {e}"));
    let pid = child.id().expect("a just-spawned child has a pid");
    let stdout = tokio::spawn(read_all(child.stdout.take().expect("piped")));
    let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped")));
    let status = match tokio::time::timeout(SUITE_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.unwrap_or_else(|e| panic!("{driver} suite: waiting for pid {pid}: {e}"))),
        Err(_) => {
            // SAFETY: a plain syscall. The child is not reaped yet (its wait was cancelled), so its pid, which is also
            // its process group's id, is still its own.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait().await;
            None
        }
    };
    let out = Output {
        status: status.unwrap_or_default(),
        stdout: stdout.await.expect("stdout reader"),
        stderr: stderr.await.expect("stderr reader"),
    };
    match status {
        Some(status) if status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Some(status) => panic!(
            "{driver} suite failed ({status}) after {:?}:\n{}",
            started.elapsed(),
            output_text(&out)
        ),
        None => panic!(
            "{driver} suite still running after {SUITE_TIMEOUT:?}: killed pid {pid}\n{}",
            output_text(&out)
        ),
    }
}

/// Everything a child writes to one of its pipes, until it closes.
async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await;
    bytes
}
