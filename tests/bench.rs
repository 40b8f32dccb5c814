//! `pgsplit bench` as its users run it: the built binary against real PostgreSQL — a server directly, pgsplit in
//! front of a cluster with followers (the split, lag, read-your-writes), a changeover in the middle of a run, TLS —
//! and what it leaves: the summary, the JSON, the HTML report (rendered by headless Chromium), Ctrl-C's summary,
//! and one clear line for every kind of bad input.

mod support;

#[path = "bench/changeover.rs"]
mod changeover;
#[path = "bench/input.rs"]
mod input;
#[path = "bench/interrupt.rs"]
mod interrupt;
#[path = "bench/proxy.rs"]
mod proxy;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/server.rs"]
mod server;
#[path = "bench/tls.rs"]
mod tls;
#[path = "bench/tool.rs"]
mod tool;
