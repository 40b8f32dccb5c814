//! Against a PostgreSQL server directly, no pgsplit in between: the built-in workloads in every protocol, scripts
//! with variables, a connection per transaction, an open-loop rate.

use crate::support::{cluster, pgbench_init, psql};
use crate::tool::{Scratch, assert_percentiles, bench, json, number};

fn leader_url() -> String {
    let c = cluster();
    c.app_url(c.leader())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_against_a_server_reports_tps_latency_and_connections() {
    pgbench_init();
    let files = Scratch::new("select");
    let url = leader_url();
    let out = files.arg("run.json");
    let ran = bench(&["--url", &url, "-c", "4", "-j", "2", "-T", "2s", "--json", &out])
        .await
        .ok();
    assert!(ran.stdout.contains("tps:"), "{}", ran.stdout);
    assert!(ran.stdout.contains("errors:          none"), "{}", ran.stdout);
    let run = json(&files.path("run.json"));
    assert_eq!(run["format"], 1);
    assert_eq!(run["settings"]["workload"], "select");
    assert_eq!(run["settings"]["clients"], 4);
    assert_eq!(run["settings"]["scale"], 1, "read from pgbench_branches");
    assert_eq!(
        run["target"]["endpoint"],
        format!("127.0.0.1:{}", cluster().leader().port)
    );
    assert!(number(&run, "/committed") > 0.0);
    assert_eq!(number(&run, "/failed"), 0.0);
    let tps = number(&run, "/tps");
    let elapsed = number(&run, "/elapsed_s");
    assert!(
        (tps * elapsed - number(&run, "/committed")).abs() < 1.0,
        "tps = committed / elapsed"
    );
    assert!((2.0..7.5).contains(&elapsed), "{elapsed} s for -T 2s");
    assert_percentiles(&run, "/latency_ms");
    assert_eq!(number(&run, "/connections/opened"), 4.0);
    assert_percentiles(&run, "/connections/connect_ms");
    assert_eq!(run["errors"].as_array().map(Vec::len), Some(0));
    let intervals = run["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 2, "one per second: {intervals:?}");
    let summed: f64 = intervals.iter().map(|i| i["committed"].as_f64().unwrap_or(0.0)).sum();
    assert_eq!(summed, number(&run, "/committed"), "the intervals add up to the total");
    assert!(run["admin"].is_null(), "no --admin, no admin figures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_runs_in_every_protocol_with_exact_transaction_counts() {
    pgbench_init();
    let url = leader_url();
    for protocol in ["simple", "extended", "prepared"] {
        let files = Scratch::new(&format!("tpcb-{protocol}"));
        let out = files.arg("run.json");
        bench(&[
            "--url", &url, "-c", "2", "-t", "15", "-w", "tpcb", "-M", protocol, "--json", &out,
        ])
        .await
        .ok();
        let run = json(&files.path("run.json"));
        assert_eq!(run["settings"]["protocol"], protocol);
        assert_eq!(run["settings"]["transactions_per_client"], 15);
        assert_eq!(
            (number(&run, "/committed"), number(&run, "/failed")),
            (30.0, 0.0),
            "{protocol}: {run:#}"
        );
        assert_eq!(run["scripts"][0]["writes"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_sets_variables_and_every_protocol_sends_them() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "CREATE TABLE IF NOT EXISTS bench_script_rows (protocol text, client int, v int); \
         GRANT ALL ON bench_script_rows TO app",
    );
    let files = Scratch::new("script");
    let url = leader_url();
    for protocol in ["simple", "extended", "prepared"] {
        // :client_id is predefined; v is client_id * 10 + 7 whatever random() gave, to check the arithmetic.
        let script = files.write(
            "insert.sql",
            &format!(
                "-- one row per transaction\n\\set r random(1, 1000)\n\\set v :client_id * 10 + 7 + :r * 0\n\
                 INSERT INTO bench_script_rows (protocol, client, v)\n  VALUES ('{protocol}', :client_id, :v);\n"
            ),
        );
        bench(&["--url", &url, "-c", "3", "-t", "5", "-w", &script, "-M", protocol])
            .await
            .ok();
        let rows = psql(
            c,
            c.leader(),
            &format!(
                "SELECT client, count(*), min(v), max(v) FROM bench_script_rows WHERE protocol = '{protocol}' \
                 GROUP BY client ORDER BY client"
            ),
        );
        assert_eq!(rows, "0|5|7|7\n1|5|17|17\n2|5|27|27", "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_per_txn_opens_a_connection_for_every_transaction() {
    pgbench_init();
    let files = Scratch::new("connect");
    let url = leader_url();
    let out = files.arg("run.json");
    bench(&["--url", &url, "-c", "2", "-t", "6", "-C", "--json", &out])
        .await
        .ok();
    let run = json(&files.path("run.json"));
    assert_eq!(number(&run, "/committed"), 12.0);
    assert_eq!(number(&run, "/connections/opened"), 12.0, "none opened before the run");
    assert_eq!(run["settings"]["connect_per_txn"], true);
    // Latency includes the connection, so it is at least the fastest connect.
    assert!(number(&run, "/latency_ms/max") >= number(&run, "/connections/connect_ms/p50") * 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_rate_paces_the_run() {
    pgbench_init();
    let files = Scratch::new("rate");
    let url = leader_url();
    let out = files.arg("run.json");
    bench(&[
        "--url", &url, "-c", "2", "-T", "3s", "-R", "40", "-w", "mixed:50", "--json", &out,
    ])
    .await
    .ok();
    let run = json(&files.path("run.json"));
    // 120 expected arrivals (Poisson, standard deviation about 11).
    let committed = number(&run, "/committed");
    assert!(
        (70.0..=170.0).contains(&committed),
        "{committed} transactions at 40 tps for 3 s"
    );
    assert_eq!(run["settings"]["rate"], 40.0);
    let scripts = run["scripts"].as_array().expect("scripts");
    assert_eq!(scripts.len(), 2, "mixed runs select and tpcb");
    assert!(
        scripts.iter().all(|s| s["committed"].as_f64() > Some(0.0)),
        "{scripts:?}"
    );
}
