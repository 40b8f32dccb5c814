//! What a client's Query or Parse asks of the router, and what it changes in the session: whether a transaction is
//! open at this point of the stream, whether the session becomes pinned to its leader connection, and which
//! settings its `SET`s change (applied once the server has accepted them). Pure: classification only, no I/O.

use crate::pool::Settings;
use crate::router::{
    Access, Classification, FunctionSet, Isolation, Reason, RouteReason, StatementKind, Wants, statements,
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
    Set { name: String, expression: String },
    Reset(String),
    ResetAll,
}

impl Change {
    pub fn apply(&self, settings: &mut Settings) {
        match self {
            Change::Set { name, expression } => settings.set_sql(name, expression),
            Change::Reset(name) => settings.reset(name),
            Change::ResetAll => settings.reset_all(),
        }
    }
}

#[derive(Debug)]
pub struct Plan {
    pub wants: Wants,
    pub changes: Vec<Change>,
    /// The text is exactly `SHOW pgsplit.route`: pgsplit answers it itself.
    pub show_route: bool,
}

/// Plans one SQL string (a Query's, or a Parse's statement), updating `state` as the stream passes it.
pub fn plan_sql(sql: &str, functions: &FunctionSet, settings: &Settings, state: &mut StreamState) -> Plan {
    let pinned_before = state.pinned;
    let mut summary = Classification::EMPTY;
    let mut writes_are_plain_begins = true;
    let mut first_is_begin = false;
    let mut changes = Vec::new();
    let mut show_route = false;
    for statement in statements(sql, functions) {
        let kind = statement.kind;
        if summary.statements == 0 {
            first_is_begin = matches!(kind, StatementKind::Begin { .. });
        }
        match kind {
            StatementKind::Begin { .. } => state.in_transaction = true,
            StatementKind::Commit { chain } | StatementKind::Rollback { chain } => state.in_transaction = chain,
            StatementKind::Listen { .. } | StatementKind::CreateTemp => state.pinned = true,
            StatementKind::DeclareCursor { with_hold: true, .. } => state.pinned = true,
            StatementKind::Set {
                local: false,
                name,
                value,
            } => {
                let name = name.setting(sql);
                changes.push(match value {
                    Some(value) => Change::Set {
                        name,
                        expression: value.text(sql).to_owned(),
                    },
                    None => Change::Reset(name),
                });
            }
            StatementKind::Reset { name } => changes.push(Change::Reset(name.setting(sql))),
            StatementKind::ResetAll => changes.push(Change::ResetAll),
            StatementKind::Discard { all: true } => {
                changes.push(Change::ResetAll);
                state.pinned = false;
            }
            StatementKind::Show { name: Some(name) } => show_route = name.is(sql, "pgsplit.route"),
            _ => {}
        }
        state.pinned |= statement.session_advisory_lock;
        let plain_begin = matches!(kind, StatementKind::Begin { read_only: None, isolation }
            if isolation != Some(Isolation::Serializable));
        writes_are_plain_begins &= statement.access == Access::Read || plain_begin;
        summary.push(&statement);
    }
    let wants = if pinned_before {
        Wants::Leader(RouteReason::Pinned)
    } else if serializable_session(settings) {
        Wants::Leader(RouteReason::Write(Reason::Serializable))
    } else if summary.access == Access::Read {
        Wants::Follower(if first_is_begin {
            RouteReason::ReadOnlyTransaction
        } else {
            RouteReason::Read
        })
    } else if summary.statements > 0 && writes_are_plain_begins && settings.is_on("default_transaction_read_only") {
        Wants::Follower(RouteReason::ReadOnlyTransaction)
    } else {
        Wants::Leader(RouteReason::Write(summary.reason))
    };
    Plan {
        wants,
        changes,
        show_route: show_route && summary.statements == 1,
    }
}

/// A standby refuses serializable transactions, so a session defaulting to them reads on the leader.
fn serializable_session(settings: &Settings) -> bool {
    settings
        .get("default_transaction_isolation")
        .is_some_and(|v| v.to_ascii_lowercase().contains("serializable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str, settings: &Settings, state: &mut StreamState) -> Plan {
        plan_sql(sql, &FunctionSet::new::<&str, &str>(&[], &[], []), settings, state)
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
    fn show_route_is_recognised_only_alone() {
        let (settings, mut state) = (Settings::default(), StreamState::default());
        assert!(plan("SHOW pgsplit.route", &settings, &mut state).show_route);
        assert!(plan("show \"pgsplit.route\";", &settings, &mut state).show_route);
        assert!(!plan("SHOW pgsplit.route; SELECT 1", &settings, &mut state).show_route);
    }
}
