//! Client authentication, pgsplit playing the server: SCRAM-SHA-256 (pgwire's `ScramServerAuth` against a verifier
//! derived once at load), md5, or trust, per `[[users]]`.
//!
//! An unknown user gets the same SCRAM exchange as a known one, against a verifier nobody can satisfy, and the same
//! final 28P01: the answer never reveals which user names exist.

use bytes::{Buf, BytesMut};
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, gen_salted_password};
use rand::RngExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::SqlError;
use super::frame::read_cstr;
use super::io::{IoError, read_frame};
use super::messages;
use crate::config::{AuthMethod, UserConfig};

const SCRAM_ITERATIONS: usize = 4096;
const SCRAM_MECHANISM: &str = "SCRAM-SHA-256";
/// Password and SASL messages are small; anything longer is a protocol violation.
const MAX_AUTH_MESSAGE: usize = 8192;

/// What pgsplit needs to check one user's password, derived once when the config is loaded.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub method: AuthMethod,
    /// The user's password, kept for md5 (whose hash depends on a per-login salt) and for logging in to servers.
    pub password: String,
    verifier: Verifier,
}

#[derive(Clone)]
struct Verifier {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::rng().random();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, SCRAM_ITERATIONS) {
            ScramSecret::Verifier {
                salt,
                stored_key,
                server_key,
                ..
            } => Verifier {
                salt,
                stored_key,
                server_key,
            },
            ScramSecret::SaltedPassword { .. } => unreachable!("verifier_from_salted_password returns a Verifier"),
        }
    }

    /// A verifier no password matches, for unknown users.
    fn impossible() -> Verifier {
        let mut rng = rand::rng();
        Verifier {
            salt: rng.random::<[u8; 16]>().to_vec(),
            stored_key: rng.random::<[u8; 32]>().to_vec(),
            server_key: rng.random::<[u8; 32]>().to_vec(),
        }
    }

    fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: SCRAM_ITERATIONS,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

impl Credentials {
    pub fn derive(user: &UserConfig) -> Credentials {
        Credentials {
            user: user.name.clone(),
            method: user.auth,
            password: user.password.clone(),
            verifier: Verifier::from_password(&user.password),
        }
    }

    /// Whether these were derived from exactly this user entry (a reload keeps them then).
    pub fn derived_from(&self, user: &UserConfig) -> bool {
        self.user == user.name && self.method == user.auth && self.password == user.password
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
/// `credentials` is `None` for an unknown user. On rejection nothing has been sent yet about why: the caller sends
/// the returned error and closes.
pub async fn authenticate<'a, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user_name: &str,
    credentials: Option<&'a Credentials>,
) -> Result<&'a Credentials, AuthError> {
    let mut out = BytesMut::new();
    match credentials {
        Some(known) if known.method == AuthMethod::Trust => {}
        Some(known) if known.method == AuthMethod::Md5 => md5(stream, buf, &mut out, known).await?,
        _ => {
            let verifier = credentials.map_or_else(Verifier::impossible, |c| c.verifier.clone());
            scram(stream, buf, &mut out, user_name, verifier).await?;
        }
    }
    // An unknown user cannot have passed the exchange; this only makes that plain.
    let known = credentials.ok_or_else(|| SqlError::auth_failed(user_name))?;
    messages::authentication_ok(&mut out);
    stream.write_all(&out).await.map_err(IoError::from)?;
    Ok(known)
}

async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    credentials: &Credentials,
) -> Result<(), AuthError> {
    let salt: [u8; 4] = rand::rng().random();
    messages::authentication_md5(out, salt);
    stream.write_all(out).await.map_err(IoError::from)?;
    out.clear();
    let body = read_password_message(stream, buf).await?;
    let (given, _) = read_cstr(&body).ok_or_else(|| SqlError::protocol_violation("malformed password message"))?;
    let expected =
        postgres_protocol::authentication::md5_hash(credentials.user.as_bytes(), credentials.password.as_bytes(), salt);
    if !constant_time_eq(given, expected.as_bytes()) {
        return Err(SqlError::auth_failed(&credentials.user).into());
    }
    Ok(())
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user_name: &str,
    verifier: Verifier,
) -> Result<(), AuthError> {
    messages::authentication_sasl(out, &[SCRAM_MECHANISM]);
    stream.write_all(out).await.map_err(IoError::from)?;
    out.clear();

    let initial = read_password_message(stream, buf).await?;
    let client_first = parse_sasl_initial_response(&initial)?;
    let server = ScramServerAuth::new();
    let (server_first, waiting) = server
        .on_client_first_message_with_secret(client_first, verifier.secret())
        .map_err(|e| SqlError::protocol_violation(format!("invalid SCRAM message: {e}")))?;
    messages::authentication_sasl_continue(out, server_first.as_bytes());
    stream.write_all(out).await.map_err(IoError::from)?;
    out.clear();

    let client_final = read_password_message(stream, buf).await?;
    let server_final = waiting
        .on_client_final_message(&client_final)
        .map_err(|_| SqlError::auth_failed(user_name))?;
    messages::authentication_sasl_final(out, server_final.as_bytes());
    Ok(())
}

/// SASLInitialResponse body: mechanism name, then the length-prefixed client-first message.
fn parse_sasl_initial_response(body: &[u8]) -> Result<&[u8], SqlError> {
    let malformed = || SqlError::protocol_violation("malformed SASLInitialResponse");
    let (mechanism, mut rest) = read_cstr(body).ok_or_else(malformed)?;
    if mechanism != SCRAM_MECHANISM.as_bytes() {
        return Err(SqlError::protocol_violation(format!(
            "SASL mechanism \"{}\" is not supported; use {SCRAM_MECHANISM}",
            String::from_utf8_lossy(mechanism)
        )));
    }
    if rest.len() < 4 {
        return Err(malformed());
    }
    let len = rest.get_i32();
    if len < 0 || len as usize != rest.len() {
        return Err(malformed());
    }
    Ok(rest)
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
