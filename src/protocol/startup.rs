//! The first packet of a connection: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.
//!
//! These have no tag byte, only a length and a code. Reads exactly one packet (never past it: TLS may start right
//! after an SSLRequest) and bounds its length before reading the rest.

use bytes::{BufMut, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::read_cstr;

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
/// Longest startup packet PostgreSQL accepts (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: u32, secret: u32 },
    Startup(StartupParams),
}

/// The key/value pairs of a StartupMessage, in the client's order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StartupParams {
    pub params: Vec<(String, String)>,
    /// Minor protocol version the client asked for (3.x); pgsplit speaks 3.0.
    pub minor_version: u16,
}

impl StartupParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) pgsplit does not support, to be named in NegotiateProtocolVersion.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

#[derive(Debug, Error)]
pub enum StartupError {
    #[error("connection closed during startup")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid startup packet: {0}")]
    Invalid(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: pgsplit supports 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
}

/// Reads one startup-phase packet.
pub async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> Result<StartupPacket, StartupError> {
    let mut len_bytes = [0u8; 4];
    match reader.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(StartupError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::Invalid("length out of range"));
    }
    let mut body = vec![0u8; len - 4];
    reader.read_exact(&mut body).await?;
    parse_packet(&body)
}

fn parse_packet(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let key: [u8; 8] = rest
                .try_into()
                .map_err(|_| StartupError::Invalid("bad CancelRequest length"))?;
            Ok(StartupPacket::Cancel {
                pid: u32::from_be_bytes([key[0], key[1], key[2], key[3]]),
                secret: u32::from_be_bytes([key[4], key[5], key[6], key[7]]),
            })
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(StartupError::UnsupportedVersion { major, minor });
            }
            parse_params(rest, minor)
        }
    }
}

fn parse_params(mut rest: &[u8], minor_version: u16) -> Result<StartupPacket, StartupError> {
    let mut params = Vec::new();
    loop {
        let (key, after_key) = read_cstr(rest).ok_or(StartupError::Invalid("missing terminator"))?;
        if key.is_empty() {
            if !after_key.is_empty() {
                return Err(StartupError::Invalid("data after the terminator"));
            }
            break;
        }
        let (value, after_value) = read_cstr(after_key).ok_or(StartupError::Invalid("parameter without value"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| StartupError::Invalid("parameter name not UTF-8"))?;
        let value =
            String::from_utf8(value.to_vec()).map_err(|_| StartupError::Invalid("parameter value not UTF-8"))?;
        params.push((key, value));
        rest = after_value;
    }
    if !params.iter().any(|(k, _)| k == "user") {
        return Err(StartupError::Invalid("no user name given"));
    }
    Ok(StartupPacket::Startup(StartupParams { params, minor_version }))
}

/// NegotiateProtocolVersion: pgsplit speaks 3.0 and none of the `_pq_` options.
pub fn negotiate_protocol_version(out: &mut BytesMut, params: &StartupParams) {
    let start = out.len();
    out.put_u8(b'v');
    out.put_u32(0);
    out.put_u32(0);
    let options: Vec<&str> = params.protocol_options().collect();
    out.put_u32(options.len() as u32);
    for option in options {
        out.put_slice(option.as_bytes());
        out.put_u8(0);
    }
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<StartupPacket, StartupError> {
        read_packet(&mut &bytes[..]).await
    }

    fn startup(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn parses_startup_parameters_in_order() {
        let packet = startup(196608, b"user\0app\0database\0db\0\0");
        let StartupPacket::Startup(p) = read(&packet).await.unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(
            p.params,
            vec![("user".into(), "app".into()), ("database".into(), "db".into())]
        );
        assert_eq!(p.get("database"), Some("db"));
    }

    #[tokio::test]
    async fn recognises_ssl_gss_and_cancel() {
        assert_eq!(
            read(&startup(SSL_REQUEST, b"")).await.unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            read(&startup(GSSENC_REQUEST, b"")).await.unwrap(),
            StartupPacket::GssEncRequest
        );
        let cancel = startup(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(
            read(&cancel).await.unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
    }

    #[tokio::test]
    async fn rejects_bad_lengths_versions_and_bodies() {
        assert!(matches!(read(&[0, 0, 0, 4]).await, Err(StartupError::Invalid(_))));
        assert!(matches!(
            read(&[0x7f, 0xff, 0xff, 0xff]).await,
            Err(StartupError::Invalid(_))
        ));
        assert!(matches!(
            read(&startup(131072, b"user\0a\0\0")).await,
            Err(StartupError::UnsupportedVersion { major: 2, minor: 0 })
        ));
        assert!(matches!(
            read(&startup(196608, b"user\0app")).await,
            Err(StartupError::Invalid(_))
        ));
        assert!(matches!(
            read(&startup(196608, b"database\0x\0\0")).await,
            Err(StartupError::Invalid(_))
        ));
        assert!(matches!(read(&[0, 0, 0, 20, 1]).await, Err(StartupError::Io(_))));
    }
}
