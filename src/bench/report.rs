//! The files a run leaves: `--json` (the [`Summary`] as it is) and `--report` (one self-contained HTML page: the
//! figures, then tps, latency percentiles, the per-instance split and replication lag over time as inline SVG,
//! with the events marked). Pure apart from writing the file; the page needs nothing from the network.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::{Interval, Percentiles};
use super::summary::{Summary, thousands};
use super::svg::{LineChart, Series, bar_chart, escape, line_chart};

pub fn write_json(summary: &Summary, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn write_html(summary: &Summary, path: &Path) -> Result<(), String> {
    std::fs::write(path, html(summary)).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Intervals shorter than this are left out of the charts (not out of the figures).
const MIN_PLOTTED_S: f64 = 0.5;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:920px;\
color:#222;background:#fafafa}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}\
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;text-align:left;\
border-bottom:1px solid #e4e4e4;font-size:14px}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg.chart{display:block;margin:10px 0;border:1px solid #ddd;background:#fff}pre{background:#fff;padding:10px;\
border:1px solid #ddd;white-space:pre-wrap;font-size:12px}";

pub fn html(summary: &Summary) -> String {
    let s = &summary.settings;
    let mut out = String::new();
    let title = format!("pgsplit bench: {} against {}", s.workload, summary.target.endpoint);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style>\
         </head><body>\n<h1>{}</h1>\n<p class=\"sub\">{} protocol{}, {} clients on {} threads, database {}, sslmode \
         {}{}</p>\n",
        escape(&title),
        escape(&title),
        escape(&s.protocol),
        if s.connect_per_txn {
            ", a connection per transaction"
        } else {
            ""
        },
        s.clients,
        s.threads,
        escape(&summary.target.database),
        escape(&summary.target.sslmode),
        if summary.interrupted {
            " — interrupted by Ctrl-C"
        } else {
            ""
        }
    );
    figures(&mut out, summary);
    let markers: Vec<(f64, String)> = summary
        .events
        .iter()
        .map(|e| (e.started_at_s, e.action.clone()))
        .collect();
    let x_max = summary.elapsed_s;
    // The sliver after the last whole second (clients finishing) is in the totals, but as a rate of its own it
    // would plot as a cliff.
    let intervals: Vec<&Interval> = summary
        .intervals
        .iter()
        .filter(|i| i.seconds >= MIN_PLOTTED_S)
        .collect();
    let tps = |pick: fn(&Interval) -> f64| -> Vec<(f64, f64)> { intervals.iter().map(|i| (i.at_s, pick(i))).collect() };
    let _ = write!(out, "<h2>Throughput</h2>\n{}\n", {
        line_chart(&LineChart {
            title: "transactions per second",
            unit: "per second",
            series: vec![
                Series {
                    name: "committed".into(),
                    points: tps(|i| i.tps),
                },
                Series {
                    name: "failed".into(),
                    points: tps(|i| {
                        if i.seconds > 0.0 {
                            i.failed as f64 / i.seconds
                        } else {
                            0.0
                        }
                    }),
                },
            ],
            markers: &markers,
            x_max,
            log_y: false,
        })
    });
    let latency = |name: &str, pick: fn(&Percentiles) -> f64| Series {
        name: name.into(),
        points: intervals
            .iter()
            .filter_map(|i| i.latency_ms.as_ref().map(|p| (i.at_s, pick(p))))
            .collect(),
    };
    let _ = write!(out, "<h2>Latency</h2>\n{}\n", {
        line_chart(&LineChart {
            title: "latency per interval (ms, log scale)",
            unit: "ms",
            series: vec![
                latency("p50", |p| p.p50),
                latency("p90", |p| p.p90),
                latency("p99", |p| p.p99),
                latency("max", |p| p.max),
            ],
            markers: &markers,
            x_max,
            log_y: true,
        })
    });
    if let Some(admin) = &summary.admin {
        let bars: Vec<(String, f64, String)> = admin
            .instances
            .iter()
            .map(|i| {
                let text = format!("{:.1} % ({} units)", i.share * 100.0, thousands(i.units));
                (format!("{} ({})", i.name, i.role), i.share, text)
            })
            .collect();
        // Looks come every 250 ms: summed per whole second of the run, as tps is.
        let per_second = |name: &str| -> Vec<(f64, f64)> {
            let mut seconds: Vec<(f64, f64)> = Vec::new();
            for sample in &admin.samples {
                let units = sample.instances.iter().find(|i| i.name == name).map_or(0, |i| i.units);
                let second = sample.at_s.ceil().max(1.0);
                match seconds.last_mut() {
                    Some((at, sum)) if *at == second => *sum += units as f64,
                    _ => seconds.push((second, units as f64)),
                }
            }
            seconds.retain(|(at, _)| *at <= x_max.floor());
            seconds
        };
        let _ = write!(
            out,
            "<h2>Which instance served what</h2>\n<p class=\"sub\">Units of work pgsplit routed (statements, batches \
             or transactions), from its admin API at {}.</p>\n{}\n{}\n",
            escape(&admin.address),
            bar_chart("share of units served during the run", &bars),
            line_chart(&LineChart {
                title: "units served per second, by instance",
                unit: "per second",
                series: admin
                    .instances
                    .iter()
                    .map(|i| Series {
                        name: i.name.clone(),
                        points: per_second(&i.name),
                    })
                    .collect(),
                markers: &markers,
                x_max,
                log_y: false,
            })
        );
        let lag_series: Vec<Series> = admin
            .instances
            .iter()
            .filter(|i| i.max_lag_bytes.is_some())
            .map(|i| Series {
                name: i.name.clone(),
                points: admin
                    .samples
                    .iter()
                    .filter_map(|s| {
                        let lag = s.instances.iter().find(|x| x.name == i.name)?.lag_bytes?;
                        Some((s.at_s, lag as f64))
                    })
                    .collect(),
            })
            .collect();
        let _ = write!(out, "<h2>Replication lag</h2>\n{}\n", {
            line_chart(&LineChart {
                title: "follower replay lag (bytes of WAL)",
                unit: "bytes",
                series: lag_series,
                markers: &markers,
                x_max,
                log_y: false,
            })
        });
    }
    events(&mut out, summary);
    let _ = write!(
        out,
        "<h2>Text summary</h2>\n<pre>{}</pre>\n</body></html>\n",
        escape(&summary.text())
    );
    out
}

fn figures(out: &mut String, summary: &Summary) {
    let row = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value));
    };
    out.push_str("<table>\n");
    row(out, "tps", format!("{:.1}", summary.tps));
    row(
        out,
        "transactions",
        format!(
            "{} committed, {} failed in {:.2} s",
            thousands(summary.committed),
            thousands(summary.failed),
            summary.elapsed_s
        ),
    );
    if let Some(p) = summary.latency_ms {
        row(
            out,
            "latency (ms)",
            format!(
                "p50 {:.3} · p90 {:.3} · p99 {:.3} · p99.9 {:.3} · max {:.3}",
                p.p50, p.p90, p.p99, p.p99_9, p.max
            ),
        );
    }
    if let Some(p) = summary.connections.connect_ms {
        row(
            out,
            "connect (ms)",
            format!(
                "{} opened · p50 {:.3} · p99 {:.3} · max {:.3}",
                thousands(summary.connections.opened),
                p.p50,
                p.p99,
                p.max
            ),
        );
    }
    let gap = &summary.longest_gap;
    let mut gaps = format!("{:.1} ms without a completed transaction", gap.all_ms);
    if summary.scripts.iter().any(|s| s.writes) {
        let _ = write!(gaps, ", {:.1} ms without a completed write", gap.writes_ms);
    }
    row(out, "longest gap", gaps);
    out.push_str("</table>\n");
    if !summary.errors.is_empty() {
        out.push_str("<h2>Errors</h2>\n<table><tr><th>code</th><th>count</th><th>example</th></tr>\n");
        for error in &summary.errors {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&error.code),
                thousands(error.count),
                escape(&error.example)
            );
        }
        out.push_str("</table>\n");
    }
}

fn events(out: &mut String, summary: &Summary) {
    if summary.events.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Events</h2>\n<table><tr><th>at</th><th>action</th><th>outcome</th><th>pgsplit held writes</th>\
         <th>longest gap without a write (clients)</th><th>failed</th><th>max latency</th></tr>\n",
    );
    for event in &summary.events {
        let clients = event.clients;
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{:.2} s</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            event.started_at_s,
            escape(&event.action),
            escape(&event.outcome),
            event.proxy_write_pause_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            clients.map_or("-".into(), |c| format!("{:.1} ms", c.longest_write_gap_ms)),
            clients.map_or("-".into(), |c| thousands(c.failed)),
            clients.map_or("-".into(), |c| format!("{:.1} ms", c.max_latency_ms)),
        );
    }
    out.push_str("</table>\n");
}
