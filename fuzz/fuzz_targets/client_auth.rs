//! Fuzz target `client_auth`: both SCRAM roles pgsplit plays, on messages from the other side.
//!
//! - pgsplit as the server: `protocol::auth::authenticate` for a SCRAM user, an md5 user, a trust user and an
//!   unknown one, without TLS, over TLS without and with `tls-server-end-point` data, reading whatever the client
//!   sends (PasswordMessage, SASLInitialResponse and SASLResponse bodies); and `protocol::scram::server::Exchange`
//!   on its own, where the client-final can carry the nonce the server chose. No bytes may log a client in without
//!   the password (only trust lets it in), every message pgsplit writes is well framed, and a rejection reaches the
//!   client whole.
//! - pgsplit as the client: `protocol::scram::Scram` (each channel-binding choice) answering an arbitrary
//!   server-first message and checking an arbitrary server-final one, as it does when it logs in to a server, which
//!   may be hostile. An answer it gives is well formed, and a server that does not know the password never passes
//!   the final check.
//!
//! Input: [`Knobs`] (10 bytes), then: as a server, the bytes the client sends after the server's first request; for
//! the exchange alone and as a client, two messages separated by a NUL (client-first and client-final; server-first
//! and server-final). [`NONCE_PLACEHOLDER`] in the second half stands for the nonce the other side chose.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::config::{AuthMethod, UserConfig};
use pgsplit::protocol::auth::{AuthError, Users, authenticate};
use pgsplit::protocol::frame::{peek_header, read_cstr};
use pgsplit::protocol::scram::server::{Binding, Exchange, ScramServerError, Verifier};
use pgsplit::protocol::scram::{Channel, Scram};
use pgsplit::secret::Secret;
use pgsplit_fuzz::{Cuts, NONCE_PLACEHOLDER, Script, block_on, check_error_reaches_peer, iterations_bounded, split};

#[derive(Arbitrary, Debug)]
struct Knobs {
    cuts: Cuts,
    /// 0: a SCRAM user, 1: md5, 2: trust, 3: a user pgsplit does not know; 4: the SCRAM server exchange alone;
    /// 5: pgsplit as a SCRAM client.
    role: u8,
    /// 0: no TLS; 1: TLS without channel-binding data; 2: TLS with it (SCRAM-SHA-256-PLUS).
    tls: u8,
}

/// The `tls-server-end-point` data of the connection, when there is some: a SHA-256 of a certificate.
const END_POINT: &[u8; 32] = b"certificate-hash-certificate-has";

const PASSWORD: &str = "pencil";

fuzz_target!(|data: &[u8]| {
    let (knobs, payload) = split::<Knobs>(data);
    let binding = match knobs.tls % 3 {
        0 => Binding::None,
        1 => Binding::Unavailable,
        _ => Binding::EndPoint(END_POINT),
    };
    match knobs.role % 6 {
        0 => as_server("app", Some(AuthMethod::ScramSha256), binding, knobs.cuts, payload),
        1 => as_server("app_md5", Some(AuthMethod::Md5), binding, knobs.cuts, payload),
        2 => as_server("app_trust", Some(AuthMethod::Trust), binding, knobs.cuts, payload),
        3 => as_server("nobody", None, binding, knobs.cuts, payload),
        4 => exchange(binding, payload),
        _ => scram_client(knobs.tls, payload),
    }
});

/// The users as a config load derives them: once per process, a SCRAM verifier costs 4096 PBKDF2 rounds.
fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| {
        let user = |name: &str, auth| UserConfig {
            name: name.into(),
            password: Secret::new(PASSWORD),
            auth,
        };
        Users::derive(
            &[
                user("app", AuthMethod::ScramSha256),
                user("app_md5", AuthMethod::Md5),
                user("app_trust", AuthMethod::Trust),
            ],
            None,
        )
    })
}

fn as_server(user: &str, method: Option<AuthMethod>, binding: Binding<'_>, cuts: Cuts, sent: &[u8]) {
    let mut client = Script::new(sent, cuts);
    let mut buf = BytesMut::new();
    match block_on(authenticate(&mut client, &mut buf, user, users(), binding)) {
        Ok(known) => {
            assert_eq!(method, Some(AuthMethod::Trust), "a client got in without the password");
            assert_eq!(known.user, user);
        }
        Err(AuthError::Rejected(error)) => check_error_reaches_peer(&error),
        Err(AuthError::Io(_)) => {}
    }
    // What pgsplit wrote: Authentication requests, each one well-framed message.
    let mut written = &client.written[..];
    while !written.is_empty() {
        let header = peek_header(written).expect("a valid length").expect("a whole header");
        assert_eq!(header.tag, b'R');
        assert!(
            header.frame_len() <= written.len(),
            "{header:?} over {} bytes",
            written.len()
        );
        assert!(header.body_len >= 4, "an authentication code");
        written = &written[header.frame_len()..];
    }
}

/// The server exchange alone, so that a client-final can name the server's nonce and reach the proof check.
fn exchange(binding: Binding<'_>, payload: &[u8]) {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| Verifier::from_password(PASSWORD));
    let (first, last) = read_cstr(payload).unwrap_or((payload, &[]));
    // SASLInitialResponse: the mechanism, then client-first; the fuzzer picks among the two names by a first byte.
    let (mechanism, client_first): (&[u8], &[u8]) = match first.split_first() {
        Some((b'+', rest)) => (b"SCRAM-SHA-256-PLUS", rest),
        _ => (b"SCRAM-SHA-256", first),
    };
    let (exchange, server_first) = match Exchange::start(mechanism, client_first, verifier, binding) {
        Ok(started) => started,
        Err(error) => return refused(error),
    };
    let nonce = server_first
        .strip_prefix("r=")
        .and_then(|rest| rest.split(',').next())
        .expect("server-first starts with the nonce");
    let mut client_final = last.to_vec();
    replace_placeholder(&mut client_final, nonce.as_bytes());
    match exchange.finish(&client_final) {
        Ok(_) => panic!("a client-final without the password was accepted: {client_final:?}"),
        Err(error) => refused(error),
    }
}

/// A refusal as the client is told it.
fn refused(error: ScramServerError) {
    if let ScramServerError::Malformed(message) = error {
        check_error_reaches_peer(&pgsplit::protocol::error::SqlError::protocol_violation(message));
    }
}

/// Puts `value` where the placeholder stands, however long either is. One pass: the value may itself hold the
/// placeholder (a client nonce is the client's to choose, and the server's nonce starts with it).
fn replace_placeholder(bytes: &mut Vec<u8>, value: &[u8]) {
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(NONCE_PLACEHOLDER.len())
        .position(|w| w == NONCE_PLACEHOLDER)
    {
        let at = from + at;
        bytes.splice(at..at + NONCE_PLACEHOLDER.len(), value.iter().copied());
        from = at + value.len();
    }
}

fn scram_client(tls: u8, payload: &[u8]) {
    let channel = match tls % 3 {
        0 => Channel::Unbound,
        1 => Channel::NotOffered,
        _ => Channel::EndPoint(END_POINT.to_vec()),
    };
    let (mut scram, first) = Scram::new(PASSWORD, channel);
    let (_, nonce) = first
        .split_once(",n=,r=")
        .expect("client-first: a GS2 header, no user name, the nonce");
    let mut payload = payload.to_vec();
    replace_placeholder(&mut payload, nonce.as_bytes());
    let (server_first, server_final) = read_cstr(&payload).unwrap_or((&payload, &[]));
    if !iterations_bounded(server_first) {
        return;
    }
    assert!(
        scram.verify(server_final).is_err(),
        "a final message before the challenge was answered"
    );
    let Ok(client_final) = scram.respond(server_first) else {
        return;
    };
    // c=<GS2 header and binding data, base64>,r=<the server's nonce, which extends ours>,p=<base64 of 32 bytes>
    let (without_proof, proof) = client_final.rsplit_once(",p=").expect("a proof");
    assert_eq!(proof.len(), 44, "{client_final}");
    let (binding, server_nonce) = without_proof
        .split_once(",r=")
        .expect("channel binding, then the nonce");
    assert!(binding.starts_with("c="), "{client_final}");
    assert!(
        server_nonce.starts_with(nonce) && server_nonce.len() > nonce.len(),
        "{client_final}"
    );
    assert!(!server_nonce.contains(','), "{client_final}");
    assert!(
        scram.verify(server_final).is_err(),
        "a server that does not know the password was believed"
    );
}
