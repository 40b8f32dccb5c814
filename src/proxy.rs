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

use crate::config::Config;
use crate::pool::InstancePool;
use crate::protocol::auth::Credentials;
use crate::session::{self, cancel::CancelRegistry};

/// What every session reads.
pub struct Context {
    pub config: Arc<Config>,
    pub credentials: HashMap<String, Credentials>,
    pub leader: Arc<InstancePool>,
    pub cancels: CancelRegistry,
    /// Logged-in clients, against `max_client_connections`.
    pub clients: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
}

pub struct Proxy {
    local_addr: SocketAddr,
    ctx: Arc<Context>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
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
        let listener = TcpListener::bind(config.proxy.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.proxy.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.proxy.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let leader = &config.leader;
        let ctx = Arc::new(Context {
            credentials: config
                .users
                .iter()
                .map(|u| (u.name.clone(), Credentials::derive(u)))
                .collect(),
            leader: Arc::new(InstancePool::new(
                &leader.name,
                &leader.host,
                leader.port,
                leader.max_connections,
                config.server.connect_timeout,
            )),
            cancels: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            config: Arc::new(config),
        });
        let (session_token, sessions_done) = mpsc::channel(1);
        let accept = tokio::spawn(accept_loop(listener, ctx.clone(), session_token));
        tracing::info!(%local_addr, leader = %ctx.config.leader.name, "pgsplit listening");
        Ok(Proxy {
            local_addr,
            ctx,
            shutdown,
            accept,
            sessions_done,
        })
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
        self.accept.abort();
        let _ = (&mut self.accept).await;
        tokio::time::timeout(grace, self.sessions_done.recv()).await.is_ok()
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Context>, session_token: mpsc::Sender<()>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let ctx = ctx.clone();
                let token = session_token.clone();
                tokio::spawn(async move {
                    session::serve(stream, ctx).await;
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
