//! The relay's two connections as bytes: waiting for the first thing either side can do, reading, writing what is
//! due, and the client's last words.
//!
//! Both sides are [`Transport`]s — plain sockets, or TLS over them (a client that logged in over TLS, a server
//! connection opened with `[server] tls`). TLS adds one duty: ciphertext a transport took but the socket did not
//! (`wants_flush`) is a reason of its own to wait for writability, with nothing else due, or the tail of a reply
//! would stay encrypted in memory. Plain sockets never want a flush, so their path is the same calls as before TLS.
//!
//! Decides nothing about what is forwarded: the relay's scan and outflows do that; this only moves their bytes.

use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;

use super::relay::{BACKPRESSURE, Relay, SessionEnd};
use super::{outflow, spare};
use crate::pool::server::READ_CHUNK;

/// How long a client that is leaving gets to take its last words (a fatal error, TLS's close_notify): one that does
/// not read must not keep its session, and the server connection it may hold, any longer.
const GOODBYE: Duration = Duration::from_secs(5);

pub(super) enum Event {
    ClientReadable(std::io::Result<()>),
    ServerReadable(std::io::Result<()>),
    ClientWritable(std::io::Result<()>),
    ServerWritable(std::io::Result<()>),
    Shutdown,
}

impl Relay {
    /// Waits for the first thing the relay can act on, in this order: a stop, taken only when nothing is in flight
    /// (so a client cannot keep a stopping proxy busy); writes due to the server, then to the client; reads from
    /// the server, then from the client. Readiness is polled on the sockets themselves (one waker slot per
    /// direction), not through futures made anew each turn.
    pub(super) async fn next_event(&mut self) -> Event {
        let read_client = self.reads_client();
        let quiet = self.is_quiet();
        // Replies held for a possible re-run are not due yet: waiting to write them would spin. Ciphertext already
        // taken by TLS is due whatever happens.
        let client_due = (!self.to_client.is_empty() && !self.retry.armed()) || self.client.wants_flush();
        let server_due =
            !self.to_server.is_empty() || self.attachment.attached().is_some_and(|s| s.conn.stream.wants_flush());
        let read_server = self.to_client.pending() < BACKPRESSURE;
        if let Some(server) = self.attachment.attached_mut().filter(|_| read_server) {
            server.conn.buf.reserve(READ_CHUNK);
        }
        let (client, stop) = (&self.client, &mut self.stop);
        let server = self.attachment.attached().map(|s| &s.conn.stream);
        std::future::poll_fn(|cx| {
            // Without a server nothing is in flight.
            if (quiet || server.is_none()) && stop.poll_stopping(cx) {
                return Poll::Ready(Event::Shutdown);
            }
            if let Some(server) = server
                && server_due
                && let Poll::Ready(r) = server.poll_write_ready(cx)
            {
                return Poll::Ready(Event::ServerWritable(r));
            }
            if client_due && let Poll::Ready(r) = client.poll_write_ready(cx) {
                return Poll::Ready(Event::ClientWritable(r));
            }
            if let Some(server) = server
                && read_server
                && let Poll::Ready(r) = server.poll_read_ready(cx)
            {
                return Poll::Ready(Event::ServerReadable(r));
            }
            if (read_client || server.is_none())
                && let Poll::Ready(r) = client.poll_read_ready(cx)
            {
                return Poll::Ready(Event::ClientReadable(r));
            }
            Poll::Pending
        })
        .await
    }

    /// Reads what the client sent, into a buffer lent for as long as it holds client bytes ([`spare`]): an idle
    /// client holds no read buffer.
    pub(super) fn read_from_client(&mut self) -> std::io::Result<usize> {
        if self.client_buf.capacity() == 0 {
            self.client_buf = spare::take();
        } else {
            self.client_buf.reserve(READ_CHUNK);
        }
        self.client.read_now(&mut self.client_buf)
    }

    /// Gives the client read buffer back once every byte in it has been dealt with: after every turn of the relay,
    /// a read that found nothing (readiness left over from the login, say) included.
    pub(super) fn spare_client_buf(&mut self) {
        spare::give_back(&mut self.client_buf);
    }

    /// Reads what the server sent (the buffer was reserved while waiting); None with no server attached.
    pub(super) fn read_from_server(&mut self) -> Option<std::io::Result<usize>> {
        let server = self.attachment.attached_mut()?;
        Some(server.conn.stream.read_now(&mut server.conn.buf))
    }

    /// Writes whatever each side can take now without waiting.
    pub(super) fn flush(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.attachment.attached_mut() else {
            // Nothing is due without a server, but TLS may still hold the tail of the last reply.
            return outflow::flush_now(&mut self.client).map_err(SessionEnd::ClientIo);
        };
        let to_server = self.to_server.write(&mut server.conn.stream, &mut self.client_buf);
        let to_client = match self.retry.armed() {
            // Held back until the read shows a result (or is re-run on the leader); what went before still leaves.
            true => outflow::flush_now(&mut self.client),
            false => self.to_client.write(&mut self.client, &mut server.conn.buf),
        };
        if to_server.is_err() {
            if self.retry.cut() {
                // The leader's connection died under a unit it never answered: it runs again.
                return self.rerun_cut();
            }
            if self.cuttable() {
                // Reading the connection tells its end, and the transaction is cut there (`server_lost`).
                return to_client.map_err(SessionEnd::ClientIo);
            }
            return Err(self.attachment.lose());
        }
        to_client.map_err(SessionEnd::ClientIo)
    }

    pub(super) async fn send_to_client(&mut self, build: impl FnOnce(&mut BytesMut)) -> Result<(), SessionEnd> {
        self.out.clear();
        build(&mut self.out);
        self.client.write_all(&self.out).await.map_err(SessionEnd::ClientIo)
    }

    /// The client's last words, within [`GOODBYE`]: a fatal error is told; over TLS, close_notify follows (after
    /// everything still held), unless the connection itself failed. A plain client that simply left is told
    /// nothing: closing the socket says it all.
    pub(super) async fn goodbye(&mut self, end: &SessionEnd) {
        let close_notify = self.client.is_tls() && !matches!(end, SessionEnd::ClientIo(_));
        self.out.clear();
        if let SessionEnd::Fatal(error) = end {
            error.encode(&mut self.out);
        } else if !close_notify {
            return;
        }
        let (client, out) = (&mut self.client, &self.out);
        let said = async {
            client.write_all(out).await?;
            if close_notify {
                client.close_notify();
                client.flush().await?;
            }
            std::io::Result::Ok(())
        };
        match crate::runtime::timeout(GOODBYE, said).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "client gone before its last words"),
            Err(_) => tracing::debug!(timeout = ?GOODBYE, "client did not take its last words in time"),
        }
    }
}
