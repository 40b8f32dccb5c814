//! Which instance serves a unit of work (an autocommit statement, an extended-protocol batch, or a whole
//! transaction), from what the session asks for and a topology snapshot. Pure: no I/O, no waiting.
//!
//! Reads go to the read pool's usable followers — healthy, verified in recovery, within the pool's lag limits —
//! balanced by least outstanding work per unit of weight over two weighted random picks ("power of two
//! choices"). A follower that just became usable ramps from a tenth of its weight to all of it over
//! [`SLOW_START`], so a returning replica is not flooded. No usable follower: the leader, or 57P03 with
//! `fallback = "error"`.
//!
//! A read with a read-your-writes floor (the WAL position of the client's last write) goes only to a follower that
//! has replayed it: one known to have (its last known replay position is past the floor), or else one expected to
//! by the read's deadline (the floor's age plus the follower's time lag — measured by the monitor, or learned from
//! recent reads that waited for it), which the session must confirm by asking it. With neither, the read goes to the leader — whatever `fallback` says, since the followers are
//! usable, only behind this client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::statement::Reason;
use crate::config::Fallback;
use crate::protocol::error::{Severity, SqlError, code};
use crate::topology::{FollowerPool, Instance, Topology};

/// How long a follower that became usable takes to reach its full share of reads.
pub const SLOW_START: Duration = Duration::from_secs(5);

/// Why a unit went where it went: shown by `SHOW pgsplit.route`, counted per instance, logged at debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteReason {
    /// Not provably read-only (the classifier's reason says why).
    Write(Reason),
    /// A provable read.
    Read,
    /// BEGIN READ ONLY, or a read-only session's transaction.
    ReadOnlyTransaction,
    /// The session holds state only its leader connection has (LISTEN, temp tables, session locks, …).
    Pinned,
    /// A read, but no follower pool serves this endpoint.
    NoReadPool,
    /// A read, but no follower is usable (down, lagging, or not verified as a follower yet).
    Fallback,
    /// A follower refused it as a write (25006); run again on the leader.
    Retry25006,
    /// This statement's shape once drew 25006 from a follower: a write the classifier could not see.
    KnownWrite,
    /// A read, but no follower had replayed the client's last write in time.
    ReadYourWrites,
}

impl RouteReason {
    /// Slots needed to count every reason: the classifier's reasons first, then the router's own.
    pub const COUNT: usize = 24;

    /// A dense index below [`RouteReason::COUNT`], for counters.
    pub fn index(self) -> usize {
        match self {
            RouteReason::Write(reason) => reason as usize,
            RouteReason::Read => 16,
            RouteReason::ReadOnlyTransaction => 17,
            RouteReason::Pinned => 18,
            RouteReason::NoReadPool => 19,
            RouteReason::Fallback => 20,
            RouteReason::Retry25006 => 21,
            RouteReason::KnownWrite => 22,
            RouteReason::ReadYourWrites => 23,
        }
    }

    /// Every reason a unit can be routed for.
    pub fn all() -> impl Iterator<Item = RouteReason> {
        const WRITES: [Reason; 16] = [
            Reason::Read,
            Reason::Session,
            Reason::Transaction,
            Reason::ReadOnlyTransaction,
            Reason::Serializable,
            Reason::Write,
            Reason::CteWrite,
            Reason::Locking,
            Reason::SelectInto,
            Reason::Function,
            Reason::ExplainAnalyze,
            Reason::Execute,
            Reason::Pin,
            Reason::Empty,
            Reason::Unparsable,
            Reason::LeaderOnly,
        ];
        WRITES.into_iter().map(RouteReason::Write).chain([
            RouteReason::Read,
            RouteReason::ReadOnlyTransaction,
            RouteReason::Pinned,
            RouteReason::NoReadPool,
            RouteReason::Fallback,
            RouteReason::Retry25006,
            RouteReason::KnownWrite,
            RouteReason::ReadYourWrites,
        ])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Write(reason) => reason.as_str(),
            RouteReason::Read => "read",
            RouteReason::ReadOnlyTransaction => "read_only_transaction",
            RouteReason::Pinned => "pinned",
            RouteReason::NoReadPool => "no_read_pool",
            RouteReason::Fallback => "fallback",
            RouteReason::Retry25006 => "retry_25006",
            RouteReason::KnownWrite => "known_write",
            RouteReason::ReadYourWrites => "read_your_writes",
        }
    }
}

/// What the session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Leader(RouteReason),
    /// Any usable follower of the read pool (or of `pool`, for a pool's own endpoint).
    Follower(RouteReason),
}

/// What a read must see: the client's read-your-writes floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// The WAL position: a follower must have replayed at least this far.
    pub lsn: u64,
    /// When the client's floor was set: a follower lagging `L` behind the leader should replay it by `since + L`.
    pub since: Instant,
    /// The read may wait until then for a follower to replay it.
    pub deadline: Instant,
}

pub struct Decision {
    pub instance: Arc<Instance>,
    pub reason: RouteReason,
    /// A read with a floor, on a follower not yet seen past it but expected to be at this instant: the session
    /// must confirm (ask the follower, by the floor's deadline) before the read runs there, else read on the leader.
    pub confirm: Option<Instant>,
}

impl Decision {
    fn on(instance: &Arc<Instance>, reason: RouteReason) -> Decision {
        Decision {
            instance: instance.clone(),
            reason,
            confirm: None,
        }
    }
}

/// Picks the instance. `pool` is the follower pool reads may use (the read pool on the main endpoint); `floor`
/// is the read's read-your-writes floor, if it has one.
pub fn route(
    topology: &Topology,
    pool: Option<&FollowerPool>,
    wants: Wants,
    fallback: Fallback,
    floor: Option<&Floor>,
) -> Result<Decision, SqlError> {
    let reason = match wants {
        Wants::Leader(reason) => return Ok(Decision::on(&topology.leader, reason)),
        Wants::Follower(reason) => reason,
    };
    let Some(pool) = pool else {
        return Ok(Decision::on(&topology.leader, RouteReason::NoReadPool));
    };
    match pick_follower(pool, floor) {
        Pick::Follower(instance, confirm) => {
            return Ok(Decision {
                instance,
                reason,
                confirm,
            });
        }
        Pick::Behind => return Ok(Decision::on(&topology.leader, RouteReason::ReadYourWrites)),
        Pick::Nothing => {}
    }
    match fallback {
        Fallback::Leader => Ok(Decision::on(&topology.leader, RouteReason::Fallback)),
        Fallback::Error => Err(SqlError::new(
            Severity::Error,
            code::CANNOT_CONNECT_NOW,
            format!(
                "no follower of pool \"{}\" is usable (down, lagging, or not verified yet)",
                pool.name
            ),
        )
        .with_hint("Retry later, or set routing.fallback = \"leader\".")),
    }
}

/// A usable follower's weight after slow start, or None if it is not usable.
fn effective_weight(instance: &Instance) -> Option<f64> {
    let health = instance.health.snapshot();
    if !health.up || !health.in_recovery {
        return None;
    }
    let usable_for = instance.health.usable_for()?;
    let ramp = (usable_for.as_secs_f64() / SLOW_START.as_secs_f64()).clamp(0.1, 1.0);
    Some(f64::from(instance.weight().max(1)) * ramp)
}

/// What the pool offers a read.
enum Pick {
    /// This follower, confirmed by the session first if an instant is given (see [`Decision::confirm`]).
    Follower(Arc<Instance>, Option<Instant>),
    /// Usable followers, but none has replayed the floor, nor is expected to by its deadline.
    Behind,
    /// No usable follower.
    Nothing,
}

/// Most followers a pool can have (SPEC §2: 13 follower instances in all).
const MAX_FOLLOWERS: usize = 13;

/// Balances over the usable followers — with a floor, over those past it, else over those expected past it by its
/// deadline (each with the instant it is expected there).
fn pick_follower(pool: &FollowerPool, floor: Option<&Floor>) -> Pick {
    let mut caught = Candidates::default();
    let mut expected = Candidates::default();
    let mut expected_at = [None; MAX_FOLLOWERS];
    let mut any_usable = false;
    for (i, instance) in pool.instances.iter().enumerate().take(MAX_FOLLOWERS) {
        let Some(weight) = effective_weight(instance) else {
            continue;
        };
        any_usable = true;
        let Some(floor) = floor else {
            caught.push(i, weight);
            continue;
        };
        let health = instance.health.snapshot();
        // Replay lags the leader by the monitor's measure, or by how long recent writes took to show there.
        let lag = health.lag.max(instance.health.catch_up().unwrap_or_default());
        if health.lsn >= floor.lsn {
            caught.push(i, weight);
        } else if floor.since + lag <= floor.deadline {
            expected_at[i] = Some(floor.since + lag);
            expected.push(i, weight);
        }
    }
    if let Some(i) = balance(pool, caught.as_slice()) {
        return Pick::Follower(pool.instances[i].clone(), None);
    }
    if let Some(i) = balance(pool, expected.as_slice()) {
        return Pick::Follower(pool.instances[i].clone(), expected_at[i]);
    }
    if any_usable { Pick::Behind } else { Pick::Nothing }
}

/// Followers (index into the pool, effective weight) a read may go to.
#[derive(Default)]
struct Candidates {
    list: [(usize, f64); MAX_FOLLOWERS],
    count: usize,
    total: f64,
}

impl Candidates {
    fn push(&mut self, i: usize, weight: f64) {
        self.list[self.count] = (i, weight);
        self.count += 1;
        self.total += weight;
    }

    fn as_slice(&self) -> (&[(usize, f64)], f64) {
        (&self.list[..self.count], self.total)
    }
}

/// Power of two choices over weighted random picks; the less loaded per unit of weight wins.
fn balance(pool: &FollowerPool, (candidates, total): (&[(usize, f64)], f64)) -> Option<usize> {
    let mut rng = rand::rng();
    let mut draw = || {
        let mut point = rng.random::<f64>() * total;
        for &(i, weight) in candidates {
            if point < weight {
                return Some((i, weight));
            }
            point -= weight;
        }
        candidates.last().copied()
    };
    let (a, wa) = draw()?;
    let (b, wb) = draw()?;
    // Outstanding work per unit of weight; on a tie the first (weighted) draw wins, so idle instances share reads
    // exactly by weight and busy ones by spare capacity.
    let load = |i: usize, w: f64| f64::from(pool.instances[i].outstanding()) / w;
    Some(if load(b, wb) < load(a, wa) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::topology::health::Observation;

    fn topology(weights: &[u32]) -> Topology {
        let mut text = String::from(
            "[[users]]\nname = \"app\"\npassword = \"app\"\n[leader]\nhost = \"127.0.0.1\"\nport = 5432\n\
             [[follower_pools]]\nname = \"default\"\ninstances = [\n",
        );
        for (i, w) in weights.iter().enumerate() {
            text.push_str(&format!(
                "{{ name = \"f{i}\", host = \"127.0.0.1\", port = {}, weight = {w} }},\n",
                6000 + i
            ));
        }
        text.push_str("]\n");
        Topology::from_config(&Config::parse(&text, "t.toml").unwrap())
    }

    /// Routes a read on the main pool with fallback to the leader.
    fn read_on(t: &Topology) -> Decision {
        route(
            t,
            Some(&t.pools[0]),
            Wants::Follower(RouteReason::Read),
            Fallback::Leader,
            None,
        )
        .unwrap()
    }

    fn make_usable(instance: &Instance) {
        replaying(instance, 0, Duration::ZERO);
    }

    /// A usable follower at replay position `lsn`, lagging `lag` behind the leader.
    fn replaying(instance: &Instance, lsn: u64, lag: Duration) {
        let seen = Observation {
            in_recovery: true,
            lsn,
            lag_bytes: 0,
            lag,
            lag_commits: 0,
            timeline: 0,
        };
        instance.health.observe(seen);
        instance.health.set_usable(true);
    }

    #[test]
    fn every_reason_has_its_own_counter_slot() {
        let mut seen = [false; RouteReason::COUNT];
        for reason in RouteReason::all() {
            assert!(
                !std::mem::replace(&mut seen[reason.index()], true),
                "{reason:?} shares a slot"
            );
        }
    }

    #[test]
    fn writes_go_to_the_leader_and_reads_without_usable_followers_fall_back() {
        let t = topology(&[1, 1]);
        let pool = Some(&*t.pools[0]);
        let write = route(
            &t,
            pool,
            Wants::Leader(RouteReason::Write(Reason::Write)),
            Fallback::Leader,
            None,
        )
        .unwrap();
        assert_eq!(&*write.instance.name, "leader");
        let read = route(&t, pool, Wants::Follower(RouteReason::Read), Fallback::Leader, None).unwrap();
        assert_eq!((&*read.instance.name, read.reason), ("leader", RouteReason::Fallback));
        let err = route(&t, pool, Wants::Follower(RouteReason::Read), Fallback::Error, None)
            .err()
            .unwrap();
        assert_eq!(err.code, "57P03");
    }

    #[test]
    fn a_follower_answering_as_primary_is_never_used() {
        let t = topology(&[1]);
        let f = &t.pools[0].instances[0];
        f.health.observe(Observation {
            in_recovery: false,
            lsn: 0,
            lag_bytes: 0,
            lag: Duration::ZERO,
            lag_commits: 0,
            timeline: 0,
        });
        f.health.set_usable(true);
        let read = read_on(&t);
        assert_eq!(&*read.instance.name, "leader");
    }

    #[test]
    fn a_down_follower_gets_nothing() {
        let t = topology(&[1, 1]);
        make_usable(&t.pools[0].instances[0]);
        make_usable(&t.pools[0].instances[1]);
        t.pools[0].instances[1].health.mark_down();
        for _ in 0..100 {
            let d = read_on(&t);
            assert_eq!(&*d.instance.name, "f0");
        }
    }

    #[test]
    fn least_outstanding_wins_when_both_are_drawn() {
        let t = topology(&[1, 1]);
        make_usable(&t.pools[0].instances[0]);
        make_usable(&t.pools[0].instances[1]);
        let _busy: Vec<_> = (0..50).map(|_| t.pools[0].instances[0].begin_work(false)).collect();
        let to_idle = (0..1000)
            .filter(|_| {
                let d = read_on(&t);
                &*d.instance.name == "f1"
            })
            .count();
        // f0 wins only when both draws pick it: about a quarter of the time.
        assert!(to_idle > 650, "{to_idle}");
    }

    /// Routes a read with a floor at `lsn`, set `age` ago, that may wait `wait` (fallback: error).
    fn try_read_after_write(t: &Topology, lsn: u64, age: Duration, wait: Duration) -> Result<Decision, SqlError> {
        let now = Instant::now();
        let floor = Floor {
            lsn,
            since: now - age,
            deadline: now + wait,
        };
        let pool = Some(&*t.pools[0]);
        route(
            t,
            pool,
            Wants::Follower(RouteReason::Read),
            Fallback::Error,
            Some(&floor),
        )
    }

    fn read_after_write(t: &Topology, lsn: u64, age: Duration, wait: Duration) -> Decision {
        try_read_after_write(t, lsn, age, wait).unwrap_or_else(|e| panic!("not routed: {}", e.code))
    }

    #[test]
    fn a_read_after_a_write_goes_only_to_followers_known_past_it() {
        let t = topology(&[1, 1]);
        replaying(&t.pools[0].instances[0], 100, Duration::ZERO);
        replaying(&t.pools[0].instances[1], 200, Duration::ZERO);
        for _ in 0..100 {
            let d = read_after_write(&t, 150, Duration::ZERO, Duration::from_millis(50));
            assert_eq!(
                (&*d.instance.name, d.reason, d.confirm),
                ("f1", RouteReason::Read, None)
            );
        }
    }

    #[test]
    fn a_follower_expected_past_the_floor_in_time_is_chosen_to_be_confirmed() {
        let t = topology(&[1, 1]);
        replaying(&t.pools[0].instances[0], 100, Duration::from_millis(10));
        replaying(&t.pools[0].instances[1], 100, Duration::from_millis(500));
        let d = read_after_write(&t, 150, Duration::ZERO, Duration::from_millis(50));
        assert_eq!(&*d.instance.name, "f0");
        assert!(d.confirm.is_some(), "f0 has not been seen past the floor");
    }

    #[test]
    fn a_floor_no_follower_reaches_in_time_reads_on_the_leader_even_with_fallback_error() {
        let t = topology(&[1, 1]);
        replaying(&t.pools[0].instances[0], 100, Duration::from_millis(500));
        replaying(&t.pools[0].instances[1], 100, Duration::from_millis(500));
        let d = read_after_write(&t, 150, Duration::ZERO, Duration::from_millis(50));
        assert_eq!((&*d.instance.name, d.reason), ("leader", RouteReason::ReadYourWrites));
        // Written long enough ago that even the lagging followers should have it: they are asked.
        let d = read_after_write(&t, 150, Duration::from_secs(1), Duration::from_millis(50));
        assert!(
            d.instance.name.starts_with('f') && d.confirm.is_some(),
            "{}",
            d.instance.name
        );
    }

    #[test]
    fn a_follower_recently_slow_to_show_writes_is_not_waited_for() {
        let t = topology(&[1]);
        replaying(&t.pools[0].instances[0], 100, Duration::ZERO);
        t.pools[0].instances[0]
            .health
            .caught_up_after(Duration::from_millis(400));
        let d = read_after_write(&t, 150, Duration::ZERO, Duration::from_millis(50));
        assert_eq!(d.reason, RouteReason::ReadYourWrites);
    }

    #[test]
    fn with_no_usable_follower_a_floor_changes_nothing() {
        let t = topology(&[1]);
        let err = try_read_after_write(&t, 1, Duration::ZERO, Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(err.code, "57P03");
    }
}
