//! The serde layer: proxy.toml exactly as written, before defaults, units and validation.
//!
//! Every table denies unknown keys. Fields whose meaning is checked later carry a [`Spanned`] so that
//! `validate` can point at them; keys the schema requires (hosts, ports, names) are still `Option` here so that a
//! missing one is reported together with every other problem instead of stopping the parse. Never interprets
//! values: no defaults, no units, no cross-checks.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::{AuthMethod, ClientTlsMode, Fallback, PoolMode, ServerAuthMethod, ServerTlsMode};

/// A byte range in the config text, as `toml` reports it.
pub(super) type Span = std::ops::Range<usize>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    pub leader: Option<Spanned<RawLeader>>,
    #[serde(default)]
    pub follower_pools: Vec<Spanned<RawFollowerPool>>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub tcp: RawTcp,
    pub control: Option<Spanned<RawControl>>,
    pub topology: Option<Spanned<RawTopology>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    pub source: Option<Spanned<String>>,
    pub patroni: Option<Spanned<Vec<Spanned<String>>>>,
    pub poll_interval: Option<Spanned<Scalar>>,
    pub request_timeout: Option<Spanned<Scalar>>,
    pub drain_before_switchover: Option<Spanned<Scalar>>,
    pub write_hold_timeout: Option<Spanned<Scalar>>,
    pub promote_ahead: Option<Spanned<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub listen: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub pool_mode: Option<PoolMode>,
    pub max_client_connections: Option<Spanned<i64>>,
    pub max_message_size: Option<Spanned<Scalar>>,
    pub workers: Option<Spanned<RawWorkers>>,
    pub admin_token: Option<Spanned<String>>,
    pub admin_token_for_reads: Option<Spanned<bool>>,
    pub login_timeout: Option<Spanned<Scalar>>,
    pub max_pending_logins: Option<Spanned<i64>>,
    pub max_prepared_statements: Option<Spanned<i64>>,
    pub tls: Option<Spanned<RawClientTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientTls {
    pub mode: Option<Spanned<ClientTlsMode>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub tls: Option<Spanned<ServerTlsMode>>,
    pub tls_ca: Option<Spanned<String>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub auth_methods: Option<Spanned<Vec<ServerAuthMethod>>>,
    pub connect_timeout: Option<Spanned<Scalar>>,
    pub checkout_timeout: Option<Spanned<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub auth: Option<AuthMethod>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeader {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFollowerPool {
    pub name: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub max_connections_per_instance: Option<Spanned<i64>>,
    pub max_lag_bytes: Option<Spanned<Scalar>>,
    pub max_lag_seconds: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub instances: Vec<Spanned<RawFollower>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFollower {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    pub read_pool: Option<Spanned<String>>,
    pub read_your_writes: Option<bool>,
    pub read_your_writes_wait: Option<Spanned<Scalar>>,
    pub fallback: Option<Fallback>,
    pub follow_promotions: Option<Spanned<bool>>,
    #[serde(default)]
    pub write_functions: Vec<Spanned<String>>,
    #[serde(default)]
    pub read_only_functions: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub interval: Option<Spanned<Scalar>>,
    pub timeout: Option<Spanned<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub keepalive_idle: Option<Spanned<Scalar>>,
    pub keepalive_interval: Option<Spanned<Scalar>>,
    pub keepalive_count: Option<Spanned<i64>>,
    pub user_timeout: Option<Spanned<Scalar>>,
}

/// A duration or size as written: a string with a unit, or a bare integer (bytes for sizes; an error for
/// durations, which `validate` reports with the allowed units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scalar {
    Text(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string with a unit, like \"5s\" or \"16MB\"")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
                i64::try_from(value)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom(format!("{value} is too large")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(value.to_owned()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// `proxy.workers` as written: a number of threads, or a word (`validate` takes only "auto").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawWorkers {
    Count(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;

        impl Visitor<'_> for WorkersVisitor {
            type Value = RawWorkers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of threads, or \"auto\"")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Count(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawWorkers, E> {
                i64::try_from(value)
                    .map(RawWorkers::Count)
                    .map_err(|_| E::custom(format!("{value} is too large")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Word(value.to_owned()))
            }
        }

        deserializer.deserialize_any(WorkersVisitor)
    }
}
