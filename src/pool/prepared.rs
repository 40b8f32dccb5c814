//! Server-side prepared statements: the names pgsplit gives them and which ones each server connection has.
//!
//! Clients' statement names never reach a server. Every distinct statement (its text and parameter types, as the
//! Parse message carries them) gets one server-side name, `pgsplit_<id>`, shared by every client that prepares the
//! same statement; so a hot statement is prepared once per server connection, whoever uses it, and two clients'
//! names can never clash. Each server connection remembers which statements it has, up to a bound, evicting the
//! least recently used (the session closes an evicted statement on the server when it prepares the next). A
//! statement keeps its name while a client or a server connection holds it.
//!
//! A statement also remembers for which kinds of client (user, database and settings) a server has prepared it, and
//! the description a server gave it, so that a client preparing or describing it again can be answered without a
//! server connection.
//!
//! This module never looks inside SQL: a statement is the bytes the client sent.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::{BufMut, BytesMut};

use crate::fast_hash::FastHashMap;

/// Prefix of every server-side statement name pgsplit creates.
pub const NAME_PREFIX: &str = "pgsplit_";

/// Statements one server connection keeps prepared before evicting the least recently used.
pub const CACHE_CAPACITY: usize = 256;

/// Kinds of client a statement remembers what servers said of; past it the oldest is forgotten.
const MAX_KNOWN: usize = 8;

/// One distinct statement: its server-side id and how to create it.
#[derive(Debug)]
pub struct ServerStatement {
    pub id: u64,
    pub definition: Definition,
    /// Kinds of client (a hash of user, database and settings: what a server parses a statement under) for which
    /// a server prepared it, with the description a server gave, if one was asked for. Locked only when a statement
    /// is prepared or described, never when it runs.
    known: Mutex<Vec<Known>>,
}

#[derive(Debug)]
struct Known {
    client: u64,
    /// ParameterDescription and RowDescription (or NoData), as whole messages.
    description: Option<Box<[u8]>>,
}

#[derive(Debug)]
pub enum Definition {
    /// A Parse body after the name: query string (NUL-terminated) and parameter types, as the client sent them.
    Parse(Box<[u8]>),
    /// A SQL `PREPARE`'s text after the name: `[(types)] AS statement`.
    Sql(Box<str>),
}

impl ServerStatement {
    fn new(id: u64, definition: Definition) -> ServerStatement {
        ServerStatement {
            id,
            definition,
            known: Mutex::default(),
        }
    }

    /// Appends the server-side name, NUL-terminated.
    pub fn put_name(&self, out: &mut BytesMut) {
        put_name(self.id, out);
    }

    /// A server prepared the statement for a client of this kind: it is valid for such clients.
    pub fn confirm(&self, client: u64) {
        self.entry(client);
    }

    /// Whether a server has prepared the statement for a client of this kind.
    pub fn known_to(&self, client: u64) -> bool {
        self.lock().iter().any(|k| k.client == client)
    }

    /// The description a server gave a client of this kind (ParameterDescription, then RowDescription or NoData).
    pub fn description(&self, client: u64) -> Option<Box<[u8]>> {
        self.lock().iter().find(|k| k.client == client)?.description.clone()
    }

    /// Keeps the description a server gave a client of this kind.
    pub fn remember_description(&self, client: u64, description: &[u8]) {
        let mut known = self.lock();
        let at = Self::index(&mut known, client);
        known[at].description = Some(description.into());
    }

    fn entry(&self, client: u64) {
        Self::index(&mut self.lock(), client);
    }

    /// Where `client`'s entry is, made if it was not (forgetting the oldest past [`MAX_KNOWN`]).
    fn index(known: &mut Vec<Known>, client: u64) -> usize {
        if let Some(at) = known.iter().position(|k| k.client == client) {
            return at;
        }
        if known.len() >= MAX_KNOWN {
            known.remove(0);
        }
        known.push(Known {
            client,
            description: None,
        });
        known.len() - 1
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends `pgsplit_<id>\0`, as protocol messages carry names.
pub fn put_name(id: u64, out: &mut BytesMut) {
    put_sql_name(id, out);
    out.put_u8(0);
}

/// Appends `pgsplit_<id>`, as SQL text carries names (a plain lower-case identifier).
pub fn put_sql_name(id: u64, out: &mut BytesMut) {
    out.put_slice(NAME_PREFIX.as_bytes());
    let _ = write!(Writer(out), "{id}");
}

struct Writer<'a>(&'a mut BytesMut);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Every distinct statement some client or server connection holds, by definition.
#[derive(Debug, Default)]
pub struct StatementTable {
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    /// SipHash: shared by all clients and keyed by their SQL text.
    by_definition: HashMap<Box<[u8]>, Weak<ServerStatement>>,
    next_id: u64,
    /// Sweep statements nobody holds when the table grows past this.
    sweep_at: usize,
}

impl StatementTable {
    /// The statement with this definition, with a fresh id if nobody holds it now.
    pub fn intern(&self, definition: &[u8]) -> Arc<ServerStatement> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(statement) = inner.by_definition.get(definition).and_then(Weak::upgrade) {
            return statement;
        }
        inner.next_id += 1;
        let statement = Arc::new(ServerStatement::new(
            inner.next_id,
            Definition::Parse(definition.into()),
        ));
        inner
            .by_definition
            .insert(definition.into(), Arc::downgrade(&statement));
        if inner.by_definition.len() > inner.sweep_at {
            inner.by_definition.retain(|_, weak| weak.strong_count() > 0);
            inner.sweep_at = (inner.by_definition.len() * 2).max(1024);
        }
        statement
    }

    /// A statement made by a SQL `PREPARE` (`rest` is its text after the name). Each gets its own name: a SQL
    /// `PREPARE` of a name the connection already has would fail, and the client's statement text is not split
    /// out to be shared.
    pub fn sql(&self, rest: &str) -> Arc<ServerStatement> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next_id += 1;
        Arc::new(ServerStatement::new(inner.next_id, Definition::Sql(rest.into())))
    }

    /// The statement with this definition, if some client or server connection holds it.
    pub fn find(&self, definition: &[u8]) -> Option<Arc<ServerStatement>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_definition.get(definition).and_then(Weak::upgrade)
    }

    /// Distinct statements held by some client or server connection.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_definition.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// The statements one server connection has prepared, least recently used first out.
#[derive(Debug, Default)]
pub struct PreparedCache {
    /// Statement id → the statement and when it was last used (a counter, not a clock).
    used: FastHashMap<u64, (Arc<ServerStatement>, u64)>,
    clock: u64,
}

impl PreparedCache {
    /// Whether the connection has this statement; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.clock += 1;
        match self.used.get_mut(&id) {
            Some((_, used)) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records that the connection now has `statement`; returns the id of the statement evicted to make room,
    /// which the caller closes on the server.
    pub fn insert(&mut self, statement: Arc<ServerStatement>) -> Option<u64> {
        self.clock += 1;
        let evicted = if self.used.len() >= CACHE_CAPACITY && !self.used.contains_key(&statement.id) {
            let oldest = self.used.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id);
            oldest.inspect(|id| {
                self.used.remove(id);
            })
        } else {
            None
        };
        self.used.insert(statement.id, (statement, self.clock));
        evicted
    }

    /// The connection no longer has `id` (it failed to prepare, or was deallocated).
    pub fn remove(&mut self, id: u64) {
        self.used.remove(&id);
    }

    /// The connection has no statements any more (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub fn clear(&mut self) {
        self.used.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_definition_one_name_while_held() {
        let table = StatementTable::default();
        let a = table.intern(b"SELECT 1\0\0\0");
        let b = table.intern(b"SELECT 1\0\0\0");
        let c = table.intern(b"SELECT 2\0\0\0");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let id = a.id;
        let mut cache = PreparedCache::default();
        cache.insert(a);
        drop(b);
        assert_eq!(
            table.intern(b"SELECT 1\0\0\0").id,
            id,
            "a server connection still holds it"
        );
        cache.clear();
        assert_ne!(
            table.intern(b"SELECT 1\0\0\0").id,
            id,
            "a released statement is named afresh"
        );
        assert_eq!(
            table.held(),
            1,
            "only the held statement (SELECT 2) remains; the new one was dropped"
        );
    }

    #[test]
    fn what_servers_said_is_kept_per_kind_of_client() {
        let table = StatementTable::default();
        let statement = table.intern(b"SELECT $1\0\0\0");
        assert!(!statement.known_to(7));
        statement.confirm(7);
        assert!(statement.known_to(7) && !statement.known_to(8));
        assert_eq!(statement.description(7), None);
        statement.remember_description(7, b"tT");
        assert_eq!(statement.description(7).as_deref(), Some(&b"tT"[..]));
        assert!(Arc::ptr_eq(&table.find(b"SELECT $1\0\0\0").unwrap(), &statement));
        for client in 100..100 + MAX_KNOWN as u64 {
            statement.confirm(client);
        }
        assert!(!statement.known_to(7), "the oldest kind is forgotten");
    }

    #[test]
    fn names_carry_the_prefix_and_id() {
        let mut out = BytesMut::new();
        put_name(42, &mut out);
        assert_eq!(&out[..], b"pgsplit_42\0");
    }

    #[test]
    fn the_least_recently_used_statement_is_evicted() {
        let table = StatementTable::default();
        let statements: Vec<_> = (0..=CACHE_CAPACITY)
            .map(|i| table.intern(format!("{i}").as_bytes()))
            .collect();
        let id = |i: usize| statements[i].id;
        let mut cache = PreparedCache::default();
        for statement in &statements[..CACHE_CAPACITY] {
            assert_eq!(cache.insert(statement.clone()), None);
        }
        assert!(cache.touch(id(0)), "statement 0 is used again, so 1 is now the oldest");
        assert_eq!(cache.insert(statements[CACHE_CAPACITY].clone()), Some(id(1)));
        assert!(!cache.touch(id(1)));
        assert!(cache.touch(id(CACHE_CAPACITY)));
        assert_eq!(cache.len(), CACHE_CAPACITY);
        cache.remove(id(CACHE_CAPACITY));
        assert!(!cache.touch(id(CACHE_CAPACITY)));
        cache.clear();
        assert!(cache.is_empty());
    }
}
