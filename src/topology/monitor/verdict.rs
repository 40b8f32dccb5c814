//! The monitor's verdict on a follower, pure: may it serve reads, and if not, why — in words that go into `status`
//! and the log. No I/O; everything it judges comes in as arguments.
//!
//! A follower is used only when it is provably a copy of the leader's history, up to date enough:
//! - it belongs to the leader's cluster (same `system_identifier`; a mistyped address can reach another cluster's
//!   standby, whose byte positions mean nothing here);
//! - it receives the timeline the leader writes on (after a changeover, a follower still streaming from the
//!   fenced old leader replays a history that ends there, and its positions past the fork are not the new
//!   leader's);
//! - it is in recovery and within its pool's lag limits.
//!
//! When unsure — the leader's identity or the follower's timeline cannot be read — it is not used: reads go to the
//! leader (fail closed).

use std::time::Duration;

use super::lag::Limits;
use crate::topology::health::Observation;

/// What a follower's WAL receiver says about its upstream (`pg_stat_wal_receiver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Receiver {
    /// No WAL receiver runs (not streaming now: restarting, or fed from an archive). Nothing to compare; its
    /// replay position cannot move past what it has, and the lag limits judge it.
    Absent,
    /// A receiver runs, but its details are hidden: the login lacks `pg_read_all_stats`.
    Hidden,
    /// The timeline of the WAL it last received.
    Timeline(u32),
}

/// What the verdict compares a follower with: the cluster identity and the leader's timeline, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reference {
    /// The leader's `system_identifier`; None until the leader has answered once.
    pub(super) cluster: Option<u64>,
    /// The leader's timeline at its last check; None when there has been no leader reading.
    pub(super) timeline: Option<u32>,
}

/// Why a follower serves no reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unusable {
    OtherCluster { own: u64, leader: u64 },
    ClusterUnknown,
    NotInRecovery,
    OtherTimeline { own: u32, leader: u32 },
    TimelineHidden,
    BytesBehind { behind: u64, max: u64 },
    TimeBehind { behind: Duration, max: Duration },
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::OtherCluster { own, leader } => write!(
                f,
                "another cluster: system identifier {own}, the leader's is {leader} (a wrong address?)"
            ),
            Unusable::ClusterUnknown => {
                write!(f, "its cluster cannot be verified: the leader has not answered yet")
            }
            Unusable::NotInRecovery => write!(f, "not in recovery (promoted outside pgsplit?)"),
            Unusable::OtherTimeline { own, leader } => write!(
                f,
                "receives timeline {own}, the leader writes on timeline {leader} (still following an old leader?)"
            ),
            Unusable::TimelineHidden => write!(
                f,
                "its upstream timeline cannot be read: pgsplit's login needs pg_read_all_stats"
            ),
            Unusable::BytesBehind { behind, max } => write!(f, "{behind} bytes behind (max_lag_bytes {max})"),
            Unusable::TimeBehind { behind, max } => write!(f, "{behind:?} behind (max_lag_seconds {max:?})"),
        }
    }
}

/// Whether a follower that answered its check (`seen`, from the cluster `identity`, its receiver as `receiver`) may
/// take reads.
pub(super) fn verdict(
    seen: &Observation,
    identity: u64,
    receiver: Receiver,
    reference: Reference,
    limits: Limits,
) -> Result<(), Unusable> {
    match reference.cluster {
        None => return Err(Unusable::ClusterUnknown),
        Some(leader) if leader != identity => return Err(Unusable::OtherCluster { own: identity, leader }),
        Some(_) => {}
    }
    if !seen.in_recovery {
        return Err(Unusable::NotInRecovery);
    }
    match (receiver, reference.timeline) {
        (Receiver::Hidden, _) => return Err(Unusable::TimelineHidden),
        (Receiver::Timeline(own), Some(leader)) if own != leader => {
            return Err(Unusable::OtherTimeline { own, leader });
        }
        _ => {}
    }
    if seen.lag_bytes > limits.max_lag_bytes {
        return Err(Unusable::BytesBehind {
            behind: seen.lag_bytes,
            max: limits.max_lag_bytes,
        });
    }
    if seen.lag > limits.max_lag {
        return Err(Unusable::TimeBehind {
            behind: seen.lag,
            max: limits.max_lag,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_lag_bytes: 1000,
        max_lag: Duration::from_secs(5),
    };
    const SAME: Reference = Reference {
        cluster: Some(7),
        timeline: Some(2),
    };

    fn seen(in_recovery: bool, lag_bytes: u64, lag: Duration) -> Observation {
        Observation {
            in_recovery,
            lsn: 0,
            lag_bytes,
            lag,
            lag_commits: 0,
            timeline: 0,
        }
    }

    #[test]
    fn a_caught_up_follower_of_this_cluster_on_the_leaders_timeline_is_used() {
        let ok = seen(true, 10, Duration::from_millis(100));
        assert_eq!(verdict(&ok, 7, Receiver::Timeline(2), SAME, LIMITS), Ok(()));
        assert_eq!(
            verdict(&ok, 7, Receiver::Absent, SAME, LIMITS),
            Ok(()),
            "not streaming now: judged by its lag"
        );
        let no_leader_reading = Reference { timeline: None, ..SAME };
        assert_eq!(
            verdict(&ok, 7, Receiver::Timeline(1), no_leader_reading, LIMITS),
            Ok(())
        );
    }

    #[test]
    fn another_clusters_standby_is_never_used() {
        let ok = seen(true, 0, Duration::ZERO);
        let verdict = verdict(&ok, 8, Receiver::Timeline(2), SAME, LIMITS).unwrap_err();
        assert_eq!(verdict, Unusable::OtherCluster { own: 8, leader: 7 });
        assert!(
            verdict.to_string().starts_with("another cluster: system identifier 8"),
            "{verdict}"
        );
        let unknown = Reference { cluster: None, ..SAME };
        assert_eq!(
            super::verdict(&ok, 7, Receiver::Timeline(2), unknown, LIMITS),
            Err(Unusable::ClusterUnknown)
        );
    }

    #[test]
    fn a_follower_on_another_timeline_or_hiding_it_is_not_used() {
        let ok = seen(true, 0, Duration::ZERO);
        assert_eq!(
            verdict(&ok, 7, Receiver::Timeline(1), SAME, LIMITS),
            Err(Unusable::OtherTimeline { own: 1, leader: 2 })
        );
        assert_eq!(
            verdict(&ok, 7, Receiver::Hidden, SAME, LIMITS),
            Err(Unusable::TimelineHidden)
        );
    }

    #[test]
    fn lag_limits_and_role_still_apply() {
        let far = seen(true, 1001, Duration::ZERO);
        assert_eq!(
            verdict(&far, 7, Receiver::Timeline(2), SAME, LIMITS),
            Err(Unusable::BytesBehind {
                behind: 1001,
                max: 1000
            })
        );
        let late = seen(true, 0, Duration::from_secs(6));
        assert!(matches!(
            verdict(&late, 7, Receiver::Timeline(2), SAME, LIMITS),
            Err(Unusable::TimeBehind { .. })
        ));
        let promoted = seen(false, 0, Duration::ZERO);
        assert_eq!(
            verdict(&promoted, 7, Receiver::Absent, SAME, LIMITS),
            Err(Unusable::NotInRecovery)
        );
    }
}
