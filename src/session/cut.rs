//! A transaction its server connection took with it (SPEC §8, issue 21 item 4): with an HA engine (Patroni)
//! naming the leader, an immediate switchover or a failover ends the old leader's sessions — fast shutdown sends
//! them FATAL 57P01 and closes them — part-way through clients' transactions. Nothing of such a transaction
//! committed, and nothing can carry it over to the new leader; but the client's own session need not end with it.
//!
//! The server's FATAL is kept from the client (a driver takes it as the end of its connection), the connection is
//! dropped, and the client gets ONE error, `40001`, saying its transaction was cut by the loss of the connection
//! and did not commit — at once if it was waiting for an answer, else with its next statement. 40001
//! (serialization_failure) is the class-40 "transaction rolled back" code drivers and frameworks retry a whole
//! transaction on, which is what is safe here; 08006 would tell a driver its connection is gone, 57P01 that the
//! server is shutting it. Then, as PostgreSQL does after an error in a transaction block, the client is in a
//! failed transaction (ReadyForQuery `E`): pgsplit answers `ROLLBACK` (or `COMMIT`, which rolls back) itself, and
//! anything else with 25P02, until the block ends; its next transaction goes through the gate to the new leader.
//! A COMMIT that was in flight gets 08007 instead (transaction resolution unknown: it may have committed), and the
//! session is out of the transaction.
//!
//! A ROLLBACK through the extended protocol is answered too (Parse, Describe, Bind, Execute, Close, as drivers
//! send it, or a ROLLBACK statement prepared before); a statement parsed for it is gone once the block ends.
//!
//! Not cut, but ended as before (FATAL 08006): a session pinned to its connection (its session state is gone), a
//! session-mode one, a reply cut in the middle of a message, a COMMIT followed by more requests in flight.

use bytes::{Buf, BytesMut};

use super::plan::StreamState;
use super::relay::{Relay, SessionEnd};
use super::server::Attached;
use crate::config::PoolMode;
use crate::context::{Endpoint, SessionContext};
use crate::pool::prepared::Definition;
use crate::protocol::error::{Severity, SqlError};
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, read_cstr};
use crate::protocol::messages::{self, TxStatus};

/// The cut transaction's error: serialization_failure, retried as a whole by drivers and frameworks.
pub const CUT: &str = "40001";
/// A COMMIT in flight when the connection ended: PostgreSQL's transaction_resolution_unknown.
pub const RESOLUTION_UNKNOWN: &str = "08007";
/// in_failed_sql_transaction.
const IN_FAILED_TRANSACTION: &str = "25P02";

/// Where a session stands with a transaction its server connection took with it.
#[derive(Debug, Default)]
pub enum TransactionCut {
    #[default]
    None,
    /// The server sent FATAL inside the client's transaction (kept from the client); its connection's end follows.
    Dying(String),
    /// Cut while the client waited for nothing: it is told with its next message.
    Untold(SqlError),
    /// Told: a failed transaction block, until the client ends it.
    Failed(Ending),
}

/// A `ROLLBACK` the client runs through the extended protocol in a failed block: how far it has come.
#[derive(Debug, Default, Clone)]
pub struct Ending {
    /// The statement it was parsed as (a driver prepares it, then runs it in its next batch).
    statement: Option<Box<[u8]>>,
    bound: bool,
    done: bool,
}

impl TransactionCut {
    /// pgsplit answers the client's messages itself (no server until the block ends).
    pub fn answers(&self) -> bool {
        matches!(self, TransactionCut::Untold(_) | TransactionCut::Failed(_))
    }

    /// As the relay keeps it: boxed (rare, and every session's task carries it), None for none.
    pub fn boxed(self) -> Option<Box<TransactionCut>> {
        match self {
            TransactionCut::None => None,
            cut => Some(Box::new(cut)),
        }
    }
}

impl Relay {
    fn take_cut(&mut self) -> TransactionCut {
        self.cut.take().map_or(TransactionCut::None, |cut| *cut)
    }

    fn put_cut(&mut self, cut: TransactionCut) {
        self.cut = cut.boxed();
    }

    /// The session may survive the loss of its server connection: the main endpoint under an HA engine, in
    /// transaction mode, not pinned.
    pub(super) fn may_cut(&self) -> bool {
        self.cut_endpoint() && !self.stream.pinned && follows_ha_engine(&self.ctx)
    }

    /// The main endpoint in transaction mode (the cheap half of `may_cut`).
    pub(super) fn cut_endpoint(&self) -> bool {
        *self.attachment.endpoint() == Endpoint::Main && self.attachment.pool_mode() == PoolMode::Transaction
    }

    /// The server connection ended inside the client's transaction, between whole messages: it is cut.
    pub(super) fn cuttable(&self) -> bool {
        self.may_cut()
            && self.attachment.is_attached()
            && self.attachment.server_at_boundary()
            && (self.stream.in_transaction || self.exchange.tx_status() != TxStatus::Idle)
    }

    /// Drops the connection that took the client's transaction with it, gives the client what the server had
    /// sent, and tells it: now if it waits for answers, else with its next message.
    pub(super) async fn cut_transaction(&mut self) -> Result<(), SessionEnd> {
        // The client's COMMIT (or ROLLBACK) was sent and not answered: its outcome is unknown.
        let committing = !self.stream.in_transaction;
        let said = match self.take_cut() {
            TransactionCut::Dying(said) => said,
            _ => "connection ended".to_owned(),
        };
        if committing && (self.exchange.owed() > 1 || self.exchange.batch_open()) {
            return Err(self.attachment.lose());
        }
        let Some(Attached { mut conn, instance, .. }) = self.attachment.take() else {
            return Err(self.attachment.lose());
        };
        let mut out = self.to_client.take(&mut conn.buf);
        drop(conn);
        self.to_server.discard(&mut self.client_buf);
        let (owed, batch_open) = self.exchange.cut();
        self.probe.lapse();
        self.set_stream(StreamState::default());
        let name = &instance.name;
        tracing::warn!(instance = %name, %said, committing, "server connection lost inside a transaction; the session goes on");
        let mut error = Some(if committing {
            SqlError::new(
                Severity::Error,
                RESOLUTION_UNKNOWN,
                format!(
                    "the connection to instance \"{name}\" ended during COMMIT ({said}): the transaction may or \
                     may not have committed"
                ),
            )
            .with_hint("Check whether its changes are there before running it again.")
        } else {
            SqlError::new(
                Severity::Error,
                CUT,
                format!(
                    "the transaction was cut: the connection to instance \"{name}\" ended ({said}); it did not \
                     commit"
                ),
            )
            .with_hint("The leader may have changed. Roll back and run the transaction again.")
        });
        let status = if committing { TxStatus::Idle } else { TxStatus::Failed };
        for _ in 0..owed {
            error.take().unwrap_or_else(aborted).encode(&mut out);
            messages::ready_for_query(&mut out, status);
        }
        if batch_open {
            error.take().unwrap_or_else(aborted).encode(&mut out);
            self.skip_until_sync = true;
        }
        self.put_cut(match error {
            Some(error) if !committing => TransactionCut::Untold(error),
            None if !committing => TransactionCut::Failed(Ending::default()),
            _ => TransactionCut::None,
        });
        self.client.write_all(&out).await.map_err(SessionEnd::ClientIo)
    }

    /// Answers the client's message at the scan position in a cut transaction, as a server in a failed
    /// transaction block would.
    pub(super) async fn answer_cut(&mut self, header: Header) -> Result<(), SessionEnd> {
        let len = header.frame_len();
        let mut cut = self.take_cut();
        let body = &self.client_buf[HEADER_LEN..len];
        let mut out = BytesMut::new();
        match header.tag {
            b'Q' => {
                let ends = read_cstr(body)
                    .and_then(|(sql, _)| std::str::from_utf8(sql).ok())
                    .and_then(ends_block);
                cut = match (cut, ends) {
                    (TransactionCut::Untold(_), Some(End::Rollback)) | (TransactionCut::Failed(_), Some(_)) => {
                        messages::command_complete(&mut out, "ROLLBACK");
                        messages::ready_for_query(&mut out, TxStatus::Idle);
                        TransactionCut::None
                    }
                    // A COMMIT that cannot commit: the error, and the block is over.
                    (TransactionCut::Untold(error), Some(End::Commit)) => {
                        error.encode(&mut out);
                        messages::ready_for_query(&mut out, TxStatus::Idle);
                        TransactionCut::None
                    }
                    (cut, _) => {
                        told(cut).encode(&mut out);
                        messages::ready_for_query(&mut out, TxStatus::Failed);
                        TransactionCut::Failed(Ending::default())
                    }
                };
            }
            b'S' => {
                self.skip_until_sync = false;
                cut = match cut {
                    TransactionCut::Failed(Ending { done: true, .. }) => TransactionCut::None,
                    TransactionCut::Failed(ending) => TransactionCut::Failed(ending),
                    // Told with this batch's first message, which a Flush may have sent on its own.
                    _ => TransactionCut::Failed(Ending::default()),
                };
                let status = match cut {
                    TransactionCut::None => TxStatus::Idle,
                    _ => TxStatus::Failed,
                };
                messages::ready_for_query(&mut out, status);
            }
            // Flush, and COPY messages with no COPY running.
            b'H' | b'd' | b'c' | b'f' => {}
            _ if self.skip_until_sync => {}
            _ => {
                let statements = self.exchange.statements();
                // A statement the client prepared before, as drivers keep their ROLLBACK.
                let prepared_end = |name: &[u8]| {
                    statements.get(name).is_some_and(|s| match &s.server.definition {
                        Definition::Parse(definition) => {
                            let sql = extended::definition_query(definition);
                            std::str::from_utf8(sql).ok().and_then(ends_block).is_some()
                        }
                        Definition::Sql(_) => false,
                    })
                };
                let step = match &mut cut {
                    TransactionCut::Failed(ending) => ending.step(header.tag, body, prepared_end, &mut out),
                    _ => false,
                };
                if !step {
                    // Like the server's error in a batch: the rest of it, up to Sync, is skipped.
                    let ending = match &mut cut {
                        TransactionCut::Failed(ending) => std::mem::take(ending),
                        _ => Ending::default(),
                    };
                    told(cut).encode(&mut out);
                    cut = TransactionCut::Failed(Ending { bound: false, ..ending });
                    self.skip_until_sync = true;
                }
            }
        }
        self.put_cut(cut);
        self.client_buf.advance(len);
        self.client.write_all(&out).await.map_err(SessionEnd::ClientIo)
    }
}

impl Ending {
    /// One extended-protocol message of a `ROLLBACK` (or `COMMIT`) answered, as drivers send it: Parse (with
    /// Describe, in its own batch or not), Bind, Execute, and Close of its statement; false for anything else.
    fn step(&mut self, tag: u8, body: &[u8], prepared_end: impl Fn(&[u8]) -> bool, out: &mut BytesMut) -> bool {
        let names_it = |name: &[u8]| self.statement.as_deref() == Some(name) || prepared_end(name);
        match tag {
            b'P' => {
                let Some((name, definition)) = extended::parse_fields(body) else {
                    return false;
                };
                let sql = std::str::from_utf8(extended::definition_query(definition)).unwrap_or_default();
                if ends_block(sql).is_none() {
                    return false;
                }
                self.statement = Some(name.into());
                extended::put_empty(out, b'1');
            }
            b'B' if extended::bind_fields(body).is_some_and(|(_, name, _)| names_it(name)) => {
                self.bound = true;
                extended::put_empty(out, b'2');
            }
            b'D' if body.first() == Some(&b'S') && names_it(body[1..].strip_suffix(&[0]).unwrap_or_default()) => {
                // ParameterDescription (no parameters), then NoData.
                out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                extended::put_empty(out, b'n');
            }
            b'D' if body.first() == Some(&b'P') && self.bound => extended::put_empty(out, b'n'),
            // Only the one parsed here: one prepared before stays in the client's statements.
            b'C' if body.first() == Some(&b'S')
                && self.statement.is_some()
                && self.statement.as_deref() == body[1..].strip_suffix(&[0]) =>
            {
                self.statement = None;
                extended::put_empty(out, b'3');
            }
            b'E' if self.bound => {
                self.done = true;
                messages::command_complete(out, "ROLLBACK");
            }
            _ => return false,
        }
        true
    }
}

/// An HA engine names the leader (read only when a server's error or end calls for it: it loads the topology).
pub fn follows_ha_engine(ctx: &SessionContext) -> bool {
    ctx.topology.load().config.patroni().is_some()
}

/// The message of a server's ErrorResponse (`body`) that ends its session (FATAL or PANIC).
pub fn fatal_message(body: &[u8]) -> Option<String> {
    let severity = messages::error_field(body, b'V').or_else(|| messages::error_field(body, b'S'));
    if !matches!(severity, Some("FATAL" | "PANIC")) {
        return None;
    }
    Some(
        messages::error_field(body, b'M')
            .unwrap_or("connection ended")
            .to_owned(),
    )
}

/// The error a message in a cut transaction gets: the cut itself if the client has not been told yet.
fn told(cut: TransactionCut) -> SqlError {
    match cut {
        TransactionCut::Untold(error) => error,
        _ => aborted(),
    }
}

/// What PostgreSQL answers in a failed transaction block.
fn aborted() -> SqlError {
    SqlError::new(
        Severity::Error,
        IN_FAILED_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Rollback,
    Commit,
}

/// A statement alone that ends a transaction block: `ROLLBACK` / `ABORT` or `COMMIT` / `END`, with `WORK` or
/// `TRANSACTION` and `AND NO CHAIN` allowed.
fn ends_block(sql: &str) -> Option<End> {
    let sql = sql.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if sql.contains(';') {
        return None;
    }
    let words: Vec<String> = sql.split_ascii_whitespace().map(str::to_ascii_lowercase).collect();
    let (first, mut rest) = words.split_first()?;
    if let [word, tail @ ..] = rest
        && matches!(word.as_str(), "work" | "transaction")
    {
        rest = tail;
    }
    if !(rest.is_empty() || rest == ["and", "no", "chain"]) {
        return None;
    }
    match first.as_str() {
        "rollback" | "abort" => Some(End::Rollback),
        "commit" | "end" => Some(End::Commit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_end_of_block_ends_a_cut_transaction() {
        assert_eq!(ends_block("ROLLBACK"), Some(End::Rollback));
        assert_eq!(ends_block(" rollback work ; "), Some(End::Rollback));
        assert_eq!(ends_block("ABORT TRANSACTION AND NO CHAIN"), Some(End::Rollback));
        assert_eq!(ends_block("COMMIT"), Some(End::Commit));
        assert_eq!(ends_block("end;"), Some(End::Commit));
        assert_eq!(ends_block("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(ends_block("ROLLBACK AND CHAIN"), None);
        assert_eq!(ends_block("COMMIT PREPARED 'x'"), None);
        assert_eq!(ends_block("ROLLBACK; BEGIN"), None);
        assert_eq!(ends_block("SELECT 1"), None);
        assert_eq!(ends_block(""), None);
    }
}
