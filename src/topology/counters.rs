//! Per-instance counts of routed units by reason: one atomic add per unit, read by status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::RouteReason;

pub struct RouteCounters {
    counts: [AtomicU64; RouteReason::COUNT],
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RouteCounters {
    pub fn count(&self, reason: RouteReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Reasons with a non-zero count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RouteReason::all()
            .map(|reason| (reason.as_str(), self.counts[reason.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
