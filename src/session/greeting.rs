//! What a client is told at login, and what its session starts with, learned from the server: the parameters as
//! the server reports them (`client_encoding=utf8` is reported as `UTF8`, `DateStyle=iso` as `ISO, MDY`; drivers
//! compare them), and the server defaults routing depends on (a role's `default_transaction_isolation =
//! 'serializable'` makes every read one a standby refuses).
//!
//! Both are remembered per user and database in the leader's pool, so a login needs a server only the first time
//! something is not known: the first client of a user and database, a value the server spells otherwise and
//! pgsplit cannot (an encoding, a date style, a time zone), seen for the first time.

use std::sync::Arc;

use crate::config::Config;
use crate::pool::{InstancePool, LoginInfo, ServerParams, Settings};
use crate::protocol::error::SqlError;
use crate::tls::Tls;

use super::server;

/// The server defaults routing depends on, for every session of this user and database. `reset_val` is what a
/// connection opened with user and database only — as pgsplit opens them — starts with, whatever was SET since.
const DEFAULTS_SQL: &str = "SELECT string_agg(name || '=' || reset_val, ',') FROM pg_catalog.pg_settings \
     WHERE name IN ('default_transaction_isolation', 'default_transaction_read_only')";

/// The parameters to tell the client (ParameterStatus), and the server's defaults for its session. A server is
/// asked only for what is not known yet (a connection given the client's settings has had them reported).
pub async fn learn(
    pool: &InstancePool,
    login: &LoginInfo,
    wanted: &Settings,
    tls: &Tls,
    config: &Config,
) -> Result<(Vec<(String, String)>, ServerParams), SqlError> {
    let key = &login.key;
    let server_params = pool.server_params(key);
    let mut told = Vec::new();
    let mut unknown = server_params.is_none();
    for (name, value) in server_params.iter().flat_map(|p| p.iter()) {
        let value = match wanted.get(name) {
            Some(given) if given != value => spelled(name, given)
                .or_else(|| pool.spelling(key, name, given))
                .unwrap_or_else(|| {
                    unknown = true;
                    given.to_owned()
                }),
            _ => value.clone(),
        };
        told.push((name.clone(), value));
    }
    let defaults = pool.defaults(key);
    if let (false, Some(defaults)) = (unknown, &defaults) {
        return Ok((told, defaults.clone()));
    }
    let mut conn = server::borrow(pool, login, wanted, tls, config).await?;
    for (name, reported) in &conn.params {
        if let Some(given) = wanted.get(name).filter(|given| given != reported) {
            pool.learn_spelling(key, name, given, reported);
        }
    }
    let told = conn.params.clone();
    let defaults = match defaults {
        Some(defaults) => defaults,
        None => match conn.query_own(DEFAULTS_SQL, config.health.timeout).await {
            Ok(text) => {
                let defaults = Arc::new(parse_defaults(&text.unwrap_or_default()));
                pool.learn_defaults(key, defaults.clone());
                defaults
            }
            Err(error) => {
                // None known: a follower's refusal is re-run on the leader.
                tracing::warn!(%error, user = %key.user, "cannot read the server's defaults for this login");
                // Dropped, not returned: its state is not known.
                drop(conn);
                return Ok((told, Arc::default()));
            }
        },
    };
    pool.release(conn);
    Ok((told, defaults))
}

/// `name=value,name=value` as [`DEFAULTS_SQL`] answers.
fn parse_defaults(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// How the server reports `given` for `name`, where that follows from rules pgsplit knows exactly: a short
/// printable application_name as it is; a boolean as `on`/`off`; IntervalStyle in lower case.
fn spelled(name: &str, given: &str) -> Option<String> {
    let lower = given.trim().to_ascii_lowercase();
    match name {
        // Longer ones are cut, other bytes replaced: the server knows how.
        "application_name" if given.len() < 64 && given.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Some(given.to_owned())
        }
        "standard_conforming_strings" | "default_transaction_read_only" => match lower.as_str() {
            "on" | "true" | "yes" | "1" => Some("on".into()),
            "off" | "false" | "no" | "0" => Some("off".into()),
            _ => None,
        },
        "IntervalStyle" if ["postgres", "postgres_verbose", "sql_standard", "iso_8601"].contains(&lower.as_str()) => {
            Some(lower)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_known_without_a_server() {
        assert_eq!(spelled("application_name", "web-1").as_deref(), Some("web-1"));
        assert_eq!(spelled("application_name", "héllo"), None);
        assert_eq!(spelled("default_transaction_read_only", "TRUE").as_deref(), Some("on"));
        assert_eq!(spelled("IntervalStyle", "ISO_8601").as_deref(), Some("iso_8601"));
        assert_eq!(spelled("client_encoding", "utf8"), None, "the server names encodings");
        assert_eq!(
            parse_defaults("default_transaction_isolation=serializable,default_transaction_read_only=off"),
            [
                ("default_transaction_isolation".to_owned(), "serializable".to_owned()),
                ("default_transaction_read_only".to_owned(), "off".to_owned())
            ]
        );
    }
}
