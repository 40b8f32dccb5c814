//! The server connection a session holds: routing a unit of work to an instance and borrowing a connection there,
//! giving it back when the unit is over (transaction mode) or the client leaves, and closing it when it fails.
//!
//! Every unit passes the pause gate first, for its direction (writes: the leader; reads: followers). A unit for the
//! leader that cannot get a connection because the leader is down waits, retrying, up to `checkout_timeout` — a
//! promotion adopted meanwhile serves it — and then gets 57P03. A connection kept between units (session mode, or a
//! pinned client) is counted as work only while a unit runs on it, and moves off an instance that left the
//! topology at the next unit; a pinned client cannot move (its state lives there) and is told to reconnect.
//!
//! The [`Attachment`] owns all of this — the connection with its framing state, the client's login and cancel key,
//! the endpoint and pool mode, where the last unit ran — and is told by the relay whether the session is quiet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cancel::CancelSlot;
use super::floor::{Needs, ReadFloor};
use super::read_your_writes::confirm_replayed;
use super::relay::SessionEnd;
use super::replies::Verdict;
use crate::config::{Config, Fallback, PoolMode};
use crate::context::{Endpoint, SessionContext};
use crate::pool::{ConnectError, InstancePool, LoginInfo, ServerConn, Settings};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::frame::Framer;
use crate::protocol::login::LoginError;
use crate::router::{RouteReason, Wants};
use crate::tls::Tls;
use crate::topology::gate::{Direction, Gate};
use crate::topology::{FollowerPool, Instance, Role, Served, SharedTopology, Topology, WorkGuard};
use arc_swap::cache::Cache;

/// A borrowed server connection, the instance it belongs to, the role that instance had when routed to, and where
/// the relay is in the connection's stream of messages.
pub(super) struct Attached {
    pub conn: Box<ServerConn>,
    pub instance: Arc<Instance>,
    pub role: Role,
    /// Counts the running unit on the instance; None between units on a kept connection.
    pub work: Option<WorkGuard>,
    pub framer: Framer,
    /// A server message known by its header is streaming through: forwarded or dropped.
    pub streaming: Option<Verdict>,
}

pub(super) struct Attachment {
    server: Option<Attached>,
    /// The topology as this session last saw it: checking whether it changed costs a pointer comparison, not a
    /// load of the shared snapshot.
    topology: Cache<SharedTopology, Arc<Topology>>,
    /// Taken from the config at login: a reload changes them for new clients only.
    pool_mode: PoolMode,
    endpoint: Endpoint,
    login: LoginInfo,
    /// Points at the attached connection's own cancel key while there is one.
    cancel: Arc<CancelSlot>,
    /// Where the last unit ran and why (`SHOW pgsplit.route`).
    last_route: Option<(Arc<str>, RouteReason)>,
}

/// What is asked of one attempt to route a unit.
pub(super) struct RouteRequest<'a> {
    pub wants: Wants,
    /// The client's settings, given to the connection it borrows.
    pub wanted: &'a Settings,
    /// Its read-your-writes floor.
    pub floor: &'a mut ReadFloor,
}

impl Attachment {
    pub fn new(
        topology: SharedTopology,
        pool_mode: PoolMode,
        endpoint: Endpoint,
        login: LoginInfo,
        cancel: Arc<CancelSlot>,
    ) -> Attachment {
        Attachment {
            server: None,
            topology: Cache::new(topology),
            pool_mode,
            endpoint,
            login,
            cancel,
            last_route: None,
        }
    }

    pub fn attached(&self) -> Option<&Attached> {
        self.server.as_ref()
    }

    pub fn attached_mut(&mut self) -> Option<&mut Attached> {
        self.server.as_mut()
    }

    pub fn is_attached(&self) -> bool {
        self.server.is_some()
    }

    /// A connection is kept between units (session mode, pinned) and no unit runs on it now.
    pub fn kept_idle(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.work.is_none())
    }

    /// No unit runs: nothing attached, or a kept connection between units.
    pub fn no_unit_running(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.work.is_none())
    }

    pub fn on_follower(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.role == Role::Follower)
    }

    /// The attached connection's framing is between messages (true with none attached).
    pub fn server_at_boundary(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.framer.at_boundary())
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn pool_mode(&self) -> PoolMode {
        self.pool_mode
    }

    pub fn login(&self) -> &LoginInfo {
        &self.login
    }

    /// The client's own key: the pid pgsplit gave it, and who logged in.
    pub fn client_key(&self) -> &Arc<CancelSlot> {
        &self.cancel
    }

    pub fn last_route(&self) -> Option<&(Arc<str>, RouteReason)> {
        self.last_route.as_ref()
    }

    /// A pool's own endpoint sends everything to its followers. In session mode the main endpoint keeps each
    /// client on one leader connection for its whole life: a session cannot be split across instances.
    pub fn wants_here(&self, wants: Wants) -> Wants {
        match (&self.endpoint, wants) {
            (Endpoint::Pool(_), Wants::Leader(reason)) => Wants::Follower(reason),
            (Endpoint::Main, Wants::Follower(_)) if self.pool_mode == PoolMode::Session => {
                Wants::Leader(RouteReason::Pinned)
            }
            (_, wants) => wants,
        }
    }

    pub async fn route_and_attach(&mut self, ctx: &SessionContext, request: RouteRequest<'_>) -> Result<(), SqlError> {
        let RouteRequest { wants, wanted, floor } = request;
        let wants = self.wants_here(wants);
        let direction = direction_of(wants);
        let started = Instant::now();
        loop {
            // Held writes wait for a confirmed leader, bounded: then 57P03, and the session goes on.
            ctx.gate.wait_open(direction).await?;
            // One snapshot per attempt: the routing decision and the checkout see the same topology.
            let topology = self.topology.load().clone();
            let config = &topology.config;
            // A leader that cannot be reached is retried until this deadline.
            let deadline = started + config.server.checkout_timeout;
            let needs = self.read_needs(wants, floor, &topology);
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
                match crate::router::route(&topology, pool.map(|p| &**p), wants, fallback, floor.as_ref()) {
                    Ok(decision) => (decision, pool.cloned()),
                    Err(error) => {
                        // No usable follower, but one not judged yet (a pool a reload just added): its first health
                        // check decides, within the checkout deadline.
                        let unjudged = pool.and_then(|p| p.instances.iter().find(|i| !i.health.is_judged()));
                        let left = deadline.saturating_duration_since(Instant::now());
                        match unjudged {
                            Some(instance) if !left.is_zero() => {
                                let instance = instance.clone();
                                drop(topology);
                                instance.health.judged_within(left).await;
                                continue;
                            }
                            _ => return Err(error),
                        }
                    }
                }
            };
            let role = match wants {
                Wants::Leader(_) => Role::Leader,
                Wants::Follower(_) if Arc::ptr_eq(&decision.instance, &topology.leader) => Role::Leader,
                Wants::Follower(_) => Role::Follower,
            };
            let writes = direction == Direction::Writes;
            let tls = &*ctx.tls;
            let (instance, reason) = match self.attach(&decision.instance, role, writes, wanted, tls, config).await {
                Ok(()) => match (decision.confirm, &floor) {
                    (Some(expected), Some(floor)) if !self.confirm_replayed(floor, expected).await => {
                        // Not caught up in time: the read runs on the leader.
                        self.detach(true);
                        let leader = ctx.topology.load().leader.clone();
                        self.attach(&leader, Role::Leader, false, wanted, tls, config).await?;
                        (leader, RouteReason::ReadYourWrites)
                    }
                    _ => (decision.instance, decision.reason),
                },
                // A follower that cannot take the read: the leader can, unless this endpoint serves followers only.
                Err(error) if role == Role::Follower && self.may_fall_back(config) => {
                    tracing::debug!(instance = %decision.instance.name, %error, "follower unavailable; reading on the leader");
                    let leader = ctx.topology.load().leader.clone();
                    self.attach(&leader, Role::Leader, false, wanted, tls, config).await?;
                    (leader, RouteReason::Fallback)
                }
                // A read the router sent to the leader (no usable follower: its follower may be the one being
                // promoted) while writes wait for a leader to be confirmed: it waits for one too.
                Err(error)
                    if role == Role::Leader
                        && error.code == code::CANNOT_CONNECT_NOW
                        && ctx.gate.writes_held().is_some() =>
                {
                    tracing::debug!(instance = %decision.instance.name, %error, "leader unavailable while held; waiting");
                    ctx.gate.wait_open(Direction::Writes).await?;
                    continue;
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
            if ctx.gate.is_paused(direction) {
                // Paused after this unit passed the gate but before it was counted: it waits like the rest.
                self.detach(true);
                continue;
            }
            if !self.role_still_holds(topology.generation) {
                // A swap while this unit waited for a connection: it must not run on a leader that was replaced
                // (never two leaders), nor read on an instance that is no longer a follower.
                self.detach(true);
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
    fn role_still_holds(&mut self, routed_on: u64) -> bool {
        let now = self.topology.load();
        now.generation == routed_on
            || self
                .server
                .as_ref()
                .is_some_and(|s| now.role_of(&s.instance) == Some(s.role))
    }

    fn may_fall_back(&self, config: &Config) -> bool {
        matches!(self.endpoint, Endpoint::Main) && config.routing.fallback == Fallback::Leader
    }

    /// What a unit wanting `wants` must respect: only reads from the main endpoint have a floor.
    fn read_needs(&self, wants: Wants, floor: &mut ReadFloor, topology: &crate::topology::Topology) -> Needs {
        if !matches!(wants, Wants::Follower(_)) || !matches!(self.endpoint, Endpoint::Main) {
            return Needs::Nothing;
        }
        let config = &topology.config;
        let routing = &config.routing;
        if !routing.read_your_writes {
            return Needs::Nothing;
        }
        floor.needs(
            routing.read_your_writes_wait,
            &topology.leader.health,
            config.health.timeout,
        )
    }

    /// Whether the attached follower has replayed past `floor` in time (see [`confirm_replayed`]); a connection
    /// that fails the question is dropped.
    async fn confirm_replayed(&mut self, floor: &crate::router::Floor, expected: Instant) -> bool {
        let Some(attached) = self.server.as_mut() else {
            return false;
        };
        match confirm_replayed(attached, floor, expected).await {
            Some(caught_up) => caught_up,
            None => {
                // Dropped, not returned: its place in the pool goes back as it closes.
                self.take();
                false
            }
        }
    }

    /// Borrows a connection on `instance` with the client's settings (opened with `tls` if need be), counted as a
    /// running unit (one that may write, if `writes`).
    async fn attach(
        &mut self,
        instance: &Arc<Instance>,
        role: Role,
        writes: bool,
        wanted: &Settings,
        tls: &Tls,
        config: &Config,
    ) -> Result<(), SqlError> {
        let conn = borrow(&instance.pool, &self.login, wanted, tls, config).await?;
        self.cancel.set(Some(conn.cancel.clone()));
        self.server = Some(Attached {
            conn,
            instance: instance.clone(),
            role,
            work: Some(instance.begin_work(writes)),
            framer: Framer::default(),
            streaming: None,
        });
        Ok(())
    }

    /// A new unit on a connection kept between units (session mode, or pinned): it passes the gate, and moves off
    /// an instance that left the topology — unless pinned, when the session must end.
    pub async fn resume_unit(&mut self, gate: &Gate, wants: Wants, pinned: bool) -> Result<(), SessionEnd> {
        let direction = direction_of(self.wants_here(wants));
        loop {
            let Some(attached) = self.server.as_mut() else {
                return Ok(());
            };
            if attached.instance.is_retired() {
                if !pinned {
                    // Nothing lives only on that connection: the unit is routed afresh.
                    self.detach(true);
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
            if gate.is_paused(direction) {
                if let Err(refused) = gate.wait_open(direction).await {
                    if !pinned {
                        // Routed afresh, where the gate refuses it with an ERROR the session survives.
                        self.detach(true);
                        return Ok(());
                    }
                    return Err(SessionEnd::Fatal(refused.into()));
                }
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

    /// Gives the server connection back between units without ending anything: the pool keeps it if the session
    /// is `quiet` and nothing unread is left on it.
    pub fn detach(&mut self, quiet: bool) {
        if let Some(Attached { conn, instance, .. }) = self.take()
            && quiet
            && conn.buf.is_empty()
        {
            instance.pool.release(conn);
        }
    }

    /// Once a unit is over and the session is quiet: in transaction mode the server connection goes back to its
    /// pool (unless `pinned`); kept (session mode, pinned), it stops counting as running work. Returns whether a
    /// unit ended.
    pub fn release_if_done(&mut self, quiet: bool, pinned: bool) -> bool {
        if self.no_unit_running() || !quiet {
            return false;
        }
        if self.pool_mode == PoolMode::Transaction && !pinned {
            // Unsolicited bytes after ReadyForQuery belong to nobody: such a connection is never handed to another
            // client (`detach` drops it).
            self.detach(true);
        } else if let Some(attached) = self.server.as_mut() {
            attached.work = None;
        }
        true
    }

    /// At the end of a session: a clean connection goes back to the pool (after `DISCARD ALL` in session mode or
    /// when `pinned`, so no state leaks to the next client, within `deadline`), anything else is closed.
    pub async fn return_server(&mut self, quiet: bool, pinned: bool, deadline: Duration) {
        let Some(Attached { mut conn, instance, .. }) = self.take() else {
            return;
        };
        let clean = quiet && conn.buf.is_empty();
        let keeps_state = self.pool_mode == PoolMode::Session || pinned;
        let reusable = clean && (!keeps_state || conn.run_own("DISCARD ALL", deadline).await.is_ok());
        if reusable {
            if keeps_state {
                conn.settings = Settings::default();
                conn.prepared.clear();
            }
            instance.pool.release(conn);
        }
    }

    /// Takes the attached connection out (to drop or return it); the cancel key points nowhere again.
    pub fn take(&mut self) -> Option<Attached> {
        let attached = self.server.take()?;
        self.cancel.set(None);
        Some(attached)
    }

    /// The server connection failed: it is closed, never returned, and the client is told.
    pub fn lose(&mut self) -> SessionEnd {
        let instance = match self.take() {
            // Dropped, never returned: its place in the pool goes back as it closes.
            Some(Attached { instance, .. }) => instance.name.clone(),
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

/// Borrows a connection from `pool` (waiting up to `server.checkout_timeout`; a new one opened with `tls`) and
/// gives it `wanted`'s settings (within `health.timeout`, the deadline of every statement pgsplit runs itself). A
/// setting the server refuses comes back as the server's own error; the connection goes back to the pool untouched.
pub async fn borrow(
    pool: &InstancePool,
    login: &LoginInfo,
    wanted: &Settings,
    tls: &Tls,
    config: &Config,
) -> Result<Box<ServerConn>, SqlError> {
    let mut conn = pool
        .checkout(login, tls, config.server.checkout_timeout)
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
