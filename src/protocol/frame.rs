//! Message framing after startup: `[tag: u8][length: u32 BE, counting itself][body]`.
//!
//! The relay never decodes what it does not need. [`Framer`] walks a buffer and says, per step, "these bytes can be
//! forwarded blind" (a whole frame, or as much of a large one as has arrived), "here is a complete frame you asked
//! to look at", or "a frame starts here whose header alone you asked to see" (its bytes then follow blind). Bodies
//! larger than the read buffer (a 1 GiB DataRow, a long COPY, a huge notice) stream through in pieces, so what the
//! caller must hold whole is bounded by what it asks to see whole. Lengths are checked here, before anything looks
//! inside a body.

use thiserror::Error;

/// Tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the body alone (the wire length minus its own 4 bytes).
    pub body_len: usize,
}

impl Header {
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(u32),
    #[error("message of {len} bytes is over the limit of {max} bytes (proxy.max_message_size)")]
    TooLong { len: usize, max: usize },
}

/// Reads the header at the front of `buf`, if all 5 bytes are there.
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let raw = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if raw < 4 {
        return Err(FrameError::BadLength(raw));
    }
    Ok(Some(Header {
        tag: head[0],
        body_len: raw as usize - 4,
    }))
}

/// What the front of the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes without looking at them.
    Pass(usize),
    /// A complete frame the caller looks at; it spans `header.frame_len()` bytes.
    Whole(Header),
    /// A frame starts here whose header alone the caller sees; nothing is consumed: its bytes come as `Pass`
    /// steps next.
    Head(Header),
    /// The next step needs more bytes than the buffer holds; at most this many bytes in all.
    NeedMore(usize),
}

/// How much of a frame the caller needs, decided from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Nothing: forward it blind.
    Blind,
    /// Its header: what it is, not what it says.
    Head,
    /// All of it, in one piece.
    Whole,
}

/// Walks one direction of a stream frame by frame, remembering how much of a partly forwarded frame is still to come.
#[derive(Debug, Default)]
pub struct Framer {
    pass_left: usize,
}

impl Framer {
    /// `look(header)` says how much of each frame the caller needs; `max_len` bounds every frame's body.
    pub fn step(&mut self, buf: &[u8], look: impl Fn(Header) -> Look, max_len: usize) -> Result<Step, FrameError> {
        if self.pass_left > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore(1));
            }
            let n = self.pass_left.min(buf.len());
            self.pass_left -= n;
            return Ok(Step::Pass(n));
        }
        let Some(header) = peek_header(buf)? else {
            return Ok(Step::NeedMore(HEADER_LEN));
        };
        if header.body_len > max_len {
            return Err(FrameError::TooLong {
                len: header.body_len,
                max: max_len,
            });
        }
        let frame_len = header.frame_len();
        match look(header) {
            Look::Whole if buf.len() < frame_len => Ok(Step::NeedMore(frame_len)),
            Look::Whole => Ok(Step::Whole(header)),
            Look::Head => {
                self.pass_left = frame_len;
                Ok(Step::Head(header))
            }
            Look::Blind => {
                let n = frame_len.min(buf.len());
                self.pass_left = frame_len - n;
                Ok(Step::Pass(n))
            }
        }
    }

    /// True between frames (nothing of a partly forwarded frame is outstanding).
    pub fn at_boundary(&self) -> bool {
        self.pass_left == 0
    }
}

/// Reads a NUL-terminated string at the front of `body`; returns it and the rest.
pub fn read_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    // Most names in extended-protocol messages are empty (the unnamed statement and portal): no search for those.
    let nul = match body.first() {
        Some(0) => 0,
        _ => memchr::memchr(0, body)?,
    };
    Some((&body[..nul], &body[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn small_pass_through_frames_are_forwarded_whole() {
        let buf = frame(b'D', b"row");
        let mut f = Framer::default();
        assert_eq!(f.step(&buf, |_| Look::Blind, 100), Ok(Step::Pass(8)));
        assert!(f.at_boundary());
    }

    #[test]
    fn large_pass_through_frame_streams_in_pieces() {
        let buf = frame(b'D', &[7u8; 20]);
        let mut f = Framer::default();
        assert_eq!(f.step(&buf[..10], |_| Look::Blind, 100), Ok(Step::Pass(10)));
        assert!(!f.at_boundary());
        assert_eq!(f.step(&buf[10..12], |_| Look::Blind, 100), Ok(Step::Pass(2)));
        assert_eq!(f.step(&buf[12..], |_| Look::Blind, 100), Ok(Step::Pass(13)));
        assert!(f.at_boundary());
    }

    #[test]
    fn a_frame_seen_by_its_head_then_streams_through() {
        let buf = frame(b'N', &[7u8; 20]);
        let mut f = Framer::default();
        let head = Header {
            tag: b'N',
            body_len: 20,
        };
        assert_eq!(f.step(&buf[..3], |_| Look::Head, 100), Ok(Step::NeedMore(HEADER_LEN)));
        assert_eq!(f.step(&buf[..7], |_| Look::Head, 100), Ok(Step::Head(head)));
        assert!(!f.at_boundary(), "the frame's bytes are still to come");
        assert_eq!(f.step(&buf[..7], |_| Look::Head, 100), Ok(Step::Pass(7)));
        assert_eq!(f.step(&buf[7..], |_| Look::Head, 100), Ok(Step::Pass(18)));
        assert!(f.at_boundary());
    }

    #[test]
    fn inspected_frames_wait_until_complete() {
        let buf = frame(b'Z', b"I");
        let mut f = Framer::default();
        let look = |h: Header| if h.tag == b'Z' { Look::Whole } else { Look::Blind };
        assert_eq!(f.step(&buf[..5], look, 100), Ok(Step::NeedMore(6)));
        assert_eq!(
            f.step(&buf, look, 100),
            Ok(Step::Whole(Header { tag: b'Z', body_len: 1 }))
        );
    }

    #[test]
    fn lengths_below_four_and_over_the_limit_are_errors() {
        let mut f = Framer::default();
        assert_eq!(
            f.step(b"Q\0\0\0\x03", |_| Look::Whole, 100),
            Err(FrameError::BadLength(3))
        );
        let huge = [b'Q', 0x40, 0, 0, 0];
        assert_eq!(
            f.step(&huge, |_| Look::Whole, 64 << 20),
            Err(FrameError::TooLong {
                len: (1 << 30) - 4,
                max: 64 << 20
            })
        );
    }

    #[test]
    fn cstr_reader_stops_at_nul() {
        assert_eq!(read_cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(read_cstr(b"ab"), None);
        assert_eq!(read_cstr(b""), None);
        assert_eq!(read_cstr(b"\0\0x"), Some((&b""[..], &b"\0x"[..])));
        // Short and long, around memchr's vector widths.
        for len in 0..70 {
            let mut text = vec![b'x'; len];
            assert_eq!(read_cstr(&text), None, "no NUL in {len} bytes");
            text.extend_from_slice(b"\0rest");
            let (name, rest) = read_cstr(&text).unwrap_or_else(|| panic!("NUL after {len} bytes"));
            assert_eq!((name.len(), rest), (len, &b"rest"[..]));
        }
    }
}
