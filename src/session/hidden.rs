//! Session state the client changed where pgsplit cannot see it — inside a DO block, a CALL or a user function, or
//! with `set_config` — must never reach the next client of a pooled connection. After such a unit, once the
//! connection is idle and before it goes back to its pool, pgsplit checks it with one query of its own ([`sql`]),
//! sent after the client's ReadyForQuery so the client never waits for it:
//!
//! - state that lives on that connection only (a temporary relation, LISTEN, a session advisory lock, a holdable
//!   cursor, a prepared statement not pgsplit's) pins the client to it, as when the client makes it itself;
//! - settings `set_config('name', …, false)` named are read back and carried with the client like a SET;
//! - after a DO block, CALL or `set_config` whose name is not written out, every setting `pg_settings` shows as set
//!   in the session is read back and carried too (not after a user function: called far more often, it rarely sets
//!   anything, and that read costs about half a millisecond of server time);
//! - whatever else may have changed — a setting a user function set, a custom placeholder (`app.tenant`) set under
//!   a name not written in the statement, which `pg_settings` does not list — cannot be read back: the
//!   connection's settings are marked unknown, and whoever borrows it next resets them all first (`RESET ALL;
//!   RESET ROLE`, in the same statement as its own settings). Those do not stay with the client that set them
//!   either; everything pgsplit read back does.
//!
//! A unit that only calls `set_config` with a written-out name needs no reset: what it set is read back exactly.

use postgres_protocol::escape::escape_literal;

use super::plan::{Change, StreamState};
use super::relay::Relay;
use crate::config::PoolMode;
use crate::protocol::messages;

/// Whether the connection now holds state that lives on it alone.
const PINS: &str = "(EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable) \
     OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE pg_catalog.left(name, 8) <> 'pgsplit_'))::text";

/// After a DO block, CALL or `set_config` of a name not written out: every setting the session has set, as the
/// server shows it.
const SESSION_SETTINGS: &str = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

/// The check owed after a unit, and what its answer has read so far (boxed: rare, and every session's task carries
/// this).
#[derive(Debug, Default)]
pub struct HiddenCheck(Option<Box<Owed>>);

/// A unit may have changed state unseen: the connection must be checked before it serves anyone else.
#[derive(Debug, Default)]
struct Owed {
    /// Settings may have changed that cannot be read back.
    unseen: bool,
    /// Every setting of the session is read back.
    read_settings: bool,
    /// Settings `set_config` named, to read back.
    captures: Vec<String>,
    /// The check was sent.
    sent: bool,
    /// Its answer's first row: the pin flag, then each capture's value.
    row: Option<Vec<Option<String>>>,
    /// Its answer's other rows (with `read_settings`): the session's settings.
    settings: Vec<(String, String)>,
    /// Its answer ended (ReadyForQuery): what it read is to be applied.
    ended: bool,
}

impl HiddenCheck {
    /// A check is owed or under way: the connection must not go back to its pool yet.
    pub fn is_owed(&self) -> bool {
        self.0.is_some()
    }

    fn owed(&mut self) -> &mut Owed {
        self.0.get_or_insert_with(Box::default)
    }

    /// A row of the check's answer: the first is its own, the others (if any) the session's settings.
    pub fn row(&mut self, body: &[u8]) {
        let Some(owed) = self.0.as_mut() else {
            return;
        };
        if owed.row.is_none() {
            owed.row = Some(data_row(body).unwrap_or_default());
        } else if let Some([Some(name), Some(setting)]) = data_row(body).as_deref() {
            owed.settings.push((name.clone(), setting.clone()));
        }
    }

    /// The check's answer ended (ReadyForQuery): what it read is applied next (`Relay::apply_hidden`).
    pub fn answered(&mut self) {
        if let Some(owed) = self.0.as_mut() {
            owed.ended = true;
        }
    }
}

/// The check's query: the pin flag, then each captured setting's value (NULL when unset); with `read_settings`,
/// then the session's settings, one row each.
pub fn sql(captures: &[String], read_settings: bool) -> String {
    let mut sql = format!("SELECT {PINS}");
    for name in captures {
        sql.push_str(&format!(", pg_catalog.current_setting({}, true)", escape_literal(name)));
    }
    if read_settings {
        sql.push(';');
        sql.push_str(SESSION_SETTINGS);
    }
    sql
}

/// The values of a DataRow (NULL as None); None if it does not read as one.
fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut at = 2;
    let mut values = Vec::with_capacity(count.into());
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        values.push(Some(String::from_utf8_lossy(body.get(at..at + len)?).into_owned()));
        at += len;
    }
    Some(values)
}

impl Relay {
    /// What a Query or Bind about to be forwarded may change unseen (its plan's changes).
    pub(super) fn note_hidden(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Unseen { settings } => {
                    let owed = self.hidden.owed();
                    owed.unseen = true;
                    owed.read_settings |= settings;
                }
                Change::Capture(name) => {
                    let owed = self.hidden.owed();
                    if !owed.captures.contains(name) {
                        owed.captures.push(name.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends the check once the unit is over and nothing of the client's is in flight. A connection the client
    /// keeps (session mode, pinned) needs none: it serves no one else, and is reset with DISCARD ALL when the
    /// client leaves.
    pub(super) fn check_if_due(&mut self) {
        if self.hidden.0.as_ref().is_none_or(|owed| owed.sent) {
            return;
        }
        if self.attachment.pool_mode() == PoolMode::Session || self.stream.pinned {
            self.hidden.0 = None;
            return;
        }
        let due = !self.terminating
            && self.attachment.is_attached()
            && self.exchange.settled()
            && self.to_server.is_empty()
            && self.client_framer.at_boundary();
        if !due {
            return;
        }
        let owed = self.hidden.owed();
        owed.sent = true;
        let sql = sql(&owed.captures, owed.read_settings);
        messages::query(self.to_server.insert(&mut self.client_buf), sql.as_bytes());
        self.exchange.expect_check();
    }

    /// Applies what the check read, once its answer has ended: a pin, the settings read back, or a connection whose
    /// settings are unknown. A check that failed (no row) pins the client: nothing of its state may go elsewhere.
    pub(super) fn apply_hidden(&mut self) {
        if self.hidden.0.as_ref().is_none_or(|owed| !owed.ended) {
            return;
        }
        let Some(owed) = self.hidden.0.take() else {
            return;
        };
        let Owed {
            row,
            captures,
            unseen,
            settings,
            ..
        } = *owed;
        let pins = row
            .as_ref()
            .is_none_or(|row| row.first() != Some(&Some("false".to_owned())));
        if let Some(row) = row {
            let Some(server) = self.attachment.attached_mut() else {
                return;
            };
            // Carried with the client; the connection forgets them below (unknown) unless the client keeps it.
            for (name, setting) in &settings {
                self.wanted.set(name, setting);
            }
            for (name, value) in captures.iter().zip(row.into_iter().skip(1)) {
                match value {
                    Some(value) => {
                        self.wanted.set(name, &value);
                        server.conn.settings.set(name, &value);
                    }
                    None => {
                        self.wanted.reset(name);
                        server.conn.settings.reset(name);
                    }
                }
            }
            if unseen && !pins {
                server.conn.settings.mark_unknown();
            }
        }
        if pins {
            tracing::debug!("state made where pgsplit cannot see it lives on the connection: the client keeps it");
            self.set_stream(StreamState {
                pinned: true,
                ..self.stream
            });
        }
    }
}

/// A check's answer for tests: one DataRow body.
#[cfg(test)]
fn row_body(values: &[Option<&str>]) -> bytes::BytesMut {
    use bytes::{BufMut, BytesMut};
    let mut body = BytesMut::new();
    body.put_u16(values.len() as u16);
    for value in values {
        match value {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v.as_bytes());
            }
            None => body.put_i32(-1),
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_reads_the_pin_flag_and_each_named_setting() {
        assert!(sql(&[], false).starts_with("SELECT (EXISTS"));
        assert!(sql(&[], true).ends_with(";SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'"));
        assert!(
            sql(&["app.tenant".into(), "it's".into()], false).ends_with(
                ", pg_catalog.current_setting('app.tenant', true), pg_catalog.current_setting('it''s', true)"
            )
        );
        let body = row_body(&[Some("false"), Some("tenant-a"), None]);
        assert_eq!(
            data_row(&body),
            Some(vec![Some("false".into()), Some("tenant-a".into()), None])
        );
        assert_eq!(data_row(&body[..5]), None);
    }
}
