//! Which functions make a query a write: the built-ins a hot standby refuses or that change state, the operator's
//! `write_functions`, and user functions marked VOLATILE in `pg_proc` minus `read_only_functions`.
//!
//! Owns the name lists and the lookup; knows nothing of SQL syntax beyond "a name, maybe schema-qualified". Built once
//! per config/catalog load, then only read: a lookup never allocates.

use super::lexer::{Lexer, MAX_IDENTIFIER_LEN, TokenKind, fold_identifier, identifier};
use super::standby::UnloggedRelations;
use crate::fast_hash::FastHashMap;

/// Built-in functions that make a statement a write: every built-in a hot standby refuses, or whose effect or answer
/// belongs to the leader's session or state. Matched under any schema (the built-ins live in `pg_catalog`, but
/// matching `public.nextval` too costs nothing and covers wrappers the catalog load has not seen yet).
const BUILTIN_WRITERS: &[&str] = &[
    // Sequences. nextval/setval write. currval/lastval only read, but read this session's nextval, which ran on
    // the leader: on a follower they fail ("currval of sequence … is not yet defined in this session").
    "nextval",
    "setval",
    "currval",
    "lastval",
    // Advisory locks: a standby grants them, but they must exclude the leader's writers, so they belong there
    // (session-level ones also pin the client; see `is_session_advisory_lock`).
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    // Notification and session settings: a standby refuses NOTIFY; set_config changes session state that the
    // session layer cannot see inside a SELECT; setseed likewise.
    "pg_notify",
    "set_config",
    "setseed",
    // Large objects: writers, plus the descriptor calls (descriptors live in one server's transaction) and
    // lo_export (writes a file on the server).
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lo_open",
    "lo_close",
    "lowrite",
    "loread",
    "lo_lseek",
    "lo_lseek64",
    "lo_tell",
    "lo_tell64",
    "lo_truncate",
    "lo_truncate64",
    // Transaction ids: txid_current/pg_current_xact_id assign one (a standby refuses); the _if_assigned forms
    // do not assign, but only the leader's answer means anything.
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    // WAL position and control: refused during recovery ("recovery is in progress").
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_create_restore_point",
    "pg_log_standby_snapshot",
    // Backups: allowed on a standby but session-bound (start and stop must meet on one connection).
    "pg_start_backup",
    "pg_stop_backup",
    "pg_backup_start",
    "pg_backup_stop",
    // Replication slots, origins and logical messages: write WAL or catalog state, or need a primary.
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_logical_emit_message",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_xact_reset",
    // Server control: change the state of the server that runs them, so they must reach the one meant (a pid read
    // from the leader's pg_stat_activity names a leader backend).
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    // Catalog and index maintenance.
    "pg_import_system_collations",
    "pg_nextoid",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
    // Run an SQL string given as an argument, which may write (or read a cursor of this session).
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
];

/// Built-ins that take a lock held until unlock or disconnect: the session pins the client on them.
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Names are stored as PostgreSQL stores them (case-folded unless quoted) and looked up exactly.
#[derive(Clone, Debug)]
pub struct FunctionSet {
    /// FxHash: the keys come from built-ins, config and catalog; client text only looks names up, and a lookup
    /// cannot lengthen the probe chains of keys it did not insert.
    by_name: FastHashMap<Box<str>, Schemas>,
    longest: usize,
    /// The database's UNLOGGED relations, from the same catalog load: a read of one is not a follower's.
    unlogged: UnloggedRelations,
}

/// Where a name is a writer: everywhere (built-ins, unqualified config entries) or in the listed schemas.
#[derive(Clone, Debug, Default)]
struct Schemas {
    any: bool,
    listed: Vec<Box<str>>,
    /// A user function (the catalog's, or `write_functions`') has the name: what it does inside is not seen.
    user: bool,
}

impl Default for FunctionSet {
    /// The built-in writers only.
    fn default() -> Self {
        Self::new(&[], &[], std::iter::empty::<(&str, &str)>())
    }
}

impl FunctionSet {
    /// The built-in writers, plus:
    /// - `write_functions` (config): `name` (any schema) or `schema.name`, written as in SQL — unquoted parts are
    ///   case-folded, `"Quoted"` parts kept. An entry that does not parse is kept case-folded as one bare name
    ///   (config validation should reject it first: see [`parse_function_name`]).
    /// - `volatile_user_functions`: `(schema, name)` pairs as stored in `pg_proc` (exact).
    ///
    /// `read_only_functions` (config, same syntax) removes entries of `volatile_user_functions` only: `name` removes
    /// it from every schema, `schema.name` from that one. It never lets a built-in writer or a `write_functions`
    /// entry through — SPEC §3.1 calls them "user functions known to be safe", and a follower refuses the built-ins
    /// whatever the config says.
    pub fn new<S: AsRef<str>, N: AsRef<str>>(
        write_functions: &[String],
        read_only_functions: &[String],
        volatile_user_functions: impl IntoIterator<Item = (S, N)>,
    ) -> Self {
        let mut set = FunctionSet {
            by_name: FastHashMap::default(),
            longest: 0,
            unlogged: UnloggedRelations::default(),
        };
        let safe: Vec<_> = read_only_functions
            .iter()
            .filter_map(|entry| parse_function_name(entry))
            .collect();
        for (schema, name) in volatile_user_functions {
            let (schema, name) = (schema.as_ref(), name.as_ref());
            let is_safe = safe
                .iter()
                .any(|(s, n)| n == name && s.as_deref().is_none_or(|s| s == schema));
            if !is_safe {
                set.insert(Some(schema), name, true);
            }
        }
        for entry in write_functions {
            match parse_function_name(entry) {
                Some((schema, name)) => set.insert(schema.as_deref(), &name, true),
                None => set.insert(None, &entry.to_lowercase(), true),
            }
        }
        for name in BUILTIN_WRITERS {
            set.insert(None, name, false);
        }
        set
    }

    /// The set, knowing the database's UNLOGGED relations too.
    pub fn with_unlogged(mut self, unlogged: UnloggedRelations) -> Self {
        self.unlogged = unlogged;
        self
    }

    /// The database's UNLOGGED relations.
    pub fn unlogged(&self) -> &UnloggedRelations {
        &self.unlogged
    }

    /// `user`: a user function's (catalog, `write_functions`), not a built-in's.
    fn insert(&mut self, schema: Option<&str>, name: &str, user: bool) {
        self.longest = self.longest.max(name.len());
        let schemas = self.by_name.entry(name.into()).or_default();
        schemas.user |= user;
        match schema {
            None => schemas.any = true,
            Some(s) if !schemas.listed.iter().any(|l| &**l == s) => schemas.listed.push(s.into()),
            Some(_) => {}
        }
    }

    /// Is a call of `schema.name` (or bare `name`) a write? Both are names as stored (see [`FunctionName`] to fold
    /// an identifier token). A bare name matches an entry in any schema: the search_path decides which one runs.
    pub fn is_write(&self, schema: Option<&str>, name: &str) -> bool {
        if name.len() > self.longest {
            return false;
        }
        self.by_name
            .get(name)
            .is_some_and(|s| s.any || schema.is_none_or(|schema| s.listed.iter().any(|l| &**l == schema)))
    }
}

impl FunctionSet {
    /// Whether a call of `schema.name` may be a user function that writes (`read_only_functions` aside): what it
    /// does to session state inside is not seen.
    pub fn is_user_function(&self, schema: Option<&str>, name: &str) -> bool {
        if name.len() > self.longest {
            return false;
        }
        self.by_name
            .get(name)
            .is_some_and(|s| s.user && (s.any || schema.is_none_or(|schema| s.listed.iter().any(|l| &**l == schema))))
    }
}

/// Does a call of this function take a session-level advisory lock (one that outlives the transaction)?
pub fn is_session_advisory_lock(schema: Option<&str>, name: &str) -> bool {
    schema.is_none_or(|s| s == "pg_catalog") && SESSION_ADVISORY_LOCKS.contains(&name)
}

/// Parses a config entry `name` or `schema.name` (SQL identifiers: unquoted parts are case-folded) into the stored
/// form. `None` if it is not one or two identifiers joined by a dot.
pub fn parse_function_name(entry: &str) -> Option<(Option<String>, String)> {
    let mut parts = [None, None];
    let mut count = 0;
    for (i, token) in Lexer::new(entry).enumerate() {
        let token = token.ok()?;
        match (i % 2, token.kind) {
            (0, TokenKind::Word | TokenKind::QuotedIdent) if count < 2 => {
                parts[count] = Some(identifier(token.text)?);
                count += 1;
            }
            (1, TokenKind::Dot) => {}
            _ => return None,
        }
    }
    match (count, parts) {
        (1, [Some(name), None]) => Some((None, name)),
        (2, [Some(schema), Some(name)]) => Some((Some(schema), name)),
        _ => None,
    }
}

/// A stack buffer holding one identifier in stored form, so a lookup needs no allocation.
pub struct FunctionName {
    buf: [u8; MAX_IDENTIFIER_LEN],
    len: usize,
}

impl FunctionName {
    /// Folds an identifier token's text (see [`fold_identifier`]); `None` for `U&"…"`, which the caller must treat
    /// as a possible writer.
    pub fn fold(text: &str) -> Option<Self> {
        let mut name = FunctionName {
            buf: [0; MAX_IDENTIFIER_LEN],
            len: 0,
        };
        let complete = fold_identifier(text, |c| {
            let end = name.len + c.len_utf8();
            if let Some(slot) = name.buf.get_mut(name.len..end) {
                c.encode_utf8(slot);
                name.len = end;
            }
        });
        complete.then_some(name)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(text: &str) -> String {
        FunctionName::fold(text)
            .map(|n| n.as_str().to_owned())
            .unwrap_or_else(|| "<U&>".into())
    }

    #[test]
    fn builtins_match_bare_and_qualified() {
        let set = FunctionSet::default();
        assert!(set.is_write(None, "nextval"));
        assert!(set.is_write(Some("pg_catalog"), "nextval"));
        assert!(set.is_write(Some("public"), "nextval"));
        assert!(
            !set.is_write(None, "NEXTVAL"),
            "names are looked up as stored; quoted \"NEXTVAL\" is another name"
        );
        assert!(!set.is_write(None, "now"));
        assert!(!set.is_write(None, "pg_sequence_last_value"), "a standby answers it");
    }

    #[test]
    fn folding_follows_quoting() {
        assert_eq!(folded("NextVal"), "nextval");
        assert_eq!(folded("\"NextVal\""), "NextVal");
        assert_eq!(folded("\"next\"\"val\""), "next\"val");
        assert_eq!(folded("U&\"nextval\""), "<U&>");
        assert_eq!(folded(&"A".repeat(80)).len(), 63);
    }

    #[test]
    fn user_and_config_functions() {
        let writes = ["audit_log".to_string(), "App.\"Touch\"".to_string()];
        let safe = ["random_pick".to_string(), "app.bump".to_string()];
        let volatile = [
            ("public", "add_order"),
            ("public", "random_pick"),
            ("app", "bump"),
            ("other", "bump"),
        ];
        let set = FunctionSet::new(&writes, &safe, volatile);
        assert!(set.is_write(None, "add_order"));
        assert!(set.is_write(Some("public"), "add_order"));
        assert!(
            !set.is_write(Some("other"), "add_order"),
            "a qualified call elsewhere is another function"
        );
        assert!(
            !set.is_write(None, "random_pick"),
            "read_only_functions removes a volatile user function"
        );
        assert!(!set.is_write(Some("app"), "bump"));
        assert!(set.is_write(Some("other"), "bump"));
        assert!(set.is_write(None, "bump"), "a bare name may resolve to other.bump");
        assert!(set.is_write(Some("x"), "audit_log"));
        assert!(set.is_write(Some("app"), "Touch"));
        assert!(!set.is_write(Some("app"), "touch"));
        let unsafe_builtin = FunctionSet::new(&[], &["nextval".to_string()], std::iter::empty::<(&str, &str)>());
        assert!(
            unsafe_builtin.is_write(None, "nextval"),
            "read_only_functions never frees a built-in writer"
        );
    }

    #[test]
    fn config_names_parse_as_sql_identifiers() {
        assert_eq!(parse_function_name("Foo"), Some((None, "foo".into())));
        assert_eq!(
            parse_function_name(" s . \"Bar\" "),
            Some((Some("s".into()), "Bar".into()))
        );
        assert_eq!(parse_function_name("a.b.c"), None);
        assert_eq!(parse_function_name("f()"), None);
        assert_eq!(parse_function_name(""), None);
    }

    #[test]
    fn session_locks() {
        assert!(is_session_advisory_lock(None, "pg_advisory_lock"));
        assert!(is_session_advisory_lock(
            Some("pg_catalog"),
            "pg_try_advisory_lock_shared"
        ));
        assert!(!is_session_advisory_lock(None, "pg_advisory_xact_lock"));
        assert!(!is_session_advisory_lock(Some("app"), "pg_advisory_lock"));
    }
}
