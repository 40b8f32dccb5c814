//! Rules for single values, shared by every section: required keys, ports, counts, durations, sizes, TLS paths,
//! follower pool names, and the two file-wide uniqueness rules (listen addresses, instance names).
//!
//! Owns the list of problems. Each check reports at the value's position (or its table's, for a missing key) and
//! hands back a stand-in (the default, or an empty value) so that validation can go on; nothing here decides
//! defaults for a section or builds a `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::Problem;
use super::raw::{Scalar, Span};
use super::units::{self, DURATION_UNITS};

pub(super) const POOL_NAME_RULE: &str =
    "names are 3 to 32 ASCII letters, digits and single hyphens, starting with a letter";

#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
    /// Listen addresses seen so far: address, where it was written, what it is (for the "distinct" rule).
    listens: Vec<(SocketAddr, Option<Span>, String)>,
    /// Instance names seen so far, leader first: name, where, who owns it (for the "unique" rule).
    instances: Vec<(String, Option<Span>, String)>,
}

impl Checker {
    pub(super) fn report(&mut self, span: Option<Span>, message: String) {
        self.problems.push(Problem { span, message });
    }

    /// Parses a listen address and checks it against every address seen before; `None` when invalid.
    pub(super) fn listen_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => {
                self.register_listen(addr, Some(value.span()), key);
                Some(addr)
            }
            Err(_) => {
                let message = format!(
                    "{key}: \"{}\" is not an IP address and port; write it like \"127.0.0.1:6432\" or \"[::1]:6432\"",
                    value.get_ref()
                );
                self.report(Some(value.span()), message);
                None
            }
        }
    }

    pub(super) fn register_listen(&mut self, addr: SocketAddr, span: Option<Span>, what: &str) {
        // Port 0 asks the OS for a free port, so it never collides (tests use it).
        let taken = self.listens.iter().find(|(seen, ..)| {
            addr.port() != 0
                && seen.port() == addr.port()
                && (seen.ip() == addr.ip() || seen.ip().is_unspecified() || addr.ip().is_unspecified())
        });
        if let Some((seen, seen_span, seen_what)) = taken.cloned() {
            let message = format!(
                "{what} {addr} collides with {seen_what} {seen}; every endpoint needs its own address (another port, \
                 or another IP when neither is a wildcard)"
            );
            self.report(span.clone().or(seen_span), message);
        }
        self.listens.push((addr, span, what.to_owned()));
    }

    pub(super) fn tls_path(&mut self, value: &Spanned<String>, key: &str, base_dir: &Path) -> PathBuf {
        if value.get_ref().is_empty() {
            self.report(Some(value.span()), format!("{key} must not be empty; give a file path"));
        }
        base_dir.join(value.get_ref())
    }

    /// Checks that an instance name is non-empty and not used before (leader and followers share one namespace).
    pub(super) fn register_instance(&mut self, name: &str, span: Option<Span>, owner: &str) {
        if name.is_empty() {
            self.report(span, format!("instance name in {owner} must not be empty"));
            return;
        }
        if let Some((_, seen_span, seen_owner)) = self.instances.iter().find(|(seen, ..)| seen == name).cloned() {
            let message = format!(
                "instance name \"{name}\" is already used by {seen_owner}; instance names must be unique across the \
                 leader and every follower pool"
            );
            self.report(span.clone().or(seen_span), message);
        }
        self.instances.push((name.to_owned(), span, owner.to_owned()));
    }

    /// A key the schema requires, as non-empty text; reported at its table when missing.
    pub(super) fn required_text(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        table: Span,
        owner: &str,
    ) -> String {
        match value {
            Some(value) if value.get_ref().is_empty() => {
                self.report(Some(value.span()), format!("`{key}` of {owner} must not be empty"));
                String::new()
            }
            Some(value) => value.get_ref().clone(),
            None => {
                self.report(Some(table), format!("missing `{key}` in {owner}"));
                String::new()
            }
        }
    }

    pub(super) fn port(&mut self, value: Option<&Spanned<i64>>, table: Span, owner: &str) -> u16 {
        let Some(value) = value else {
            self.report(Some(table), format!("missing `port` in {owner}"));
            return 0;
        };
        match u16::try_from(*value.get_ref()) {
            Ok(port) if port >= 1 => port,
            _ => {
                let message = format!("`port` of {owner} must be from 1 to 65535, got {}", value.get_ref());
                self.report(Some(value.span()), message);
                0
            }
        }
    }

    /// A count that must be at least 1 and fit `T`; the default when absent or invalid.
    pub(super) fn count<T: TryFrom<i64>>(&mut self, value: Option<&Spanned<i64>>, key: &str, default: T) -> T {
        let Some(value) = value else { return default };
        let number = *value.get_ref();
        let problem = match T::try_from(number) {
            _ if number < 1 => format!("{key} must be at least 1, got {number}"),
            Ok(count) => return count,
            Err(_) => format!("{key}: {number} is too large"),
        };
        self.report(Some(value.span()), problem);
        default
    }

    pub(super) fn duration(&mut self, value: Option<&Spanned<Scalar>>, key: &str, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        let problem = match value.get_ref() {
            Scalar::Text(text) => match units::parse_duration(text) {
                Ok(duration) => return duration,
                Err(problem) => problem,
            },
            Scalar::Int(number) => format!(
                "a bare number is not a duration; write a string with a unit ({DURATION_UNITS}), e.g. \"{number}ms\" or \"{number}s\""
            ),
        };
        self.report(Some(value.span()), format!("{key}: {problem}"));
        default
    }

    pub(super) fn nonzero_duration(
        &mut self,
        value: Option<&Spanned<Scalar>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(value, key, default);
        if let Some(value) = value
            && duration.is_zero()
        {
            self.report(Some(value.span()), format!("{key} must be greater than zero"));
        }
        duration
    }

    pub(super) fn size(&mut self, value: Option<&Spanned<Scalar>>, key: &str, default: u64) -> u64 {
        let Some(value) = value else { return default };
        let problem = match value.get_ref() {
            Scalar::Text(text) => match units::parse_size(text) {
                Ok(size) => return size,
                Err(problem) => problem,
            },
            Scalar::Int(number) => match u64::try_from(*number) {
                Ok(size) => return size,
                Err(_) => format!("{number} is negative; sizes are bytes, or a string like \"16MB\""),
            },
        };
        self.report(Some(value.span()), format!("{key}: {problem}"));
        default
    }
}

/// Why `name` is not a valid follower pool name, or `None` when it is.
pub(super) fn pool_name_problem(name: &str) -> Option<&'static str> {
    if !(3..=32).contains(&name.chars().count()) {
        Some("must be 3 to 32 characters long")
    } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("must start with a letter")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Some("only ASCII letters, digits and hyphens are allowed")
    } else if name.ends_with('-') {
        Some("must not end with a hyphen")
    } else if name.contains("--") {
        Some("hyphens must not be doubled")
    } else {
        None
    }
}
