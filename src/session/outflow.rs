//! Bytes due to one side of the relay, taken from the other side's read buffer without copying when they go through
//! unchanged.
//!
//! Most frames are forwarded as read: the first `due` bytes of the source buffer are what the peer gets next. When a
//! frame must be rewritten, dropped, or preceded by one pgsplit makes up (a renamed Bind, a ParseComplete the
//! server never sent), what is due so far moves into an outbox and the change is made there; frames after it join
//! the outbox until it drains, so everything still leaves in order and in one write. Once the outbox is empty the
//! zero-copy path resumes.
//!
//! Writes go through the peer's [`Transport`]: over TLS, what the transport took may still wait encrypted in it
//! (bounded by `MAX_PENDING_TLS`), and each write sends that first.

use std::io::ErrorKind;

use bytes::{Buf, BytesMut};

use crate::protocol::transport::Transport;

#[derive(Debug, Default)]
pub struct Outflow {
    /// Bytes due before anything still in the source buffer. Invariant: `outbox` is empty or `due` is 0.
    outbox: BytesMut,
    /// The first `due` bytes of the source buffer are due after the outbox.
    due: usize,
}

impl Outflow {
    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.due == 0 && self.outbox.is_empty()
    }

    /// Bytes of the source buffer already scanned and due: scanning resumes at this offset.
    pub fn scanned(&self) -> usize {
        self.due
    }

    /// Bytes waiting to be written, in the outbox or the source.
    pub fn pending(&self) -> usize {
        self.due + self.outbox.len()
    }

    /// The next `n` bytes of `source` (after what is due) go through unchanged.
    pub fn pass(&mut self, source: &mut BytesMut, n: usize) {
        if self.outbox.is_empty() {
            self.due += n;
        } else {
            self.outbox.extend_from_slice(&source[..n]);
            source.advance(n);
        }
    }

    /// The next `n` bytes of `source` are dropped: the peer never sees them.
    pub fn skip(&mut self, source: &mut BytesMut, n: usize) {
        self.move_due_to_outbox(source);
        source.advance(n);
    }

    /// A place to write bytes that go out at this point of the stream, after everything due so far.
    pub fn insert(&mut self, source: &mut BytesMut) -> &mut BytesMut {
        self.move_due_to_outbox(source);
        &mut self.outbox
    }

    /// Everything due, as bytes of its own: the source buffer is about to go away.
    pub fn take(&mut self, source: &mut BytesMut) -> BytesMut {
        self.move_due_to_outbox(source);
        std::mem::take(&mut self.outbox)
    }

    /// Forgets everything due (the peer must never see it).
    pub fn discard(&mut self, source: &mut BytesMut) {
        self.outbox.clear();
        source.advance(self.due);
        self.due = 0;
    }

    /// Moves what is due in `source` to the outbox, so bytes can be added after it.
    fn move_due_to_outbox(&mut self, source: &mut BytesMut) {
        if self.due > 0 {
            self.outbox.extend_from_slice(&source[..self.due]);
            source.advance(self.due);
            self.due = 0;
        }
    }

    /// Writes as much as `stream` takes without blocking; the rest waits for writability. Over TLS, ciphertext
    /// left from earlier writes goes first (each TLS write sends it), and also with nothing due.
    #[inline]
    pub fn write(&mut self, stream: &mut Transport, source: &mut BytesMut) -> std::io::Result<()> {
        if self.is_empty() {
            return flush_now(stream);
        }
        if !self.outbox.is_empty() {
            let mut len = self.outbox.len();
            write_now(stream, &mut self.outbox, &mut len)?;
            if !self.outbox.is_empty() {
                return Ok(());
            }
        }
        write_now(stream, source, &mut self.due)
    }
}

/// Sends the TLS ciphertext `stream` holds, as far as the socket takes it now (nothing to do for plain sockets).
#[inline]
pub fn flush_now(stream: &mut Transport) -> std::io::Result<()> {
    if !stream.wants_flush() {
        return Ok(());
    }
    match stream.flush_now() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        done => done,
    }
}

/// Writes as much of `buf[..*due]` as the transport takes without blocking.
fn write_now(stream: &mut Transport, buf: &mut BytesMut, due: &mut usize) -> std::io::Result<()> {
    while *due > 0 {
        match stream.try_write(&buf[..*due]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.advance(n);
                *due -= n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the peer would get: the outbox, then the due prefix of the source.
    fn due_bytes(flow: &Outflow, source: &BytesMut) -> Vec<u8> {
        let mut all = flow.outbox.to_vec();
        all.extend_from_slice(&source[..flow.due]);
        all
    }

    #[test]
    fn unchanged_bytes_stay_in_the_source() {
        let mut source = BytesMut::from(&b"abcdef"[..]);
        let mut flow = Outflow::default();
        flow.pass(&mut source, 2);
        flow.pass(&mut source, 3);
        assert!(flow.outbox.is_empty());
        assert_eq!(due_bytes(&flow, &source), b"abcde");
        assert_eq!(flow.scanned(), 5);
    }

    #[test]
    fn skips_and_inserts_keep_the_order() {
        let mut source = BytesMut::from(&b"aaBBcc"[..]);
        let mut flow = Outflow::default();
        flow.pass(&mut source, 2);
        flow.skip(&mut source, 2);
        flow.insert(&mut source).extend_from_slice(b"xy");
        flow.pass(&mut source, 2);
        assert_eq!(due_bytes(&flow, &source), b"aaxycc");
        assert_eq!(
            flow.scanned(),
            0,
            "the source holds nothing due once the outbox is in use"
        );
        assert_eq!(flow.pending(), 6);
    }

    #[test]
    fn discard_drops_everything_due() {
        let mut source = BytesMut::from(&b"aabbcc"[..]);
        let mut flow = Outflow::default();
        flow.pass(&mut source, 2);
        flow.insert(&mut source).extend_from_slice(b"zz");
        flow.discard(&mut source);
        assert!(flow.is_empty());
        assert_eq!(&source[..], b"bbcc");
        flow.pass(&mut source, 2);
        assert_eq!(due_bytes(&flow, &source), b"bb");
    }
}
