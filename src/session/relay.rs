//! The hot path: one client's frames to a borrowed server connection and the replies back, as bytes.
//!
//! Frames are forwarded unparsed; only tags that change state are looked at (Query and Parse are planned and
//! routed, Sync and the extended-protocol messages counted, Terminate handled; from the server: ReadyForQuery,
//! ParameterStatus, ErrorResponse). Both directions are non-blocking: a write that cannot finish at once waits for
//! readiness while reads go on, so a client pipelining a large batch never deadlocks against a server streaming
//! results. Everything read in one go is forwarded in one write.
//!
//! Each unit of work — an autocommit statement, an extended-protocol batch, or a whole transaction — is routed
//! when it starts: provable reads to a follower, the rest to the leader. A unit that must go to the leader while
//! the client's previous read still runs on a follower waits for it, so the client's order is kept. In
//! transaction mode the server connection goes back to its pool at ReadyForQuery `I` once nothing is outstanding
//! (unless the session is pinned); in session mode it stays until the client leaves.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::cancel::CancelSlot;
use super::plan::{Change, Plan, StreamState, plan_sql};
use crate::config::{Fallback, PoolMode};
use crate::pool::server::READ_CHUNK;
use crate::pool::{ConnectError, InstancePool, LoginInfo, ServerConn, Settings};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::frame::{FrameError, Framer, HEADER_LEN, Header, Step, read_cstr};
use crate::protocol::login::LoginError;
use crate::protocol::messages::{self, TxStatus};
use crate::proxy::{Context, Endpoint};
use crate::router::{self, FunctionSet, Reason, RouteReason, Wants};
use crate::topology::{Instance, Role, WorkGuard};

/// Stop reading a side while this much of its data waits to be written to the other.
const BACKPRESSURE: usize = 256 * 1024;

/// How often a session looks for new writing functions in its database's catalog.
const FUNCTIONS_RECHECK: Duration = Duration::from_secs(1);

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

/// A borrowed server connection and the instance it belongs to (counted as outstanding work while held).
struct Attached {
    conn: ServerConn,
    work: WorkGuard,
}

pub struct Relay {
    ctx: Arc<Context>,
    endpoint: Endpoint,
    login: LoginInfo,
    /// The settings this client's session has, applied to each server connection it borrows.
    wanted: Settings,
    /// Which functions write, for this client's database; re-checked against the catalog now and then.
    functions: Arc<FunctionSet>,
    functions_checked: Instant,
    cancel: Arc<CancelSlot>,
    shutdown: watch::Receiver<bool>,

    client: TcpStream,
    /// Bytes from the client; the first `to_server` are scanned and due to the server.
    client_buf: BytesMut,
    client_framer: Framer,
    to_server: usize,

    server: Option<Attached>,
    server_framer: Framer,
    /// The first `to_client` bytes of the server's buffer are scanned and due to the client.
    to_client: usize,

    /// Queries, Syncs and FunctionCalls sent whose ReadyForQuery has not come back.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    batch_open: bool,
    tx_status: TxStatus,
    /// Transaction and pin state as of the last message forwarded.
    stream: StreamState,
    /// A unit for the leader waits until the follower serving the previous one is released.
    held: bool,
    /// Setting changes of each request awaiting its ReadyForQuery, applied if no error came back.
    inflight_changes: VecDeque<Vec<Change>>,
    /// Changes of the Parses in the current extended-protocol batch, until its Sync.
    batch_changes: Vec<Change>,
    /// An ErrorResponse arrived since the last ReadyForQuery.
    error_seen: bool,
    /// After a failed checkout: drop extended-protocol messages until Sync, as a server would after an error.
    skip_until_sync: bool,
    terminating: bool,
    /// Where the last unit ran and why (`SHOW pgsplit.route`).
    last_route: Option<(Arc<str>, RouteReason)>,
    /// An autocommit read on a follower whose replies are held back until its first result, so that a 25006
    /// refusal can be re-run on the leader unseen.
    retry: Option<Retry>,
    /// The armed read's Query message, as the client sent it; one buffer reused for the session's life.
    retry_query: BytesMut,
    out: BytesMut,
}

/// What is needed to run a unit again on the leader (its Query message is in `Relay::retry_query`).
struct Retry {
    changes: Vec<Change>,
    /// The follower answered 25006: discard its replies up to ReadyForQuery, then re-run.
    refused: bool,
    /// ReadyForQuery of a refused unit has arrived: re-run now.
    due: bool,
}

/// Longest Query kept for a possible re-run; longer ones are not retried (the follower's error reaches the client).
const MAX_RETRY_QUERY: usize = 64 * 1024;

enum Event {
    ClientReadable(std::io::Result<()>),
    ServerReadable(std::io::Result<()>),
    ClientWritable(std::io::Result<()>),
    ServerWritable(std::io::Result<()>),
    Shutdown,
}

impl Relay {
    pub fn new(
        ctx: Arc<Context>,
        endpoint: Endpoint,
        login: LoginInfo,
        wanted: Settings,
        functions: Arc<FunctionSet>,
        cancel: Arc<CancelSlot>,
        client: TcpStream,
    ) -> Self {
        Relay {
            functions,
            functions_checked: Instant::now(),
            shutdown: ctx.shutdown.clone(),
            ctx,
            endpoint,
            login,
            wanted,
            cancel,
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
            stream: StreamState::default(),
            held: false,
            inflight_changes: VecDeque::new(),
            batch_changes: Vec::new(),
            error_seen: false,
            skip_until_sync: false,
            terminating: false,
            last_route: None,
            retry: None,
            retry_query: BytesMut::new(),
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
                Event::ClientReadable(Ok(())) => match read_now(&self.client, &mut self.client_buf) {
                    Ok(0) => return SessionEnd::ClientGone,
                    Ok(_) => self.on_client_data().await,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(SessionEnd::ClientIo(e)),
                },
                Event::ServerReadable(Ok(())) => {
                    let server = self.server.as_mut().expect("server events imply a server");
                    match read_now(&server.conn.stream, &mut server.conn.buf) {
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
            if self.retry.as_ref().is_some_and(|r| r.due) {
                let retry = self.retry.take().expect("checked above");
                if let Err(end) = self.rerun_on_leader(retry).await.and_then(|()| self.flush()) {
                    return end;
                }
            }
            self.release_if_done();
            if self.held && self.server.is_none() {
                self.held = false;
            }
            if !self.scan_paused()
                && self.client_buf.len() > self.to_server
                && let Err(end) = self.on_client_data().await.and_then(|()| self.flush())
            {
                return end;
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let read_client =
            !self.terminating && self.to_server < BACKPRESSURE && !(self.held && self.client_buf.len() >= BACKPRESSURE);
        if read_client {
            self.client_buf.reserve(READ_CHUNK);
        }
        let quiet = self.is_quiet();
        // Replies held for a possible re-run are not due yet: waiting to write them would spin.
        let client_due = self.to_client > 0 && self.retry.is_none();
        match self.server.as_mut() {
            Some(server) => {
                if quiet && *self.shutdown.borrow() {
                    return Event::Shutdown;
                }
                let server = &mut server.conn;
                let read_server = self.to_client < BACKPRESSURE;
                if read_server {
                    server.buf.reserve(READ_CHUNK);
                }
                tokio::select! {
                    biased;
                    r = server.stream.writable(), if self.to_server > 0 => Event::ServerWritable(r),
                    r = self.client.writable(), if client_due => Event::ClientWritable(r),
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

    /// Scans newly read client bytes, routing each unit of work at its first message.
    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        while !self.terminating && !self.scan_paused() {
            let step = self.client_framer.step(
                &self.client_buf[self.to_server..],
                |tag| tag != b'd',
                self.ctx.config.proxy.max_message_size,
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
        if matches!(header.tag, b'Q' | b'P') && self.functions_checked.elapsed() >= FUNCTIONS_RECHECK {
            self.functions = self.ctx.functions.for_database(&self.login.key.database).await;
            self.functions_checked = Instant::now();
        }
        let planned = self.plan_frame(header);
        if let Some((plan, _)) = &planned
            && plan.show_route
            && self.can_answer_locally()
        {
            self.client_buf.advance(len);
            return self.answer_show_route().await;
        }
        let wants = match &planned {
            Some((plan, _)) => plan.wants,
            // FunctionCall, or a batch that starts at Bind/Describe/Execute/Close: the statement it uses was
            // prepared earlier on some connection; the leader is the safe place.
            None => Wants::Leader(RouteReason::Write(Reason::Execute)),
        };
        if self.server.is_none() {
            if self.answer_without_server(header.tag).await? {
                self.client_buf.advance(len);
                return Ok(());
            }
            if let Err(error) = self.route_and_attach(wants).await {
                return self.refuse(header, error).await;
            }
            if let Some((plan, stream)) = &planned {
                self.arm_retry(header, plan, stream);
            }
        } else if self.at_unit_boundary() && self.on_follower() && matches!(self.wants_here(wants), Wants::Leader(_)) {
            self.held = true;
            return Ok(());
        }
        if let Some((plan, stream)) = planned {
            self.stream = stream;
            match header.tag {
                b'Q' => self.inflight_changes.push_back(plan.changes),
                _ => self.batch_changes.extend(plan.changes),
            }
        }
        match header.tag {
            b'Q' => self.pending += 1,
            b'F' => {
                self.pending += 1;
                self.inflight_changes.push_back(Vec::new());
            }
            b'S' => {
                self.pending += 1;
                self.batch_open = false;
                self.inflight_changes.push_back(std::mem::take(&mut self.batch_changes));
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => self.batch_open = true,
            _ => {}
        }
        self.to_server += len;
        Ok(())
    }

    /// Plans a Query or Parse (routing request and session effects), without committing its effects yet.
    fn plan_frame(&self, header: Header) -> Option<(Plan, StreamState)> {
        let body = &self.client_buf[self.to_server + HEADER_LEN..self.to_server + header.frame_len()];
        let sql = match header.tag {
            b'Q' => read_cstr(body).map(|(sql, _)| sql),
            b'P' => read_cstr(body)
                .and_then(|(_, rest)| read_cstr(rest))
                .map(|(sql, _)| sql),
            _ => return None,
        };
        let mut stream = self.stream;
        let plan = match sql.and_then(|sql| std::str::from_utf8(sql).ok()) {
            Some(sql) => {
                let mut plan = plan_sql(sql, &self.functions, &self.wanted, &mut stream);
                if matches!(plan.wants, Wants::Follower(_)) && self.ctx.known_writes.contains(sql) {
                    plan.wants = Wants::Leader(RouteReason::KnownWrite);
                }
                plan
            }
            None => Plan {
                wants: Wants::Leader(RouteReason::Write(Reason::Unparsable)),
                changes: Vec::new(),
                show_route: false,
            },
        };
        Some((plan, stream))
    }

    /// Keeps what is needed to re-run an autocommit read that went to a follower, should it turn out to write.
    fn arm_retry(&mut self, header: Header, plan: &Plan, stream: &StreamState) {
        let autocommit_read = plan.wants == Wants::Follower(RouteReason::Read) && !stream.in_transaction;
        let main = self.endpoint == Endpoint::Main;
        if header.tag != b'Q'
            || !main
            || !autocommit_read
            || !self.on_follower()
            || header.frame_len() > MAX_RETRY_QUERY
        {
            return;
        }
        self.retry_query.clear();
        self.retry_query
            .extend_from_slice(&self.client_buf[self.to_server..self.to_server + header.frame_len()]);
        self.retry = Some(Retry {
            changes: plan.changes.clone(),
            refused: false,
            due: false,
        });
    }

    /// The follower refused the unit as a write: remember its shape, give the follower connection back, and run
    /// the same Query on the leader. The client has seen nothing of the first attempt.
    async fn rerun_on_leader(&mut self, retry: Retry) -> Result<(), SessionEnd> {
        // The shape is worked out only now, when a follower has refused: reads that run never pay for it.
        let sql = read_cstr(&self.retry_query[HEADER_LEN..]).and_then(|(sql, _)| std::str::from_utf8(sql).ok());
        self.ctx.known_writes.remember(router::fingerprint(sql.unwrap_or("")));
        self.release_if_done();
        let leader = self.ctx.topology.load().leader.clone();
        if self.server.is_some() {
            // Still attached (the follower connection was not quiet): never mix units; fail this one visibly.
            return Err(SessionEnd::Fatal(SqlError::protocol_violation(
                "cannot re-run a refused read",
            )));
        }
        if let Err(error) = self.attach(&leader).await {
            return self
                .send_to_client(|out| {
                    error.encode(out);
                    messages::ready_for_query(out, TxStatus::Idle);
                })
                .await;
        }
        leader.count_route(RouteReason::Retry25006);
        self.last_route = Some((leader.name.clone(), RouteReason::Retry25006));
        tracing::debug!(instance = %leader.name, "re-running a statement a follower refused (25006) on the leader");
        // Everything scanned before the refused Query was already written, so it goes first, ahead of whatever
        // the client sent since (still unscanned).
        debug_assert_eq!(self.to_server, 0);
        self.to_server = self.retry_query.len();
        let mut buf = BytesMut::with_capacity(self.retry_query.len() + self.client_buf.len());
        buf.extend_from_slice(&self.retry_query);
        buf.extend_from_slice(&self.client_buf);
        self.client_buf = buf;
        self.pending += 1;
        self.inflight_changes.push_back(retry.changes);
        Ok(())
    }

    /// Client messages wait: for the follower running the previous unit to be released, or for an armed read's
    /// outcome.
    fn scan_paused(&self) -> bool {
        self.held || self.retry.is_some()
    }

    /// Between units: no extended batch open and no transaction open at this point of the stream.
    fn at_unit_boundary(&self) -> bool {
        !self.batch_open && !self.stream.in_transaction
    }

    fn on_follower(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|s| s.work.instance().role == Role::Follower)
    }

    /// A pool's own endpoint sends everything to its followers. In session mode the main endpoint keeps each
    /// client on one leader connection for its whole life: a session cannot be split across instances.
    fn wants_here(&self, wants: Wants) -> Wants {
        match (&self.endpoint, wants) {
            (Endpoint::Pool(_), Wants::Leader(reason)) => Wants::Follower(reason),
            (Endpoint::Main, Wants::Follower(_)) if self.ctx.config.proxy.pool_mode == PoolMode::Session => {
                Wants::Leader(RouteReason::Pinned)
            }
            (_, wants) => wants,
        }
    }

    async fn route_and_attach(&mut self, wants: Wants) -> Result<(), SqlError> {
        let wants = self.wants_here(wants);
        let decision = {
            let topology = self.ctx.topology.load();
            let (pool, fallback) = match &self.endpoint {
                Endpoint::Main => (
                    topology.read_pool.map(|i| &*topology.pools[i]),
                    self.ctx.config.routing.fallback,
                ),
                Endpoint::Pool(name) => (
                    topology.pools.iter().find(|p| p.name == *name).map(|p| &**p),
                    Fallback::Error,
                ),
            };
            router::route(&topology, pool, wants, fallback)?
        };
        let (instance, reason) = match self.attach(&decision.instance).await {
            Ok(()) => (decision.instance, decision.reason),
            // A follower that cannot take the read: the leader can, unless this endpoint serves followers only.
            Err(error) if decision.instance.role == Role::Follower && self.may_fall_back() => {
                tracing::debug!(instance = %decision.instance.name, %error, "follower unavailable; reading on the leader");
                let leader = self.ctx.topology.load().leader.clone();
                self.attach(&leader).await?;
                (leader, RouteReason::Fallback)
            }
            Err(error) => return Err(error),
        };
        instance.count_route(reason);
        tracing::debug!(instance = %instance.name, reason = reason.as_str(), "routed");
        self.last_route = Some((instance.name.clone(), reason));
        Ok(())
    }

    fn may_fall_back(&self) -> bool {
        matches!(self.endpoint, Endpoint::Main) && self.ctx.config.routing.fallback == Fallback::Leader
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

    /// Nothing in flight: pgsplit may answer a statement itself without disturbing the server's replies.
    fn can_answer_locally(&self) -> bool {
        self.server.is_none() || (self.pending == 0 && !self.batch_open && self.to_server == 0 && self.to_client == 0)
    }

    async fn answer_show_route(&mut self) -> Result<(), SessionEnd> {
        let route = match &self.last_route {
            Some((instance, reason)) => format!("instance={instance} reason={}", reason.as_str()),
            None => "none".to_owned(),
        };
        let status = if self.server.is_some() {
            self.tx_status
        } else {
            TxStatus::Idle
        };
        self.send_to_client(|out| {
            messages::row_description(out, &["pgsplit.route"]);
            messages::data_row(out, &[&route]);
            messages::command_complete(out, "SHOW");
            messages::ready_for_query(out, status);
        })
        .await
    }

    async fn attach(&mut self, instance: &Arc<Instance>) -> Result<(), SqlError> {
        let checkout_timeout = self.ctx.config.server.checkout_timeout;
        let conn = borrow(&instance.pool, &self.login, &self.wanted, checkout_timeout).await?;
        self.cancel.set(Some(conn.cancel.clone()));
        self.server = Some(Attached {
            conn,
            work: instance.begin_work(),
        });
        self.server_framer = Framer::default();
        Ok(())
    }

    fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        let attached = self.server.as_mut().expect("server data implies a server");
        let (server, instance) = (&mut attached.conn, attached.work.instance());
        loop {
            // While a read may still be re-run, every reply is looked at until its first result.
            let armed = self.retry.is_some();
            let step = self
                .server_framer
                .step(
                    &server.buf[self.to_client..],
                    |tag| armed || matches!(tag, b'Z' | b'S' | b'E'),
                    usize::MAX,
                )
                .map_err(|e| SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, e)))?;
            let header = match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) => {
                    self.to_client += n;
                    continue;
                }
                Step::Whole(header) => header,
            };
            let body = &server.buf[self.to_client + HEADER_LEN..self.to_client + header.frame_len()];
            if let Some(retry) = self.retry.as_mut() {
                match header.tag {
                    b'E' if messages::error_code(body) == Some("25006") => retry.refused = true,
                    b'Z' if retry.refused => retry.due = true,
                    // Descriptions, notices and parameter changes come before results; keep holding.
                    b'T' | b'1' | b'2' | b't' | b'n' | b'S' | b'N' | b'Z' => {}
                    _ if retry.refused => {}
                    _ => self.retry = None,
                }
            }
            match header.tag {
                b'Z' => {
                    self.tx_status = body.first().copied().and_then(TxStatus::from_byte).ok_or_else(|| {
                        SessionEnd::Fatal(SqlError::protocol_violation("server sent a bad ReadyForQuery"))
                    })?;
                    self.pending = self.pending.saturating_sub(1);
                    let changes = self.inflight_changes.pop_front().unwrap_or_default();
                    if !std::mem::take(&mut self.error_seen) {
                        for change in &changes {
                            change.apply(&mut self.wanted);
                            change.apply(&mut server.settings);
                        }
                    }
                }
                b'E' => self.error_seen = true,
                b'S' => {
                    if let Some((name, value)) = messages::parse_parameter_status(body) {
                        // The client changed a setting (SET, RESET, SET LOCAL ending): it is now part of its
                        // session, to be carried to the next server connection it borrows.
                        self.wanted.set(name, value);
                        server.settings.set(name, value);
                    }
                }
                _ => {}
            }
            self.to_client += header.frame_len();
            if self.retry.as_ref().is_some_and(|r| r.due) {
                // The refused attempt's replies never reach the client.
                server.buf.advance(self.to_client);
                self.to_client = 0;
                return Ok(());
            }
            if header.tag == b'Z' && self.retry.is_some() {
                // The unit ended without a result (an empty query): nothing to re-run.
                self.retry = None;
            }
        }
    }

    /// Writes whatever each side can take now without waiting.
    fn flush(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let to_server = write_now(&server.conn.stream, &mut self.client_buf, &mut self.to_server);
        let to_client = match self.retry {
            // Held back until the read shows a result (or is re-run on the leader).
            Some(_) => Ok(()),
            None => write_now(&self.client, &mut server.conn.buf, &mut self.to_client),
        };
        if to_server.is_err() {
            return Err(self.lose_server());
        }
        to_client.map_err(SessionEnd::ClientIo)
    }

    /// In transaction mode, gives the server connection back once the transaction is over and nothing is in flight.
    fn release_if_done(&mut self) {
        if self.ctx.config.proxy.pool_mode == PoolMode::Transaction
            && !self.stream.pinned
            && self.server.is_some()
            && self.is_quiet()
        {
            let Attached { conn, work } = self.server.take().expect("checked above");
            self.cancel.set(None);
            if conn.buf.is_empty() {
                work.instance().pool.release(conn);
            } else {
                // Unsolicited bytes after ReadyForQuery belong to nobody; never hand them to another client.
                work.instance().pool.discard(conn);
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

    /// At the end of a session: a clean connection goes back to the pool (after `DISCARD ALL` in session mode or
    /// when pinned, so no state leaks to the next client), anything else is closed.
    async fn return_server(&mut self) {
        let Some(Attached { mut conn, work }) = self.server.take() else {
            return;
        };
        self.cancel.set(None);
        let clean = self.is_quiet() && conn.buf.is_empty();
        let keeps_state = self.ctx.config.proxy.pool_mode == PoolMode::Session || self.stream.pinned;
        let reusable = clean && (!keeps_state || conn.run_own("DISCARD ALL").await.is_ok());
        if reusable {
            if keeps_state {
                conn.settings = Settings::default();
            }
            work.instance().pool.release(conn);
        } else {
            work.instance().pool.discard(conn);
        }
    }

    /// The server connection failed: it is closed, never returned, and the client is told.
    fn lose_server(&mut self) -> SessionEnd {
        let instance = match self.server.take() {
            Some(Attached { conn, work }) => {
                self.cancel.set(None);
                work.instance().pool.discard(conn);
                work.instance().name.clone()
            }
            None => "?".into(),
        };
        SessionEnd::Fatal(SqlError::new(
            Severity::Fatal,
            code::CONNECTION_FAILURE,
            format!("lost the connection to instance \"{instance}\" during the transaction"),
        ))
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

/// Reads what the socket has into `buf`'s spare capacity without blocking. A read that leaves spare room means
/// the socket is drained, so tokio is told to clear its readiness now (as if the read had said "would block"),
/// saving the empty read it would otherwise need; tokio keeps any readiness that arrived after this read.
fn read_now(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
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
