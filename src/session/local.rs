//! Statements pgsplit answers itself (SPEC §3.8): `SHOW pgsplit.route`, `SHOW pgsplit.last_write_lsn` and `SET` /
//! `RESET pgsplit.min_lsn`, and `pg_terminate_backend` / `pg_cancel_backend` of a pid pgsplit issued (`signal`),
//! each alone in its query string. They are answered as a server would answer a `SHOW` or
//! `SET`, once nothing of the client's is in flight (so the answer cannot overtake a reply), and never reach a
//! server.
//!
//! In the simple protocol the Query is answered. In the extended protocol, a batch (through Sync) whose every
//! message concerns such statements — Parse, Bind, Describe, Execute, Close, Flush — is answered message by message,
//! as drivers send them (psycopg, pgjdbc and tokio-postgres parse, bind and run through it); the statements the
//! client prepares this way are remembered for its later batches. A batch that mixes them with anything else goes
//! to a server, which refuses them as unknown settings.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::cancel::{CancelSlot, Signaled};
use super::floor::{ReadFloor, invalid_min_lsn};
use super::plan::{Local, analyze};
use super::relay::{Relay, SessionEnd};
use super::signal::{self, Pid};
use crate::context::SessionContext;
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::extended::{self, Target};
use crate::protocol::frame::{HEADER_LEN, peek_header};
use crate::protocol::messages::{self, TxStatus};

/// The client's prepared statements that pgsplit answers: the unnamed one, if it is one, and named ones.
#[derive(Debug, Clone, Default)]
pub struct LocalStatements {
    unnamed: Option<Local>,
    named: Vec<(Box<[u8]>, Local)>,
}

impl LocalStatements {
    fn get(&self, name: &[u8]) -> Option<&Local> {
        match name {
            b"" => self.unnamed.as_ref(),
            _ => self.named.iter().find(|(n, _)| **n == *name).map(|(_, l)| l),
        }
    }

    /// Whether a Bind, Describe or Close body names one of them.
    pub fn named_in(&self, tag: u8, body: &[u8]) -> bool {
        if self.unnamed.is_none() && self.named.is_empty() {
            return false; // the usual case, with nothing to read
        }
        let name = match tag {
            b'B' => extended::bind_fields(body).map(|(_, statement, _)| statement),
            _ => match extended::target(body) {
                Some(Target::Statement(name)) => Some(name),
                _ => None,
            },
        };
        name.is_some_and(|name| self.get(name).is_some())
    }

    /// A Parse of the unnamed statement went to a server: the client's unnamed statement is that one now.
    pub fn unnamed_replaced(&mut self) {
        self.unnamed = None;
    }
}

impl Relay {
    /// Whether pgsplit answers `local`, the statement of a Query or Parse (`tag`): a signal only for a pid it
    /// issued (a pid given as a parameter is looked at when its Bind comes; a simple Query has none).
    pub(super) fn takes_local(&self, tag: u8, local: &Local) -> bool {
        match local {
            Local::Signal(signal) => match signal.pid {
                Pid::Given(pid) => self.ctx.cancels.knows(pid),
                Pid::Param(_) => tag == b'P',
            },
            _ => true,
        }
    }

    /// Nothing in flight: pgsplit may answer a statement itself without disturbing the server's replies.
    pub(super) fn can_answer_locally(&self) -> bool {
        !self.attachment.is_attached()
            || (self.exchange.nothing_owed()
                && !self.exchange.batch_open()
                && self.to_server.is_empty()
                && self.to_client.is_empty())
    }

    /// Answers a simple Query that is one statement pgsplit answers.
    pub(super) async fn answer_locally(&mut self, local: Local) -> Result<(), SessionEnd> {
        let mut batch = self.local_batch();
        if !matches!(local, Local::SetMinLsn(_)) {
            describe(&mut batch.out, &local, 0);
        }
        batch.execute(&local, 0);
        if let Some(end) = batch.end {
            return Err(SessionEnd::Fatal(end));
        }
        messages::ready_for_query(&mut batch.out, self.status_here());
        self.floor = batch.floor;
        self.client.write_all(&batch.out).await.map_err(SessionEnd::ClientIo)
    }

    /// Answers the extended-protocol batch at the scan position if it is all buffered and all about statements
    /// pgsplit answers; returns whether it did (and consumed it).
    pub(super) async fn answer_local_batch(&mut self) -> Result<bool, SessionEnd> {
        let mut batch = self.local_batch();
        let start = self.to_server.scanned();
        let mut at = start;
        loop {
            let Ok(Some(header)) = peek_header(&self.client_buf[at..]) else {
                return Ok(false);
            };
            let Some(body) = self.client_buf.get(at + HEADER_LEN..at + header.frame_len()) else {
                return Ok(false);
            };
            at += header.frame_len();
            if header.tag == b'S' {
                messages::ready_for_query(&mut batch.out, self.status_here());
                break;
            }
            if !batch.answer(header.tag, body, self.planner.functions()) {
                return Ok(false);
            }
        }
        self.client_buf.advance(at - start);
        if let Some(end) = batch.end {
            return Err(SessionEnd::Fatal(end));
        }
        self.local_statements = batch.statements;
        self.floor = batch.floor;
        self.client
            .write_all(&batch.out)
            .await
            .map_err(SessionEnd::ClientIo)
            .map(|()| true)
    }

    /// Copies of what answering may change, applied only once the whole answer is known.
    fn local_batch(&self) -> LocalBatch {
        LocalBatch {
            statements: self.local_statements.clone(),
            floor: self.floor.clone(),
            route: match self.attachment.last_route() {
                Some((instance, reason)) => format!("instance={instance} reason={}", reason.as_str()),
                None => "none".to_owned(),
            },
            portals: Vec::new(),
            failed: false,
            out: BytesMut::new(),
            ctx: self.ctx.clone(),
            key: self.attachment.client_key().clone(),
            end: None,
        }
    }

    /// The transaction status a ReadyForQuery made here reports.
    fn status_here(&self) -> TxStatus {
        if self.attachment.is_attached() {
            self.exchange.tx_status()
        } else {
            TxStatus::Idle
        }
    }
}

/// One extended-protocol batch being answered by pgsplit: changes made on copies, kept only if all of it is ours.
struct LocalBatch {
    statements: LocalStatements,
    floor: ReadFloor,
    /// `SHOW pgsplit.route`'s answer (the batch runs no unit).
    route: String,
    /// Portals bound in this batch (they end with it: there is no transaction), with their result format.
    portals: Vec<(Box<[u8]>, Local, u16)>,
    /// An Execute failed: the rest up to Sync is skipped, as a server would.
    failed: bool,
    out: BytesMut,
    /// Where signals by pid go, and who sends them.
    ctx: Arc<SessionContext>,
    key: Arc<CancelSlot>,
    /// The client ended its own session (`pg_terminate_backend` of its own pid): what it is told.
    end: Option<SqlError>,
}

impl LocalBatch {
    /// Answers one message; false if it is not about a statement pgsplit answers.
    fn answer(&mut self, tag: u8, body: &[u8], functions: &crate::router::FunctionSet) -> bool {
        if self.failed {
            return true;
        }
        match tag {
            b'P' => {
                let Some((name, definition)) = extended::parse_fields(body) else {
                    return false;
                };
                let sql = std::str::from_utf8(extended::definition_query(definition)).unwrap_or_default();
                // pgsplit's own statements are ASCII and lex alike under any rules.
                let Some(local) = analyze(sql, functions, true).local else {
                    return false;
                };
                match name {
                    b"" => self.statements.unnamed = Some(local),
                    _ if self.statements.get(name).is_some() => return false, // the server's 42P05
                    _ => self.statements.named.push((name.into(), local)),
                }
                extended::put_empty(&mut self.out, b'1');
            }
            b'B' => {
                let Some((portal, statement, rest)) = extended::bind_fields(body) else {
                    return false;
                };
                let Some(mut local) = self.statements.get(statement).cloned() else {
                    return false;
                };
                let mut format = 0;
                if let Local::Signal(signal) = local {
                    // A pid that is not pgsplit's: the server answers the whole batch.
                    let Some(bound) = signal.bound(rest) else {
                        return false;
                    };
                    match bound.pid {
                        Pid::Given(pid) if self.ctx.cancels.knows(pid) => {}
                        _ => return false,
                    }
                    format = signal::result_format(rest).unwrap_or(0);
                    local = Local::Signal(bound);
                }
                self.portals.retain(|(p, _, _)| **p != *portal);
                self.portals.push((portal.into(), local, format));
                extended::put_empty(&mut self.out, b'2');
            }
            b'D' => match extended::target(body) {
                Some(Target::Statement(name)) => {
                    let Some(local) = self.statements.get(name).cloned() else {
                        return false;
                    };
                    match &local {
                        Local::Signal(signal) => signal::parameter_description(&mut self.out, signal),
                        _ => self.out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]), // no parameters
                    }
                    describe(&mut self.out, &local, 0);
                }
                Some(Target::Portal(name)) => {
                    let Some((local, format)) = self.portal(name) else {
                        return false;
                    };
                    describe(&mut self.out, &local, format);
                }
                None => return false,
            },
            b'E' => {
                let Some((portal, _)) = crate::protocol::frame::read_cstr(body) else {
                    return false;
                };
                let Some((local, format)) = self.portal(portal) else {
                    return false;
                };
                self.execute(&local, format);
            }
            b'C' => {
                match extended::target(body) {
                    Some(Target::Statement(b"")) if self.statements.unnamed.is_some() => self.statements.unnamed = None,
                    Some(Target::Statement(name)) if self.statements.get(name).is_some() => {
                        self.statements.named.retain(|(n, _)| **n != *name)
                    }
                    Some(Target::Portal(name)) if self.portal(name).is_some() => {
                        self.portals.retain(|(p, _, _)| **p != *name)
                    }
                    _ => return false,
                }
                extended::put_empty(&mut self.out, b'3');
            }
            b'H' => {}
            _ => return false,
        }
        true
    }

    fn portal(&self, name: &[u8]) -> Option<(Local, u16)> {
        self.portals
            .iter()
            .find(|(p, _, _)| **p == *name)
            .map(|(_, l, f)| (l.clone(), *f))
    }

    fn execute(&mut self, local: &Local, format: u16) {
        match local {
            Local::Signal(signal) => self.signal(signal, format),
            Local::ShowRoute => {
                messages::data_row(&mut self.out, &[&self.route]);
                messages::command_complete(&mut self.out, "SHOW");
            }
            Local::ShowLastWriteLsn => {
                messages::data_row(&mut self.out, &[&self.floor.show()]);
                messages::command_complete(&mut self.out, "SHOW");
            }
            Local::SetMinLsn(value) => {
                if self.floor.set_min(value.as_deref()) {
                    messages::command_complete(&mut self.out, if value.is_some() { "SET" } else { "RESET" });
                } else {
                    invalid_min_lsn(value.as_deref().unwrap_or_default()).encode(&mut self.out);
                    self.failed = true;
                }
            }
        }
    }
}

impl LocalBatch {
    /// Ends or cancels the session pgsplit gave the pid to (the client's own: it ends, told as PostgreSQL tells a
    /// terminated backend's client).
    fn signal(&mut self, signal: &signal::Signal, format: u16) {
        let Pid::Given(pid) = signal.pid else {
            return;
        };
        let outcome = match pid == self.key.pid {
            true if signal.terminate => {
                self.end = Some(SqlError::new(
                    Severity::Fatal,
                    code::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                ));
                return;
            }
            // Nothing of its own runs while pgsplit answers it.
            true => Signaled::Done,
            false => {
                let timeout = self.ctx.config().server.connect_timeout;
                let tls = self.ctx.tls.servers();
                self.ctx
                    .cancels
                    .signal(pid, &self.key.user, signal.terminate, timeout, tls)
            }
        };
        if outcome == Signaled::NotPermitted {
            SqlError::new(
                Severity::Error,
                "42501",
                format!(
                    "permission denied to signal the session with pid {pid}: it belongs to another user (pgsplit lets                      a client signal only sessions of its own user)"
                ),
            )
            .encode(&mut self.out);
            self.failed = true;
            return;
        }
        signal::data_row(&mut self.out, outcome == Signaled::Done, format);
        messages::command_complete(&mut self.out, "SELECT 1");
    }
}

/// What a Describe of the statement returns after its parameters: its row (in `format`), or none for `SET`.
fn describe(out: &mut BytesMut, local: &Local, format: u16) {
    match local {
        Local::Signal(signal) => signal::row_description(out, signal, format),
        Local::ShowRoute => messages::row_description(out, &["pgsplit.route"]),
        Local::ShowLastWriteLsn => messages::row_description(out, &["pgsplit.last_write_lsn"]),
        Local::SetMinLsn(_) => extended::put_empty(out, b'n'),
    }
}
