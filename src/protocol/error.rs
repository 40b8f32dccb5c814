//! Errors a client sees: severity, SQLSTATE and a message that names the limit or instance involved (SPEC §4).
//!
//! One constructor per situation, so the same condition always reads the same way; `encode` writes the
//! ErrorResponse bytes.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection is closed after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// SQLSTATE codes pgsplit itself raises.
pub mod code {
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub severity: Severity,
    pub code: Cow<'static, str>,
    pub message: String,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(severity: Severity, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        SqlError {
            severity,
            code: code.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn too_many_clients(max: usize) -> Self {
        SqlError::new(
            Severity::Fatal,
            code::TOO_MANY_CONNECTIONS,
            format!("too many client connections: pgsplit allows {max} (proxy.max_client_connections)"),
        )
        .with_hint("Close idle connections or raise proxy.max_client_connections.")
    }

    pub fn checkout_timeout(instance: &str, pool_size: usize, waited_ms: u128) -> Self {
        SqlError::new(
            Severity::Error,
            code::TOO_MANY_CONNECTIONS,
            format!(
                "no server connection to instance \"{instance}\" became free within {waited_ms} ms \
                 (all {pool_size} in use)"
            ),
        )
        .with_hint("Retry, shorten transactions, or raise max_connections / server.checkout_timeout.")
    }

    /// The same answer for an unknown user and a wrong password, so user names cannot be probed.
    pub fn auth_failed(user: &str) -> Self {
        SqlError::new(
            Severity::Fatal,
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    pub fn protocol_violation(message: impl Into<String>) -> Self {
        SqlError::new(Severity::Fatal, code::PROTOCOL_VIOLATION, message)
    }

    pub fn server_unavailable(instance: &str, cause: impl fmt::Display) -> Self {
        SqlError::new(
            Severity::Error,
            code::CANNOT_CONNECT_NOW,
            format!("instance \"{instance}\" is not available: {cause}"),
        )
        .with_hint("Retry later.")
    }

    pub fn shutting_down() -> Self {
        SqlError::new(
            Severity::Fatal,
            code::ADMIN_SHUTDOWN,
            "terminating connection: pgsplit is shutting down",
        )
    }

    /// Writes the ErrorResponse message.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(b'E');
        out.put_u32(0);
        for (field, value) in [
            (b'S', self.severity.as_str()),
            (b'V', self.severity.as_str()),
            (b'C', &*self.code),
            (b'M', self.message.as_str()),
        ]
        .into_iter()
        .chain(self.hint.as_deref().map(|h| (b'H', h)))
        {
            out.put_u8(field);
            out.put_slice(value.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity.as_str(), self.code, self.message)
    }
}

impl std::error::Error for SqlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fields_and_length() {
        let mut out = BytesMut::new();
        SqlError::new(Severity::Fatal, code::TOO_MANY_CONNECTIONS, "full").encode(&mut out);
        assert_eq!(&out[..], b"E\0\0\0\x20SFATAL\0VFATAL\0C53300\0Mfull\0\0");
    }
}
