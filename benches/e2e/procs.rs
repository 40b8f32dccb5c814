//! The processes the end-to-end bench drives: the proxies under test (pgsplit, PgBouncer) as children stopped by
//! PID, pgbench runs bounded in time, and the /proc readings (CPU ticks, RSS) taken around them. Knows nothing about
//! workloads or reports.

use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use pgsplit::demo::cluster::Toolbox;

/// How long a started proxy gets to accept TCP connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a proxy gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// A pgbench run gets its duration plus this before it counts as stalled and is killed.
const PGBENCH_SLACK: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

/// A proxy started by the bench. Dropping it stops it: SIGTERM to its PID, SIGKILL after [`STOP_GRACE`].
pub struct ProxyProcess {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    stopped: Option<ExitStatus>,
}

impl ProxyProcess {
    /// Spawns `cmd` with stdout and stderr appended to `log`; the child gets SIGTERM if the bench dies first.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<ProxyProcess> {
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().context("duplicating a log file handle")?)
            .stderr(file);
        // SAFETY: the closure only calls prctl, which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(ProxyProcess {
            name: name.to_string(),
            child,
            log,
            stopped: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until `port` on loopback accepts a TCP connection; fails early (with the log's tail) if the process
    /// exits.
    pub fn wait_listening(&mut self, port: u16) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start ({status}); log:\n{}",
                    self.name,
                    log_tail(&self.log, 20)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not listening on {addr} after {LISTEN_TIMEOUT:?}", self.name);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then up to [`STOP_GRACE`] for the exit, then SIGKILL. Returns how it ended and how long the exit
    /// took. Idempotent.
    pub fn stop(&mut self) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        if let Some(status) = self.stopped {
            return Ok((status, Duration::ZERO));
        }
        if let Some(status) = self.child.try_wait()? {
            self.stopped = Some(status);
            return Ok((status, Duration::ZERO));
        }
        signal(self.pid(), libc::SIGTERM)?;
        while started.elapsed() < STOP_GRACE {
            if let Some(status) = self.child.try_wait()? {
                self.stopped = Some(status);
                return Ok((status, started.elapsed()));
            }
            std::thread::sleep(POLL);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.stopped = Some(status);
        bail!("{} ignored SIGTERM for {STOP_GRACE:?}; killed ({status})", self.name)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill has no memory preconditions; `pid` is our own child, not yet reaped.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error()).context("kill");
    }
    Ok(())
}

/// A scratch dir for configs and logs, owned by the PostgreSQL OS user (PgBouncer runs as it); removed on drop.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn create(tools: &Toolbox) -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("pgsplit-e2e-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        tools.chown(&dir)?;
        Ok(WorkDir(dir))
    }

    /// Writes `name` in the dir, readable by the PostgreSQL OS user.
    pub fn write(&self, tools: &Toolbox, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        tools.chown(&path)?;
        Ok(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The last `lines` lines of a log file ("" if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// utime + stime of a whole process (all its threads), in microseconds.
pub fn cpu_micros(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64> {
        let field = fields.get(index).copied().unwrap_or_default();
        field
            .parse::<u64>()
            .with_context(|| format!("/proc/{pid}/stat field {}: {field:?}", index + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK)")?;
    Ok(total * 1_000_000 / per_second)
}

/// Context switches (voluntary + involuntary) of all of a process's current threads, from
/// /proc/<pid>/task/*/status. A voluntary one is a wait that blocked: mostly an idle event loop going to sleep.
pub fn context_switches(pid: u32) -> Result<u64> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        // A thread may end between the listing and the read; it no longer counts either way.
        let Ok(status) = fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(value) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += value
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("{tasks}: {line:?}"))?;
            }
        }
    }
    Ok(total)
}

/// Resident set size of a process, in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("VmRSS {line:?}"))
}

/// What one pgbench run reported.
#[derive(Debug, Clone, Default)]
pub struct PgbenchOutput {
    pub tps: f64,
    pub latency_ms: f64,
    pub processed: u64,
    pub failed: u64,
    /// Clients that pgbench reports as aborted (an error outside the retry rules ends that client's run).
    pub aborted: u64,
    /// Non-empty when pgbench exited with an error: its status and first stderr lines.
    pub problem: String,
}

/// One pgbench invocation against `127.0.0.1:port/database` as `user`, with `env` added to its environment (say,
/// `PGSSLMODE`), killed if it outlives its duration by [`PGBENCH_SLACK`]. `Err` when it produced no result (could
/// not start, stalled, no tps line).
pub fn pgbench(
    tools: &Toolbox,
    (port, database): (u16, &str),
    login: (&str, &str),
    args: &[String],
    env: &[(&str, &str)],
) -> Result<PgbenchOutput> {
    let duration: u64 = args
        .iter()
        .position(|a| a == "-T")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut cmd = tools.command("pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", login.0])
        .args(args)
        .arg(database)
        .env("PGPASSWORD", login.1)
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("starting pgbench")?;
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let limit = Duration::from_secs(duration) + PGBENCH_SLACK;
    let output = match receiver.recv_timeout(limit) {
        Ok(output) => output.context("waiting for pgbench")?,
        Err(_) => {
            signal(pid, libc::SIGKILL)?;
            let _ = receiver.recv_timeout(Duration::from_secs(10));
            bail!("pgbench stalled: still running {limit:?} into a {duration} s run; killed");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut parsed = parse_pgbench(&stdout).with_context(|| {
        format!(
            "pgbench ({}) printed no result: {}",
            output.status,
            first_lines(&stderr, 5)
        )
    })?;
    parsed.aborted = stderr.lines().filter(|l| l.contains(" aborted")).count() as u64;
    if !output.status.success() {
        parsed.problem = format!("pgbench {}: {}", output.status, first_lines(&stderr, 3));
    }
    Ok(parsed)
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join(" | ")
}

/// Reads pgbench's summary (PostgreSQL 15 format); `None` without a tps line.
pub fn parse_pgbench(stdout: &str) -> Option<PgbenchOutput> {
    let mut out = PgbenchOutput::default();
    let mut seen_tps = false;
    let first_number = |text: &str| -> Option<f64> { text.split_whitespace().next()?.parse().ok() };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("tps = ") {
            out.tps = first_number(rest)?;
            seen_tps = true;
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            out.latency_ms = first_number(rest)?;
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ") {
            out.processed = rest.split(['/', ' ']).next()?.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            out.failed = rest.split_whitespace().next()?.parse().ok()?;
        }
    }
    seen_tps.then_some(out)
}
