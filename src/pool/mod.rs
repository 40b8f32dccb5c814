//! Server connections to one instance: the cap (`max_connections`), the idle list, and a FIFO queue of clients
//! waiting for a connection, each with its own deadline (`server.checkout_timeout`). One sweeper task per pool,
//! alive while anyone waits, ends the waits that pass their deadline: a checkout that waits registers no timer of
//! its own (under load most checkouts wait, and a timer per checkout cost as much as routing it).
//!
//! Idle connections are kept per worker thread (`crate::runtime`): a connection's socket is registered with the
//! I/O driver of one worker, and a session borrows from its own worker's idle list first, so the sessions of a
//! worker and the connections they borrow are polled by the same thread. A session whose worker has none takes
//! an idle one from another worker before opening a new one; the connection then moves (its socket joins the
//! borrower's driver: two `epoll_ctl` calls), and stays with the worker that wanted it.
//!
//! A returned connection is handed straight to a waiter of the same user/database: the oldest one, unless the
//! oldest is on another worker and has waited less than [`PREFER_LOCAL_FOR`]. Then a waiter on the returning
//! worker near the front ([`PREFER_LOCAL_WITHIN`]) gets it, or, with none, it stays idle on its worker, whose next
//! checkout is likely to come soon; the sweeper hands it to the passed-over waiter once that one has waited
//! `PREFER_LOCAL_FOR`. So under steady load connections stay on their worker, and a worker short of connections
//! gets them within that time. A waiter of another user/database gets the slot instead (the connection is closed
//! to make room). Every connection carries its
//! [`Slot`]: dropping a connection anywhere gives its place back, so the count cannot leak. A retired pool lends
//! nothing: waiters and new checkouts fail at once and the session routes again. The pool never parses SQL and
//! never looks at a connection's traffic: the session decides whether a connection is clean enough to return (and
//! drops it otherwise).

mod idle;
pub mod prepared;
pub mod server;
pub mod settings;
mod slot;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

pub use server::{CancelTarget, ConnKey, ConnectError, ConnectOptions, LoginInfo, ServerConn};
pub use settings::Settings;
pub use slot::Slot;

use idle::Idle;

use crate::protocol::error::SqlError;
use crate::runtime::current_worker;
use crate::tls::Tls;

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
    connect: ConnectOptions,
    /// The instance left the topology: nothing is lent; connections coming back are closed, not kept.
    retired: bool,
    /// Places taken ([`Slot`]s alive): connections idle, lent out, or being opened.
    total: usize,
    /// Per worker, most recently returned last. Boxed, like every connection lent or kept: a lent connection
    /// moves pool → session → pool on every transaction, and a pointer moves cheaper than the connection.
    idle: Idle,
    waiters: VecDeque<Waiter>,
    /// Connections lent to a session on another worker than the one their socket was registered with, ever.
    moves: u64,
    /// A sweeper task is running (it ends when nobody waits).
    sweeping: bool,
    /// When the sweeper wakes next, while it runs.
    sweep_at: Option<Instant>,
    /// Wakes the sweeper early: a connection was held for its worker while a waiter elsewhere was passed over.
    sweeper: Arc<Notify>,
    /// [`PREFER_LOCAL_FOR`]; tests lengthen it to see a connection held.
    prefer_local_for: Duration,
    /// Checkouts that had to wait, ever (a counter for metrics).
    waits: u64,
    /// Per user and database: `is_superuser` and `session_authorization` differ between users.
    server_params: HashMap<ConnKey, ServerParams>,
    /// Per user and database, a reported parameter's value as a client gave it → as the server reports it
    /// (`utf8` → `UTF8`), learned from a server and bounded by [`MAX_SPELLINGS`].
    spellings: HashMap<(ConnKey, String, String), String>,
    /// Per user and database, the server's defaults a session routes by (`default_transaction_isolation`, …).
    defaults: HashMap<ConnKey, ServerParams>,
}

/// Spellings of reported values remembered per pool; past it they are forgotten and learned again.
const MAX_SPELLINGS: usize = 1024;

struct Waiter {
    key: ConnKey,
    /// The worker the waiting session runs on.
    worker: usize,
    /// Dropped unsent when the deadline passes: the waiter then knows it timed out.
    grant: oneshot::Sender<Grant>,
    queued: Instant,
    deadline: Instant,
}

/// How far behind the oldest waiter a returned connection looks for a waiter on its own worker.
const PREFER_LOCAL_WITHIN: usize = 64;
/// How long the oldest waiter may be passed over for waiters on the returning connection's worker.
const PREFER_LOCAL_FOR: Duration = Duration::from_millis(1);

/// What a waiter receives. A grant carries its place: dropped unreceived (the waiter gave up after it was sent),
/// the place goes back.
enum Grant {
    Conn(Box<ServerConn>),
    /// A place to open a connection of its own.
    Slot(Slot),
}

/// What a checkout does once the lock is released.
enum Next {
    Ready(Box<ServerConn>),
    Open {
        slot: Slot,
    },
    Retired,
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
    /// The instance left the topology: route again on the current one.
    #[error("instance {instance} left the topology")]
    Retired { instance: Arc<str> },
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
            CheckoutError::Retired { instance } => SqlError::server_unavailable(instance, "it left the topology"),
        }
    }
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    pub idle: usize,
    pub waiting: usize,
    /// Checkouts that had to wait for a connection, since the pool was made.
    pub waits: u64,
    /// Connections lent to a session on another worker thread than the one they were on, since the pool was made.
    pub moves: u64,
}

impl InstancePool {
    pub fn new(name: &str, host: &str, port: u16, max_connections: usize, connect: ConnectOptions) -> Self {
        InstancePool {
            name: name.into(),
            host: host.into(),
            port,
            state: Arc::new(Mutex::new(PoolState {
                max_connections,
                connect,
                retired: false,
                total: 0,
                idle: Idle::default(),
                waiters: VecDeque::new(),
                moves: 0,
                sweeping: false,
                sweep_at: None,
                sweeper: Arc::new(Notify::new()),
                prefer_local_for: PREFER_LOCAL_FOR,
                waits: 0,
                server_params: HashMap::new(),
                spellings: HashMap::new(),
                defaults: HashMap::new(),
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
            waits: state.waits,
            moves: state.moves,
        }
    }

    /// The parameters the instance reported to the first connection opened for `key` (None until then).
    pub fn server_params(&self, key: &ConnKey) -> Option<ServerParams> {
        self.lock().server_params.get(key).cloned()
    }

    /// How the server reports `name` when a client of `key` sets it to `given`, if a server has told it.
    pub fn spelling(&self, key: &ConnKey, name: &str, given: &str) -> Option<String> {
        let lookup = (key.clone(), name.to_ascii_lowercase(), given.to_owned());
        self.lock().spellings.get(&lookup).cloned()
    }

    /// Remembers how the server reported `name` for a client of `key` that set it to `given`.
    pub fn learn_spelling(&self, key: &ConnKey, name: &str, given: &str, reported: &str) {
        let mut state = self.lock();
        if state.spellings.len() >= MAX_SPELLINGS {
            state.spellings.clear();
        }
        let entry = (key.clone(), name.to_ascii_lowercase(), given.to_owned());
        state.spellings.insert(entry, reported.to_owned());
    }

    /// The defaults a session of `key` routes by, once learned ([`InstancePool::learn_defaults`]).
    pub fn defaults(&self, key: &ConnKey) -> Option<ServerParams> {
        self.lock().defaults.get(key).cloned()
    }

    /// Remembers the server's defaults for sessions of `key`.
    pub fn learn_defaults(&self, key: &ConnKey, defaults: ServerParams) {
        self.lock().defaults.insert(key.clone(), defaults);
    }

    /// Lends a connection for `login.key`, opening one (with TLS as `tls` says) if the cap allows, else waiting up
    /// to `timeout`.
    pub async fn checkout(
        &self,
        login: &LoginInfo,
        tls: &Tls,
        timeout: Duration,
    ) -> Result<Box<ServerConn>, CheckoutError> {
        let next = loop {
            match self.next_for(&login.key, timeout) {
                Ok(next) => break next,
                // An idle connection the server closed meanwhile: its place goes back as it drops, outside the
                // lock; then look again.
                Err(closed) => drop(closed),
            }
        };
        match next {
            Next::Ready(conn) => self.here(conn),
            Next::Open { slot } => Box::pin(self.open(login, tls, slot)).await,
            Next::Retired => Err(self.retired_error()),
            Next::Wait { receiver, started } => {
                // Grants are sent and expired waiters dropped under the lock: a waiter gets one or the other.
                match receiver.await.ok() {
                    Some(Grant::Conn(conn)) => self.here(conn),
                    Some(Grant::Slot(slot)) => Box::pin(self.open(login, tls, slot)).await,
                    None if self.lock().retired => Err(self.retired_error()),
                    None => Err(CheckoutError::Timeout {
                        instance: self.name.clone(),
                        pool_size: self.lock().max_connections,
                        waited: started.elapsed(),
                    }),
                }
            }
        }
    }

    /// What a checkout for `key` does, decided under the lock; Err: an idle connection the server closed while
    /// pooled (restart, idle timeout, terminate), for the caller to drop.
    fn next_for(&self, key: &ConnKey, timeout: Duration) -> Result<Next, Box<ServerConn>> {
        let worker = current_worker();
        let mut state = self.lock();
        if state.retired {
            return Ok(Next::Retired);
        }
        if let Some(conn) = state.idle.take(key, worker) {
            return if conn.is_idle_and_open() {
                Ok(Next::Ready(conn))
            } else {
                Err(conn)
            };
        }
        if state.total < state.max_connections {
            state.total += 1;
            return Ok(Next::Open {
                slot: Slot::counted(&self.state),
            });
        }
        if let Some(conn) = state.idle.take_other(key) {
            // That connection closes, and its place is the new one's.
            return Ok(Next::Open { slot: conn.into_slot() });
        }
        let (grant, receiver) = oneshot::channel();
        let started = Instant::now();
        state.waits += 1;
        state.waiters.push_back(Waiter {
            key: key.clone(),
            worker,
            grant,
            queued: started,
            deadline: started + timeout,
        });
        if !std::mem::replace(&mut state.sweeping, true) {
            tokio::spawn(sweep(self.state.clone()));
        }
        Ok(Next::Wait { receiver, started })
    }

    /// `conn`, its socket registered with the calling worker's driver: moved there if it was on another worker's.
    #[inline]
    fn here(&self, conn: Box<ServerConn>) -> Result<Box<ServerConn>, CheckoutError> {
        let worker = current_worker();
        if conn.worker() == worker {
            return Ok(conn);
        }
        self.move_here(conn, worker)
    }

    /// A socket that cannot move (the system refused the registration) is closed, its place given back.
    #[cold]
    fn move_here(&self, conn: Box<ServerConn>, worker: usize) -> Result<Box<ServerConn>, CheckoutError> {
        self.lock().moves += 1;
        conn.move_to(worker).map_err(|error: io::Error| CheckoutError::Connect {
            instance: self.name.clone(),
            source: error.into(),
        })
    }

    fn retired_error(&self) -> CheckoutError {
        CheckoutError::Retired {
            instance: self.name.clone(),
        }
    }

    /// Opens a connection in `slot`; the slot goes back if it fails. Callers box this future: a login's state is
    /// large, and unboxed it would sit in every session's task for its whole life.
    async fn open(&self, login: &LoginInfo, tls: &Tls, slot: Slot) -> Result<Box<ServerConn>, CheckoutError> {
        let connect = self.lock().connect;
        // The server side as loaded now: a reload's new certificates apply to connections opened after it.
        let tls = tls.servers();
        match ServerConn::connect((&self.host, self.port), login, connect, &tls, slot).await {
            Ok(conn) => {
                let mut state = self.lock();
                if !state.server_params.contains_key(&conn.key) {
                    state
                        .server_params
                        .insert(conn.key.clone(), Arc::new(conn.params.clone()));
                }
                Ok(conn)
            }
            Err(source) => Err(CheckoutError::Connect {
                instance: self.name.clone(),
                source,
            }),
        }
    }

    /// Takes back a clean, idle connection. A connection that is not clean is dropped instead, which closes it and
    /// gives its place back.
    pub fn release(&self, mut conn: Box<ServerConn>) {
        conn.returned();
        let mut state = self.lock();
        if state.retired || state.total > state.max_connections {
            // Retired, or over a cap a reload lowered: close it (outside the lock) rather than keep it.
            drop(state);
            return drop(conn);
        }
        if state.waiters.is_empty() {
            // The usual return, under load and idle alike: nobody waits, the connection goes idle.
            return state.idle.push(conn);
        }
        if let Some(unwanted) = state.offer(Grant::Conn(conn)) {
            state.keep(unwanted);
        }
    }

    /// Closes every idle connection: the monitor calls it when a check of the instance fails. Lent-out ones are
    /// dropped by their sessions as they fail or finish.
    pub fn close_idle(&self) {
        let closed = self.lock().idle.drain(usize::MAX);
        // Their places go back (to waiters first) as they drop, outside the lock.
        drop(closed);
    }

    /// Applies a reloaded cap and connect options: a higher cap lets waiters open connections now; a lower one
    /// closes idle connections over it now and busy ones as they come back.
    pub fn set_limits(&self, max_connections: usize, connect: ConnectOptions) {
        let closed: Vec<Box<ServerConn>> = {
            let mut state = self.lock();
            state.max_connections = max_connections;
            state.connect = connect;
            while state.total < state.max_connections && !state.waiters.is_empty() {
                state.total += 1;
                if let Some(untaken) = state.offer(Grant::Slot(Slot::counted(&self.state))) {
                    // Every waiter had given up.
                    state.keep(untaken);
                    break;
                }
            }
            let over = state.total.saturating_sub(state.max_connections);
            state.idle.drain(over)
        };
        drop(closed);
    }

    /// The instance left the topology: nothing more is lent (waiters fail at once and route again), idle
    /// connections close now, lent-out ones when they come back.
    pub fn retire(&self) {
        let (closed, waiters): (Vec<Box<ServerConn>>, VecDeque<Waiter>) = {
            let mut state = self.lock();
            state.retired = true;
            (state.idle.drain(usize::MAX), std::mem::take(&mut state.waiters))
        };
        // Dropping a waiter drops its grant sender: its checkout sees the pool retired.
        drop((closed, waiters));
    }

    /// Forgets the cached login parameters: the instance changed role, and with it `in_hot_standby`.
    pub fn forget_server_params(&self) {
        self.lock().server_params.clear();
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }
}

impl Drop for InstancePool {
    /// Idle connections hold their slots, and slots hold the pool's state: closing them ends that cycle.
    fn drop(&mut self) {
        self.close_idle();
    }
}

impl PoolState {
    /// Offers a returned connection, or a place given back, to the waiters, oldest first: a connection to one of
    /// its user/database, a place to any other (the connection is then closed to make room). Waiters that gave up
    /// are skipped. Returns what nobody took.
    fn offer(&mut self, mut grant: Grant) -> Option<Grant> {
        if self.retired || self.total > self.max_connections {
            // Nothing is handed on: the place comes off the count.
            return Some(grant);
        }
        if let Grant::Conn(conn) = &grant
            && self.may_pass_over_oldest(conn)
        {
            if let Some(i) = self.local_waiter(conn)
                && let Some(waiter) = self.waiters.remove(i)
            {
                match waiter.grant.send(grant) {
                    Ok(()) => return None,
                    Err(refused) => grant = refused,
                }
            }
            if let Grant::Conn(conn) = &grant
                && let Some(oldest) = self.waiters.front()
                && oldest.key == conn.key
            {
                // Kept on its own worker, whose next checkout is likely to come before long (a client's next
                // transaction); the sweeper hands it to the waiter elsewhere if it is still there when that waiter
                // has waited PREFER_LOCAL_FOR.
                let due = oldest.queued + self.prefer_local_for;
                if self.sweep_at.is_none_or(|at| at > due) {
                    self.sweep_at = Some(due);
                    self.sweeper.notify_one();
                }
                return Some(grant);
            }
        }
        while let Some(waiter) = self.waiters.pop_front() {
            let offered = match grant {
                Grant::Conn(conn) if conn.key != waiter.key => {
                    if waiter.grant.is_closed() {
                        grant = Grant::Conn(conn);
                        continue;
                    }
                    Grant::Slot(conn.into_slot())
                }
                other => other,
            };
            match waiter.grant.send(offered) {
                Ok(()) => return None,
                Err(refused) => grant = refused,
            }
        }
        Some(grant)
    }

    /// The oldest waiter is on another worker than `conn` and has waited less than [`PREFER_LOCAL_FOR`]: `conn` may
    /// go to a waiter on its own worker instead, or stay there.
    fn may_pass_over_oldest(&self, conn: &ServerConn) -> bool {
        self.waiters
            .front()
            .is_some_and(|oldest| oldest.worker != conn.worker() && oldest.queued.elapsed() < self.prefer_local_for)
    }

    /// Where in the queue the first waiter on `conn`'s worker for its user/database stands, near the front.
    fn local_waiter(&self, conn: &ServerConn) -> Option<usize> {
        self.waiters
            .iter()
            .take(PREFER_LOCAL_WITHIN)
            .position(|w| w.worker == conn.worker() && w.key == conn.key && !w.grant.is_closed())
    }

    /// Hands idle connections to the waiters that returns passed over ([`PoolState::offer`] keeps a connection on
    /// its worker for a while): a waiter whose own worker has one for it at once, any other once it has waited
    /// [`PREFER_LOCAL_FOR`]. Returns the idle connections found closed, for the caller to drop after unlocking.
    #[allow(clippy::vec_box)] // handed back whole, to be dropped
    fn serve_passed_over(&mut self, now: Instant) -> Vec<Box<ServerConn>> {
        let mut closed = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() && !self.idle.is_empty() {
            let waiter = &self.waiters[i];
            let aged = now.saturating_duration_since(waiter.queued) >= self.prefer_local_for;
            let found = match aged {
                true => self.idle.take(&waiter.key, waiter.worker),
                false => self.idle.take_own(&waiter.key, waiter.worker),
            };
            let Some(conn) = found else {
                i += 1;
                continue;
            };
            if !conn.is_idle_and_open() {
                closed.push(conn);
                continue;
            }
            if let Some(waiter) = self.waiters.remove(i)
                && let Err(refused) = waiter.grant.send(Grant::Conn(conn))
            {
                self.keep(refused);
            }
        }
        closed
    }

    /// A place was given back (its slot dropped): the oldest waiter gets it, or it comes off the count.
    fn give_back(&mut self, shared: &Arc<Mutex<PoolState>>) {
        if let Some(untaken) = self.offer(Grant::Slot(Slot::counted(shared))) {
            self.keep(untaken);
        }
    }

    /// Keeps what nobody took: a connection goes idle; a bare place comes off the count.
    fn keep(&mut self, grant: Grant) {
        match grant {
            Grant::Conn(conn) if !self.retired && self.total <= self.max_connections => self.idle.push(conn),
            Grant::Conn(conn) => {
                // Closed, but under the lock: its place must not be handed on from within.
                conn.into_slot().disarm();
                self.total -= 1;
            }
            Grant::Slot(slot) => {
                slot.disarm();
                self.total -= 1;
            }
        }
    }
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic while holding this lock cannot leave the state half-updated in a way that matters more than losing
    // the proxy; recover the guard rather than poisoning every later checkout.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ends the waits whose deadline has passed, and hands waiters the connections kept idle for another worker
/// ([`PoolState::serve_passed_over`]), sleeping until the next deadline or the next waiter due a kept connection,
/// for as long as anyone waits. A waiter queued with an earlier deadline than the one slept to (a reload shortened
/// `checkout_timeout`) is ended at the next wake-up instead.
async fn sweep(state: Arc<Mutex<PoolState>>) {
    let woken = lock(&state).sweeper.clone();
    loop {
        let (next, closed) = {
            let mut state = lock(&state);
            let now = Instant::now();
            // Dropping a waiter drops its grant sender: its checkout returns Timeout.
            state.waiters.retain(|waiter| waiter.deadline > now);
            let closed = state.serve_passed_over(now);
            let Some(deadline) = state.waiters.iter().map(|waiter| waiter.deadline).min() else {
                state.sweeping = false;
                state.sweep_at = None;
                return;
            };
            let hold = state.prefer_local_for;
            let due = state
                .waiters
                .front()
                .map(|oldest| oldest.queued + hold)
                .filter(|due| *due > now);
            let next = due.map_or(deadline, |due| due.min(deadline));
            state.sweep_at = Some(next);
            (next, closed)
        };
        // Their places go back (to waiters first) as they drop, outside the lock.
        drop(closed);
        tokio::select! {
            () = crate::runtime::sleep_until(next) => {}
            () = woken.notified() => {}
        }
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

    fn connect_options() -> ConnectOptions {
        ConnectOptions {
            timeout: Duration::from_secs(1),
            tcp: crate::config::TcpConfig {
                keepalive_idle: Duration::from_secs(60),
                keepalive_interval: Duration::from_secs(10),
                keepalive_count: 6,
                user_timeout: Duration::from_secs(60),
            },
            auth: crate::protocol::login::AuthMethods::default(),
        }
    }

    /// `[server] tls = "prefer"` (the default), nothing to load.
    fn tls() -> Arc<Tls> {
        let text = "[leader]\nhost = \"h\"\nport = 1\n[[users]]\nname = \"a\"\npassword = \"a\"\n";
        let config = crate::config::Config::parse(text, "t.toml").expect("valid config");
        Arc::new(Tls::load(&config).expect("nothing to load"))
    }

    /// A server that lets every login in without asking anything, then stays silent: enough for a pool to open
    /// connections to. Returns its port.
    async fn trusting_server() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("bound").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = [0u8; 8];
                    socket.read_exact(&mut head).await?;
                    if head[4..] == [4, 210, 22, 47] {
                        // SSLRequest: no.
                        socket.write_all(b"N").await?;
                        socket.read_exact(&mut head[..4]).await?;
                        socket.read_exact(&mut head[4..]).await?;
                    }
                    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                    let mut rest = vec![0u8; length.saturating_sub(8)];
                    socket.read_exact(&mut rest).await?;
                    let mut greeting = Vec::new();
                    greeting.extend_from_slice(b"R\0\0\0\x08\0\0\0\0");
                    greeting.extend_from_slice(b"K\0\0\0\x0c\0\0\0\x07\0\0\0\x09");
                    greeting.extend_from_slice(b"Z\0\0\0\x05I");
                    socket.write_all(&greeting).await?;
                    // Silent until pgsplit closes it.
                    while socket.read(&mut head).await? > 0 {}
                    std::io::Result::Ok(())
                });
            }
        });
        port
    }

    /// A connection returned on one worker while a session on another waits for it (and has waited less than
    /// the hold) stays idle on its worker; the sweeper then hands it over, and it moves to the waiter's worker.
    #[tokio::test]
    async fn a_connection_kept_on_its_worker_reaches_the_waiter_elsewhere_when_the_hold_ends() {
        const HOLD: Duration = Duration::from_millis(500);
        let port = trusting_server().await;
        let workers = crate::runtime::Workers::start(2).expect("two workers");
        let mut options = connect_options();
        options.auth.none = true;
        let pool = Arc::new(InstancePool::new("leader", "127.0.0.1", port, 1, options));
        pool.lock().prefer_local_for = HOLD;
        let checkout = |worker: usize| {
            let pool = pool.clone();
            workers.worker(worker).spawn(async move {
                let started = Instant::now();
                let conn = pool.checkout(&login(), &tls(), Duration::from_secs(10)).await;
                (conn, started.elapsed())
            })
        };
        let (first, _) = checkout(0).await.expect("worker 0's checkout");
        let first = first.expect("the only connection");
        assert_eq!(first.worker(), 0);
        let waiting = checkout(1);
        let give_up = Instant::now() + Duration::from_secs(5);
        while pool.stats().waiting == 0 {
            assert!(Instant::now() < give_up, "worker 1's checkout never queued");
            tokio::task::yield_now().await;
        }
        let returned = {
            let pool = pool.clone();
            workers.worker(0).spawn(async move { pool.release(first) })
        };
        returned.await.expect("released on worker 0");
        let held = pool.stats();
        assert_eq!(
            (held.idle, held.waiting),
            (1, 1),
            "kept idle on worker 0 while the waiter is young"
        );
        let (second, waited) = waiting.await.expect("worker 1's checkout");
        let second = second.expect("handed over by the sweeper, not timed out");
        assert_eq!(second.worker(), 1, "moved to the waiter's worker");
        assert!(waited >= HOLD, "handed over after {waited:?}, before the hold ended");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(pool.stats().moves, 1);
        drop(second);
    }

    /// A pool that can never lend a connection (cap 0), so every checkout waits.
    fn full_pool() -> InstancePool {
        InstancePool::new("leader", "127.0.0.1", 1, 0, connect_options())
    }

    #[tokio::test]
    async fn waits_end_at_their_own_deadlines_and_the_sweeper_stops_when_nobody_waits() {
        let pool = Arc::new(full_pool());
        let (login, tls) = (login(), tls());
        let started = Instant::now();
        let (short, long) = tokio::join!(
            pool.checkout(&login, &tls, Duration::from_millis(40)),
            pool.checkout(&login, &tls, Duration::from_millis(120)),
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
            async move { pool.checkout(&login(), &tls(), Duration::from_secs(5)).await }
        });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        // A raised cap grants the waiter a slot: it tries to connect (port 1 refuses) instead of waiting on.
        pool.set_limits(1, connect_options());
        match waiting.await.expect("checkout task") {
            Err(CheckoutError::Connect { .. }) => {}
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("nothing listens on port 1"),
        }
        assert_eq!(pool.stats().total, 0, "the failed slot is given back");
    }

    #[tokio::test]
    async fn a_retired_pool_fails_its_waiters_at_once_and_lends_nothing() {
        let pool = Arc::new(full_pool());
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout(&login(), &tls(), Duration::from_secs(30)).await }
        });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        pool.retire();
        let retired =
            |result: Result<Box<ServerConn>, CheckoutError>| matches!(result, Err(CheckoutError::Retired { .. }));
        assert!(
            retired(waiting.await.expect("checkout task")),
            "the waiter is told at once"
        );
        assert!(retired(pool.checkout(&login(), &tls(), Duration::from_secs(30)).await));
        assert_eq!(
            pool.stats(),
            PoolStats {
                total: 0,
                idle: 0,
                waiting: 0,
                waits: 1,
                moves: 0,
            }
        );
    }
}
