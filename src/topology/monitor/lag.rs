//! The monitor's arithmetic, pure: WAL positions as text, the leader's recent WAL history, a follower's lag behind
//! the leader in bytes, seconds and commits (`verdict` judges them). No I/O, no clock reads:
//! every instant comes in as an argument.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::verdict::Receiver;
use crate::topology::health::Observation;

/// How far back the leader's WAL history reaches; a follower further behind reports at least this much lag.
const HISTORY_WINDOW: Duration = Duration::from_secs(120);
/// Cap on history samples (one per distinct leader LSN), however short the interval.
const HISTORY_SAMPLES: usize = 1024;

/// What one check read from an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reading {
    /// When the answer arrived.
    pub(super) at: Instant,
    pub(super) in_recovery: bool,
    /// Replay LSN in recovery, current WAL LSN otherwise.
    pub(super) lsn: u64,
    /// `pg_snapshot_xmax(pg_current_snapshot())`.
    pub(super) xmax: u64,
    /// The timeline a primary writes on; 0 in recovery (not read there).
    pub(super) timeline: u32,
    /// What its WAL receiver says (a primary has none).
    pub(super) receiver: Receiver,
}

/// A follower pool's lag limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) max_lag_bytes: u64,
    pub(super) max_lag: Duration,
}

/// Parses a `pg_lsn` in its text form, `X/Y` (two hex numbers of up to 32 bits each), into a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let hex = |part: &str| {
        let ok = !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| u32::from_str_radix(part, 16).ok()).flatten()
    };
    Some((u64::from(hex(high)?) << 32) | u64::from(hex(low)?))
}

/// A byte position as PostgreSQL prints a `pg_lsn`: `16/B374D848`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The leader's latest reading and, to turn a follower's byte lag into time, when the leader first reached each
/// WAL position recently: `(when first seen, lsn)`, oldest first, LSNs increasing.
#[derive(Debug, Default)]
pub(super) struct LeaderHistory {
    latest: Option<Reading>,
    samples: VecDeque<(Instant, u64)>,
}

impl LeaderHistory {
    pub(super) fn record(&mut self, reading: Reading) {
        self.latest = Some(reading);
        if self.samples.back().is_some_and(|&(_, lsn)| lsn >= reading.lsn) {
            if self.samples.back().is_some_and(|&(_, lsn)| lsn == reading.lsn) {
                return; // an idle leader: keep when it first got here
            }
            self.samples.clear(); // went backwards: not the history we were keeping
        }
        self.samples.push_back((reading.at, reading.lsn));
        // The newest sample always stays: on an idle leader it says since when the leader has been where it is.
        while self.samples.len() > HISTORY_SAMPLES
            || (self.samples.len() > 1
                && self
                    .samples
                    .front()
                    .is_some_and(|&(t, _)| reading.at.saturating_duration_since(t) > HISTORY_WINDOW))
        {
            self.samples.pop_front();
        }
    }

    /// The timeline the leader wrote on at its latest reading, if there was one.
    pub(super) fn timeline(&self) -> Option<u32> {
        self.latest.map(|r| r.timeline)
    }

    /// How long, as of `at`, the leader has been past `lsn`: from the first sample beyond it. Zero when no sample
    /// is beyond it (caught up); at most the history's reach when every sample is.
    pub(super) fn lag_behind(&self, lsn: u64, at: Instant) -> Duration {
        let past_since = self
            .samples
            .iter()
            .rev()
            .take_while(|&&(_, leader)| leader > lsn)
            .last()
            .map(|&(t, _)| t);
        past_since.map_or(Duration::ZERO, |t| at.saturating_duration_since(t))
    }
}

/// A follower's reading compared with the leader's latest. With no leader reading yet there is nothing to be behind
/// of: lag counts as zero (the lag limits then do not keep reads off followers while the leader is unreachable).
pub(super) fn follower_observation(reading: &Reading, leader: &LeaderHistory) -> Observation {
    let (lag_bytes, lag_commits) = leader.latest.map_or((0, 0), |l| {
        (l.lsn.saturating_sub(reading.lsn), l.xmax.saturating_sub(reading.xmax))
    });
    Observation {
        in_recovery: reading.in_recovery,
        lsn: reading.lsn,
        lag_bytes,
        lag: leader.lag_behind(reading.lsn, reading.at),
        lag_commits,
        timeline: reading.timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn reading(at: Instant, lsn: u64, xmax: u64, in_recovery: bool) -> Reading {
        Reading {
            at,
            in_recovery,
            lsn,
            xmax,
            timeline: 0,
            receiver: Receiver::Absent,
        }
    }

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/3015FF0"), Some(0x3015FF0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("ffffffff/ffffffff"), Some(u64::MAX));
        for lsn in [0, 1, 0x3015FF0, (0x16 << 32) | 0xB374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(format_lsn((0x16 << 32) | 0xB374_D848), "16/B374D848");
    }

    #[test]
    fn malformed_lsn_is_rejected() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "1/2/3",
            "g/0",
            "+1/0",
            "100000000/0",
            "0/-1",
            "0 /1",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn caught_up_follower_has_no_lag() {
        let t0 = Instant::now();
        let mut leader = LeaderHistory::default();
        leader.record(reading(t0, 100, 10, false));
        leader.record(reading(t0 + 250 * MS, 200, 12, false));
        let seen = follower_observation(&reading(t0 + 260 * MS, 200, 12, true), &leader);
        assert_eq!((seen.lag_bytes, seen.lag, seen.lag_commits), (0, Duration::ZERO, 0));
        // A follower that read after the leader moved on is compared with the leader's latest reading only.
        let ahead = follower_observation(&reading(t0 + 260 * MS, 300, 14, true), &leader);
        assert_eq!((ahead.lag_bytes, ahead.lag, ahead.lag_commits), (0, Duration::ZERO, 0));
    }

    #[test]
    fn lag_seconds_count_from_when_the_leader_first_passed_the_follower() {
        let t0 = Instant::now();
        let mut leader = LeaderHistory::default();
        leader.record(reading(t0, 100, 10, false));
        leader.record(reading(t0 + 1000 * MS, 200, 11, false));
        leader.record(reading(t0 + 2000 * MS, 300, 13, false));
        leader.record(reading(t0 + 3000 * MS, 300, 13, false));
        let at = t0 + 3500 * MS;
        // At 150: the leader has been past it since the sample at 1 s.
        let seen = follower_observation(&reading(at, 150, 10, true), &leader);
        assert_eq!((seen.lag_bytes, seen.lag, seen.lag_commits), (150, 2500 * MS, 3));
        // At 200: past it since 2 s.
        assert_eq!(leader.lag_behind(200, at), 1500 * MS);
        // Behind every sample: at least the history's reach.
        assert_eq!(leader.lag_behind(50, at), 3500 * MS);
    }

    #[test]
    fn idle_leader_keeps_when_it_first_reached_its_position() {
        let t0 = Instant::now();
        let mut leader = LeaderHistory::default();
        leader.record(reading(t0, 100, 10, false));
        leader.record(reading(t0 + 500 * MS, 200, 11, false));
        for i in 1..=400 {
            leader.record(reading(t0 + 500 * MS + i * 250 * MS, 200, 11, false));
        }
        // 100 s idle at 200: the idle samples added nothing, and a follower stuck at 100 has been behind since the
        // leader was first seen at 200.
        assert_eq!(leader.samples.len(), 2);
        assert_eq!(leader.lag_behind(100, t0 + 100_500 * MS), 100_000 * MS);
        assert_eq!(leader.lag_behind(200, t0 + 100_500 * MS), Duration::ZERO);
    }

    #[test]
    fn history_stays_bounded_in_time_and_samples() {
        let t0 = Instant::now();
        let mut leader = LeaderHistory::default();
        for i in 0..10_000u64 {
            leader.record(reading(t0 + i as u32 * 10 * MS, i, i, false));
        }
        assert_eq!(leader.samples.len(), HISTORY_SAMPLES);
        let mut slow = LeaderHistory::default();
        for i in 0..1000u64 {
            slow.record(reading(t0 + i as u32 * 1000 * MS, i, i, false));
        }
        let reach = slow.samples.back().unwrap().0 - slow.samples.front().unwrap().0;
        assert!(reach <= HISTORY_WINDOW, "{reach:?}");
        // An idle leader's only sample is never aged out.
        let mut idle = LeaderHistory::default();
        idle.record(reading(t0, 5, 1, false));
        idle.record(reading(t0 + 10 * HISTORY_WINDOW, 5, 1, false));
        assert_eq!(idle.lag_behind(4, t0 + 10 * HISTORY_WINDOW), 10 * HISTORY_WINDOW);
    }

    #[test]
    fn leader_going_backwards_restarts_the_history() {
        let t0 = Instant::now();
        let mut leader = LeaderHistory::default();
        leader.record(reading(t0, 500, 10, false));
        leader.record(reading(t0 + 1000 * MS, 100, 10, false));
        assert_eq!(leader.samples.len(), 1);
        assert_eq!(leader.lag_behind(50, t0 + 1500 * MS), 500 * MS);
    }

    #[test]
    fn without_a_leader_reading_lag_counts_as_zero() {
        let seen = follower_observation(&reading(Instant::now(), 7, 3, true), &LeaderHistory::default());
        assert_eq!((seen.lag_bytes, seen.lag, seen.lag_commits), (0, Duration::ZERO, 0));
    }
}
