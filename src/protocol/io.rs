//! Whole-frame reads for the phases off the hot path: login, authentication, and statements pgsplit runs itself.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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
