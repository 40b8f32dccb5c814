//! The shared state the proxy hands to its consumers, one struct per consumer: what a client session may read and
//! count ([`SessionContext`]), and what the admin API may read and steer ([`AdminContext`]). `proxy` builds both
//! and wires listeners to `session::serve` and `admin::serve`; neither consumer sees the other's parts, so a session
//! cannot reload or promote, and the admin API holds no client credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::pool::prepared::StatementTable;
use crate::protocol::auth::Users;
use crate::router::KnownWrites;
use crate::runtime::Placement;
use crate::session::admission::PendingLogins;
use crate::session::cancel::CancelRegistry;
use crate::tls::Tls;
use crate::topology::SharedTopology;
use crate::topology::catalog::FunctionSets;
use crate::topology::control::Control;
use crate::topology::gate::Gate;

/// Gauges of the client side, kept by sessions and read by the admin API.
#[derive(Debug, Default)]
pub struct ClientGauges {
    /// Logged-in clients, against `max_client_connections`.
    pub clients: AtomicUsize,
    /// Clients pinned to one server connection (LISTEN, temp tables, session advisory locks, WITH HOLD cursors).
    pub pinned: AtomicUsize,
}

/// One on a gauge for as long as it lives: released by ownership, so a session that ends any way at all (a
/// panic or a cancelled task included) leaves the gauge right.
pub struct GaugeCount {
    gauges: Arc<ClientGauges>,
    gauge: fn(&ClientGauges) -> &AtomicUsize,
}

impl GaugeCount {
    /// Counts one logged-in client, if fewer than `max` are.
    pub fn client(gauges: &Arc<ClientGauges>, max: usize) -> Option<GaugeCount> {
        gauges
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()?;
        Some(GaugeCount {
            gauges: gauges.clone(),
            gauge: |g| &g.clients,
        })
    }

    /// Counts one pinned client.
    pub fn pinned(gauges: &Arc<ClientGauges>) -> GaugeCount {
        Self::take(gauges, |g| &g.pinned)
    }

    fn take(gauges: &Arc<ClientGauges>, gauge: fn(&ClientGauges) -> &AtomicUsize) -> GaugeCount {
        gauge(gauges).fetch_add(1, Ordering::Relaxed);
        GaugeCount {
            gauges: gauges.clone(),
            gauge,
        }
    }
}

impl Drop for GaugeCount {
    fn drop(&mut self) {
        (self.gauge)(&self.gauges).fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every client session reads.
pub struct SessionContext {
    /// The cluster and the config it was built from; every decision loads it once.
    pub topology: SharedTopology,
    /// Paused directions: every unit passes it before it is routed.
    pub gate: Arc<Gate>,
    /// Per user: what a client must prove. Replaced by a reload.
    pub credentials: ArcSwap<Users>,
    /// TLS towards clients (and servers), as loaded last.
    pub tls: Arc<Tls>,
    /// Per database, the functions that make a SELECT a write.
    pub functions: FunctionSets,
    /// Statement shapes a follower refused as writes (25006): they go to the leader from then on.
    pub known_writes: KnownWrites,
    /// Server-side names of the statements clients prepare.
    pub statements: StatementTable,
    pub cancels: CancelRegistry,
    /// Connections that have not logged in yet (`proxy.max_pending_logins`).
    pub logins: Arc<PendingLogins>,
    pub gauges: Arc<ClientGauges>,
    pub shutdown: watch::Receiver<bool>,
}

impl SessionContext {
    /// The config in use now.
    pub fn config(&self) -> Arc<Config> {
        self.topology.load().config.clone()
    }
}

/// What the admin API reads and steers.
pub struct AdminContext {
    pub topology: SharedTopology,
    /// Reload, pause/resume, promotion: everything that changes the topology.
    pub control: Arc<Control>,
    pub gauges: Arc<ClientGauges>,
    /// The session workers, read for how many sessions each runs.
    pub placement: Arc<Placement>,
    pub shutdown: watch::Receiver<bool>,
}

impl AdminContext {
    /// The config in use now.
    pub fn config(&self) -> Arc<Config> {
        self.topology.load().config.clone()
    }
}

/// Which listener a client came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The read/write endpoint: writes to the leader, reads over the read pool.
    Main,
    /// A follower pool's own endpoint: everything to that pool's instances.
    Pool(Arc<str>),
}
