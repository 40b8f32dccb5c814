//! The HTML report: one self-contained page with the run plotted, which a browser renders. Headless Chromium
//! (Debian's `chromium`) takes a screenshot of it; the picture must have something drawn on it.

use std::process::Command;

use crate::support::proxy::routed;
use crate::support::{cluster, pgbench_init};
use crate::tool::{Scratch, bench};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 2200;

fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name;
        }
    }
    panic!("the HTML report test needs headless Chromium: apt-get install chromium (.ci/run does)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_self_contained_and_renders() {
    pgbench_init();
    let p = routed(cluster(), |_| {}).await;
    let files = Scratch::new("report");
    let url = format!("postgres://app:app@127.0.0.1:{}/{}", p.port(), p.database);
    let (admin, page) = (p.proxy.admin_addr().to_string(), files.arg("run.html"));
    bench(&[
        "--url", &url, "-c", "2", "-T", "3s", "-w", "mixed:80", "--admin", &admin, "--report", &page,
    ])
    .await
    .ok();
    p.stop().await;
    let html = std::fs::read_to_string(files.path("run.html")).expect("the report was written");
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    // tps, latency, the split (bars and over time), replication lag.
    assert_eq!(html.matches("<svg ").count(), 5, "{html}");
    assert!(html.matches("<polyline").count() >= 6, "lines were drawn");
    for title in [
        "transactions per second",
        "latency per interval",
        "share of units served",
        "replay lag",
    ] {
        assert!(html.contains(title), "no {title:?} chart");
    }
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "nothing to fetch: the page is self-contained"
    );

    let shot = files.path("run.png");
    let rendered = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{page}"))
        .output()
        .expect("chromium runs");
    assert!(
        rendered.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("a screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    assert_eq!((frame.width, frame.height), (WIDTH, HEIGHT));
    let channels = frame.color_type.samples();
    let mut colours: Vec<&[u8]> = pixels[..frame.buffer_size()].chunks(channels).collect();
    colours.sort_unstable();
    colours.dedup();
    // Text, axes and five colours of lines, antialiased: a blank or single-colour page has one or two.
    assert!(colours.len() > 50, "only {} colours in the screenshot", colours.len());
}
