//! What the clients measure and how it is added up: HDR histograms of transaction and connection latency,
//! commits, failures and errors by SQLSTATE, kept in a few locked shards (a client writes to one; the collector
//! drains them all once per interval), plus lock-free figures that need every completion's time: the longest
//! stretch with no transaction completing (all, and writes alone), over the run and within an event's window.
//!
//! Owns counting; never talks to a server or prints.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds up to an hour (longer ones count as an hour), to 3 significant digits.
const HIGHEST_US: u64 = 3_600_000_000;

/// An empty latency histogram with the bounds every tally uses.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("constant bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One error kind: a SQLSTATE, or one of bench's own words for failures without one (`connect`, `closed`,
/// `script`, `timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorTally {
    pub count: u64,
    /// The first message seen with this code.
    pub example: String,
}

/// A script's share of the transactions.
#[derive(Debug, Clone)]
pub struct ScriptTally {
    pub committed: u64,
    pub failed: u64,
    pub latency: Histogram<u64>,
}

/// Counts that add up: one shard's, one interval's, or the whole run's.
#[derive(Debug, Clone)]
pub struct Tally {
    pub committed: u64,
    pub failed: u64,
    /// Successful transactions, from their (scheduled) start to their end.
    pub latency: Histogram<u64>,
    pub scripts: Vec<ScriptTally>,
    pub connects: u64,
    pub connect_failures: u64,
    pub connect_latency: Histogram<u64>,
    pub errors: BTreeMap<String, ErrorTally>,
}

impl Tally {
    pub fn new(scripts: usize) -> Tally {
        Tally {
            committed: 0,
            failed: 0,
            latency: latency_histogram(),
            scripts: (0..scripts)
                .map(|_| ScriptTally {
                    committed: 0,
                    failed: 0,
                    latency: latency_histogram(),
                })
                .collect(),
            connects: 0,
            connect_failures: 0,
            connect_latency: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, other: &Tally) {
        self.committed += other.committed;
        self.failed += other.failed;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (mine, theirs) in self.scripts.iter_mut().zip(&other.scripts) {
            mine.committed += theirs.committed;
            mine.failed += theirs.failed;
            let _ = mine.latency.add(&theirs.latency);
        }
        self.connects += other.connects;
        self.connect_failures += other.connect_failures;
        let _ = self.connect_latency.add(&other.connect_latency);
        for (code, tally) in &other.errors {
            self.errors
                .entry(code.clone())
                .and_modify(|mine| mine.count += tally.count)
                .or_insert_with(|| tally.clone());
        }
    }

    fn reset(&mut self) {
        self.committed = 0;
        self.failed = 0;
        self.latency.reset();
        for script in &mut self.scripts {
            script.committed = 0;
            script.failed = 0;
            script.latency.reset();
        }
        self.connects = 0;
        self.connect_failures = 0;
        self.connect_latency.reset();
        self.errors.clear();
    }

    fn error(&mut self, code: &str, message: impl FnOnce() -> String) {
        match self.errors.get_mut(code) {
            Some(tally) => tally.count += 1,
            None => {
                self.errors.insert(
                    code.to_owned(),
                    ErrorTally {
                        count: 1,
                        example: message(),
                    },
                );
            }
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` when nothing was recorded.
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

/// The longest stretch with no completion, tracked from completion times alone.
#[derive(Default)]
struct Gaps {
    /// Microseconds since the start of the latest completion; 0 before the first.
    last_end: AtomicU64,
    /// Longest gap closed since the current window opened.
    window: AtomicU64,
    /// Longest gap of the run and when it ended (microseconds).
    longest: Mutex<(u64, u64)>,
}

impl Gaps {
    fn record(&self, end: u64) {
        let previous = self.last_end.fetch_max(end, Ordering::Relaxed);
        if previous == 0 || end <= previous {
            return;
        }
        let gap = end - previous;
        self.window.fetch_max(gap, Ordering::Relaxed);
        // Rarely taken: only a gap longer than any before.
        if let Ok(mut longest) = self.longest.lock()
            && gap > longest.0
        {
            *longest = (gap, end);
        }
    }

    /// The longest gap since the window opened, counting one still open at `now`; starts a new window.
    fn take_window(&self, now: u64) -> u64 {
        let last = self.last_end.load(Ordering::Relaxed);
        let open = if last == 0 { 0 } else { now.saturating_sub(last) };
        self.window.swap(0, Ordering::Relaxed).max(open)
    }

    fn longest(&self) -> (u64, u64) {
        self.longest.lock().map(|l| *l).unwrap_or_default()
    }
}

/// What clients saw between two moments (an event's window).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowFigures {
    /// Longest stretch in which no transaction completed.
    pub longest_gap_ms: f64,
    /// Longest stretch in which no writing transaction completed (the write pause as clients saw it).
    pub longest_write_gap_ms: f64,
    pub committed: u64,
    pub failed: u64,
    pub max_latency_ms: f64,
    pub max_write_latency_ms: f64,
}

/// Shared by every client and the collector.
pub struct Stats {
    started: Instant,
    shards: Vec<Mutex<Tally>>,
    any: Gaps,
    writes: Gaps,
    window_committed: AtomicU64,
    window_failed: AtomicU64,
    window_max_latency: AtomicU64,
    window_max_write_latency: AtomicU64,
}

/// How a transaction ended.
pub enum Outcome<'a> {
    Committed,
    Failed {
        code: &'a str,
        message: &'a dyn Fn() -> String,
    },
}

impl Stats {
    pub fn new(started: Instant, shards: usize, scripts: usize) -> Stats {
        Stats {
            started,
            shards: (0..shards.max(1)).map(|_| Mutex::new(Tally::new(scripts))).collect(),
            any: Gaps::default(),
            writes: Gaps::default(),
            window_committed: AtomicU64::new(0),
            window_failed: AtomicU64::new(0),
            window_max_latency: AtomicU64::new(0),
            window_max_write_latency: AtomicU64::new(0),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    fn since_start(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.started)).max(1)
    }

    pub fn transaction(
        &self,
        shard: usize,
        script: usize,
        writes: bool,
        start: Instant,
        end: Instant,
        outcome: Outcome,
    ) {
        let latency = micros(end.saturating_duration_since(start)).max(1);
        match outcome {
            Outcome::Committed => {
                let end = self.since_start(end);
                self.any.record(end);
                if writes {
                    self.writes.record(end);
                    self.window_max_write_latency.fetch_max(latency, Ordering::Relaxed);
                }
                self.window_committed.fetch_add(1, Ordering::Relaxed);
                self.window_max_latency.fetch_max(latency, Ordering::Relaxed);
                self.with_shard(shard, |tally| {
                    tally.committed += 1;
                    tally.latency.saturating_record(latency);
                    if let Some(s) = tally.scripts.get_mut(script) {
                        s.committed += 1;
                        s.latency.saturating_record(latency);
                    }
                });
            }
            Outcome::Failed { code, message } => {
                self.window_failed.fetch_add(1, Ordering::Relaxed);
                self.with_shard(shard, |tally| {
                    tally.failed += 1;
                    if let Some(s) = tally.scripts.get_mut(script) {
                        s.failed += 1;
                    }
                    tally.error(code, message);
                });
            }
        }
    }

    /// A connection attempt: `Ok` with how long it took, or a failure (whose error the failed transaction that
    /// needed the connection reports).
    pub fn connect(&self, shard: usize, result: Result<Duration, ()>) {
        self.with_shard(shard, |tally| match result {
            Ok(took) => {
                tally.connects += 1;
                tally.connect_latency.saturating_record(micros(took).max(1));
            }
            Err(()) => tally.connect_failures += 1,
        });
    }

    fn with_shard(&self, shard: usize, f: impl FnOnce(&mut Tally)) {
        // A client that panicked while holding the lock left counts that are still counts.
        let mut tally = match self.shards[shard % self.shards.len()].lock() {
            Ok(tally) => tally,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut tally);
    }

    /// Moves every shard's counts into `into` and zeroes the shards.
    pub fn drain(&self, into: &mut Tally) {
        for shard in &self.shards {
            let mut tally = match shard.lock() {
                Ok(tally) => tally,
                Err(poisoned) => poisoned.into_inner(),
            };
            into.add(&tally);
            tally.reset();
        }
    }

    /// Closes the current window at `now` and opens the next one.
    pub fn take_window(&self, now: Instant) -> WindowFigures {
        let now = self.since_start(now);
        let ms = |us: u64| us as f64 / 1000.0;
        WindowFigures {
            longest_gap_ms: ms(self.any.take_window(now)),
            longest_write_gap_ms: ms(self.writes.take_window(now)),
            committed: self.window_committed.swap(0, Ordering::Relaxed),
            failed: self.window_failed.swap(0, Ordering::Relaxed),
            max_latency_ms: ms(self.window_max_latency.swap(0, Ordering::Relaxed)),
            max_write_latency_ms: ms(self.window_max_write_latency.swap(0, Ordering::Relaxed)),
        }
    }

    /// The run's longest stretch without a completion, all and writes: (gap, when it ended), in seconds.
    pub fn longest_gaps(&self) -> [(f64, f64); 2] {
        let secs = |(gap, end): (u64, u64)| (gap as f64 / 1e6, end as f64 / 1e6);
        [secs(self.any.longest()), secs(self.writes.longest())]
    }
}

/// One interval of the run, as plotted and listed in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// Seconds from the start to the end of the interval.
    pub at_s: f64,
    pub seconds: f64,
    pub committed: u64,
    pub failed: u64,
    pub tps: f64,
    pub latency_ms: Option<Percentiles>,
}

/// Turns shard counts into intervals and the run's totals.
pub struct Collector {
    pub totals: Tally,
    pub intervals: Vec<Interval>,
    current: Tally,
    last: Duration,
}

impl Collector {
    pub fn new(scripts: usize) -> Collector {
        Collector {
            totals: Tally::new(scripts),
            intervals: Vec::new(),
            current: Tally::new(scripts),
            last: Duration::ZERO,
        }
    }

    /// Ends the interval at `elapsed` (since the start): drains the shards and adds the interval to the totals.
    pub fn tick(&mut self, stats: &Stats, elapsed: Duration) {
        self.current.reset();
        stats.drain(&mut self.current);
        self.totals.add(&self.current);
        let seconds = (elapsed.saturating_sub(self.last)).as_secs_f64();
        self.last = elapsed;
        self.intervals.push(Interval {
            at_s: elapsed.as_secs_f64(),
            seconds,
            committed: self.current.committed,
            failed: self.current.failed,
            tps: if seconds > 0.0 {
                self.current.committed as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&self.current.latency),
        });
    }

    /// The counts of the interval that ended last.
    pub fn current(&self) -> &Tally {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_drain_into_intervals_and_totals() {
        let start = Instant::now();
        let stats = Stats::new(start, 2, 2);
        let at = |ms: u64| start + Duration::from_millis(ms);
        stats.transaction(0, 0, false, at(0), at(2), Outcome::Committed);
        stats.transaction(1, 1, true, at(1), at(11), Outcome::Committed);
        let message = || "could not serialize access".to_string();
        for shard in [0, 1] {
            stats.transaction(
                shard,
                1,
                true,
                at(2),
                at(3),
                Outcome::Failed {
                    code: "40001",
                    message: &message,
                },
            );
        }
        stats.connect(0, Ok(Duration::from_millis(4)));
        let mut collector = Collector::new(2);
        collector.tick(&stats, Duration::from_secs(2));
        let (tally, interval) = (collector.current(), &collector.intervals[0]);
        assert_eq!((tally.committed, tally.failed, tally.connects), (2, 2, 1));
        assert_eq!(tally.errors["40001"].count, 2);
        assert_eq!(tally.errors["40001"].example, "could not serialize access");
        assert_eq!(interval.tps, 1.0);
        let latency = interval.latency_ms.unwrap();
        assert!((latency.max - 10.0).abs() < 0.1, "{latency:?}");
        assert_eq!(collector.totals.scripts[1].failed, 2);
        collector.tick(&stats, Duration::from_secs(3));
        let (tally, interval) = (collector.current(), &collector.intervals[1]);
        assert_eq!((tally.committed, interval.seconds, interval.latency_ms), (0, 1.0, None));
        assert_eq!(collector.totals.committed, 2, "totals keep what the shards gave");
    }

    #[test]
    fn gaps_count_the_longest_stretch_without_completions() {
        let start = Instant::now();
        let stats = Stats::new(start, 1, 1);
        let at = |ms: u64| start + Duration::from_millis(ms);
        for (end, writes) in [(10, true), (20, false), (30, false), (250, true), (260, false)] {
            stats.transaction(0, 0, writes, at(end - 5), at(end), Outcome::Committed);
        }
        let window = stats.take_window(at(270));
        assert_eq!(window.longest_gap_ms, 220.0);
        assert_eq!(window.longest_write_gap_ms, 240.0);
        assert_eq!(window.committed, 5);
        assert_eq!(stats.longest_gaps()[1], (0.24, 0.25));
        // A window with nothing completing counts the gap still open when it closes.
        let window = stats.take_window(at(1260));
        assert_eq!((window.longest_gap_ms, window.committed), (1000.0, 0));
    }
}
