//! The view while a run goes on: an indicatif bar on stderr with elapsed time, tps, p50/p99 and errors, shown only
//! when stderr is a terminal; and, with `--progress`, a plain line per period (for logs and CI). Owns nothing but
//! what it draws.

use std::io::IsTerminal;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::options::StopAfter;
use super::stats::{Percentiles, Tally, latency_histogram};

pub struct Live {
    bar: Option<ProgressBar>,
    stop: StopAfter,
    /// `--progress`: how often to print a line.
    every: Option<Duration>,
    /// Commits and latencies since the last line.
    since_line: (u64, Histogram<u64>),
    last_line: Duration,
}

impl Live {
    pub fn new(stop: StopAfter, clients: u32, every: Option<Duration>) -> Live {
        let bar = std::io::stderr().is_terminal().then(|| {
            let length = match stop {
                StopAfter::Duration(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                StopAfter::Transactions(n) => n.saturating_mul(u64::from(clients)),
            };
            let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("connecting…");
            bar
        });
        Live {
            bar,
            stop,
            every,
            since_line: (0, latency_histogram()),
            last_line: Duration::ZERO,
        }
    }

    /// After each interval: `interval` is what it added, `totals` everything so far.
    pub fn update(&mut self, elapsed: Duration, interval: &Tally, totals: &Tally, tps: f64) {
        let errors = totals.failed;
        let latency = Percentiles::of(&interval.latency);
        if let Some(bar) = &self.bar {
            bar.set_position(match self.stop {
                StopAfter::Duration(_) => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                StopAfter::Transactions(_) => totals.committed + totals.failed,
            });
            bar.set_message(line(tps, latency, errors));
        }
        let Some(every) = self.every else { return };
        let (committed, histogram) = &mut self.since_line;
        *committed += interval.committed;
        let _ = histogram.add(&interval.latency);
        let span = elapsed.saturating_sub(self.last_line);
        if span + Duration::from_millis(50) < every {
            return;
        }
        let tps = *committed as f64 / span.as_secs_f64().max(1e-9);
        let text = format!(
            "progress: {:.1} s, {}",
            elapsed.as_secs_f64(),
            line(tps, Percentiles::of(histogram), errors)
        );
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
        *committed = 0;
        histogram.reset();
        self.last_line = elapsed;
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn line(tps: f64, latency: Option<Percentiles>, errors: u64) -> String {
    let latency = latency.map_or("no latency yet".into(), |p| {
        format!("p50 {:.2} ms, p99 {:.2} ms", p.p50, p.p99)
    });
    format!("{tps:.1} tps, {latency}, {errors} errors")
}
