//! What a client message asks of the router and does to the session, worked out before it is forwarded: the
//! analysis of a Query or Parse, the remembered analysis of the statement a Bind or Describe names, and, for an
//! extended-protocol batch routed to a follower, a look ahead to its Sync to be sure nothing in it writes.
//!
//! The [`Planner`] owns what planning needs of its own — the analyses it keeps, the client database's writing
//! functions (looked at again now and then), how the client's text is read — and is shown the rest of the session
//! ([`SessionView`]); it decides, and commits nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::analyses::{Analyses, TextRules};
use super::plan::{Analysis, Plan, SqlPrepared, StreamState};
use super::statements::Statements;
use crate::pool::Settings;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, peek_header};
use crate::router::{FunctionSet, KnownWrites, Reason, RouteReason, Wants};
use crate::topology::catalog::FunctionSets;

/// How often a session looks for new writing functions in its database's catalog.
const FUNCTIONS_RECHECK: Duration = Duration::from_secs(1);

pub(super) struct Planner {
    /// Analyses of the texts this client repeats.
    analyses: Analyses,
    /// Which functions write, for this client's database; looked at again now and then.
    functions: Arc<FunctionSet>,
    /// When to look again: a deadline rather than the time of the last look, so the per-query check is a comparison,
    /// not a subtraction.
    functions_recheck_at: Instant,
    /// How the client's text is read: its encoding and `standard_conforming_strings`, as the server reports them.
    text_rules: TextRules,
}

/// The rest of the session, as planning sees it.
pub(super) struct SessionView<'a> {
    pub statements: &'a Statements,
    pub wanted: &'a Settings,
    pub stream: StreamState,
    pub known_writes: &'a KnownWrites,
    /// The message would start a unit (no server attached, or between units): an extended-protocol batch is then
    /// routed as a whole.
    pub starts_unit: bool,
}

impl Planner {
    pub fn new(functions: Arc<FunctionSet>, text_rules: TextRules) -> Planner {
        Planner {
            analyses: Analyses::default(),
            functions,
            functions_recheck_at: Instant::now() + FUNCTIONS_RECHECK,
            text_rules,
        }
    }

    pub fn functions(&self) -> &Arc<FunctionSet> {
        &self.functions
    }

    /// Takes in a parameter the server reported (the client encoding, `standard_conforming_strings`).
    pub fn follow(&mut self, name: &str, value: &str) {
        self.text_rules.follow(name, value);
    }

    /// Looks at the catalog's writing functions for `database` again if it is time (at most once a second).
    pub async fn refresh_functions(&mut self, catalog: &FunctionSets, database: &str) {
        if Instant::now() >= self.functions_recheck_at {
            // Boxed: a catalog load's state is large, and this runs once a second at most.
            self.functions = Box::pin(catalog.for_database(database)).await;
            self.functions_recheck_at = Instant::now() + FUNCTIONS_RECHECK;
        }
    }

    fn analyze(&self, sql: &[u8]) -> Analysis {
        self.analyses.analyze(sql, &self.functions, self.text_rules)
    }
}

/// What a client message asks for and does, worked out before it is forwarded.
pub(super) struct Intent {
    /// Where a unit starting with this message should run.
    pub wants: Wants,
    /// What a Query or Bind runs, with the stream state after it: committed when the message is forwarded.
    pub plan: Option<(Plan, StreamState)>,
    /// A Query's or Parse's own analysis.
    pub analysis: Option<Analysis>,
    /// A Bind of a statement that drops every prepared statement.
    pub discards: bool,
}

impl Planner {
    /// Works out where the message `header`, at the front of `buf` (the client's unscanned bytes, whole through it),
    /// would run and what it does, without committing anything.
    pub fn intent(&self, header: Header, buf: &[u8], session: &SessionView<'_>) -> Intent {
        let body = buf.get(HEADER_LEN..header.frame_len()).unwrap_or_default();
        let execute = Wants::Leader(RouteReason::Write(Reason::Execute));
        let mut intent = Intent {
            wants: execute,
            plan: None,
            analysis: None,
            discards: false,
        };
        match header.tag {
            b'Q' | b'P' => {
                let sql = match header.tag {
                    // The text is the whole body but its closing NUL: no need to look for it. (A NUL inside makes
                    // the server refuse the message; the lexer stops there, as the server would.)
                    b'Q' => body.split_last().filter(|(nul, _)| **nul == 0).map(|(_, sql)| sql),
                    _ => extended::parse_fields(body).map(|(_, definition)| extended::definition_query(definition)),
                };
                let Some(sql) = sql else {
                    // No closing NUL, or a Parse whose fields do not add up: the server refuses it (08P01).
                    intent.wants = Wants::Leader(RouteReason::Write(Reason::Unparsable));
                    return intent;
                };
                let mut analysis = self.analyze(sql);
                if header.tag == b'P' {
                    analysis.pin_if_prepares();
                }
                // An EXECUTE runs what its statement runs.
                let runs = match &analysis.prepared {
                    Some(SqlPrepared::Execute { name, .. }) => session.statements.named(name).map(|s| &*s.analysis),
                    _ => None,
                };
                let mut stream = session.stream;
                let mut plan = runs.unwrap_or(&analysis).plan(session.wanted, &mut stream);
                if matches!(plan.wants, Wants::Follower(_)) && session.known_writes.contains(sql) {
                    // Kept with the statement, so its later Binds go to the leader too.
                    analysis.mark_known_write();
                    plan.wants = Wants::Leader(RouteReason::KnownWrite);
                }
                intent.wants = plan.wants;
                if header.tag == b'Q' {
                    intent.plan = Some((plan, stream));
                }
                intent.analysis = Some(analysis);
            }
            b'B' => {
                // The unnamed statement lives on one server connection and is not carried: a batch that binds it
                // without parsing it runs on the leader (on another connection than its Parse's, it fails as after a
                // reconnect would).
                let name = extended::bind_fields(body).map(|(_, name, _)| name);
                if let Some(analysis) = name.and_then(|name| session.statements.for_name(name)) {
                    let mut stream = session.stream;
                    let plan = analysis.plan(session.wanted, &mut stream);
                    if !(session.starts_unit && name == Some(b"")) {
                        intent.wants = plan.wants;
                    }
                    intent.discards = analysis.discards_statements();
                    intent.plan = Some((plan, stream));
                }
            }
            b'D' => {
                if let Some(analysis) = session.statements.for_describe(body) {
                    intent.wants = analysis.plan(session.wanted, &mut session.stream.clone()).wants;
                }
            }
            _ => {}
        }
        if matches!(intent.wants, Wants::Follower(_))
            && matches!(header.tag, b'P' | b'B' | b'D')
            && session.starts_unit
            && !self.batch_reads_only(header, buf, session)
        {
            intent.wants = Wants::Leader(RouteReason::Write(Reason::Execute));
        }
        intent
    }

    /// Whether the rest of the extended-protocol batch starting with `first` (at the scan position) is buffered up
    /// to its Sync and runs nothing but reads. A batch is routed as a whole, by its first message; a write later
    /// in it must not land on a follower.
    fn batch_reads_only(&self, first: Header, buf: &[u8], session: &SessionView<'_>) -> bool {
        let first_body = buf.get(HEADER_LEN..first.frame_len()).unwrap_or_default();
        // Statements parsed earlier in this batch (their Parse was read-only, or we would not be here).
        let mut parsed: Vec<&[u8]> = Vec::new();
        if first.tag == b'P'
            && let Some((name, _)) = extended::parse_fields(first_body)
        {
            parsed.push(name);
        }
        let reads = |analysis: &Analysis, stream: &mut StreamState| {
            matches!(analysis.plan(session.wanted, stream).wants, Wants::Follower(_))
        };
        let mut stream = session.stream;
        let mut at = first.frame_len();
        loop {
            let Ok(Some(header)) = peek_header(buf.get(at..).unwrap_or_default()) else {
                return false;
            };
            let Some(body) = buf.get(at + HEADER_LEN..at + header.frame_len()) else {
                return false;
            };
            let read_only = match header.tag {
                b'S' => return true,
                // Describe, Execute, Close and Flush run nothing a Bind did not already.
                b'D' | b'E' | b'C' | b'H' => true,
                b'P' => match extended::parse_fields(body) {
                    Some((name, definition)) => {
                        parsed.push(name);
                        let sql = extended::definition_query(definition);
                        reads(&self.analyze(sql), &mut stream)
                    }
                    None => false,
                },
                b'B' => match extended::bind_fields(body) {
                    Some((_, name, _)) if parsed.contains(&name) => true,
                    Some(_) => session.statements.for_bind(body).is_some_and(|a| reads(a, &mut stream)),
                    None => false,
                },
                _ => false,
            };
            if !read_only {
                return false;
            }
            at += header.frame_len();
        }
    }
}
