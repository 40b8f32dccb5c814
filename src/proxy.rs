//! The running proxy: listeners, the accept loop, the state every session shares, and graceful shutdown.
//!
//! Shutdown stops accepting at once; idle clients are told 57P01 and closed; a client in a transaction is closed
//! once it finishes, bounded by the grace period the caller gives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::pool::prepared::StatementTable;
use crate::protocol::auth::Credentials;
use crate::router::KnownWrites;
use crate::session::{self, cancel::CancelRegistry};
use crate::topology::catalog::{FunctionCatalog, FunctionSets};
use crate::topology::monitor::{Monitor, MonitorHandle};
use crate::topology::{SharedTopology, Topology};

/// What every session reads.
pub struct Context {
    pub config: Arc<Config>,
    pub credentials: HashMap<String, Credentials>,
    pub topology: SharedTopology,
    /// Per database, the functions that make a SELECT a write.
    pub functions: FunctionSets,
    /// Statement shapes a follower refused as writes (25006): they go to the leader from then on.
    pub known_writes: KnownWrites,
    /// Server-side names of the statements clients prepare.
    pub statements: StatementTable,
    pub cancels: CancelRegistry,
    /// Logged-in clients, against `max_client_connections`.
    pub clients: AtomicUsize,
    /// Clients pinned to one server connection (LISTEN, temp tables, session advisory locks, WITH HOLD cursors).
    pub pinned: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
}

/// Which listener a client came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The read/write endpoint: writes to the leader, reads over the read pool.
    Main,
    /// A follower pool's own endpoint: everything to that pool's instances.
    Pool(Arc<str>),
}

pub struct Proxy {
    local_addr: SocketAddr,
    /// Bound addresses of follower pools' own endpoints.
    pool_addrs: Vec<(Arc<str>, SocketAddr)>,
    ctx: Arc<Context>,
    shutdown: watch::Sender<bool>,
    accepts: Vec<JoinHandle<()>>,
    monitor: MonitorHandle,
    /// Every session holds a clone of the sender; all dropped = all sessions over.
    sessions_done: mpsc::Receiver<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

impl Proxy {
    /// Binds the main endpoint and starts accepting. SCRAM verifiers are derived here, once.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        let mut listeners = vec![(Endpoint::Main, bind(config.proxy.listen).await?)];
        for pool in &config.follower_pools {
            if let Some(addr) = pool.listen {
                listeners.push((Endpoint::Pool(pool.name.as_str().into()), bind(addr).await?));
            }
        }
        let local_addr = listeners[0].1.local_addr().map_err(|source| StartError::Listen {
            addr: config.proxy.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let topology: SharedTopology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
        // The monitor and the catalog log in as the first configured user (to database `postgres`, and to each
        // client database for its functions).
        let watcher = &config.users[0];
        let (user, password) = (watcher.name.clone(), watcher.password.clone());
        let monitor = Monitor::spawn(topology.clone(), config.health.clone(), user.clone(), password.clone());
        let catalog = FunctionCatalog::new(topology.clone(), &config.health, user, password);
        let ctx = Arc::new(Context {
            credentials: config
                .users
                .iter()
                .map(|u| (u.name.clone(), Credentials::derive(u)))
                .collect(),
            topology,
            functions: FunctionSets::new(
                catalog,
                config.routing.write_functions.clone(),
                config.routing.read_only_functions.clone(),
            ),
            known_writes: KnownWrites::default(),
            statements: StatementTable::default(),
            cancels: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            pinned: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            config: Arc::new(config),
        });
        let (session_token, sessions_done) = mpsc::channel(1);
        let mut accepts = Vec::new();
        let mut pool_addrs = Vec::new();
        for (endpoint, listener) in listeners {
            let addr = listener.local_addr().map_err(|source| StartError::Listen {
                addr: local_addr,
                source,
            })?;
            tracing::info!(%addr, ?endpoint, "pgsplit listening");
            if let Endpoint::Pool(name) = &endpoint {
                pool_addrs.push((name.clone(), addr));
            }
            accepts.push(tokio::spawn(accept_loop(
                listener,
                endpoint,
                ctx.clone(),
                session_token.clone(),
            )));
        }
        Ok(Proxy {
            local_addr,
            pool_addrs,
            ctx,
            shutdown,
            accepts,
            monitor,
            sessions_done,
        })
    }

    /// The address a follower pool's own endpoint listens on.
    pub fn pool_addr(&self, pool: &str) -> Option<SocketAddr> {
        self.pool_addrs
            .iter()
            .find(|(name, _)| &**name == pool)
            .map(|(_, addr)| *addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Stops accepting, lets sessions finish their transactions, and waits up to `grace` for all of them.
    /// Returns whether every session ended in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        for accept in &self.accepts {
            accept.abort();
        }
        for accept in self.accepts.drain(..) {
            let _ = accept.await;
        }
        let drained = tokio::time::timeout(grace, self.sessions_done.recv()).await.is_ok();
        self.monitor.stop();
        drained
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

async fn accept_loop(listener: TcpListener, endpoint: Endpoint, ctx: Arc<Context>, session_token: mpsc::Sender<()>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let ctx = ctx.clone();
                let token = session_token.clone();
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    session::serve(stream, ctx, endpoint).await;
                    drop(token);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
