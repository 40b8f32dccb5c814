//! Reads: whole frames for the phases off the hot path (login, authentication, statements pgsplit runs itself),
//! and the relay's non-blocking read of whatever a socket has.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::TcpStream;

use super::frame::{FrameError, peek_header};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one complete frame; returns its tag and body. Bytes after it stay in `buf`.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_body: usize,
) -> Result<(u8, BytesMut), IoError> {
    loop {
        if let Some(header) = peek_header(buf)? {
            if header.body_len > max_body {
                return Err(FrameError::TooLong {
                    len: header.body_len,
                    max: max_body,
                }
                .into());
            }
            if buf.len() >= header.frame_len() {
                let mut frame = buf.split_to(header.frame_len());
                frame.advance(5);
                return Ok((header.tag, frame));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(IoError::Closed);
        }
    }
}

/// Reads what the socket has into `buf`'s spare capacity without blocking. A read that leaves spare room means
/// the socket is drained, so tokio is told to clear its readiness now (as if the read had said "would block"),
/// saving the empty read it would otherwise need; tokio keeps any readiness that arrived after this read.
pub fn read_now(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut got = 0;
    let result = stream.try_io(Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        // SAFETY: `spare` is writable memory owned by `buf`, valid for `room` bytes; the fd is open for the life
        // of `stream`.
        let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), room) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        got = n as usize;
        // SAFETY: the kernel initialised the first `got` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + got) };
        if got > 0 && got < room {
            Err(ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match result {
        Err(e) if e.kind() == ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}
