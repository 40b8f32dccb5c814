//! The running proxy: listeners, the accept loop, the tasks that keep the shared state (`context`) in step
//! with the topology, and graceful shutdown.
//!
//! Sessions run on the proxy's own worker threads (`runtime`); the accept loops run on the first worker and place
//! each new session on the least busy one. The tasks that watch and change the topology, and the admin API, run on
//! the runtime that started the proxy.
//!
//! After every topology swap the proxy opens the endpoints of new follower pools, closes those of removed ones
//! (their connected clients stay), and takes the users and function lists of the new config. Reload requests come
//! from SIGHUP, the config file changing, and the admin API; promotions seen by the monitor are adopted.
//!
//! Shutdown stops accepting at once; idle clients are told 57P01 and closed; a client in a transaction is closed
//! once it finishes, bounded by the grace period the caller gives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigErrors};
use crate::context::{AdminContext, ClientGauges, Endpoint, SessionContext};
use crate::pool::prepared::StatementTable;
use crate::protocol::auth::Users;
use crate::router::KnownWrites;
use crate::runtime::{Placement, Workers, current_worker};
use crate::session;
use crate::session::admission::PendingLogins;
use crate::session::cancel::{CancelRegistry, SessionTask};
use crate::tls::{Tls, TlsFileError};
use crate::topology::catalog::{FunctionCatalog, FunctionSets};
use crate::topology::control::Control;
use crate::topology::monitor::{Monitor, MonitorHandle};
use crate::topology::{SharedTopology, Topology};

/// The accept loops running now, the main endpoint's and each follower pool's, with their bound addresses.
#[derive(Default)]
struct Listeners {
    main: Option<(SocketAddr, JoinHandle<()>)>,
    /// Pool name → (configured address, bound address, accept loop).
    pools: HashMap<Arc<str>, (SocketAddr, SocketAddr, JoinHandle<()>)>,
}

pub struct Proxy {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin: Arc<AdminContext>,
    sessions_ctx: Arc<SessionContext>,
    listeners: Arc<Mutex<Listeners>>,
    shutdown: watch::Sender<bool>,
    /// Monitor, promotion follower, swap follower, Patroni follower, reload triggers, admin API.
    tasks: Vec<JoinHandle<()>>,
    monitor: MonitorHandle,
    /// Every session holds a clone of the sender; all dropped = all sessions over.
    sessions_done: mpsc::Receiver<()>,
    session_token: mpsc::Sender<()>,
    /// Declared last, so dropped last: the session workers, ended once everything above is.
    sessions: Workers,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("cannot watch the config file: {0}")]
    Watch(#[from] crate::topology::watch::WatchError),
    #[error("cannot start the session threads: {0}")]
    Runtime(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsFileError),
}

impl Proxy {
    /// Starts from a config value; reloads are not possible (no file). SCRAM verifiers are derived here, once.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        Self::start_with(config, None).await
    }

    /// Starts from a config file, and reloads it on SIGHUP, when it changes, and on `POST /reload`.
    pub async fn start_from_file(path: &Path) -> Result<Proxy, StartError> {
        let config = Config::load(path).map_err(StartError::Config)?;
        let mut proxy = Self::start_with(config, Some(path.to_path_buf())).await?;
        let mut triggers = crate::topology::watch::reload_triggers(path)?;
        let control = proxy.admin.control.clone();
        proxy.tasks.push(tokio::spawn(async move {
            while let Some(cause) = triggers.next().await {
                match control.reload().await {
                    Ok(outcome) => tracing::info!(?cause, changed = outcome.changed, "config reloaded"),
                    Err(error) => tracing::error!(?cause, %error, "config reload rejected"),
                }
            }
        }));
        Ok(proxy)
    }

    async fn start_with(config: Config, path: Option<std::path::PathBuf>) -> Result<Proxy, StartError> {
        // Certificates first: one that cannot be loaded stops start-up, naming the file and why.
        let tls = Arc::new(Tls::load(&config)?);
        if config.control.is_none() {
            tracing::warn!(
                user = %config.users[0].name,
                "no [control] table: pgsplit watches and steers the instances as the first [[users]] entry, a role \
                 clients log in as; give pgsplit a role of its own (docs/topology.md)"
            );
        }
        if let Some(path) = &path {
            warn_if_readable_by_others(path, &config);
        }
        let sessions = Workers::start(config.proxy.workers.threads).map_err(StartError::Runtime)?;
        let placement = sessions.placement().clone();
        let main = bind(config.proxy.listen, placement.first())?;
        let local_addr = bound_addr(&main, config.proxy.listen)?;
        let admin = bind(config.proxy.admin_listen, &Handle::current())?;
        let admin_addr = bound_addr(&admin, config.proxy.admin_listen)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let topology: SharedTopology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
        // The monitor, the catalog and the control plane log in as the control role (`[control]`, else the first
        // user), with the config in use when they connect.
        let monitor = Monitor::spawn(topology.clone(), tls.clone());
        let catalog = FunctionCatalog::new(topology.clone(), tls.clone(), &config.health);
        let control = Arc::new(Control::new(topology.clone(), tls.clone(), path));
        // Before anything accepts: writes are held until Patroni's leader is confirmed.
        let patroni = control
            .patroni()
            .cloned()
            .map(|shared| crate::topology::patroni::follow::spawn(control.clone(), shared));
        let gauges = Arc::new(ClientGauges::default());
        let admin_ctx = Arc::new(AdminContext {
            topology: topology.clone(),
            control: control.clone(),
            gauges: gauges.clone(),
            placement: placement.clone(),
            shutdown: shutdown_rx.clone(),
        });
        let ctx = Arc::new(SessionContext {
            credentials: ArcSwap::from_pointee(Users::derive(&config.users, None)),
            tls,
            topology,
            gate: control.gate.clone(),
            functions: FunctionSets::new(
                catalog,
                config.routing.write_functions.clone(),
                config.routing.read_only_functions.clone(),
            ),
            known_writes: KnownWrites::default(),
            statements: StatementTable::default(),
            cancels: CancelRegistry::default(),
            logins: Arc::new(PendingLogins::default()),
            gauges,
            shutdown: shutdown_rx,
        });
        let (session_token, sessions_done) = mpsc::channel(1);
        tracing::info!(addr = %local_addr, "pgsplit listening");
        let listeners = Arc::new(Mutex::new(Listeners {
            main: Some((
                local_addr,
                placement.first().spawn(accept_loop(
                    main,
                    Endpoint::Main,
                    ctx.clone(),
                    session_token.clone(),
                    placement.clone(),
                )),
            )),
            pools: HashMap::new(),
        }));
        open_pool_endpoints(&listeners, &config, &ctx, &session_token, &placement)?;
        tracing::info!(addr = %admin_addr, "admin API listening");
        let mut tasks = vec![tokio::spawn(crate::admin::serve(admin, admin_ctx.clone()))];
        tasks.extend(patroni);
        let mut rounds = monitor.rounds();
        let follower = control.clone();
        tasks.push(tokio::spawn(async move {
            while rounds.changed().await.is_ok() {
                follower.follow_promotion().await;
            }
        }));
        tasks.push(tokio::spawn(follow_swaps(
            listeners.clone(),
            ctx.clone(),
            control,
            session_token.clone(),
            placement,
        )));
        Ok(Proxy {
            local_addr,
            admin_addr,
            admin: admin_ctx,
            sessions_ctx: ctx,
            listeners,
            shutdown,
            tasks,
            monitor,
            sessions_done,
            session_token,
            sessions,
        })
    }

    /// The address a follower pool's own endpoint listens on.
    pub fn pool_addr(&self, pool: &str) -> Option<SocketAddr> {
        lock(&self.listeners).pools.get(pool).map(|(_, bound, _)| *bound)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Ends the session of the client pgsplit gave `pid` (its BackendKeyData) at once; false if there is none.
    pub fn terminate_client(&self, pid: u32) -> bool {
        self.sessions_ctx.cancels.terminate(pid)
    }

    /// Sessions running on each worker thread now.
    pub fn worker_sessions(&self) -> Vec<usize> {
        self.sessions.placement().sessions()
    }

    /// Connections accepted that have not logged in yet.
    pub fn pending_logins(&self) -> usize {
        self.sessions_ctx.logins.pending()
    }

    /// What the admin API sees: the topology, the control plane and the client gauges.
    pub fn context(&self) -> &Arc<AdminContext> {
        &self.admin
    }

    /// Stops accepting, lets sessions finish their transactions, and waits up to `grace` for all of them.
    /// Returns whether every session ended in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let accepts: Vec<JoinHandle<()>> = {
            let mut listeners = lock(&self.listeners);
            let main = listeners.main.take().map(|(_, task)| task);
            main.into_iter()
                .chain(listeners.pools.drain().map(|(_, (_, _, task))| task))
                .collect()
        };
        for accept in accepts {
            accept.abort();
            let _ = accept.await;
        }
        drop(self.session_token);
        let drained = tokio::time::timeout(grace, self.sessions_done.recv()).await.is_ok();
        self.monitor.stop();
        // Ends the sessions still running after the grace period.
        drop(self.sessions);
        drained
    }
}

/// After every swap: pool endpoints opened and closed to match, users and function lists taken from the config.
async fn follow_swaps(
    listeners: Arc<Mutex<Listeners>>,
    ctx: Arc<SessionContext>,
    control: Arc<Control>,
    token: mpsc::Sender<()>,
    placement: Arc<Placement>,
) {
    let mut swaps = control.swaps();
    while swaps.changed().await.is_ok() {
        let config = ctx.config();
        let next = Users::derive(&config.users, Some(&ctx.credentials.load()));
        ctx.credentials.store(Arc::new(next));
        ctx.functions
            .reconfigure(&config.routing.write_functions, &config.routing.read_only_functions);
        if let Err(error) = open_pool_endpoints(&listeners, &config, &ctx, &token, &placement) {
            tracing::error!(%error, "a follower pool's endpoint cannot open; the pool is served on the main endpoint only");
        }
    }
}

/// Opens the endpoint of every pool with `listen` that has none (or another address), and closes those of pools
/// gone or without `listen`. Clients already connected through a closed endpoint stay connected.
fn open_pool_endpoints(
    listeners: &Mutex<Listeners>,
    config: &Config,
    ctx: &Arc<SessionContext>,
    token: &mpsc::Sender<()>,
    placement: &Arc<Placement>,
) -> Result<(), StartError> {
    let wanted: HashMap<Arc<str>, SocketAddr> = config
        .follower_pools
        .iter()
        .filter_map(|p| Some((Arc::from(p.name.as_str()), p.listen?)))
        .collect();
    {
        let mut listeners = lock(listeners);
        listeners.pools.retain(|name, (configured, bound, task)| {
            let keep = wanted.get(name) == Some(configured);
            if !keep {
                tracing::info!(pool = %name, addr = %bound, "follower pool endpoint closed");
                task.abort();
            }
            keep
        });
    }
    for (name, addr) in wanted {
        if lock(listeners).pools.contains_key(&name) {
            continue;
        }
        let listener = bind(addr, placement.first())?;
        let bound = bound_addr(&listener, addr)?;
        tracing::info!(pool = %name, addr = %bound, "follower pool endpoint listening");
        let task = placement.first().spawn(accept_loop(
            listener,
            Endpoint::Pool(name.clone()),
            ctx.clone(),
            token.clone(),
            placement.clone(),
        ));
        lock(listeners).pools.insert(name, (addr, bound, task));
    }
    Ok(())
}

/// proxy.toml holds passwords (unless they all come from the environment): warn when others may read it.
fn warn_if_readable_by_others(path: &Path, config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let written_password = text.lines().any(|line| {
        line.trim_start()
            .strip_prefix("password")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    let holds_secrets = written_password || config.proxy.admin_token.is_some();
    if holds_secrets && mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the config file holds passwords or the admin token and other users may read it; chmod 600 it, or use \
             password_env"
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listener on `addr`, registered with `runtime`'s I/O driver: the one whose tasks will accept on it.
fn bind(addr: SocketAddr, runtime: &Handle) -> Result<TcpListener, StartError> {
    let listen = |source| StartError::Listen { addr, source };
    // Bound like tokio's own `bind` does (SO_REUSEADDR, the default backlog), but on a runtime chosen here.
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let _on = runtime.enter();
    let socket = socket.map_err(listen)?;
    socket.set_reuseaddr(true).map_err(listen)?;
    socket.bind(addr).map_err(listen)?;
    socket.listen(1024).map_err(listen)
}

fn bound_addr(listener: &TcpListener, configured: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Listen {
        addr: configured,
        source,
    })
}

/// Accepts on the first worker and places each session on the worker running the fewest. A connection placed
/// elsewhere moves its socket to that worker's I/O driver, so the worker polls it itself.
async fn accept_loop(
    listener: TcpListener,
    endpoint: Endpoint,
    ctx: Arc<SessionContext>,
    session_token: mpsc::Sender<()>,
    placement: Arc<Placement>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // Admitted before its task exists: the newest connection pushes the oldest pending login out.
                let ticket = ctx.logins.admit(ctx.config().proxy.max_pending_logins);
                let (seat, worker) = placement.place();
                let arrival = if seat.worker() == current_worker() {
                    Arrival::Here(stream)
                } else {
                    match stream.into_std() {
                        Ok(stream) => Arrival::Moving(stream),
                        Err(error) => {
                            tracing::warn!(%error, "an accepted connection could not be handed to its worker");
                            continue;
                        }
                    }
                };
                let ctx = ctx.clone();
                let token = session_token.clone();
                let endpoint = endpoint.clone();
                let task = SessionTask::default();
                let handle = task.clone();
                let spawned = worker.spawn(async move {
                    if let Some(stream) = arrival.settle() {
                        session::serve(stream, ctx, endpoint, ticket, handle).await;
                    }
                    drop((seat, token));
                });
                let _ = task.set(spawned.abort_handle());
            }
            Err(error) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                crate::runtime::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection on its way to the worker that will serve it.
enum Arrival {
    /// Accepted on that worker: registered with its driver already.
    Here(tokio::net::TcpStream),
    /// Taken off the accepting worker's driver, to be registered with the serving worker's.
    Moving(std::net::TcpStream),
}

impl Arrival {
    /// The connection, registered with the driver of the worker calling this.
    fn settle(self) -> Option<tokio::net::TcpStream> {
        match self {
            Arrival::Here(stream) => Some(stream),
            Arrival::Moving(stream) => tokio::net::TcpStream::from_std(stream)
                .inspect_err(|error| tracing::warn!(%error, "an accepted connection could not join its worker"))
                .ok(),
        }
    }
}
