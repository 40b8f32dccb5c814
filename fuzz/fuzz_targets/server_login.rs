//! Fuzz target `server_login`: pgsplit logging in to a server that may be hostile — `protocol::login::login`
//! reading whatever the server sends: authentication requests (SASL with SCRAM-SHA-256, md5, cleartext, ok),
//! ParameterStatus, BackendKeyData, NoticeResponse, ErrorResponse and ReadyForQuery, in any order and framing.
//! Beyond "no panic": pgsplit writes a StartupMessage and then only well-framed PasswordMessages, never the password
//! itself unless the server asked for it in cleartext, and the error a client is told reaches it whole.
//!
//! The methods `server.auth_methods` allows and whether the connection is TLS (with or without channel-binding data)
//! come from the input too: a request for a method not allowed must end the login.
//!
//! Input: [`Knobs`] (9 bytes), then the server's bytes; [`NONCE_PLACEHOLDER`] in them becomes the nonce pgsplit
//! chose once it has sent it, so that a server-first message can extend it.

#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::pool::ConnectError;
use pgsplit::protocol::frame::peek_header;
use pgsplit::protocol::login::{AuthMethods, Security, login};
use pgsplit_fuzz::{Cuts, Script, block_on, check_error_reaches_peer, iterations_bounded, split};

const PASSWORD: &str = "pencil";

#[derive(Arbitrary, Debug)]
struct Knobs {
    cuts: Cuts,
    /// Bits 0-3 forbid SCRAM, md5, cleartext and no authentication (all clear, the seeds: all allowed); bit 4: TLS;
    /// bit 5: with `tls-server-end-point` data.
    security: u8,
}

fuzz_target!(|data: &[u8]| {
    let (knobs, sent) = split::<Knobs>(data);
    let bit = |n: u8| knobs.security & (1 << n) != 0;
    let security = Security {
        methods: AuthMethods {
            scram: !bit(0),
            md5: !bit(1),
            password: !bit(2),
            none: !bit(3),
        },
        tls: bit(4),
        end_point: bit(5).then(|| b"certificate-hash-certificate-has".to_vec()),
    };
    if !iterations_bounded(sent) {
        return;
    }
    let mut server = Script::new(sent, knobs.cuts).with_nonce();
    let mut buf = BytesMut::new();
    let params = [("user", "app"), ("database", "app")];
    match block_on(login(&mut server, &mut buf, &params, "app", PASSWORD, &security)) {
        Ok(greeting) => {
            assert!(sent.contains(&b'Z'), "logged in without a ReadyForQuery");
            let _ = greeting;
        }
        // The client whose checkout opened this connection is told this.
        Err(error) => check_error_reaches_peer(&ConnectError::Login(error).to_sql_error("leader")),
    }

    let written = &server.written[..];
    let len = u32::from_be_bytes(written[..4].try_into().expect("a StartupMessage first")) as usize;
    assert_eq!(written[4..8], 196608u32.to_be_bytes(), "protocol 3.0");
    let mut rest = &written[len..];
    let mut cleartext = false;
    while !rest.is_empty() {
        let header = peek_header(rest).expect("a valid length").expect("a whole header");
        assert_eq!(header.tag, b'p', "only PasswordMessages after the StartupMessage");
        assert!(header.frame_len() <= rest.len());
        cleartext |= rest[5..header.frame_len()] == *[PASSWORD.as_bytes(), b"\0"].concat();
        rest = &rest[header.frame_len()..];
    }
    if cleartext {
        let asked = sent.windows(9).any(|w| w[0] == b'R' && w[5..9] == [0, 0, 0, 3]);
        assert!(
            asked,
            "the password was sent to a server that did not ask for it in cleartext"
        );
    }
});
