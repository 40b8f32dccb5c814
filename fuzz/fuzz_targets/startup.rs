//! Fuzz target `startup`: what a client sends before it authenticates. Packets are read with
//! `protocol::startup::read_packet` the way a session negotiates (an SSLRequest or GSSENCRequest is answered and the
//! next packet read, then a CancelRequest or a StartupMessage ends it); a StartupMessage is then checked against a
//! re-encoding of what was parsed, answered with NegotiateProtocolVersion, and its settings unpacked
//! (`pool::Settings::from_startup`, `session::floor::parse_setting` for `pgsplit.min_lsn`) as the session does.
//!
//! Input: [`Cuts`] (8 bytes), then the bytes the client sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsplit::pool::Settings;
use pgsplit::protocol::error::SqlError;
use pgsplit::protocol::frame::peek_header;
use pgsplit::protocol::startup::{StartupError, StartupPacket, StartupParams, negotiate_protocol_version, read_packet};
use pgsplit::router::ClientEncoding;
use pgsplit::session::floor::parse_setting;
use pgsplit::session::plan::MIN_LSN;
use pgsplit_fuzz::{Cuts, Script, block_on, check_error_reaches_peer, split};

/// SSLRequests and GSSENCRequests a client may send before its StartupMessage, as far as this target follows.
const MAX_PACKETS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let (cuts, sent) = split::<Cuts>(data);
    let mut client = Script::new(sent, cuts);
    for _ in 0..MAX_PACKETS {
        let start = client.position();
        let declared = sent
            .get(start..start + 4)
            .map(|len| u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize);
        let packet = match block_on(read_packet(&mut client)) {
            Ok(packet) => packet,
            Err(error) => {
                if matches!(error, StartupError::Closed) {
                    assert!(sent.len() - start < 4, "closed with a length to read");
                }
                // The session answers FATAL 08P01 with the error's text.
                check_error_reaches_peer(&SqlError::protocol_violation(error.to_string()));
                return;
            }
        };
        // Exactly the packet and nothing after it: TLS may start right after an SSLRequest.
        let end = client.position();
        assert_eq!(Some(end - start), declared, "{packet:?} read {} bytes", end - start);
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {}
            StartupPacket::Cancel { pid, secret } => {
                assert_eq!(end - start, 16);
                assert_eq!(sent[start + 8..end], [pid.to_be_bytes(), secret.to_be_bytes()].concat());
                return;
            }
            StartupPacket::Startup(params) => return startup_message(&sent[start..end], &params),
        }
    }
});

fn startup_message(packet: &[u8], params: &StartupParams) {
    // The parser accepts exactly one spelling of what it returns: writing it again gives the packet back.
    let mut again = Vec::new();
    for (name, value) in &params.params {
        assert!(!name.is_empty(), "an empty name ends the list");
        for text in [name, value] {
            again.extend_from_slice(text.as_bytes());
            again.push(0);
        }
    }
    again.push(0);
    let code = (3u32 << 16) | u32::from(params.minor_version);
    let len = again.len() as u32 + 8;
    let again = [&len.to_be_bytes()[..], &code.to_be_bytes(), &again].concat();
    assert_eq!(packet, &again[..], "{params:?}");
    assert!(params.get("user").is_some(), "a StartupMessage names its user");

    negotiation(params);

    match Settings::from_startup(&params.params) {
        Ok(settings) => {
            if let Some(value) = settings.get(MIN_LSN) {
                let _ = parse_setting(value);
            }
            if let Some(encoding) = settings.get("client_encoding") {
                let _ = ClientEncoding::named(encoding);
            }
            let _ = settings.is_on("default_transaction_read_only");
        }
        Err(message) => check_error_reaches_peer(&SqlError::protocol_violation(message)),
    }
}

/// NegotiateProtocolVersion: framed, the newest minor version pgsplit speaks (0), and every `_pq_.` option the
/// client asked for, NUL-terminated, in its order.
fn negotiation(params: &StartupParams) {
    let mut out = bytes::BytesMut::new();
    negotiate_protocol_version(&mut out, params);
    let header = peek_header(&out).expect("a valid length").expect("a whole header");
    assert_eq!((header.tag, header.frame_len()), (b'v', out.len()));
    let options: Vec<&str> = params.protocol_options().collect();
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&(options.len() as u32).to_be_bytes());
    for option in options {
        body.extend_from_slice(option.as_bytes());
        body.push(0);
    }
    assert_eq!(&out[5..], &body[..]);
}
