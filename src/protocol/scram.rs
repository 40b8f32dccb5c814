//! SCRAM-SHA-256 (RFC 5802 with SHA-256, RFC 7677), and SCRAM-SHA-256-PLUS with the `tls-server-end-point`
//! channel binding: pgsplit's client side here, for logging in to servers; its server side, for clients, in
//! [`server`]. The keys a password yields for a salt and an iteration count take thousands of PBKDF2 rounds —
//! milliseconds of CPU — so the client side remembers them: reopening pool connections after a failed health check,
//! a failover or a burst of load costs a few HMACs per connection, not a key derivation each. The iteration count a
//! server asks for is capped ([`MAX_ITERATIONS`]): a hostile server cannot hold the session thread for minutes.

pub mod server;

use std::num::NonZeroU32;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};

/// The mechanism names in AuthenticationSASL and SASLInitialResponse.
pub const MECHANISM: &str = "SCRAM-SHA-256";
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type PostgreSQL speaks.
pub const END_POINT: &str = "tls-server-end-point";
/// Most PBKDF2 rounds pgsplit runs for a server's challenge (PostgreSQL's default is 4,096): about 25 ms of CPU.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Derived keys remembered, one per (password, salt, iterations): a proxy logs in as a few roles at most.
const KEPT_KEYS: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("SCRAM: {0}")]
pub struct ScramError(String);

fn error(what: &str) -> ScramError {
    ScramError(what.to_owned())
}

/// What the client says about channel binding (the GS2 header's flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `n`: no TLS, or a binding pgsplit cannot compute for the server's certificate.
    Unbound,
    /// `y`: over TLS, but the server offered no -PLUS mechanism (a server that did would see a downgrade).
    NotOffered,
    /// `p=tls-server-end-point`: SCRAM-SHA-256-PLUS, signing this binding data.
    EndPoint(Vec<u8>),
}

impl Channel {
    /// The mechanism this choice goes with.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Channel::EndPoint(_) => MECHANISM_PLUS,
            _ => MECHANISM,
        }
    }

    fn gs2_header(&self) -> String {
        match self {
            Channel::Unbound => "n,,".to_owned(),
            Channel::NotOffered => "y,,".to_owned(),
            Channel::EndPoint(_) => format!("p={END_POINT},,"),
        }
    }
}

/// One login's exchange: [`Scram::new`] gives the first message, [`Scram::respond`] answers the server's
/// challenge, [`Scram::verify`] checks the server's proof.
pub struct Scram {
    password: Vec<u8>,
    nonce: String,
    channel: Channel,
    /// `n=,r=<nonce>`: PostgreSQL takes the user from the startup packet, so the name here is empty.
    client_first_bare: String,
    /// What the server must prove it knows, once the challenge is answered.
    expected_server_signature: Option<[u8; 32]>,
}

impl Scram {
    /// Starts an exchange; returns it and the client-first message (send it under `channel.mechanism()`).
    pub fn new(password: &str, channel: Channel) -> (Scram, String) {
        Self::with_nonce(password, channel, STANDARD.encode(rand::random::<[u8; 18]>()))
    }

    fn with_nonce(password: &str, channel: Channel, nonce: String) -> (Scram, String) {
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("{}{client_first_bare}", channel.gs2_header());
        let scram = Scram {
            password: prepare(password),
            nonce,
            channel,
            client_first_bare,
            expected_server_signature: None,
        };
        (scram, first)
    }

    /// Answers server-first (`r=…,s=…,i=…`) with client-final (`c=…,r=…,p=…`).
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| error("server-first is not UTF-8"))?;
        let mut attributes = server_first.split(',');
        let mut attribute = |name: &str| {
            attributes
                .next()
                .and_then(|a| a.strip_prefix(name))
                .ok_or_else(|| ScramError(format!("server-first lacks `{name}`")))
        };
        let nonce = attribute("r=")?;
        let salt = attribute("s=")?;
        let iterations = attribute("i=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(error("the server's nonce does not extend ours"));
        }
        let salt = STANDARD.decode(salt).map_err(|_| error("the salt is not base64"))?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| error("bad iteration count"))?;
        if iterations.get() > MAX_ITERATIONS {
            return Err(ScramError(format!(
                "the server asks for {iterations} PBKDF2 iterations, more than the {MAX_ITERATIONS} pgsplit allows"
            )));
        }
        let keys = keys(&self.password, &salt, iterations);

        let mut binding = self.channel.gs2_header().into_bytes();
        if let Channel::EndPoint(data) = &self.channel {
            binding.extend_from_slice(data);
        }
        let final_without_proof = format!("c={},r={nonce}", STANDARD.encode(binding));
        let auth_message = format!("{},{server_first},{final_without_proof}", self.client_first_bare);
        let stored_key = digest::digest(&digest::SHA256, &keys.client_key);
        let client_signature = sign(stored_key.as_ref(), &auth_message);
        let mut proof = keys.client_key;
        for (byte, signature) in proof.iter_mut().zip(client_signature) {
            *byte ^= signature;
        }
        self.expected_server_signature = Some(sign(&keys.server_key, &auth_message));
        Ok(format!("{final_without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Checks server-final (`v=…`): the server knew the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .expected_server_signature
            .ok_or_else(|| error("server-final before the challenge was answered"))?;
        let server_final = std::str::from_utf8(server_final).map_err(|_| error("server-final is not UTF-8"))?;
        if let Some(reason) = server_final.strip_prefix("e=") {
            return Err(ScramError(format!("the server refused: {reason}")));
        }
        let signature = server_final
            .split(',')
            .next()
            .and_then(|v| v.strip_prefix("v="))
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| error("server-final lacks `v`"))?;
        if !constant_time_eq(&signature, &expected) {
            return Err(error("the server's signature is wrong: it does not know the password"));
        }
        Ok(())
    }
}

/// As PostgreSQL does: SASLprep when the password allows it, the bytes as they are otherwise.
fn prepare(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.as_bytes().to_vec(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// Compares every byte whatever the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Copy)]
struct Keys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

fn sign(key: &[u8], message: &str) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message.as_bytes());
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

/// ClientKey and ServerKey from a prepared password, salt and iteration count, by PBKDF2 (not remembered).
fn derive(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Keys {
    let mut salted = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut salted);
    Keys {
        client_key: sign(&salted, "Client Key"),
        server_key: sign(&salted, "Server Key"),
    }
}

/// ClientKey and ServerKey for the password, salt and iterations: remembered, or derived and remembered.
fn keys(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Keys {
    struct Kept {
        password: Vec<u8>,
        salt: Vec<u8>,
        iterations: NonZeroU32,
        keys: Keys,
    }
    static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
    let lock = || KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(kept) = lock()
        .iter()
        .find(|k| k.iterations == iterations && k.salt == salt && k.password == password)
    {
        return kept.keys;
    }
    // Derived outside the lock: other logins need not wait for it.
    let keys = derive(password, salt, iterations);
    let mut kept = lock();
    if kept.len() >= KEPT_KEYS {
        kept.remove(0);
    }
    kept.push(Kept {
        password: password.to_vec(),
        salt: salt.to_vec(),
        iterations,
        keys,
    });
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user "user", password "pencil"), with PostgreSQL's empty user name in the
    /// client-first message, so the proof differs from the RFC's; the server signature is checked by the exchange
    /// itself against a server computed here from the same keys, step by step as RFC 5802 writes it.
    #[test]
    fn an_exchange_gives_the_proof_a_server_checks_and_checks_the_servers_proof() {
        let (mut scram, first) = Scram::with_nonce("pencil", Channel::Unbound, "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(first, "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = scram.respond(server_first.as_bytes()).expect("a valid challenge");
        let (without_proof, proof) = client_final.rsplit_once(",p=").expect("a proof");
        assert_eq!(
            without_proof,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        );

        // The server's side, from the password alone.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(4096).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        let stored_key = digest::digest(&digest::SHA256, &sign(&salted, "Client Key"));
        let auth_message = format!("n=,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let client_signature = sign(stored_key.as_ref(), &auth_message);
        let client_key: Vec<u8> = STANDARD
            .decode(proof)
            .unwrap()
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA256, &client_key).as_ref(),
            stored_key.as_ref()
        );

        let server_signature = sign(&sign(&salted, "Server Key"), &auth_message);
        let server_final = format!("v={}", STANDARD.encode(server_signature));
        scram.verify(server_final.as_bytes()).expect("the server's proof");
        let mut forged = server_signature;
        forged[0] ^= 1;
        assert!(
            scram
                .verify(format!("v={}", STANDARD.encode(forged)).as_bytes())
                .is_err()
        );
        assert!(scram.verify(b"e=invalid-proof").is_err());
    }

    /// RFC 7677's own salted-password keys: its ServerSignature for its exchange (user "user").
    #[test]
    fn derived_keys_match_the_rfc() {
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        for _ in 0..2 {
            // Derived, then remembered: the same keys both times.
            let keys = keys(b"pencil", &salt, NonZeroU32::new(4096).unwrap());
            let stored_key = digest::digest(&digest::SHA256, &keys.client_key);
            let mut proof = keys.client_key;
            for (byte, signature) in proof.iter_mut().zip(sign(stored_key.as_ref(), auth_message)) {
                *byte ^= signature;
            }
            assert_eq!(STANDARD.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
            assert_eq!(
                STANDARD.encode(sign(&keys.server_key, auth_message)),
                "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
            );
        }
    }

    #[test]
    fn a_challenge_that_does_not_extend_our_nonce_is_refused() {
        let (mut scram, _) = Scram::with_nonce("pencil", Channel::Unbound, "abc".into());
        for bad in [
            "r=xyz123,s=AAAA,i=4096",
            "r=abc,s=AAAA,i=4096",
            "r=abcd,s=AAAA,i=0",
            "s=AAAA,r=abcd,i=1",
            "r=abcd,s=AAAA,i=100001",
            "r=abcd,s=AAAA,i=4294967295",
        ] {
            assert!(scram.respond(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
