//! Charts as inline SVG text, drawn by hand (a line chart over time with event markers, and a bar chart of
//! shares): a report page needs two kinds, and text that any browser renders without scripts or fonts to fetch.
//! Pure: numbers in, markup out.

use std::fmt::Write as _;

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;
/// Line colours, in series order (distinguishable for the common kinds of colour blindness).
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

pub struct Series {
    pub name: String,
    /// (seconds into the run, value)
    pub points: Vec<(f64, f64)>,
}

pub struct LineChart<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    pub series: Vec<Series>,
    /// Vertical lines: (seconds into the run, label).
    pub markers: &'a [(f64, String)],
    /// The x axis runs from 0 to this many seconds.
    pub x_max: f64,
    /// A logarithmic y axis, for values spread over orders of magnitude (latency percentiles up to the max).
    pub log_y: bool,
}

/// The y axis: linear from 0, or logarithmic over whole powers of ten.
enum Scale {
    Linear { max: f64, step: f64 },
    Log { low: i32, high: i32 },
}

impl Scale {
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Scale {
        let (mut low, mut high) = (f64::INFINITY, 0.0f64);
        for value in values.filter(|v| v.is_finite() && *v > 0.0) {
            low = low.min(value);
            high = high.max(value);
        }
        if log && high > 0.0 {
            let low = low.log10().floor() as i32;
            return Scale::Log {
                low,
                high: (high.log10().ceil() as i32).max(low + 1),
            };
        }
        let step = nice_step(if high > 0.0 { high } else { 1.0 }, 4.0);
        Scale::Linear {
            max: (high / step).ceil().max(1.0) * step,
            step,
        }
    }

    /// Where `value` falls, from 0 (bottom) to 1 (top).
    fn fraction(&self, value: f64) -> f64 {
        let fraction = match *self {
            Scale::Linear { max, .. } => value / max,
            Scale::Log { low, high } => (value.max(f64::MIN_POSITIVE).log10() - f64::from(low)) / f64::from(high - low),
        };
        fraction.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Scale::Linear { max, step } => (0..)
                .map(|i| f64::from(i) * step)
                .take_while(|tick| *tick <= max + step / 2.0)
                .collect(),
            Scale::Log { low, high } => (low..=high).map(|e| 10f64.powi(e)).collect(),
        }
    }
}

/// `&`, `<`, `>`, `"` and `'` escaped for XML text and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `span` into about `parts`.
fn nice_step(span: f64, parts: f64) -> f64 {
    let raw = (span / parts).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A tick label without needless decimals: `0.25`, `3`, `12k`, `1.5M`.
fn tick_label(value: f64) -> String {
    let (scaled, suffix) = if value.abs() >= 1e6 {
        (value / 1e6, "M")
    } else if value.abs() >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"><title>{t}</title><rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
}

pub fn line_chart(chart: &LineChart) -> String {
    let mut out = String::new();
    open(&mut out, chart.title, HEIGHT);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_max = chart.x_max.max(1e-3);
    let scale = Scale::fit(
        chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        chart.log_y,
    );
    let x = |t: f64| LEFT + (t / x_max).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| TOP + plot_h - scale.fraction(v) * plot_h;
    // Grid and y labels.
    for tick in scale.ticks() {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{x2:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{lx:.1}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#444">{label}</text>"##,
            py = y(tick),
            x2 = LEFT + plot_w,
            lx = LEFT - 6.0,
            ty = y(tick) + 4.0,
            label = tick_label(tick)
        );
    }
    let x_step = nice_step(x_max, 8.0);
    let mut tick = 0.0;
    while tick <= x_max + x_step / 100.0 {
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{y1:.1}" x2="{px:.1}" y2="{y2:.1}" stroke="#999"/><text x="{px:.1}" y="{ty:.1}" font-size="11" text-anchor="middle" fill="#444">{label}</text>"##,
            px = x(tick),
            y1 = TOP + plot_h,
            y2 = TOP + plot_h + 4.0,
            ty = TOP + plot_h + 16.0,
            label = tick_label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        out,
        r##"<text x="{cx:.1}" y="{by:.1}" font-size="11" text-anchor="middle" fill="#444">seconds into the run</text><text x="14" y="{my:.1}" font-size="11" text-anchor="middle" fill="#444" transform="rotate(-90 14 {my:.1})">{unit}</text><rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#999"/>"##,
        cx = LEFT + plot_w / 2.0,
        by = HEIGHT - 6.0,
        my = TOP + plot_h / 2.0,
        unit = escape(chart.unit)
    );
    for (at, label) in chart.markers {
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{y2:.1}" stroke="#c00000" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty:.1}" font-size="11" fill="#c00000">{label}</text>"##,
            px = x(*at),
            y2 = TOP + plot_h,
            tx = x(*at) + 3.0,
            ty = TOP + 11.0,
            label = escape(label)
        );
    }
    let drawn: Vec<&Series> = chart.series.iter().filter(|s| !s.points.is_empty()).collect();
    if drawn.is_empty() {
        let _ = write!(
            out,
            r##"<text x="{cx:.1}" y="{cy:.1}" font-size="13" text-anchor="middle" fill="#888">no data</text>"##,
            cx = LEFT + plot_w / 2.0,
            cy = TOP + plot_h / 2.0
        );
    }
    for (i, series) in drawn.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = series
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            points.join(" ")
        );
        // A lone point has no line to show it.
        if let [(t, v)] = series.points[..] {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(t),
                y(v)
            );
        }
        let ly = TOP + 8.0 + i as f64 * 18.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = write!(
            out,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{x2:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{tx:.1}" y="{ty:.1}" font-size="12" fill="#222">{name}</text>"##,
            x2 = lx + 18.0,
            tx = lx + 24.0,
            ty = ly + 4.0,
            name = escape(&series.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per (label, share of 1, text after the bar).
pub fn bar_chart(title: &str, bars: &[(String, f64, String)]) -> String {
    let row = 26.0;
    let height = TOP + 10.0 + row * bars.len().max(1) as f64;
    let mut out = String::new();
    open(&mut out, title, height);
    let label_w = 120.0;
    let bar_w = WIDTH - LEFT - label_w - 220.0;
    for (i, (label, share, text)) in bars.iter().enumerate() {
        let top = TOP + 6.0 + i as f64 * row;
        let width = share.clamp(0.0, 1.0) * bar_w;
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            r##"<text x="{lx:.1}" y="{ty:.1}" font-size="12" text-anchor="end" fill="#222">{label}</text><rect x="{bx:.1}" y="{top:.1}" width="{width:.1}" height="18" fill="{colour}"/><rect x="{bx:.1}" y="{top:.1}" width="{bar_w:.1}" height="18" fill="none" stroke="#ccc"/><text x="{vx:.1}" y="{ty:.1}" font-size="12" fill="#222">{text}</text>"##,
            lx = LEFT + label_w - 8.0,
            ty = top + 13.0,
            bx = LEFT + label_w,
            vx = LEFT + label_w + bar_w + 8.0,
            label = escape(label),
            text = escape(text)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(17_000.0, 4.0), 5_000.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(3.0), "3");
        assert_eq!(tick_label(15_000.0), "15k");
        assert_eq!(tick_label(2_500_000.0), "2.5M");
    }

    #[test]
    fn log_scales_span_whole_powers_of_ten() {
        let scale = Scale::fit([0.35, 12.0, 240.0].into_iter(), true);
        assert_eq!(scale.ticks(), [0.1, 1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(scale.fraction(1.0), 0.25);
        let linear = Scale::fit([0.0, 17_000.0].into_iter(), false);
        assert_eq!(linear.ticks(), [0.0, 5_000.0, 10_000.0, 15_000.0, 20_000.0]);
    }

    #[test]
    fn charts_are_escaped_svg_with_their_series_and_markers() {
        let chart = LineChart {
            title: "tps <all>",
            unit: "tps",
            series: vec![
                Series {
                    name: "committed".into(),
                    points: vec![(1.0, 100.0), (2.0, 120.0)],
                },
                Series {
                    name: "failed".into(),
                    points: vec![],
                },
            ],
            markers: &[(1.5, "promote f1".into())],
            x_max: 2.0,
            log_y: false,
        };
        let svg = line_chart(&chart);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains("tps &lt;all&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1, "empty series are not drawn");
        assert!(svg.contains("promote f1"));
        let bars = bar_chart("split", &[("f1".into(), 0.5, "50 %".into())]);
        assert!(bars.contains("f1") && bars.contains("50 %"));
    }
}
