//! What the fuzz targets share: running pgsplit's async readers (startup, authentication, server login) to the end
//! without a runtime, over an in-memory stream that hands out the fuzzer's bytes in the pieces the fuzzer chose, and
//! the checks every target makes on an error a peer would be sent.
//!
//! Every input of every target is `[header][payload]`: a fixed-size header read with `arbitrary` (the knobs: where
//! the stream is cut, which tags are inspected, …) and the payload, taken whole — wire bytes, SQL or TOML as a peer
//! would send it. A header shorter than its size reads as zeros, which always means "the plain case", so a seed is
//! the header's zero bytes followed by a real message.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use pgsplit::protocol::error::{Severity, SqlError};
use pgsplit::protocol::frame::{peek_header, read_cstr};
use pgsplit::protocol::messages::error_field;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many times [`block_on`] polls before it calls the future stuck. A [`Script`] never leaves a read pending
/// twice in a row and every other read moves at least one byte or ends the stream, so a future over one is done
/// long before this unless it loops.
const MAX_POLLS: usize = 1 << 20;

/// Splits an input into its header and payload (see the crate doc).
pub fn split<H: for<'h> Arbitrary<'h>>(data: &[u8]) -> (H, &[u8]) {
    let size = H::size_hint(0).0;
    let (head, payload) = data.split_at(size.min(data.len()));
    let mut padded = [0u8; 256];
    padded[..head.len()].copy_from_slice(head);
    assert!(size <= padded.len(), "header of {size} bytes");
    let header = H::arbitrary(&mut Unstructured::new(&padded[..size])).expect("a fixed-size header always reads");
    (header, payload)
}

/// Polls `future` to completion with a waker that does nothing: the streams here are always ready again at once.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..MAX_POLLS {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("still pending after {MAX_POLLS} polls over an in-memory stream: the reader loops");
}

/// Where a stream is cut: read `i` gets at most `cuts[i % N]` bytes; 0 means as many as the reader asks for, and
/// [`PEND`] makes the read answer "not ready" once first (as a socket with nothing buffered does), then deliver.
#[derive(Arbitrary, Debug, Clone, Copy, Default)]
pub struct Cuts(pub [u8; 8]);

/// The cut that makes a read wait once.
pub const PEND: u8 = 255;

impl Cuts {
    fn at(&self, read: usize) -> u8 {
        self.0[read % self.0.len()]
    }
}

/// A peer that sends `input` cut as [`Cuts`] says and takes whatever is written to it.
pub struct Script {
    input: Vec<u8>,
    pos: usize,
    cuts: Cuts,
    reads: usize,
    pended: bool,
    /// Everything written to the stream, in order.
    pub written: Vec<u8>,
    /// See [`Script::with_nonce`].
    nonce_from_client: bool,
    /// Where the frame being read ends, while reads stop at frame ends.
    frame_end: usize,
}

/// Stands in a server's bytes for the SCRAM nonce the client will choose (24 base64 characters, as many as
/// `protocol::scram` sends): once the client has written its first SCRAM message, every copy of this in what is
/// still to be read becomes the client's nonce. Without it no server-first could extend the client's random nonce,
/// and nothing after that check would ever run.
pub const NONCE_PLACEHOLDER: &[u8; 24] = b"@@@@client@nonce@here@@@";

impl Script {
    pub fn new(input: &[u8], cuts: Cuts) -> Script {
        Script {
            input: input.to_vec(),
            pos: 0,
            cuts,
            reads: 0,
            pended: false,
            written: Vec::new(),
            nonce_from_client: false,
            frame_end: 0,
        }
    }

    /// Fills in [`NONCE_PLACEHOLDER`] with the nonce the client writes. Until it has, the input is taken to be
    /// frames and no read goes past the end of one: a server answers a message, it does not send its answer before
    /// the client's message is there (which would put a placeholder into the client's buffer unfilled).
    pub fn with_nonce(mut self) -> Script {
        self.nonce_from_client = true;
        self
    }

    /// Bytes of the input read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn fill_in_nonce(&mut self) {
        const MARK: &[u8] = b",n=,r=";
        let Some(at) = find(&self.written, MARK) else {
            return;
        };
        let Some(nonce) = self
            .written
            .get(at + MARK.len()..at + MARK.len() + NONCE_PLACEHOLDER.len())
        else {
            return;
        };
        let nonce = nonce.to_vec();
        let rest = &mut self.input[self.pos..];
        while let Some(at) = find(rest, NONCE_PLACEHOLDER) {
            rest[at..at + nonce.len()].copy_from_slice(&nonce);
        }
        self.nonce_from_client = false;
    }

    /// How many bytes a read may take before the end of the current frame (see [`Script::with_nonce`]).
    fn frame_room(&mut self) -> usize {
        if !self.nonce_from_client {
            return usize::MAX;
        }
        while self.frame_end <= self.pos {
            let Some(len) = self.input.get(self.frame_end + 1..self.frame_end + 5) else {
                return usize::MAX;
            };
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            if len < 4 {
                return usize::MAX;
            }
            self.frame_end += 1 + len;
        }
        self.frame_end - self.pos
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl AsyncRead for Script {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let cut = this.cuts.at(this.reads);
        if cut == PEND && !this.pended {
            this.pended = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pended = false;
        this.reads += 1;
        let limit = match cut {
            0 | PEND => usize::MAX,
            n => usize::from(n),
        };
        let n = limit
            .min(this.frame_room())
            .min(buf.remaining())
            .min(this.input.len() - this.pos);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.written.extend_from_slice(data);
        if this.nonce_from_client {
            this.fill_in_nonce();
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An error pgsplit sends a peer must reach it whole: one well-framed ErrorResponse with exactly the fields pgsplit
/// wrote, each reading back as it was written (a NUL in a message is sent as `\0`: it would end the field early
/// and make the rest fields of the peer's choosing).
pub fn check_error_reaches_peer(error: &SqlError) {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let header = peek_header(&out).expect("a valid length").expect("a whole header");
    assert_eq!(
        (header.tag, header.frame_len()),
        (b'E', out.len()),
        "ErrorResponse framing"
    );
    let mut body = &out[5..];
    let mut fields = Vec::new();
    while let Some((&field, rest)) = body.split_first().filter(|(field, _)| **field != 0) {
        let (value, rest) = read_cstr(rest).expect("a terminated field");
        fields.push((field, String::from_utf8(value.to_vec()).expect("UTF-8, as written")));
        body = rest;
    }
    assert_eq!(body, [0], "one terminator ends the field list");
    let sent = |text: &str| text.replace('\0', "\\0");
    let severity = match error.severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let mut wrote = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', sent(&error.code)),
        (b'M', sent(&error.message)),
    ];
    wrote.extend(error.hint.as_deref().map(|hint| (b'H', sent(hint))));
    assert_eq!(fields, wrote, "{error:?} does not survive the wire");
    assert_eq!(error_field(&out[5..], b'M'), Some(&*sent(&error.message)));
}

/// The SCRAM iteration count past which inputs are skipped: PBKDF2 runs that many rounds, so a larger count only
/// costs time, not new paths (pgsplit refuses a server's count over `protocol::scram::MAX_ITERATIONS`). PostgreSQL's
/// default, so real exchanges stay in.
pub const MAX_ITERATIONS: u64 = 4096;

/// Whether every `i=<digits>` in `bytes` is at most [`MAX_ITERATIONS`]: the inputs worth a run.
pub fn iterations_bounded(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = find(rest, b"i=") {
        rest = &rest[at + 2..];
        // `str::parse::<u32>`, which reads the count, takes a leading `+`.
        if let Some(after_plus) = rest.strip_prefix(b"+") {
            rest = after_plus;
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = rest[..digits]
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')));
        if value.is_none_or(|v| v > MAX_ITERATIONS) {
            return false;
        }
    }
    true
}
