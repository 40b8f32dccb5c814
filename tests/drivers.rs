//! Real client drivers through pgsplit: psycopg 3, asyncpg, node-postgres and pgjdbc each run their suite in
//! `tests/drivers/` (16 concurrent clients; CRUD, transactions, named prepared statements, search_path, LISTEN/NOTIFY,
//! COPY) against a proxy of their own in transaction pooling mode with tiny pools, on the binary's shared cluster.
//! The drivers are installed on first use (`tests/drivers/harness.rs`). Each suite also runs over TLS, against a
//! proxy that takes clients only over TLS (`[proxy.tls] mode = "require"`, a certificate made by the test), with the
//! driver's `sslmode=require` and fewer rounds.

mod support;

#[path = "drivers/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use pgsplit::config::{ClientTlsConfig, ClientTlsMode};

use crate::support::cluster;
use crate::support::proxy::{TestProxy, routed};

/// Far above any lag these suites cause, so the followers stay in the read set; the suites read fresh rows only inside
/// transactions (on the leader).
const LAG_BYTES: u64 = 1 << 30;
const LAG: Duration = Duration::from_secs(600);

/// Rounds of the suites' main phase over TLS (25 without): the same checks, a modest extra run time.
const TLS_ROUNDS: &str = "5";

/// How a suite reaches pgsplit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Over {
    Plain,
    /// TLS only, with these connection-string parameters for the driver.
    Tls(&'static str),
}

/// libpq's meaning of `sslmode=require`: encrypted, the certificate not checked.
const REQUIRE: Over = Over::Tls("sslmode=require");

/// pgsplit in transaction mode in front of the shared cluster: 4 leader connections, 2 per follower, once every
/// follower is usable for reads; over TLS, it takes no client without TLS.
async fn tiny_transaction_proxy(over: Over) -> TestProxy {
    routed(cluster(), |config| {
        config.follower_pools[0].max_lag_bytes = LAG_BYTES;
        config.follower_pools[0].max_lag_seconds = LAG;
        config.leader.max_connections = 4;
        config.follower_pools[0].max_connections_per_instance = 2;
        if over != Over::Plain {
            let pki = support::tls::pki();
            config.proxy.tls = Some(ClientTlsConfig {
                mode: ClientTlsMode::Require,
                cert: Some(pki.cert.clone()),
                key: Some(pki.key.clone()),
            });
        }
    })
    .await
}

/// Runs one driver's `suite` against a fresh proxy; fails the test with the suite's output unless it exits 0.
fn run(driver: &str, mut suite: Command, over: Over) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let query = match over {
        Over::Plain => String::new(),
        Over::Tls(params) => {
            // Its own objects (next to the plain suite's, which may run at the same time), fewer rounds.
            suite.env("SUITE_TAG", "_tls").env("SUITE_ROUNDS", TLS_ROUNDS);
            format!("?{params}")
        }
    };
    runtime.block_on(async {
        let proxy = tiny_transaction_proxy(over).await;
        let c = cluster();
        let url = format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}{query}",
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

fn node_suite() -> Command {
    let mut suite = Command::new("node");
    suite
        .arg(harness::script("node_suite.js"))
        .env("NODE_PATH", harness::node_modules());
    suite
}

fn jdbc_suite() -> Command {
    let mut suite = Command::new("java");
    suite.args(["-XX:+UseSerialGC", "-cp", harness::jdbc_classpath(), "JdbcSuite"]);
    suite
}

#[test]
fn psycopg3_with_every_statement_prepared() {
    run("psycopg", python_suite("psycopg_suite.py"), Over::Plain);
}

#[test]
fn psycopg3_over_tls() {
    run("psycopg", python_suite("psycopg_suite.py"), REQUIRE);
}

#[test]
fn asyncpg() {
    run("asyncpg", python_suite("asyncpg_suite.py"), Over::Plain);
}

#[test]
fn asyncpg_over_tls() {
    run("asyncpg", python_suite("asyncpg_suite.py"), REQUIRE);
}

#[test]
fn node_postgres_with_named_queries() {
    run("node-postgres", node_suite(), Over::Plain);
}

#[test]
fn node_postgres_over_tls() {
    // node-postgres reads `sslmode=require` as verify-full unless asked for libpq's meaning.
    run(
        "node-postgres",
        node_suite(),
        Over::Tls("sslmode=require&uselibpqcompat=true"),
    );
}

#[test]
fn pgjdbc_with_prepare_threshold_1() {
    run("pgjdbc", jdbc_suite(), Over::Plain);
}

#[test]
fn pgjdbc_over_tls() {
    run("pgjdbc", jdbc_suite(), REQUIRE);
}
