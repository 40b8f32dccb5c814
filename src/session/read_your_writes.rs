//! Read-your-writes for one session (SPEC §3.4): learning the WAL position of each write the client commits, and
//! holding its later reads to followers that have replayed it.
//!
//! After a unit that may write ran on the leader, once the connection is idle — the client already has its
//! ReadyForQuery, so it waits for nothing — pgsplit sends its own query there ([`PROBE_SQL`]) and raises the
//! client's floor with the answer before the connection goes back to the pool. A read then goes where the router
//! says; a follower the router could only expect to have caught up is asked ([`REPLAY_SQL`]), with short pauses,
//! until it has — or the wait runs out, and the read runs on the leader. What is learned from a follower (its
//! replay position, how long it took) is kept in its health, so the next read need not ask, or asks at the right
//! time.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::floor::{PROBE_SQL, REPLAY_SQL, ReadFloor};
use super::relay::{Relay, SessionEnd};
use super::server::Attached;
use crate::config::PoolMode;
use crate::context::Endpoint;
use crate::protocol::messages;
use crate::router::Floor;
use crate::topology::monitor::parse_lsn;

/// The first pause between two questions to a follower that has not caught up yet; it doubles up to the cap.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const MAX_PAUSE: Duration = Duration::from_millis(8);
/// The shortest time one replay question may take, even when the wait is all but over: a round trip on a busy
/// machine.
const MIN_ASK: Duration = Duration::from_millis(5);

/// The commit-position probe of one session: owed after a unit that may write ran on the leader, and what its
/// answer has read so far.
#[derive(Debug, Default)]
pub struct Probe {
    owed: bool,
    reading: Option<u64>,
}

impl Probe {
    /// A unit that may write is running on the leader connection: its commit's position is to be read.
    pub fn owe(&mut self) {
        self.owed = true;
    }

    /// What was owed lapses (the connection goes back to the pool, or probes are not sent in this mode).
    pub fn lapse(&mut self) {
        self.owed = false;
    }

    pub fn is_owed(&self) -> bool {
        self.owed
    }

    /// The probe is sent: what was owed is being read.
    fn start(&mut self) {
        self.owed = false;
        self.reading = None;
    }

    /// A row of the probe's answer: the position, if it reads as one.
    pub fn row(&mut self, body: &[u8]) {
        self.reading = messages::first_column(body).and_then(parse_lsn);
    }

    /// The probe's answer ended (ReadyForQuery, `idle` unless a transaction is open): the floor rises to what it
    /// read, or is unknown.
    pub fn ended(&mut self, idle: bool, floor: &mut ReadFloor) {
        match self.reading.take() {
            Some(lsn) if idle => floor.committed(lsn),
            _ => floor.commit_unknown(),
        }
    }
}

impl Relay {
    /// Sends the probe if a unit that may write has ended on the leader connection and nothing of the client's
    /// is in flight (a probe among the client's messages could land inside a COPY).
    pub(super) fn probe_if_due(&mut self) {
        let due = self.probe.is_owed()
            && !self.terminating
            && self.attachment.pool_mode() == PoolMode::Transaction
            && matches!(self.attachment.endpoint(), Endpoint::Main)
            && !self.attachment.on_follower()
            && self.exchange.settled()
            && self.to_server.is_empty()
            && self.client_framer.at_boundary()
            && self.probe_useful();
        if !due || !self.attachment.is_attached() {
            return;
        }
        self.probe.start();
        messages::query(self.to_server.insert(&mut self.client_buf), PROBE_SQL.as_bytes());
        self.exchange.expect_probe();
    }

    /// Read-your-writes is on and reads may go to followers at all: without a read pool there is nothing to hold
    /// reads back from, so no position is read.
    fn probe_useful(&self) -> bool {
        let topology = self.ctx.topology.load();
        topology.config.routing.read_your_writes && topology.read_pool.is_some()
    }

    /// The server connection failed. The session ends — unless all the server still owed was the probe: the
    /// client has every answer it asked for, so the connection is dropped, the commit's position is marked
    /// unknown (reads go to the leader until it is known), and the session goes on. Under an HA engine the same
    /// holds for a connection that owed nothing at all, outside a transaction (its server ended the session just
    /// after answering: `cut`).
    pub(super) async fn server_lost(&mut self) -> Result<(), SessionEnd> {
        if self.retry.cut() {
            // A unit the leader never answered: it runs again (see `retry`).
            return self.rerun_cut();
        }
        if self.cuttable() {
            // Inside the client's transaction: it gets an error and its session goes on (see `cut`).
            // Boxed: rare, and its state would otherwise weigh on every session's task.
            return Box::pin(self.cut_transaction()).await;
        }
        let probe = self.exchange.only_probe();
        let answered = self.exchange.nothing_owed() && self.attachment.server_at_boundary() && self.may_cut();
        if !(probe || answered) || !self.to_server.is_empty() || !self.client_framer.at_boundary() {
            return Err(self.attachment.lose());
        }
        let Some(Attached { mut conn, instance, .. }) = self.attachment.take() else {
            return Err(self.attachment.lose());
        };
        let owed: BytesMut = self.to_client.take(&mut conn.buf);
        drop(conn);
        self.exchange.forget_probe();
        if probe {
            self.floor.commit_unknown();
        }
        tracing::info!(
            instance = %instance.name,
            "server connection lost after the client's commit was answered; the session goes on"
        );
        self.client.write_all(&owed).await.map_err(SessionEnd::ClientIo)
    }
}

/// Asks the attached follower how far it has replayed — first when it is `expected` to be past `floor`, then after
/// growing pauses — until it is past the floor (true) or the floor's deadline passes (false). A follower answering
/// NULL has left recovery: false. None: the connection failed the question and must be dropped.
pub(super) async fn confirm_replayed(attached: &mut Attached, floor: &Floor, expected: Instant) -> Option<bool> {
    let forecast = expected.min(floor.deadline);
    if forecast > Instant::now() {
        crate::runtime::sleep_until(forecast).await;
    }
    let mut pause = FIRST_PAUSE;
    let mut first_ask = true;
    loop {
        // Asked within what is left of the wait: a follower that stalls must not hold the read longer.
        let left = floor.deadline.saturating_duration_since(Instant::now()).max(MIN_ASK);
        match attached.conn.query_own(REPLAY_SQL, left).await {
            Ok(value) => {
                let Some(lsn) = value.as_deref().and_then(parse_lsn) else {
                    return Some(false);
                };
                let health = &attached.instance.health;
                health.replayed_at_least(lsn);
                if lsn >= floor.lsn {
                    if first_ask {
                        health.caught_up_by_forecast();
                    } else {
                        health.caught_up_after(floor.since.elapsed());
                    }
                    return Some(true);
                }
            }
            Err(error) => {
                tracing::debug!(instance = %attached.instance.name, %error, "asking a follower its replay position");
                return None;
            }
        }
        let now = Instant::now();
        if now >= floor.deadline {
            attached.instance.health.caught_up_after(now - floor.since);
            return Some(false);
        }
        crate::runtime::sleep(pause.min(floor.deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
        first_ask = false;
    }
}
