//! proxy.toml: the validated configuration every other module reads.
//!
//! Owns the schema (SPEC §2), its defaults, unit parsing ("250ms", "16MB" = 16 MiB as PostgreSQL counts), and
//! semantic validation that reports every problem at once with `file:line:col`. The types here are plain values
//! (no spans, no `Option`s where a default exists): by the time anyone else sees a `Config` it is known good.
//! Never does I/O beyond reading the file and the environment (`password_env`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub pool_mode: PoolMode,
    pub max_client_connections: usize,
    /// Bytes; a client message longer than this is FATAL 08P01.
    pub max_message_size: usize,
    pub admin_token: Option<String>,
    pub tls: Option<ClientTlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    Disable,
    Prefer,
    Require,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub tls: ServerTlsMode,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    pub name: String,
    /// Resolved: from `password`, or read from the environment variable named by `password_env`.
    pub password: String,
    pub auth: AuthMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
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
    pub fallback: Fallback,
    pub follow_promotions: bool,
    pub write_functions: Vec<String>,
    pub read_only_functions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Leader,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
}
