//! What the classifier says about a statement and about a whole query string: access, reason, and the statement kinds
//! the session layer tracks (transactions, settings, prepared statements, pins).
//!
//! Plain data. Names and values are [`Span`]s into the query text, never copies; this file never looks at SQL.

use super::hidden::HiddenState;
use super::lexer::Span;

/// Where a statement may run. `Read` only when it is provably read-only (SPEC §3.1); anything else is `Write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// Why a statement got its [`Access`]: short static names for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A read-only query: SELECT / VALUES / TABLE / WITH / SHOW / EXPLAIN / COPY … TO STDOUT / FETCH.
    Read,
    /// Session-state statements a standby accepts: SET, RESET, DISCARD, DEALLOCATE, UNLISTEN, SET SESSION
    /// CHARACTERISTICS.
    Session,
    /// Transaction control: COMMIT / ROLLBACK / SAVEPOINT / SET TRANSACTION (read), plain BEGIN (write: SPEC §3.2).
    Transaction,
    /// BEGIN / START TRANSACTION READ ONLY.
    ReadOnlyTransaction,
    /// Serializable isolation, which a standby refuses.
    Serializable,
    /// DML, DDL, utility commands, and any statement the classifier does not know.
    Write,
    /// INSERT / UPDATE / DELETE / MERGE nested inside a query (a data-modifying CTE).
    CteWrite,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE.
    Locking,
    /// SELECT … INTO creates a table.
    SelectInto,
    /// A call of a function that may write (see `FunctionSet`).
    Function,
    /// EXPLAIN ANALYZE runs the statement, and it writes.
    ExplainAnalyze,
    /// EXECUTE of a prepared statement: the session layer knows what it is, the classifier does not.
    Execute,
    /// Session state that pins the client to one leader connection: LISTEN, WITH HOLD cursors, temporary objects.
    Pin,
    /// Nothing but whitespace, comments and semicolons.
    Empty,
    /// Text that does not lex (unterminated string, comment or dollar quote) or a statement whose shape is unknown.
    Unparsable,
    /// A read a hot standby refuses or answers otherwise: an UNLOGGED or temporary relation, a setting a standby
    /// forces (`transaction_read_only`), `pg_is_in_recovery()` (see `standby`).
    LeaderOnly,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Read => "read",
            Reason::Session => "session",
            Reason::Transaction => "transaction",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Serializable => "serializable",
            Reason::Write => "write",
            Reason::CteWrite => "cte_write",
            Reason::Locking => "locking",
            Reason::SelectInto => "select_into",
            Reason::Function => "function",
            Reason::ExplainAnalyze => "explain_analyze",
            Reason::Execute => "execute",
            Reason::Pin => "pin",
            Reason::Empty => "empty",
            Reason::Unparsable => "unparsable",
            Reason::LeaderOnly => "leader_only",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavepointOp {
    /// SAVEPOINT name
    Define,
    /// `RELEASE [SAVEPOINT] name`
    Release,
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name` — not the end of the transaction.
    RollbackTo,
}

/// A setting's name: as written (a span covering `name` or `a.b`, possibly quoted) or, for the special syntaxes
/// (`SET TIME ZONE`, `SET SCHEMA`, `SET NAMES`, `SHOW TRANSACTION ISOLATION LEVEL`, …), the setting they stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Written(Span),
    Setting(&'static str),
}

impl Name {
    /// The name's text: as written in `sql`, or the canonical setting name.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        match self {
            Name::Written(span) => span.text(sql),
            Name::Setting(name) => name,
        }
    }

    /// Is this the setting `setting` (lower case)? Settings compare without case, quotes or spaces, like the
    /// server's GUC lookup: `"Search_Path"` and `search_path` are the same setting.
    pub fn is(&self, sql: &str, setting: &str) -> bool {
        self.folded(sql).eq(setting.bytes())
    }

    /// The setting's name as the server looks it up: `"Search_Path"` → `search_path`.
    pub fn setting(&self, sql: &str) -> String {
        String::from_utf8_lossy(&self.folded(sql).collect::<Vec<u8>>()).into_owned()
    }

    fn folded<'a>(&self, sql: &'a str) -> impl Iterator<Item = u8> + 'a {
        self.text(sql)
            .bytes()
            .filter(|b| !matches!(b, b'"' | b' ' | b'\t' | b'\n' | b'\r'))
            .map(|b| b.to_ascii_lowercase())
    }
}

/// What a statement is, as far as the session layer must track it. Names and values are spans of the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// BEGIN / START TRANSACTION with the modes given (`None`: not given; the session default applies).
    Begin {
        read_only: Option<bool>,
        isolation: Option<Isolation>,
    },
    /// `COMMIT | END [AND [NO] CHAIN]`.
    Commit {
        chain: bool,
    },
    /// `ROLLBACK | ABORT [AND [NO] CHAIN]` (ROLLBACK TO SAVEPOINT is a `Savepoint`).
    Rollback {
        chain: bool,
    },
    Savepoint {
        op: SavepointOp,
        name: Span,
    },
    /// SET [SESSION | LOCAL] TRANSACTION …: this transaction only.
    SetTransaction {
        read_only: Option<bool>,
        isolation: Option<Isolation>,
    },
    /// SET SESSION CHARACTERISTICS AS TRANSACTION …: the session's defaults.
    SetSessionCharacteristics {
        read_only: Option<bool>,
        isolation: Option<Isolation>,
    },
    /// SET [SESSION | LOCAL] name {TO | =} value, and the special forms. `value: None` means DEFAULT (also
    /// `SET TIME ZONE LOCAL`, `SET ROLE NONE`, bare `SET NAMES`).
    Set {
        local: bool,
        name: Name,
        value: Option<Span>,
    },
    Reset {
        name: Name,
    },
    ResetAll,
    /// SHOW name; `None` for SHOW ALL.
    Show {
        name: Option<Name>,
    },
    /// DISCARD ALL (`all`) or DISCARD PLANS / SEQUENCES / TEMP.
    Discard {
        all: bool,
    },
    Listen {
        channel: Span,
    },
    /// UNLISTEN channel, or UNLISTEN * (`all`).
    Unlisten {
        all: bool,
    },
    /// PREPARE name AS …; the statement's access is that of the prepared statement.
    Prepare {
        name: Span,
    },
    Execute {
        name: Span,
    },
    /// `DEALLOCATE [PREPARE] name`; `None` for ALL.
    Deallocate {
        name: Option<Span>,
    },
    DeclareCursor {
        name: Span,
        with_hold: bool,
    },
    /// CREATE [GLOBAL | LOCAL] TEMP / TEMPORARY …, CREATE … pg_temp.name, SELECT … INTO TEMP.
    CreateTemp,
    /// COPY: `from_stdin` for COPY … FROM STDIN, `to_stdout` for COPY … TO STDOUT.
    Copy {
        from_stdin: bool,
        to_stdout: bool,
    },
    /// Anything else: queries, DML, DDL, utility commands.
    Other,
}

/// One statement of a query string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    /// From its first token to its last (without the `;`).
    pub span: Span,
    pub kind: StatementKind,
    pub access: Access,
    pub reason: Reason,
    /// It calls pg_advisory_lock / pg_try_advisory_lock (or _shared): the session pins on it.
    pub session_advisory_lock: bool,
    /// Session state it may change that its text does not show (DO, CALL, user functions, `set_config`).
    pub hidden: HiddenState,
}

/// The verdict on a whole query string, folded from its statements with [`Classification::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// `Read` only if every statement is.
    pub access: Access,
    /// The first writing statement's reason; if none writes, the first statement's; `Empty` for no statements.
    pub reason: Reason,
    /// Non-empty statements.
    pub statements: u32,
    /// Some statement takes a session-level advisory lock.
    pub session_advisory_lock: bool,
}

impl Classification {
    /// No statements yet: an empty query string (any server answers EmptyQueryResponse).
    pub const EMPTY: Classification = Classification {
        access: Access::Read,
        reason: Reason::Empty,
        statements: 0,
        session_advisory_lock: false,
    };

    pub fn push(&mut self, statement: &Statement) {
        if self.statements == 0 || (self.access == Access::Read && statement.access == Access::Write) {
            self.access = statement.access;
            self.reason = statement.reason;
        }
        self.statements = self.statements.saturating_add(1);
        self.session_advisory_lock |= statement.session_advisory_lock;
    }

    /// Only whitespace, comments and semicolons.
    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }
}
