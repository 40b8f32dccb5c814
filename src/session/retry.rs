//! Re-running on the leader an autocommit read that a follower refused as a write (25006, SPEC §3.5).
//!
//! A read sent to a follower at a unit boundary is *armed* — a simple Query, or an extended-protocol batch up to its
//! Sync (a batch is routed to a follower only once all of it is buffered, so all of it can be kept): its replies
//! are held back until its first result, and the client's next messages wait. If the follower answers 25006 first,
//! its replies are dropped, the statement's shape is remembered as a write, and the unit's messages are put back in
//! front of whatever the client sent since, to be scanned again with the leader as their destination; the client
//! sees only the leader's answer.

use bytes::BytesMut;

use super::intent::Intent;
use super::relay::{Relay, SessionEnd};
use crate::context::Endpoint;
use crate::protocol::error::SqlError;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, peek_header, read_cstr};
use crate::protocol::messages;
use crate::router::{self, RouteReason, Wants};

/// Longest unit kept for a possible re-run; longer ones are not retried (the follower's error reaches the client).
const MAX_RETRY_UNIT: usize = 64 * 1024;

/// What is needed to run a unit again on the leader (its messages are in `Relay::retry_unit`).
pub struct Retry {
    /// Every message of the unit has been forwarded (its Query, or its batch through Sync): the client's next
    /// messages wait for the outcome.
    pub complete: bool,
    /// Statements the batch's Parses create, taken back before it runs again.
    created: Vec<Box<[u8]>>,
    /// A statement the batch binds without parsing it (`""`: the unnamed one), remembered as a write if refused.
    bound: Option<Box<[u8]>>,
    /// The follower answered 25006: discard its replies up to ReadyForQuery, then re-run.
    refused: bool,
    /// ReadyForQuery of a refused unit has arrived: re-run now.
    pub due: bool,
}

impl Retry {
    /// Looks at one reply of the armed read; returns whether it may still be re-run.
    pub fn observe(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            b'E' if messages::error_code(body) == Some("25006") => self.refused = true,
            b'Z' if self.refused => self.due = true,
            // Descriptions, notices and parameter changes come before results; keep holding.
            b'T' | b'1' | b'2' | b't' | b'n' | b'S' | b'N' | b'Z' => {}
            _ if self.refused => {}
            _ => return false,
        }
        true
    }
}

impl Relay {
    /// Keeps what is needed to re-run an autocommit read that went to a follower, should it turn out to write:
    /// a Query (not one pgsplit rewrote: a renamed `EXECUTE`), or an extended-protocol batch without Close.
    pub(super) fn arm_retry(&mut self, header: Header, intent: &Intent) {
        if self.endpoint != Endpoint::Main || intent.wants != Wants::Follower(RouteReason::Read) || !self.on_follower()
        {
            return;
        }
        let at = self.to_server.scanned();
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
            b'P' | b'B' if !self.stream.in_transaction => match self.batch_to_sync(at) {
                Some(batch) => batch,
                None => return,
            },
            _ => return,
        };
        if len > MAX_RETRY_UNIT {
            return;
        }
        self.retry_unit.clear();
        self.retry_unit.extend_from_slice(&self.client_buf[at..at + len]);
        self.retry = Some(Retry {
            complete: header.tag == b'Q',
            created,
            bound,
            refused: false,
            due: false,
        });
    }

    /// The buffered batch starting at `at`, through its Sync. None if it closes anything (a Close run twice is not
    /// the same) or is not all buffered.
    fn batch_to_sync(&self, at: usize) -> Option<Batch> {
        let (mut created, mut parsed, mut bound) = (Vec::new(), Vec::new(), None);
        let mut end = at;
        loop {
            let header = peek_header(&self.client_buf[end..]).ok()??;
            let body = self.client_buf.get(end + HEADER_LEN..end + header.frame_len())?;
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
                    if !name.is_empty() && !self.statements.has(name) {
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

    /// The follower refused the unit as a write: remember its shape, give the follower connection back, and put
    /// the unit back to be scanned again, bound for the leader. The client has seen nothing of the first attempt.
    pub(super) fn rerun_on_leader(&mut self, retry: Retry) -> Result<(), SessionEnd> {
        // The shape is worked out only now, when a follower has refused: reads that run never pay for it.
        if let Some(sql) = unit_sql(&self.retry_unit) {
            self.ctx.known_writes.remember(router::fingerprint(sql));
        }
        if let Some(name) = &retry.bound {
            self.statements.mark_known_write(name);
        }
        for name in &retry.created {
            self.statements.forget(name);
        }
        self.release_if_done();
        if self.server.is_some() {
            // Still attached (the follower connection was not quiet): never mix units; fail this one visibly.
            return Err(SessionEnd::Fatal(SqlError::protocol_violation(
                "cannot re-run a refused read",
            )));
        }
        tracing::debug!("re-running a unit a follower refused (25006) on the leader");
        // Everything scanned before the refused unit was already written, so it goes first, ahead of whatever the
        // client sent since (still unscanned).
        debug_assert!(self.to_server.is_empty());
        let mut buf = BytesMut::with_capacity(self.retry_unit.len() + self.client_buf.len());
        buf.extend_from_slice(&self.retry_unit);
        buf.extend_from_slice(&self.client_buf);
        self.client_buf = buf;
        self.rerun = true;
        Ok(())
    }
}

/// A unit to keep: its length, the statements its Parses create, the statement it binds without parsing.
struct Batch {
    len: usize,
    created: Vec<Box<[u8]>>,
    bound: Option<Box<[u8]>>,
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
