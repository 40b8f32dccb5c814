//! What a hot standby answers differently from its primary, so that a statement touching it is not a provable read
//! for a follower: relations a standby cannot read (UNLOGGED ones, listed per database from the catalog, and
//! temporary ones, named through `pg_temp`: "cannot access temporary or unlogged relations during recovery"), the
//! settings a standby forces (`transaction_read_only` is on there, `in_hot_standby` too) and the function that
//! reports recovery. Such a statement runs on the leader, where the client's session would be without pgsplit.
//!
//! Names only, no SQL syntax. A lookup never allocates.

use super::functions::FunctionName;
use crate::fast_hash::FastHashMap;

/// Settings a standby shows otherwise than its primary does for the same session.
pub const STANDBY_SETTINGS: &[&str] = &["transaction_read_only", "in_hot_standby"];

/// Whether `current_setting(<argument>)` may read a setting a standby shows otherwise: the argument is not a plain
/// string literal (a parameter, an expression), or names one of them.
pub fn current_setting_argument_differs(token_text: &str, is_plain_string: bool) -> bool {
    if !is_plain_string {
        return true;
    }
    let name = token_text.trim_matches('\'');
    name.contains('\'') || STANDBY_SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// A function whose answer tells a standby from its primary (`pg_is_in_recovery`), or reads settings a standby
/// shows otherwise (`pg_show_all_settings`, behind `pg_settings`).
pub fn reports_recovery(schema: Option<&str>, name: &str) -> bool {
    schema.is_none_or(|s| s == "pg_catalog") && matches!(name, "pg_is_in_recovery" | "pg_show_all_settings")
}

/// An identifier naming a temporary schema (`pg_temp`, `pg_temp_3`), or the view of all settings (`pg_settings`).
pub fn names_session_only(text: &str) -> bool {
    // Most identifiers are ruled out without folding them.
    if text.len() < 7 || !matches!(text.as_bytes()[0], b'p' | b'P' | b'"') {
        return false;
    }
    let Some(name) = FunctionName::fold(text) else {
        return false;
    };
    let name = name.as_str();
    name == "pg_temp" || name.starts_with("pg_temp_") || name == "pg_settings"
}

/// Relations of one database a standby cannot read: its UNLOGGED tables and sequences, by name (any schema: a
/// bare name may resolve to any of them, and a column of the same name only sends a read to the leader).
#[derive(Clone, Debug, Default)]
pub struct UnloggedRelations {
    names: FastHashMap<Box<str>, ()>,
    longest: usize,
}

impl UnloggedRelations {
    /// From `(schema, name)` pairs as stored in `pg_class`.
    pub fn new<S: AsRef<str>, N: AsRef<str>>(relations: impl IntoIterator<Item = (S, N)>) -> Self {
        let mut set = UnloggedRelations::default();
        for (_, name) in relations {
            let name = name.as_ref();
            set.longest = set.longest.max(name.len());
            set.names.insert(name.into(), ());
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether an identifier token's text (quoted or not) names one of them.
    pub fn contains(&self, token_text: &str) -> bool {
        if self.names.is_empty() || token_text.len() > self.longest + 2 {
            return false;
        }
        FunctionName::fold(token_text).is_some_and(|name| self.names.contains_key(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_standby_answers_otherwise() {
        assert!(current_setting_argument_differs("'transaction_read_only'", true));
        assert!(current_setting_argument_differs("'IN_HOT_STANDBY'", true));
        assert!(!current_setting_argument_differs("'search_path'", true));
        assert!(
            current_setting_argument_differs("$1", false),
            "a parameter may name anything"
        );
        assert!(reports_recovery(None, "pg_is_in_recovery"));
        assert!(!reports_recovery(Some("app"), "pg_is_in_recovery"));
        assert!(names_session_only("pg_temp") && names_session_only("PG_TEMP_3") && names_session_only("pg_settings"));
        assert!(!names_session_only("\"PG_TEMP\"") && !names_session_only("temps"));
        let unlogged = UnloggedRelations::new([("public", "cache"), ("app", "Hits")]);
        assert!(unlogged.contains("cache") && unlogged.contains("CACHE") && unlogged.contains("\"Hits\""));
        assert!(!unlogged.contains("hits") && !unlogged.contains("caches"));
    }
}
