//! The server connection a session holds: routing a unit of work to an instance and borrowing a connection there,
//! giving it back when the unit is over (transaction mode) or the client leaves, and closing it when it fails.

use std::sync::Arc;

use super::relay::{Attached, Relay, SessionEnd};
use crate::config::{Fallback, PoolMode};
use crate::pool::{ConnectError, InstancePool, LoginInfo, ServerConn, Settings};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::frame::Framer;
use crate::protocol::login::LoginError;
use crate::protocol::messages::TxStatus;
use crate::proxy::Endpoint;
use crate::router::{RouteReason, Wants};
use crate::topology::{Instance, Role};

impl Relay {
    /// A pool's own endpoint sends everything to its followers. In session mode the main endpoint keeps each
    /// client on one leader connection for its whole life: a session cannot be split across instances.
    pub(super) fn wants_here(&self, wants: Wants) -> Wants {
        match (&self.endpoint, wants) {
            (Endpoint::Pool(_), Wants::Leader(reason)) => Wants::Follower(reason),
            (Endpoint::Main, Wants::Follower(_)) if self.ctx.config.proxy.pool_mode == PoolMode::Session => {
                Wants::Leader(RouteReason::Pinned)
            }
            (_, wants) => wants,
        }
    }

    pub(super) async fn route_and_attach(&mut self, wants: Wants) -> Result<(), SqlError> {
        let wants = self.wants_here(wants);
        let decision = {
            let topology = self.ctx.topology.load();
            let (pool, fallback) = match &self.endpoint {
                Endpoint::Main => (
                    topology.read_pool.map(|i| &*topology.pools[i]),
                    self.ctx.config.routing.fallback,
                ),
                Endpoint::Pool(name) => (
                    topology.pools.iter().find(|p| p.name == *name).map(|p| &**p),
                    Fallback::Error,
                ),
            };
            crate::router::route(&topology, pool, wants, fallback)?
        };
        let (instance, reason) = match self.attach(&decision.instance).await {
            Ok(()) => (decision.instance, decision.reason),
            // A follower that cannot take the read: the leader can, unless this endpoint serves followers only.
            Err(error) if decision.instance.role == Role::Follower && self.may_fall_back() => {
                tracing::debug!(instance = %decision.instance.name, %error, "follower unavailable; reading on the leader");
                let leader = self.ctx.topology.load().leader.clone();
                self.attach(&leader).await?;
                (leader, RouteReason::Fallback)
            }
            Err(error) => return Err(error),
        };
        instance.count_route(reason);
        tracing::debug!(instance = %instance.name, reason = reason.as_str(), "routed");
        self.last_route = Some((instance.name.clone(), reason));
        Ok(())
    }

    fn may_fall_back(&self) -> bool {
        matches!(self.endpoint, Endpoint::Main) && self.ctx.config.routing.fallback == Fallback::Leader
    }

    pub(super) async fn attach(&mut self, instance: &Arc<Instance>) -> Result<(), SqlError> {
        let checkout_timeout = self.ctx.config.server.checkout_timeout;
        let conn = borrow(&instance.pool, &self.login, &self.wanted, checkout_timeout).await?;
        self.cancel.set(Some(conn.cancel.clone()));
        self.server = Some(Attached {
            conn,
            work: instance.begin_work(),
        });
        self.server_framer = Framer::default();
        Ok(())
    }

    /// In transaction mode, gives the server connection back once the transaction is over and nothing is in flight.
    pub(super) fn release_if_done(&mut self) {
        if self.ctx.config.proxy.pool_mode == PoolMode::Transaction
            && !self.stream.pinned
            && self.server.is_some()
            && self.is_quiet()
        {
            let Attached { conn, work } = self.server.take().expect("checked above");
            self.cancel.set(None);
            if conn.buf.is_empty() {
                work.instance().pool.release(conn);
            } else {
                // Unsolicited bytes after ReadyForQuery belong to nobody; never hand them to another client.
                work.instance().pool.discard(conn);
            }
        }
    }

    /// Idle between transactions with nothing outstanding in either direction.
    pub(super) fn is_quiet(&self) -> bool {
        self.replies.is_empty()
            && !self.batch_open
            && self.tx_status == TxStatus::Idle
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.client_framer.at_boundary()
            && self.server_framer.at_boundary()
    }

    /// At the end of a session: a clean connection goes back to the pool (after `DISCARD ALL` in session mode or
    /// when pinned, so no state leaks to the next client), anything else is closed.
    pub(super) async fn return_server(&mut self) {
        let Some(Attached { mut conn, work }) = self.server.take() else {
            return;
        };
        self.cancel.set(None);
        let clean = self.is_quiet() && conn.buf.is_empty();
        let keeps_state = self.ctx.config.proxy.pool_mode == PoolMode::Session || self.stream.pinned;
        let reusable = clean && (!keeps_state || conn.run_own("DISCARD ALL").await.is_ok());
        if reusable {
            if keeps_state {
                conn.settings = Settings::default();
                conn.prepared.clear();
            }
            work.instance().pool.release(conn);
        } else {
            work.instance().pool.discard(conn);
        }
    }

    /// The server connection failed: it is closed, never returned, and the client is told.
    pub(super) fn lose_server(&mut self) -> SessionEnd {
        let instance = match self.server.take() {
            Some(Attached { conn, work }) => {
                self.cancel.set(None);
                work.instance().pool.discard(conn);
                work.instance().name.clone()
            }
            None => "?".into(),
        };
        SessionEnd::Fatal(SqlError::new(
            Severity::Fatal,
            code::CONNECTION_FAILURE,
            format!("lost the connection to instance \"{instance}\" during the transaction"),
        ))
    }
}

/// Borrows a connection from `pool` and gives it `wanted`'s settings. A setting the server refuses comes back as
/// the server's own error; the connection goes back to the pool untouched.
pub async fn borrow(
    pool: &InstancePool,
    login: &LoginInfo,
    wanted: &Settings,
    timeout: std::time::Duration,
) -> Result<ServerConn, SqlError> {
    let mut conn = pool.checkout(login, timeout).await.map_err(|e| e.to_sql_error())?;
    match conn.sync_settings(wanted).await {
        Ok(()) => Ok(conn),
        Err(error @ ConnectError::Login(LoginError::Refused { .. })) => {
            pool.release(conn);
            Err(error.to_sql_error(pool.name()))
        }
        Err(error) => {
            pool.discard(conn);
            Err(error.to_sql_error(pool.name()))
        }
    }
}
