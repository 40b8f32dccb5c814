//! pgsplit's server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, for clients logging in: a verifier per user
//! (derived once from the configured password), the server-first challenge, and the check of the client's proof
//! and channel binding — the same rules PostgreSQL applies, so libpq, JDBC and the rest see what they expect.
//!
//! Sans-IO: bytes in, bytes out; `protocol::auth` carries them. Never says why a proof failed, and an unknown user
//! runs the same exchange against a [`Verifier::mock`] whose salt is stable per name, so nothing in the exchange
//! tells a known name from an unknown one.

use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngExt;
use ring::{digest, hmac};

use super::{END_POINT, MECHANISM, MECHANISM_PLUS, constant_time_eq, derive, prepare, sign};

/// PostgreSQL's default `scram_iterations`.
pub const ITERATIONS: u32 = 4096;

/// What a client must prove knowledge of: PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone)]
pub struct Verifier {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// No password matches: the user does not exist.
    mock: bool,
}

/// Never shows the keys.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .field("mock", &self.mock)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// From a password, with a fresh random salt (thousands of PBKDF2 rounds: do it once per password).
    pub fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::rng().random();
        Self::with_salt(password, &salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let keys = derive(&prepare(password), salt, iterations);
        let stored_key = digest::digest(&digest::SHA256, &keys.client_key);
        let mut stored = [0u8; 32];
        stored.copy_from_slice(stored_key.as_ref());
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: stored,
            server_key: keys.server_key,
            mock: false,
        }
    }

    /// For a user that does not exist: salt and keys from `secret` (random per process) and the name, so asking
    /// twice shows the same salt, as for a real user.
    pub fn mock(user: &str, secret: &[u8; 32]) -> Verifier {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = |label: &str| {
            let mut context = hmac::Context::with_key(&key);
            context.update(label.as_bytes());
            context.update(user.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(context.sign().as_ref());
            out
        };
        Verifier {
            iterations: NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN),
            salt: derived("salt")[..16].to_vec(),
            stored_key: derived("stored"),
            server_key: derived("server"),
            mock: true,
        }
    }
}

/// The channel binding pgsplit can check on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// Not TLS.
    None,
    /// TLS, but the certificate's algorithm gives no `tls-server-end-point` data: only plain SCRAM is offered.
    Unavailable,
    /// TLS with this `tls-server-end-point` data: SCRAM-SHA-256-PLUS is offered too.
    EndPoint(&'a [u8]),
}

impl Binding<'_> {
    /// The mechanisms AuthenticationSASL offers, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self {
            Binding::EndPoint(_) => &[MECHANISM_PLUS, MECHANISM],
            _ => &[MECHANISM],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramServerError {
    /// The client broke the protocol (FATAL 08P01).
    #[error("{0}")]
    Malformed(String),
    /// Wrong password, unknown user, or a channel binding that does not match (FATAL 28P01).
    #[error("authentication failed")]
    Failed,
}

fn malformed(what: &str) -> ScramServerError {
    ScramServerError::Malformed(format!("malformed SCRAM message: {what}"))
}

/// The exchange after server-first: what the client-final must match.
pub struct Exchange<'a> {
    verifier: &'a Verifier,
    /// Base64 of what `c=` must hold: the GS2 header, plus the binding data for `p=`.
    expected_binding: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl<'a> Exchange<'a> {
    /// Takes the SASLInitialResponse's mechanism and client-first; returns the exchange and server-first.
    pub fn start(
        mechanism: &[u8],
        client_first: &[u8],
        verifier: &'a Verifier,
        binding: Binding<'_>,
    ) -> Result<(Exchange<'a>, String), ScramServerError> {
        let server_nonce = STANDARD.encode(rand::rng().random::<[u8; 18]>());
        Self::start_with_nonce(mechanism, client_first, verifier, binding, &server_nonce)
    }

    fn start_with_nonce(
        mechanism: &[u8],
        client_first: &[u8],
        verifier: &'a Verifier,
        binding: Binding<'_>,
        server_nonce: &str,
    ) -> Result<(Exchange<'a>, String), ScramServerError> {
        let plus = match mechanism {
            m if m == MECHANISM.as_bytes() => false,
            m if m == MECHANISM_PLUS.as_bytes() && matches!(binding, Binding::EndPoint(_)) => true,
            other => {
                return Err(ScramServerError::Malformed(format!(
                    "SASL mechanism \"{}\" is not offered here",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        let text = std::str::from_utf8(client_first).map_err(|_| malformed("client-first is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text.split_once(',').ok_or_else(|| malformed("no GS2 header"))?;
        let (authzid, bare) = rest.split_once(',').ok_or_else(|| malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramServerError::Malformed(
                "an authorization identity in SCRAM is not supported".into(),
            ));
        }
        let gs2_header = &text[..flag.len() + authzid.len() + 2];
        let mut expected_binding = gs2_header.as_bytes().to_vec();
        match (flag, binding) {
            ("n", _) if !plus => {}
            // The client can bind but believes we cannot: over TLS we offered -PLUS, so someone removed it.
            ("y", Binding::EndPoint(_)) => {
                return Err(ScramServerError::Malformed(
                    "SCRAM channel binding negotiation error: the client believes the server offers no channel \
                     binding, but it does"
                        .into(),
                ));
            }
            ("y", _) if !plus => {}
            (flag, Binding::EndPoint(data)) if plus && flag.strip_prefix("p=") == Some(END_POINT) => {
                expected_binding.extend_from_slice(data);
            }
            (flag, _) if flag.starts_with("p=") => {
                return Err(ScramServerError::Malformed(format!(
                    "channel binding \"{}\" is not supported here (only {END_POINT}, with {MECHANISM_PLUS} over TLS)",
                    &flag[2..]
                )));
            }
            _ => return Err(malformed("the channel binding flag does not match the mechanism")),
        }
        // client-first-bare: n=user,r=nonce[,extensions]; the user comes from the startup packet instead.
        if bare.starts_with("m=") {
            return Err(ScramServerError::Malformed("SCRAM extensions are not supported".into()));
        }
        let mut attributes = bare.split(',');
        attributes
            .next()
            .filter(|a| a.starts_with("n="))
            .ok_or_else(|| malformed("client-first lacks `n`"))?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or_else(|| malformed("client-first lacks a valid `r`"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange {
            verifier,
            expected_binding: STANDARD.encode(expected_binding),
            nonce,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
        };
        Ok((exchange, server_first))
    }

    /// Checks client-final (`c=…,r=…[,…],p=…`); returns server-final (`v=…`) if the proof holds.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramServerError> {
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("client-final lacks `p`"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("client-final lacks `c`"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("client-final lacks `r`"))?;
        if !constant_time_eq(binding.as_bytes(), self.expected_binding.as_bytes()) {
            // A proxy in the middle (another TLS connection) or a client that changed its mind.
            return Err(ScramServerError::Failed);
        }
        if nonce != self.nonce {
            return Err(malformed("the nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or_else(|| malformed("the proof is not 32 bytes of base64"))?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = sign(&self.verifier.stored_key, &auth_message);
        let client_key: Vec<u8> = proof.iter().zip(client_signature).map(|(p, s)| p ^ s).collect();
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let matches = constant_time_eq(stored_key.as_ref(), &self.verifier.stored_key);
        if !matches || self.verifier.mock {
            return Err(ScramServerError::Failed);
        }
        let server_signature = sign(&self.verifier.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
