//! The SQL classifier: splits a simple-Query string into statements and decides, per statement and for the whole
//! string, whether it is provably read-only (SPEC §3.1), and what kind of statement the session must track.
//!
//! Conservative by construction: a statement is `Read` only when its first keyword says it is a query (or a
//! statement a standby accepts that changes no data) and the [`Facts`] of all its tokens show no write marker.
//! Anything unknown, unlexable or oddly shaped is `Write`. No I/O, no allocation.
//!
//! What it cannot see (the follower's 25006 re-run, SPEC §3.5, catches these): functions reached indirectly —
//! through views, operators, casts, column notation `t.f`, or SQL strings run by a user function — unless the
//! function itself is in the [`FunctionSet`].

use super::cursor::{Cursor, End, Facts};
use super::functions::FunctionSet;
use super::grammar::{Verdict, head};
use super::hidden::HiddenState;
use super::lexer::{Lexer, Span};
use super::statement::{Access, Classification, Reason, Statement, StatementKind as Kind};

/// Classifies a whole simple-Query string (several statements allowed), assuming `standard_conforming_strings = on`.
pub fn classify(sql: &str, functions: &FunctionSet) -> Classification {
    statements(sql, functions).summary()
}

/// The statements of `sql`, one [`Statement`] each (empty ones skipped). If the text stops lexing, the last item is
/// `Write` / [`Reason::Unparsable`] / [`Kind::Other`] spanning the rest: the server rejects the whole string then,
/// so none of the statements before it ran either.
pub fn statements<'a>(sql: &'a str, functions: &'a FunctionSet) -> Statements<'a> {
    Statements {
        lexer: Lexer::new(sql),
        functions,
        finished: false,
    }
}

pub struct Statements<'a> {
    lexer: Lexer<'a>,
    functions: &'a FunctionSet,
    finished: bool,
}

impl Statements<'_> {
    /// Lex with the session's `standard_conforming_strings` (from the server's ParameterStatus): when off, plain
    /// `'…'` strings take backslash escapes and end elsewhere.
    pub fn standard_conforming_strings(mut self, on: bool) -> Self {
        self.lexer = self.lexer.standard_conforming_strings(on);
        self
    }

    /// Folds all statements into one [`Classification`].
    pub fn summary(self) -> Classification {
        let mut classification = Classification::EMPTY;
        for statement in self {
            classification.push(&statement);
        }
        classification
    }
}

impl Iterator for Statements<'_> {
    type Item = Statement;

    fn next(&mut self) -> Option<Statement> {
        while !self.finished {
            let mut c = Cursor::new(&mut self.lexer, self.functions);
            let head = c.next().map(|first| {
                let head = head(&mut c, first);
                c.drain();
                head
            });
            self.finished = c.end != End::Semicolon;
            let span = Span {
                start: c.first.unwrap_or(c.last_end),
                end: c.last_end,
            };
            if c.end == End::Error {
                let end = c.source().len();
                let span = Span {
                    start: span.start.min(end),
                    end,
                };
                let (kind, access, reason) = (Kind::Other, Access::Write, Reason::Unparsable);
                return Some(Statement {
                    span,
                    kind,
                    access,
                    reason,
                    session_advisory_lock: false,
                    hidden: HiddenState::default(),
                });
            }
            if let Some((kind, verdict)) = head {
                let hidden = c.hidden.finish();
                return Some(statement(span, kind, verdict, c.facts, hidden));
            }
        }
        None
    }
}

fn statement(span: Span, mut kind: Kind, verdict: Verdict, facts: Facts, hidden: HiddenState) -> Statement {
    let (access, reason) = match verdict {
        Verdict::Fixed(access, reason) => (access, reason),
        Verdict::Query => {
            if facts.into_temp {
                kind = Kind::CreateTemp;
            }
            match facts {
                Facts { dml_top: true, .. } => (Access::Write, Reason::Write),
                Facts { dml_nested: true, .. } => (Access::Write, Reason::CteWrite),
                Facts { into: true, .. } => (Access::Write, Reason::SelectInto),
                Facts { locking: true, .. } => (Access::Write, Reason::Locking),
                Facts {
                    write_function: true, ..
                } => (Access::Write, Reason::Function),
                Facts { leader_only: true, .. } => (Access::Write, Reason::LeaderOnly),
                _ => (Access::Read, Reason::Read),
            }
        }
    };
    Statement {
        span,
        kind,
        access,
        reason,
        session_advisory_lock: facts.session_advisory_lock,
        hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Isolation, Name, SavepointOp};

    const CORPUS: &str = include_str!("../../tests/data/classifier_corpus.sql");

    include!("../../tests/data/corpus_functions.rs");

    /// (line, expected access, expected reason, sql) for every record after the header.
    fn corpus() -> Vec<(usize, Access, Option<&'static str>, &'static str)> {
        let mut records = Vec::new();
        let mut line = 1;
        for (i, record) in CORPUS.split("\n-- ---\n").enumerate() {
            let (first, sql) = record.split_once('\n').unwrap_or((record, ""));
            let mut words = first.split_whitespace();
            let access = match (words.next(), words.next()) {
                (Some("--"), Some("read")) => Some(Access::Read),
                (Some("--"), Some("write")) => Some(Access::Write),
                _ => None,
            };
            match access {
                Some(access) => records.push((line, access, words.next(), sql)),
                None => assert_eq!(i, 0, "line {line}: a record must start with `-- read` or `-- write`"),
            }
            line += record.lines().count() + 1;
        }
        records
    }

    #[test]
    fn corpus_classifies_as_expected() {
        let functions = corpus_functions();
        let records = corpus();
        assert!(records.len() >= 200, "only {} records", records.len());
        let mut mismatches = Vec::new();
        for (line, access, reason, sql) in &records {
            let got = classify(sql, &functions);
            if got.access != *access || reason.is_some_and(|r| r != got.reason.as_str()) {
                let want = format!("{access:?} {}", reason.unwrap_or("*"));
                mismatches.push(format!(
                    "line {line}: want {want}, got {:?} {}\n    {sql}",
                    got.access,
                    got.reason.as_str()
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of {} records differ:\n{}",
            mismatches.len(),
            records.len(),
            mismatches.join("\n")
        );
    }

    #[test]
    fn no_input_panics() {
        let functions = corpus_functions();
        for (_, _, _, sql) in corpus() {
            for (at, _) in sql.char_indices() {
                let _ = classify(&sql[..at], &functions);
                let _ = classify(&sql[at..], &functions);
            }
        }
        // Random strings over the characters that matter to the lexer.
        let alphabet: Vec<char> = "'\"$;()[]./*-\\\n eEuUbBxX&:=_1 select for update into with insert é\0`{}"
            .chars()
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut text = String::new();
        for _ in 0..20_000 {
            text.clear();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 48) {
                let pick = (seed.rotate_left(i as u32 * 7) ^ i.wrapping_mul(0x9e37_79b9)) as usize;
                text.push(alphabet[pick % alphabet.len()]);
            }
            let got = classify(&text, &functions);
            let _ = statements(&text, &functions).standard_conforming_strings(false).count();
            if got.access == Access::Read {
                assert!(
                    Lexer::new(&text).all(|t| t.is_ok()),
                    "unlexable text read as a read: {text:?}"
                );
            }
        }
    }

    fn kinds(sql: &str) -> Vec<Kind> {
        statements(sql, &FunctionSet::default()).map(|s| s.kind).collect()
    }

    #[test]
    fn transaction_statements() {
        use Isolation::*;
        let sql = "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ; START TRANSACTION; COMMIT AND CHAIN; END; \
                   ROLLBACK; ABORT AND NO CHAIN; ROLLBACK TO SAVEPOINT a; SAVEPOINT b; RELEASE b; \
                   SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                   SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE";
        let got = kinds(sql);
        let savepoint = |op, got: &Kind| match got {
            Kind::Savepoint { op: o, .. } => *o == op,
            _ => false,
        };
        assert_eq!(
            got[0],
            Kind::Begin {
                read_only: Some(true),
                isolation: Some(RepeatableRead)
            }
        );
        assert_eq!(
            got[1],
            Kind::Begin {
                read_only: None,
                isolation: None
            }
        );
        assert_eq!(got[2], Kind::Commit { chain: true });
        assert_eq!(got[3], Kind::Commit { chain: false });
        assert_eq!(got[4], Kind::Rollback { chain: false });
        assert_eq!(got[5], Kind::Rollback { chain: false });
        assert!(savepoint(SavepointOp::RollbackTo, &got[6]));
        assert!(savepoint(SavepointOp::Define, &got[7]));
        assert!(savepoint(SavepointOp::Release, &got[8]));
        assert_eq!(
            got[9],
            Kind::SetTransaction {
                read_only: None,
                isolation: Some(ReadCommitted)
            }
        );
        assert_eq!(
            got[10],
            Kind::SetSessionCharacteristics {
                read_only: Some(true),
                isolation: Some(Serializable)
            }
        );
        assert_eq!(got.len(), 11);
    }

    #[test]
    fn set_names_and_values_are_spans() {
        let sql = "SET LOCAL search_path TO app, \"Public\"; set Statement_Timeout = DEFAULT; SET TIME ZONE 'UTC'; \
                   SET SESSION myapp.user_id = 42; SET NAMES; SET ROLE NONE; RESET work_mem; RESET ALL; SHOW ALL; \
                   SHOW TRANSACTION ISOLATION LEVEL; SHOW pgsplit.route";
        let got: Vec<_> = statements(sql, &FunctionSet::default()).map(|s| s.kind).collect();
        let set = |i: usize| match got[i] {
            Kind::Set { local, name, value } => (local, name.text(sql), value.map(|v| v.text(sql))),
            other => panic!("{other:?}"),
        };
        assert_eq!(set(0), (true, "search_path", Some("app, \"Public\"")));
        assert_eq!(set(1), (false, "Statement_Timeout", None));
        assert_eq!(set(2), (false, "timezone", Some("'UTC'")));
        assert_eq!(set(3), (false, "myapp.user_id", Some("42")));
        assert_eq!(set(4), (false, "client_encoding", None));
        assert_eq!(set(5), (false, "role", None));
        assert!(matches!(got[6], Kind::Reset { name } if name.is(sql, "work_mem")));
        assert_eq!(got[7], Kind::ResetAll);
        assert_eq!(got[8], Kind::Show { name: None });
        assert_eq!(
            got[9],
            Kind::Show {
                name: Some(Name::Setting("transaction_isolation"))
            }
        );
        assert!(matches!(got[10], Kind::Show { name: Some(name) } if name.is(sql, "pgsplit.route")));
        let Kind::Set { name, .. } = got[1] else { unreachable!() };
        assert!(name.is(sql, "statement_timeout"));
    }

    #[test]
    fn session_bookkeeping_statements() {
        let sql = "PREPARE q(int) AS SELECT $1; EXECUTE q(1); DEALLOCATE PREPARE q; DEALLOCATE ALL; \
                   DECLARE c CURSOR WITH HOLD FOR SELECT 1; DECLARE d CURSOR FOR SELECT 1; LISTEN ch; UNLISTEN *; \
                   UNLISTEN ch; DISCARD ALL; DISCARD TEMP; CREATE TEMP TABLE t (a int); SELECT 1 INTO TEMP u; \
                   COPY t FROM STDIN; COPY t TO STDOUT; COPY t TO '/f'";
        let got: Vec<_> = statements(sql, &FunctionSet::default()).collect();
        let text = |span: Span| span.text(sql);
        assert!(matches!(got[0].kind, Kind::Prepare { name } if text(name) == "q"));
        assert_eq!(got[0].access, Access::Read);
        assert!(matches!(got[1].kind, Kind::Execute { name } if text(name) == "q"));
        assert!(matches!(got[2].kind, Kind::Deallocate { name: Some(name) } if text(name) == "q"));
        assert_eq!(got[3].kind, Kind::Deallocate { name: None });
        assert!(matches!(got[4].kind, Kind::DeclareCursor { name, with_hold: true } if text(name) == "c"));
        assert!(matches!(got[5].kind, Kind::DeclareCursor { with_hold: false, .. }));
        assert!(matches!(got[6].kind, Kind::Listen { channel } if text(channel) == "ch"));
        assert_eq!(got[7].kind, Kind::Unlisten { all: true });
        assert_eq!(got[8].kind, Kind::Unlisten { all: false });
        assert_eq!(got[9].kind, Kind::Discard { all: true });
        assert_eq!(got[10].kind, Kind::Discard { all: false });
        assert_eq!(got[11].kind, Kind::CreateTemp);
        assert_eq!((got[12].kind, got[12].reason), (Kind::CreateTemp, Reason::SelectInto));
        assert_eq!(
            got[13].kind,
            Kind::Copy {
                from_stdin: true,
                to_stdout: false
            }
        );
        assert_eq!(
            (got[14].kind, got[14].access),
            (
                Kind::Copy {
                    from_stdin: false,
                    to_stdout: true
                },
                Access::Read
            )
        );
        assert_eq!(
            (got[15].kind, got[15].access),
            (
                Kind::Copy {
                    from_stdin: false,
                    to_stdout: false
                },
                Access::Write
            )
        );
        assert_eq!(got.len(), 16);
    }

    #[test]
    fn spans_cover_each_statement() {
        let sql = "  SELECT 1 ; /* c */ SHOW x;";
        let spans: Vec<_> = statements(sql, &FunctionSet::default())
            .map(|s| s.span.text(sql))
            .collect();
        assert_eq!(spans, ["SELECT 1", "SHOW x"]);
    }

    #[test]
    fn routine_bodies_keep_their_semicolons() {
        let sql = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; \
                   SELECT CASE WHEN true THEN 2 END; END; SET x = 1";
        assert_eq!(kinds(sql).len(), 2);
        // Outside CREATE FUNCTION, BEGIN is a transaction and `;` ends it.
        assert_eq!(kinds("BEGIN; SELECT 1; END").len(), 3);
    }

    #[test]
    fn empty_strings() {
        for sql in ["", " ", ";", " ;; -- c\n /* d */ ;"] {
            let got = classify(sql, &FunctionSet::default());
            assert!(got.is_empty(), "{sql:?}");
            assert_eq!((got.access, got.reason), (Access::Read, Reason::Empty));
        }
        assert!(!classify("SELECT 1", &FunctionSet::default()).is_empty());
    }

    #[test]
    fn an_unlexable_tail_is_one_unparsable_statement() {
        let sql = "SET a = 1; SELECT 'open";
        let got: Vec<_> = statements(sql, &FunctionSet::default()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].access, got[1].reason, got[1].span.text(sql)),
            (Access::Write, Reason::Unparsable, "SELECT 'open")
        );
        assert_eq!(classify(sql, &FunctionSet::default()).statements, 2);
    }

    #[test]
    fn session_advisory_locks_are_reported() {
        let functions = FunctionSet::default();
        assert!(classify("SELECT 1; SELECT pg_advisory_lock(1)", &functions).session_advisory_lock);
        assert!(
            classify(
                "INSERT INTO t VALUES (pg_catalog.pg_try_advisory_lock_shared(1))",
                &functions
            )
            .session_advisory_lock
        );
        assert!(!classify("SELECT pg_advisory_xact_lock(1)", &functions).session_advisory_lock);
        assert!(!classify("SELECT 'pg_advisory_lock(1)'", &functions).session_advisory_lock);
    }

    #[test]
    fn standard_conforming_strings_off_moves_string_ends() {
        let sql = r"SELECT 'a\'; DELETE FROM t; --'";
        let functions = FunctionSet::default();
        assert_eq!(classify(sql, &functions).access, Access::Write);
        let off = statements(sql, &functions).standard_conforming_strings(false).summary();
        assert_eq!((off.access, off.statements), (Access::Read, 1));
    }

    #[test]
    fn first_write_gives_the_reason() {
        let got = classify(
            "SELECT 1; SELECT * FROM t FOR UPDATE; DELETE FROM t",
            &FunctionSet::default(),
        );
        assert_eq!(
            (got.access, got.reason, got.statements),
            (Access::Write, Reason::Locking, 3)
        );
        let got = classify("BEGIN READ ONLY; SELECT 1; COMMIT", &FunctionSet::default());
        assert_eq!((got.access, got.reason), (Access::Read, Reason::ReadOnlyTransaction));
    }
}
