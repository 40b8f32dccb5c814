//! Fuzz target `frames`: the relay's view of a byte stream in either direction. `protocol::frame::Framer` steps
//! over the stream as it arrives in reads cut where the fuzzer says, and must see the same frames, at the same
//! offsets, as when the stream arrives in one read; every step's answer must lie within the buffer it was given.
//! Each frame it hands over whole, and the stream itself, then go through the body readers the relay uses on
//! client and server messages (`protocol::extended`, `protocol::messages`, `read_cstr`), and what pgsplit re-encodes
//! from them (a Parse, Bind, Describe or Close under another statement name) must read back the same.
//!
//! Input: [`Knobs`] (82 bytes), then the stream.

#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::extended::{
    Target, bind_fields, definition_query, parse_fields, put_bind, put_close_statement, put_describe_statement,
    put_parse, target,
};
use pgsplit::protocol::frame::{FrameError, Framer, HEADER_LEN, Header, Look, Step, peek_header, read_cstr};
use pgsplit::protocol::messages::{
    TxStatus, error_code, error_field, first_column, parameter_status, parse_parameter_status, put_cstr,
    ready_for_query,
};
use pgsplit_fuzz::{Cuts, split};

#[derive(Arbitrary, Debug)]
struct Knobs {
    /// Read sizes: 0 is "the rest".
    cuts: Cuts,
    /// How much of each tag's frames the caller looks at, two bits a tag: 0 (the seeds) all of it, 1 nothing, 2 the
    /// header, 3 all of it up to [`SMALL`] bytes of body and the header beyond (as the relay treats server messages).
    looks: [u8; 64],
    /// The body length limit; 0 is none (the server side's `usize::MAX`).
    max_len: u16,
    /// The statement name pgsplit puts into the messages it re-encodes (up to a NUL).
    name: [u8; 8],
}

/// The body length up to which look 3 wants a frame whole.
const SMALL: usize = 64;

/// What the framer said about a stretch of the stream, by stream offset. Adjacent passes are merged: how a frame
/// passing blind is cut into pieces depends on the reads.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Pass {
        start: usize,
        end: usize,
    },
    Whole {
        start: usize,
        header: Header,
    },
    Head {
        start: usize,
        header: Header,
    },
    Error {
        start: usize,
        error: FrameError,
    },
    /// The stream ended with the bytes from `start` on still waiting; `boundary`: no blind frame was half passed.
    End {
        start: usize,
        boundary: bool,
    },
}

fuzz_target!(|data: &[u8]| {
    let (knobs, stream) = split::<Knobs>(data);
    let look = |header: Header| match (knobs.looks[usize::from(header.tag / 4)] >> (header.tag % 4 * 2)) & 3 {
        0 => Look::Whole,
        1 => Look::Blind,
        2 => Look::Head,
        _ if header.body_len <= SMALL => Look::Whole,
        _ => Look::Head,
    };
    let max_len = match knobs.max_len {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let name_len = knobs.name.iter().position(|&b| b == 0).unwrap_or(knobs.name.len());
    let name = &knobs.name[..name_len];

    let whole = walk(stream, Cuts::default(), &look, max_len, name);
    let cut = walk(stream, knobs.cuts, &look, max_len, name);
    assert_eq!(whole, cut, "the frames seen depend on how the stream was read");
    bodies(stream, name);
});

/// Feeds `stream` to a framer in reads cut by `cuts`, consuming what each step says as the relay does; returns what
/// it saw and checks every step against the buffer it was given.
fn walk(stream: &[u8], cuts: Cuts, look: &dyn Fn(Header) -> Look, max_len: usize, name: &[u8]) -> Vec<Seen> {
    let mut framer = Framer::default();
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    // Stream offsets of buf[0] and of the first byte not yet read.
    let (mut start, mut fed, mut reads) = (0, 0, 0);
    loop {
        match framer.step(&buf, look, max_len) {
            Ok(Step::Pass(n)) => {
                assert!(n > 0 && n <= buf.len(), "Pass({n}) over {} bytes", buf.len());
                match seen.last_mut() {
                    Some(Seen::Pass { end, .. }) if *end == start => *end += n,
                    _ => seen.push(Seen::Pass { start, end: start + n }),
                }
                buf.drain(..n);
                start += n;
            }
            Ok(Step::Whole(header)) => {
                assert_eq!(look(header), Look::Whole, "{header:?}");
                assert!(header.body_len <= max_len, "{header:?} over {max_len}");
                assert!(header.frame_len() <= buf.len(), "{header:?} over {} bytes", buf.len());
                assert!(framer.at_boundary());
                assert_eq!(peek_header(&buf), Ok(Some(header)));
                bodies(&buf[HEADER_LEN..header.frame_len()], name);
                seen.push(Seen::Whole { start, header });
                buf.drain(..header.frame_len());
                start += header.frame_len();
            }
            Ok(Step::Head(header)) => {
                // Nothing consumed: the frame's bytes, header included, come next as passes.
                assert_eq!(look(header), Look::Head, "{header:?}");
                assert!(header.body_len <= max_len, "{header:?} over {max_len}");
                assert!(!framer.at_boundary(), "the frame is still to come");
                assert_eq!(peek_header(&buf), Ok(Some(header)));
                seen.push(Seen::Head { start, header });
            }
            Ok(Step::NeedMore(n)) => {
                assert!(n > buf.len(), "NeedMore({n}) with {} bytes", buf.len());
                if fed == stream.len() {
                    ended(&buf, &framer, look);
                    seen.push(Seen::End {
                        start,
                        boundary: framer.at_boundary(),
                    });
                    assert_eq!(
                        start + buf.len(),
                        stream.len(),
                        "every byte given is passed, whole or waiting"
                    );
                    return seen;
                }
                let read = match cuts.0[reads % cuts.0.len()] {
                    0 => stream.len() - fed,
                    n => usize::from(n).min(stream.len() - fed),
                };
                reads += 1;
                buf.extend_from_slice(&stream[fed..fed + read]);
                fed += read;
            }
            Err(error) => {
                assert!(framer.at_boundary(), "an error between frames only");
                let raw = u32::from_be_bytes(buf[1..5].try_into().expect("a header was read"));
                match error {
                    FrameError::BadLength(len) => assert!(len == raw && raw < 4),
                    FrameError::TooLong { len, max } => assert!(len == raw as usize - 4 && len > max && max == max_len),
                }
                seen.push(Seen::Error { start, error });
                return seen;
            }
        }
    }
}

/// What is left when the stream ends: nothing of a frame passing through, else less than the next frame to see
/// whole.
fn ended(left: &[u8], framer: &Framer, look: &dyn Fn(Header) -> Look) {
    if !framer.at_boundary() {
        assert!(left.is_empty(), "a blind frame is passed as it arrives");
        return;
    }
    if let Ok(Some(header)) = peek_header(left) {
        let waits = look(header) == Look::Whole && header.frame_len() > left.len();
        assert!(waits, "{header:?} with {} bytes", left.len());
    } else {
        assert!(left.len() < HEADER_LEN);
    }
}

/// Every body reader on `body`, whatever its tag: a reader must cope with any bytes, and what it returns must be
/// parts of the body that add up.
fn bodies(body: &[u8], name: &[u8]) {
    match read_cstr(body) {
        Some((text, rest)) => {
            assert!(!text.contains(&0));
            assert_eq!((&body[..text.len()], text.len() + 1 + rest.len()), (text, body.len()));
        }
        None => assert!(!body.contains(&0)),
    }

    if let Some((statement, definition)) = parse_fields(body) {
        assert!(!statement.contains(&0));
        assert_eq!(&body[statement.len() + 1..], definition);
        let query = definition_query(definition);
        assert!(!query.contains(&0) && definition.starts_with(query));
        assert!(definition.len() >= query.len() + 1 + 2, "the parameter count is there");
        let out = encoded(b'P', |out| put_parse(out, |o| put_cstr(o, name), definition));
        assert_eq!(parse_fields(&out[HEADER_LEN..]), Some((name, definition)));
    }

    if let Some((portal, statement, rest)) = bind_fields(body) {
        assert!(!portal.contains(&0) && !statement.contains(&0));
        assert_eq!(portal.len() + statement.len() + 2 + rest.len(), body.len());
        let out = encoded(b'B', |out| put_bind(out, portal, |o| put_cstr(o, name), rest));
        assert_eq!(bind_fields(&out[HEADER_LEN..]), Some((portal, name, rest)));
    }

    if let Some(Target::Statement(statement) | Target::Portal(statement)) = target(body) {
        assert!(!statement.contains(&0) && body[1..].starts_with(statement));
        let describe = encoded(b'D', |out| put_describe_statement(out, |o| put_cstr(o, name)));
        let close = encoded(b'C', |out| put_close_statement(out, |o| put_cstr(o, name)));
        for out in [describe, close] {
            assert_eq!(target(&out[HEADER_LEN..]), Some(Target::Statement(name)));
        }
    }

    // ErrorResponse and NoticeResponse: every field a server may send, and the byte the body starts with.
    for field in b"SVCMDHPpqWsctdnFLR".iter().chain(body.first()) {
        if let Some(value) = error_field(body, *field) {
            assert!(!value.contains('\0'));
            assert!(value.is_empty() || body.windows(value.len()).any(|w| w == value.as_bytes()));
        }
    }
    assert_eq!(error_code(body), error_field(body, b'C'));

    if let Some((setting, value)) = parse_parameter_status(body) {
        let out = encoded(b'S', |out| parameter_status(out, setting, value));
        assert_eq!(parse_parameter_status(&out[HEADER_LEN..]), Some((setting, value)));
    }

    if let Some(column) = first_column(body) {
        assert_eq!(body.get(6..6 + column.len()), Some(column.as_bytes()));
    }

    if let Some(status) = body.first().copied().and_then(TxStatus::from_byte) {
        let out = encoded(b'Z', |out| ready_for_query(out, status));
        assert_eq!(out[HEADER_LEN], body[0]);
    }
}

/// A message pgsplit writes: one frame of `tag`, its length counting what was written.
fn encoded(tag: u8, write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    write(&mut out);
    let header = peek_header(&out).expect("a valid length").expect("a whole header");
    assert_eq!((header.tag, header.frame_len()), (tag, out.len()));
    out
}
