//! pgsplit logging in to a PostgreSQL server: StartupMessage, the server's auth challenge (SCRAM-SHA-256, -PLUS
//! over TLS, with keys remembered across logins (`scram`); md5, cleartext or none only when `server.auth_methods`
//! lists them), then ParameterStatus and BackendKeyData up to ReadyForQuery. AuthenticationOk is believed only
//! after the server proved it knows the password too (SASL final), when SCRAM was asked for.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::read_cstr;
use super::io::{IoError, read_frame};
use super::messages::{self, error_field};
use super::scram::{self, Channel, Scram, ScramError};
use crate::config::ServerAuthMethod;

/// Server login messages are small; ParameterStatus values are the largest.
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// The ways a server may have pgsplit authenticate (`server.auth_methods`, like libpq's `require_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMethods {
    pub scram: bool,
    pub md5: bool,
    pub password: bool,
    /// The server may let pgsplit in without asking for anything.
    pub none: bool,
}

impl AuthMethods {
    pub fn of(methods: &[ServerAuthMethod]) -> AuthMethods {
        let has = |m: ServerAuthMethod| methods.contains(&m);
        AuthMethods {
            scram: has(ServerAuthMethod::ScramSha256),
            md5: has(ServerAuthMethod::Md5),
            password: has(ServerAuthMethod::Password),
            none: has(ServerAuthMethod::None),
        }
    }

    /// Whether the authentication request `code` may be answered; `asked`: an earlier request was answered (so an
    /// AuthenticationOk ends an authentication, rather than skipping it).
    pub fn check(&self, code: u32, asked: bool) -> Result<(), String> {
        let (allowed, name) = match code {
            0 if asked => return Ok(()),
            0 => (self.none, "none"),
            3 => (self.password, "password"),
            5 => (self.md5, "md5"),
            10..=12 => (self.scram, "scram-sha-256"),
            _ => return Ok(()),
        };
        if allowed {
            return Ok(());
        }
        Err(if code == 0 {
            "the server let pgsplit in without authentication, and server.auth_methods does not list \"none\"".into()
        } else {
            format!("the server asks for \"{name}\" authentication, which server.auth_methods does not allow")
        })
    }
}

impl Default for AuthMethods {
    fn default() -> Self {
        AuthMethods::of(&[ServerAuthMethod::ScramSha256])
    }
}

/// What a login may use: the methods allowed, and whether the connection is TLS (with the server's
/// `tls-server-end-point` data, when its certificate gives one) for SCRAM-SHA-256-PLUS.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub methods: AuthMethods,
    pub tls: bool,
    pub end_point: Option<Vec<u8>>,
}

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
    security: &Security,
) -> Result<Greeting, LoginError> {
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;
    let mut scram: Option<Scram> = None;
    // A request was answered; with SCRAM, the server's proof was checked too.
    let mut asked = false;
    let mut proven = true;
    let mut greeting = Greeting::default();
    loop {
        let (tag, mut body) = read_frame(stream, buf, MAX_LOGIN_MESSAGE).await?;
        out.clear();
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(LoginError::Protocol("short authentication message".into()));
                }
                let code = body.get_u32();
                security.methods.check(code, asked).map_err(LoginError::Protocol)?;
                match code {
                    0 if !proven => {
                        return Err(LoginError::Protocol(
                            "the server said AuthenticationOk before proving it knows the password (SASL final)".into(),
                        ));
                    }
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
                        if scram.is_some() || !sasl_mechanisms(&body).any(|m| m == scram::MECHANISM.as_bytes()) {
                            return Err(LoginError::Protocol(
                                "server offers no SASL mechanism pgsplit supports".into(),
                            ));
                        }
                        let plus = sasl_mechanisms(&body).any(|m| m == scram::MECHANISM_PLUS.as_bytes());
                        let channel = match (&security.end_point, plus) {
                            (Some(data), true) if security.tls => Channel::EndPoint(data.clone()),
                            _ if security.tls && !plus => Channel::NotOffered,
                            _ => Channel::Unbound,
                        };
                        let mechanism = channel.mechanism();
                        let (client, first) = Scram::new(password, channel);
                        frontend::sasl_initial_response(mechanism, first.as_bytes(), &mut out)?;
                        scram = Some(client);
                        proven = false;
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
                        proven = true;
                        continue;
                    }
                    other => {
                        return Err(LoginError::Protocol(format!(
                            "unsupported authentication request {other}"
                        )));
                    }
                }
                asked = true;
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
