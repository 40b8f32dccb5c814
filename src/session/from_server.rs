//! The server's side of the relay: every reply is matched to the request it answers (`replies`) — forwarded,
//! dropped (answers to pgsplit's own requests) or preceded by one pgsplit makes up — and what the replies change is
//! applied to the session: transaction status, settings, prepared statements, the read-your-writes floor (from the
//! probe's answer), and an armed read's fate. Rows and COPY data pass through unparsed, except while a read may
//! still be re-run or the probe is being answered.

use super::relay::{Relay, SessionEnd};

/// Server messages larger than this are known by their header alone and stream through: a session never holds more
/// of one in memory. The ones pgsplit reads (ReadyForQuery, ParameterStatus, its own queries' rows, an error's
/// SQLSTATE) are far smaller.
const MAX_INSPECTED: usize = 64 * 1024;
use super::cut::{self, TransactionCut};
use super::exchange::ConnState;
use super::replies::Verdict;
use crate::protocol::error::SqlError;
use crate::protocol::frame::{HEADER_LEN, Header, Look, Step};
use crate::protocol::messages::{self, TxStatus};

impl Relay {
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        self.relay_server_messages()?;
        self.apply_hidden();
        self.check_if_due();
        self.probe_if_due();
        Ok(())
    }

    fn relay_server_messages(&mut self) -> Result<(), SessionEnd> {
        let client_pid = self.attachment.client_key().pid;
        let cut_endpoint = self.cut_endpoint();
        let Some(attached) = self.attachment.attached_mut() else {
            return Ok(());
        };
        let (server, instance) = (&mut attached.conn, &attached.instance);
        let (framer, streaming) = (&mut attached.framer, &mut attached.streaming);
        loop {
            // Every reply but rows and COPY data is matched to its request; while a read may still be re-run,
            // a row's header is enough to know it has a result. What is looked at whole is small: a larger frame
            // is known by its header and streams through.
            let armed = self.retry.armed();
            let probing = self.exchange.probing();
            let checking = self.exchange.checking();
            let look = |header: Header| match header.tag {
                _ if header.body_len > MAX_INSPECTED => Look::Head,
                b'D' if probing || checking => Look::Whole,
                b'D' if armed => Look::Head,
                b'D' | b'd' => Look::Blind,
                _ => Look::Whole,
            };
            let step = framer
                .step(&server.buf[self.to_client.scanned()..], look, usize::MAX)
                .map_err(|e| SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, e)))?;
            let (header, body) = match step {
                Step::NeedMore(_) => return Ok(()),
                Step::Pass(n) => {
                    match *streaming {
                        Some(Verdict::Drop | Verdict::Replace(_)) => self.to_client.skip(&mut server.buf, n),
                        Some(Verdict::Forward) | None => self.to_client.pass(&mut server.buf, n),
                    }
                    if streaming.is_some() && framer.at_boundary() {
                        // A frame known by its header has gone through: answers due after it come now.
                        *streaming = None;
                        self.exchange.write_made(&mut self.to_client, &mut server.buf);
                    }
                    continue;
                }
                Step::Head(header) => (header, &[][..]),
                Step::Whole(header) => {
                    let at = self.to_client.scanned();
                    let body = at + HEADER_LEN..at + header.frame_len();
                    if header.tag == b'A' {
                        own_notification(&mut server.buf[body.clone()], server.cancel.pid, client_pid);
                    }
                    (header, &server.buf[body])
                }
            };
            let whole = matches!(step, Step::Whole(_));
            if !whole && matches!(header.tag, b'Z' | b'S') {
                // Small by the protocol's own rules: a server that sends one this large is not a server.
                let error = format!("message '{}' of {} bytes", header.tag as char, header.body_len);
                return Err(SessionEnd::Fatal(SqlError::server_unavailable(&instance.name, error)));
            }
            let in_transaction = self.stream.in_transaction || self.exchange.tx_status() != TxStatus::Idle;
            let dying = whole
                && header.tag == b'E'
                && cut_endpoint
                && !self.stream.pinned
                && (in_transaction || self.exchange.nothing_owed())
                && !self.retry.armed();
            if let Some(said) = dying.then(|| cut::fatal_message(body)).flatten()
                && cut::follows_ha_engine(&self.ctx)
            {
                // The server is ending the session: inside the client's transaction, the client gets the cut
                // transaction's error instead, once the connection has ended (`cut`); with nothing owed (it ended
                // the session just after answering, a leader going away), a client would take the unsolicited
                // FATAL for the end of its own connection.
                self.to_client.skip(&mut server.buf, header.frame_len());
                if in_transaction {
                    self.cut = TransactionCut::Dying(said).boxed();
                }
                continue;
            }
            if !probing && !checking {
                // pgsplit's own query's replies say nothing of the client's unit armed behind it.
                self.retry.observe(header.tag, body);
            }
            if probing && header.tag == b'D' {
                self.probe.row(body);
            }
            if checking && header.tag == b'D' {
                self.hidden.row(body);
            }
            let conn = ConnState {
                settings: &mut server.settings,
                prepared: &mut server.prepared,
            };
            let verdict = self
                .exchange
                .reply(header.tag, body, &mut self.wanted, conn)
                .map_err(|_| SessionEnd::Fatal(SqlError::protocol_violation("server sent a bad ReadyForQuery")))?;
            match header.tag {
                b'Z' if probing => {
                    let idle = self.exchange.tx_status() == TxStatus::Idle;
                    self.probe.ended(idle, &mut self.floor);
                }
                b'Z' if checking => self.hidden.answered(),
                b'S' => {
                    if let Some((name, value)) = messages::parse_parameter_status(body) {
                        // The client changed a setting (SET, RESET, SET LOCAL ending): it is now part of its
                        // session, to be carried to the next server connection it borrows.
                        self.wanted.set(name, value);
                        server.settings.set(name, value);
                        crate::pool::server::record_parameter(&mut server.params, name, value);
                        self.planner.follow(name, value);
                    }
                }
                _ => {}
            }
            if let Verdict::Replace(refusal) = verdict {
                self.exchange
                    .refusal(refusal)
                    .encode(self.to_client.insert(&mut server.buf));
            }
            if !whole {
                // Its bytes follow, forwarded or dropped as the reply's verdict says.
                *streaming = Some(verdict);
                continue;
            }
            match verdict {
                Verdict::Forward => self.to_client.pass(&mut server.buf, header.frame_len()),
                Verdict::Drop | Verdict::Replace(_) => self.to_client.skip(&mut server.buf, header.frame_len()),
            }
            self.exchange.write_made(&mut self.to_client, &mut server.buf);
            if self.retry.due() {
                // The refused attempt's replies never reach the client.
                self.to_client.discard(&mut server.buf);
                return Ok(());
            }
        }
    }

    /// Writes the answers pgsplit makes up (ParseComplete, CloseComplete) whose turn has come.
    pub(super) fn answer_made(&mut self) {
        let Some(server) = self.attachment.attached_mut() else {
            return;
        };
        self.exchange.write_made(&mut self.to_client, &mut server.conn.buf);
    }
}

/// A NotificationResponse sent by the client's own session names the server backend's pid; the client knows the
/// pid pgsplit gave it, and compares (apps ignore their own notifications): that one is rewritten, in place.
/// Notifications from other sessions keep the backend's pid, which names no client.
fn own_notification(body: &mut [u8], backend_pid: u32, client_pid: u32) {
    if let Some(pid) = body.get_mut(..4)
        && *pid == backend_pid.to_be_bytes()
    {
        pid.copy_from_slice(&client_pid.to_be_bytes());
    }
}
