//! Re-running on the leader an autocommit read that a follower refused as a write (25006, SPEC §3.5) — or as
//! something a standby cannot do (0A000: an UNLOGGED or temporary relation the classifier could not see, through a
//! view say; a serializable transaction), which the leader can — and, when an HA engine (Patroni) may put a new
//! leader in place, a unit the leader cut before answering it (SPEC §8).
//!
//! A read sent to a follower at a unit boundary is *armed* — a simple Query, or an extended-protocol batch up to its
//! Sync (a batch is routed to a follower only once all of it is buffered, so all of it can be kept): its replies
//! are held back until its first result, and the client's next messages wait. If the follower answers 25006 first,
//! its replies are dropped, the statement's shape is remembered as a write, and the unit's messages are put back in
//! front of whatever the client sent since, to be scanned again with the leader as their destination; the client
//! sees only the leader's answer.
//!
//! A simple Query that starts a unit on the leader (an autocommit statement, or the first statement of a
//! transaction) is armed the same way. If the leader's first answer is that its session is being terminated
//! (57P01 on a shutdown or a postmaster's death, 57P02 after a crash) or the connection ends with no answer, the
//! connection is dropped and the unit goes through the gate again — where writes wait for the new leader to be
//! confirmed — and runs there; the client sees only that answer. An armed read whose follower session ends the
//! same way before answering (the follower is shutting down, or its backend was terminated while the connection was
//! pooled) is dropped with its connection and routed again, with nothing learnt about its statement. A unit re-runs
//! at most [`MAX_RERUNS`] times in a row.

use bytes::BytesMut;

use super::intent::Intent;
use super::plan::StreamState;
use super::relay::{Relay, SessionEnd};
use super::statements::Statements;
use crate::context::Endpoint;
use crate::protocol::error::SqlError;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, peek_header, read_cstr};
use crate::protocol::messages;
use crate::router::{self, RouteReason, Wants};

/// Longest unit kept for a possible re-run; longer ones are not retried (the follower's error reaches the client).
const MAX_RETRY_UNIT: usize = 64 * 1024;
/// Re-runs in a row of units an instance cut: past it, the instance's answer reaches the client.
const MAX_RERUNS: u8 = 8;

/// The 25006 net of one session: at most one armed read, the messages kept to run it again, and whether the unit
/// at the scan position is such a re-run. Owns its fields; the relay asks and tells it.
#[derive(Default)]
pub struct RetryPolicy {
    armed: Option<Armed>,
    /// The armed read's messages (a Query, or a batch through Sync), as the client sent them; one buffer reused
    /// for the session's life.
    unit: BytesMut,
    /// The unit at the scan position is a refused read put back to run again: it goes to the leader.
    rerun: bool,
    /// Cut units re-run in a row (reset when a leader unit shows a result).
    reruns: u8,
    /// An HA engine names the leader (the Patroni source, fixed until a restart): a unit that starts on the leader
    /// is armed too, since a new leader may take it.
    leader_may_move: bool,
}

/// What is needed to run a unit again on the leader (its messages are in `RetryPolicy::unit`).
struct Armed {
    /// Every message of the unit has been forwarded (its Query, or its batch through Sync): the client's next
    /// messages wait for the outcome.
    complete: bool,
    /// Statements the batch's Parses create, taken back before it runs again.
    created: Vec<Box<[u8]>>,
    /// A statement the batch binds without parsing it (`""`: the unnamed one), remembered as a write if refused.
    bound: Option<Box<[u8]>>,
    /// The follower answered 25006: discard its replies up to ReadyForQuery, then re-run.
    refused: bool,
    /// A follower's session ended before it answered (57P01, 57P02, or the connection closed): re-run it wherever
    /// it is routed now, learning nothing about its statement.
    gone: bool,
    /// ReadyForQuery of a refused unit has arrived: re-run now.
    due: bool,
    /// A unit on the leader (else on a follower).
    on_leader: bool,
    /// The stream's state before the unit, restored for a re-run of a cut unit.
    before: StreamState,
}

/// A unit the follower refused, to run again on the leader.
pub struct Refused<'a> {
    /// The unit's messages as the client sent them.
    pub unit: &'a [u8],
    pub created: Vec<Box<[u8]>>,
    pub bound: Option<Box<[u8]>>,
}

impl RetryPolicy {
    pub fn new(leader_may_move: bool) -> RetryPolicy {
        RetryPolicy {
            leader_may_move,
            ..RetryPolicy::default()
        }
    }

    /// Whether units that start on the leader are armed ([`RetryPolicy::arm_leader`]).
    #[inline]
    pub fn arms_leader_units(&self) -> bool {
        self.leader_may_move
    }

    /// A read is armed: its replies are held back from the client.
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// The armed unit is all forwarded: the client's next messages wait for its outcome.
    #[inline]
    pub fn holds_scan(&self) -> bool {
        self.armed.as_ref().is_some_and(|a| a.complete)
    }

    /// Sync forwarded: an armed batch is complete.
    pub fn batch_complete(&mut self) {
        if let Some(armed) = self.armed.as_mut() {
            armed.complete = true;
        }
    }

    /// The refused unit's ReadyForQuery has arrived: it is to run again now.
    #[inline]
    pub fn due(&self) -> bool {
        self.armed.as_ref().is_some_and(|a| a.due)
    }

    /// The unit at the scan position is a re-run (then it is one no longer: it is being routed).
    pub fn take_rerun(&mut self) -> bool {
        std::mem::take(&mut self.rerun)
    }

    /// Looks at one reply of the armed read (`body` empty when only its header was seen): disarms once it shows a
    /// result, or when the unit ends without one.
    #[inline]
    pub fn observe(&mut self, tag: u8, body: &[u8]) {
        let Some(armed) = self.armed.as_mut() else {
            return;
        };
        let keep = match tag {
            // The leader's session is being terminated before it answered: its connection is going away.
            b'E' if armed.on_leader && matches!(messages::error_code(body), Some("57P01" | "57P02")) => {
                armed.refused = true;
                armed.due = true;
                true
            }
            // The follower's session is ending before it answered: no ReadyForQuery will come.
            b'E' if matches!(messages::error_code(body), Some("57P01" | "57P02")) => {
                armed.refused = true;
                armed.gone = true;
                armed.due = true;
                true
            }
            b'E' if !armed.on_leader && matches!(messages::error_code(body), Some("25006" | "0A000")) => {
                armed.refused = true;
                true
            }
            b'Z' if armed.refused => {
                armed.due = true;
                true
            }
            // The unit ended without a result (an empty query): nothing to re-run.
            b'Z' => false,
            // Descriptions, notices and parameter changes come before results; keep holding.
            b'T' | b'1' | b'2' | b't' | b'n' | b'S' | b'N' => true,
            _ => armed.refused,
        };
        if !keep {
            if self.armed.as_ref().is_some_and(|a| a.on_leader) {
                self.reruns = 0;
            }
            self.armed = None;
        }
    }

    /// Keeps a simple Query that starts a unit on the leader, to run it again should the leader cut it before
    /// answering; `stream` is the stream's state before it.
    pub fn arm_leader(&mut self, header: Header, buf: &[u8], at: usize, stream: StreamState) {
        if header.tag != b'Q' || self.reruns >= MAX_RERUNS {
            return;
        }
        let Some(unit) = buf
            .get(at..at + header.frame_len())
            .filter(|unit| unit.len() <= MAX_RETRY_UNIT)
        else {
            return;
        };
        self.unit.clear();
        self.unit.extend_from_slice(unit);
        self.armed = Some(Armed {
            complete: true,
            created: Vec::new(),
            bound: None,
            refused: false,
            gone: false,
            due: false,
            on_leader: true,
            before: stream,
        });
    }

    /// The server connection ended: an armed unit (nothing of it reached the client) is to run again. Returns
    /// whether one is.
    pub fn cut(&mut self) -> bool {
        let Some(armed) = self.armed.as_mut() else {
            return false;
        };
        armed.refused = true;
        armed.gone = !armed.on_leader;
        armed.due = true;
        true
    }

    /// Whether the armed unit is to run again as a cut one ([`Relay::rerun_cut`]), not as a refused read.
    fn cut_due(&self) -> bool {
        self.armed.as_ref().is_some_and(|a| a.on_leader || a.gone)
    }

    /// Takes a unit that was cut, for its re-run: its messages and the stream's state before it.
    fn take_cut(&mut self) -> Option<(&[u8], StreamState)> {
        let stream = self.armed.as_ref().filter(|a| a.due && (a.on_leader || a.gone))?.before;
        self.armed = None;
        self.reruns += 1;
        Some((&self.unit, stream))
    }

    /// Keeps what is needed to re-run the unit starting at `at` in `buf` (a Query, or an extended-protocol batch
    /// without Close) should the follower it runs on refuse it. `statements` says which names the client has.
    pub fn arm(
        &mut self,
        header: Header,
        intent: &Intent,
        (buf, at): (&[u8], usize),
        statements: &Statements,
        stream: StreamState,
    ) {
        if self.reruns >= MAX_RERUNS {
            return;
        }
        let Batch { len, created, bound } = match header.tag {
            b'Q' => {
                let simple = intent.analysis.as_ref().is_some_and(|a| a.prepared.is_none());
                let stays_out = intent.plan.as_ref().is_some_and(|(_, stream)| !stream.in_transaction);
                if !simple || !stays_out {
                    return;
                }
                Batch {
                    len: header.frame_len(),
                    created: Vec::new(),
                    bound: None,
                }
            }
            b'P' | b'B' => match batch_to_sync(buf, at, statements) {
                Some(batch) => batch,
                None => return,
            },
            _ => return,
        };
        let Some(unit) = buf.get(at..at + len).filter(|unit| unit.len() <= MAX_RETRY_UNIT) else {
            return;
        };
        self.unit.clear();
        self.unit.extend_from_slice(unit);
        self.armed = Some(Armed {
            complete: header.tag == b'Q',
            created,
            bound,
            refused: false,
            gone: false,
            due: false,
            on_leader: false,
            before: stream,
        });
    }

    /// Takes the refused unit for its re-run, which the next unit routed is.
    pub fn take_refused(&mut self) -> Option<Refused<'_>> {
        let armed = self.armed.take().filter(|a| a.due && !a.on_leader && !a.gone)?;
        self.rerun = true;
        Some(Refused {
            unit: &self.unit,
            created: armed.created,
            bound: armed.bound,
        })
    }
}

/// A unit to keep: its length, the statements its Parses create, the statement it binds without parsing.
struct Batch {
    len: usize,
    created: Vec<Box<[u8]>>,
    bound: Option<Box<[u8]>>,
}

/// The buffered batch starting at `at`, through its Sync. None if it closes anything (a Close run twice is not the
/// same) or is not all buffered.
fn batch_to_sync(buf: &[u8], at: usize, statements: &Statements) -> Option<Batch> {
    let (mut created, mut parsed, mut bound) = (Vec::new(), Vec::new(), None);
    let mut end = at;
    loop {
        let header = peek_header(buf.get(end..)?).ok()??;
        let body = buf.get(end + HEADER_LEN..end + header.frame_len())?;
        end += header.frame_len();
        match header.tag {
            b'S' => {
                return Some(Batch {
                    len: end - at,
                    created,
                    bound,
                });
            }
            b'C' => return None,
            b'P' => {
                let (name, _) = extended::parse_fields(body)?;
                if !name.is_empty() && !statements.has(name) {
                    created.push(name.into());
                }
                parsed.push(name);
            }
            b'B' => {
                let (_, name, _) = extended::bind_fields(body)?;
                if !parsed.contains(&name) {
                    bound = Some(name.into());
                }
            }
            _ => {}
        }
    }
}

impl Relay {
    /// Arms an autocommit read that went to a follower from the main endpoint at a unit boundary — or, when an HA
    /// engine names the leader, a simple Query that starts a unit on a freshly attached leader connection.
    pub(super) fn arm_retry(&mut self, header: Header, intent: &Intent) {
        if *self.attachment.endpoint() != Endpoint::Main {
            return;
        }
        if !self.attachment.on_follower() {
            // Nothing owed but, perhaps, the probe of the last commit's position (its replies go to pgsplit).
            let owed = self.exchange.nothing_owed() || self.exchange.only_probe();
            let fresh = owed && self.to_client.is_empty() && !self.stream.pinned;
            if fresh && self.retry.arms_leader_units() {
                let at = self.to_server.scanned();
                self.retry.arm_leader(header, &self.client_buf, at, self.stream);
            }
            return;
        }
        if intent.wants != Wants::Follower(RouteReason::Read) {
            return;
        }
        if matches!(header.tag, b'P' | b'B') && self.stream.in_transaction {
            return;
        }
        let at = self.to_server.scanned();
        let (statements, stream) = (self.exchange.statements(), self.stream);
        self.retry
            .arm(header, intent, (&self.client_buf, at), statements, stream);
    }

    /// The follower refused the unit as a write: remember its shape, give the follower connection back, and put
    /// the unit back to be scanned again, bound for the leader. The client has seen nothing of the first attempt.
    pub(super) fn rerun_on_leader(&mut self) -> Result<(), SessionEnd> {
        if self.retry.cut_due() {
            return self.rerun_cut();
        }
        let Some(refused) = self.retry.take_refused() else {
            return Ok(());
        };
        // The shape is worked out only now, when a follower has refused: reads that run never pay for it.
        if let Some(sql) = unit_sql(refused.unit) {
            self.ctx.known_writes.remember(router::fingerprint(sql));
        }
        if let Some(name) = &refused.bound {
            self.exchange.statements_mut().mark_known_write(name);
        }
        for name in &refused.created {
            self.exchange.statements_mut().forget(name);
        }
        // Everything scanned before the refused unit was already written, so it goes first, ahead of whatever the
        // client sent since (still unscanned).
        let mut buf = BytesMut::with_capacity(refused.unit.len() + self.client_buf.len());
        buf.extend_from_slice(refused.unit);
        self.release_if_done();
        if self.attachment.is_attached() {
            // Still attached (the follower connection was not quiet): never mix units; fail this one visibly.
            return Err(SessionEnd::Fatal(SqlError::protocol_violation(
                "cannot re-run a refused read",
            )));
        }
        tracing::debug!("re-running a unit a follower refused (25006) on the leader");
        debug_assert!(self.to_server.is_empty());
        buf.extend_from_slice(&self.client_buf);
        self.client_buf = buf;
        Ok(())
    }
}

/// The SQL of a kept unit: a Query's text, or the first Parse's statement.
fn unit_sql(unit: &[u8]) -> Option<&str> {
    let header = peek_header(unit).ok()??;
    let body = unit.get(HEADER_LEN..header.frame_len())?;
    let sql = match header.tag {
        b'Q' => read_cstr(body)?.0,
        _ => {
            let mut at = 0;
            loop {
                let header = peek_header(&unit[at..]).ok()??;
                let body = unit.get(at + HEADER_LEN..at + header.frame_len())?;
                if header.tag == b'P' {
                    break extended::definition_query(extended::parse_fields(body)?.1);
                }
                at += header.frame_len();
            }
        }
    };
    std::str::from_utf8(sql).ok()
}

impl Relay {
    /// The instance cut the armed unit before answering it (the leader, or a follower whose session ended): its
    /// connection is dropped (never returned), what it owed is forgotten, and the unit is put back in front of
    /// whatever the client sent since, to be routed again — through the gate, which holds writes until a new
    /// leader is confirmed.
    pub(super) fn rerun_cut(&mut self) -> Result<(), SessionEnd> {
        let Some((unit, stream)) = self.retry.take_cut() else {
            return Ok(());
        };
        let mut buf = BytesMut::with_capacity(unit.len() + self.client_buf.len());
        buf.extend_from_slice(unit);
        let instance = match self.attachment.take() {
            Some(mut attached) => {
                self.to_client.discard(&mut attached.conn.buf);
                attached.instance.name.clone()
            }
            None => "?".into(),
        };
        // What was scanned of the unit and not yet written is part of the copy just taken.
        self.to_server.discard(&mut self.client_buf);
        if self.exchange.probing() {
            // The last commit's position was being read: reads go to the leader until one is known.
            self.floor.commit_unknown();
        }
        self.exchange.connection_gone();
        self.probe.lapse();
        self.set_stream(stream);
        tracing::info!(%instance, "an instance cut a unit before answering it; running it again");
        buf.extend_from_slice(&self.client_buf);
        self.client_buf = buf;
        Ok(())
    }
}
