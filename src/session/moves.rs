//! A transaction that began on a follower — a plain BEGIN of a read-only session, or BEGIN READ ONLY — whose first
//! statement after the BEGIN must run on the leader: `SET TRANSACTION READ WRITE` (which a standby refuses, and a
//! direct connection accepts in a read-only session), a write, a read of an UNLOGGED table. It has run nothing
//! yet, so it moves, unseen: ROLLBACK on the follower, which goes back to its pool; the client's own BEGIN again on
//! the leader; then the statement, on the leader.
//!
//! Only a transaction begun by a simple Query holding nothing but the BEGIN is kept movable (its bytes are kept to
//! be sent again), until any other message of the client goes to the follower.

use super::intent::Intent;
use super::relay::{Hold, Relay};
use crate::protocol::frame::Header;
use crate::protocol::messages;
use crate::router::Wants;

/// The movable transaction of one session, if any (boxed: rare, and every session's task carries this).
#[derive(Debug, Default)]
pub struct TransactionMove(Option<Box<Movable>>);

#[derive(Debug)]
struct Movable {
    /// The Query that began the transaction on a follower.
    begin: Box<[u8]>,
    /// The transaction is moving: the BEGIN goes to the next connection attached, ahead of the client's message.
    moving: bool,
}

impl Relay {
    /// Called for every client message about to be forwarded (`at`: its position in the client buffer): keeps a
    /// lone BEGIN that starts a transaction on a follower; anything else makes the transaction unmovable.
    pub(super) fn note_transaction_start(&mut self, header: Header, intent: &Intent, at: usize) {
        let lone_begin = header.tag == b'Q'
            && self.attachment.on_follower()
            && !self.stream.in_transaction
            && intent.analysis.as_ref().is_some_and(|a| a.is_lone_begin())
            && intent.plan.as_ref().is_some_and(|(_, after)| after.in_transaction);
        if lone_begin {
            let begin = self.client_buf.get(at..at + header.frame_len()).map(Box::from);
            self.moves.0 = begin.map(|begin| Box::new(Movable { begin, moving: false }));
        } else if self.moves.0.as_ref().is_some_and(|m| !m.moving) {
            self.moves.0 = None;
        }
    }

    /// Starts moving the transaction if the message at the scan position must run on the leader and the
    /// transaction has run nothing but its BEGIN on a follower, with nothing in flight. The message then waits
    /// until the follower, rolled back, is released.
    pub(super) fn move_to_leader(&mut self, header: Header, intent: &Intent) -> bool {
        let moves = self.moves.0.as_ref().is_some_and(|m| !m.moving)
            && matches!(header.tag, b'Q' | b'P')
            && self.attachment.on_follower()
            && matches!(self.attachment.wants_here(intent.wants), Wants::Leader(_))
            && self.exchange.nothing_owed()
            && self.to_server.is_empty()
            && self.to_client.is_empty();
        if !moves {
            return false;
        }
        tracing::debug!("moving a transaction that has run nothing yet from a follower to the leader");
        if let Some(movable) = self.moves.0.as_mut() {
            movable.moving = true;
        }
        messages::query(self.to_server.insert(&mut self.client_buf), b"ROLLBACK");
        self.exchange.expect_hidden_query();
        self.held = Some(Hold::UntilReleased);
        true
    }

    /// A connection was just attached: a moving transaction's BEGIN goes first.
    pub(super) fn replay_moved_begin(&mut self) {
        if self.moves.0.as_ref().is_some_and(|m| m.moving)
            && let Some(movable) = self.moves.0.take()
        {
            self.to_server
                .insert(&mut self.client_buf)
                .extend_from_slice(&movable.begin);
            self.exchange.expect_hidden_query();
        }
    }
}
