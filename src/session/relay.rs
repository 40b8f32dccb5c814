//! The hot path: one client's frames to a borrowed server connection and the replies back, as bytes.
//!
//! Frames are forwarded unparsed; only tags that change state are looked at (Query, Parse and Bind are planned and
//! routed, messages naming prepared statements renamed (`statements`), Terminate handled; from the server, every
//! message but DataRow and CopyData is matched to the request it answers (`from_server`)). Both directions are
//! non-blocking: a write that cannot finish at once waits for readiness while reads go on, so a client pipelining a
//! large batch never deadlocks against a server streaming results. Everything read in one go is forwarded in one
//! write (`outflow`), through each side's transport, plain or TLS (`sockets`).
//!
//! Each unit of work — an autocommit statement, an extended-protocol batch, or a whole transaction — is routed
//! when it starts: provable reads to a follower, the rest to the leader. A unit that must go to the leader while
//! the client's previous read still runs on a follower waits for it, so the client's order is kept. In
//! transaction mode the server connection goes back to its pool at ReadyForQuery `I` once nothing is outstanding
//! (unless the session is pinned; after a unit that may write, once the commit's WAL position has been read:
//! `read_your_writes`); in session mode it stays until the client leaves.

use std::io::ErrorKind;
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::analyses::TextRules;
use super::cancel::CancelSlot;
use super::cut::TransactionCut;
use super::exchange::{Exchange, Outbound};
use super::floor::ReadFloor;
use super::hidden::HiddenCheck;
use super::intent::{Intent, Planner, SessionView};
use super::local::LocalStatements;
use super::moves::TransactionMove;
use super::outflow::Outflow;
use super::plan::StreamState;
use super::read_your_writes::Probe;
use super::retry::RetryPolicy;
use super::server::{Attachment, RouteRequest};
use super::sockets::Event;
use super::stop::StopSignal;
use crate::context::{Endpoint, GaugeCount, SessionContext};
use crate::pool::{LoginInfo, Settings};
use crate::protocol::error::SqlError;
use crate::protocol::frame::{FrameError, Framer, HEADER_LEN, Header, Look, Step};
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::transport::Transport;
use crate::router::{FunctionSet, RouteReason, Wants};

/// Stop reading a side while this much of its data waits to be written to the other.
pub(super) const BACKPRESSURE: usize = 256 * 1024;

/// Requests whose answers may be owed at once; past it, the client's next messages wait for answers to come.
const MAX_OWED: usize = 2048;

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

pub struct Relay {
    pub(super) ctx: Arc<SessionContext>,
    /// Taken from the config at login: a reload changes it for new clients only.
    max_message_size: usize,
    /// The settings this client's session has, applied to each server connection it borrows.
    pub(super) wanted: Settings,
    /// Works out what each client message asks for.
    pub(super) planner: Planner,
    pub(super) stop: StopSignal,

    /// The client's connection: plain, or the TLS session it logged in with.
    pub(super) client: Transport,
    /// Bytes from the client, scanned up to `to_server.scanned()`.
    pub(super) client_buf: BytesMut,
    /// The length of the client message being read, once its header is in: reading goes on until it is whole.
    client_need: usize,
    pub(super) client_framer: Framer,
    /// Client bytes due to the server.
    pub(super) to_server: Outflow,

    /// The server connection the session holds, and how it gets one.
    pub(super) attachment: Attachment,
    /// Server bytes due to the client (the source is the server connection's buffer).
    pub(super) to_client: Outflow,

    /// What the server owes the client, the client's prepared statements, the open batch, the transaction status.
    pub(super) exchange: Exchange,
    /// Transaction and pin state as of the last message forwarded.
    pub(super) stream: StreamState,
    /// Counts the client as pinned while `stream.pinned`.
    pin_count: Option<GaugeCount>,
    /// Client messages wait (see [`Hold`]).
    pub(super) held: Option<Hold>,
    /// After a failed checkout: drop extended-protocol messages until Sync, as a server would after an error.
    pub(super) skip_until_sync: bool,
    pub(super) terminating: bool,
    /// An autocommit read on a follower whose replies are held back until its first result, so that a 25006
    /// refusal can be re-run on the leader unseen.
    pub(super) retry: RetryPolicy,
    pub(super) out: BytesMut,
    /// The WAL position this client's reads must see (read-your-writes).
    pub(super) floor: ReadFloor,
    /// Reads the commit's WAL position on the leader connection once it is idle after a unit that may write.
    pub(super) probe: Probe,
    /// Statements the client prepared that pgsplit answers (`SHOW pgsplit.…` through the extended protocol).
    pub(super) local_statements: LocalStatements,
    /// A transaction begun on a follower that may still move to the leader.
    pub(super) moves: TransactionMove,
    /// The check owed after a unit that may have changed session state unseen.
    pub(super) hidden: HiddenCheck,
    /// A transaction the server connection took with it (`cut`).
    pub(super) cut: Option<Box<TransactionCut>>,
}

/// Why client messages wait before being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// A unit waits until the connection serving the previous one is released (see `switches_side`).
    UntilReleased,
    /// A statement pgsplit answers itself waits until nothing is in flight.
    UntilQuiet,
}

/// What a client brings from its login to the relay.
pub struct Arrival {
    pub login: LoginInfo,
    /// Its settings (startup parameters and `options`).
    pub wanted: Settings,
    pub text_rules: TextRules,
    /// Which functions write, in its database.
    pub functions: Arc<FunctionSet>,
}

impl Relay {
    pub fn new(
        ctx: Arc<SessionContext>,
        endpoint: Endpoint,
        arrival: Arrival,
        cancel: Arc<CancelSlot>,
        client: Transport,
    ) -> Self {
        let Arrival {
            login,
            wanted,
            text_rules,
            functions,
        } = arrival;
        let config = ctx.topology.load().config.clone();
        Relay {
            max_message_size: config.proxy.max_message_size,
            planner: Planner::new(functions, text_rules),
            stop: StopSignal::new(ctx.shutdown.clone()),
            // Before the login moves into the attachment.
            exchange: Exchange::new(config.proxy.max_prepared_statements, &login.key),
            attachment: Attachment::new(ctx.topology.clone(), config.proxy.pool_mode, endpoint, login, cancel),
            ctx,
            wanted,
            client,
            client_buf: BytesMut::new(),
            client_need: 0,
            client_framer: Framer::default(),
            to_server: Outflow::default(),
            to_client: Outflow::default(),
            stream: StreamState::default(),
            pin_count: None,
            held: None,
            skip_until_sync: false,
            terminating: false,
            retry: RetryPolicy::new(config.patroni().is_some()),
            out: BytesMut::new(),
            floor: ReadFloor::default(),
            probe: Probe::default(),
            local_statements: LocalStatements::default(),
            moves: TransactionMove::default(),
            hidden: HiddenCheck::default(),
            cut: None,
        }
    }

    /// Runs until the client leaves or a fatal error; a fatal error is sent to the client before returning (and
    /// TLS's close_notify). Takes the relay by reference: by value, the task would hold the relay twice (once as
    /// the argument, once moved).
    pub async fn run(&mut self) -> SessionEnd {
        let end = self.relay().await;
        // Boxed: rare, and its state would otherwise weigh on every session's task.
        Box::pin(self.goodbye(&end)).await;
        let quiet = self.is_quiet();
        let pinned = self.stream.pinned;
        let deadline = self.ctx.config().health.timeout;
        self.attachment.return_server(quiet, pinned, deadline).await;
        end
    }

    async fn relay(&mut self) -> SessionEnd {
        loop {
            // A probe in flight is answered first, so the connection goes back to the pool clean.
            if self.terminating && self.to_server.is_empty() && !self.exchange.probing() {
                return SessionEnd::ClientGone;
            }
            let result = match self.next_event().await {
                Event::ClientReadable(Ok(())) => match self.read_from_client() {
                    Ok(0) => return SessionEnd::ClientGone,
                    Ok(_) => self.on_client_data().await,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(SessionEnd::ClientIo(e)),
                },
                Event::ServerReadable(Ok(())) => match self.read_from_server() {
                    None => continue,
                    Some(Ok(0)) => self.server_lost().await,
                    Some(Ok(_)) => self.on_server_data(),
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                    Some(Err(_)) => self.server_lost().await,
                },
                Event::ServerReadable(Err(_)) | Event::ServerWritable(Err(_)) => self.server_lost().await,
                Event::ClientReadable(Err(e)) | Event::ClientWritable(Err(e)) => Err(SessionEnd::ClientIo(e)),
                Event::ClientWritable(Ok(())) | Event::ServerWritable(Ok(())) => Ok(()),
                Event::Shutdown => return SessionEnd::Fatal(SqlError::shutting_down()),
            };
            if let Err(end) = result.and_then(|()| self.flush()) {
                return end;
            }
            self.spare_client_buf();
            if self.retry.due()
                && let Err(end) = self.rerun_on_leader().and_then(|()| self.flush())
            {
                return end;
            }
            self.release_if_done();
            let released = match self.held {
                Some(Hold::UntilReleased) => self.attachment.no_unit_running(),
                Some(Hold::UntilQuiet) => self.can_answer_locally(),
                None => false,
            };
            if released {
                self.held = None;
            }
            if !self.scan_paused()
                && self.client_buf.len() > self.to_server.scanned()
                && let Err(end) = self.on_client_data().await.and_then(|()| self.flush())
            {
                return end;
            }
        }
    }

    /// The one rule for reading the client: only while what it sent and pgsplit has not dealt with stays small.
    /// Bytes due to the server are bounded by `BACKPRESSURE`; so are bytes not yet scanned — except, while scanning
    /// goes on, the rest of the one message being read (`client_need`, at most `max_message_size`). While scanning
    /// waits (a unit held back, an armed read's outcome, too many answers owed or due to the client), the client
    /// is simply not read further: its own socket buffer and then TCP hold it back.
    pub(super) fn reads_client(&self) -> bool {
        if self.terminating || self.to_server.pending() >= BACKPRESSURE {
            return false;
        }
        let unscanned = self.client_buf.len() - self.to_server.scanned();
        // Under the limit whatever scanning does (the usual case: nothing unscanned between messages); over it,
        // only the rest of the message being read, and only while scanning goes on.
        unscanned < BACKPRESSURE || (unscanned < self.client_need && !self.scan_paused())
    }

    /// Scans newly read client bytes, routing each unit of work at its first message.
    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        while !self.terminating && !self.scan_paused() {
            let step = self.client_framer.step(
                &self.client_buf[self.to_server.scanned()..],
                |header| if header.tag == b'd' { Look::Blind } else { Look::Whole },
                self.max_message_size,
            )?;
            match step {
                Step::NeedMore(frame_len) => {
                    self.client_need = frame_len;
                    return Ok(());
                }
                Step::Pass(n) if self.attachment.is_attached() => self.to_server.pass(&mut self.client_buf, n),
                // CopyData with no COPY running: a server ignores it, and so do we.
                Step::Pass(n) => self.client_buf.advance(n),
                // Not asked for on this side; its bytes come as Pass steps.
                Step::Head(_) => {}
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
        if self.cut.as_ref().is_some_and(|cut| cut.answers()) && !self.attachment.is_attached() {
            // The client's transaction was cut with its connection: answered here until the block ends.
            // Boxed: rare, and its state would otherwise weigh on every session's task.
            return Box::pin(self.answer_cut(header)).await;
        }
        if matches!(header.tag, b'Q' | b'P') {
            self.planner
                .refresh_functions(&self.ctx.functions, &self.attachment.login().key.database)
                .await;
        }
        let mut intent = self.intent(header);
        if !self.attachment.is_attached() && self.retry.take_rerun() {
            intent.wants = Wants::Leader(RouteReason::Retry25006);
        }
        // A statement pgsplit answers starts a unit of its own; inside an unfinished extended-protocol batch the
        // client may wait for nothing, so the server answers.
        if !self.exchange.batch_open() && self.starts_local_answer(header, &intent) {
            if !self.can_answer_locally() {
                self.held = Some(Hold::UntilQuiet);
                return Ok(());
            }
            if let Some(local) = intent
                .analysis
                .as_ref()
                .and_then(|a| a.local.clone())
                .filter(|_| header.tag == b'Q')
            {
                self.client_buf.advance(len);
                return self.answer_locally(local).await;
            }
            if self.answer_local_batch().await? {
                return Ok(());
            }
        }
        if header.tag == b'P' && self.client_buf.get(self.to_server.scanned() + HEADER_LEN) == Some(&0) {
            // The client's unnamed statement is the one this Parse prepares on a server.
            self.local_statements.unnamed_replaced();
        }
        if self.attachment.kept_idle() {
            let pinned = self.stream.pinned;
            self.attachment
                .resume_unit(&self.ctx.gate, intent.wants, pinned)
                .await?;
        }
        if !self.attachment.is_attached() {
            if self.answer_without_server(header, &mut intent).await? {
                self.client_buf.advance(len);
                return Ok(());
            }
            let request = RouteRequest {
                wants: intent.wants,
                wanted: &self.wanted,
                floor: &mut self.floor,
            };
            let routed = self.attachment.route_and_attach(&self.ctx, request).await;
            if let Err(error) = routed {
                return self.refuse(header, error).await;
            }
            self.replay_moved_begin();
            self.arm_retry(header, &intent);
        } else if self.at_unit_boundary() && (self.switches_side(intent.wants) || self.paused_here()) {
            self.held = Some(Hold::UntilReleased);
            return Ok(());
        } else if self.move_to_leader(header, &intent) {
            return Ok(());
        } else if self.at_unit_boundary() && self.exchange.only_probe() {
            // A unit behind the probe of the last commit's position, on the same leader connection: armed as on a
            // fresh one, should the leader go before answering it.
            self.arm_retry(header, &intent);
        }
        if matches!(header.tag, b'Q' | b'B' | b'F')
            && !self.attachment.on_follower()
            && matches!(self.attachment.wants_here(intent.wants), Wants::Leader(_))
        {
            self.probe.owe();
        }
        self.note_transaction_start(header, &intent, self.to_server.scanned());
        if let Some((plan, stream)) = &intent.plan {
            self.note_hidden(&plan.changes);
            self.set_stream(*stream);
        }
        self.forward(header, intent);
        self.answer_made();
        if header.tag == b'S' {
            self.retry.batch_complete();
        }
        Ok(())
    }

    /// Sends the message on (renamed, answered here, or as it is) and enters what the server owes for it.
    fn forward(&mut self, header: Header, intent: Intent) {
        let Some(server) = self.attachment.attached_mut() else {
            // Units are routed, and a server attached, before any of their messages is forwarded.
            return;
        };
        let to = Outbound {
            flow: &mut self.to_server,
            source: &mut self.client_buf,
            cache: &mut server.conn.prepared,
        };
        self.exchange.forward(header, intent, to, &self.ctx.statements);
    }

    /// What the message at the scan position asks for.
    fn intent(&self, header: Header) -> Intent {
        let session = SessionView {
            statements: self.exchange.statements(),
            wanted: &self.wanted,
            stream: self.stream,
            known_writes: &self.ctx.known_writes,
            starts_unit: !self.attachment.is_attached() || self.at_unit_boundary(),
        };
        let buf = &self.client_buf[self.to_server.scanned()..];
        self.planner.intent(header, buf, &session)
    }

    /// The stream moves past a statement; a client that becomes pinned, or stops being pinned, is counted.
    pub(super) fn set_stream(&mut self, stream: StreamState) {
        if stream.pinned != self.pin_count.is_some() {
            self.pin_count = stream.pinned.then(|| GaugeCount::pinned(&self.ctx.gauges));
        }
        self.stream = stream;
    }

    /// The message is a Query, or starts an extended-protocol batch, about a statement pgsplit answers.
    fn starts_local_answer(&self, header: Header, intent: &Intent) -> bool {
        match header.tag {
            b'Q' | b'P' => intent
                .analysis
                .as_ref()
                .and_then(|a| a.local.as_ref())
                .is_some_and(|local| self.takes_local(header.tag, local)),
            b'B' | b'D' | b'C' => {
                let at = self.to_server.scanned();
                let body = &self.client_buf[at + HEADER_LEN..at + header.frame_len()];
                self.local_statements.named_in(header.tag, body)
            }
            _ => false,
        }
    }

    /// Client messages wait: for the follower running the previous unit to be released, for an armed read's
    /// outcome, or while too many answers are owed (each costs memory until the server answers) or due to a client
    /// that does not read them (answers pgsplit makes up, such as CloseComplete, need no server to pile up).
    fn scan_paused(&self) -> bool {
        self.held.is_some()
            || self.retry.holds_scan()
            || self.exchange.owed() >= MAX_OWED
            || self.to_client.pending() >= BACKPRESSURE
    }

    /// Idle between transactions with nothing outstanding in either direction (and no check of the connection
    /// owed: `hidden`).
    pub(super) fn is_quiet(&self) -> bool {
        !self.hidden.is_owed()
            && self.exchange.settled()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.client_framer.at_boundary()
            && self.attachment.server_at_boundary()
    }

    /// Once a unit is over and nothing is in flight: the server connection goes back to its pool, or stops
    /// counting as running work; a probe still owed lapses (probes are sent before this, when they can be).
    pub(super) fn release_if_done(&mut self) {
        if self.attachment.release_if_done(self.is_quiet(), self.stream.pinned) {
            self.probe.lapse();
        }
    }

    /// Between units: no extended batch open and no transaction open at this point of the stream.
    pub(super) fn at_unit_boundary(&self) -> bool {
        !self.exchange.batch_open() && !self.stream.in_transaction
    }

    /// A unit pipelined behind the last one that must not run on the attached connection: one for the leader
    /// behind a follower's unit, or a read behind the leader's last write whose position is being read (it would
    /// run on the leader only because it came early; once the position is known it may go to a follower).
    fn switches_side(&self, wants: Wants) -> bool {
        match self.attachment.wants_here(wants) {
            Wants::Leader(_) => self.attachment.on_follower(),
            Wants::Follower(_) => self.exchange.only_probe(),
        }
    }

    /// The attached connection's direction is paused: a unit pipelined behind the last one must not start on it.
    fn paused_here(&self) -> bool {
        let direction = if self.attachment.on_follower() {
            crate::topology::gate::Direction::Reads
        } else {
            crate::topology::gate::Direction::Writes
        };
        self.ctx.gate.is_paused(direction)
    }

    /// Messages that need no server when none is attached: a lone Sync is answered here, Flush and stray COPY
    /// messages are dropped, statements pgsplit knows are prepared, described and closed (`known`). Returns whether
    /// the frame was consumed.
    async fn answer_without_server(&mut self, header: Header, intent: &mut Intent) -> Result<bool, SessionEnd> {
        match header.tag {
            b'S' => {
                self.skip_until_sync = false;
                self.send_to_client(|out| messages::ready_for_query(out, TxStatus::Idle))
                    .await?;
                Ok(true)
            }
            b'H' | b'c' | b'f' => Ok(true),
            b'P' | b'D' | b'C' if !self.skip_until_sync => self.answer_from_memory(header, intent).await,
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
}
