//! The server's side of the relay: every reply is matched to the request it answers (`replies`) — forwarded,
//! dropped (answers to pgsplit's own requests) or preceded by one pgsplit makes up — and what the replies change is
//! applied to the session: transaction status, settings, prepared statements, the read-your-writes floor (from the
//! probe's answer), and an armed read's fate. Rows and COPY data pass through unparsed, except while a read may
//! still be re-run or the probe is being answered.

use bytes::BytesMut;

use super::outflow::Outflow;
use super::relay::{Relay, SessionEnd};
use super::replies::{Replies, Verdict};
use crate::protocol::error::SqlError;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Step};
use crate::protocol::messages::{self, TxStatus};
use crate::topology::monitor::parse_lsn;

impl Relay {
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        self.relay_server_messages()?;
        self.probe_if_due();
        Ok(())
    }

    fn relay_server_messages(&mut self) -> Result<(), SessionEnd> {
        let attached = self.server.as_mut().expect("server data implies a server");
        let (server, instance) = (&mut attached.conn, &attached.instance);
        loop {
            // Every reply but rows and COPY data is matched to its request; while a read may still be re-run,
            // every reply is looked at until its first result.
            let armed = self.retry.is_some();
            let probing = self.replies.probing();
            let step = self
                .server_framer
                .step(
                    &server.buf[self.to_client.scanned()..],
                    |tag| armed || probing || !matches!(tag, b'D' | b'd'),
                    usize::MAX,
                )
                .map_err(|e| SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, e)))?;
            let header = match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) => {
                    self.to_client.pass(&mut server.buf, n);
                    continue;
                }
                Step::Whole(header) => header,
            };
            let at = self.to_client.scanned();
            let body = &server.buf[at + HEADER_LEN..at + header.frame_len()];
            if let Some(retry) = self.retry.as_mut()
                && !retry.observe(header.tag, body)
            {
                self.retry = None;
            }
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
                    }
                }
                _ => {}
            }
            if !self.undone.is_empty() {
                for undo in self.undone.drain(..) {
                    self.statements.undo(undo, Some(&mut server.prepared));
                }
            }
            match verdict {
                Verdict::Forward => self.to_client.pass(&mut server.buf, header.frame_len()),
                Verdict::Drop => self.to_client.skip(&mut server.buf, header.frame_len()),
            }
            write_made(&mut self.replies, &mut self.to_client, &mut server.buf);
            if self.retry.as_ref().is_some_and(|r| r.due) {
                // The refused attempt's replies never reach the client.
                self.to_client.discard(&mut server.buf);
                return Ok(());
            }
            if header.tag == b'Z' && self.retry.is_some() {
                // The unit ended without a result (an empty query): nothing to re-run.
                self.retry = None;
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

/// Puts the answers pgsplit makes up whose turn has come (ParseComplete, CloseComplete) into the client's stream.
/// Inlined, like `next_made`: it runs after every reply.
#[inline]
fn write_made(replies: &mut Replies, to_client: &mut Outflow, server_buf: &mut BytesMut) {
    while let Some(tag) = replies.next_made() {
        extended::put_empty(to_client.insert(server_buf), tag);
    }
}
