//! The byte stream of one connection as the relay drives it: a plain TCP socket, or TLS over one (pgsplit as the
//! TLS server towards a client, or as the TLS client towards a PostgreSQL server).
//!
//! Readiness-based and non-blocking, like the relay: poll for readiness, then [`Transport::read_now`] or
//! [`Transport::try_write`] without awaiting. Plain costs nothing over the bare socket (the same calls, one match).
//! TLS keeps rustls's state next to the socket: decrypted bytes not yet read count as readiness, ciphertext is read
//! only when no plaintext waits (so at most one TLS record's worth is buffered), and plaintext is taken only while
//! the ciphertext not yet sent stays under [`MAX_PENDING_TLS`] — a peer that stops reading makes `try_write` say
//! `WouldBlock`, never grow a buffer. Ciphertext that could not be sent at once is reported by
//! [`Transport::wants_flush`] and sent by [`Transport::flush_now`] when the socket is writable again.
//!
//! The await-style paths that speak whole messages (logins, pgsplit's own statements) use it as an `AsyncRead` +
//! `AsyncWrite` instead.
//!
//! Never does TLS handshakes or picks certificates (that is `crate::tls`); it takes over a connection whose
//! handshake is done, with whatever the peer sent after it.

use std::io::{self, ErrorKind, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use rustls::{ClientConnection, Connection, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Ciphertext that may wait in memory for a slow peer before `try_write` stops taking plaintext.
pub const MAX_PENDING_TLS: usize = 64 * 1024;
/// Room made in a read buffer that has none, so that a read of zero bytes can only mean EOF.
const MIN_READ: usize = 4096;

/// A connection's socket, with or without TLS.
pub enum Transport {
    Plain(TcpStream),
    /// Boxed: rustls's state is a few kilobytes, and most connections are plain.
    Tls(Box<TlsSession>),
}

/// A TCP socket and the TLS state over it, handshake done.
pub struct TlsSession {
    tcp: TcpStream,
    conn: Connection,
    /// Decrypted bytes the caller has not read yet.
    plaintext: usize,
    /// The peer sent close_notify: reads end once the plaintext before it is read.
    peer_closed: bool,
    /// The socket reached EOF.
    eof: bool,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain(tcp) => f.debug_tuple("Plain").field(tcp).finish(),
            Transport::Tls(tls) => f
                .debug_struct("Tls")
                .field("tcp", &tls.tcp)
                .field("version", &tls.conn.protocol_version())
                .finish_non_exhaustive(),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(tcp: TcpStream) -> Self {
        Transport::Plain(tcp)
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Transport {
    fn from(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let (tcp, conn) = stream.into_inner();
        Transport::server_side(tcp, conn)
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for Transport {
    fn from(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        let (tcp, conn) = stream.into_inner();
        Transport::client_side(tcp, conn)
    }
}

impl Transport {
    /// pgsplit as the TLS server (a client's connection), handshake done; what the client already sent stays.
    pub fn server_side(tcp: TcpStream, conn: ServerConnection) -> Transport {
        Self::tls(tcp, Connection::Server(conn))
    }

    /// pgsplit as the TLS client (a server connection), handshake done.
    pub fn client_side(tcp: TcpStream, conn: ClientConnection) -> Transport {
        Self::tls(tcp, Connection::Client(conn))
    }

    fn tls(tcp: TcpStream, mut conn: Connection) -> Transport {
        conn.set_buffer_limit(Some(MAX_PENDING_TLS));
        // Records already read during the handshake may hold plaintext: count it, so readiness says so.
        let (plaintext, peer_closed) = match conn.process_new_packets() {
            Ok(state) => (state.plaintext_bytes_to_read(), state.peer_has_closed()),
            // The error comes back at the first read, which processes the same records again.
            Err(_) => (0, false),
        };
        Transport::Tls(Box::new(TlsSession {
            tcp,
            conn,
            plaintext,
            peer_closed,
            eof: false,
        }))
    }

    /// The same connection with its socket registered with the I/O driver of the runtime calling this (a
    /// connection moving to another worker thread). Nothing read or buffered is lost.
    pub fn rebind(self) -> io::Result<Transport> {
        let rebind = |tcp: TcpStream| TcpStream::from_std(tcp.into_std()?);
        Ok(match self {
            Transport::Plain(tcp) => Transport::Plain(rebind(tcp)?),
            Transport::Tls(tls) => {
                let TlsSession {
                    tcp,
                    conn,
                    plaintext,
                    peer_closed,
                    eof,
                } = *tls;
                Transport::Tls(Box::new(TlsSession {
                    tcp: rebind(tcp)?,
                    conn,
                    plaintext,
                    peer_closed,
                    eof,
                }))
            }
        })
    }

    /// The socket: options, addresses.
    #[inline]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Ready when a read would not block: bytes on the socket, or TLS plaintext (or the peer's close) already in
    /// memory.
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(tcp) => tcp.poll_read_ready(cx),
            Transport::Tls(tls) if tls.has_news() => Poll::Ready(Ok(())),
            Transport::Tls(tls) => tls.tcp.poll_read_ready(cx),
        }
    }

    /// Ready when the socket takes bytes.
    #[inline]
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Reads what is available into `buf`'s spare capacity without blocking: `Ok(0)` is the end of the stream
    /// (close_notify, or the socket's EOF), `WouldBlock` means nothing yet. A TLS error (a forged or broken record)
    /// is `InvalidData`; the alert goes out if the socket takes it.
    #[inline]
    pub fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(MIN_READ);
        }
        match self {
            Transport::Plain(tcp) => super::io::read_now(tcp, buf),
            Transport::Tls(tls) => tls.read_now(buf),
        }
    }

    /// Takes as much of `bytes` as fits without blocking and returns how much; `WouldBlock` when nothing fits. For
    /// TLS, pending ciphertext is sent first, and what is taken may wait encrypted in memory (bounded by
    /// [`MAX_PENDING_TLS`]) until [`flush_now`](Self::flush_now).
    #[inline]
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_write(bytes),
            Transport::Tls(tls) => tls.try_write(bytes),
        }
    }

    /// Ciphertext is waiting for the socket: poll for writability and call [`flush_now`](Self::flush_now) even
    /// when there is nothing more to write. Always false for plain sockets.
    #[inline]
    pub fn wants_flush(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// Sends pending ciphertext; `WouldBlock` if the socket did not take all of it.
    #[inline]
    pub fn flush_now(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush_now(),
        }
    }

    /// Queues TLS's close_notify (nothing for plain sockets); it leaves with the next flush. Nothing may be written
    /// after it.
    pub fn close_notify(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.conn.send_close_notify();
        }
    }

    /// The peer has said nothing: no decrypted bytes or end of stream in memory, and nothing on the socket. One
    /// non-blocking read of a byte, which is lost if there was one: only for a connection that is closed when this
    /// says false (a pooled server connection before it is lent).
    pub fn is_silent(&self) -> bool {
        let mut probe = [0u8; 1];
        let socket_silent = matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock);
        match self {
            Transport::Plain(_) => socket_silent,
            Transport::Tls(tls) => !tls.has_news() && socket_silent,
        }
    }

    /// Await-style, for paths off the relay (login refusals, answers pgsplit makes itself, pgsplit's own
    /// statements): writes all of `bytes`, and sends every ciphertext byte. Small as a future: it lives in the
    /// states of the relay's futures.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, bytes).await?;
        self.flush().await
    }

    /// Await-style: sends every pending ciphertext byte.
    pub async fn flush(&mut self) -> io::Result<()> {
        AsyncWriteExt::flush(self).await
    }

    /// Await-style close: close_notify for TLS, then the socket's write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

impl TlsSession {
    /// Decrypted bytes (or the end of the stream) are in memory: a read takes them without the socket.
    fn has_news(&self) -> bool {
        self.plaintext > 0 || self.peer_closed || self.eof
    }

    // Out of line, like try_write and flush_now: the plain path's dispatch stays small enough to inline into
    // the relay.
    #[inline(never)]
    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.fill()?;
        let start = buf.len();
        // Only as many bytes as are waiting are initialised, however large the buffer's capacity.
        let room = (buf.capacity() - start).min(self.plaintext.max(1));
        buf.resize(start + room, 0);
        let result = self.take_plaintext(&mut buf[start..]);
        buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Reads and decrypts ciphertext until plaintext (or the end) is in memory; `WouldBlock` when the socket has
    /// no whole record yet (tokio then clears its readiness). Reads ciphertext only while no plaintext waits, so
    /// rustls holds at most one record's worth.
    fn fill(&mut self) -> io::Result<()> {
        while !self.has_news() {
            if self.conn.read_tls(&mut NonBlocking(&self.tcp))? == 0 {
                self.eof = true;
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    // The alert rustls queued tells the peer why; best effort.
                    let _ = self.flush_now();
                    return Err(io::Error::new(ErrorKind::InvalidData, error));
                }
            };
            self.plaintext = state.plaintext_bytes_to_read();
            self.peer_closed = state.peer_has_closed();
            if self.conn.wants_write() {
                // A post-handshake message to answer (a key update); what does not go now goes with the next write.
                match self.flush_now() {
                    Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Copies decrypted bytes into `dst` (not empty).
    fn take_plaintext(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(dst) {
            Ok(n) => {
                self.plaintext = self.plaintext.saturating_sub(n);
                Ok(n)
            }
            // The socket ended without close_notify: PostgreSQL's clients often just close; its framing knows
            // where messages end, so this is an ordinary end of stream.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
            Err(e) if e.kind() == ErrorKind::WouldBlock && self.eof => Ok(0),
            Err(e) => {
                if e.kind() == ErrorKind::WouldBlock {
                    // Nothing after all (a record of zero application bytes): look at the socket again.
                    self.plaintext = 0;
                }
                Err(e)
            }
        }
    }

    #[inline(never)]
    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.flush_now() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        // rustls takes plaintext only while its unsent ciphertext is under the buffer limit.
        let taken = self.conn.writer().write(bytes)?;
        match self.flush_now() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if taken == 0 && !bytes.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    #[inline(never)]
    fn flush_now(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut NonBlocking(&self.tcp))? == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// For the await-style paths off the relay that speak whole messages: pgsplit's logins to servers, its own
/// statements on a pooled connection, cancel requests. Plain sockets are tokio's own; TLS goes through the same
/// non-blocking steps as the relay, waiting on the socket's readiness when a step would block.
impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let tls = match self.get_mut() {
            Transport::Plain(tcp) => return Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => tls,
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !tls.has_news() {
                ready!(tls.tcp.poll_read_ready(cx))?;
            }
            match tls.fill() {
                Ok(()) => {}
                // Readiness was cleared: the next poll waits for the kernel.
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            let room = buf.remaining().min(tls.plaintext.max(1));
            match tls.take_plaintext(buf.initialize_unfilled_to(room)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let tls = match self.get_mut() {
            Transport::Plain(tcp) => return Pin::new(tcp).poll_write(cx, bytes),
            Transport::Tls(tls) => tls,
        };
        loop {
            match tls.try_write(bytes) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => ready!(tls.tcp.poll_write_ready(cx))?,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Tls(tls) => tls.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Tls(tls) => {
                // Idempotent in rustls: a shutdown polled again queues nothing more.
                tls.conn.send_close_notify();
                ready!(tls.poll_flush(cx))?;
                Pin::new(&mut tls.tcp).poll_shutdown(cx)
            }
        }
    }
}

impl TlsSession {
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.flush_now() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => ready!(self.tcp.poll_write_ready(cx))?,
                done => return Poll::Ready(done),
            }
        }
    }
}

/// The socket as `std::io` sees it, never blocking: tokio's `try_read`/`try_write`, which clear readiness on
/// `WouldBlock` so that the next poll waits for the kernel.
struct NonBlocking<'a>(&'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "transport/tests.rs"]
mod tests;
