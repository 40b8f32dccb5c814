//! pgsplit's own connections to its instances — the monitor's, the function catalog's and the control plane's,
//! never a client's: how they log in (as the control role, `[control]`, with the password the config holds now;
//! TLS and the allowed authentication methods of `[server]`; TCP keepalives, a server-side `statement_timeout`, a
//! connect timeout), and
//! the one way the control plane runs SQL on them: a statement at a time, each under a deadline, with errors that
//! name the statement and carry the server's message — never the SQL text, so never a value it holds (a
//! `primary_conninfo` with its password).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::Config;
use crate::protocol::login::AuthMethods;
use crate::tls::ServerTls;
use crate::tls::postgres::{self, Keepalive, OpenError};

/// A dead peer that sent no RST (host crash, NAT expiry) is noticed by the kernel after about this long idle, plus
/// [`KEEPALIVE_INTERVAL`] × [`KEEPALIVE_RETRIES`]; busy connections are bounded by the statement deadlines.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
/// The shortest deadline a statement gets, whatever `health.timeout` says: a control statement that needs an
/// fsync (ALTER SYSTEM) must not time out on a busy disk.
const MIN_DEADLINE: Duration = Duration::from_secs(1);

/// The deadline of one statement of pgsplit's own, from `health.timeout`.
pub fn statement_deadline(health_timeout: Duration) -> Duration {
    health_timeout.max(MIN_DEADLINE)
}

/// A login for pgsplit's own connections as `config`'s control role, database `postgres` (the caller may name
/// another). The server ends a statement that outruns `deadline` itself too, so an abandoned one does not hold
/// locks behind our back.
pub fn own_login(config: &Config, application: &str, deadline: Duration) -> tokio_postgres::Config {
    let (user, password) = config.control_login();
    let mut login = tokio_postgres::Config::new();
    login
        .user(user)
        .password(password.expose())
        .dbname("postgres")
        .application_name(application)
        .options(format!("-c statement_timeout={}", deadline.as_millis()))
        .connect_timeout(deadline);
    login
}

/// A tokio-postgres connection whose background task ends with it: dropping a `Conn` also stops the task, which
/// would otherwise wait forever for the answer to a query abandoned on a hung server.
pub struct Conn {
    pub(super) client: Client,
    task: JoinHandle<()>,
}

impl Conn {
    /// Connects to `host:port` with `login`, TLS and allowed methods as `config`'s `[server]` says, all within
    /// `timeout`.
    pub async fn open(
        login: &tokio_postgres::Config,
        host: &str,
        port: u16,
        tls: &ServerTls,
        config: &Config,
        timeout: Duration,
        name: &str,
    ) -> Result<Conn, OpenError> {
        let keepalive = Keepalive {
            idle: KEEPALIVE_IDLE,
            interval: KEEPALIVE_INTERVAL,
            retries: KEEPALIVE_RETRIES,
        };
        let methods = AuthMethods::of(&config.server.auth_methods);
        let (client, connection) = postgres::connect(login, host, port, tls, methods, &keepalive, timeout).await?;
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(instance = name, %error, "pgsplit's own connection ended");
            }
        });
        Ok(Conn { client, task })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `sql`, bounded by `deadline`; its answer is dropped.
    pub async fn run(&self, sql: &Sql<'_>, deadline: Duration) -> Result<(), SqlError> {
        self.rows(sql, deadline).await.map(drop)
    }

    /// The first column of the first row of `sql`'s answer (NULL reads as the empty string).
    pub async fn value(&self, sql: &Sql<'_>, deadline: Duration) -> Result<String, SqlError> {
        let mut row = self.row(sql, 1, deadline).await?;
        Ok(row.pop().flatten().unwrap_or_default())
    }

    /// The first `columns` columns of the first row of `sql`'s answer.
    pub async fn row(
        &self,
        sql: &Sql<'_>,
        columns: usize,
        deadline: Duration,
    ) -> Result<Vec<Option<String>>, SqlError> {
        let messages = self.rows(sql, deadline).await?;
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .ok_or(SqlError::Answer {
                what: sql.what,
                answer: "no row",
            })?;
        (0..columns)
            .map(|i| {
                row.try_get(i)
                    .map(|v| v.map(str::to_owned))
                    .map_err(|_| SqlError::Answer {
                        what: sql.what,
                        answer: "fewer columns than expected",
                    })
            })
            .collect()
    }

    async fn rows(&self, sql: &Sql<'_>, deadline: Duration) -> Result<Vec<SimpleQueryMessage>, SqlError> {
        match tokio::time::timeout(deadline, self.client.simple_query(sql.text)).await {
            Ok(Ok(messages)) => Ok(messages),
            Ok(Err(error)) => Err(SqlError::from_postgres(sql, &error)),
            Err(_) => Err(SqlError::Timeout {
                what: sql.what,
                after: deadline,
            }),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A statement of pgsplit's own: what it does, in words fit for an error (`what`), and its text — which may hold
/// values (a conninfo with a password) and so never leaves this module. `secret` is a value the server might echo
/// back in its message; it is blotted out there.
pub struct Sql<'a> {
    pub what: &'static str,
    text: &'a str,
    secret: Option<&'a str>,
}

impl<'a> Sql<'a> {
    /// A statement whose text names itself, e.g. `SELECT pg_reload_conf()`.
    pub const fn plain(text: &'static str) -> Sql<'static> {
        Sql {
            what: text,
            text,
            secret: None,
        }
    }

    /// A statement described as `what` (errors say this, never `text`).
    pub const fn described(what: &'static str, text: &'a str) -> Sql<'a> {
        Sql {
            what,
            text,
            secret: None,
        }
    }

    /// A statement carrying `secret` in its text: errors say `what`, and blot `secret` out of the server's message.
    pub const fn with_secret(what: &'static str, text: &'a str, secret: &'a str) -> Sql<'a> {
        Sql {
            what,
            text,
            secret: Some(secret),
        }
    }
}

/// A statement of pgsplit's own that failed: which, and why — the server's message (no DETAIL, no HINT: they
/// may quote values), a timeout, or a broken connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("{what} failed: {message} (SQLSTATE {code})")]
    Server {
        what: &'static str,
        code: String,
        message: String,
    },
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: the connection failed: {reason}")]
    Connection { what: &'static str, reason: String },
    #[error("{what}: unexpected answer ({answer})")]
    Answer { what: &'static str, answer: &'static str },
}

impl SqlError {
    fn from_postgres(sql: &Sql<'_>, error: &tokio_postgres::Error) -> SqlError {
        match error.as_db_error() {
            Some(db) => SqlError::Server {
                what: sql.what,
                code: db.code().code().to_owned(),
                message: blot(db.message(), sql.secret),
            },
            // Connection-level errors never quote the query; they are still blotted, to be sure.
            None => SqlError::Connection {
                what: sql.what,
                reason: blot(&error_chain(error), sql.secret),
            },
        }
    }

    /// The statement outran its deadline: the server may not answer at all.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SqlError::Timeout { .. })
    }

    /// The server refused the statement (so it did not run).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SqlError::Server { .. })
    }
}

/// `text` with `secret`, and any `password=…` word, replaced by `…`.
fn blot(text: &str, secret: Option<&str>) -> String {
    let mut out = match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "…"),
        _ => text.to_owned(),
    };
    let mut from = 0;
    while let Some(at) = out[from..].to_ascii_lowercase().find("password=").map(|i| from + i) {
        let start = at + "password=".len();
        let end = out[start..]
            .find(|c: char| c.is_whitespace() || c == '"')
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "…");
        from = start + "…".len();
    }
    out
}

/// An error with its causes, `outer: inner: …` (tokio-postgres's own Display leaves the cause out, e.g. "error
/// connecting to server" without "Connection refused").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_statement_and_never_hold_its_values() {
        let conninfo = "host=10.0.0.1 user=replicator password=hunter2";
        let text = format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'");
        let sql = Sql::with_secret("ALTER SYSTEM SET primary_conninfo", &text, conninfo);
        let error = SqlError::Server {
            what: sql.what,
            code: "58P01".into(),
            message: blot(&format!("could not write \"{conninfo}\""), sql.secret),
        };
        let shown = error.to_string();
        assert!(
            shown.starts_with("ALTER SYSTEM SET primary_conninfo failed: could not write"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2") && !shown.contains("10.0.0.1"), "{shown}");
    }

    #[test]
    fn blot_hides_passwords_even_in_other_values() {
        assert_eq!(blot("a password=x b", None), "a password=… b");
        assert_eq!(blot("PASSWORD=secret\"", None), "PASSWORD=…\"");
        assert_eq!(blot("no secret here", Some("")), "no secret here");
        assert_eq!(
            blot("k=v password=p password=q", Some("k=v")),
            "… password=… password=…"
        );
    }

    #[test]
    fn deadlines_have_a_floor_and_logins_keep_alive() {
        assert_eq!(statement_deadline(Duration::from_millis(100)), MIN_DEADLINE);
        assert_eq!(statement_deadline(Duration::from_secs(3)), Duration::from_secs(3));
        let config = Config::parse(
            "[leader]\nhost = \"h\"\nport = 1\n[[users]]\nname = \"app\"\npassword = \"a\"\n\
             [control]\nuser = \"steer\"\npassword = \"s\"\n",
            "t.toml",
        )
        .unwrap();
        let login = own_login(&config, "pgsplit-test", Duration::from_secs(2));
        assert_eq!(login.get_user(), Some("steer"));
        assert_eq!(login.get_password(), Some(&b"s"[..]));
        assert_eq!(login.get_options(), Some("-c statement_timeout=2000"));
        assert_eq!(login.get_connect_timeout(), Some(&Duration::from_secs(2)));
    }
}
