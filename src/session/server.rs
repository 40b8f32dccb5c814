//! The server connection a session holds: routing a unit of work to an instance and borrowing a connection there,
//! giving it back when the unit is over (transaction mode) or the client leaves, and closing it when it fails.
//!
//! Every unit passes the pause gate first, for its direction (writes: the leader; reads: followers). A unit for the
//! leader that cannot get a connection because the leader is down waits, retrying, up to `checkout_timeout` — a
//! promotion adopted meanwhile serves it — and then gets 57P03. A connection kept between units (session mode, or a
//! pinned client) is counted as work only while a unit runs on it, and moves off an instance that left the
//! topology at the next unit; a pinned client cannot move (its state lives there) and is told to reconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::floor::Needs;
use super::relay::{Attached, Relay, SessionEnd};
use crate::config::{Config, Fallback, PoolMode};
use crate::context::Endpoint;
use crate::pool::{ConnectError, InstancePool, LoginInfo, ServerConn, Settings};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::frame::Framer;
use crate::protocol::login::LoginError;
use crate::router::{RouteReason, Wants};
use crate::topology::gate::Direction;
use crate::topology::{FollowerPool, Instance, Role, Served};

impl Relay {
    /// A pool's own endpoint sends everything to its followers. In session mode the main endpoint keeps each
    /// client on one leader connection for its whole life: a session cannot be split across instances.
    pub(super) fn wants_here(&self, wants: Wants) -> Wants {
        match (&self.endpoint, wants) {
            (Endpoint::Pool(_), Wants::Leader(reason)) => Wants::Follower(reason),
            (Endpoint::Main, Wants::Follower(_)) if self.pool_mode == PoolMode::Session => {
                Wants::Leader(RouteReason::Pinned)
            }
            (_, wants) => wants,
        }
    }

    pub(super) async fn route_and_attach(&mut self, wants: Wants) -> Result<(), SqlError> {
        let wants = self.wants_here(wants);
        let direction = direction_of(wants);
        let started = Instant::now();
        loop {
            self.ctx.gate.wait_open(direction).await;
            // One snapshot per attempt: the routing decision and the checkout see the same topology.
            let topology = self.ctx.topology.load_full();
            let config = &topology.config;
            // A leader that cannot be reached is retried until this deadline.
            let deadline = started + config.server.checkout_timeout;
            let needs = self.read_needs(wants, &topology);
            let floor = match needs {
                Needs::Floor(floor) => Some(floor),
                Needs::Nothing | Needs::Leader => None,
            };
            let (decision, pool) = {
                let (pool, fallback) = match &self.endpoint {
                    Endpoint::Main => (topology.read_pool.map(|i| &topology.pools[i]), config.routing.fallback),
                    Endpoint::Pool(name) => match topology.pools.iter().find(|p| p.name == *name) {
                        Some(pool) => (Some(pool), Fallback::Error),
                        // Its clients stay connected, but a pool endpoint never serves anything but its pool.
                        None => return Err(pool_removed(name)),
                    },
                };
                let wants = match needs {
                    Needs::Leader => Wants::Leader(RouteReason::ReadYourWrites),
                    Needs::Nothing | Needs::Floor(_) => wants,
                };
                let decision = crate::router::route(&topology, pool.map(|p| &**p), wants, fallback, floor.as_ref())?;
                (decision, pool.cloned())
            };
            let role = match wants {
                Wants::Leader(_) => Role::Leader,
                Wants::Follower(_) if Arc::ptr_eq(&decision.instance, &topology.leader) => Role::Leader,
                Wants::Follower(_) => Role::Follower,
            };
            let writes = direction == Direction::Writes;
            let (instance, reason) = match self.attach(&decision.instance, role, writes, config).await {
                Ok(()) => match (decision.confirm, &floor) {
                    (Some(expected), Some(floor)) if !self.confirm_replayed(floor, expected).await => {
                        // Not caught up in time: the read runs on the leader.
                        self.detach();
                        let leader = self.ctx.topology.load().leader.clone();
                        self.attach(&leader, Role::Leader, false, config).await?;
                        (leader, RouteReason::ReadYourWrites)
                    }
                    _ => (decision.instance, decision.reason),
                },
                // A follower that cannot take the read: the leader can, unless this endpoint serves followers only.
                Err(error) if role == Role::Follower && self.may_fall_back(config) => {
                    tracing::debug!(instance = %decision.instance.name, %error, "follower unavailable; reading on the leader");
                    let leader = self.ctx.topology.load().leader.clone();
                    self.attach(&leader, Role::Leader, false, config).await?;
                    (leader, RouteReason::Fallback)
                }
                // The leader is down: a promotion may come, or the leader may return, before the deadline.
                Err(error) if writes && error.code == code::CANNOT_CONNECT_NOW && Instant::now() < deadline => {
                    tracing::debug!(instance = %decision.instance.name, %error, "leader unavailable; retrying");
                    let pause = config
                        .health
                        .interval
                        .clamp(Duration::from_millis(10), Duration::from_secs(1));
                    crate::runtime::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                    continue;
                }
                // The instance left the topology while this unit queued for it: route again on the new one.
                Err(_) if decision.instance.is_retired() => continue,
                Err(error) => return Err(error),
            };
            if self.ctx.gate.is_paused(direction) {
                // Paused after this unit passed the gate but before it was counted: it waits like the rest.
                self.detach();
                continue;
            }
            if !self.role_still_holds(topology.generation) {
                // A swap while this unit waited for a connection: it must not run on a leader that was replaced
                // (never two leaders), nor read on an instance that is no longer a follower.
                self.detach();
                continue;
            }
            instance.count_route(reason);
            if needs != Needs::Nothing {
                count_fresh_read(pool.as_deref(), reason, decision.confirm.is_some(), self.on_follower());
            }
            tracing::debug!(instance = %instance.name, reason = reason.as_str(), "routed");
            self.last_route = Some((instance.name.clone(), reason));
            return Ok(());
        }
    }

    /// The attached instance still has the role it was attached for: nothing was swapped since generation
    /// `routed_on`, or the current topology gives it the same role.
    fn role_still_holds(&self, routed_on: u64) -> bool {
        let now = self.ctx.topology.load();
        now.generation == routed_on
            || self
                .server
                .as_ref()
                .is_some_and(|s| now.role_of(&s.instance) == Some(s.role))
    }

    fn may_fall_back(&self, config: &crate::config::Config) -> bool {
        matches!(self.endpoint, Endpoint::Main) && config.routing.fallback == Fallback::Leader
    }

    /// Borrows a connection on `instance`, counted as a running unit (one that may write, if `writes`).
    pub(super) async fn attach(
        &mut self,
        instance: &Arc<Instance>,
        role: Role,
        writes: bool,
        config: &Config,
    ) -> Result<(), SqlError> {
        let conn = borrow(&instance.pool, &self.login, &self.wanted, config).await?;
        self.cancel.set(Some(conn.cancel.clone()));
        self.server = Some(Attached {
            conn,
            instance: instance.clone(),
            role,
            work: Some(instance.begin_work(writes)),
        });
        self.server_framer = Framer::default();
        self.streaming = None;
        Ok(())
    }

    /// A new unit on a connection kept between units (session mode, or pinned): it passes the gate, and moves off
    /// an instance that left the topology — unless pinned, when the session must end.
    pub(super) async fn resume_unit(&mut self, wants: Wants) -> Result<(), SessionEnd> {
        let direction = direction_of(self.wants_here(wants));
        loop {
            let attached = self.server.as_mut().expect("called with a kept connection");
            if attached.instance.is_retired() {
                if !self.stream.pinned {
                    // Nothing lives only on that connection: the unit is routed afresh.
                    self.detach();
                    return Ok(());
                }
                return Err(SessionEnd::Fatal(SqlError::new(
                    Severity::Fatal,
                    code::ADMIN_SHUTDOWN,
                    format!(
                        "instance \"{}\" left the topology, and this session's state (LISTEN, temporary tables, \
                         session locks or held cursors) lives only there; reconnect",
                        attached.instance.name
                    ),
                )));
            }
            let gate = &self.ctx.gate;
            if gate.is_paused(direction) {
                gate.wait_open(direction).await;
                continue;
            }
            attached.work = Some(attached.instance.begin_work(direction == Direction::Writes));
            if gate.is_paused(direction) {
                attached.work = None;
                continue;
            }
            return Ok(());
        }
    }

    /// Gives the server connection back between units without ending anything: the pool keeps it if it can.
    fn detach(&mut self) {
        if let Some(Attached { conn, instance, .. }) = self.server.take() {
            self.cancel.set(None);
            if self.is_quiet() && conn.buf.is_empty() {
                instance.pool.release(conn);
            } else {
                drop(conn);
            }
        }
    }

    /// Once a unit is over and nothing is in flight: in transaction mode the server connection goes back to its
    /// pool; kept (session mode, pinned), it stops counting as running work.
    pub(super) fn release_if_done(&mut self) {
        if self.server.as_ref().is_none_or(|s| s.work.is_none()) || !self.is_quiet() {
            return;
        }
        // Probes are sent only in transaction mode with read-your-writes on: whatever is owed otherwise lapses.
        self.probe.lapse();
        if self.pool_mode == PoolMode::Transaction && !self.stream.pinned {
            let Attached { conn, instance, .. } = self.server.take().expect("checked above");
            self.cancel.set(None);
            if conn.buf.is_empty() {
                instance.pool.release(conn);
            } else {
                // Unsolicited bytes after ReadyForQuery belong to nobody; never hand them to another client.
                drop(conn);
            }
        } else if let Some(attached) = self.server.as_mut() {
            attached.work = None;
        }
    }

    /// Idle between transactions with nothing outstanding in either direction.
    pub(super) fn is_quiet(&self) -> bool {
        self.exchange.settled()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.client_framer.at_boundary()
            && self.server_framer.at_boundary()
    }

    /// At the end of a session: a clean connection goes back to the pool (after `DISCARD ALL` in session mode or
    /// when pinned, so no state leaks to the next client), anything else is closed.
    pub(super) async fn return_server(&mut self) {
        let Some(Attached { mut conn, instance, .. }) = self.server.take() else {
            return;
        };
        self.cancel.set(None);
        let clean = self.is_quiet() && conn.buf.is_empty();
        let keeps_state = self.pool_mode == PoolMode::Session || self.stream.pinned;
        let deadline = self.ctx.config().health.timeout;
        let reusable = clean && (!keeps_state || conn.run_own("DISCARD ALL", deadline).await.is_ok());
        if reusable {
            if keeps_state {
                conn.settings = Settings::default();
                conn.prepared.clear();
            }
            instance.pool.release(conn);
        } else {
            drop(conn);
        }
    }

    /// The server connection failed: it is closed, never returned, and the client is told.
    pub(super) fn lose_server(&mut self) -> SessionEnd {
        let instance = match self.server.take() {
            // Dropped, never returned: its place in the pool goes back as it closes.
            Some(Attached { instance, .. }) => {
                self.cancel.set(None);
                instance.name.clone()
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

/// Counts where a read with a floor was served, on the pool it was meant for.
fn count_fresh_read(pool: Option<&FollowerPool>, reason: RouteReason, confirmed: bool, on_follower: bool) {
    let served = match (reason, on_follower) {
        (RouteReason::ReadYourWrites, _) => Served::OnLeader,
        (_, true) if confirmed => Served::Confirmed,
        (_, true) => Served::CaughtUp,
        // On the leader for another reason (no usable follower at all).
        (_, false) => return,
    };
    if let Some(pool) = pool {
        pool.freshness.count(served);
    }
}

/// What a client of a follower pool's own endpoint is told once that pool is gone from the config.
fn pool_removed(name: &str) -> SqlError {
    SqlError::new(
        Severity::Error,
        code::CANNOT_CONNECT_NOW,
        format!("follower pool \"{name}\" is no longer in the configuration; connect to another endpoint"),
    )
}

/// Writes wait at a write pause; reads at a read pause.
fn direction_of(wants: Wants) -> Direction {
    match wants {
        Wants::Leader(_) => Direction::Writes,
        Wants::Follower(_) => Direction::Reads,
    }
}

/// Borrows a connection from `pool` (waiting up to `server.checkout_timeout`) and gives it `wanted`'s settings
/// (within `health.timeout`, the deadline of every statement pgsplit runs itself). A setting the server refuses
/// comes back as the server's own error; the connection goes back to the pool untouched.
pub async fn borrow(
    pool: &InstancePool,
    login: &LoginInfo,
    wanted: &Settings,
    config: &Config,
) -> Result<Box<ServerConn>, SqlError> {
    let mut conn = pool
        .checkout(login, config.server.checkout_timeout)
        .await
        .map_err(|e| e.to_sql_error())?;
    match conn.sync_settings(wanted, config.health.timeout).await {
        Ok(()) => Ok(conn),
        Err(error @ ConnectError::Login(LoginError::Refused { .. })) => {
            pool.release(conn);
            Err(error.to_sql_error(pool.name()))
        }
        Err(error) => {
            drop(conn);
            Err(error.to_sql_error(pool.name()))
        }
    }
}
