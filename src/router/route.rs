//! Which instance serves a unit of work (an autocommit statement, an extended-protocol batch, or a whole
//! transaction), from what the session asks for and a topology snapshot. Pure: no I/O, no waiting.
//!
//! Reads go to the read pool's usable followers — healthy, verified in recovery, within the pool's lag limits —
//! balanced by least outstanding work per unit of weight over two weighted random picks ("power of two
//! choices"). A follower that just became usable ramps from a tenth of its weight to all of it over
//! [`SLOW_START`], so a returning replica is not flooded. No usable follower: the leader, or 57P03 with
//! `fallback = "error"`.

use std::sync::Arc;
use std::time::Duration;

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
        }
    }

    /// Every reason a unit can be routed for.
    pub fn all() -> impl Iterator<Item = RouteReason> {
        const WRITES: [Reason; 15] = [
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
        ];
        WRITES.into_iter().map(RouteReason::Write).chain([
            RouteReason::Read,
            RouteReason::ReadOnlyTransaction,
            RouteReason::Pinned,
            RouteReason::NoReadPool,
            RouteReason::Fallback,
            RouteReason::Retry25006,
            RouteReason::KnownWrite,
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

pub struct Decision {
    pub instance: Arc<Instance>,
    pub reason: RouteReason,
}

/// Picks the instance. `pool` is the follower pool reads may use (the read pool on the main endpoint).
pub fn route(
    topology: &Topology,
    pool: Option<&FollowerPool>,
    wants: Wants,
    fallback: Fallback,
) -> Result<Decision, SqlError> {
    let reason = match wants {
        Wants::Leader(reason) => {
            return Ok(Decision {
                instance: topology.leader.clone(),
                reason,
            });
        }
        Wants::Follower(reason) => reason,
    };
    let Some(pool) = pool else {
        return Ok(Decision {
            instance: topology.leader.clone(),
            reason: RouteReason::NoReadPool,
        });
    };
    if let Some(instance) = pick_follower(pool) {
        return Ok(Decision { instance, reason });
    }
    match fallback {
        Fallback::Leader => Ok(Decision {
            instance: topology.leader.clone(),
            reason: RouteReason::Fallback,
        }),
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

/// Power of two choices over weighted random picks; the less loaded per unit of weight wins.
fn pick_follower(pool: &FollowerPool) -> Option<Arc<Instance>> {
    let mut candidates: [(usize, f64); 13] = [(0, 0.0); 13];
    let mut count = 0;
    let mut total = 0.0;
    for (i, instance) in pool.instances.iter().enumerate().take(candidates.len()) {
        if let Some(weight) = effective_weight(instance) {
            candidates[count] = (i, weight);
            count += 1;
            total += weight;
        }
    }
    let candidates = &candidates[..count];
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
    let winner = if load(b, wb) < load(a, wa) { b } else { a };
    Some(pool.instances[winner].clone())
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
        )
        .unwrap()
    }

    fn make_usable(instance: &Instance) {
        let seen = Observation {
            in_recovery: true,
            lsn: 0,
            lag_bytes: 0,
            lag: Duration::ZERO,
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
        )
        .unwrap();
        assert_eq!(&*write.instance.name, "leader");
        let read = route(&t, pool, Wants::Follower(RouteReason::Read), Fallback::Leader).unwrap();
        assert_eq!((&*read.instance.name, read.reason), ("leader", RouteReason::Fallback));
        let err = route(&t, pool, Wants::Follower(RouteReason::Read), Fallback::Error)
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
}
