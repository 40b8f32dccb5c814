//! Messages about a client's prepared statements that pgsplit answers without a server connection, when the
//! client holds none: a Parse of a statement a server has already prepared for a client of the same kind (same
//! text and parameter types, same user, database and settings), a Describe of one whose description a server gave
//! such a client, and a Close of a named statement (which pgsplit always answers itself). The statement is
//! prepared, unseen, on the connection that later runs it (`statements`).
//!
//! Why: a client that prepares with a blocking call (pgbench `-M prepared`, one thread for many clients) must not
//! wait for a connection while the clients of its own thread hold every one mid-transaction; and a client's first
//! use of a statement costs no round trip. Anything else — a statement no server has validated for this kind of
//! client, a description never seen, the unnamed statement, a portal — needs a server, as before.

use bytes::BytesMut;

use super::exchange::client_kind;
use super::intent::Intent;
use super::relay::{Relay, SessionEnd};
use crate::protocol::extended::{self, Target};
use crate::protocol::frame::{HEADER_LEN, Header};
use crate::router::{RouteReason, Wants};

impl Relay {
    /// Answers the Parse, Describe or Close at the scan position without a server, if it can be answered exactly;
    /// the caller consumes it then. Only called with no server connection attached (so nothing is in flight and
    /// the answer is in order).
    pub(super) async fn answer_from_memory(&mut self, header: Header, intent: &mut Intent) -> Result<bool, SessionEnd> {
        if intent.wants == Wants::Leader(RouteReason::Retry25006) {
            // A unit a follower refused, put back to run again: it goes to the leader whole.
            return Ok(false);
        }
        let at = self.to_server.scanned();
        let Some(body) = self.client_buf.get(at + HEADER_LEN..at + header.frame_len()) else {
            return Ok(false);
        };
        // Worked out only for a named statement: the unnamed one (most of the extended protocol) is never answered
        // here, and the kind hashes every setting.
        let kind = |relay: &Relay| client_kind(relay.exchange.owner(), &relay.wanted);
        let mut out = BytesMut::new();
        match header.tag {
            b'P' => {
                let Some((name, definition)) = extended::parse_fields(body) else {
                    return Ok(false);
                };
                if name.is_empty() {
                    return Ok(false);
                }
                let kind = kind(self);
                let Some(statement) = self.ctx.statements.find(definition).filter(|s| s.known_to(kind)) else {
                    return Ok(false);
                };
                let Some(analysis) = intent.analysis.take() else {
                    return Ok(false);
                };
                if !self.exchange.statements_mut().adopt(name, statement, analysis) {
                    return Ok(false);
                }
                extended::put_empty(&mut out, b'1');
            }
            b'D' => {
                let Some(Target::Statement(name)) = extended::target(body) else {
                    return Ok(false);
                };
                let Some(statement) = self.exchange.statements().get(name) else {
                    return Ok(false);
                };
                let Some(description) = statement.server.description(kind(self)) else {
                    return Ok(false);
                };
                out.extend_from_slice(&description);
            }
            b'C' => {
                let Some(Target::Statement(name)) = extended::target(body) else {
                    return Ok(false);
                };
                if name.is_empty() {
                    return Ok(false);
                }
                // On the server it stays prepared for whoever uses it next; closing a name the client does not
                // have succeeds, as on Postgres.
                self.exchange.statements_mut().forget(name);
                extended::put_empty(&mut out, b'3');
            }
            _ => return Ok(false),
        }
        self.send_to_client(|o| o.extend_from_slice(&out)).await?;
        Ok(true)
    }
}
