//! The analyses of query texts a session sends again and again, kept so that each is classified once: the Parse an
//! extended-protocol driver sends for every execution of the same statement, `BEGIN`, `COMMIT`. A text is kept
//! only when it comes a second time, so a stream of texts that never repeat (values written into the SQL) costs a
//! hash per query and nothing more. A few direct-mapped slots: a kept text gives way to another that lands in its
//! slot, and the memory a session spends on this stays small.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::plan::{Analysis, analyze};
use crate::fast_hash::FastBuildHasher;
use crate::router::FunctionSet;

const SLOTS: usize = 8;
/// Longer texts are analysed every time: rarely repeated, and not worth their memory.
const MAX_TEXT: usize = 2048;

#[derive(Default)]
pub(super) struct Analyses {
    inner: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    /// The function set the kept analyses were made with: a text's verdict depends on which functions write.
    functions: Option<Arc<FunctionSet>>,
    /// The hash of the last text seen in each slot.
    seen: [u64; SLOTS],
    /// The analysis kept in each slot, with its text (empty until a text repeats).
    kept: Vec<Option<(Box<str>, Analysis)>>,
}

impl Analyses {
    /// `analyze(sql, functions)`, from the slot if this text was kept with this function set.
    pub fn analyze(&self, sql: &str, functions: &Arc<FunctionSet>) -> Analysis {
        if sql.len() > MAX_TEXT {
            return analyze(sql, functions);
        }
        let mut slots = self.inner.borrow_mut();
        if !slots
            .functions
            .as_ref()
            .is_some_and(|kept| Arc::ptr_eq(kept, functions))
        {
            *slots = Slots {
                functions: Some(functions.clone()),
                ..Slots::default()
            };
        }
        let hash = FastBuildHasher::default().hash_one(sql);
        let slot = (hash % SLOTS as u64) as usize;
        if let Some(Some((text, analysis))) = slots.kept.get(slot)
            && **text == *sql
        {
            return analysis.clone();
        }
        let analysis = analyze(sql, functions);
        if slots.seen[slot] == hash {
            if slots.kept.is_empty() {
                slots.kept.resize_with(SLOTS, || None);
            }
            slots.kept[slot] = Some((sql.into(), analysis.clone()));
        } else {
            slots.seen[slot] = hash;
        }
        analysis
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Settings;
    use crate::router::Wants;
    use crate::session::plan::StreamState;

    fn wants(analysis: &Analysis) -> Wants {
        analysis.plan(&Settings::default(), &mut StreamState::default()).wants
    }

    #[test]
    fn a_repeated_text_is_kept_and_gives_the_same_verdict() {
        let analyses = Analyses::default();
        let functions = Arc::new(FunctionSet::default());
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let first = analyses.analyze(sql, &functions);
        assert!(
            analyses.inner.borrow().kept.is_empty(),
            "kept only at the second sighting"
        );
        let second = analyses.analyze(sql, &functions);
        assert!(
            analyses
                .inner
                .borrow()
                .kept
                .iter()
                .flatten()
                .any(|(text, _)| &**text == sql)
        );
        let third = analyses.analyze(sql, &functions);
        assert!(matches!(wants(&first), Wants::Follower(_)));
        assert_eq!(wants(&second), wants(&first));
        assert_eq!(wants(&third), wants(&first));
    }

    #[test]
    fn another_function_set_forgets_what_was_kept() {
        let analyses = Analyses::default();
        let plain = Arc::new(FunctionSet::default());
        let sql = "SELECT bump_counter()";
        for _ in 0..3 {
            assert!(matches!(wants(&analyses.analyze(sql, &plain)), Wants::Follower(_)));
        }
        let writes = Arc::new(FunctionSet::new(
            &["bump_counter".to_string()],
            &[],
            std::iter::empty::<(&str, &str)>(),
        ));
        assert!(
            matches!(wants(&analyses.analyze(sql, &writes)), Wants::Leader(_)),
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
            ] {
                let kept = analyses.analyze(sql, &functions);
                let fresh = analyze(sql, &functions);
                assert_eq!(wants(&kept), wants(&fresh), "{sql} in round {round}");
                assert_eq!(kept.discards_statements(), fresh.discards_statements(), "{sql}");
            }
        }
    }
}
