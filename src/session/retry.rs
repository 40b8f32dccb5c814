//! Re-running on the leader an autocommit read that a follower refused as a write (25006, SPEC §3.5).
//!
//! A simple-protocol read sent to a follower is *armed*: its replies are held back until its first result. If the
//! follower answers 25006 first, its replies are dropped, the statement's shape is remembered as a write, and the
//! same Query runs on the leader; the client sees only the leader's answer.

use bytes::BytesMut;

use super::plan::Change;
use super::relay::{Relay, SessionEnd};
use super::replies::Expected;
use crate::protocol::error::SqlError;
use crate::protocol::frame::{HEADER_LEN, Header, read_cstr};
use crate::protocol::messages::{self, TxStatus};
use crate::proxy::Endpoint;
use crate::router::{self, RouteReason, Wants};

/// Longest Query kept for a possible re-run; longer ones are not retried (the follower's error reaches the client).
const MAX_RETRY_QUERY: usize = 64 * 1024;

/// What is needed to run a unit again on the leader (its Query message is in `Relay::retry_query`).
pub struct Retry {
    changes: Vec<Change>,
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
    /// Keeps what is needed to re-run an autocommit read that went to a follower, should it turn out to write.
    /// A Query pgsplit rewrote (an `EXECUTE` renamed) is not armed.
    pub(super) fn arm_retry(&mut self, header: Header, wants: Wants, in_transaction: bool, changes: &[Change]) {
        if header.tag != b'Q'
            || self.endpoint != Endpoint::Main
            || wants != Wants::Follower(RouteReason::Read)
            || in_transaction
            || !self.on_follower()
            || header.frame_len() > MAX_RETRY_QUERY
        {
            return;
        }
        let at = self.to_server.scanned();
        self.retry_query.clear();
        self.retry_query
            .extend_from_slice(&self.client_buf[at..at + header.frame_len()]);
        self.retry = Some(Retry {
            changes: changes.to_vec(),
            refused: false,
            due: false,
        });
    }

    /// The follower refused the unit as a write: remember its shape, give the follower connection back, and run
    /// the same Query on the leader. The client has seen nothing of the first attempt.
    pub(super) async fn rerun_on_leader(&mut self, retry: Retry) -> Result<(), SessionEnd> {
        // The shape is worked out only now, when a follower has refused: reads that run never pay for it.
        let sql = read_cstr(&self.retry_query[HEADER_LEN..]).and_then(|(sql, _)| std::str::from_utf8(sql).ok());
        self.ctx.known_writes.remember(router::fingerprint(sql.unwrap_or("")));
        self.release_if_done();
        if self.server.is_some() {
            // Still attached (the follower connection was not quiet): never mix units; fail this one visibly.
            return Err(SessionEnd::Fatal(SqlError::protocol_violation(
                "cannot re-run a refused read",
            )));
        }
        // A write after all: it waits at a write pause like any other.
        if let Err(error) = self.route_and_attach(Wants::Leader(RouteReason::Retry25006)).await {
            return self
                .send_to_client(|out| {
                    error.encode(out);
                    messages::ready_for_query(out, TxStatus::Idle);
                })
                .await;
        }
        tracing::debug!("re-running a statement a follower refused (25006) on the leader");
        // Everything scanned before the refused Query was already written, so it goes first, ahead of whatever
        // the client sent since (still unscanned).
        debug_assert!(self.to_server.is_empty());
        let mut buf = BytesMut::with_capacity(self.retry_query.len() + self.client_buf.len());
        buf.extend_from_slice(&self.retry_query);
        buf.extend_from_slice(&self.client_buf);
        self.client_buf = buf;
        self.to_server.pass(&mut self.client_buf, self.retry_query.len());
        self.replies.push(Expected::ready(retry.changes));
        Ok(())
    }
}
