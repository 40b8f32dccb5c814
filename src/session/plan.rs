//! What a client's Query or Parse asks of the router, and what it changes in the session: whether a transaction is
//! open at this point of the stream, whether the session becomes pinned to its leader connection, which settings
//! its `SET`s change (applied once the server has accepted them), and which SQL-level prepared statement it names.
//! Pure: classification only, no I/O.

use super::signal::Signal;
use crate::pool::Settings;
use crate::router::{
    Access, Classification, FunctionSet, Isolation, Reason, RouteReason, SavepointOp, Span, StatementKind, Wants,
    statements,
};

/// Session facts that follow the client's stream of statements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// A BEGIN was sent and its COMMIT/ROLLBACK not yet.
    pub in_transaction: bool,
    /// State only one server connection has (LISTEN, temp tables, session advisory locks, WITH HOLD cursors):
    /// the client keeps its leader connection until DISCARD ALL or disconnect.
    pub pinned: bool,
}

/// A session-level setting change, applied to the client's settings once its statement succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set {
        name: String,
        expression: String,
    },
    Reset(String),
    ResetAll,
    /// Session state may change unseen (DO, CALL, a user function, `set_config`): the connection is checked once
    /// the unit is over (`hidden`), whether it succeeded or not; with `settings`, every setting is read back.
    Unseen {
        settings: bool,
    },
    /// `set_config('name', …, false)`: the setting is read back once the unit is over.
    Capture(String),
    /// A transaction or savepoint begins or ends here, among the unit's setting changes: what a SET changed inside
    /// a transaction or after a savepoint that is rolled back is undone, as the server undoes it (see [`TxUndo`]).
    Tx(TxMark),
}

/// Where a transaction or savepoint begins or ends (savepoint names as the server resolves them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxMark {
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
}

/// The client's settings (`wanted`) and its server connection's as they were where the open transaction began
/// and at each of its savepoints, to be put back when the server rolls back to there. SET (not SET LOCAL) inside a
/// transaction lasts past it only if it commits.
#[derive(Debug, Default)]
pub struct TxUndo {
    /// Innermost last; the first, unnamed, is the transaction's start.
    saved: Vec<(Option<String>, Settings, Settings)>,
}

impl TxUndo {
    /// Applies a finished unit's `changes` in order to the client's settings and its connection's. `failed`: the
    /// transaction was already failed when the unit began (its COMMIT rolls back).
    pub fn apply(&mut self, changes: &[Change], mut failed: bool, wanted: &mut Settings, conn: &mut Settings) {
        for change in changes {
            let Change::Tx(mark) = change else {
                change.apply(wanted);
                change.apply(conn);
                continue;
            };
            match mark {
                TxMark::Begin if self.saved.is_empty() => {
                    self.saved.push((None, wanted.clone(), conn.clone()));
                }
                // BEGIN inside a transaction is only a warning.
                TxMark::Begin => {}
                TxMark::Commit if !failed => self.saved.clear(),
                TxMark::Commit | TxMark::Rollback => {
                    if let Some((_, w, c)) = self.saved.drain(..).next() {
                        (*wanted, *conn) = (w, c);
                    }
                }
                TxMark::Savepoint(name) if !self.saved.is_empty() => {
                    self.saved.push((Some(name.clone()), wanted.clone(), conn.clone()));
                }
                // Outside a transaction block the server refuses it (and the unit fails).
                TxMark::Savepoint(_) => {}
                TxMark::Release(name) => {
                    if let Some(at) = self.savepoint(name) {
                        self.saved.truncate(at);
                    }
                }
                TxMark::RollbackTo(name) => {
                    if let Some(at) = self.savepoint(name) {
                        self.saved.truncate(at + 1);
                        let (_, w, c) = &self.saved[at];
                        (*wanted, *conn) = (w.clone(), c.clone());
                    }
                }
            }
            if matches!(
                mark,
                TxMark::Begin | TxMark::Commit | TxMark::Rollback | TxMark::RollbackTo(_)
            ) {
                failed = false;
            }
        }
    }

    /// No transaction is open any more (the server said so): nothing is left to undo.
    pub fn ended(&mut self) {
        self.saved.clear();
    }

    /// The innermost savepoint named `name`.
    fn savepoint(&self, name: &str) -> Option<usize> {
        self.saved.iter().rposition(|(n, _, _)| n.as_deref() == Some(name))
    }
}

impl Change {
    pub fn apply(&self, settings: &mut Settings) {
        match self {
            Change::Set { name, expression } => settings.set_sql(name, expression),
            Change::Reset(name) => settings.reset(name),
            Change::ResetAll => settings.reset_all(),
            // Read from the server after the unit, not known from the text.
            Change::Unseen { .. } | Change::Capture(_) | Change::Tx(_) => {}
        }
    }
}

/// What a query string is, once and for all: its verdict and what it does to the session. Computed when a Query
/// or Parse arrives; a named statement keeps its analysis for every later Bind.
#[derive(Debug, Clone)]
pub struct Analysis {
    summary: Classification,
    first_is_begin: bool,
    /// Every writing statement is a plain BEGIN (which a read-only session may run on a follower).
    writes_are_plain_begins: bool,
    effects: Vec<Effect>,
    /// The text is one statement about pgsplit's own settings, which pgsplit answers itself.
    pub local: Option<Local>,
    /// The text is one SQL `PREPARE`, `EXECUTE` or `DEALLOCATE`: the session renames the statement it names.
    pub prepared: Option<SqlPrepared>,
    /// A follower refused the text as a write (25006), or its shape once was: it runs on the leader.
    known_write: bool,
}

/// A statement pgsplit answers itself (SPEC §3.8), recognised only alone in its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `SHOW pgsplit.route`: where the last unit ran and why.
    ShowRoute,
    /// `SHOW pgsplit.last_write_lsn`: the session's read-your-writes floor.
    ShowLastWriteLsn,
    /// `SET [SESSION | LOCAL] pgsplit.min_lsn {TO | =} value` with the value's text; `None` for `RESET
    /// pgsplit.min_lsn` and `SET … TO DEFAULT`.
    SetMinLsn(Option<String>),
    /// `SELECT pg_terminate_backend(pid)` / `pg_cancel_backend(pid)`: answered only for a pid pgsplit issued.
    Signal(Signal),
}

/// What a statement does to the session, in the order of the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Begin,
    End {
        chain: bool,
        rollback: bool,
    },
    Pin,
    /// DISCARD ALL: settings reset, pins and prepared statements gone.
    DiscardAll,
    /// DEALLOCATE ALL: prepared statements gone.
    DeallocateAll,
    Change(Change),
}

/// A query string that is exactly one statement about SQL-level prepared statements. Names are as the server
/// knows them (unquoted identifiers folded to lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlPrepared {
    /// `PREPARE name` and the rest of the statement from just after the name (`[(types)] AS statement`).
    Prepare { name: String, rest: String },
    /// `EXECUTE name[(arguments)]`: the byte range of the name in the text, to be replaced.
    Execute { name: String, at: (usize, usize) },
    /// `DEALLOCATE [PREPARE] name`: the byte range of the name; `None` for ALL.
    Deallocate { name: Option<(String, (usize, usize))> },
}

/// The setting a client raises its read-your-writes floor with.
pub const MIN_LSN: &str = "pgsplit.min_lsn";

/// Where a unit should run and the setting changes it makes.
#[derive(Debug)]
pub struct Plan {
    pub wants: Wants,
    pub changes: Vec<Change>,
}

/// Classifies one SQL string (a Query's, or a Parse's statement), lexed as the server lexes it with the session's
/// `standard_conforming_strings` (`conforming`).
pub fn analyze(sql: &str, functions: &FunctionSet, conforming: bool) -> Analysis {
    let mut analysis = Analysis {
        summary: Classification::EMPTY,
        first_is_begin: false,
        writes_are_plain_begins: true,
        effects: Vec::new(),
        local: None,
        prepared: None,
        known_write: false,
    };
    let mut local = None;
    for statement in statements(sql, functions).standard_conforming_strings(conforming) {
        let kind = statement.kind;
        if analysis.summary.statements == 0 {
            analysis.first_is_begin = matches!(kind, StatementKind::Begin { .. });
            analysis.prepared = sql_prepared(sql, kind);
        } else {
            analysis.prepared = None;
        }
        let effects = &mut analysis.effects;
        local = match kind {
            StatementKind::Show { name: Some(name) } if name.is(sql, "pgsplit.route") => Some(Local::ShowRoute),
            StatementKind::Show { name: Some(name) } if name.is(sql, "pgsplit.last_write_lsn") => {
                Some(Local::ShowLastWriteLsn)
            }
            StatementKind::Set { name, value, .. } if name.is(sql, MIN_LSN) => {
                Some(Local::SetMinLsn(value.map(|v| v.text(sql).to_owned())))
            }
            StatementKind::Reset { name } if name.is(sql, MIN_LSN) => Some(Local::SetMinLsn(None)),
            _ => None,
        };
        match kind {
            StatementKind::Begin { .. } => effects.push(Effect::Begin),
            StatementKind::Commit { chain } => effects.push(Effect::End { chain, rollback: false }),
            StatementKind::Rollback { chain } => effects.push(Effect::End { chain, rollback: true }),
            StatementKind::Savepoint { op, name } => {
                let name = identifier(name.text(sql));
                effects.push(Effect::Change(Change::Tx(match op {
                    SavepointOp::Define => TxMark::Savepoint(name),
                    SavepointOp::Release => TxMark::Release(name),
                    SavepointOp::RollbackTo => TxMark::RollbackTo(name),
                })));
            }
            StatementKind::Listen { .. } | StatementKind::CreateTemp => effects.push(Effect::Pin),
            StatementKind::DeclareCursor { with_hold: true, .. } => effects.push(Effect::Pin),
            StatementKind::Set {
                local: false,
                name,
                value,
            } => {
                let name = name.setting(sql);
                effects.push(Effect::Change(match value {
                    Some(value) => Change::Set {
                        name,
                        expression: value.text(sql).to_owned(),
                    },
                    None => Change::Reset(name),
                }));
            }
            StatementKind::Reset { name } => effects.push(Effect::Change(Change::Reset(name.setting(sql)))),
            StatementKind::ResetAll => effects.push(Effect::Change(Change::ResetAll)),
            StatementKind::Discard { all: true } => effects.push(Effect::DiscardAll),
            StatementKind::Deallocate { name: None } => effects.push(Effect::DeallocateAll),
            _ => {}
        }
        if statement.session_advisory_lock {
            analysis.effects.push(Effect::Pin);
        }
        if statement.hidden.unseen {
            let settings = statement.hidden.settings;
            analysis.effects.push(Effect::Change(Change::Unseen { settings }));
        }
        if let Some(setting) = statement.hidden.setting {
            let name = crate::router::hidden::literal_setting(setting.text(sql));
            analysis.effects.push(Effect::Change(Change::Capture(name)));
        }
        let plain_begin = matches!(kind, StatementKind::Begin { read_only: None, isolation }
            if isolation != Some(Isolation::Serializable));
        analysis.writes_are_plain_begins &= statement.access == Access::Read || plain_begin;
        analysis.summary.push(&statement);
    }
    if analysis.summary.statements != 1 {
        analysis.prepared = None;
    }
    // SQL-level prepared statements the session cannot rename (one among several statements) live on one server
    // connection only: keep the client there.
    if analysis.prepared.is_none() && analysis.mentions_prepare(sql, functions, conforming) {
        analysis.effects.push(Effect::Pin);
    }
    if local.is_none() && analysis.summary.statements == 1 && analysis.summary.reason == Reason::Function {
        // Both are writing built-ins; looked for only then.
        local = super::signal::recognise(sql).map(Local::Signal);
    }
    analysis.local = local.filter(|_| analysis.summary.statements == 1);
    analysis
}

impl Analysis {
    /// A text pgsplit cannot read (not valid in the client's encoding): it runs on the leader, where the server says
    /// what, if anything, is wrong with it. What it does to the session is unknown, so unless the server is sure to
    /// refuse it (`refused`: the text is not UTF-8 and the client says it sends UTF-8), the session keeps its
    /// connection from then on, as if pinned: nothing it might have set can leak to another client.
    pub fn unreadable(refused: bool) -> Analysis {
        Analysis {
            summary: Classification {
                access: Access::Write,
                reason: Reason::Unparsable,
                statements: 1,
                session_advisory_lock: false,
            },
            first_is_begin: false,
            writes_are_plain_begins: false,
            effects: if refused { Vec::new() } else { vec![Effect::Pin] },
            local: None,
            prepared: None,
            known_write: false,
        }
    }

    /// Where the unit should run given the session as it is, and the session as it is after the unit: `state`
    /// is updated as the stream passes this statement.
    pub fn plan(&self, settings: &Settings, state: &mut StreamState) -> Plan {
        let wants = if state.pinned {
            Wants::Leader(RouteReason::Pinned)
        } else if self.known_write {
            Wants::Leader(RouteReason::KnownWrite)
        } else if settings.serializable_by_default() {
            Wants::Leader(RouteReason::Write(Reason::Serializable))
        } else if self.summary.access == Access::Read {
            Wants::Follower(if self.first_is_begin {
                RouteReason::ReadOnlyTransaction
            } else {
                RouteReason::Read
            })
        } else if self.summary.statements > 0 && self.writes_are_plain_begins && settings.read_only_by_default() {
            Wants::Follower(RouteReason::ReadOnlyTransaction)
        } else {
            Wants::Leader(RouteReason::Write(self.summary.reason))
        };
        let mut changes = Vec::new();
        for effect in &self.effects {
            match effect {
                Effect::Begin => {
                    state.in_transaction = true;
                    changes.push(Change::Tx(TxMark::Begin));
                }
                Effect::End { chain, rollback } => {
                    state.in_transaction = *chain;
                    changes.push(Change::Tx(if *rollback { TxMark::Rollback } else { TxMark::Commit }));
                    if *chain {
                        changes.push(Change::Tx(TxMark::Begin));
                    }
                }
                Effect::Pin => state.pinned = true,
                Effect::DiscardAll => {
                    state.pinned = false;
                    changes.push(Change::ResetAll);
                }
                Effect::Change(change) => changes.push(change.clone()),
                Effect::DeallocateAll => {}
            }
        }
        Plan { wants, changes }
    }

    /// The text is one BEGIN / START TRANSACTION and nothing else.
    pub fn is_lone_begin(&self) -> bool {
        self.first_is_begin && self.summary.statements == 1
    }

    /// A follower refused this text, or one of its shape, as a write: it runs on the leader from now on.
    pub fn mark_known_write(&mut self) {
        self.known_write = true;
    }

    /// Whether the analysis holds text of the query (a setting and its value, a prepared statement's name or body,
    /// the floor a client sets): then it is the analysis of that text alone, not of every text of its shape.
    pub fn holds_text(&self) -> bool {
        self.local.is_some()
            || self.prepared.is_some()
            || self
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Change(change) if !matches!(change, Change::Unseen { .. })))
    }

    /// Whether the text drops every prepared statement of the session (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub fn discards_statements(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::DiscardAll | Effect::DeallocateAll))
    }

    /// The text, run through the extended protocol, creates or drops a SQL-level prepared statement under the
    /// client's own name, which pgsplit renames only in a simple Query: the statement would live on one server
    /// connection, so the client must stay there, on the leader (where pins live).
    pub fn pin_if_prepares(&mut self) {
        if self.prepared.is_some() {
            self.effects.push(Effect::Pin);
            self.summary.access = Access::Write;
            self.summary.reason = Reason::Pin;
        }
    }

    /// Some statement of a multi-statement text is a PREPARE, EXECUTE or DEALLOCATE.
    fn mentions_prepare(&self, sql: &str, functions: &FunctionSet, conforming: bool) -> bool {
        self.summary.statements > 1
            && statements(sql, functions)
                .standard_conforming_strings(conforming)
                .any(|s| {
                    matches!(
                        s.kind,
                        StatementKind::Prepare { .. }
                            | StatementKind::Execute { .. }
                            | StatementKind::Deallocate { .. }
                    )
                })
    }
}

/// The SQL-level prepared-statement operation `kind` is, with the names as the server knows them.
fn sql_prepared(sql: &str, kind: StatementKind) -> Option<SqlPrepared> {
    let range = |span: Span| (span.start, span.end);
    match kind {
        StatementKind::Prepare { name } => Some(SqlPrepared::Prepare {
            name: identifier(name.text(sql)),
            rest: sql[name.end..].trim_end().trim_end_matches(';').to_owned(),
        }),
        StatementKind::Execute { name } => Some(SqlPrepared::Execute {
            name: identifier(name.text(sql)),
            at: range(name),
        }),
        StatementKind::Deallocate { name } => Some(SqlPrepared::Deallocate {
            name: name.map(|name| (identifier(name.text(sql)), range(name))),
        }),
        _ => None,
    }
}

/// An identifier as the server resolves it: `"Foo"` is `Foo`, `Foo` is `foo`.
fn identifier(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => text.to_ascii_lowercase(),
    }
}

/// A standby refuses serializable transactions, so a session defaulting to them reads on the leader.
#[cfg(test)]
mod tests {
    use super::*;

    fn functions() -> FunctionSet {
        FunctionSet::new::<&str, &str>(&[], &[], [])
    }

    fn plan(sql: &str, settings: &Settings, state: &mut StreamState) -> Plan {
        analyze(sql, &functions(), true).plan(settings, state)
    }

    #[test]
    fn reads_want_a_follower_and_writes_the_leader() {
        let (settings, mut state) = (Settings::default(), StreamState::default());
        assert_eq!(
            plan("SELECT 1", &settings, &mut state).wants,
            Wants::Follower(RouteReason::Read)
        );
        assert!(matches!(
            plan("INSERT INTO t VALUES (1)", &settings, &mut state).wants,
            Wants::Leader(_)
        ));
        assert_eq!(state, StreamState::default());
    }

    #[test]
    fn transactions_are_tracked_along_the_stream() {
        let (settings, mut state) = (Settings::default(), StreamState::default());
        assert!(matches!(plan("BEGIN", &settings, &mut state).wants, Wants::Leader(_)));
        assert!(state.in_transaction);
        plan("COMMIT", &settings, &mut state);
        assert!(!state.in_transaction);
        assert_eq!(
            plan("BEGIN READ ONLY; SELECT 1", &settings, &mut state).wants,
            Wants::Follower(RouteReason::ReadOnlyTransaction)
        );
        plan("COMMIT AND CHAIN", &settings, &mut state);
        assert!(state.in_transaction);
    }

    #[test]
    fn a_read_only_session_sends_plain_begin_to_a_follower_unless_serializable() {
        let mut settings = Settings::default();
        settings.set("default_transaction_read_only", "on");
        let mut state = StreamState::default();
        assert_eq!(
            plan("BEGIN", &settings, &mut state).wants,
            Wants::Follower(RouteReason::ReadOnlyTransaction)
        );
        assert!(matches!(
            plan("BEGIN ISOLATION LEVEL SERIALIZABLE", &settings, &mut state).wants,
            Wants::Leader(_)
        ));
        settings.set("default_transaction_isolation", "serializable");
        assert!(matches!(
            plan("SELECT 1", &settings, &mut state).wants,
            Wants::Leader(_)
        ));
    }

    #[test]
    fn pins_hold_until_discard_all() {
        let (settings, mut state) = (Settings::default(), StreamState::default());
        plan("CREATE TEMP TABLE t (id int)", &settings, &mut state);
        assert!(state.pinned);
        assert_eq!(
            plan("SELECT 1", &settings, &mut state).wants,
            Wants::Leader(RouteReason::Pinned)
        );
        plan("DISCARD ALL", &settings, &mut state);
        assert!(!state.pinned);
        plan("SELECT pg_advisory_lock(1)", &settings, &mut state);
        assert!(state.pinned);
    }

    #[test]
    fn session_sets_become_changes_and_local_ones_do_not() {
        let (settings, mut state) = (Settings::default(), StreamState::default());
        let p = plan(
            "SET search_path TO a, \"B\"; SET LOCAL work_mem = '1MB'; RESET \"TimeZone\"",
            &settings,
            &mut state,
        );
        assert_eq!(
            p.changes,
            [
                Change::Set {
                    name: "search_path".into(),
                    expression: "a, \"B\"".into()
                },
                Change::Reset("timezone".into())
            ]
        );
    }

    #[test]
    fn pgsplit_settings_are_recognised_only_alone() {
        let f = functions();
        let local = |sql| analyze(sql, &f, true).local;
        assert_eq!(local("SHOW pgsplit.route"), Some(Local::ShowRoute));
        assert_eq!(local("show \"pgsplit.route\";"), Some(Local::ShowRoute));
        assert_eq!(local("SHOW pgsplit.route; SELECT 1"), None);
        assert_eq!(local("SHOW pgsplit.last_write_lsn"), Some(Local::ShowLastWriteLsn));
        assert_eq!(
            local("SET pgsplit.min_lsn = '0/16B3748'"),
            Some(Local::SetMinLsn(Some("'0/16B3748'".into())))
        );
        assert_eq!(
            local("set session pgsplit.min_lsn to '1/0'"),
            Some(Local::SetMinLsn(Some("'1/0'".into())))
        );
        assert_eq!(local("RESET pgsplit.min_lsn"), Some(Local::SetMinLsn(None)));
        assert_eq!(local("SET pgsplit.min_lsn TO DEFAULT"), Some(Local::SetMinLsn(None)));
        assert_eq!(local("SET pgsplit.min_lsn = '1/0'; SELECT 1"), None);
        assert_eq!(local("SHOW search_path"), None);
    }

    #[test]
    fn sql_prepared_statements_are_named_as_the_server_knows_them() {
        let f = functions();
        let prepare = analyze("PREPARE Q1 (int) AS SELECT $1;", &f, true);
        assert_eq!(
            prepare.prepared,
            Some(SqlPrepared::Prepare {
                name: "q1".into(),
                rest: " (int) AS SELECT $1".into()
            })
        );
        assert_eq!(
            prepare.plan(&Settings::default(), &mut StreamState::default()).wants,
            Wants::Follower(RouteReason::Read),
            "a PREPARE is as read-only as its statement"
        );
        let sql = "EXECUTE \"My\"\"Q\"(1, 2)";
        let Some(SqlPrepared::Execute { name, at }) = analyze(sql, &f, true).prepared else {
            panic!("an EXECUTE")
        };
        assert_eq!((name.as_str(), &sql[at.0..at.1]), ("My\"Q", "\"My\"\"Q\""));
        assert_eq!(
            analyze("DEALLOCATE ALL", &f, true).prepared,
            Some(SqlPrepared::Deallocate { name: None })
        );
    }

    #[test]
    fn a_parse_of_a_sql_prepare_pins_when_bound() {
        let mut analysis = analyze("PREPARE q AS SELECT 1", &functions(), true);
        analysis.pin_if_prepares();
        let mut state = StreamState::default();
        let plan = analysis.plan(&Settings::default(), &mut state);
        assert!(state.pinned);
        assert_eq!(plan.wants, Wants::Leader(RouteReason::Write(Reason::Pin)));
    }

    #[test]
    fn prepared_statements_among_other_statements_pin() {
        let mut state = StreamState::default();
        let analysis = analyze("PREPARE q AS SELECT 1; EXECUTE q", &functions(), true);
        assert_eq!(analysis.prepared, None);
        analysis.plan(&Settings::default(), &mut state);
        assert!(state.pinned);
    }
}

#[cfg(test)]
mod undo_tests {
    use super::*;

    /// Runs each unit (one query string, assumed to succeed) through `undo`; returns what the client then has of
    /// `timezone`, and checks the connection agrees.
    fn after(units: &[&str], failed_before: &[bool]) -> String {
        let functions = FunctionSet::new::<&str, &str>(&[], &[], []);
        let (mut wanted, mut conn, mut undo) = (Settings::default(), Settings::default(), TxUndo::default());
        let mut state = StreamState::default();
        for (n, sql) in units.iter().enumerate() {
            let plan = analyze(sql, &functions, true).plan(&wanted, &mut state);
            let failed = failed_before.get(n).copied().unwrap_or(false);
            undo.apply(&plan.changes, failed, &mut wanted, &mut conn);
        }
        let (w, c) = (wanted.effective("timezone"), conn.effective("timezone"));
        assert_eq!(w, c, "the connection's settings follow the client's");
        w.unwrap_or("-").to_owned()
    }

    #[test]
    fn a_set_lasts_past_its_transaction_only_if_it_commits() {
        assert_eq!(after(&["SET timezone = 'UTC'"], &[]), "'UTC'");
        assert_eq!(after(&["BEGIN; SET timezone = 'UTC'; COMMIT"], &[]), "'UTC'");
        assert_eq!(after(&["BEGIN; SET timezone = 'UTC'; ROLLBACK"], &[]), "-");
        assert_eq!(after(&["BEGIN", "SET timezone = 'UTC'", "ROLLBACK"], &[]), "-");
        assert_eq!(after(&["BEGIN", "SET timezone = 'UTC'", "COMMIT"], &[]), "'UTC'");
        assert_eq!(
            after(&["SET timezone = 'UTC'; BEGIN; SET timezone = 'EST'; ABORT"], &[]),
            "'UTC'"
        );
        // COMMIT of a failed transaction rolls back.
        assert_eq!(
            after(&["BEGIN", "SET timezone = 'UTC'", "COMMIT"], &[false, false, true]),
            "-"
        );
        assert_eq!(
            after(
                &[
                    "BEGIN",
                    "SET timezone = 'UTC'",
                    "ROLLBACK AND CHAIN",
                    "SET timezone = 'EST'",
                    "COMMIT"
                ],
                &[]
            ),
            "'EST'"
        );
        assert_eq!(
            after(
                &[
                    "BEGIN",
                    "SET timezone = 'UTC'",
                    "COMMIT AND CHAIN",
                    "SET timezone = 'EST'",
                    "ROLLBACK"
                ],
                &[]
            ),
            "'UTC'"
        );
    }

    #[test]
    fn rolling_back_to_a_savepoint_undoes_what_was_set_after_it() {
        let units = [
            "BEGIN; SET timezone = 'UTC'; SAVEPOINT a; SET timezone = 'EST'; SAVEPOINT \"B\"; SET timezone = 'PST8PDT'",
        ];
        let then = |rest: &[&str]| after(&[units.as_slice(), rest].concat(), &[]);
        assert_eq!(then(&["ROLLBACK TO a", "COMMIT"]), "'UTC'");
        assert_eq!(then(&["ROLLBACK TO SAVEPOINT \"B\"", "COMMIT"]), "'EST'");
        assert_eq!(then(&["ROLLBACK TO b", "COMMIT"]), "'PST8PDT'", "b is not \"B\"");
        assert_eq!(
            then(&["RELEASE a", "ROLLBACK TO \"B\"", "COMMIT"]),
            "'PST8PDT'",
            "released with a"
        );
        assert_eq!(
            then(&["ROLLBACK TO a; SET timezone = 'CET'; ROLLBACK TO a", "COMMIT"]),
            "'UTC'"
        );
        assert_eq!(then(&["ROLLBACK TO a", "ROLLBACK"]), "-");
        // Rolling back to a savepoint recovers a failed transaction: its COMMIT commits.
        assert_eq!(
            after(&[units[0], "ROLLBACK TO a", "COMMIT"], &[false, true, false]),
            "'UTC'"
        );
    }
}
