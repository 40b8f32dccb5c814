//! Counters read by status and metrics, one atomic add each on the adding worker's own cache line
//! ([`PerWorker`]), summed when read: per instance, routed units by reason; per follower pool, where reads with a
//! read-your-writes floor were served.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::RouteReason;
use crate::runtime::PerWorker;

#[derive(Default)]
pub struct RouteCounters {
    counts: PerWorker<ReasonCounts>,
}

struct ReasonCounts([AtomicU64; RouteReason::COUNT]);

impl Default for ReasonCounts {
    fn default() -> Self {
        ReasonCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RouteCounters {
    pub fn count(&self, reason: RouteReason) {
        self.counts.local().0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Reasons with a non-zero count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RouteReason::all()
            .map(|reason| {
                let sum = self
                    .counts
                    .iter()
                    .map(|c| c.0[reason.index()].load(Ordering::Relaxed))
                    .sum();
                (reason.as_str(), sum)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Where a follower pool's reads that had a read-your-writes floor were served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreshnessCounts {
    /// On a follower already known (from the monitor, or a session that asked) to have replayed the floor.
    pub caught_up: u64,
    /// On a follower that pgsplit asked, possibly waiting for it, before the read ran there.
    pub confirmed: u64,
    /// On the leader: no follower replayed the floor within `routing.read_your_writes_wait`.
    pub on_leader: u64,
}

/// Where a read with a floor was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    CaughtUp,
    Confirmed,
    OnLeader,
}

/// A pool's [`FreshnessCounts`], one atomic add per read with a floor.
#[derive(Default)]
pub struct FreshnessCounters {
    per_worker: PerWorker<ServedCounts>,
}

#[derive(Default)]
struct ServedCounts {
    caught_up: AtomicU64,
    confirmed: AtomicU64,
    on_leader: AtomicU64,
}

impl FreshnessCounters {
    pub fn count(&self, served: Served) {
        let local = self.per_worker.local();
        let counter = match served {
            Served::CaughtUp => &local.caught_up,
            Served::Confirmed => &local.confirmed,
            Served::OnLeader => &local.on_leader,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> FreshnessCounts {
        let sum = |counter: fn(&ServedCounts) -> &AtomicU64| {
            self.per_worker.iter().map(|c| counter(c).load(Ordering::Relaxed)).sum()
        };
        FreshnessCounts {
            caught_up: sum(|c| &c.caught_up),
            confirmed: sum(|c| &c.confirmed),
            on_leader: sum(|c| &c.on_leader),
        }
    }
}
