//! Fuzz target `classifier`: the query text of a client's Query or Parse, through everything that reads it — the
//! lexer (`standard_conforming_strings` on and off), `router::statements` and `classify`, the session's
//! `plan::analyze` and its plan, `router::fingerprint`, and `router::shapes::mask_numbers` / `number_digits` on the
//! raw bytes (which the session runs before it knows the text is UTF-8).
//!
//! Beyond "no panic", the invariants the unit tests state: token and statement spans lie on the text's character
//! boundaries in order; text that does not lex completely is never a read; the digit runs the scan reports are
//! inside numbers to the lexer and masking is idempotent; and the one the session's analysis cache stands on — texts
//! with the same masked key (and the same `standard_conforming_strings`) get the same analysis unless it holds their
//! text.
//!
//! Input: the query text, as sent (any bytes; text that is not UTF-8 is also analysed after a lossy conversion).

#![no_main]

use std::ops::Range;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgsplit::pool::Settings;
use pgsplit::router::shapes::{mask_numbers, number_digits};
use pgsplit::router::{
    Access, FunctionSet, KnownWrites, Lexer, Name, Reason, Span, StatementKind, TokenKind, classify, fingerprint,
    parse_function_name, statements,
};
use pgsplit::session::plan::{SqlPrepared, StreamState, analyze};

include!("../../tests/data/corpus_functions.rs");

/// Digit strings put in place of each number's digits (but `0` and `1`, whose values the classifier reads):
/// `mask_numbers` does not tell these apart.
const OTHER_VALUES: [&str; 3] = ["98765", "2", "00"];

fuzz_target!(|data: &[u8]| {
    let functions = FUNCTIONS.get_or_init(corpus_functions);
    let runs = masking(data);
    match std::str::from_utf8(data) {
        Ok(sql) => {
            text(sql, functions);
            if let Some(runs) = runs {
                same_key_same_analysis(sql, &runs, functions);
            }
        }
        Err(_) => text(&String::from_utf8_lossy(data), functions),
    }
});

static FUNCTIONS: OnceLock<FunctionSet> = OnceLock::new();

/// `number_digits` and `mask_numbers` on raw bytes; the digit runs, when the scan followed the text.
fn masking(bytes: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let followed = number_digits(bytes, |run| runs.push(run)).is_some();
    let mut last_end = 0;
    for run in &runs {
        assert!(
            last_end <= run.start && run.start < run.end && run.end <= bytes.len(),
            "{run:?}"
        );
        assert!(bytes[run.clone()].iter().all(u8::is_ascii_digit), "{run:?}");
        last_end = run.end;
    }
    let mut masked = Vec::new();
    let hidden = mask_numbers(bytes, &mut masked);
    assert_eq!(hidden, followed && !runs.is_empty());
    if !hidden {
        assert_eq!(masked, bytes, "nothing hidden, the text as it is");
        return None;
    }
    assert!(
        std::str::from_utf8(bytes).is_err() || std::str::from_utf8(&masked).is_ok(),
        "masking keeps UTF-8"
    );
    let mut again = Vec::new();
    assert!(mask_numbers(&masked, &mut again), "a masked text still has numbers");
    assert_eq!(again, masked, "masking is idempotent");
    Some(runs)
}

fn text(sql: &str, functions: &FunctionSet) {
    for scs in [true, false] {
        let lexes = tokens(sql, scs);
        let mut previous_end = 0;
        let mut count = 0;
        for statement in statements(sql, functions).standard_conforming_strings(scs) {
            let span = statement.span;
            assert!(previous_end <= span.start, "{span:?} starts before {previous_end}");
            assert!(
                span.start <= span.end && sql.get(span.start..span.end).is_some(),
                "{span:?}"
            );
            for inner in kind_spans(statement.kind) {
                assert!(
                    sql.get(inner.start..inner.end).is_some(),
                    "{inner:?} in {:?}",
                    statement.kind
                );
                assert!(
                    span.start <= inner.start && inner.end <= span.end,
                    "{inner:?} outside {span:?}"
                );
            }
            if statement.reason == Reason::Unparsable {
                assert_eq!(statement.access, Access::Write);
            }
            previous_end = span.end;
            count += 1;
        }
        let summary = statements(sql, functions).standard_conforming_strings(scs).summary();
        assert_eq!(summary.statements, count);
        if summary.access == Access::Read {
            assert!(lexes, "text that does not lex is never a read");
        }
        if scs {
            assert_eq!(classify(sql, functions), summary);
        }
    }

    for conforming in [true, false] {
        let analysis = analyze(sql, functions, conforming);
        let mut state = StreamState::default();
        let _ = analysis.plan(&Settings::default(), &mut state);
        let _ = (analysis.holds_text(), analysis.discards_statements());
        // The session cuts these ranges out of the text to put its own statement name there.
        match &analysis.prepared {
            Some(SqlPrepared::Execute { at, .. }) | Some(SqlPrepared::Deallocate { name: Some((_, at)) }) => {
                assert!(sql.get(at.0..at.1).is_some(), "{at:?}");
            }
            _ => {}
        }
        analysis.clone().pin_if_prepares();
    }

    let known = KnownWrites::default();
    known.remember(fingerprint(sql));
    assert!(known.contains(sql.as_bytes()), "a text has its own shape");
    if sql.len() <= 256 {
        let _ = parse_function_name(sql);
    }
}

/// Lexes `sql`, checking each token against the text; whether it lexed to its end.
fn tokens(sql: &str, standard_conforming_strings: bool) -> bool {
    let source = sql.find('\0').map_or(sql, |nul| &sql[..nul]);
    let mut lexer = Lexer::new(sql).standard_conforming_strings(standard_conforming_strings);
    let mut previous_end = 0;
    for token in lexer.by_ref() {
        match token {
            Ok(token) => {
                assert!(previous_end <= token.start, "{token:?} overlaps");
                assert_eq!(source.get(token.start..token.end()), Some(token.text), "{token:?}");
                previous_end = token.end();
            }
            Err(error) => {
                assert!(error.offset <= source.len(), "{error:?}");
                return false;
            }
        }
    }
    assert!(lexer.next().is_none(), "a finished lexer stays finished");
    true
}

/// The spans a statement kind holds of the text.
fn kind_spans(kind: StatementKind) -> Vec<Span> {
    let written = |name: Name| match name {
        Name::Written(span) => Some(span),
        Name::Setting(_) => None,
    };
    match kind {
        StatementKind::Savepoint { name, .. }
        | StatementKind::Listen { channel: name }
        | StatementKind::Prepare { name }
        | StatementKind::Execute { name }
        | StatementKind::DeclareCursor { name, .. } => vec![name],
        StatementKind::Deallocate { name } => name.into_iter().collect(),
        StatementKind::Set { name, value, .. } => written(name).into_iter().chain(value).collect(),
        StatementKind::Reset { name } => written(name).into_iter().collect(),
        StatementKind::Show { name } => name.and_then(written).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The session keeps one analysis per masked key (`session/analyses.rs`): every text with the key gets it, unless
/// the analysis holds text of the query. So texts that differ only in the values `mask_numbers` hides must be
/// analysed alike, and lex alike but for those numbers.
fn same_key_same_analysis(sql: &str, runs: &[Range<usize>], functions: &FunctionSet) {
    let mut key = Vec::new();
    mask_numbers(sql.as_bytes(), &mut key);
    // Masking bails out at any backslash, so `standard_conforming_strings` cannot tell these texts' strings apart.
    let analyses = [true, false].map(|conforming| analyze(sql, functions, conforming));
    for value in OTHER_VALUES {
        let mut other = String::with_capacity(sql.len() + runs.len() * value.len());
        let mut copied = 0;
        for run in runs {
            other.push_str(&sql[copied..run.start]);
            other.push_str(match &sql[run.clone()] {
                digits @ ("0" | "1") => digits,
                _ => value,
            });
            copied = run.end;
        }
        other.push_str(&sql[copied..]);
        let mut other_key = Vec::new();
        mask_numbers(other.as_bytes(), &mut other_key);
        assert_eq!(other_key, key, "{other:?} has another key than {sql:?}");
        assert_eq!(
            numberless_tokens(&other),
            numberless_tokens(sql),
            "{other:?} against {sql:?}"
        );
        for (analysis, conforming) in analyses.iter().zip([true, false]) {
            let other_analysis = analyze(&other, functions, conforming);
            if !analysis.holds_text() || !other_analysis.holds_text() {
                assert_eq!(
                    format!("{other_analysis:?}"),
                    format!("{analysis:?}"),
                    "{other:?} and {sql:?} share a cached analysis (standard_conforming_strings {conforming})"
                );
            }
        }
    }
}

/// Token kinds, and texts but for numbers'.
fn numberless_tokens(sql: &str) -> Vec<(TokenKind, &str)> {
    Lexer::new(sql)
        .map(|token| {
            let token = token.expect("text the digit scan follows lexes to its end");
            let text = if token.kind == TokenKind::Number {
                ""
            } else {
                token.text
            };
            (token.kind, text)
        })
        .collect()
}
