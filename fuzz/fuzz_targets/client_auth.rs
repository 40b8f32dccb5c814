//! Fuzz target `client_auth`: both SCRAM roles pgsplit plays, on messages from the other side.
//!
//! - pgsplit as the server: `protocol::auth::authenticate` for a SCRAM user, an md5 user, a trust user and an
//!   unknown one, reading whatever the client sends (PasswordMessage, SASLInitialResponse and SASLResponse bodies).
//!   No bytes may log a client in without the password (only trust lets it in), every message pgsplit writes is
//!   well framed, and a rejection reaches the client whole.
//! - pgsplit as the client: `protocol::scram::Scram` answering an arbitrary server-first message and checking an
//!   arbitrary server-final one, as it does when it logs in to a server, which may be hostile. An answer it gives
//!   is well formed, and a server that does not know the password never passes the final check.
//!
//! Input: [`Knobs`] (9 bytes), then, as a server: the bytes the client sends after the server's first request; as
//! a client: the server-first message, a NUL, the server-final message ([`NONCE_PLACEHOLDER`] in them stands for the
//! nonce pgsplit chose, so that a server-first can extend it).

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::config::{AuthMethod, UserConfig};
use pgsplit::protocol::auth::{AuthError, Credentials, authenticate};
use pgsplit::protocol::frame::{peek_header, read_cstr};
use pgsplit::protocol::scram::Scram;
use pgsplit_fuzz::{Cuts, NONCE_PLACEHOLDER, Script, block_on, check_error_reaches_peer, iterations_bounded, split};

#[derive(Arbitrary, Debug)]
struct Knobs {
    cuts: Cuts,
    /// 0: a SCRAM user, 1: md5, 2: trust, 3: a user pgsplit does not know; 4: pgsplit as a SCRAM client.
    role: u8,
}

const PASSWORD: &str = "pencil";

fuzz_target!(|data: &[u8]| {
    let (knobs, payload) = split::<Knobs>(data);
    let method = match knobs.role % 5 {
        0 => Some(AuthMethod::ScramSha256),
        1 => Some(AuthMethod::Md5),
        2 => Some(AuthMethod::Trust),
        3 => None,
        _ => return scram_client(payload),
    };
    as_server(method, knobs.cuts, payload);
});

/// Credentials as a config load derives them: once per process, the SCRAM verifier costs 4096 PBKDF2 rounds.
fn credentials(method: AuthMethod) -> &'static Credentials {
    static KEPT: OnceLock<[Credentials; 3]> = OnceLock::new();
    let derive = |auth| {
        Credentials::derive(&UserConfig {
            name: "app".into(),
            password: PASSWORD.into(),
            auth,
        })
    };
    let kept = KEPT.get_or_init(|| [AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust].map(derive));
    match method {
        AuthMethod::ScramSha256 => &kept[0],
        AuthMethod::Md5 => &kept[1],
        AuthMethod::Trust => &kept[2],
    }
}

fn as_server(method: Option<AuthMethod>, cuts: Cuts, sent: &[u8]) {
    let mut client = Script::new(sent, cuts);
    let mut buf = BytesMut::new();
    let user = if method.is_some() { "app" } else { "nobody" };
    let result = block_on(authenticate(&mut client, &mut buf, user, method.map(credentials)));
    match result {
        Ok(known) => {
            assert_eq!(method, Some(AuthMethod::Trust), "a client got in without the password");
            assert_eq!(known.user, "app");
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

fn scram_client(payload: &[u8]) {
    let (mut scram, first) = Scram::new(PASSWORD);
    let nonce = first
        .strip_prefix("n,,n=,r=")
        .expect("client-first: no channel binding, no user name");
    assert_eq!(nonce.len(), NONCE_PLACEHOLDER.len());
    let mut payload = payload.to_vec();
    while let Some(at) = payload
        .windows(NONCE_PLACEHOLDER.len())
        .position(|w| w == NONCE_PLACEHOLDER)
    {
        payload[at..at + nonce.len()].copy_from_slice(nonce.as_bytes());
    }
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
    // c=biws,r=<the server's nonce, which extends ours>,p=<base64 of 32 bytes>
    let (without_proof, proof) = client_final.rsplit_once(",p=").expect("a proof");
    assert_eq!(proof.len(), 44, "{client_final}");
    let server_nonce = without_proof
        .strip_prefix("c=biws,r=")
        .expect("channel binding, then the nonce");
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
