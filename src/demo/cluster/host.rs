//! What the host provides for a local cluster: the PostgreSQL server binaries, the OS user that runs them, a base
//! dir that user can use, free loopback ports, and `Command`s prepared to run as that user with a clean environment.
//! Never starts a server and never decides anything about the cluster's shape.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::ClusterError;

/// Where distributions put versioned server binaries (`<root>/<version>/bin`).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// `sun_path` holds 108 bytes including the NUL; PostgreSQL refuses longer socket paths.
const MAX_SOCKET_PATH: usize = 107;

/// An entry of /etc/passwd: the unprivileged user PostgreSQL runs as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The server binaries plus the identity to run them with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Toolbox {
    bin_dir: PathBuf,
    run_as: Option<OsUser>,
}

impl Toolbox {
    /// Finds the server binaries and, when running as root, the `postgres` OS user (initdb refuses root).
    pub fn locate() -> Result<Toolbox, ClusterError> {
        let bin_dir = find_bin_dir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let is_root = unsafe { libc::geteuid() } == 0;
        let run_as = if is_root {
            let passwd = fs::read_to_string("/etc/passwd").map_err(|source| ClusterError::Io {
                what: "reading /etc/passwd".into(),
                source,
            })?;
            Some(passwd_entry(&passwd, "postgres").ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        Ok(Toolbox { bin_dir, run_as })
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The OS user the programs run as; `None` means the current user.
    pub fn run_as(&self) -> Option<&OsUser> {
        self.run_as.as_ref()
    }

    /// `<bin_dir>/<program>`, prepared by [`Toolbox::prepare`].
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        self.prepare(&mut cmd);
        cmd
    }

    /// `/bin/sh -c <script> sh <args…>` (the script reads its arguments as `$1`, `$2`, …), prepared likewise.
    pub fn shell<I, S>(&self, script: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("sh").args(args);
        self.prepare(&mut cmd);
        cmd
    }

    /// Runs `cmd` as the PostgreSQL OS user with no inherited `PG*` variables, C messages, and `/` as working
    /// directory (the caller's may be closed to that user). Programs get absolute paths only.
    pub fn prepare(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LC_ALL", "C").current_dir("/");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
    }

    /// Hands `path` to the PostgreSQL OS user (no-op when that is us).
    pub fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        match &self.run_as {
            Some(user) => {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| ClusterError::Io {
                    what: format!("chown {} to {}", path.display(), user.name),
                    source,
                })
            }
            None => Ok(()),
        }
    }
}

/// `pg_config --bindir` if it holds `initdb`, else the highest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    select_bin_dir(from_pg_config.as_deref(), Path::new(VERSIONED_ROOT)).ok_or_else(|| ClusterError::NoServerBinaries {
        searched: format!("`pg_config --bindir`, {VERSIONED_ROOT}/*/bin"),
    })
}

/// The bindir choice without the side effects: `pg_config_bindir` wins if it holds `initdb`; otherwise the
/// numerically highest `<versioned_root>/<version>/bin` holding `initdb` (so 15 beats 9.6).
pub fn select_bin_dir(pg_config_bindir: Option<&Path>, versioned_root: &Path) -> Option<PathBuf> {
    if let Some(dir) = pg_config_bindir
        && dir.join("initdb").is_file()
    {
        return Some(dir.to_path_buf());
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versioned_root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Finds `name` in passwd-format text (`name:x:uid:gid:gecos:home:shell`).
pub fn passwd_entry(passwd: &str, name: &str) -> Option<OsUser> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != name {
            return None;
        }
        Some(OsUser {
            name: name.to_string(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: PathBuf::from(fields[5]),
        })
    })
}

/// `n` distinct free loopback ports: all are bound to 127.0.0.1:0 at once (so the kernel cannot hand out one twice),
/// read, and released. Another process may still take one before the server binds it; callers retry on that.
pub fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| ClusterError::Io {
            what: "binding 127.0.0.1:0 to find a free port".into(),
            source,
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| ClusterError::Io {
            what: "reading a bound port".into(),
            source,
        })
}

/// Creates a fresh, uniquely named dir under `std::env::temp_dir()` (`pgsplit-cluster-<pid>-<n>`).
pub fn unique_base_dir() -> Result<PathBuf, ClusterError> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let tmp = std::path::absolute(std::env::temp_dir()).map_err(|source| ClusterError::Io {
        what: "resolving the temp dir".into(),
        source,
    })?;
    loop {
        let dir = tmp.join(format!(
            "pgsplit-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(ClusterError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                });
            }
        }
    }
}

/// An absolute, existing, empty base dir owned by the PostgreSQL OS user, short enough for socket paths.
pub(super) fn prepare_base_dir(tools: &Toolbox, requested: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let dir = match requested {
        None => unique_base_dir()?,
        Some(dir) => {
            let dir = std::path::absolute(dir).map_err(|source| ClusterError::Io {
                what: format!("resolving {}", dir.display()),
                source,
            })?;
            if fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(ClusterError::Options(format!(
                    "base dir {} is not empty (the cluster removes its base dir on stop)",
                    dir.display()
                )));
            }
            fs::create_dir_all(&dir).map_err(|source| ClusterError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
            dir
        }
    };
    let socket_path_len = dir.as_os_str().len() + "/.s.PGSQL.65535".len();
    if socket_path_len > MAX_SOCKET_PATH {
        let _ = fs::remove_dir(&dir);
        return Err(ClusterError::Options(format!(
            "base dir {} is too long for unix socket paths ({socket_path_len} > {MAX_SOCKET_PATH} bytes)",
            dir.display()
        )));
    }
    tools.chown(&dir)?;
    if let Some(user) = tools.run_as() {
        // A parent dir closed to that user (e.g. under /root) would only show up later as an initdb failure.
        let probe = tools.shell(r#"test -w "$1" && test -x "$1""#, [&dir]);
        if run(probe, None).is_err() {
            let _ = fs::remove_dir(&dir);
            return Err(ClusterError::Options(format!(
                "base dir {} is not usable by OS user {} (is a parent directory closed to it?)",
                dir.display(),
                user.name
            )));
        }
    }
    Ok(dir)
}

/// A command's outcome when it did not succeed (or could not be spawned).
#[derive(Debug)]
pub struct Failure {
    pub command: String,
    pub status: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, feeding `stdin` (on a separate thread, so a large input cannot deadlock against a
/// large output). Returns stdout on success.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String, Failure> {
    let command = describe(&cmd);
    let spawn_failure = |e: io::Error| Failure {
        command: command.clone(),
        status: "could not run".into(),
        stderr: e.to_string(),
    };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_failure)?;
    let output: io::Result<Output> = std::thread::scope(|scope| {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            scope.spawn(move || {
                use std::io::Write;
                // A program that exits early closes its stdin; its exit status tells the story.
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        child.wait_with_output()
    });
    let output = output.map_err(spawn_failure)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Failure {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim_end().to_string(),
        })
    }
}

/// `program arg arg…` for messages (program by file name; no environment).
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let mut text = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// The last `lines` lines of a log file (reads at most its last 32 KiB); empty if it does not exist.
pub fn log_tail(path: &Path, lines: usize) -> String {
    log_since(path, 0)
        .map(|text| {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        })
        .unwrap_or_default()
}

/// The log from byte `offset` on, limited to its last 32 KiB.
pub fn log_since(path: &Path, offset: u64) -> io::Result<String> {
    const LIMIT: u64 = 32 * 1024;
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = offset.max(len.saturating_sub(LIMIT)).min(len);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The current size of a file, 0 if it does not exist.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgsplit-host-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_bin(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("initdb"), "").unwrap();
    }

    #[test]
    fn pg_config_bindir_wins_when_it_holds_initdb() {
        let root = scratch("pgconfig");
        fake_bin(&root.join("custom"));
        fake_bin(&root.join("versions/16/bin"));
        let chosen = select_bin_dir(Some(&root.join("custom")), &root.join("versions"));
        assert_eq!(chosen, Some(root.join("custom")));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn highest_numeric_version_wins_when_pg_config_has_no_initdb() {
        let root = scratch("versions");
        fs::create_dir_all(root.join("usrbin")).unwrap(); // like Debian's libpq-dev pg_config: /usr/bin
        fake_bin(&root.join("versions/9.6/bin"));
        fake_bin(&root.join("versions/15/bin"));
        fake_bin(&root.join("versions/13/bin"));
        fs::create_dir_all(root.join("versions/17/bin")).unwrap(); // client-only: no initdb
        fs::create_dir_all(root.join("versions/notes")).unwrap();
        let chosen = select_bin_dir(Some(&root.join("usrbin")), &root.join("versions"));
        assert_eq!(chosen, Some(root.join("versions/15/bin")));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_bindir_when_nothing_holds_initdb() {
        let root = scratch("none");
        fs::create_dir_all(root.join("versions/15/bin")).unwrap();
        assert_eq!(select_bin_dir(None, &root.join("versions")), None);
        assert_eq!(select_bin_dir(None, &root.join("missing")), None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn passwd_entry_reads_uid_gid_and_home() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgresql:x:7:7::/nowhere:/bin/false\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        let user = passwd_entry(passwd, "postgres").unwrap();
        assert_eq!(
            user,
            OsUser {
                name: "postgres".into(),
                uid: 101,
                gid: 104,
                home: PathBuf::from("/var/lib/postgresql")
            }
        );
        assert_eq!(passwd_entry(passwd, "nobody"), None);
        assert_eq!(passwd_entry("postgres:x:abc:104::/h:/bin/sh", "postgres"), None);
    }

    #[test]
    fn free_ports_are_distinct_and_non_zero() {
        // Whether a port is still free a moment later is up to the rest of the machine; the cluster start retries.
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p != 0));
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    #[test]
    fn failed_command_reports_status_and_stderr() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "cat; echo oops >&2; exit 3"]);
        let failure = run(cmd, Some("input")).unwrap_err();
        assert_eq!(failure.command, "sh -c cat; echo oops >&2; exit 3");
        assert!(failure.status.contains('3'), "{}", failure.status);
        assert_eq!(failure.stderr, "oops");
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("-");
        assert_eq!(run(cmd, Some("echoed")).unwrap(), "echoed");
    }

    #[test]
    fn unique_base_dirs_differ_and_exist() {
        let a = unique_base_dir().unwrap();
        let b = unique_base_dir().unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir() && a.is_absolute());
        fs::remove_dir(a).unwrap();
        fs::remove_dir(b).unwrap();
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let root = scratch("log");
        let log = root.join("postgres.log");
        fs::write(&log, "one\ntwo\nthree\n").unwrap();
        assert_eq!(log_tail(&log, 2), "two\nthree");
        assert_eq!(log_since(&log, 4).unwrap(), "two\nthree\n");
        assert_eq!(log_tail(&root.join("absent.log"), 5), "");
        fs::remove_dir_all(root).unwrap();
    }
}
