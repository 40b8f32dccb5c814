//! Real client drivers through pgsplit: psycopg 3, asyncpg, node-postgres and pgjdbc each run their suite in
//! `tests/drivers/` (16 concurrent clients; CRUD, transactions, named prepared statements, search_path, LISTEN/NOTIFY,
//! COPY) against a proxy of their own in transaction pooling mode with tiny pools, on the binary's shared cluster.
//! The drivers are installed on first use (`tests/drivers/harness.rs`).

mod support;

#[path = "drivers/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use crate::support::cluster;
use crate::support::proxy::{TestProxy, routed};

/// Far above any lag these suites cause, so the followers stay in the read set; the suites read fresh rows only inside
/// transactions (on the leader).
const LAG_BYTES: u64 = 1 << 30;
const LAG: Duration = Duration::from_secs(600);

/// pgsplit in transaction mode in front of the shared cluster: 4 leader connections, 2 per follower, once every
/// follower is usable for reads.
async fn tiny_transaction_proxy() -> TestProxy {
    routed(cluster(), |config| {
        config.follower_pools[0].max_lag_bytes = LAG_BYTES;
        config.follower_pools[0].max_lag_seconds = LAG;
        config.leader.max_connections = 4;
        config.follower_pools[0].max_connections_per_instance = 2;
    })
    .await
}

/// Runs one driver's `suite` against a fresh proxy; fails the test with the suite's output unless it exits 0.
fn run(driver: &str, suite: Command) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let proxy = tiny_transaction_proxy().await;
        let c = cluster();
        let url = format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            c.app_user(),
            c.app_password(),
            proxy.port(),
            c.app_database()
        );
        let summary = harness::run_suite(driver, suite.into(), &url).await;
        println!("{}", summary.trim_end());
        proxy.stop().await;
    });
}

fn python_suite(script: &str) -> Command {
    let mut suite = Command::new(harness::python());
    suite.arg(harness::script(script)).env("PYTHONUNBUFFERED", "1");
    suite
}

#[test]
fn psycopg3_with_every_statement_prepared() {
    run("psycopg", python_suite("psycopg_suite.py"));
}

#[test]
fn asyncpg() {
    run("asyncpg", python_suite("asyncpg_suite.py"));
}

#[test]
fn node_postgres_with_named_queries() {
    let mut suite = Command::new("node");
    suite
        .arg(harness::script("node_suite.js"))
        .env("NODE_PATH", harness::node_modules());
    run("node-postgres", suite);
}

#[test]
fn pgjdbc_with_prepare_threshold_1() {
    let mut suite = Command::new("java");
    suite.args(["-XX:+UseSerialGC", "-cp", harness::jdbc_classpath(), "JdbcSuite"]);
    run("pgjdbc", suite);
}
