//! Semantic checks: turns the raw serde layer into a [`Config`], applying defaults and units, and collects every
//! violation with the position of the key or value at fault (or of its table when a required key is missing).
//!
//! Never stops at the first problem: a bad value is reported and replaced by its default so the rest can still be
//! checked; the `Config` is only returned when nothing was wrong. Never touches the file system; the environment
//! is read only through the lookup it is given (`password_env`).

use std::collections::HashSet;
use std::env::VarError;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::Problem;
use super::raw::{
    RawClientTls, RawConfig, RawControl, RawFollower, RawFollowerPool, RawHealth, RawLeader, RawProxy, RawRouting,
    RawServer, RawTcp, RawUser, RawWorkers, Span,
};
use super::values::{Checker, POOL_NAME_RULE, pool_name_problem};
use super::{
    AuthMethod, ClientTlsConfig, ClientTlsMode, Config, ControlConfig, Fallback, FollowerConfig, FollowerPoolConfig,
    HealthConfig, LeaderConfig, PoolMode, ProxyConfig, RoutingConfig, ServerAuthMethod, ServerConfig, ServerTlsMode,
    TcpConfig, TopologySource, UserConfig, WorkerCount,
};

/// Reads an environment variable (`std::env::var` in production, a fixed map in tests).
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6432));
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9930));
const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 5000;
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 << 20;
const MIN_MESSAGE_SIZE: u64 = 1 << 10;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LEADER_NAME: &str = "leader";
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 20;
pub(super) const DEFAULT_MAX_LAG_BYTES: u64 = 16 << 20;
pub(super) const DEFAULT_MAX_LAG_SECONDS: Duration = Duration::from_secs(5);
const DEFAULT_POOL_NAME: &str = "default";
const DEFAULT_READ_YOUR_WRITES_WAIT: Duration = Duration::from_millis(50);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(250);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const MAX_FOLLOWER_POOLS: usize = 5;
pub(super) const MAX_FOLLOWER_INSTANCES: usize = 13;
/// PostgreSQL's own `authentication_timeout` default.
const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_PENDING_LOGINS: usize = 1000;
const DEFAULT_MAX_PREPARED_STATEMENTS: usize = 1000;
/// A dead peer is noticed within idle + interval × count = 2 minutes, instead of the kernel's 2 hours and more.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE_COUNT: u32 = 6;
const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the `Config`, or returns every problem found. `base_dir` resolves relative TLS file paths; `cpus` (the
/// CPUs pgsplit may use) sets `proxy.workers` when the file leaves it to pgsplit.
pub(super) fn build(raw: &RawConfig, base_dir: &Path, env: EnvLookup<'_>, cpus: usize) -> Result<Config, Vec<Problem>> {
    let mut check = Checker::default();
    let proxy = check.proxy(&raw.proxy, base_dir, cpus);
    let server = check.server(&raw.server, base_dir);
    let users = check.users(&raw.users, env);
    let control = raw.control.as_ref().map(|table| check.control(table, &users, env));
    let topology = check.topology(raw.topology.as_ref());
    let from_patroni = topology.source != TopologySource::File;
    let leader = if from_patroni {
        check.patroni_decides(raw);
        check.leader_named_by_patroni(raw.leader.as_ref())
    } else {
        check.leader(raw.leader.as_ref())
    };
    let follower_pools = check.follower_pools(&raw.follower_pools);
    let routing = check.routing(&raw.routing, &follower_pools, from_patroni);
    let health = check.health(&raw.health);
    let tcp = check.tcp(&raw.tcp);
    if check.problems.is_empty() {
        Ok(Config {
            proxy,
            server,
            users,
            leader,
            follower_pools,
            routing,
            health,
            tcp,
            control,
            topology,
        })
    } else {
        Err(check.problems)
    }
}

impl Checker {
    fn proxy(&mut self, raw: &RawProxy, base_dir: &Path, cpus: usize) -> ProxyConfig {
        let listen = self.proxy_listen(raw.listen.as_ref(), "proxy.listen", DEFAULT_LISTEN);
        let admin_listen = self.proxy_listen(raw.admin_listen.as_ref(), "proxy.admin_listen", DEFAULT_ADMIN_LISTEN);
        let max_message_size = self.size(
            raw.max_message_size.as_ref(),
            "proxy.max_message_size",
            DEFAULT_MAX_MESSAGE_SIZE,
        );
        if let Some(value) = &raw.max_message_size
            && max_message_size < MIN_MESSAGE_SIZE
        {
            let message =
                format!("proxy.max_message_size must be at least 1kB (1024 bytes), got {max_message_size} bytes");
            self.report(Some(value.span()), message);
        }
        let admin_token = raw.admin_token.as_ref().map(|token| {
            if token.get_ref().is_empty() {
                let message = "proxy.admin_token must not be empty; remove the key to run without a token";
                self.report(Some(token.span()), message.to_owned());
            }
            token.get_ref().as_str().into()
        });
        let admin_token_for_reads = raw.admin_token_for_reads.as_ref().is_some_and(|value| {
            if *value.get_ref() && admin_token.is_none() {
                let message = "proxy.admin_token_for_reads needs proxy.admin_token: set a token, or remove the key";
                self.report(Some(value.span()), message.to_owned());
            }
            *value.get_ref()
        });
        let workers = self.workers(raw.workers.as_ref(), cpus);
        if !admin_listen.ip().is_loopback() && admin_token.is_none() {
            let span = raw.admin_listen.as_ref().map(Spanned::span);
            let message = format!(
                "proxy.admin_listen {admin_listen} is reachable from other machines, and there is no proxy.admin_token: \
                 set a token, or listen on a loopback address (127.0.0.1, [::1])"
            );
            self.report(span, message);
        }
        ProxyConfig {
            listen,
            admin_listen,
            pool_mode: raw.pool_mode.unwrap_or(PoolMode::Transaction),
            max_client_connections: self.count(
                raw.max_client_connections.as_ref(),
                "proxy.max_client_connections",
                DEFAULT_MAX_CLIENT_CONNECTIONS,
            ),
            // Only a 32-bit machine could fail this; a limit past its address space means no limit.
            max_message_size: usize::try_from(max_message_size).unwrap_or(usize::MAX),
            workers,
            admin_token,
            admin_token_for_reads,
            login_timeout: self.nonzero_duration(
                raw.login_timeout.as_ref(),
                "proxy.login_timeout",
                DEFAULT_LOGIN_TIMEOUT,
            ),
            max_pending_logins: self.count(
                raw.max_pending_logins.as_ref(),
                "proxy.max_pending_logins",
                DEFAULT_MAX_PENDING_LOGINS,
            ),
            max_prepared_statements: self.count(
                raw.max_prepared_statements.as_ref(),
                "proxy.max_prepared_statements",
                DEFAULT_MAX_PREPARED_STATEMENTS,
            ),
            tls: raw.tls.as_ref().map(|tls| self.client_tls(tls, base_dir)),
        }
    }

    /// `proxy.workers`: the number written, else (no key, or "auto") half of `cpus` ([`WorkerCount::auto`]).
    fn workers(&mut self, value: Option<&Spanned<RawWorkers>>, cpus: usize) -> WorkerCount {
        let auto = WorkerCount::auto(cpus);
        let Some(value) = value else { return auto };
        let problem = match value.get_ref() {
            RawWorkers::Word(word) if word == "auto" => return auto,
            RawWorkers::Word(word) => format!("proxy.workers must be a number of threads or \"auto\", got \"{word}\""),
            &RawWorkers::Count(count) => match usize::try_from(count) {
                Ok(threads @ 1..=WorkerCount::MAX) => {
                    return WorkerCount {
                        threads,
                        from_cpus: None,
                    };
                }
                _ if count < 1 => format!("proxy.workers must be at least 1, got {count}"),
                _ => format!("proxy.workers must be at most {}, got {count}", WorkerCount::MAX),
            },
        };
        self.report(Some(value.span()), problem);
        auto
    }

    /// `proxy.listen` or `proxy.admin_listen`: the written address, else the default (both take part in the
    /// "distinct addresses" rule).
    fn proxy_listen(&mut self, value: Option<&Spanned<String>>, key: &str, default: SocketAddr) -> SocketAddr {
        match value {
            Some(value) => self.listen_addr(value, key).unwrap_or(default),
            None => {
                self.register_listen(default, None, key);
                default
            }
        }
    }

    fn client_tls(&mut self, raw: &Spanned<RawClientTls>, base_dir: &Path) -> ClientTlsConfig {
        let tls = raw.get_ref();
        let mode = tls.mode.as_ref().map_or(ClientTlsMode::Prefer, |mode| *mode.get_ref());
        let cert = tls
            .cert
            .as_ref()
            .map(|path| self.tls_path(path, "proxy.tls.cert", base_dir));
        let key = tls
            .key
            .as_ref()
            .map(|path| self.tls_path(path, "proxy.tls.key", base_dir));
        let missing: Vec<&str> = [("cert", cert.is_none()), ("key", key.is_none())]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
        if mode != ClientTlsMode::Disable && !missing.is_empty() {
            let mode_name = if mode == ClientTlsMode::Prefer {
                "prefer"
            } else {
                "require"
            };
            let span = tls.mode.as_ref().map_or_else(|| raw.span(), Spanned::span);
            let message = format!(
                "proxy.tls: mode \"{mode_name}\" needs both `cert` and `key` (missing: {}); set them, or use mode = \"disable\"",
                missing.join(", ")
            );
            self.report(Some(span), message);
        }
        if mode == ClientTlsMode::Disable
            && let Some(path) = tls.cert.as_ref().or(tls.key.as_ref())
        {
            let message = "proxy.tls: cert and key are never used with mode = \"disable\"; remove them, or enable TLS";
            self.report(Some(path.span()), message.to_owned());
        }
        ClientTlsConfig { mode, cert, key }
    }

    fn server(&mut self, raw: &RawServer, base_dir: &Path) -> ServerConfig {
        let tls = raw.tls.as_ref().map_or(ServerTlsMode::Prefer, |mode| *mode.get_ref());
        let tls_ca = raw
            .tls_ca
            .as_ref()
            .map(|path| self.tls_path(path, "server.tls_ca", base_dir));
        let tls_cert = raw
            .tls_cert
            .as_ref()
            .map(|path| self.tls_path(path, "server.tls_cert", base_dir));
        let tls_key = raw
            .tls_key
            .as_ref()
            .map(|path| self.tls_path(path, "server.tls_key", base_dir));
        let verifies = matches!(tls, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull);
        if let Some(path) = raw.tls_ca.as_ref().filter(|_| !verifies) {
            let message = "server.tls_ca is used only with tls = \"verify-ca\" or \"verify-full\"; without them no \
                           certificate is checked against it";
            self.report(Some(path.span()), message.to_owned());
        }
        match (&raw.tls_cert, &raw.tls_key) {
            (Some(path), None) | (None, Some(path)) => {
                let message = "server.tls_cert and server.tls_key go together: set both, or neither";
                self.report(Some(path.span()), message.to_owned());
            }
            (Some(path), Some(_)) if tls == ServerTlsMode::Disable => {
                let message = "server.tls_cert is never presented with tls = \"disable\"";
                self.report(Some(path.span()), message.to_owned());
            }
            _ => {}
        }
        let auth_methods = match &raw.auth_methods {
            Some(methods) if methods.get_ref().is_empty() => {
                let message = "server.auth_methods must list at least one method, e.g. [\"scram-sha-256\"]";
                self.report(Some(methods.span()), message.to_owned());
                vec![ServerAuthMethod::ScramSha256]
            }
            Some(methods) => methods.get_ref().clone(),
            None => vec![ServerAuthMethod::ScramSha256],
        };
        ServerConfig {
            tls,
            tls_ca,
            tls_cert,
            tls_key,
            auth_methods,
            connect_timeout: self.nonzero_duration(
                raw.connect_timeout.as_ref(),
                "server.connect_timeout",
                DEFAULT_TIMEOUT,
            ),
            checkout_timeout: self.duration(
                raw.checkout_timeout.as_ref(),
                "server.checkout_timeout",
                DEFAULT_TIMEOUT,
            ),
        }
    }

    /// `[control]`: a user and its password, never one of the `[[users]]` clients log in as.
    fn control(&mut self, table: &Spanned<RawControl>, users: &[UserConfig], env: EnvLookup<'_>) -> ControlConfig {
        let control = table.get_ref();
        let user = self.required_text(control.user.as_ref(), "user", table.span(), "[control]");
        if let Some(value) = &control.user
            && users.iter().any(|u| u.name == user)
        {
            let message = format!(
                "[control] user \"{user}\" is also a [[users]] entry: the control role must not be a login clients \
                 can use; give it a role of its own"
            );
            self.report(Some(value.span()), message);
        }
        let password = self.password(
            control.password.as_ref(),
            control.password_env.as_ref(),
            table.span(),
            "[control]",
            env,
        );
        ControlConfig {
            user,
            password: password.into(),
        }
    }

    fn users(&mut self, raw: &[Spanned<RawUser>], env: EnvLookup<'_>) -> Vec<UserConfig> {
        if raw.is_empty() {
            let message =
                "no users: add at least one [[users]] table with a `name` and a `password` (or `password_env`)";
            self.report(None, message.to_owned());
        }
        let mut seen = HashSet::new();
        raw.iter()
            .map(|table| {
                let user = table.get_ref();
                let name = self.required_text(user.name.as_ref(), "name", table.span(), "a user");
                if let Some(value) = &user.name
                    && !name.is_empty()
                    && !seen.insert(name.clone())
                {
                    self.report(
                        Some(value.span()),
                        format!("user \"{name}\" is defined twice; user names must be unique"),
                    );
                }
                let owner = format!("user \"{name}\"");
                let password = self.password(
                    user.password.as_ref(),
                    user.password_env.as_ref(),
                    table.span(),
                    &owner,
                    env,
                );
                UserConfig {
                    password: password.into(),
                    auth: user.auth.unwrap_or(AuthMethod::ScramSha256),
                    name,
                }
            })
            .collect()
    }

    /// The password of `owner` (a user, `[control]`): written, or read from the variable `password_env` names.
    fn password(
        &mut self,
        password: Option<&Spanned<String>>,
        password_env: Option<&Spanned<String>>,
        table: Span,
        owner: &str,
        env: EnvLookup<'_>,
    ) -> String {
        match (password, password_env) {
            (Some(password), None) => password.get_ref().clone(),
            (None, Some(var)) => {
                let var_name = var.get_ref();
                let problem = if var_name.is_empty() || var_name.contains(['=', '\0']) {
                    format!("\"{var_name}\" is not an environment variable name")
                } else {
                    match env(var_name) {
                        Ok(value) if !value.is_empty() => return value,
                        Ok(_) => format!("environment variable {var_name} is set but empty"),
                        Err(VarError::NotPresent) => {
                            format!("environment variable {var_name} is not set")
                        }
                        Err(VarError::NotUnicode(_)) => {
                            format!("environment variable {var_name} is not valid UTF-8")
                        }
                    }
                };
                self.report(Some(var.span()), format!("password_env: {problem}"));
                String::new()
            }
            (Some(_), Some(var)) => {
                let message = format!("set either `password` or `password_env` for {owner}, not both");
                self.report(Some(var.span()), message);
                String::new()
            }
            (None, None) => {
                let message = format!("{owner} has no password: set `password` or `password_env`");
                self.report(Some(table), message);
                String::new()
            }
        }
    }

    fn leader(&mut self, raw: Option<&Spanned<RawLeader>>) -> LeaderConfig {
        let Some(table) = raw else {
            let message = "missing [leader] table: pgsplit needs the leader's `host` and `port`";
            self.report(None, message.to_owned());
            return LeaderConfig {
                name: DEFAULT_LEADER_NAME.to_owned(),
                host: String::new(),
                port: 0,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            };
        };
        let leader = table.get_ref();
        let name = match &leader.name {
            Some(name) => name.get_ref().clone(),
            None => DEFAULT_LEADER_NAME.to_owned(),
        };
        self.register_instance(&name, leader.name.as_ref().map(Spanned::span), "the leader");
        LeaderConfig {
            name,
            host: self.required_text(leader.host.as_ref(), "host", table.span(), "the leader"),
            port: self.port(leader.port.as_ref(), table.span(), "the leader"),
            max_connections: self.count(
                leader.max_connections.as_ref(),
                "leader.max_connections",
                DEFAULT_MAX_CONNECTIONS,
            ),
        }
    }

    fn follower_pools(&mut self, raw: &[Spanned<RawFollowerPool>]) -> Vec<FollowerPoolConfig> {
        let total_instances: usize = raw.iter().map(|pool| pool.get_ref().instances.len()).sum();
        let mut instance_count = 0;
        let mut pool_names = HashSet::new();
        let mut pools = Vec::with_capacity(raw.len());
        for (index, table) in raw.iter().enumerate() {
            if index == MAX_FOLLOWER_POOLS {
                let message = format!(
                    "too many follower pools: {} defined, at most {MAX_FOLLOWER_POOLS} are allowed",
                    raw.len()
                );
                self.report(Some(table.span()), message);
            }
            let pool = table.get_ref();
            let name = self.required_text(pool.name.as_ref(), "name", table.span(), "a follower pool");
            if let Some(value) = &pool.name
                && !name.is_empty()
            {
                if let Some(why) = pool_name_problem(&name) {
                    self.report(
                        Some(value.span()),
                        format!("follower pool name \"{name}\": {why} ({POOL_NAME_RULE})"),
                    );
                } else if !pool_names.insert(name.clone()) {
                    let message = format!("follower pool \"{name}\" is defined twice; pool names must be unique");
                    self.report(Some(value.span()), message);
                }
            }
            let owner = format!("follower pool \"{name}\"");
            let mut instances = Vec::with_capacity(pool.instances.len());
            for instance in &pool.instances {
                instance_count += 1;
                if instance_count == MAX_FOLLOWER_INSTANCES + 1 {
                    let message = format!(
                        "too many follower instances: {total_instances} in all, at most {MAX_FOLLOWER_INSTANCES} are \
                         allowed across all follower pools"
                    );
                    self.report(Some(instance.span()), message);
                }
                instances.push(self.follower(instance, &owner));
            }
            pools.push(FollowerPoolConfig {
                listen: pool
                    .listen
                    .as_ref()
                    .and_then(|listen| self.listen_addr(listen, &format!("{owner} listen"))),
                max_connections_per_instance: self.count(
                    pool.max_connections_per_instance.as_ref(),
                    "max_connections_per_instance",
                    DEFAULT_MAX_CONNECTIONS,
                ),
                max_lag_bytes: self.size(pool.max_lag_bytes.as_ref(), "max_lag_bytes", DEFAULT_MAX_LAG_BYTES),
                max_lag_seconds: self.duration(
                    pool.max_lag_seconds.as_ref(),
                    "max_lag_seconds",
                    DEFAULT_MAX_LAG_SECONDS,
                ),
                name,
                instances,
            });
        }
        pools
    }

    fn follower(&mut self, table: &Spanned<RawFollower>, owner: &str) -> FollowerConfig {
        let follower = table.get_ref();
        let name = self.required_text(follower.name.as_ref(), "name", table.span(), "a follower instance");
        if let Some(value) = &follower.name
            && !name.is_empty()
        {
            self.register_instance(&name, Some(value.span()), owner);
        }
        FollowerConfig {
            host: self.required_text(
                follower.host.as_ref(),
                "host",
                table.span(),
                &format!("follower \"{name}\""),
            ),
            port: self.port(follower.port.as_ref(), table.span(), &format!("follower \"{name}\"")),
            weight: self.count(follower.weight.as_ref(), "weight", 1),
            name,
        }
    }

    /// `from_patroni`: the pools are filled by Patroni's members, and replicas without a `pgsplit_pool` tag form
    /// `read_pool` (default "default") whether or not the file declares it.
    fn routing(&mut self, raw: &RawRouting, pools: &[FollowerPoolConfig], from_patroni: bool) -> RoutingConfig {
        let read_pool = match &raw.read_pool {
            Some(value) if pools.iter().any(|pool| pool.name == *value.get_ref()) => Some(value.get_ref().clone()),
            Some(value) if from_patroni => {
                if let Some(why) = pool_name_problem(value.get_ref()) {
                    let message = format!("routing.read_pool \"{}\": {why} ({POOL_NAME_RULE})", value.get_ref());
                    self.report(Some(value.span()), message);
                }
                Some(value.get_ref().clone())
            }
            None if from_patroni => Some(DEFAULT_POOL_NAME.to_owned()),
            Some(value) => {
                let known = if pools.is_empty() {
                    "no follower pools are defined".to_owned()
                } else {
                    let names: Vec<String> = pools.iter().map(|pool| format!("\"{}\"", pool.name)).collect();
                    format!("defined pools: {}", names.join(", "))
                };
                let message = format!(
                    "routing.read_pool: \"{}\" is not a follower pool; {known}",
                    value.get_ref()
                );
                self.report(Some(value.span()), message);
                None
            }
            None => pools
                .iter()
                .find(|pool| pool.name == DEFAULT_POOL_NAME)
                .or(pools.first())
                .map(|pool| pool.name.clone()),
        };
        let write_functions = self.function_names(&raw.write_functions, "routing.write_functions");
        let read_only_functions = self.function_names(&raw.read_only_functions, "routing.read_only_functions");
        for function in &raw.read_only_functions {
            let name = function.get_ref();
            if !name.is_empty() && write_functions.iter().any(|write| write.eq_ignore_ascii_case(name)) {
                let message = format!(
                    "function \"{name}\" is in both routing.write_functions and routing.read_only_functions; keep it \
                     in one"
                );
                self.report(Some(function.span()), message);
            }
        }
        RoutingConfig {
            read_pool,
            read_your_writes: raw.read_your_writes.unwrap_or(true),
            read_your_writes_wait: self.duration(
                raw.read_your_writes_wait.as_ref(),
                "routing.read_your_writes_wait",
                DEFAULT_READ_YOUR_WRITES_WAIT,
            ),
            fallback: raw.fallback.unwrap_or(Fallback::Leader),
            follow_promotions: raw.follow_promotions.as_ref().is_none_or(|v| *v.get_ref()),
            write_functions,
            read_only_functions,
        }
    }

    fn function_names(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<String> {
        for name in raw.iter().filter(|name| name.get_ref().trim().is_empty()) {
            self.report(Some(name.span()), format!("{key}: function names must not be empty"));
        }
        raw.iter().map(|name| name.get_ref().clone()).collect()
    }

    fn tcp(&mut self, raw: &RawTcp) -> TcpConfig {
        TcpConfig {
            keepalive_idle: self.nonzero_duration(
                raw.keepalive_idle.as_ref(),
                "tcp.keepalive_idle",
                DEFAULT_KEEPALIVE_IDLE,
            ),
            keepalive_interval: self.nonzero_duration(
                raw.keepalive_interval.as_ref(),
                "tcp.keepalive_interval",
                DEFAULT_KEEPALIVE_INTERVAL,
            ),
            keepalive_count: self.count(
                raw.keepalive_count.as_ref(),
                "tcp.keepalive_count",
                DEFAULT_KEEPALIVE_COUNT,
            ),
            user_timeout: self.nonzero_duration(raw.user_timeout.as_ref(), "tcp.user_timeout", DEFAULT_USER_TIMEOUT),
        }
    }

    fn health(&mut self, raw: &RawHealth) -> HealthConfig {
        HealthConfig {
            interval: self.nonzero_duration(raw.interval.as_ref(), "health.interval", DEFAULT_HEALTH_INTERVAL),
            timeout: self.nonzero_duration(raw.timeout.as_ref(), "health.timeout", DEFAULT_HEALTH_TIMEOUT),
        }
    }
}
