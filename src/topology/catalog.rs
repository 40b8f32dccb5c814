//! Which user functions may write, per database: every VOLATILE function outside the system schemas, read from the
//! leader's `pg_proc` and cached for a while, so the router can keep `SELECT my_func()` off followers (SPEC §3.1);
//! and, from the same load, the database's UNLOGGED relations, which a standby cannot read.
//!
//! It only reads the catalog. It never routes and never keeps a client waiting long: a stale list is served while a
//! fresh one loads in the background, and only a database's first load is waited for (bounded by
//! `health.timeout`). A failed load is logged and the last known list (at first: none) stays in use.
//!
//! Sessions ask for lists, but loads run on the runtime the catalog was made on (the proxy's control runtime):
//! they need tokio's timers, which the session workers do not have (`crate::runtime`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::SharedTopology;
use super::conn::{Conn, error_chain, own_login, statement_deadline};
use crate::config::HealthConfig;
use crate::router::FunctionSet;
use crate::router::standby::UnloggedRelations;
use crate::tls::Tls;
use crate::tls::postgres::OpenError;

/// How long a loaded list is used before it is reloaded.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
/// After a failed load, how long to wait before trying again (at most the max age).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// `(schema, name)` pairs, sorted, without duplicates (overloads share a name).
pub type FunctionList = Arc<Vec<(String, String)>>;

/// Extension-owned functions are included on purpose: an extension's VOLATILE function may write as surely as a
/// user's (dblink_exec, pg_stat_statements_reset, …) and the catalog cannot tell which do; operators list the safe
/// ones in `routing.read_only_functions`. Procedures are included too: harmless, a SELECT cannot call them.
const VOLATILE_SQL: &str = "SELECT DISTINCT n.nspname::text, p.proname::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     ORDER BY 1, 2";

/// UNLOGGED tables and sequences (a standby refuses to read them: "cannot access temporary or unlogged relations
/// during recovery").
const UNLOGGED_SQL: &str = "SELECT DISTINCT n.nspname::text, c.relname::text \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'S') ORDER BY 1, 2";

/// `(schema, name)` of every UNLOGGED table and sequence of the connected database.
pub async fn unlogged_relations(client: &Client) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client.query(UNLOGGED_SQL, &[]).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// `(schema, name)` of every VOLATILE function of the connected database outside `pg_catalog` and
/// `information_schema` (the built-ins that write are the router's own list).
pub async fn volatile_user_functions(client: &Client) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client.query(VOLATILE_SQL, &[]).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// The per-database cache of [`volatile_user_functions`], loaded from the current leader. Cheap to clone (shared).
#[derive(Clone)]
pub struct FunctionCatalog {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where loads run.
    runtime: tokio::runtime::Handle,
    topology: SharedTopology,
    tls: Arc<Tls>,
    timeout: Duration,
    max_age: Duration,
    databases: Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Default)]
struct Entry {
    cached: Mutex<Cached>,
    /// Held by whoever is loading this database's list, so there is one load at a time.
    loading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Cached {
    functions: FunctionList,
    /// Loaded with `functions`, replaced with them.
    unlogged: FunctionList,
    /// None until the first load attempt ends.
    next_load: Option<Instant>,
}

impl FunctionCatalog {
    /// Connects as `user` to each database on the leader of the current topology when its list is needed; uses a
    /// loaded list for [`DEFAULT_MAX_AGE`].
    pub fn new(topology: SharedTopology, tls: Arc<Tls>, health: &HealthConfig) -> FunctionCatalog {
        Self::with_max_age(topology, tls, health, DEFAULT_MAX_AGE)
    }

    /// [`FunctionCatalog::new`] with another refresh age. Made inside a runtime with timers: loads run there.
    pub fn with_max_age(
        topology: SharedTopology,
        tls: Arc<Tls>,
        health: &HealthConfig,
        max_age: Duration,
    ) -> FunctionCatalog {
        FunctionCatalog {
            inner: Arc::new(Inner {
                runtime: tokio::runtime::Handle::current(),
                topology,
                tls,
                timeout: health.timeout,
                max_age,
                databases: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The volatile user functions of `database`. The first call for a database waits for its load (at most about
    /// `health.timeout`); later calls answer at once, with a list at most `max_age` old, or the last known one while
    /// a reload runs in the background or the leader cannot be reached. Empty if nothing was ever loaded.
    pub async fn get(&self, database: &str) -> FunctionList {
        self.lists(database).await.0
    }

    /// [`get`](Self::get), with the database's UNLOGGED relations (loaded together).
    pub async fn lists(&self, database: &str) -> (FunctionList, FunctionList) {
        let entry = self.inner.entry(database);
        let (functions, next_load) = {
            let cached = lock(&entry.cached);
            ((cached.functions.clone(), cached.unlogged.clone()), cached.next_load)
        };
        match next_load {
            Some(due) if Instant::now() < due => functions,
            Some(_) => {
                // Stale: serve it, and reload in the background unless a load runs already.
                if let Ok(guard) = entry.loading.clone().try_lock_owned() {
                    let (inner, database) = (self.inner.clone(), database.to_owned());
                    self.inner.runtime.spawn(async move {
                        inner.load(&database, &entry).await;
                        drop(guard);
                    });
                }
                functions
            }
            None => {
                // Never loaded: wait for the one load (bounded by the timeout, like the load itself).
                let (inner, database) = (self.inner.clone(), database.to_owned());
                let first_load = self.inner.runtime.spawn(async move {
                    if let Ok(_guard) = tokio::time::timeout(inner.timeout, entry.loading.lock()).await {
                        let first = lock(&entry.cached).next_load.is_none();
                        if first {
                            inner.load(&database, &entry).await;
                        }
                    }
                    let cached = lock(&entry.cached);
                    (cached.functions.clone(), cached.unlogged.clone())
                });
                // Ended only if the runtime is shutting down: nothing is known then.
                first_load.await.unwrap_or_default()
            }
        }
    }
}

impl FunctionCatalog {
    /// Makes every loaded list stale: the next use serves it once more and reloads it in the background.
    pub fn expire_all(&self) {
        let now = Instant::now();
        for entry in lock(&self.inner.databases).values() {
            let mut cached = lock(&entry.cached);
            if cached.next_load.is_some() {
                cached.next_load = Some(now);
            }
        }
    }
}

impl Inner {
    fn entry(&self, database: &str) -> Arc<Entry> {
        lock(&self.databases).entry(database.to_owned()).or_default().clone()
    }

    /// One load attempt, bounded by the timeout; records the list, or logs why not and keeps the last one.
    async fn load(&self, database: &str, entry: &Entry) {
        let result = tokio::time::timeout(self.timeout, self.fetch(database)).await;
        let now = Instant::now();
        let mut cached = lock(&entry.cached);
        let failure = match result {
            Ok(Ok((functions, unlogged))) => {
                tracing::debug!(database, count = functions.len(), "loaded the volatile user functions");
                cached.functions = Arc::new(functions);
                cached.unlogged = Arc::new(unlogged);
                cached.next_load = Some(now + self.max_age);
                return;
            }
            Ok(Err(error)) => error_chain(&error),
            Err(_) => format!("no answer within {:?} (health.timeout)", self.timeout),
        };
        let known = cached.functions.len();
        tracing::warn!(
            database,
            error = failure,
            known,
            "cannot load the volatile user functions from the leader; using the last known list"
        );
        cached.next_load = Some(now + RETRY_AFTER.min(self.max_age));
    }

    async fn fetch(&self, database: &str) -> Result<(Vec<(String, String)>, Vec<(String, String)>), OpenError> {
        let topology = self.topology.load_full();
        let leader = &topology.leader;
        let mut login = own_login(&topology.config, "pgsplit-catalog", statement_deadline(self.timeout));
        login.dbname(database);
        let tls = self.tls.servers();
        let conn = Conn::open(
            &login,
            &leader.host,
            leader.port,
            &tls,
            &topology.config,
            self.timeout,
            &leader.name,
        )
        .await?;
        let functions = volatile_user_functions(&conn.client).await?;
        Ok((functions, unlogged_relations(&conn.client).await?))
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Per database, the router's [`FunctionSet`]: built-in writers and `routing.write_functions`, plus the catalog's
/// VOLATILE user functions, less `routing.read_only_functions`. Built once per catalog list and shared by every
/// session on that database.
pub struct FunctionSets {
    catalog: FunctionCatalog,
    /// `routing.write_functions` and `routing.read_only_functions`; a reload replaces them.
    lists: Mutex<(Vec<String>, Vec<String>)>,
    built: Mutex<HashMap<String, (FunctionList, Arc<FunctionSet>)>>,
}

impl FunctionSets {
    pub fn new(catalog: FunctionCatalog, write_functions: Vec<String>, read_only_functions: Vec<String>) -> Self {
        FunctionSets {
            catalog,
            lists: Mutex::new((write_functions, read_only_functions)),
            built: Mutex::default(),
        }
    }

    /// After a reload or a new leader: the configured lists as now written, and every database's catalog list
    /// reloaded in the background (a reload is when new functions are expected to have appeared).
    pub fn reconfigure(&self, write_functions: &[String], read_only_functions: &[String]) {
        *lock(&self.lists) = (write_functions.to_vec(), read_only_functions.to_vec());
        lock(&self.built).clear();
        self.catalog.expire_all();
    }

    /// The set for `database`; waits (bounded by `health.timeout`) only the first time a database is seen.
    pub async fn for_database(&self, database: &str) -> Arc<FunctionSet> {
        let (list, unlogged) = self.catalog.lists(database).await;
        let (write_functions, read_only_functions) = lock(&self.lists).clone();
        let mut built = lock(&self.built);
        if let Some((known, set)) = built.get(database)
            && Arc::ptr_eq(known, &list)
        {
            return set.clone();
        }
        let set = FunctionSet::new(
            &write_functions,
            &read_only_functions,
            list.iter().map(|(schema, name)| (schema.as_str(), name.as_str())),
        );
        let unlogged = UnloggedRelations::new(unlogged.iter().map(|(s, n)| (s.as_str(), n.as_str())));
        let set = Arc::new(set.with_unlogged(unlogged));
        built.insert(database.to_owned(), (list, set.clone()));
        set
    }
}
