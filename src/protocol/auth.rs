//! Client authentication, pgsplit playing the server: SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS over TLS, see
//! `scram::server`) against a verifier derived once at load, md5, or trust, per `[[users]]`.
//!
//! An unknown user gets the exchange of the method most users have (SCRAM unless md5 users are the majority)
//! against credentials nobody can satisfy, with a salt stable per name, and the same final 28P01: the answer never
//! reveals which SCRAM or md5 user names exist. Trust users cannot be hidden (they are let in at once), so a
//! config with trust users tells who they are; docs/configuration.md says so.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};
use rand::RngExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::SqlError;
use super::frame::read_cstr;
use super::io::{IoError, read_frame};
use super::messages;
use super::scram::constant_time_eq;
use super::scram::server::{Binding, Exchange, ScramServerError, Verifier};
use crate::config::{AuthMethod, UserConfig};
use crate::secret::Secret;

/// Password and SASL messages are small; anything longer is a protocol violation.
const MAX_AUTH_MESSAGE: usize = 8192;

/// What pgsplit needs to check one user's password, derived once when the config is loaded.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub method: AuthMethod,
    /// The user's password, kept for md5 (whose hash depends on a per-login salt) and for logging in to servers.
    pub password: Secret,
    verifier: Verifier,
}

impl Credentials {
    pub fn derive(user: &UserConfig) -> Credentials {
        Credentials {
            user: user.name.clone(),
            method: user.auth,
            password: user.password.clone(),
            verifier: Verifier::from_password(user.password.expose()),
        }
    }

    /// Whether these were derived from exactly this user entry (a reload keeps them then).
    pub fn derived_from(&self, user: &UserConfig) -> bool {
        self.user == user.name && self.method == user.auth && self.password == user.password
    }
}

/// Every configured user's credentials, and how an unknown name is answered.
#[derive(Debug)]
pub struct Users {
    by_name: HashMap<String, Credentials>,
    /// The exchange an unknown user gets: that of most users.
    unknown: AuthMethod,
    /// Keys the mock salts of unknown users; random per process.
    mock_secret: [u8; 32],
}

impl Users {
    /// Credentials for `users`; an unchanged user keeps those in `known` (SCRAM derivation is deliberately slow).
    pub fn derive(users: &[UserConfig], known: Option<&Users>) -> Users {
        let by_name: HashMap<String, Credentials> = users
            .iter()
            .map(|user| {
                let credentials = match known.and_then(|k| k.by_name.get(&user.name)) {
                    Some(c) if c.derived_from(user) => c.clone(),
                    _ => Credentials::derive(user),
                };
                (user.name.clone(), credentials)
            })
            .collect();
        let md5 = users.iter().filter(|u| u.auth == AuthMethod::Md5).count();
        let scram = users.iter().filter(|u| u.auth == AuthMethod::ScramSha256).count();
        Users {
            by_name,
            unknown: if md5 > scram {
                AuthMethod::Md5
            } else {
                AuthMethod::ScramSha256
            },
            mock_secret: known.map_or_else(|| rand::rng().random(), |k| k.mock_secret),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Credentials> {
        self.by_name.get(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Rejected(SqlError),
}

impl From<SqlError> for AuthError {
    fn from(e: SqlError) -> Self {
        AuthError::Rejected(e)
    }
}

/// Runs the exchange for `user_name` and sends AuthenticationOk on success, returning the user's credentials.
/// `binding` is what this connection offers for SCRAM-SHA-256-PLUS. On rejection nothing has been sent yet about
/// why: the caller sends the returned error and closes.
pub async fn authenticate<'a, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user_name: &str,
    users: &'a Users,
    binding: Binding<'_>,
) -> Result<&'a Credentials, AuthError> {
    let mut out = BytesMut::new();
    let credentials = users.get(user_name);
    let method = credentials.map_or(users.unknown, |c| c.method);
    match method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let password = credentials.map(|c| c.password.expose());
            md5(stream, buf, &mut out, user_name, password).await?;
        }
        AuthMethod::ScramSha256 => {
            let mock;
            let verifier = match credentials {
                Some(known) => &known.verifier,
                None => {
                    mock = Verifier::mock(user_name, &users.mock_secret);
                    &mock
                }
            };
            scram(stream, buf, &mut out, user_name, verifier, binding).await?;
        }
    }
    // An unknown user cannot have passed the exchange; this only makes that plain.
    let known = credentials.ok_or_else(|| SqlError::auth_failed(user_name))?;
    messages::authentication_ok(&mut out);
    send(stream, &out).await?;
    Ok(known)
}

/// `password` is None for an unknown user: the exchange runs, and fails.
async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
    password: Option<&str>,
) -> Result<(), AuthError> {
    let salt: [u8; 4] = rand::rng().random();
    messages::authentication_md5(out, salt);
    send(stream, out).await?;
    out.clear();
    let body = read_password_message(stream, buf).await?;
    let (given, _) = read_cstr(&body).ok_or_else(|| SqlError::protocol_violation("malformed password message"))?;
    let expected =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.unwrap_or_default().as_bytes(), salt);
    if password.is_none() || !constant_time_eq(given, expected.as_bytes()) {
        return Err(SqlError::auth_failed(user).into());
    }
    Ok(())
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user_name: &str,
    verifier: &Verifier,
    binding: Binding<'_>,
) -> Result<(), AuthError> {
    let refused = |error: ScramServerError| match error {
        ScramServerError::Malformed(message) => AuthError::Rejected(SqlError::protocol_violation(message)),
        ScramServerError::Failed => AuthError::Rejected(SqlError::auth_failed(user_name)),
    };
    messages::authentication_sasl(out, binding.mechanisms());
    send(stream, out).await?;
    out.clear();

    let initial = read_password_message(stream, buf).await?;
    let (mechanism, client_first) = parse_sasl_initial_response(&initial)?;
    let (exchange, server_first) = Exchange::start(mechanism, client_first, verifier, binding).map_err(refused)?;
    messages::authentication_sasl_continue(out, server_first.as_bytes());
    send(stream, out).await?;
    out.clear();

    let client_final = read_password_message(stream, buf).await?;
    let server_final = exchange.finish(&client_final).map_err(refused)?;
    messages::authentication_sasl_final(out, server_final.as_bytes());
    Ok(())
}

/// Writes and flushes (over TLS, written bytes may wait in the encryption layer).
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), AuthError> {
    stream.write_all(bytes).await.map_err(IoError::from)?;
    stream.flush().await.map_err(IoError::from)?;
    Ok(())
}

/// SASLInitialResponse body: mechanism name, then the length-prefixed client-first message.
fn parse_sasl_initial_response(body: &[u8]) -> Result<(&[u8], &[u8]), SqlError> {
    let malformed = || SqlError::protocol_violation("malformed SASLInitialResponse");
    let (mechanism, mut rest) = read_cstr(body).ok_or_else(malformed)?;
    if rest.len() < 4 {
        return Err(malformed());
    }
    let len = rest.get_i32();
    if len < 0 || len as usize != rest.len() {
        return Err(malformed());
    }
    Ok((mechanism, rest))
}

async fn read_password_message<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Vec<u8>, AuthError> {
    let (tag, body) = read_frame(stream, buf, MAX_AUTH_MESSAGE).await?;
    if tag != b'p' {
        return Err(SqlError::protocol_violation(format!(
            "expected a password message, got message type '{}'",
            tag.escape_ascii()
        ))
        .into());
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, auth: AuthMethod) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: "pw".into(),
            auth,
        }
    }

    #[test]
    fn unknown_users_get_the_method_most_users_have() {
        let scram = Users::derive(&[user("a", AuthMethod::ScramSha256), user("b", AuthMethod::Md5)], None);
        assert_eq!(scram.unknown, AuthMethod::ScramSha256);
        let md5 = Users::derive(
            &[
                user("a", AuthMethod::Md5),
                user("b", AuthMethod::Md5),
                user("c", AuthMethod::Trust),
            ],
            None,
        );
        assert_eq!(md5.unknown, AuthMethod::Md5);
        // A reload keeps unchanged users' verifiers and the mock secret (an unknown name keeps its salt).
        let again = Users::derive(&[user("a", AuthMethod::Md5)], Some(&md5));
        assert_eq!(again.mock_secret, md5.mock_secret);
    }

    #[test]
    fn debug_output_holds_no_password() {
        let users = Users::derive(&[user("a", AuthMethod::ScramSha256)], None);
        let shown = format!("{users:?}");
        assert!(shown.contains("\"a\"") && !shown.contains("pw\""), "{shown}");
    }
}
