//! One client's prepared statements, and the messages that name them made fit for whichever server connection
//! serves the client now.
//!
//! A client's statement names stay with the client; on the server every statement goes by its shared name
//! (`pool::prepared`). A Parse registers the client's name and prepares the statement on the connection unless the
//! connection has it already (then pgsplit answers the ParseComplete itself). A Bind, Describe, `EXECUTE` or
//! `DEALLOCATE` of a statement the connection lacks prepares it first, unseen by the client. A Close is answered
//! here: the server-side statement may serve other clients. Every message sent is entered in [`Replies`], so the
//! client gets exactly the answers it asked for, in order.

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};

use super::outflow::Outflow;
use super::plan::{Analysis, SqlPrepared};
use super::replies::{Answer, Refusal, Request};

/// What the server owes, with what to take back about statements when a request fails.
pub type Replies = super::replies::Replies<Undo>;
type Expected = super::replies::Expected<Undo>;
use crate::fast_hash::FastHashMap;
use crate::pool::prepared::{
    Definition, NAME_PREFIX, PreparedCache, ServerStatement, StatementTable, put_name, put_sql_name,
};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::extended::{self, Target};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::{self, put_cstr};

/// What to take back when a request fails or is dropped unanswered (an earlier message in its batch failed) — and,
/// for a statement's Parse or Describe, which statement a successful answer is about (`exchange` keeps what the
/// server said of it).
#[derive(Debug)]
pub enum Undo {
    /// A statement that was not prepared: the client's name for it (if the client named it), and whether the
    /// server connection was recorded as having it.
    Prepared {
        name: Option<Box<[u8]>>,
        statement: Arc<ServerStatement>,
        cached: bool,
    },
    /// A statement that was not closed: the client still has it (and, if `cached`, the server connection too).
    Closed {
        name: Box<[u8]>,
        statement: ClientStatement,
        cached: bool,
    },
    /// A Describe of this statement: nothing to take back; its answer is the statement's description.
    Described(Arc<ServerStatement>),
}

/// A statement as one client has it: the server-side statement and what it does (for routing each execution).
#[derive(Debug, Clone)]
pub struct ClientStatement {
    pub server: Arc<ServerStatement>,
    pub analysis: Arc<Analysis>,
}

/// The client's prepared statements by the client's names, and its unnamed statement's analysis.
#[derive(Debug)]
pub struct Statements {
    /// FxHash: the names are this client's own; colliding ones would slow only its own session.
    named: FastHashMap<Box<[u8]>, ClientStatement>,
    /// Boxed: most sessions never use the unnamed statement, and every session's task carries this struct.
    unnamed: Option<Box<Analysis>>,
    /// At most this many named statements (`proxy.max_prepared_statements`): what a client keeps here is
    /// pgsplit's memory, not a server's.
    max: usize,
}

/// A server-side statement name no client can create (clients' names with pgsplit's prefix are renamed) and
/// pgsplit never uses: a Describe of it fails, which is how a refused request makes the server skip to Sync.
const NEVER_PREPARED: &[u8] = b"pgsplit_never_prepared";

/// What a client is told when it would hold more named statements than pgsplit keeps.
pub fn prepared_statement_limit(max: usize) -> SqlError {
    SqlError::new(
        Severity::Error,
        code::CONFIGURATION_LIMIT_EXCEEDED,
        format!("too many prepared statements: pgsplit keeps at most {max} per client (proxy.max_prepared_statements)"),
    )
    .with_hint("Close or DEALLOCATE statements no longer used, or raise proxy.max_prepared_statements.")
}

/// Where the client's messages go: the outflow to the server over the client's read buffer, what the server will
/// owe, and the statements the server connection has.
pub struct ToServer<'a> {
    pub flow: &'a mut Outflow,
    pub source: &'a mut BytesMut,
    pub replies: &'a mut Replies,
    pub cache: &'a mut PreparedCache,
}

impl ToServer<'_> {
    /// The message of `len` bytes at the scan position goes through unchanged.
    pub fn pass(&mut self, len: usize) {
        self.flow.pass(self.source, len);
    }

    /// The message of `len` bytes at the scan position is dropped.
    fn skip(&mut self, len: usize) {
        self.flow.skip(self.source, len);
    }

    /// The message of `len` bytes at the scan position is replaced by what `write` makes of its body.
    fn replace(&mut self, len: usize, write: impl FnOnce(&mut BytesMut, &[u8])) {
        let out = self.flow.insert(self.source);
        write(out, &self.source[HEADER_LEN..len]);
        self.source.advance(len);
    }

    /// Bytes sent ahead of the message at the scan position.
    fn inject(&mut self, write: impl FnOnce(&mut BytesMut)) {
        write(self.flow.insert(self.source));
    }

    /// The body of the message of `len` bytes at the scan position.
    fn body(&self, len: usize) -> &[u8] {
        let at = self.flow.scanned();
        &self.source[at + HEADER_LEN..at + len]
    }

    /// Makes sure the connection has `statement` before the message at the scan position runs, preparing it
    /// unseen if not. `before_query`: that message is a simple Query, after which no Sync would come to end an
    /// error in the preparation.
    fn ensure(&mut self, statement: &Arc<ServerStatement>, before_query: bool) {
        if self.cache.touch(statement.id) {
            return;
        }
        self.record(statement);
        let undo = Undo::Prepared {
            name: None,
            statement: statement.clone(),
            cached: true,
        };
        match &statement.definition {
            Definition::Parse(definition) => {
                self.inject(|out| extended::put_parse(out, |o| statement.put_name(o), definition));
                self.replies
                    .push(Expected::new(Request::Parse, Answer::Hidden).undo(undo));
                if before_query {
                    self.inject(extended::put_sync);
                    self.replies.push(Expected::new(Request::Sync, Answer::Hidden));
                }
            }
            Definition::Sql(rest) => {
                let prepare = prepare_sql(statement.id, rest);
                if before_query {
                    self.inject(|out| messages::query(out, &prepare));
                    self.replies
                        .push(Expected::new(Request::Sync, Answer::Hidden).undo(undo));
                } else {
                    // Inside an extended-protocol batch: run the PREPARE through the unnamed statement.
                    self.inject(|out| {
                        extended::put_parse(out, |o| o.put_u8(0), &[&prepare[..], &[0, 0, 0][..]].concat());
                        extended::put_bind_unnamed(out);
                        extended::put_execute_unnamed(out);
                    });
                    self.replies.push(Expected::new(Request::Parse, Answer::Hidden));
                    self.replies.push(Expected::new(Request::Bind, Answer::Hidden));
                    self.replies
                        .push(Expected::new(Request::Execute, Answer::Hidden).undo(undo));
                }
            }
        }
    }

    /// Records that the connection has `statement`, closing the one it evicts on the server.
    fn record(&mut self, statement: &Arc<ServerStatement>) {
        if let Some(evicted) = self.cache.insert(statement.clone()) {
            self.inject(|out| extended::put_close_statement(out, |o| put_name(evicted, o)));
            self.replies.push(Expected::new(Request::Close, Answer::Hidden));
        }
    }
}

/// `PREPARE pgsplit_<id> <rest>`.
fn prepare_sql(id: u64, rest: &str) -> Vec<u8> {
    let mut sql = BytesMut::new();
    sql.put_slice(b"PREPARE ");
    put_sql_name(id, &mut sql);
    sql.put_slice(rest.as_bytes());
    sql.to_vec()
}

/// A client name that is not the client's statement but looks like one of pgsplit's: it must not reach a
/// server as it is, where it could name another client's statement.
fn unknown_name(name: &[u8]) -> Option<Vec<u8>> {
    name.starts_with(NAME_PREFIX.as_bytes())
        .then(|| [b"pgsplit_unknown_", name].concat())
}

impl Statements {
    pub fn new(max: usize) -> Statements {
        Statements {
            named: FastHashMap::default(),
            unnamed: None,
            max,
        }
    }

    /// The most named statements the client may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether one more named statement would be past the limit.
    fn full(&self) -> bool {
        self.named.len() >= self.max
    }

    /// What running the statement a Bind names does; `None` if the client has no such statement.
    pub fn for_bind(&self, body: &[u8]) -> Option<&Analysis> {
        let (_, name, _) = extended::bind_fields(body)?;
        self.analysis(name)
    }

    /// What the statement a Describe names does, if it names one the client has.
    pub fn for_describe(&self, body: &[u8]) -> Option<&Analysis> {
        match extended::target(body)? {
            Target::Statement(name) => self.analysis(name),
            Target::Portal(_) => None,
        }
    }

    /// The statement a SQL `EXECUTE` names, if the client has it.
    pub fn named(&self, name: &str) -> Option<&ClientStatement> {
        self.named.get(name.as_bytes())
    }

    /// What running the statement of this name does (`""`: the unnamed one); `None` if the client has none.
    pub fn for_name(&self, name: &[u8]) -> Option<&Analysis> {
        self.analysis(name)
    }

    fn analysis(&self, name: &[u8]) -> Option<&Analysis> {
        if name.is_empty() {
            self.unnamed.as_deref()
        } else {
            self.named.get(name).map(|s| &*s.analysis)
        }
    }

    /// Whether the client has a statement of this name.
    pub fn has(&self, name: &[u8]) -> bool {
        self.named.contains_key(name)
    }

    /// The client's statement of this name.
    pub fn get(&self, name: &[u8]) -> Option<&ClientStatement> {
        self.named.get(name)
    }

    /// A Parse answered without a server (the statement is one a server prepared for such a client): the client
    /// has it under `name`, to be prepared on the connection that runs it. False if the name is taken or the
    /// client is at its limit: a server must answer then.
    pub fn adopt(&mut self, name: &[u8], server: Arc<ServerStatement>, analysis: Analysis) -> bool {
        if self.full() || self.named.contains_key(name) {
            return false;
        }
        let analysis = Arc::new(analysis);
        self.named.insert(name.into(), ClientStatement { server, analysis });
        true
    }

    /// Takes back a statement the client created in a unit that will run again (and create it again).
    pub fn forget(&mut self, name: &[u8]) {
        self.named.remove(name);
    }

    /// A follower refused the statement as a write: its later runs go to the leader (`""`: the unnamed one).
    pub fn mark_known_write(&mut self, name: &[u8]) {
        let analysis = if name.is_empty() {
            self.unnamed.as_deref_mut()
        } else {
            self.named.get_mut(name).map(|s| Arc::make_mut(&mut s.analysis))
        };
        if let Some(analysis) = analysis {
            analysis.mark_known_write();
        }
    }

    /// The client has no statements (`DISCARD ALL`, `DEALLOCATE ALL` succeeded).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }

    /// Takes back what a failed or skipped request did.
    pub fn undo(&mut self, undo: Undo, cache: Option<&mut PreparedCache>) {
        match undo {
            Undo::Prepared {
                name,
                statement,
                cached,
            } => {
                if let Some(name) = name
                    && self.named.get(&name).is_some_and(|s| s.server.id == statement.id)
                {
                    self.named.remove(&name);
                }
                if let (true, Some(cache)) = (cached, cache) {
                    cache.remove(statement.id);
                }
            }
            Undo::Described(_) => {}
            Undo::Closed {
                name,
                statement,
                cached,
            } => {
                if let (true, Some(cache)) = (cached, cache) {
                    cache.insert(statement.server.clone());
                }
                self.named.entry(name).or_insert(statement);
            }
        }
    }

    /// A Parse of `len` bytes at the scan position, whose query string is `analysis` (None: its fields could not
    /// be read).
    pub fn parse(&mut self, to: &mut ToServer, len: usize, table: &StatementTable, analysis: Option<Analysis>) {
        let (Some((name, definition)), Some(analysis)) = (extended::parse_fields(to.body(len)), analysis) else {
            // Malformed: the server says what is wrong with it.
            to.pass(len);
            to.replies.push(Expected::new(Request::Parse, Answer::Server));
            return;
        };
        if name.is_empty() {
            // The box is kept from one unnamed statement to the next: drivers parse one per query.
            match &mut self.unnamed {
                Some(unnamed) => **unnamed = analysis,
                None => self.unnamed = Some(Box::new(analysis)),
            }
            to.pass(len);
            to.replies.push(Expected::new(Request::Parse, Answer::Server));
            return;
        }
        if let Some(existing) = self.named.get(name) {
            // A name the client already uses: the server must refuse it as it would on a direct connection
            // (42P05), which it does for a Parse under the existing statement's name.
            let server = existing.server.clone();
            to.ensure(&server, false);
            to.replace(len, |out, body| {
                let (_, definition) = extended::parse_fields(body).expect("read above");
                extended::put_parse(out, |o| server.put_name(o), definition);
            });
            to.replies.push(Expected::new(Request::Parse, Answer::Server));
            return;
        }
        if self.full() {
            // In the Parse's place the server gets a request that fails, so it skips the rest of the batch as it
            // would after a failed Parse; the client gets the limit's error.
            to.replace(len, |out, _| {
                extended::put_describe_statement(out, |o| put_cstr(o, NEVER_PREPARED))
            });
            to.replies.push(Expected::new(
                Request::Describe,
                Answer::Refused(Refusal::PreparedStatementLimit),
            ));
            return;
        }
        let server = table.intern(definition);
        let name: Box<[u8]> = name.into();
        let statement = ClientStatement {
            server: server.clone(),
            analysis: Arc::new(analysis),
        };
        self.named.insert(name.clone(), statement);
        let undo = |cached| Undo::Prepared {
            name: Some(name.clone()),
            statement: server.clone(),
            cached,
        };
        if to.cache.touch(server.id) {
            to.skip(len);
            to.replies
                .push(Expected::new(Request::Parse, Answer::Made).undo(undo(false)));
            return;
        }
        to.record(&server);
        to.replace(len, |out, body| {
            let (_, definition) = extended::parse_fields(body).expect("read above");
            extended::put_parse(out, |o| server.put_name(o), definition);
        });
        to.replies
            .push(Expected::new(Request::Parse, Answer::Server).undo(undo(true)));
    }

    /// A Bind of `len` bytes at the scan position.
    pub fn bind(&self, to: &mut ToServer, len: usize) {
        let statement = extended::bind_fields(to.body(len))
            .filter(|(_, name, _)| !name.is_empty())
            .map(|(_, name, _)| (self.named.get(name).cloned(), unknown_name(name)));
        match statement {
            Some((Some(statement), _)) => {
                to.ensure(&statement.server, false);
                to.replace(len, |out, body| {
                    let (portal, _, rest) = extended::bind_fields(body).expect("read above");
                    extended::put_bind(out, portal, |o| statement.server.put_name(o), rest);
                });
            }
            Some((None, Some(guarded))) => to.replace(len, |out, body| {
                let (portal, _, rest) = extended::bind_fields(body).expect("read above");
                extended::put_bind(out, portal, |o| put_cstr(o, &guarded), rest);
            }),
            _ => to.pass(len),
        }
        to.replies.push(Expected::new(Request::Bind, Answer::Server));
    }

    /// A Describe of `len` bytes at the scan position.
    pub fn describe(&self, to: &mut ToServer, len: usize) {
        let statement = match extended::target(to.body(len)) {
            Some(Target::Statement(name)) if !name.is_empty() => {
                Some((self.named.get(name).cloned(), unknown_name(name)))
            }
            _ => None,
        };
        let mut expected = Expected::new(Request::Describe, Answer::Server);
        match statement {
            Some((Some(statement), _)) => {
                to.ensure(&statement.server, false);
                to.replace(len, |out, _| {
                    extended::put_describe_statement(out, |o| statement.server.put_name(o))
                });
                expected = expected.undo(Undo::Described(statement.server));
            }
            Some((None, Some(guarded))) => to.replace(len, |out, _| {
                extended::put_describe_statement(out, |o| put_cstr(o, &guarded))
            }),
            _ => to.pass(len),
        }
        to.replies.push(expected);
    }

    /// A Close of `len` bytes at the scan position. Closing a named statement is answered here: on the server it
    /// stays prepared for whoever uses it next (a Close of a statement that does not exist succeeds too).
    pub fn close(&mut self, to: &mut ToServer, len: usize) {
        match extended::target(to.body(len)) {
            Some(Target::Statement(name)) if !name.is_empty() => {
                let closed = self.named.remove_entry(name);
                to.skip(len);
                let expected = Expected::new(Request::Close, Answer::Made);
                to.replies.push(match closed {
                    Some((name, statement)) => expected.undo(Undo::Closed {
                        name,
                        statement,
                        cached: false,
                    }),
                    None => expected,
                });
            }
            target => {
                if target == Some(Target::Statement(b"")) {
                    self.unnamed = None;
                }
                to.pass(len);
                to.replies.push(Expected::new(Request::Close, Answer::Server));
            }
        }
    }

    /// A Query of `len` bytes at the scan position that is one SQL `PREPARE`, `EXECUTE` or `DEALLOCATE`:
    /// renames the statement. Returns the ReadyForQuery entry to expect (with its undo).
    pub fn sql(
        &mut self,
        to: &mut ToServer,
        len: usize,
        table: &StatementTable,
        prepared: &SqlPrepared,
        analysis: &Analysis,
        in_batch: bool,
    ) -> Option<Undo> {
        let before_query = !in_batch;
        match prepared {
            SqlPrepared::Prepare { name, rest } => {
                let server = match self.named.get(name.as_bytes()) {
                    // Already the client's: the server must refuse it (42P05) under the existing name.
                    Some(existing) => {
                        let server = existing.server.clone();
                        to.ensure(&server, before_query);
                        to.replace(len, |out, _| messages::query(out, &prepare_sql(server.id, rest)));
                        return None;
                    }
                    None if self.full() => {
                        // A statement that fails in the PREPARE's place, with the limit's error.
                        let refuse = refuse_in_sql(&prepared_statement_limit(self.max));
                        to.replace(len, |out, _| messages::query(out, refuse.as_bytes()));
                        return None;
                    }
                    None => table.sql(rest),
                };
                to.record(&server);
                to.replace(len, |out, _| messages::query(out, &prepare_sql(server.id, rest)));
                let name: Box<[u8]> = name.as_bytes().into();
                self.named.insert(
                    name.clone(),
                    ClientStatement {
                        server: server.clone(),
                        analysis: Arc::new(analysis.clone()),
                    },
                );
                Some(Undo::Prepared {
                    name: Some(name),
                    statement: server,
                    cached: true,
                })
            }
            SqlPrepared::Execute { name, at } => {
                match self.named.get(name.as_bytes()).cloned() {
                    Some(statement) => {
                        to.ensure(&statement.server, before_query);
                        to.replace(len, |out, body| {
                            rename_in_query(out, body, *at, |o| put_sql_name(statement.server.id, o))
                        });
                    }
                    None => guard_in_query(to, len, name, *at),
                }
                None
            }
            SqlPrepared::Deallocate { name: Some((name, at)) } => match self.named.remove_entry(name.as_bytes()) {
                Some((name, statement)) => {
                    to.ensure(&statement.server, before_query);
                    to.cache.remove(statement.server.id);
                    to.replace(len, |out, body| {
                        rename_in_query(out, body, *at, |o| put_sql_name(statement.server.id, o))
                    });
                    Some(Undo::Closed {
                        name,
                        statement,
                        cached: true,
                    })
                }
                None => {
                    guard_in_query(to, len, name, *at);
                    None
                }
            },
            SqlPrepared::Deallocate { name: None } => {
                to.pass(len);
                None
            }
        }
    }
}

/// SQL that fails with `error`'s SQLSTATE and message wherever it runs (a standby too). The message is pgsplit's
/// own text: no quote in it can end the literal early, which the assertion checks.
fn refuse_in_sql(error: &SqlError) -> String {
    debug_assert!(!error.message.contains('\''));
    format!(
        "DO $pgsplit$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{}'; END$pgsplit$",
        error.code, error.message
    )
}

/// A Query whose text has the name at `at` (byte range of the SQL text) replaced by what `name` writes.
fn rename_in_query(out: &mut BytesMut, body: &[u8], at: (usize, usize), name: impl FnOnce(&mut BytesMut)) {
    let sql = &body[..body.len().saturating_sub(1)];
    let mut text = BytesMut::with_capacity(sql.len() + 16);
    text.put_slice(&sql[..at.0]);
    name(&mut text);
    text.put_slice(&sql[at.1..]);
    messages::query(out, &text);
}

/// An `EXECUTE` or `DEALLOCATE` of a statement the client does not have goes to the server as it is (which says
/// it does not exist), unless its name could be one of pgsplit's.
fn guard_in_query(to: &mut ToServer, len: usize, name: &str, at: (usize, usize)) {
    match unknown_name(name.as_bytes()) {
        Some(guarded) => to.replace(len, |out, body| {
            rename_in_query(out, body, at, |o| {
                o.put_u8(b'"');
                o.put_slice(&guarded);
                o.put_u8(b'"');
            })
        }),
        None => to.pass(len),
    }
}
