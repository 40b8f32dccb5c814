//! Errors a client sees: severity, SQLSTATE and a message that names the limit or instance involved (SPEC §4).
//!
//! One constructor per situation, so the same condition always reads the same way; `encode` writes the
//! ErrorResponse bytes, well-formed whatever text a message quotes.

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
            put_field_value(out, value);
        }
        out.put_u8(0);
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }
}

/// A field's value and its terminating NUL. Messages quote what peers sent (a malformed SCRAM message, a server's
/// refusal), and a NUL there would end the field early and make the rest fields of the peer's choosing — a SQLSTATE
/// among them: each NUL is written as the two characters `\0` instead.
fn put_field_value(out: &mut BytesMut, value: &str) {
    let mut rest = value.as_bytes();
    while let Some(nul) = memchr::memchr(0, rest) {
        out.put_slice(&rest[..nul]);
        out.put_slice(b"\\0");
        rest = &rest[nul + 1..];
    }
    out.put_slice(rest);
    out.put_u8(0);
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

    /// The fields of an encoded ErrorResponse, as a client splits them.
    fn fields(out: &[u8]) -> Vec<(u8, &[u8])> {
        let mut body = &out[5..];
        let mut fields = Vec::new();
        while let [field, rest @ ..] = body
            && *field != 0
        {
            let nul = rest.iter().position(|&b| b == 0).expect("a terminated field");
            fields.push((*field, &rest[..nul]));
            body = &rest[nul + 1..];
        }
        assert_eq!(body, [0], "one terminator ends the list");
        fields
    }

    /// Messages quote what a peer sent: a client's malformed SCRAM message (found by the client_auth fuzz target),
    /// a server's SCRAM refusal (server_login). A NUL in them must not end the field early and turn the rest into
    /// fields of the peer's choosing.
    #[test]
    fn a_nul_in_a_field_cannot_end_it() {
        let mut out = BytesMut::new();
        SqlError::protocol_violation("invalid SCRAM message: \u{11}\0n,,n=,r=abc")
            .with_hint("x\0C00000")
            .encode(&mut out);
        assert_eq!(
            fields(&out),
            [
                (b'S', &b"FATAL"[..]),
                (b'V', b"FATAL"),
                (b'C', b"08P01"),
                (b'M', b"invalid SCRAM message: \x11\\0n,,n=,r=abc"),
                (b'H', b"x\\0C00000"),
            ]
        );
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
    }
}
