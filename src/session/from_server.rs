//! The server's side of the relay: every reply is matched to the request it answers (`replies`) — forwarded,
//! dropped (answers to pgsplit's own requests) or preceded by one pgsplit makes up — and what the replies change is
//! applied to the session: transaction status, settings, prepared statements, the read-your-writes floor (from the
//! probe's answer), and an armed read's fate. Rows and COPY data pass through unparsed, except while a read may
//! still be re-run or the probe is being answered.

use bytes::BytesMut;

use super::outflow::Outflow;
use super::relay::{Relay, SessionEnd};

/// Server messages larger than this are known by their header alone and stream through: a session never holds more
/// of one in memory. The ones pgsplit reads (ReadyForQuery, ParameterStatus, its own queries' rows, an error's
/// SQLSTATE) are far smaller.
const MAX_INSPECTED: usize = 64 * 1024;
use super::replies::{Refusal, Replies, Verdict};
use super::statements::{Statements, prepared_statement_limit};
use crate::protocol::error::SqlError;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, Look, Step};
use crate::protocol::messages::{self, TxStatus};
use crate::topology::monitor::parse_lsn;

impl Relay {
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        self.relay_server_messages()?;
        self.probe_if_due();
        Ok(())
    }

    fn relay_server_messages(&mut self) -> Result<(), SessionEnd> {
        let Some(attached) = self.server.as_mut() else {
            return Ok(());
        };
        let (server, instance) = (&mut attached.conn, &attached.instance);
        loop {
            // Every reply but rows and COPY data is matched to its request; while a read may still be re-run,
            // a row's header is enough to know it has a result. What is looked at whole is small: a larger frame
            // is known by its header and streams through.
            let armed = self.retry.armed();
            let probing = self.replies.probing();
            let look = |header: Header| match header.tag {
                _ if header.body_len > MAX_INSPECTED => Look::Head,
                b'D' if probing => Look::Whole,
                b'D' if armed => Look::Head,
                b'D' | b'd' => Look::Blind,
                _ => Look::Whole,
            };
            let step = self
                .server_framer
                .step(&server.buf[self.to_client.scanned()..], look, usize::MAX)
                .map_err(|e| SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, e)))?;
            let (header, body) = match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) => {
                    match self.streaming {
                        Some(Verdict::Drop | Verdict::Replace(_)) => self.to_client.skip(&mut server.buf, n),
                        Some(Verdict::Forward) | None => self.to_client.pass(&mut server.buf, n),
                    }
                    if self.streaming.is_some() && self.server_framer.at_boundary() {
                        // A frame known by its header has gone through: answers due after it come now.
                        self.streaming = None;
                        write_made(&mut self.replies, &mut self.to_client, &mut server.buf);
                    }
                    continue;
                }
                Step::Head(header) => (header, &[][..]),
                Step::Whole(header) => {
                    let at = self.to_client.scanned();
                    (header, &server.buf[at + HEADER_LEN..at + header.frame_len()])
                }
            };
            let whole = matches!(step, Step::Whole(_));
            if !whole && matches!(header.tag, b'Z' | b'S') {
                // Small by the protocol's own rules: a server that sends one this large is not a server.
                let error = format!("message '{}' of {} bytes", header.tag as char, header.body_len);
                return Err(SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, error)));
            }
            self.retry.observe(header.tag, body);
            if probing && header.tag == b'D' {
                self.probe_reading = messages::first_column(body).and_then(parse_lsn);
            }
            let mut ended = None;
            let verdict = self.replies.on_reply(header.tag, &mut self.undone, &mut ended);
            match header.tag {
                b'Z' => {
                    self.tx_status = body.first().copied().and_then(TxStatus::from_byte).ok_or_else(|| {
                        SessionEnd::Fatal(SqlError::protocol_violation("server sent a bad ReadyForQuery"))
                    })?;
                    if let Some(ended) = ended {
                        for change in &ended.changes {
                            change.apply(&mut self.wanted);
                            change.apply(&mut server.settings);
                        }
                        if ended.discards_statements {
                            self.statements.clear();
                            server.prepared.clear();
                        }
                    }
                    if probing {
                        match self.probe_reading.take() {
                            Some(lsn) if self.tx_status == TxStatus::Idle => self.floor.committed(lsn),
                            _ => self.floor.commit_unknown(),
                        }
                    }
                }
                b'S' => {
                    if let Some((name, value)) = messages::parse_parameter_status(body) {
                        // The client changed a setting (SET, RESET, SET LOCAL ending): it is now part of its
                        // session, to be carried to the next server connection it borrows.
                        self.wanted.set(name, value);
                        server.settings.set(name, value);
                        self.text_rules.follow(name, value);
                    }
                }
                _ => {}
            }
            if !self.undone.is_empty() {
                for undo in self.undone.drain(..) {
                    self.statements.undo(undo, Some(&mut server.prepared));
                }
            }
            if let Verdict::Replace(refusal) = verdict {
                refused(refusal, &self.statements).encode(self.to_client.insert(&mut server.buf));
            }
            if !whole {
                // Its bytes follow, forwarded or dropped as the reply's verdict says.
                self.streaming = Some(verdict);
                continue;
            }
            match verdict {
                Verdict::Forward => self.to_client.pass(&mut server.buf, header.frame_len()),
                Verdict::Drop | Verdict::Replace(_) => self.to_client.skip(&mut server.buf, header.frame_len()),
            }
            write_made(&mut self.replies, &mut self.to_client, &mut server.buf);
            if self.retry.due() {
                // The refused attempt's replies never reach the client.
                self.to_client.discard(&mut server.buf);
                return Ok(());
            }
        }
    }

    /// Writes the answers pgsplit makes up (ParseComplete, CloseComplete) whose turn has come.
    pub(super) fn answer_made(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        write_made(&mut self.replies, &mut self.to_client, &mut server.conn.buf);
    }
}

/// The error a client gets for a request pgsplit refused.
fn refused(refusal: Refusal, statements: &Statements) -> SqlError {
    match refusal {
        Refusal::PreparedStatementLimit => prepared_statement_limit(statements.max()),
    }
}

/// Puts the answers pgsplit makes up whose turn has come (ParseComplete, CloseComplete) into the client's stream.
/// Inlined, like `next_made`: it runs after every reply.
#[inline]
fn write_made(replies: &mut Replies, to_client: &mut Outflow, server_buf: &mut BytesMut) {
    while let Some(tag) = replies.next_made() {
        extended::put_empty(to_client.insert(server_buf), tag);
    }
}
