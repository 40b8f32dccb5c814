//! pgsplit logging in to a PostgreSQL server: StartupMessage, the server's auth challenge (SCRAM-SHA-256 with keys
//! remembered across logins (`scram`), md5, cleartext, trust), then ParameterStatus and BackendKeyData up to
//! ReadyForQuery.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::read_cstr;
use super::io::{IoError, read_frame};
use super::messages::{self, error_field};
use super::scram::{self, Scram, ScramError};

/// Server login messages are small; ParameterStatus values are the largest.
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// What the server told us while logging in.
#[derive(Debug, Clone, Default)]
pub struct Greeting {
    pub params: Vec<(String, String)>,
    pub pid: u32,
    pub secret: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// The server refused us; its SQLSTATE and message, to pass on to the client.
    #[error("server refused login: {message} (SQLSTATE {code})")]
    Refused { code: String, message: String },
    #[error("server login: {0}")]
    Protocol(String),
}

impl From<ScramError> for LoginError {
    fn from(e: ScramError) -> Self {
        LoginError::Protocol(e.to_string())
    }
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Io(e.into())
    }
}

/// Logs in as `user` with `password`, sending `params` (which must include `user` and `database`).
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    params: &[(&str, &str)],
    user: &str,
    password: &str,
) -> Result<Greeting, LoginError> {
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;
    let mut scram: Option<Scram> = None;
    let mut greeting = Greeting::default();
    loop {
        let (tag, mut body) = read_frame(stream, buf, MAX_LOGIN_MESSAGE).await?;
        out.clear();
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(LoginError::Protocol("short authentication message".into()));
                }
                match body.get_u32() {
                    0 => continue,
                    3 => frontend::password_message(password.as_bytes(), &mut out)?,
                    5 => {
                        let salt: [u8; 4] = body[..]
                            .try_into()
                            .map_err(|_| LoginError::Protocol("bad md5 salt".into()))?;
                        let hash =
                            postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        if !sasl_mechanisms(&body).any(|m| m == scram::MECHANISM.as_bytes()) {
                            return Err(LoginError::Protocol(
                                "server offers no SASL mechanism pgsplit supports".into(),
                            ));
                        }
                        let (client, first) = Scram::new(password);
                        frontend::sasl_initial_response(scram::MECHANISM, first.as_bytes(), &mut out)?;
                        scram = Some(client);
                    }
                    11 => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| LoginError::Protocol("unexpected SASL step".into()))?;
                        let last = client.respond(&body)?;
                        frontend::sasl_response(last.as_bytes(), &mut out)?;
                    }
                    12 => {
                        let client = scram
                            .take()
                            .ok_or_else(|| LoginError::Protocol("unexpected SASL final".into()))?;
                        client.verify(&body)?;
                        continue;
                    }
                    other => {
                        return Err(LoginError::Protocol(format!(
                            "unsupported authentication request {other}"
                        )));
                    }
                }
                stream.write_all(&out).await?;
            }
            b'S' => {
                if let Some((name, value)) = messages::parse_parameter_status(&body) {
                    greeting.params.push((name.to_owned(), value.to_owned()));
                }
            }
            b'K' => {
                if body.len() < 8 {
                    return Err(LoginError::Protocol("short BackendKeyData".into()));
                }
                greeting.pid = body.get_u32();
                greeting.secret = body.get_u32();
            }
            b'Z' => return Ok(greeting),
            b'E' => {
                return Err(LoginError::Refused {
                    code: error_field(&body, b'C').unwrap_or("08006").to_owned(),
                    message: error_field(&body, b'M').unwrap_or("unknown error").to_owned(),
                });
            }
            b'N' => {}
            other => {
                return Err(LoginError::Protocol(format!(
                    "unexpected message '{}'",
                    other.escape_ascii()
                )));
            }
        }
    }
}

fn sasl_mechanisms(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (name, rest) = read_cstr(body)?;
        body = rest;
        (!name.is_empty()).then_some(name)
    })
}
