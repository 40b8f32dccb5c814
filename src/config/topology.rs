//! `[topology]`: where pgsplit learns the cluster's members — the file itself (`source = "file"`, the default:
//! `[leader]` and each pool's `instances`) or Patroni's REST API (`source = "patroni"`, SPEC §8) — and, for
//! Patroni, how often it asks, how long one request may take, and how a switchover is followed. The rules that tie
//! the source to `[leader]`, `instances` and `routing.follow_promotions` live here too, each stated once.
//!
//! Validation only, like the rest of `config`: nothing here talks to Patroni.

use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawLeader, RawTopology};
use super::validate::DEFAULT_MAX_CONNECTIONS;
use super::values::Checker;
use super::{LeaderConfig, PatroniConfig, PatroniUrl, TopologyConfig, TopologySource};

/// Patroni's own REST API port.
const DEFAULT_PATRONI_PORT: u16 = 8008;
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// pgbench-like transactions take milliseconds; a second lets longer ones finish too.
const DEFAULT_DRAIN: Duration = Duration::from_secs(1);
const DEFAULT_WRITE_HOLD: Duration = Duration::from_secs(10);
const DEFAULT_PROMOTE_AHEAD: Duration = Duration::from_secs(5);

/// The keys that only mean something with `source = "patroni"`.
const PATRONI_ONLY: &str = "patroni, poll_interval, request_timeout, drain_before_switchover, write_hold_timeout and \
                            promote_ahead";

impl Checker {
    pub(super) fn topology(&mut self, raw: Option<&Spanned<RawTopology>>) -> TopologyConfig {
        let Some(table) = raw else {
            return TopologyConfig::default();
        };
        let topology = table.get_ref();
        let patroni = match &topology.source {
            None => false,
            Some(source) => match source.get_ref().as_str() {
                "file" => false,
                "patroni" => true,
                other => {
                    let message = format!("topology.source: \"{other}\" is not a source; use \"file\" or \"patroni\"");
                    self.report(Some(source.span()), message);
                    false
                }
            },
        };
        if !patroni {
            let stray = [
                topology.patroni.as_ref().map(Spanned::span),
                topology.poll_interval.as_ref().map(Spanned::span),
                topology.request_timeout.as_ref().map(Spanned::span),
                topology.drain_before_switchover.as_ref().map(Spanned::span),
                topology.write_hold_timeout.as_ref().map(Spanned::span),
                topology.promote_ahead.as_ref().map(Spanned::span),
            ];
            if let Some(span) = stray.into_iter().flatten().next() {
                let message =
                    format!("{PATRONI_ONLY} apply only with topology.source = \"patroni\"; set it, or remove them");
                self.report(Some(span), message);
            }
            return TopologyConfig::default();
        }
        let urls = self.patroni_urls(topology, table.span());
        let poll_interval = self.nonzero_duration(
            topology.poll_interval.as_ref(),
            "topology.poll_interval",
            DEFAULT_POLL_INTERVAL,
        );
        let request_timeout = self.nonzero_duration(
            topology.request_timeout.as_ref(),
            "topology.request_timeout",
            DEFAULT_REQUEST_TIMEOUT,
        );
        let drain_before_switchover = self.duration(
            topology.drain_before_switchover.as_ref(),
            "topology.drain_before_switchover",
            DEFAULT_DRAIN,
        );
        let write_hold_timeout = self.nonzero_duration(
            topology.write_hold_timeout.as_ref(),
            "topology.write_hold_timeout",
            DEFAULT_WRITE_HOLD,
        );
        let promote_ahead = self.nonzero_duration(
            topology.promote_ahead.as_ref(),
            "topology.promote_ahead",
            DEFAULT_PROMOTE_AHEAD,
        );
        // Every pgsplit must read the schedule before it has to start draining: one poll, plus one request.
        let needed = drain_before_switchover + poll_interval + request_timeout;
        if promote_ahead <= needed {
            let span = topology.promote_ahead.as_ref().map_or(table.span(), Spanned::span);
            let message = format!(
                "topology.promote_ahead ({promote_ahead:?}) must be longer than drain_before_switchover + \
                 poll_interval + request_timeout ({needed:?}), or pgsplit instances may see the switchover too late \
                 to drain"
            );
            self.report(Some(span), message);
        }
        TopologyConfig {
            source: TopologySource::Patroni(PatroniConfig {
                urls,
                poll_interval,
                request_timeout,
                drain_before_switchover,
                write_hold_timeout,
                promote_ahead,
            }),
        }
    }

    fn patroni_urls(&mut self, topology: &RawTopology, table: super::raw::Span) -> Vec<PatroniUrl> {
        let Some(list) = &topology.patroni else {
            let message = "topology.source = \"patroni\" needs `patroni = [\"http://host:8008\", …]`: the REST APIs \
                           of Patroni members";
            self.report(Some(table), message.to_owned());
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(Some(list.span()), "topology.patroni: list at least one URL".to_owned());
        }
        let mut urls: Vec<PatroniUrl> = Vec::new();
        for url in list.get_ref() {
            match parse_patroni_url(url.get_ref()) {
                Ok(parsed) if urls.contains(&parsed) => {
                    self.report(Some(url.span()), format!("topology.patroni: {parsed} is listed twice"));
                }
                Ok(parsed) => urls.push(parsed),
                Err(problem) => self.report(Some(url.span()), format!("topology.patroni: {problem}")),
            }
        }
        urls
    }

    /// `[leader]` with Patroni: Patroni names the leader, so only the connection limit may be set here.
    pub(super) fn leader_named_by_patroni(&mut self, raw: Option<&Spanned<RawLeader>>) -> LeaderConfig {
        let max_connections = match raw {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(table) => {
                let leader = table.get_ref();
                let named = [
                    leader.name.as_ref().map(|v| ("name", v.span())),
                    leader.host.as_ref().map(|v| ("host", v.span())),
                    leader.port.as_ref().map(|v| ("port", v.span())),
                ];
                for (key, span) in named.into_iter().flatten() {
                    let message = format!(
                        "leader.{key}: with topology.source = \"patroni\", Patroni names the leader; remove it (only \
                         leader.max_connections applies)"
                    );
                    self.report(Some(span), message);
                }
                self.count(
                    leader.max_connections.as_ref(),
                    "leader.max_connections",
                    DEFAULT_MAX_CONNECTIONS,
                )
            }
        };
        // No leader until Patroni names one and PostgreSQL confirms it: an address nothing listens on.
        LeaderConfig {
            name: String::new(),
            host: String::new(),
            port: 0,
            max_connections,
        }
    }

    /// What Patroni decides cannot also be written in the file.
    pub(super) fn patroni_decides(&mut self, raw: &RawConfig) {
        for pool in &raw.follower_pools {
            if let Some(first) = pool.get_ref().instances.first() {
                let message = "with topology.source = \"patroni\", Patroni's members fill the pools (by their tag \
                               `pgsplit_pool`, else routing.read_pool); remove `instances`";
                self.report(Some(first.span()), message.to_owned());
            }
        }
        if let Some(follow) = &raw.routing.follow_promotions {
            let message = "routing.follow_promotions: with topology.source = \"patroni\", pgsplit follows the leader \
                           Patroni names (once PostgreSQL confirms it); remove the key";
            self.report(Some(follow.span()), message.to_owned());
        }
    }
}

/// `http://host[:port][/]`: Patroni's REST API (port 8008 by default). TLS is not spoken to Patroni yet.
pub(super) fn parse_patroni_url(text: &str) -> Result<PatroniUrl, String> {
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "\"{text}\": pgsplit does not speak TLS to Patroni's REST API yet; use http:// on a trusted network"
            ));
        }
        _ => return Err(format!("\"{text}\" is not a URL like \"http://10.0.0.1:8008\"")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "\"{text}\": give only the scheme, host and port (\"http://10.0.0.1:8008\"): no path, query or user"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("\"{text}\": an IPv6 address needs its closing ']'"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => DEFAULT_PATRONI_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("\"{text}\": the port must be a number from 1 to 65535"))?,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("\"{text}\" names no host"));
    }
    Ok(PatroniUrl {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigErrors};

    const USERS: &str = "[[users]]\nname = \"app\"\npassword = \"secret\"\n";

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let no_env = |_: &str| Err(std::env::VarError::NotPresent);
        Config::from_text(text, "t.toml", Path::new("/etc/pgsplit"), &no_env, 2)
    }

    /// Every problem as `line:col: message`.
    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                .collect(),
        }
    }

    #[test]
    fn patroni_needs_no_leader_and_fills_pools_from_members() {
        let config = parse(&format!(
            "{USERS}[topology]\nsource = \"patroni\"\npatroni = [\"http://10.0.0.1:8008\", \"http://[::1]\", \
             \"http://p3.internal:18008/\"]\n[leader]\nmax_connections = 7\n\
             [[follower_pools]]\nname = \"analytics\"\nlisten = \"127.0.0.1:6433\"\n"
        ))
        .unwrap();
        let patroni = config.patroni().expect("patroni source");
        let urls: Vec<String> = patroni.urls.iter().map(ToString::to_string).collect();
        assert_eq!(
            urls,
            ["http://10.0.0.1:8008", "http://[::1]:8008", "http://p3.internal:18008"]
        );
        assert_eq!(patroni.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(patroni.promote_ahead, DEFAULT_PROMOTE_AHEAD);
        assert_eq!(
            (config.leader.port, config.leader.max_connections),
            (0, 7),
            "no leader until Patroni names one"
        );
        assert_eq!(
            config.routing.read_pool.as_deref(),
            Some("default"),
            "untagged replicas form `default`"
        );
        assert!(
            config
                .summary()
                .starts_with("members from Patroni (http://10.0.0.1:8008"),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn the_file_source_is_the_default_and_refuses_patroni_keys() {
        let minimal = format!("{USERS}[leader]\nhost = \"h\"\nport = 5432\n");
        assert_eq!(parse(&minimal).unwrap().topology, TopologyConfig::default());
        let explicit = format!("{minimal}[topology]\nsource = \"file\"\n");
        assert_eq!(parse(&explicit).unwrap().patroni(), None);
        let stray = format!("{minimal}[topology]\npoll_interval = \"1s\"\n");
        assert_eq!(problems(&stray).len(), 1);
        assert!(
            problems(&stray)[0].starts_with("8:17: patroni, poll_interval"),
            "{:?}",
            problems(&stray)
        );
        let unknown = format!("{minimal}[topology]\nsource = \"consul\"\n");
        assert_eq!(
            problems(&unknown),
            ["8:10: topology.source: \"consul\" is not a source; use \"file\" or \"patroni\""]
        );
        let typo = format!("{minimal}[topology]\nsorce = \"patroni\"\n");
        assert!(
            problems(&typo)[0].contains("unknown field `sorce`"),
            "{:?}",
            problems(&typo)
        );
    }

    #[test]
    fn what_patroni_decides_cannot_be_written_in_the_file() {
        let text = format!(
            "{USERS}[topology]\nsource = \"patroni\"\npatroni = [\"http://h:8008\"]\n\
             [leader]\nhost = \"db\"\nport = 5432\n\
             [[follower_pools]]\nname = \"default\"\ninstances = [ {{ name = \"f1\", host = \"h\", port = 1 }} ]\n\
             [routing]\nfollow_promotions = true\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found[0].starts_with("8:8: leader.host: with topology.source = \"patroni\""),
            "{found:?}"
        );
        assert!(found[1].starts_with("9:8: leader.port"), "{found:?}");
        assert!(
            found[2].starts_with("12:15: with topology.source = \"patroni\", Patroni's members"),
            "{found:?}"
        );
        assert!(found[3].starts_with("14:21: routing.follow_promotions"), "{found:?}");
    }

    #[test]
    fn urls_and_timings_are_checked() {
        let with = |rest: &str| format!("{USERS}[topology]\nsource = \"patroni\"\n{rest}");
        assert!(
            problems(&with(""))[0].contains("needs `patroni = ["),
            "{:?}",
            problems(&with(""))
        );
        assert!(problems(&with("patroni = []"))[0].contains("list at least one URL"));
        let bad = with(
            "patroni = [\"https://h\", \"h:8008\", \"http://h:0\", \"http://u@h\", \"http://h/x\", \"http://[::1\"]",
        );
        let found = problems(&bad);
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(found[0].contains("does not speak TLS to Patroni"), "{found:?}");
        assert!(found[1].contains("is not a URL like"), "{found:?}");
        assert!(found[2].contains("port must be a number"), "{found:?}");
        assert!(found[3].contains("no path, query or user"), "{found:?}");
        assert!(found[5].contains("closing ']'"), "{found:?}");
        let twice = with("patroni = [\"http://h:8008\", \"http://h\"]");
        assert!(
            problems(&twice)[0].contains("http://h:8008 is listed twice"),
            "{:?}",
            problems(&twice)
        );
        let late = with("patroni = [\"http://h\"]\npromote_ahead = \"2s\"\ndrain_before_switchover = \"1s\"");
        assert!(
            problems(&late)[0].contains("promote_ahead (2s) must be longer than"),
            "{:?}",
            problems(&late)
        );
        let zero = with("patroni = [\"http://h\"]\npoll_interval = \"0s\"");
        assert!(problems(&zero)[0].contains("topology.poll_interval must be greater than zero"));
    }
}
