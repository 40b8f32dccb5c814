//! The analyses of query texts a session sends again and again, kept so that each shape is classified once: the
//! Parse an extended-protocol driver sends for every execution of the same statement, `BEGIN`, `COMMIT`, and the
//! statements an application writes its values into (`… WHERE id = 42`). Those are keyed by their text with the
//! values of numbers hidden (`router::shapes::mask_numbers`), so `id = 42` and `id = 43` share one analysis; an
//! analysis that holds text of the query (a setting's value) is kept only for its exact text. A key is kept when it
//! comes a second time, so a stream of texts that never repeat costs a scan and a hash per query and nothing more.
//! A few slots, searched by hash and replaced oldest first: the memory a session spends on this stays small.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::plan::{Analysis, analyze};
use crate::fast_hash::FastBuildHasher;
use crate::router::FunctionSet;
use crate::router::shapes::mask_numbers;

const SLOTS: usize = 16;
/// Longer texts are analysed every time: rarely repeated, and not worth their memory.
const MAX_TEXT: usize = 2048;
/// The last byte of a key: the text with its numbers' values hidden, or the text as it is.
const MASKED: u8 = b'~';
const EXACT: u8 = b'=';

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
    /// `analyze(sql, functions)`, from a slot if a text of this shape was kept with this function set; None for
    /// text that is not UTF-8, which no server takes. A kept text is UTF-8, and a text with the same key differs
    /// from it only in ASCII digits: only texts analysed afresh are checked.
    pub fn analyze(&self, sql: &[u8], functions: &Arc<FunctionSet>) -> Option<Analysis> {
        if sql.len() > MAX_TEXT {
            return Some(analyze(std::str::from_utf8(sql).ok()?, functions));
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
        let masked = slots.make_key(sql);
        let hash = FastBuildHasher::default().hash_one(&slots.key[..]);
        if let Some(analysis) = slots.find(hash) {
            return Some(analysis.clone());
        }
        let analysis = analyze(std::str::from_utf8(sql).ok()?, functions);
        if masked && analysis.holds_text() {
            // Another text of this shape may hold other text: this analysis is for this text only.
            return Some(analysis);
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
        Some(analysis)
    }
}

impl Slots {
    /// Fills `key` for `sql`; true if it hides the values of numbers.
    fn make_key(&mut self, sql: &[u8]) -> bool {
        let masked = mask_numbers(sql, &mut self.key);
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
        analyses.analyze(sql.as_bytes(), functions).expect("the text is UTF-8")
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
    fn text_that_is_not_utf8_has_no_analysis_even_beside_kept_shapes() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        for _ in 0..2 {
            analysis(&analyses, "SELECT 'é', 5", &functions);
        }
        assert_eq!(kept(&analyses), [("SELECT 'é', 2".to_string(), true)]);
        assert!(analyses.analyze("SELECT 'é', 7".as_bytes(), &functions).is_some());
        for text in [&b"SELECT '\xc3', 7"[..], b"SELECT '\xc3\xa9\xff', 7", b"SELECT \xff"] {
            assert!(analyses.analyze(text, &functions).is_none(), "{text:?}");
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
                let fresh = analyze(sql, &functions);
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
                format!("{:?}", analyze(&other, &functions)),
                "{sql}\n  against\n{other}"
            );
        }
        assert!(shared >= 50, "only {shared} corpus texts were kept by shape");
    }
}
