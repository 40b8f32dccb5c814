//! The hot path: one client's frames to a borrowed server connection and the replies back, as bytes.
//!
//! Frames are forwarded unparsed; only tags that change state are looked at (Query, Sync, the extended-protocol
//! messages, Terminate from the client; ReadyForQuery and ParameterStatus from the server). Both directions are
//! non-blocking: a write that cannot finish at once waits for readiness while reads go on, so a client pipelining
//! a large batch never deadlocks against a server streaming results. Everything read in one go is forwarded in one
//! write. In transaction mode the server connection goes back to the pool at ReadyForQuery `I` once nothing is
//! outstanding; in session mode it stays until the client leaves.

use std::io::ErrorKind;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::cancel::CancelSlot;
use crate::config::PoolMode;
use crate::pool::server::READ_CHUNK;
use crate::pool::{ConnectError, InstancePool, LoginInfo, ServerConn, Settings};
use crate::protocol::error::SqlError;
use crate::protocol::frame::{FrameError, Framer, Header, Step};
use crate::protocol::login::LoginError;
use crate::protocol::messages::{self, TxStatus};

/// Stop reading a side while this much of its data waits to be written to the other.
const BACKPRESSURE: usize = 256 * 1024;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client closed the connection")]
    ClientGone,
    #[error("{0}")]
    Fatal(SqlError),
    #[error("client connection: {0}")]
    ClientIo(std::io::Error),
}

impl From<FrameError> for SessionEnd {
    fn from(e: FrameError) -> Self {
        SessionEnd::Fatal(SqlError::protocol_violation(e.to_string()))
    }
}

/// Settings the relay needs from the proxy, fixed for the session's life.
pub struct RelayConfig {
    pub mode: PoolMode,
    pub max_message_size: usize,
    pub checkout_timeout: std::time::Duration,
}

pub struct Relay {
    config: RelayConfig,
    pool: Arc<InstancePool>,
    login: LoginInfo,
    /// The settings this client's session has, applied to each server connection it borrows.
    wanted: Settings,
    cancel: Arc<CancelSlot>,
    shutdown: watch::Receiver<bool>,

    client: TcpStream,
    /// Bytes from the client; the first `to_server` are scanned and due to the server.
    client_buf: BytesMut,
    client_framer: Framer,
    to_server: usize,

    server: Option<ServerConn>,
    server_framer: Framer,
    /// The first `to_client` bytes of the server's buffer are scanned and due to the client.
    to_client: usize,

    /// Queries, Syncs and FunctionCalls sent whose ReadyForQuery has not come back.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    batch_open: bool,
    tx_status: TxStatus,
    /// After a failed checkout: drop extended-protocol messages until Sync, as a server would after an error.
    skip_until_sync: bool,
    terminating: bool,
    out: BytesMut,
}

enum Event {
    ClientReadable(std::io::Result<()>),
    ServerReadable(std::io::Result<()>),
    ClientWritable(std::io::Result<()>),
    ServerWritable(std::io::Result<()>),
    Shutdown,
}

impl Relay {
    pub fn new(
        config: RelayConfig,
        pool: Arc<InstancePool>,
        login: LoginInfo,
        wanted: Settings,
        cancel: Arc<CancelSlot>,
        shutdown: watch::Receiver<bool>,
        client: TcpStream,
    ) -> Self {
        Relay {
            config,
            pool,
            login,
            wanted,
            cancel,
            shutdown,
            client,
            client_buf: BytesMut::with_capacity(READ_CHUNK),
            client_framer: Framer::default(),
            to_server: 0,
            server: None,
            server_framer: Framer::default(),
            to_client: 0,
            pending: 0,
            batch_open: false,
            tx_status: TxStatus::Idle,
            skip_until_sync: false,
            terminating: false,
            out: BytesMut::new(),
        }
    }

    /// Runs until the client leaves or a fatal error; a fatal error is sent to the client before returning.
    pub async fn run(mut self) -> SessionEnd {
        let end = self.relay().await;
        if let SessionEnd::Fatal(error) = &end {
            self.out.clear();
            error.encode(&mut self.out);
            let _ = self.client.write_all(&self.out).await;
        }
        self.return_server().await;
        end
    }

    async fn relay(&mut self) -> SessionEnd {
        loop {
            if self.terminating && self.to_server == 0 {
                return SessionEnd::ClientGone;
            }
            let result = match self.next_event().await {
                Event::ClientReadable(Ok(())) => match self.client.try_read_buf(&mut self.client_buf) {
                    Ok(0) => return SessionEnd::ClientGone,
                    Ok(_) => self.on_client_data().await,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(SessionEnd::ClientIo(e)),
                },
                Event::ServerReadable(Ok(())) => {
                    let server = self.server.as_mut().expect("server events imply a server");
                    match server.stream.try_read_buf(&mut server.buf) {
                        Ok(0) => return self.lose_server(),
                        Ok(_) => self.on_server_data(),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                        Err(_) => return self.lose_server(),
                    }
                }
                Event::ServerReadable(Err(_)) | Event::ServerWritable(Err(_)) => return self.lose_server(),
                Event::ClientReadable(Err(e)) | Event::ClientWritable(Err(e)) => Err(SessionEnd::ClientIo(e)),
                Event::ClientWritable(Ok(())) | Event::ServerWritable(Ok(())) => Ok(()),
                Event::Shutdown => return SessionEnd::Fatal(SqlError::shutting_down()),
            };
            if let Err(end) = result.and_then(|()| self.flush()) {
                return end;
            }
            self.release_if_done();
        }
    }

    async fn next_event(&mut self) -> Event {
        let read_client = !self.terminating && self.to_server < BACKPRESSURE;
        if read_client {
            self.client_buf.reserve(READ_CHUNK);
        }
        let quiet = self.is_quiet();
        match self.server.as_mut() {
            Some(server) => {
                if quiet && *self.shutdown.borrow() {
                    return Event::Shutdown;
                }
                let read_server = self.to_client < BACKPRESSURE;
                if read_server {
                    server.buf.reserve(READ_CHUNK);
                }
                tokio::select! {
                    biased;
                    r = server.stream.writable(), if self.to_server > 0 => Event::ServerWritable(r),
                    r = self.client.writable(), if self.to_client > 0 => Event::ClientWritable(r),
                    r = server.stream.readable(), if read_server => Event::ServerReadable(r),
                    r = self.client.readable(), if read_client => Event::ClientReadable(r),
                    _ = self.shutdown.changed(), if quiet => Event::Shutdown,
                }
            }
            None => {
                if *self.shutdown.borrow() {
                    return Event::Shutdown;
                }
                tokio::select! {
                    r = self.client.readable() => Event::ClientReadable(r),
                    _ = self.shutdown.changed() => Event::Shutdown,
                }
            }
        }
    }

    /// Scans newly read client bytes, borrowing a server connection at the first message that needs one.
    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        while !self.terminating {
            let step = self.client_framer.step(
                &self.client_buf[self.to_server..],
                |tag| tag != b'd',
                self.config.max_message_size,
            )?;
            match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) if self.server.is_some() => self.to_server += n,
                // CopyData with no COPY running: a server ignores it, and so do we.
                Step::Pass(n) => self.client_buf.advance(n),
                Step::Whole(header) => self.on_client_frame(header).await?,
            }
        }
        Ok(())
    }

    async fn on_client_frame(&mut self, header: Header) -> Result<(), SessionEnd> {
        let len = header.frame_len();
        match header.tag {
            b'X' => {
                self.terminating = true;
                return Ok(());
            }
            b'Q' | b'F' | b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H' | b'c' | b'f' => {}
            other => {
                return Err(SessionEnd::Fatal(SqlError::protocol_violation(format!(
                    "invalid frontend message type {other}"
                ))));
            }
        }
        if self.server.is_none() {
            if self.answer_without_server(header.tag).await? {
                self.client_buf.advance(len);
                return Ok(());
            }
            if let Err(error) = self.attach().await {
                return self.refuse(header, error).await;
            }
        }
        match header.tag {
            b'Q' | b'F' => self.pending += 1,
            b'S' => {
                self.pending += 1;
                self.batch_open = false;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => self.batch_open = true,
            _ => {}
        }
        self.to_server += len;
        Ok(())
    }

    /// Messages that need no server when none is attached: a lone Sync is answered here, Flush and stray COPY
    /// messages are dropped. Returns whether the frame was consumed.
    async fn answer_without_server(&mut self, tag: u8) -> Result<bool, SessionEnd> {
        match tag {
            b'S' => {
                self.skip_until_sync = false;
                self.send_to_client(|out| messages::ready_for_query(out, TxStatus::Idle))
                    .await?;
                Ok(true)
            }
            b'H' | b'c' | b'f' => Ok(true),
            b'P' | b'B' | b'D' | b'E' | b'C' => Ok(self.skip_until_sync),
            _ => Ok(false),
        }
    }

    /// The checkout failed: answer like a server whose statement failed, and keep the session.
    async fn refuse(&mut self, header: Header, error: SqlError) -> Result<(), SessionEnd> {
        self.client_buf.advance(header.frame_len());
        let simple = matches!(header.tag, b'Q' | b'F');
        self.skip_until_sync = !simple;
        self.send_to_client(|out| {
            error.encode(out);
            if simple {
                messages::ready_for_query(out, TxStatus::Idle);
            }
        })
        .await
    }

    async fn attach(&mut self) -> Result<(), SqlError> {
        let conn = borrow(&self.pool, &self.login, &self.wanted, self.config.checkout_timeout).await?;
        self.cancel.set(Some(conn.cancel.clone()));
        self.server = Some(conn);
        self.server_framer = Framer::default();
        Ok(())
    }

    fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        let server = self.server.as_mut().expect("server data implies a server");
        loop {
            let step = self
                .server_framer
                .step(
                    &server.buf[self.to_client..],
                    |tag| matches!(tag, b'Z' | b'S'),
                    usize::MAX,
                )
                .map_err(|e| SessionEnd::Fatal(SqlError::server_unavailable(self.pool.name(), e)))?;
            match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) => self.to_client += n,
                Step::Whole(header) => {
                    let body = &server.buf[self.to_client + 5..self.to_client + header.frame_len()];
                    if header.tag == b'Z' {
                        self.tx_status = body.first().copied().and_then(TxStatus::from_byte).ok_or_else(|| {
                            SessionEnd::Fatal(SqlError::server_unavailable(self.pool.name(), "bad ReadyForQuery"))
                        })?;
                        self.pending = self.pending.saturating_sub(1);
                    } else if let Some((name, value)) = messages::parse_parameter_status(body) {
                        // The client changed a setting (SET, RESET, SET LOCAL ending): it is now part of its
                        // session, to be carried to the next server connection it borrows.
                        self.wanted.set(name, value);
                        server.settings.set(name, value);
                    }
                    self.to_client += header.frame_len();
                }
            }
        }
    }

    /// Writes whatever each side can take now without waiting.
    fn flush(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let to_server = write_now(&server.stream, &mut self.client_buf, &mut self.to_server);
        let to_client = write_now(&self.client, &mut server.buf, &mut self.to_client);
        if to_server.is_err() {
            return Err(self.lose_server());
        }
        to_client.map_err(SessionEnd::ClientIo)
    }

    /// In transaction mode, gives the server connection back once the transaction is over and nothing is in flight.
    fn release_if_done(&mut self) {
        if self.config.mode == PoolMode::Transaction && self.server.is_some() && self.is_quiet() {
            let conn = self.server.take().expect("checked above");
            self.cancel.set(None);
            if conn.buf.is_empty() {
                self.pool.release(conn);
            } else {
                // Unsolicited bytes after ReadyForQuery belong to nobody; never hand them to another client.
                self.pool.discard(conn);
            }
        }
    }

    /// Idle between transactions with nothing outstanding in either direction.
    fn is_quiet(&self) -> bool {
        self.pending == 0
            && !self.batch_open
            && self.tx_status == TxStatus::Idle
            && self.to_server == 0
            && self.to_client == 0
            && self.client_framer.at_boundary()
            && self.server_framer.at_boundary()
    }

    /// At the end of a session: a clean connection goes back to the pool (after `DISCARD ALL` in session mode,
    /// so no state leaks to the next client), anything else is closed.
    async fn return_server(&mut self) {
        let Some(mut conn) = self.server.take() else { return };
        self.cancel.set(None);
        let clean = self.is_quiet() && conn.buf.is_empty();
        let reusable =
            clean && (self.config.mode == PoolMode::Transaction || conn.run_own("DISCARD ALL").await.is_ok());
        if reusable {
            self.pool.release(conn);
        } else {
            self.pool.discard(conn);
        }
    }

    /// The server connection failed: it is closed, never returned, and the client is told.
    fn lose_server(&mut self) -> SessionEnd {
        if let Some(conn) = self.server.take() {
            self.cancel.set(None);
            self.pool.discard(conn);
        }
        SessionEnd::Fatal(server_lost(&self.pool))
    }

    async fn send_to_client(&mut self, build: impl FnOnce(&mut BytesMut)) -> Result<(), SessionEnd> {
        self.out.clear();
        build(&mut self.out);
        self.client.write_all(&self.out).await.map_err(SessionEnd::ClientIo)
    }
}

/// Borrows a connection from `pool` and gives it `wanted`'s settings. A setting the server refuses comes back as
/// the server's own error; the connection goes back to the pool untouched.
pub async fn borrow(
    pool: &InstancePool,
    login: &LoginInfo,
    wanted: &Settings,
    timeout: std::time::Duration,
) -> Result<ServerConn, SqlError> {
    let mut conn = pool.checkout(login, timeout).await.map_err(|e| e.to_sql_error())?;
    match conn.sync_settings(wanted).await {
        Ok(()) => Ok(conn),
        Err(error @ ConnectError::Login(LoginError::Refused { .. })) => {
            pool.release(conn);
            Err(error.to_sql_error(pool.name()))
        }
        Err(error) => {
            pool.discard(conn);
            Err(error.to_sql_error(pool.name()))
        }
    }
}

/// Writes as much of `buf[..*due]` as the socket takes without blocking; the rest waits for writability.
fn write_now(stream: &TcpStream, buf: &mut BytesMut, due: &mut usize) -> std::io::Result<()> {
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

fn server_lost(pool: &InstancePool) -> SqlError {
    SqlError::new(
        crate::protocol::error::Severity::Fatal,
        crate::protocol::error::code::CONNECTION_FAILURE,
        format!(
            "lost the connection to instance \"{}\" during the transaction",
            pool.name()
        ),
    )
}
