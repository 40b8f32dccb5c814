//! Server connections to one instance: the cap (`max_connections`), the idle list, and a FIFO queue of clients
//! waiting for a connection, each with its own deadline (`server.checkout_timeout`). One sweeper task per pool,
//! alive while anyone waits, ends the waits that pass their deadline: a checkout that waits registers no timer of
//! its own (under load most checkouts wait, and a timer per checkout cost as much as routing it).
//!
//! A returned connection is handed straight to the oldest waiter of the same user/database; a waiter of another
//! user/database gets the slot instead (the connection is closed to make room). The pool never parses SQL and
//! never looks at a connection's traffic: the session decides whether a connection is clean enough to return.

pub mod prepared;
pub mod server;
pub mod settings;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use server::{CancelTarget, ConnKey, ConnectError, LoginInfo, ServerConn};
pub use settings::Settings;

use crate::protocol::error::SqlError;

/// Cached, so a client's login can be answered without a server round trip: the ParameterStatus set the
/// instance reports (server_version, server_encoding, …).
pub type ServerParams = Arc<Vec<(String, String)>>;

pub struct InstancePool {
    name: Arc<str>,
    host: Arc<str>,
    port: u16,
    /// Shared with the sweeper task.
    state: Arc<Mutex<PoolState>>,
}

struct PoolState {
    /// The cap; a reload may change it.
    max_connections: usize,
    connect_timeout: Duration,
    /// The instance left the topology: connections coming back are closed, not kept.
    retired: bool,
    /// Connections open or being opened (idle + lent out + connecting).
    total: usize,
    /// Most recently returned last. Boxed, like every connection lent or kept: a lent connection moves pool →
    /// session → pool on every transaction, and a pointer moves cheaper than the connection.
    #[allow(clippy::vec_box)] // the boxes are handed out whole, not kept here
    idle: Vec<Box<ServerConn>>,
    waiters: VecDeque<Waiter>,
    /// A sweeper task is running (it ends when nobody waits).
    sweeping: bool,
    /// Per user and database: `is_superuser` and `session_authorization` differ between users.
    server_params: HashMap<ConnKey, ServerParams>,
}

struct Waiter {
    key: ConnKey,
    /// Dropped unsent when the deadline passes: the waiter then knows it timed out.
    grant: oneshot::Sender<Grant>,
    deadline: Instant,
}

/// What a waiter receives.
enum Grant {
    Conn(Box<ServerConn>),
    /// Permission to open a connection of its own; `total` already counts it.
    Slot,
}

/// What a checkout does once the lock is released.
enum Next {
    Ready(Box<ServerConn>),
    Open {
        evicted: Option<Box<ServerConn>>,
    },
    /// Queued at `started` (taken only here: the other ways need no clock).
    Wait {
        receiver: oneshot::Receiver<Grant>,
        started: Instant,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("timed out")]
    Timeout {
        instance: Arc<str>,
        pool_size: usize,
        waited: Duration,
    },
    #[error("cannot connect to instance {instance}: {source}")]
    Connect { instance: Arc<str>, source: ConnectError },
}

impl CheckoutError {
    /// What the client is told (SPEC §4): ERROR 53300 for a full pool, ERROR 57P03 (or the server's own refusal)
    /// when the instance cannot be reached.
    pub fn to_sql_error(&self) -> SqlError {
        match self {
            CheckoutError::Timeout {
                instance,
                pool_size,
                waited,
            } => SqlError::checkout_timeout(instance, *pool_size, waited.as_millis()),
            CheckoutError::Connect { instance, source } => source.to_sql_error(instance),
        }
    }
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl InstancePool {
    pub fn new(name: &str, host: &str, port: u16, max_connections: usize, connect_timeout: Duration) -> Self {
        InstancePool {
            name: name.into(),
            host: host.into(),
            port,
            state: Arc::new(Mutex::new(PoolState {
                max_connections,
                connect_timeout,
                retired: false,
                total: 0,
                idle: Vec::new(),
                waiters: VecDeque::new(),
                sweeping: false,
                server_params: HashMap::new(),
            })),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            total: state.total,
            idle: state.idle.len(),
            waiting: state.waiters.len(),
        }
    }

    /// The parameters the instance reported to the first connection opened for `key` (None until then).
    pub fn server_params(&self, key: &ConnKey) -> Option<ServerParams> {
        self.lock().server_params.get(key).cloned()
    }

    /// Lends a connection for `login.key`, opening one if the cap allows, else waiting up to `timeout`.
    pub async fn checkout(&self, login: &LoginInfo, timeout: Duration) -> Result<Box<ServerConn>, CheckoutError> {
        let next = loop {
            let mut state = self.lock();
            if let Some(i) = state.idle.iter().rposition(|c| c.key == login.key) {
                let conn = state.idle.swap_remove(i);
                if conn.is_idle_and_open() {
                    break Next::Ready(conn);
                }
                // Closed by the server (restart, idle timeout, terminate) while pooled: free its slot, try again.
                state.total -= 1;
                drop(state);
                drop(conn);
                continue;
            }
            break if state.total < state.max_connections {
                state.total += 1;
                Next::Open { evicted: None }
            } else if let Some(i) = state.idle.iter().position(|c| c.key != login.key) {
                Next::Open {
                    evicted: Some(state.idle.remove(i)),
                }
            } else {
                let (grant, receiver) = oneshot::channel();
                let started = Instant::now();
                state.waiters.push_back(Waiter {
                    key: login.key.clone(),
                    grant,
                    deadline: started + timeout,
                });
                if !std::mem::replace(&mut state.sweeping, true) {
                    tokio::spawn(sweep(self.state.clone()));
                }
                Next::Wait { receiver, started }
            };
        };
        match next {
            Next::Ready(conn) => Ok(conn),
            Next::Open { evicted } => {
                drop(evicted);
                Box::pin(self.open(login)).await
            }
            Next::Wait { receiver, started } => {
                // Grants are sent and expired waiters dropped under the lock: a waiter gets one or the other.
                match receiver.await.ok() {
                    Some(Grant::Conn(conn)) => Ok(conn),
                    Some(Grant::Slot) => Box::pin(self.open(login)).await,
                    None => Err(CheckoutError::Timeout {
                        instance: self.name.clone(),
                        pool_size: self.lock().max_connections,
                        waited: started.elapsed(),
                    }),
                }
            }
        }
    }

    /// Opens a connection for a slot already counted in `total`; gives the slot back on failure. Callers box this
    /// future: a login's state is large, and unboxed it would sit in every session's task for its whole life.
    async fn open(&self, login: &LoginInfo) -> Result<Box<ServerConn>, CheckoutError> {
        let connect_timeout = self.lock().connect_timeout;
        match ServerConn::connect(&self.host, self.port, login, connect_timeout).await {
            Ok(conn) => {
                let mut state = self.lock();
                if !state.server_params.contains_key(&conn.key) {
                    state
                        .server_params
                        .insert(conn.key.clone(), Arc::new(conn.params.clone()));
                }
                Ok(conn)
            }
            Err(source) => {
                self.forget_one();
                Err(CheckoutError::Connect {
                    instance: self.name.clone(),
                    source,
                })
            }
        }
    }

    /// Takes back a clean, idle connection.
    pub fn release(&self, mut conn: Box<ServerConn>) {
        conn.returned();
        let mut state = self.lock();
        if state.retired || state.total > state.max_connections {
            // Retired, or over a cap a reload lowered: close it rather than keep it.
            drop(state);
            return self.discard(conn);
        }
        let mut conn = Some(conn);
        while let Some(waiter) = state.waiters.pop_front() {
            let grant = if waiter.key == conn.as_ref().expect("present until handed off").key {
                Grant::Conn(conn.take().expect("present until handed off"))
            } else {
                Grant::Slot
            };
            match waiter.grant.send(grant) {
                Ok(()) if conn.is_none() => return,
                // Slot granted: this connection is closed to make room for the waiter's own.
                Ok(()) => return drop(conn),
                Err(Grant::Conn(back)) => conn = Some(back),
                Err(Grant::Slot) => {}
            }
        }
        state.idle.push(conn.expect("present until handed off"));
    }

    /// Closes every idle connection: the monitor calls it when a check of the instance fails. Lent-out ones are
    /// discarded by their sessions as they fail or finish.
    pub fn close_idle(&self) {
        let closed: Vec<Box<ServerConn>> = {
            let mut state = self.lock();
            let closed: Vec<Box<ServerConn>> = state.idle.drain(..).collect();
            state.total -= closed.len();
            closed
        };
        drop(closed);
    }

    /// Applies a reloaded cap and connect timeout: a higher cap lets waiters open connections now; a lower one
    /// closes idle connections over it now and busy ones as they come back.
    pub fn set_limits(&self, max_connections: usize, connect_timeout: Duration) {
        let closed: Vec<Box<ServerConn>> = {
            let mut state = self.lock();
            state.max_connections = max_connections;
            state.connect_timeout = connect_timeout;
            while state.total < state.max_connections {
                let Some(waiter) = state.waiters.pop_front() else { break };
                if waiter.grant.send(Grant::Slot).is_ok() {
                    state.total += 1;
                }
            }
            let over = state.total.saturating_sub(state.max_connections).min(state.idle.len());
            let closed: Vec<Box<ServerConn>> = state.idle.drain(..over).collect();
            state.total -= closed.len();
            closed
        };
        drop(closed);
    }

    /// The instance left the topology: idle connections close now, lent-out ones when they come back.
    pub fn retire(&self) {
        self.lock().retired = true;
        self.close_idle();
    }

    /// Forgets the cached login parameters: the instance changed role, and with it `in_hot_standby`.
    pub fn forget_server_params(&self) {
        self.lock().server_params.clear();
    }

    /// A lent-out connection is gone (broken, or not clean enough to reuse): free its slot.
    pub fn discard(&self, conn: Box<ServerConn>) {
        drop(conn);
        self.forget_one();
    }

    fn forget_one(&self) {
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.grant.send(Grant::Slot).is_ok() {
                return;
            }
        }
        state.total -= 1;
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic while holding this lock cannot leave the state half-updated in a way that matters more than losing
    // the proxy; recover the guard rather than poisoning every later checkout.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ends the waits whose deadline has passed, sleeping until the next one, for as long as anyone waits. A waiter
/// queued with an earlier deadline than the one slept to (a reload shortened `checkout_timeout`) is ended at the
/// next wake-up instead.
async fn sweep(state: Arc<Mutex<PoolState>>) {
    loop {
        let next = {
            let mut state = lock(&state);
            let now = Instant::now();
            // Dropping a waiter drops its grant sender: its checkout returns Timeout.
            state.waiters.retain(|waiter| waiter.deadline > now);
            match state.waiters.iter().map(|waiter| waiter.deadline).min() {
                Some(deadline) => deadline,
                None => {
                    state.sweeping = false;
                    return;
                }
            }
        };
        crate::runtime::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> LoginInfo {
        LoginInfo {
            key: ConnKey {
                user: "app".into(),
                database: "app".into(),
            },
            password: "app".into(),
        }
    }

    /// A pool that can never lend a connection (cap 0), so every checkout waits.
    fn full_pool() -> InstancePool {
        InstancePool::new("leader", "127.0.0.1", 1, 0, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn waits_end_at_their_own_deadlines_and_the_sweeper_stops_when_nobody_waits() {
        let pool = Arc::new(full_pool());
        let login = login();
        let started = Instant::now();
        let (short, long) = tokio::join!(
            pool.checkout(&login, Duration::from_millis(40)),
            pool.checkout(&login, Duration::from_millis(120)),
        );
        let waited = |result: Result<Box<ServerConn>, CheckoutError>| match result {
            Err(CheckoutError::Timeout { waited, pool_size, .. }) => {
                assert_eq!(pool_size, 0);
                waited
            }
            Err(other) => panic!("expected a timeout, got {other}"),
            Ok(_) => panic!("expected a timeout, got a connection"),
        };
        let (short, long) = (waited(short), waited(long));
        assert!(
            short >= Duration::from_millis(40) && short < Duration::from_millis(120),
            "{short:?}"
        );
        assert!(long >= Duration::from_millis(120), "{long:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let state = pool.lock();
        assert!(state.waiters.is_empty());
        assert!(!state.sweeping, "the sweeper ends with the last wait");
    }

    #[tokio::test]
    async fn a_waiter_granted_before_its_deadline_is_not_timed_out() {
        let pool = Arc::new(full_pool());
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout(&login(), Duration::from_secs(5)).await }
        });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        // A raised cap grants the waiter a slot: it tries to connect (port 1 refuses) instead of waiting on.
        pool.set_limits(1, Duration::from_secs(1));
        match waiting.await.expect("checkout task") {
            Err(CheckoutError::Connect { .. }) => {}
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("nothing listens on port 1"),
        }
        assert_eq!(pool.stats().total, 0, "the failed slot is given back");
    }
}
