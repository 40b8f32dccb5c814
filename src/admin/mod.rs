//! The HTTP admin API on `proxy.admin_listen` (SPEC §5, docs/admin.md): `/healthz`, `/status` JSON, `/metrics`
//! for Prometheus, and the mutating calls `/reload`, `/pause`, `/resume`, `/promote` that hand over to the
//! control plane.
//!
//! This file owns the listener: every connection is its own task speaking HTTP/1.1 with a header-read timeout, so a
//! slow or hostile client holds up nobody else; on shutdown each connection finishes the request in hand and
//! closes. `routes` answers requests, `status` builds the snapshot, `metrics` renders it, `body` reads and parses
//! request bodies. The admin API never touches client traffic or server connections itself: it reads the topology
//! snapshot and asks [`Control`](crate::topology::control::Control) for every change.

mod body;
mod metrics;
mod routes;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use body::{MAX_BODY, PauseBody, PauseDirection, PromoteBody};
pub use status::{Connections, InstanceStatus, Paused, PausedAnswer, PoolStatus, Status, WorkersStatus};

use crate::context::AdminContext;

/// A client that has not sent a whole request head by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; past it a connection is answered 503 and closed at once, so a flood can
/// neither use up descriptors nor stop the listener from accepting.
pub const MAX_CONNECTIONS: usize = 64;
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 59\r\n\
connection: close\r\n\r\n{\"error\": \"too many admin connections at once; try again\"}\n";

/// Serves the admin API until the proxy shuts down.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminContext>) {
    let shutdown = stopping(ctx.shutdown.clone());
    tokio::pin!(shutdown);
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match places.clone().try_acquire_owned() {
                    Ok(place) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            connection(stream, ctx).await;
                            drop(place);
                        });
                    }
                    Err(_) => {
                        // Best effort, without waiting: the socket's buffer takes this at once.
                        let _ = stream.try_write(BUSY);
                    }
                },
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(%error, "admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// One client's connection: requests answered in turn until it closes, errs, or the proxy shuts down.
async fn connection(stream: TcpStream, ctx: Arc<AdminContext>) {
    let shutdown = stopping(ctx.shutdown.clone());
    let service = service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(routes::handle(request, &ctx).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Malformed requests and clients that vanish mid-request end up here; hyper has already answered what
        // could be answered (400, 431, …).
        tracing::debug!(%error, "admin API connection ended with an error");
    }
}

/// Resolves once the proxy shuts down — or is gone: a dropped sender counts as a shutdown.
async fn stopping(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
