//! The analyses of query texts a session sends again and again, kept so that each shape is classified once: the
//! Parse an extended-protocol driver sends for every execution of the same statement, `BEGIN`, `COMMIT`, and the
//! statements an application writes its values into (`… WHERE id = 42`). Those are keyed by their text with the
//! values of numbers hidden (`router::shapes::mask_numbers`), so `id = 42` and `id = 43` share one analysis; an
//! analysis that holds text of the query (a setting's value) is kept only for its exact text. A key is kept when it
//! comes a second time, so a stream of texts that never repeat costs a scan and a hash per query and nothing more.
//! A few slots, searched by hash and replaced oldest first: the memory a session spends on this stays small.
//!
//! Text is lexed as bytes under the session's [`TextRules`] (its client encoding and `standard_conforming_strings`,
//! both part of every key): non-ASCII text in an ASCII-safe encoding is classified through a copy with those bytes
//! as ASCII letters (same shape, same offsets), unless its analysis would keep text of the query, which would then
//! not be the client's bytes: such a text, like any non-ASCII text in an encoding that is not ASCII-safe, runs on
//! the leader and keeps the session on its connection (`Analysis::unreadable`).

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::plan::{Analysis, analyze};
use crate::fast_hash::FastBuildHasher;
use crate::router::shapes::mask_numbers;
use crate::router::{ClientEncoding, FunctionSet};

const SLOTS: usize = 16;
/// Longer texts are analysed every time: rarely repeated, and not worth their memory.
const MAX_TEXT: usize = 2048;
/// The last byte of a key: the text with its numbers' values hidden, or the text as it is.
const MASKED: u8 = b'~';
const EXACT: u8 = b'=';

/// How the session's text is to be read: what the server would make of the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRules {
    pub encoding: ClientEncoding,
    /// `standard_conforming_strings`: when off, plain `'…'` strings take backslash escapes.
    pub standard_conforming_strings: bool,
}

impl Default for TextRules {
    fn default() -> Self {
        TextRules {
            encoding: ClientEncoding::Utf8,
            standard_conforming_strings: true,
        }
    }
}

impl TextRules {
    /// The rules given the session's reported parameters (`reported(name)`: its value, if known).
    pub fn from_reported<'a>(reported: impl Fn(&str) -> Option<&'a str>) -> TextRules {
        let mut rules = TextRules::default();
        for name in ["client_encoding", "standard_conforming_strings"] {
            if let Some(value) = reported(name) {
                rules.follow(name, value);
            }
        }
        rules
    }

    /// Takes a reported parameter into account (ParameterStatus); others change nothing.
    pub fn follow(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("client_encoding") {
            self.encoding = ClientEncoding::named(value);
        } else if name.eq_ignore_ascii_case("standard_conforming_strings") {
            self.standard_conforming_strings = !value.eq_ignore_ascii_case("off");
        }
    }

    /// The byte that ends every key: analyses made under other rules are never shared.
    fn mark(self) -> u8 {
        let encoding = match self.encoding {
            ClientEncoding::Utf8 => 0,
            ClientEncoding::AsciiSafe => 1,
            ClientEncoding::AsciiUnsafe => 2,
        };
        encoding | (u8::from(self.standard_conforming_strings) << 2)
    }
}

/// Boxed, and only once the session sends its first query: an idle client's session task carries a pointer, not
/// the slots.
#[derive(Default)]
pub(super) struct Analyses {
    inner: RefCell<Option<Box<Slots>>>,
}

#[derive(Default)]
struct Slots {
    /// The function set the kept analyses were made with: a text's verdict depends on which functions write.
    functions: Option<Arc<FunctionSet>>,
    /// The key of the text being looked up (one buffer, reused).
    key: Vec<u8>,
    /// Hashes of keys seen once and not kept yet, the newest in place of the oldest.
    seen: [u64; SLOTS],
    next_seen: usize,
    /// The hash of each kept key, beside `kept` so that a lookup scans one small array.
    hashes: [u64; SLOTS],
    /// Kept keys and their analyses (empty until a key repeats).
    kept: Vec<Option<(Box<[u8]>, Analysis)>>,
    next_kept: usize,
}

impl Analyses {
    /// `analyze(sql, functions)` under `rules`, from a slot if a text of this shape was kept with this function set
    /// and these rules. A kept text has the same non-ASCII bytes as any text of its key (keys differ only in ASCII
    /// digits), so how non-ASCII text is read is decided once, when a text is analysed afresh.
    pub fn analyze(&self, sql: &[u8], functions: &Arc<FunctionSet>, rules: TextRules) -> Analysis {
        if sql.len() > MAX_TEXT {
            return analyze_fresh(sql, functions, rules);
        }
        let mut slots = self.inner.borrow_mut();
        let slots = &mut **slots.get_or_insert_with(Box::default);
        if !slots
            .functions
            .as_ref()
            .is_some_and(|kept| Arc::ptr_eq(kept, functions))
        {
            *slots = Slots {
                functions: Some(functions.clone()),
                key: std::mem::take(&mut slots.key),
                ..Slots::default()
            };
        }
        let masked = slots.make_key(sql, rules);
        let hash = FastBuildHasher::default().hash_one(&slots.key[..]);
        if let Some(analysis) = slots.find(hash) {
            return analysis.clone();
        }
        let analysis = analyze_fresh(sql, functions, rules);
        if masked && analysis.holds_text() {
            // Another text of this shape may hold other text: this analysis is for this text only.
            return analysis;
        }
        match slots.seen.iter().position(|&seen| seen == hash) {
            Some(at) => {
                slots.seen[at] = 0;
                slots.keep(hash, &analysis);
            }
            None => {
                slots.seen[slots.next_seen] = hash;
                slots.next_seen = (slots.next_seen + 1) % SLOTS;
            }
        }
        analysis
    }
}

/// Analyses `sql` under `rules`, reading non-ASCII bytes as the client's encoding allows.
fn analyze_fresh(sql: &[u8], functions: &FunctionSet, rules: TextRules) -> Analysis {
    let conforming = rules.standard_conforming_strings;
    if let Ok(text) = std::str::from_utf8(sql)
        && (text.is_ascii() || rules.encoding != ClientEncoding::AsciiUnsafe)
    {
        // Valid UTF-8 holds the client's exact bytes, whatever its encoding: any text kept from it is byte-exact.
        return analyze(text, functions, conforming);
    }
    match rules.encoding {
        // The server refuses text that is not UTF-8 from a UTF-8 client: nothing of it takes effect.
        ClientEncoding::Utf8 => Analysis::unreadable(true),
        ClientEncoding::AsciiUnsafe => Analysis::unreadable(false),
        ClientEncoding::AsciiSafe => {
            let stand_in: String = sql
                .iter()
                .map(|&b| if b.is_ascii() { b as char } else { 'x' })
                .collect();
            let analysis = analyze(&stand_in, functions, conforming);
            if analysis.holds_text() {
                // Text taken from the stand-in would not be the client's own bytes.
                Analysis::unreadable(false)
            } else {
                analysis
            }
        }
    }
}

impl Slots {
    /// Fills `key` for `sql` under `rules`; true if it hides the values of numbers.
    fn make_key(&mut self, sql: &[u8], rules: TextRules) -> bool {
        let masked = mask_numbers(sql, &mut self.key);
        self.key.push(rules.mark());
        self.key.push(if masked { MASKED } else { EXACT });
        masked
    }

    fn find(&self, hash: u64) -> Option<&Analysis> {
        self.hashes
            .iter()
            .enumerate()
            .filter(|&(_, &kept)| kept == hash)
            .find_map(|(at, _)| match self.kept.get(at) {
                Some(Some((key, analysis))) if **key == *self.key => Some(analysis),
                _ => None,
            })
    }

    fn keep(&mut self, hash: u64, analysis: &Analysis) {
        if self.kept.is_empty() {
            self.kept.resize_with(SLOTS, || None);
        }
        let at = self.next_kept;
        self.next_kept = (at + 1) % SLOTS;
        self.hashes[at] = hash;
        self.kept[at] = Some((self.key.as_slice().into(), analysis.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Settings;
    use crate::router::Wants;
    use crate::router::shapes::with_other_values;
    use crate::session::plan::StreamState;

    fn analysis(analyses: &Analyses, sql: &str, functions: &Arc<FunctionSet>) -> Analysis {
        analyses.analyze(sql.as_bytes(), functions, TextRules::default())
    }

    fn rules(encoding: ClientEncoding) -> TextRules {
        TextRules {
            encoding,
            ..TextRules::default()
        }
    }

    fn wants(analysis: &Analysis) -> Wants {
        analysis.plan(&Settings::default(), &mut StreamState::default()).wants
    }

    /// The kept keys, each as text without its last byte (the masked / exact mark) and whether it was masked.
    fn kept(analyses: &Analyses) -> Vec<(String, bool)> {
        let slots = analyses.inner.borrow();
        let Some(slots) = slots.as_ref() else {
            return Vec::new();
        };
        slots
            .kept
            .iter()
            .flatten()
            .map(|(key, _)| {
                let (mark, text) = key.split_last().expect("a key has its mark");
                let (_, text) = text.split_last().expect("a key has its rules");
                (String::from_utf8(text.to_vec()).expect("UTF-8"), *mark == MASKED)
            })
            .collect()
    }

    #[test]
    fn a_repeated_text_is_kept_and_gives_the_same_verdict() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let first = analysis(&analyses, sql, &functions);
        assert!(kept(&analyses).is_empty(), "kept only at the second sighting");
        let second = analysis(&analyses, sql, &functions);
        assert_eq!(kept(&analyses), [(sql.to_string(), false)]);
        let third = analysis(&analyses, sql, &functions);
        assert!(matches!(wants(&first), Wants::Follower(_)));
        assert_eq!(wants(&second), wants(&first));
        assert_eq!(wants(&third), wants(&first));
    }

    #[test]
    fn texts_differing_in_number_values_share_one_analysis() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        for aid in [31_337, 4_242, 777] {
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
            assert!(matches!(
                wants(&analysis(&analyses, &sql, &functions)),
                Wants::Follower(_)
            ));
        }
        assert_eq!(
            kept(&analyses),
            [("SELECT abalance FROM pgbench_accounts WHERE aid = 2".to_string(), true)]
        );
        // The same shape with a write in it is another key.
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 5; DELETE FROM t";
        assert!(matches!(wants(&analysis(&analyses, sql, &functions)), Wants::Leader(_)));
    }

    #[test]
    fn text_a_utf8_client_sends_that_is_not_utf8_is_unreadable_even_beside_kept_shapes() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        for _ in 0..2 {
            analysis(&analyses, "SELECT 'é', 5", &functions);
        }
        assert_eq!(kept(&analyses), [("SELECT 'é', 2".to_string(), true)]);
        assert!(matches!(
            wants(&analysis(&analyses, "SELECT 'é', 7", &functions)),
            Wants::Follower(_)
        ));
        for text in [&b"SELECT '\xc3', 7"[..], b"SELECT '\xc3\xa9\xff', 7", b"SELECT \xff"] {
            let analysis = analyses.analyze(text, &functions, TextRules::default());
            assert_eq!(
                format!("{analysis:?}"),
                format!("{:?}", Analysis::unreadable(true)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn latin_text_is_classified_by_its_shape_unless_its_text_would_be_kept() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        let latin9 = rules(ClientEncoding::AsciiSafe);
        // 'café' in LATIN9: é is 0xE9, not UTF-8.
        let read = analyses.analyze(b"SELECT 'caf\xe9' AS x, count(*) FROM t", &functions, latin9);
        assert!(matches!(wants(&read), Wants::Follower(_)), "{read:?}");
        let write = analyses.analyze(b"INSERT INTO t VALUES ('caf\xe9')", &functions, latin9);
        assert!(matches!(wants(&write), Wants::Leader(_)), "{write:?}");
        // A quote-like byte pair cannot hide a write: only ASCII bytes give the text its shape.
        let hidden = analyses.analyze(b"SELECT '\xe9'; DELETE FROM t", &functions, latin9);
        assert!(matches!(wants(&hidden), Wants::Leader(_)), "{hidden:?}");
        // A setting's value would be kept as text that is not the client's bytes: leader, and the session stays.
        let set = analyses.analyze(b"SET application_name = 'caf\xe9'", &functions, latin9);
        assert_eq!(format!("{set:?}"), format!("{:?}", Analysis::unreadable(false)));
    }

    #[test]
    fn non_ascii_text_in_an_encoding_that_is_not_ascii_safe_is_not_lexed() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        let sjis = rules(ClientEncoding::AsciiUnsafe);
        // 表 in Shift JIS is 0x95 0x5C: its second byte is a backslash.
        let read = analyses.analyze(b"SELECT '\x95\x5c'", &functions, sjis);
        assert_eq!(format!("{read:?}"), format!("{:?}", Analysis::unreadable(false)));
        // Valid UTF-8 by chance is no exception: 0xC3 0x95 0x5C reads as 'Õ\\' in UTF-8, 'ﾃ表' in Shift JIS.
        let chance = analyses.analyze(b"SELECT '\xc3\x95\x5c'", &functions, sjis);
        assert_eq!(format!("{chance:?}"), format!("{:?}", Analysis::unreadable(false)));
        let ascii = analyses.analyze(b"SELECT 1", &functions, sjis);
        assert!(
            matches!(wants(&ascii), Wants::Follower(_)),
            "plain ASCII is lexed in any encoding"
        );
    }

    #[test]
    fn analyses_under_other_rules_are_not_shared() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        // With standard_conforming_strings on, both quoted parts are strings; off, the backslash escapes the first
        // closing quote and the DELETE is a statement of its own.
        let sql = b"SELECT 'x\\' AS a, ' ; DELETE FROM t; --' AS b";
        let conforming = TextRules::default();
        let escaping = TextRules {
            standard_conforming_strings: false,
            ..conforming
        };
        for _ in 0..3 {
            assert!(matches!(
                wants(&analyses.analyze(sql, &functions, conforming)),
                Wants::Follower(_)
            ));
            assert!(matches!(
                wants(&analyses.analyze(sql, &functions, escaping)),
                Wants::Leader(_)
            ));
        }
    }

    #[test]
    fn an_analysis_holding_a_value_is_not_kept_for_other_values() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        for ms in [1_000, 2_000, 3_000, 3_000] {
            let sql = format!("SET statement_timeout = {ms}");
            let plan = analysis(&analyses, &sql, &functions).plan(&Settings::default(), &mut StreamState::default());
            assert_eq!(
                format!("{:?}", plan.changes),
                format!("[Set {{ name: \"statement_timeout\", expression: \"{ms}\" }}]")
            );
        }
        assert!(kept(&analyses).is_empty());
    }

    #[test]
    fn another_function_set_forgets_what_was_kept() {
        let analyses = Analyses::default();
        let plain = Arc::new(FunctionSet::default());
        let sql = "SELECT bump_counter()";
        for _ in 0..3 {
            assert!(matches!(wants(&analysis(&analyses, sql, &plain)), Wants::Follower(_)));
        }
        let writes = Arc::new(FunctionSet::new(
            &["bump_counter".to_string()],
            &[],
            std::iter::empty::<(&str, &str)>(),
        ));
        assert!(
            matches!(wants(&analysis(&analyses, sql, &writes)), Wants::Leader(_)),
            "a function now known to write sends the kept text to the leader"
        );
    }

    #[test]
    fn texts_differing_only_in_a_value_are_told_apart() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        for round in 0..3 {
            for sql in [
                "SELECT 1",
                "SELECT 2",
                "INSERT INTO t VALUES (1)",
                "SET search_path = a",
                "EXPLAIN (ANALYZE 0) DELETE FROM t",
                "EXPLAIN (ANALYZE 1) DELETE FROM t",
                "EXPLAIN (ANALYZE 2) DELETE FROM t",
                "SET LOCAL transaction_read_only = 1",
                "SET LOCAL transaction_read_only = 0",
            ] {
                let kept = analysis(&analyses, sql, &functions);
                let fresh = analyze(sql, &functions, true);
                assert_eq!(format!("{kept:?}"), format!("{fresh:?}"), "{sql} in round {round}");
            }
        }
    }

    const CORPUS: &str = include_str!("../../tests/data/classifier_corpus.sql");

    include!("../../tests/data/corpus_functions.rs");

    /// Every text of the classifier corpus, and the same text with other number values, after the first has been
    /// kept: what the cache gives equals what the classifier says of the text itself.
    #[test]
    fn a_kept_shape_gives_each_corpus_text_its_own_analysis() {
        let functions = Arc::new(corpus_functions());
        let mut shared = 0;
        for record in CORPUS.split("\n-- ---\n").skip(1) {
            let sql = record.split_once('\n').map_or("", |(_, sql)| sql);
            let Some(other) = with_other_values(sql).filter(|other| other != sql) else {
                continue;
            };
            let analyses = Analyses::default();
            analysis(&analyses, sql, &functions);
            analysis(&analyses, sql, &functions);
            shared += usize::from(kept(&analyses).iter().any(|(_, masked)| *masked));
            let cached = analysis(&analyses, &other, &functions);
            assert_eq!(
                format!("{cached:?}"),
                format!("{:?}", analyze(&other, &functions, true)),
                "{sql}\n  against\n{other}"
            );
        }
        assert!(shared >= 50, "only {shared} corpus texts were kept by shape");
    }
}
