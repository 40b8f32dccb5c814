//! proxy.toml: the validated configuration every other module reads.
//!
//! Owns the schema (SPEC §2), its defaults, unit parsing ("250ms", "16MB" = 16 MiB as PostgreSQL counts), and
//! semantic validation that reports every problem at once with `file:line:col`. The types here are plain values
//! (no spans, no `Option`s where a default exists): by the time anyone else sees a `Config` it is known good.
//! Never does I/O beyond reading the file, the environment (`password_env`) and how many CPUs the process may use
//! (the `proxy.workers` default), and `rewrite` writing a promotion back into the file.
//!
//! Inside: `raw` is the serde layer (the file as written, with spans; the enums below are their own serde
//! values), `units` parses durations and sizes, `validate` applies defaults and builds each section, `values` holds
//! the rules for single values and the file-wide uniqueness checks, `error` turns spans into `file:line:col` lines,
//! `rewrite` edits the file after a promotion keeping its comments and layout.

mod error;
mod raw;
pub mod rewrite;
#[cfg(test)]
mod tests;
mod topology;
mod units;
mod validate;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::secret::Secret;
pub use error::{ConfigError, ConfigErrors};
pub use units::parse_duration;

/// A loaded, validated proxy.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub server: ServerConfig,
    pub users: Vec<UserConfig>,
    pub leader: LeaderConfig,
    pub follower_pools: Vec<FollowerPoolConfig>,
    pub routing: RoutingConfig,
    pub health: HealthConfig,
    pub tcp: TcpConfig,
    /// `[control]`; None: the first `[[users]]` entry steers (with a warning at start).
    pub control: Option<ControlConfig>,
    /// `[topology]`: where the members come from.
    pub topology: TopologyConfig,
}

impl Config {
    /// The login pgsplit watches and steers instances with: `[control]`, else the first `[[users]]` entry.
    pub fn control_login(&self) -> (&str, &Secret) {
        match &self.control {
            Some(control) => (&control.user, &control.password),
            None => (&self.users[0].name, &self.users[0].password),
        }
    }

    /// Reads, parses and validates a config file. `password_env` variables are read from the environment now;
    /// relative TLS paths are resolved against the file's directory. Every problem is reported, each with
    /// `file:line:col`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigErrors::whole_file(&file, format!("cannot read the config file: {error}")))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::from_text(&text, &file, base_dir, &process_env, WorkerCount::available_cpus())
    }

    /// Parses and validates config text; `file_name` is used in error messages and, like a path, to resolve
    /// relative TLS paths. Reads `password_env` variables from the environment.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
        let base_dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
        Self::from_text(text, file_name, base_dir, &process_env, WorkerCount::available_cpus())
    }

    /// `cpus`: the CPUs pgsplit may use, which `proxy.workers` is derived from when the file leaves it to pgsplit.
    fn from_text(
        text: &str,
        file_name: &str,
        base_dir: &Path,
        env: validate::EnvLookup<'_>,
        cpus: usize,
    ) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|error| ConfigErrors::from_toml(file_name, text, &error))?;
        validate::build(&raw, base_dir, env, cpus)
            .map_err(|problems| ConfigErrors::from_problems(file_name, text, problems))
    }

    /// `[topology] source = "patroni"`: Patroni's settings (the members come from its REST API).
    pub fn patroni(&self) -> Option<&PatroniConfig> {
        match &self.topology.source {
            TopologySource::Patroni(patroni) => Some(patroni),
            TopologySource::File => None,
        }
    }

    /// One line for humans: `leader "leader" at 127.0.0.1:15432, 1 follower pool, 2 follower instances, 1 user`.
    pub fn summary(&self) -> String {
        if let Some(patroni) = self.patroni() {
            let urls: Vec<String> = patroni.urls.iter().map(ToString::to_string).collect();
            let users = self.users.len();
            return format!(
                "members from Patroni ({}), {} declared follower pool{}, {users} user{}",
                urls.join(", "),
                self.follower_pools.len(),
                if self.follower_pools.len() == 1 { "" } else { "s" },
                if users == 1 { "" } else { "s" },
            );
        }
        let instances: usize = self.follower_pools.iter().map(|pool| pool.instances.len()).sum();
        let plural = |count: usize, noun: &str| format!("{count} {noun}{}", if count == 1 { "" } else { "s" });
        let host = &self.leader.host;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!(
            "leader \"{}\" at {host}:{}, {}, {}, {}",
            self.leader.name,
            self.leader.port,
            plural(self.follower_pools.len(), "follower pool"),
            plural(instances, "follower instance"),
            plural(self.users.len(), "user"),
        )
    }
}

impl Config {
    /// This config with follower `name` as the leader, as after its promotion: it takes the leader's name and
    /// address (the leader's other settings stay), leaves its pool (a pool left empty goes, and `read_pool` with
    /// it), and the old leader is dropped — fenced or lost, it is nobody's follower. None if no follower has that
    /// name. The same change `rewrite` makes to the file.
    pub fn promoted(&self, name: &str) -> Option<Config> {
        let mut next = self.clone();
        let (pool, index) = next.follower_pools.iter().enumerate().find_map(|(p, pool)| {
            let i = pool.instances.iter().position(|f| f.name == name)?;
            Some((p, i))
        })?;
        let follower = next.follower_pools[pool].instances.remove(index);
        next.leader.name = follower.name;
        next.leader.host = follower.host;
        next.leader.port = follower.port;
        if next.follower_pools[pool].instances.is_empty() {
            let gone = next.follower_pools.remove(pool);
            if next.routing.read_pool.as_deref() == Some(&gone.name) {
                // As if `read_pool` were unset, which is what the rewritten file says.
                let pools = &next.follower_pools;
                let default = pools.iter().find(|p| p.name == "default").or(pools.first());
                next.routing.read_pool = default.map(|p| p.name.clone());
            }
        }
        Some(next)
    }
}

/// The real environment, for `password_env`.
fn process_env(name: &str) -> Result<String, std::env::VarError> {
    std::env::var(name)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub pool_mode: PoolMode,
    pub max_client_connections: usize,
    /// Bytes; a client message longer than this is FATAL 08P01.
    pub max_message_size: usize,
    /// Threads that run sessions; read when pgsplit starts.
    pub workers: WorkerCount,
    pub admin_token: Option<Secret>,
    /// The token is needed for the GET endpoints too (`/status`, `/metrics`; `/healthz` stays open).
    pub admin_token_for_reads: bool,
    /// A client that has not finished startup and authentication by then is closed.
    pub login_timeout: Duration,
    /// Connections that have not logged in yet; past it, the oldest of them is closed to make room.
    pub max_pending_logins: usize,
    /// Named prepared statements one client may hold; past it, ERROR 53400.
    pub max_prepared_statements: usize,
    pub tls: Option<ClientTlsConfig>,
}

/// `proxy.workers`: how many threads run client sessions, and whether pgsplit chose the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCount {
    pub threads: usize,
    /// When the file leaves the number to pgsplit (no key, or "auto"): the CPUs it could use, which `threads` was
    /// derived from. None when the file gives a number.
    pub from_cpus: Option<usize>,
}

impl WorkerCount {
    /// The most threads `proxy.workers` may ask for.
    pub const MAX: usize = 256;

    /// Half of `cpus`, at least 1 and at most [`Self::MAX`]. On 2 cores a second worker cost about 5 % more CPU per
    /// transaction and bought no throughput; on 16 cores shared with PostgreSQL, throughput had stopped growing by 8
    /// workers. The other half is left to the kernel's network stack and to whatever shares the machine
    /// (docs/benchmarks.md).
    pub fn auto(cpus: usize) -> WorkerCount {
        WorkerCount {
            threads: (cpus / 2).clamp(1, Self::MAX),
            from_cpus: Some(cpus),
        }
    }

    /// The CPUs this process may use now, cgroup CPU quotas and the affinity mask included.
    pub fn available_cpus() -> usize {
        // It fails only where the platform cannot tell; one CPU then, so one worker: the guess that wastes nothing.
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// TCP keepalives and the user timeout, on every socket pgsplit accepts or opens: a peer that vanished without a
/// word (a crashed host, a dropped NAT entry) is noticed and its session and pool slot freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Idle time before the first keepalive probe.
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub keepalive_count: u32,
    /// How long sent data may stay unacknowledged before the connection is dropped (`TCP_USER_TIMEOUT`).
    pub user_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Transaction,
    Session,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientTlsConfig {
    pub mode: ClientTlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    Disable,
    Prefer,
    Require,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub tls: ServerTlsMode,
    /// CA bundle for verify-ca / verify-full; None: Mozilla's roots (webpki-roots).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key presented to servers (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// What pgsplit answers when a server asks for a password (libpq's `require_auth`).
    pub auth_methods: Vec<ServerAuthMethod>,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A way a server may have pgsplit prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerAuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext: the password itself goes to the server.
    #[serde(rename = "password")]
    Password,
    /// The server asks for nothing (trust).
    #[serde(rename = "none")]
    None,
}

/// `[control]`: the role pgsplit watches and steers instances with; never a client login.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    pub name: String,
    /// Resolved: from `password`, or read from the environment variable named by `password_env`.
    pub password: Secret,
    pub auth: AuthMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaderConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FollowerPoolConfig {
    pub name: String,
    pub listen: Option<SocketAddr>,
    pub max_connections_per_instance: usize,
    /// Bytes of WAL.
    pub max_lag_bytes: u64,
    pub max_lag_seconds: Duration,
    pub instances: Vec<FollowerConfig>,
}

impl FollowerPoolConfig {
    /// A pool with every setting at its default and no instances: one a Patroni tag names that the file does not
    /// declare.
    pub fn with_defaults(name: &str) -> FollowerPoolConfig {
        FollowerPoolConfig {
            name: name.to_owned(),
            listen: None,
            max_connections_per_instance: validate::DEFAULT_MAX_CONNECTIONS,
            max_lag_bytes: validate::DEFAULT_MAX_LAG_BYTES,
            max_lag_seconds: validate::DEFAULT_MAX_LAG_SECONDS,
            instances: Vec::new(),
        }
    }
}

/// At most this many follower pools, and follower instances in all (SPEC §2).
pub const MAX_FOLLOWER_POOLS: usize = validate::MAX_FOLLOWER_POOLS;
pub const MAX_FOLLOWER_INSTANCES: usize = validate::MAX_FOLLOWER_INSTANCES;

/// Why `name` cannot name a follower pool, if it cannot.
pub fn pool_name_problem(name: &str) -> Option<&'static str> {
    values::pool_name_problem(name)
}

#[derive(Debug, Clone, PartialEq)]
pub struct FollowerConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// Resolved: the named pool, else "default" if such a pool exists, else the first pool, else `None`.
    pub read_pool: Option<String>,
    pub read_your_writes: bool,
    /// How long a read after a write may wait for a follower to replay that write before it runs on the leader.
    pub read_your_writes_wait: Duration,
    pub fallback: Fallback,
    pub follow_promotions: bool,
    pub write_functions: Vec<String>,
    pub read_only_functions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Leader,
    Error,
}

/// `[topology]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopologyConfig {
    pub source: TopologySource,
}

/// Where the leader and the followers are named.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TopologySource {
    /// `[leader]` and each pool's `instances`.
    #[default]
    File,
    /// Patroni's REST API (SPEC §8).
    Patroni(PatroniConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatroniConfig {
    /// REST APIs of Patroni members; any answering one's view is used.
    pub urls: Vec<PatroniUrl>,
    /// How often `/cluster` is read.
    pub poll_interval: Duration,
    /// One request to one URL.
    pub request_timeout: Duration,
    /// How long before a scheduled switchover's time new write transactions are held, so running ones finish.
    pub drain_before_switchover: Duration,
    /// The longest a write waits at the gate for a confirmed leader before ERROR 57P03.
    pub write_hold_timeout: Duration,
    /// How far ahead `pgsplit promote` schedules Patroni's switchover.
    pub promote_ahead: Duration,
}

/// `http://host:port` of a Patroni REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniUrl {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PatroniUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
}
