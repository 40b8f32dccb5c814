//! What one client has asked of the server connection serving it and what it is owed back: the requests whose
//! answers are outstanding (`replies`), the client's prepared statements (`statements`), the extended-protocol
//! batch open since the last Sync with the setting changes it makes, and the transaction status the server last
//! reported. Forwarding a client message enters what the server owes for it; each server reply is accounted for
//! here, and what a finished unit changed (settings, statements) is applied. What a server says of a client's
//! statement — that it prepared it, how it describes it — is kept with the statement, for this kind of client (its
//! user, database and settings), so that the next client of that kind can be answered without a server. Owns its
//! fields: the relay asks, and hands it the byte streams and the connection's state to work on.

use bytes::BytesMut;

use super::intent::Intent;
use super::outflow::Outflow;
use super::plan::{Change, TxUndo};
use super::replies::{Answer, Refusal, Request, Verdict};
use super::statements::{Replies, Statements, ToServer, Undo, prepared_statement_limit};

type Expected = super::replies::Expected<Undo>;
use crate::pool::prepared::{PreparedCache, StatementTable};
use crate::pool::{ConnKey, Settings};
use crate::protocol::error::SqlError;
use crate::protocol::extended;
use crate::protocol::frame::Header;
use crate::protocol::messages::TxStatus;

#[derive(Debug)]
pub struct Exchange {
    replies: Replies,
    statements: Statements,
    /// Requests a failed request took with it, to be undone (reused buffer).
    undone: Vec<Undo>,
    /// Extended-protocol messages sent since the last Sync.
    batch_open: bool,
    /// Changes of the Binds in the current extended-protocol batch, until its Sync.
    batch_changes: Vec<Change>,
    /// A Bind in the current batch drops every prepared statement (DISCARD ALL) if the batch succeeds.
    batch_discards: bool,
    tx_status: TxStatus,
    /// The settings to put back if the open transaction, or a savepoint of it, is rolled back.
    tx_undo: TxUndo,
    /// A hash of the client's user and database: with its settings, the kind of client a server prepares for.
    owner: u64,
    /// The ParameterDescription of a statement being described, until its RowDescription or NoData.
    parameters: Option<Box<[u8]>>,
}

/// The kind of client a server parses statements for: `owner` (its user and database) and its settings (the
/// search_path above all). A statement a server prepared for one client is valid for every client of its kind.
pub fn client_kind(owner: u64, settings: &Settings) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut hasher);
    for (name, value) in settings.values() {
        // Names compare case-insensitively; folded byte by byte, without a copy (and ended as `str`'s hash ends).
        for byte in name.bytes() {
            hasher.write_u8(byte.to_ascii_lowercase());
        }
        hasher.write_u8(0xff);
        value.hash(&mut hasher);
    }
    hasher.finish()
}

/// Where a client message goes: the outflow to the server over the client's read buffer, and the statements the
/// server connection has.
pub struct Outbound<'a> {
    pub flow: &'a mut Outflow,
    pub source: &'a mut BytesMut,
    pub cache: &'a mut PreparedCache,
}

/// What the server connection carries that a finished unit may change.
pub struct ConnState<'a> {
    pub settings: &'a mut Settings,
    pub prepared: &'a mut PreparedCache,
}

impl Exchange {
    /// `max_prepared`: named statements the client may hold (`proxy.max_prepared_statements`); `key`: its user and
    /// database.
    pub fn new(max_prepared: usize, key: &ConnKey) -> Exchange {
        let owner = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut hasher);
            hasher.finish()
        };
        Exchange {
            replies: Replies::default(),
            statements: Statements::new(max_prepared),
            undone: Vec::new(),
            batch_open: false,
            batch_changes: Vec::new(),
            batch_discards: false,
            tx_status: TxStatus::Idle,
            tx_undo: TxUndo::default(),
            owner,
            parameters: None,
        }
    }

    /// A hash of the client's user and database (see [`client_kind`]).
    pub fn owner(&self) -> u64 {
        self.owner
    }

    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    /// The statements, for a unit that must take back what it did (a refused read run again).
    pub fn statements_mut(&mut self) -> &mut Statements {
        &mut self.statements
    }

    /// Extended-protocol messages were sent since the last Sync.
    pub fn batch_open(&self) -> bool {
        self.batch_open
    }

    pub fn tx_status(&self) -> TxStatus {
        self.tx_status
    }

    /// Requests still owed an answer.
    pub fn owed(&self) -> usize {
        self.replies.len()
    }

    /// Nothing owed, no batch open, no transaction open: the connection could serve someone else.
    pub fn settled(&self) -> bool {
        self.replies.is_empty() && !self.batch_open && self.tx_status == TxStatus::Idle
    }

    /// Nothing owed at all.
    pub fn nothing_owed(&self) -> bool {
        self.replies.is_empty()
    }

    /// The next reply answers pgsplit's probe.
    pub fn probing(&self) -> bool {
        self.replies.probing()
    }

    /// All that is owed is pgsplit's probe: the client has every answer it asked for.
    pub fn only_probe(&self) -> bool {
        self.replies.only_probe()
    }

    /// pgsplit's own query, sent after the client's unit ended.
    pub fn expect_probe(&mut self) {
        self.replies.push(Expected::probe());
    }

    /// The next reply answers pgsplit's check of the connection.
    pub fn checking(&self) -> bool {
        self.replies.checking()
    }

    /// pgsplit's check of the connection, sent after the client's unit ended.
    pub fn expect_check(&mut self) {
        self.replies.push(Expected::check());
    }

    /// A simple Query pgsplit sent on the client's behalf, whose answer the client must not see (its error would
    /// be the client's to see).
    pub fn expect_hidden_query(&mut self) {
        self.replies.push(Expected::new(Request::Sync, Answer::Hidden));
    }

    /// The server connection is gone with only the probe owed: nothing is owed any more.
    pub fn forget_probe(&mut self) {
        self.replies = Replies::default();
    }

    /// The server connection is gone before it answered the unit it was given, which will run again elsewhere:
    /// nothing is owed, no batch or transaction is open.
    pub fn connection_gone(&mut self) {
        self.replies = Replies::default();
        self.batch_open = false;
        self.batch_changes.clear();
        self.batch_discards = false;
        self.tx_status = TxStatus::Idle;
        self.tx_undo.ended();
    }

    /// The server connection is gone in the middle of the client's transaction, which the client is told of
    /// (`cut`): what the unanswered requests did is taken back (a Parse never answered prepared nothing), nothing
    /// is owed, no batch or transaction is open. Returns how many ReadyForQuery the client was owed, and whether
    /// its extended-protocol batch was open (its Sync still to come).
    pub fn cut(&mut self) -> (usize, bool) {
        let owed = self.replies.abandon(&mut self.undone);
        for undo in self.undone.drain(..) {
            self.statements.undo(undo, None);
        }
        let open = self.batch_open;
        self.connection_gone();
        (owed, open)
    }

    /// Sends the client message `header` (at the scan position of `to.source`) on — renamed, answered by pgsplit,
    /// or as it is — and enters what the server owes for it. `table` names the statements clients prepare.
    pub fn forward(&mut self, header: Header, intent: Intent, to: Outbound<'_>, table: &StatementTable) {
        let len = header.frame_len();
        let mut to = ToServer {
            flow: to.flow,
            source: to.source,
            replies: &mut self.replies,
            cache: to.cache,
        };
        match header.tag {
            b'Q' => {
                let changes = intent.plan.map(|(plan, _)| plan.changes).unwrap_or_default();
                let mut expected = Expected::ready(changes);
                let analysis = intent.analysis.as_ref();
                if analysis.is_some_and(|a| a.discards_statements()) {
                    expected = expected.discarding_statements();
                }
                let undo = match analysis.and_then(|a| a.prepared.as_ref().map(|prepared| (a, prepared))) {
                    Some((analysis, prepared)) => {
                        self.statements
                            .sql(&mut to, len, table, prepared, analysis, self.batch_open)
                    }
                    // Not analysed (no closing NUL): the server says what is wrong with it.
                    None => {
                        to.pass(len);
                        None
                    }
                };
                to.replies.push(match undo {
                    Some(undo) => expected.undo(undo),
                    None => expected,
                });
            }
            b'P' => self.statements.parse(&mut to, len, table, intent.analysis),
            b'B' => {
                if let Some((plan, _)) = intent.plan {
                    self.batch_changes.extend(plan.changes);
                }
                self.batch_discards |= intent.discards;
                self.statements.bind(&mut to, len);
            }
            b'D' => self.statements.describe(&mut to, len),
            b'C' => self.statements.close(&mut to, len),
            b'E' => {
                to.pass(len);
                to.replies.push(Expected::new(Request::Execute, Answer::Server));
            }
            b'S' => {
                to.pass(len);
                let mut expected = Expected::ready(std::mem::take(&mut self.batch_changes));
                if std::mem::take(&mut self.batch_discards) {
                    expected = expected.discarding_statements();
                }
                to.replies.push(expected);
            }
            b'F' => {
                to.pass(len);
                to.replies.push(Expected::ready(Vec::new()));
            }
            b'c' | b'f' => {
                to.pass(len);
                to.replies.push(Expected::new(Request::CopyEnd, Answer::Server));
            }
            // Flush gets no answer of its own.
            _ => to.pass(len),
        }
        match header.tag {
            b'P' | b'B' | b'D' | b'E' | b'C' => self.batch_open = true,
            b'S' => self.batch_open = false,
            _ => {}
        }
    }

    /// Accounts for one server message (`body` empty when only its header was seen): whether the client gets it,
    /// and what it changes once its unit ends — the transaction status, the client's settings (`wanted`) and the
    /// connection's (`conn`), the statements. An unreadable ReadyForQuery is the server's fault. Inlined: it runs
    /// for every server message looked at.
    #[inline]
    pub fn reply(
        &mut self,
        tag: u8,
        body: &[u8],
        wanted: &mut Settings,
        conn: ConnState<'_>,
    ) -> Result<Verdict, BadReply> {
        if matches!(tag, b'1' | b't' | b'T' | b'n') && self.replies.head_undo().is_some() {
            self.learn(tag, body, wanted);
        }
        let mut ended = None;
        let verdict = self.replies.on_reply(tag, &mut self.undone, &mut ended);
        if tag == b'Z' {
            let failed = self.tx_status == TxStatus::Failed;
            self.tx_status = body.first().copied().and_then(TxStatus::from_byte).ok_or(BadReply)?;
            if let Some(ended) = ended {
                self.tx_undo.apply(&ended.changes, failed, wanted, conn.settings);
                if ended.discards_statements {
                    self.statements.clear();
                    conn.prepared.clear();
                }
            }
            if self.tx_status == TxStatus::Idle {
                self.tx_undo.ended();
            }
        }
        if !self.undone.is_empty() {
            for undo in self.undone.drain(..) {
                self.statements.undo(undo, Some(&mut *conn.prepared));
            }
        }
        Ok(verdict)
    }

    /// Keeps what a server's answer says of a client's statement: a ParseComplete that it is valid for this kind
    /// of client, a Describe's answer its description (`body` empty: known by its header alone, not kept).
    #[cold]
    fn learn(&mut self, tag: u8, body: &[u8], wanted: &Settings) {
        match (tag, self.replies.head_undo()) {
            (b'1', Some(Undo::Prepared { statement, .. })) => statement.confirm(client_kind(self.owner, wanted)),
            (b't', Some(Undo::Described(_))) => {
                self.parameters = (!body.is_empty()).then(|| whole_message(tag, body).into());
            }
            (b'T' | b'n', Some(Undo::Described(statement))) => {
                if let Some(parameters) = self.parameters.take()
                    && (tag == b'n' || !body.is_empty())
                {
                    let description = [&parameters[..], &whole_message(tag, body)].concat();
                    statement.remember_description(client_kind(self.owner, wanted), &description);
                }
            }
            _ => {}
        }
    }

    /// The error a client gets for a request pgsplit refused.
    pub fn refusal(&self, refusal: Refusal) -> SqlError {
        match refusal {
            Refusal::PreparedStatementLimit => prepared_statement_limit(self.statements.max()),
        }
    }

    /// Puts the answers pgsplit makes up whose turn has come (ParseComplete, CloseComplete) into the client's
    /// stream. Always inlined, like `next_made`: it runs after every reply.
    #[inline(always)]
    pub fn write_made(&mut self, to_client: &mut Outflow, server_buf: &mut BytesMut) {
        while let Some(tag) = self.replies.next_made() {
            extended::put_empty(to_client.insert(server_buf), tag);
        }
    }
}

/// A backend message as it travels: tag, length, body.
fn whole_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(5 + body.len());
    message.push(tag);
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// The server sent a ReadyForQuery pgsplit cannot read.
#[derive(Debug)]
pub struct BadReply;
