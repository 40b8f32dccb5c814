//! A throwaway local PostgreSQL cluster — one leader and N streaming followers on 127.0.0.1 — for `pgsplit demo` and
//! every integration test. Owns the instances' whole life: initdb, base backups, configuration, start/stop, and
//! removal of its base dir. Synchronous (`std::process`), no async runtime; never used by the proxy's data path.
//!
//! Layout under the base dir (which is also every instance's unix socket directory):
//! `<base>/<name>/data` (the data dir) and `<base>/<name>/postgres.log`, for names `leader`, `f1`, `f2`, …
//! Ports live in each instance's `postgresql.auto.conf`; the shared settings in the leader's `postgresql.conf`,
//! which base backups copy to the followers.

mod host;
mod patroni;
mod ssl;
mod watchdog;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use host::{OsUser, Toolbox, find_bin_dir, free_ports, passwd_entry, select_bin_dir, unique_base_dir};
pub use patroni::{PATRONI_READY_TIMEOUT, PatroniCluster, PatroniMember, PatroniOptions};
pub use ssl::ServerCertificate;
pub use watchdog::Watchdog;

/// How long `start` waits for every follower to stream, and the default for the other waits.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two looks at a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Starts of one instance when the server finds its (picked, not fixed) port taken.
const PORT_ATTEMPTS: usize = 5;
/// Log lines quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// Why starting or operating the cluster failed: what was run, what it said, and the server log's tail.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (looked at {searched}); install them, e.g. `apt-get install -y postgresql-15`"
    )]
    NoServerBinaries { searched: String },
    #[error(
        "running as root, but /etc/passwd has no `postgres` user to run PostgreSQL as (initdb refuses root); \
         `apt-get install -y postgresql-15` creates it"
    )]
    NoPostgresUser,
    #[error("invalid cluster options: {0}")]
    Options(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{instance}: `{command}` failed ({status}): {stderr}{}", tail_section(.log_tail))]
    Command {
        instance: String,
        command: String,
        status: String,
        stderr: String,
        log_tail: String,
    },
    #[error("{what}: not reached within {waited:?}; last seen: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
}

fn tail_section(log_tail: &str) -> String {
    if log_tail.is_empty() {
        String::new()
    } else {
        format!("\n--- server log (tail) ---\n{log_tail}")
    }
}

/// What to start. `Default` is the demo's shape: leader + 2 followers, user/password/database `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    pub followers: usize,
    /// Must be absent or empty: the cluster removes it on stop. Default: a fresh dir under `std::env::temp_dir()`.
    pub base_dir: Option<PathBuf>,
    /// Default: a free loopback port (re-picked if the server then finds it taken).
    pub leader_port: Option<u16>,
    /// One per follower, or `None` for free loopback ports.
    pub follower_ports: Option<Vec<u16>>,
    pub app_user: String,
    pub app_password: String,
    pub app_database: String,
    /// TLS on the leader, and TCP logins only over TLS (`hostssl`).
    pub ssl: Option<ServerCertificate>,
    /// pg_hba.conf rules placed before the general one.
    pub hba_rules: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            followers: 2,
            base_dir: None,
            leader_port: None,
            follower_ports: None,
            app_user: "app".into(),
            app_password: "app".into(),
            app_database: "app".into(),
            ssl: None,
            hba_rules: Vec::new(),
        }
    }
}

/// One PostgreSQL server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `leader`, `f1`, `f2`, … (also its `cluster_name`, hence `application_name` in `pg_stat_replication`).
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub socket_dir: PathBuf,
}

impl Instance {
    fn new(name: &str, port: u16, base_dir: &Path) -> Instance {
        let dir = base_dir.join(name);
        Instance {
            name: name.to_string(),
            port,
            data_dir: dir.join("data"),
            log_file: dir.join("postgres.log"),
            socket_dir: base_dir.to_path_buf(),
        }
    }

    /// The directory holding the data dir and the log.
    pub fn instance_dir(&self) -> &Path {
        self.data_dir.parent().expect("data dir has a parent")
    }

    /// `postgres://user:password@127.0.0.1:port/database`, with user, password and database percent-encoded.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(database)
        )
    }

    /// The running postmaster's process id (first line of `postmaster.pid`), if the server is up.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// `pg_ctl stop -m <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running cluster. Stops its servers and removes its base dir on [`LocalCluster::stop`] or drop.
#[derive(Debug)]
pub struct LocalCluster {
    tools: Toolbox,
    base_dir: PathBuf,
    leader: Instance,
    followers: Vec<Instance>,
    app_user: String,
    app_password: String,
    app_database: String,
    ssl: Option<ServerCertificate>,
    hba_rules: Vec<String>,
    stopped: bool,
}

impl LocalCluster {
    /// Creates and starts the cluster; returns once every follower streams from the leader. On error, whatever was
    /// started is stopped and the base dir removed.
    pub fn start(options: ClusterOptions) -> Result<LocalCluster, ClusterError> {
        if let Some(ports) = &options.follower_ports
            && ports.len() != options.followers
        {
            return Err(ClusterError::Options(format!(
                "{} follower ports given for {} followers",
                ports.len(),
                options.followers
            )));
        }
        let tools = Toolbox::locate()?;
        let base_dir = host::prepare_base_dir(&tools, options.base_dir.as_deref())?;
        let picked = free_ports(1 + options.followers)?;
        let leader_port = options.leader_port.unwrap_or(picked[0]);
        // From here on, dropping `cluster` cleans up whatever got started.
        let mut cluster = LocalCluster {
            leader: Instance::new("leader", leader_port, &base_dir),
            followers: Vec::with_capacity(options.followers),
            tools,
            base_dir,
            app_user: options.app_user,
            app_password: options.app_password,
            app_database: options.app_database,
            ssl: options.ssl,
            hba_rules: options.hba_rules,
            stopped: false,
        };
        cluster.init_leader(options.leader_port.is_some())?;
        for i in 0..options.followers {
            let fixed = options.follower_ports.as_ref().map(|ports| ports[i]);
            cluster.add_follower(&format!("f{}", i + 1), fixed.unwrap_or(picked[1 + i]), fixed.is_some())?;
        }
        cluster.wait_streaming(READY_TIMEOUT)?;
        Ok(cluster)
    }

    pub fn leader(&self) -> &Instance {
        &self.leader
    }

    pub fn followers(&self) -> &[Instance] {
        &self.followers
    }

    /// The leader, then the followers in order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        std::iter::once(&self.leader).chain(&self.followers)
    }

    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances().find(|i| i.name == name)
    }

    pub fn bin_dir(&self) -> &Path {
        self.tools.bin_dir()
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The binaries and OS identity, for running other PostgreSQL programs (pgbench, pg_dump, …) the same way.
    pub fn tools(&self) -> &Toolbox {
        &self.tools
    }

    pub fn app_user(&self) -> &str {
        &self.app_user
    }

    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    pub fn app_database(&self) -> &str {
        &self.app_database
    }

    /// `instance.url(app_user, app_password, app_database)`.
    pub fn app_url(&self, instance: &Instance) -> String {
        instance.url(&self.app_user, &self.app_password, &self.app_database)
    }

    /// Runs `sql` (any number of statements) with psql over the unix socket as superuser `postgres` on the app
    /// database; stops at the first error. Returns stdout (unaligned, tuples only) without its final newline.
    pub fn psql(&self, instance: &Instance, sql: &str) -> Result<String, ClusterError> {
        self.psql_on(instance, &self.app_database, sql)
    }

    /// [`LocalCluster::psql`] on another database.
    pub fn psql_on(&self, instance: &Instance, database: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.tools.command("psql");
        cmd.args(["-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-f", "-", "-h"])
            .arg(&instance.socket_dir)
            .args(["-p", &instance.port.to_string(), "-d", database])
            .env("PGCONNECT_TIMEOUT", "10");
        let out = host::run(cmd, Some(sql)).map_err(|f| command_error(instance, f))?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_string())
    }

    /// `pg_ctl stop -m <mode>`, waiting until the server is down.
    pub fn stop_instance(&self, instance: &Instance, mode: StopMode) -> Result<(), ClusterError> {
        let mut cmd = self.tools.command("pg_ctl");
        cmd.args(["-w", "-t", "60", "-m", mode.as_str(), "stop", "-D"])
            .arg(&instance.data_dir);
        host::run(cmd, None).map(drop).map_err(|f| command_error(instance, f))
    }

    /// `pg_ctl start`, waiting until the server accepts connections (a follower may not stream yet: see
    /// [`LocalCluster::wait_streaming`]).
    pub fn start_instance(&self, instance: &Instance) -> Result<(), ClusterError> {
        pg_ctl_start(&self.tools, instance)
    }

    /// The last `lines` lines of an instance's server log.
    pub fn log_tail(&self, instance: &Instance, lines: usize) -> String {
        host::log_tail(&instance.log_file, lines)
    }

    /// Polls the leader's `pg_stat_replication` until every follower shows `streaming`.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<(), ClusterError> {
        let want: BTreeSet<&str> = self.followers.iter().map(|f| f.name.as_str()).collect();
        let sql = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'";
        poll("every follower streaming from the leader", timeout, || {
            let out = self.psql_on(&self.leader, "postgres", sql)?;
            let seen: BTreeSet<&str> = out.lines().collect();
            Ok(want
                .is_subset(&seen)
                .then_some(())
                .ok_or_else(|| format!("streaming: {seen:?}")))
        })
    }

    /// Reads the leader's current WAL position, then polls every follower until it has replayed at least that far.
    pub fn wait_replayed(&self, timeout: Duration) -> Result<(), ClusterError> {
        let lsn = self.psql_on(&self.leader, "postgres", "SELECT pg_current_wal_lsn()")?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, pg_last_wal_replay_lsn()");
        let deadline = Instant::now() + timeout;
        for follower in &self.followers {
            let what = format!("{} replayed the leader's LSN {lsn}", follower.name);
            poll(&what, deadline.saturating_duration_since(Instant::now()), || {
                let out = self.psql_on(follower, "postgres", &sql)?;
                Ok(match out.split_once('|') {
                    Some(("t", _)) => Ok(()),
                    Some((_, replayed)) => Err(format!("replay LSN {replayed:?}")),
                    None => Err(out),
                })
            })?;
        }
        Ok(())
    }

    /// Stops every running instance (`-m fast`, falling back to `immediate`), followers first, then removes the
    /// base dir. Idempotent; also run on drop. Returns the first failure after doing all it can.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut first_error = None;
        for instance in self.followers.iter().chain(std::iter::once(&self.leader)) {
            if !instance.data_dir.join("postmaster.pid").exists() {
                continue;
            }
            if let Err(e) = self.stop_instance(instance, StopMode::Fast) {
                let _ = self.stop_instance(instance, StopMode::Immediate);
                first_error.get_or_insert(e);
            }
        }
        if let Err(source) = fs::remove_dir_all(&self.base_dir)
            && source.kind() != io::ErrorKind::NotFound
        {
            let what = format!("removing {}", self.base_dir.display());
            first_error.get_or_insert(ClusterError::Io { what, source });
        }
        first_error.map_or(Ok(()), Err)
    }

    fn init_leader(&mut self, fixed_port: bool) -> Result<(), ClusterError> {
        let leader = self.leader.clone();
        self.make_instance_dir(&leader)?;
        let mut initdb = self.tools.command("initdb");
        initdb
            .args(["-N", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-D"])
            .arg(&leader.data_dir);
        host::run(initdb, None).map_err(|f| command_error(&leader, f))?;
        let mut settings = shared_settings(&self.base_dir);
        if let Some(certificate) = &self.ssl {
            settings.push_str(&ssl::enable(&self.tools, &leader.data_dir, certificate)?);
        }
        append(&leader.data_dir.join("postgresql.conf"), &settings)?;
        write(
            &leader.data_dir.join("pg_hba.conf"),
            &ssl::hba(self.ssl.is_some(), &self.hba_rules),
        )?;
        start_fresh(&self.tools, &mut self.leader, fixed_port)?;

        // The app user is also pgsplit's control login: the changeover promotes, fences and reloads with it and
        // watches every session's transaction, and the monitor reads each follower's WAL receiver (the last two
        // need pg_read_all_stats).
        let user = quote_ident(&self.app_user);
        let setup = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {user} LOGIN PASSWORD {};\n\
             CREATE DATABASE {} OWNER {user};\n\
             GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer), pg_reload_conf() TO {user};\n\
             GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only, primary_conninfo TO {user};\n\
             GRANT pg_signal_backend, pg_read_all_settings, pg_read_all_stats TO {user};\n",
            quote_literal(&self.app_password),
            quote_ident(&self.app_database),
        );
        self.psql_on(&self.leader, "postgres", &setup).map(drop)
    }

    fn add_follower(&mut self, name: &str, port: u16, fixed_port: bool) -> Result<(), ClusterError> {
        let follower = Instance::new(name, port, &self.base_dir);
        self.make_instance_dir(&follower)?;
        self.followers.push(follower.clone());
        let mut backup = self.tools.command("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &self.leader.port.to_string(), "-U", "postgres"])
            .args(["-R", "-X", "stream", "-c", "fast", "-N", "-D"])
            .arg(&follower.data_dir);
        host::run(backup, None).map_err(|f| command_error(&follower, f))?;
        let slot = self.followers.last_mut().expect("just pushed");
        start_fresh(&self.tools, slot, fixed_port)
    }

    fn make_instance_dir(&self, instance: &Instance) -> Result<(), ClusterError> {
        let dir = instance.instance_dir();
        fs::create_dir(dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        self.tools.chown(dir)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Appended to the leader's postgresql.conf; base backups carry it to the followers.
fn shared_settings(socket_dir: &Path) -> String {
    let socket_dir = quote_literal(&socket_dir.to_string_lossy());
    format!(
        "\n# --- pgsplit local cluster ---\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = {socket_dir}\n\
         fsync = off\n\
         full_page_writes = off\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         # a follower stopped by a test can catch up without a replication slot\n\
         wal_keep_size = '256MB'\n\
         hot_standby = on\n\
         # reads on followers are not cancelled by the leader's vacuum\n\
         hot_standby_feedback = on\n\
         max_connections = 200\n\
         shared_buffers = 32MB\n\
         password_encryption = 'scram-sha-256'\n\
         # stderr goes to <instance>/postgres.log (pg_ctl -l)\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_line_prefix = '%m [%p] %q%a %u@%d '\n"
    )
}

/// Writes the instance's port and name into its postgresql.auto.conf (the last setting wins), then starts it.
/// A server that finds a picked port taken is retried on a fresh one; a fixed port's failure is final.
fn start_fresh(tools: &Toolbox, instance: &mut Instance, fixed_port: bool) -> Result<(), ClusterError> {
    let mut attempt = 1;
    loop {
        let settings = format!(
            "port = {}\ncluster_name = {}\n",
            instance.port,
            quote_literal(&instance.name)
        );
        append(&instance.data_dir.join("postgresql.auto.conf"), &settings)?;
        let log_offset = host::file_len(&instance.log_file);
        let error = match pg_ctl_start(tools, instance) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let log = host::log_since(&instance.log_file, log_offset).unwrap_or_default();
        if fixed_port || attempt == PORT_ATTEMPTS || !port_was_taken(&log) {
            return Err(error);
        }
        attempt += 1;
        instance.port = free_ports(1)?[0];
    }
}

fn port_was_taken(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not create any TCP/IP sockets")
        || (log.contains(".s.PGSQL.") && log.contains("already exists"))
}

fn pg_ctl_start(tools: &Toolbox, instance: &Instance) -> Result<(), ClusterError> {
    let mut cmd = tools.command("pg_ctl");
    cmd.args(["-w", "-t", "60", "-D"])
        .arg(&instance.data_dir)
        .arg("-l")
        .arg(&instance.log_file)
        .arg("start");
    host::run(cmd, None).map(drop).map_err(|f| command_error(instance, f))
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok(Ok(()))` or `timeout` passes; `Ok(Err(seen))` means
/// "not yet" and `seen` goes into the timeout error.
fn poll<F>(what: &str, timeout: Duration, mut check: F) -> Result<(), ClusterError>
where
    F: FnMut() -> Result<Result<(), String>, ClusterError>,
{
    let start = Instant::now();
    loop {
        let last = match check()? {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                waited: timeout,
                last,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn command_error(instance: &Instance, failure: host::Failure) -> ClusterError {
    ClusterError::Command {
        instance: instance.name.clone(),
        command: failure.command,
        status: failure.status,
        stderr: failure.stderr,
        log_tail: host::log_tail(&instance.log_file, LOG_TAIL_LINES),
    }
}

fn append(path: &Path, text: &str) -> Result<(), ClusterError> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| ClusterError::Io {
            what: format!("appending to {}", path.display()),
            source,
        })
}

/// Overwrites an existing file (so it keeps its owner).
fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    fs::write(path, text).map_err(|source| ClusterError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (safe in userinfo and path).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_points_at_loopback_and_encodes_credentials() {
        let instance = Instance::new("f1", 15433, Path::new("/tmp/base"));
        assert_eq!(
            instance.url("app", "app", "app"),
            "postgres://app:app@127.0.0.1:15433/app"
        );
        assert_eq!(
            instance.url("a@b", "p:w/d%", "my db"),
            "postgres://a%40b:p%3Aw%2Fd%25@127.0.0.1:15433/my%20db"
        );
    }

    #[test]
    fn instance_layout_is_name_dir_under_base() {
        let instance = Instance::new("leader", 1, Path::new("/tmp/base"));
        assert_eq!(instance.data_dir, Path::new("/tmp/base/leader/data"));
        assert_eq!(instance.log_file, Path::new("/tmp/base/leader/postgres.log"));
        assert_eq!(instance.socket_dir, Path::new("/tmp/base"));
        assert_eq!(instance.instance_dir(), Path::new("/tmp/base/leader"));
    }

    #[test]
    fn sql_quoting_doubles_quotes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn taken_port_is_recognised_in_the_log() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   WARNING:  could not create listen socket for \"127.0.0.1\"\n\
                   FATAL:  could not create any TCP/IP sockets\n";
        assert!(port_was_taken(log));
        assert!(!port_was_taken(
            "FATAL:  data directory \"/x\" has invalid permissions\n"
        ));
    }

    #[test]
    fn follower_port_count_must_match() {
        let options = ClusterOptions {
            followers: 2,
            follower_ports: Some(vec![1]),
            ..ClusterOptions::default()
        };
        assert!(matches!(LocalCluster::start(options), Err(ClusterError::Options(_))));
    }
}
