//! Session settings: those a client expects on whatever server connection serves it (its startup parameters —
//! application_name, client_encoding, DateStyle, TimeZone, `-c name=value` pairs from `options` — kept up to date
//! from the ParameterStatus messages the server sends it), and those a server connection carries.
//!
//! [`Settings::sync_sql`] compares the two and writes one `SET`/`RESET` statement for the differences, or nothing
//! when they match (the common case: no round trip).

use std::sync::Arc;

use postgres_protocol::escape::{escape_identifier, escape_literal};

/// Reported by the server but not settable per session; never replayed.
const SERVER_OWNED: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
];

/// Startup keys that describe the connection rather than settings.
const CONNECTION_KEYS: &[&str] = &["user", "database", "replication", "options"];

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Shared until changed: a transaction keeps a copy of the settings at its start (to put back should it roll
    /// back), which costs a reference count, not a copy of every name and value.
    values: Arc<Vec<(String, Value)>>,
    /// What the server gives this login when nothing is set (role and database defaults, read at login): never
    /// replayed nor compared, only consulted by [`Settings::effective`]. Shared by every session of the login.
    defaults: Arc<Vec<(String, String)>>,
    /// A server connection's settings may hold what nobody recorded (a function set them): the next client's
    /// settings are applied after resetting them all.
    unknown: bool,
    /// What routing asks of these settings for every unit, worked out whenever they change.
    routing: Routing,
}

/// The settings in effect that decide where a session's units may run.
#[derive(Debug, Clone, Copy, Default)]
struct Routing {
    /// `default_transaction_isolation` is serializable: a standby refuses such transactions.
    serializable: bool,
    /// `default_transaction_read_only` is on.
    read_only: bool,
}

/// Two sets of settings are the same when their values are (the defaults are the server's, on every connection),
/// and neither is unknown.
impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        (Arc::ptr_eq(&self.values, &other.values) || self.values == other.values) && !self.unknown && !other.unknown
    }
}

impl Eq for Settings {}

/// A setting's value: a plain string (startup parameters, ParameterStatus), or the SQL expression a client's own
/// successful `SET` used (`'a', b` for search_path), replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Literal(String),
    Sql(String),
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Value::Literal(s) | Value::Sql(s) => s,
        }
    }
}

impl Settings {
    /// From a StartupMessage's parameters; `options` is unpacked into its `-c name=value` settings.
    pub fn from_startup(params: &[(String, String)]) -> Result<Self, String> {
        let mut session = Settings::default();
        for (name, value) in params {
            if name == "options" {
                for (name, value) in parse_options(value)? {
                    session.set(&name, &value);
                }
            } else if !CONNECTION_KEYS.contains(&name.as_str()) && !name.starts_with("_pq_.") {
                session.set(name, value);
            }
        }
        Ok(session)
    }

    /// Names and values as text (SQL-set values as written).
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.text()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.text())
    }

    /// Records a value; names compare case-insensitively, as PostgreSQL's do.
    pub fn set(&mut self, name: &str, value: &str) {
        self.put(name, Value::Literal(value.to_owned()));
    }

    /// Records a value as the SQL expression of a `SET` the server accepted.
    pub fn set_sql(&mut self, name: &str, expression: &str) {
        self.put(name, Value::Sql(expression.to_owned()));
    }

    pub fn reset(&mut self, name: &str) {
        if self.values.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Arc::make_mut(&mut self.values).retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
        self.refresh_routing();
    }

    pub fn reset_all(&mut self) {
        self.values = Arc::default();
        self.refresh_routing();
    }

    /// These settings (a server connection's) may hold what nobody recorded: forget what is recorded, and reset all
    /// at the next sync.
    pub fn mark_unknown(&mut self) {
        self.values = Arc::default();
        self.unknown = true;
        self.refresh_routing();
    }

    /// Whether no setting is set (defaults aside).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn put(&mut self, name: &str, value: Value) {
        if SERVER_OWNED.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return;
        }
        let values = Arc::make_mut(&mut self.values);
        match values.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(slot) => slot.1 = value,
            None => values.push((name.to_owned(), value)),
        }
        self.refresh_routing();
    }

    /// Records what the server gives this login for settings it does not set (role and database defaults).
    pub fn set_defaults(&mut self, defaults: Arc<Vec<(String, String)>>) {
        self.defaults = defaults;
        self.refresh_routing();
    }

    /// Whether the session's transactions are serializable unless it says otherwise (as set, else by the server's
    /// default).
    pub fn serializable_by_default(&self) -> bool {
        self.routing.serializable
    }

    /// Whether the session's transactions are read-only unless it says otherwise (as set, else by the server's
    /// default).
    pub fn read_only_by_default(&self) -> bool {
        self.routing.read_only
    }

    /// Works out [`Routing`] again after a change, so that planning a unit reads two booleans instead of searching
    /// and folding strings.
    fn refresh_routing(&mut self) {
        self.routing = Routing {
            serializable: self
                .effective("default_transaction_isolation")
                .is_some_and(|v| v.to_ascii_lowercase().contains("serializable")),
            read_only: self.is_on("default_transaction_read_only"),
        };
    }

    /// The value in effect: the one set, else the server's default for this login, if known.
    pub fn effective(&self, name: &str) -> Option<&str> {
        self.get(name).or_else(|| {
            self.defaults
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }

    /// Whether a boolean setting is on (as set, else by the server's default), however it was written (`on`,
    /// `'true'`, `1`, `yes`).
    pub fn is_on(&self, name: &str) -> bool {
        self.effective(name).is_some_and(|v| {
            let v = v.trim().trim_matches('\'').to_ascii_lowercase();
            matches!(v.as_str(), "on" | "true" | "1" | "yes" | "t" | "y")
        })
    }

    /// The statement that turns `server`'s settings into these, or None when they already match.
    ///
    /// A value given as a string (a startup parameter, a reported one, `options=-c`) is applied with
    /// `set_config(name, value, false)`, which parses it with the setting's own input rules exactly as a startup
    /// packet would: `search_path=a,b` is two schemas and `DateStyle=ISO, MDY` two words, where `SET search_path =
    /// 'a,b'` would be one quoted schema name. A value the client set with SQL `SET` is replayed as that statement
    /// was written.
    pub fn sync_sql(&self, server: &Settings) -> Option<String> {
        // The usual checkout: the connection last served a client with the same settings, recorded in the same order.
        if self == server {
            return None;
        }
        let mut calls = Vec::new();
        let mut statements = String::new();
        for (name, value) in self.values.iter() {
            let on_server = server
                .values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v);
            if on_server == Some(value) {
                continue;
            }
            match value {
                Value::Literal(text) => calls.push(format!(
                    "pg_catalog.set_config({}, {}, false)",
                    escape_literal(&name.to_ascii_lowercase()),
                    escape_literal(text)
                )),
                Value::Sql(expression) => statements.push_str(&format!("SET {} = {expression};", quote_name(name))),
            }
        }
        for (name, _) in server.values.iter() {
            if self.get(name).is_none() {
                statements.push_str(&format!("RESET {};", quote_name(name)));
            }
        }
        // Unknown settings are all reset first (RESET ALL leaves the role alone), in the same statement.
        let mut sql = match server.unknown {
            true => "RESET ALL;RESET ROLE;".to_owned(),
            false => String::new(),
        };
        if !calls.is_empty() {
            sql.push_str(&format!("SELECT {};", calls.join(", ")));
        }
        sql.push_str(&statements);
        (!sql.is_empty()).then_some(sql)
    }
}

/// Unpacks libpq's `options`: `-c name=value` or `--name=value`, separated by spaces, `\` escaping the next byte.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words.next().ok_or("\"-c\" in options needs name=value")?
        } else if let Some(rest) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            rest.to_owned()
        } else {
            return Err(format!(
                "unsupported startup option \"{word}\"; pgsplit accepts -c name=value"
            ));
        };
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("option \"{pair}\" needs name=value"))?;
        if name.is_empty() {
            return Err(format!("option \"{pair}\" names no setting"));
        }
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

/// Quotes each dotted part of a setting name as an identifier, so no name can inject SQL.
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|part| escape_identifier(&part.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn startup_settings_and_options_are_collected() {
        let p = Settings::from_startup(&params(&[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "web"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB -c x.y=with\\ space",
            ),
        ]))
        .unwrap();
        assert_eq!(
            p.values()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>(),
            params(&[
                ("application_name", "web"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "8MB"),
                ("x.y", "with space"),
            ])
        );
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(Settings::from_startup(&params(&[("options", "-x")])).is_err());
        assert!(Settings::from_startup(&params(&[("options", "-c")])).is_err());
        assert!(Settings::from_startup(&params(&[("options", "-c novalue")])).is_err());
        // PostgreSQL refuses a nameless setting at login; replayed, it would fail every checkout instead.
        assert!(Settings::from_startup(&params(&[("options", "-c =x")])).is_err());
        assert!(Settings::from_startup(&params(&[("options", "--=x")])).is_err());
    }

    #[test]
    fn a_value_with_backslashes_and_quotes_is_one_literal_whatever_the_string_rules() {
        // With standard_conforming_strings off on the pooled connection, '\'' would end a plain literal early.
        let client = Settings::from_startup(&params(&[("application_name", "a\\'; DROP TABLE t; --")])).unwrap();
        let sql = client.sync_sql(&Settings::default()).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('application_name',  E'a\\\\''; DROP TABLE t; --', false);"
        );
    }

    #[test]
    fn nothing_to_sync_when_settings_match() {
        let a = Settings::from_startup(&params(&[("TimeZone", "UTC")])).unwrap();
        let b = Settings::from_startup(&params(&[("timezone", "UTC")])).unwrap();
        assert_eq!(a.sync_sql(&b), None);
    }

    #[test]
    fn differences_become_one_quoted_statement() {
        let client = Settings::from_startup(&params(&[("application_name", "it's")])).unwrap();
        let server = Settings::from_startup(&params(&[("application_name", "x"), ("Time\"Zone", "UTC")])).unwrap();
        assert_eq!(
            client.sync_sql(&server).as_deref(),
            Some("SELECT pg_catalog.set_config('application_name', 'it''s', false);RESET \"time\"\"zone\";")
        );
    }

    #[test]
    fn string_values_are_given_as_the_server_parses_startup_parameters() {
        let client = Settings::from_startup(&params(&[
            ("options", "-c search_path=acc_b,public -c x.path=C:\\\\dir"),
            ("DateStyle", "ISO, MDY"),
        ]))
        .unwrap();
        assert_eq!(
            client.sync_sql(&Settings::default()).as_deref(),
            Some(
                "SELECT pg_catalog.set_config('search_path', 'acc_b,public', false), \
                 pg_catalog.set_config('x.path',  E'C:\\\\dir', false), \
                 pg_catalog.set_config('datestyle', 'ISO, MDY', false);"
            )
        );
    }

    #[test]
    fn sql_set_values_are_replayed_verbatim_and_reset_forgets_them() {
        let mut client = Settings::default();
        client.set_sql("search_path", "'a', b");
        assert_eq!(
            client.sync_sql(&Settings::default()).as_deref(),
            Some("SET \"search_path\" = 'a', b;")
        );
        client.set_sql("default_transaction_read_only", "'on'");
        assert!(client.is_on("default_transaction_read_only"));
        client.reset("SEARCH_PATH");
        assert_eq!(client.get("search_path"), None);
        client.reset_all();
        assert_eq!(client, Settings::default());
    }

    #[test]
    fn unknown_settings_are_all_reset_before_the_next_clients_are_applied() {
        let mut server = Settings::from_startup(&params(&[("application_name", "x")])).unwrap();
        server.mark_unknown();
        assert_eq!(
            Settings::default().sync_sql(&server).as_deref(),
            Some("RESET ALL;RESET ROLE;")
        );
        let client = Settings::from_startup(&params(&[("application_name", "y")])).unwrap();
        assert_eq!(
            client.sync_sql(&server).as_deref(),
            Some("RESET ALL;RESET ROLE;SELECT pg_catalog.set_config('application_name', 'y', false);")
        );
        server.clone_from(&client);
        assert_eq!(client.sync_sql(&server), None, "applied: known again");
    }

    #[test]
    fn server_defaults_count_but_are_never_replayed() {
        let mut client = Settings::default();
        client.set_defaults(Arc::new(vec![
            ("default_transaction_isolation".into(), "serializable".into()),
            ("default_transaction_read_only".into(), "on".into()),
        ]));
        assert_eq!(client.effective("DEFAULT_TRANSACTION_ISOLATION"), Some("serializable"));
        assert!(client.is_on("default_transaction_read_only"));
        assert_eq!(client, Settings::default());
        assert_eq!(client.sync_sql(&Settings::default()), None);
        assert!(client.serializable_by_default() && client.read_only_by_default());
        client.set("default_transaction_read_only", "off");
        assert!(
            !client.is_on("default_transaction_read_only"),
            "what the client sets wins"
        );
        assert!(!client.read_only_by_default());
        client.set_sql("DEFAULT_TRANSACTION_ISOLATION", "'read committed'");
        assert!(!client.serializable_by_default());
        client.reset("default_transaction_isolation");
        assert!(client.serializable_by_default(), "the server's default again");
        client.reset_all();
        assert!(client.serializable_by_default() && client.read_only_by_default());
    }

    #[test]
    fn server_owned_parameters_are_never_replayed() {
        let mut p = Settings::default();
        p.set("is_superuser", "on");
        p.set("in_hot_standby", "off");
        assert_eq!(p.values().count(), 0);
    }
}
