//! Against pgsplit in front of a cluster, with its admin API: which instance served what, the replication lag
//! seen, read-your-writes reads.

use pgsplit::config::AuthMethod;
use serde_json::Value;

use crate::support::proxy::{TestProxy, routed};
use crate::support::{cluster, pgbench_init, private_cluster, psql, wait_replayed};
use crate::tool::{Scratch, bench, json, number};

fn proxy_url(p: &TestProxy) -> String {
    format!("postgres://app:app@127.0.0.1:{}/{}", p.port(), p.database)
}

fn instance<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["admin"]["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no instance {name} in {:#}", run["admin"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_pgsplit_show_the_split_over_the_followers() {
    pgbench_init();
    let p = routed(cluster(), |_| {}).await;
    let files = Scratch::new("split");
    let (url, admin, out) = (proxy_url(&p), p.proxy.admin_addr().to_string(), files.arg("run.json"));
    let ran = bench(&[
        "--url", &url, "-c", "4", "-j", "2", "-T", "2s", "--admin", &admin, "--json", &out,
    ])
    .await
    .ok();
    let run = json(&files.path("run.json"));
    let committed = number(&run, "/committed");
    assert!(committed > 0.0 && number(&run, "/failed") == 0.0, "{run:#}");
    let (f1, f2, leader) = (instance(&run, "f1"), instance(&run, "f2"), instance(&run, "leader"));
    assert!(
        number(f1, "/units") > 0.0 && number(f2, "/units") > 0.0,
        "both followers served reads"
    );
    assert_eq!(
        (&f1["role"], &leader["role"]),
        (&Value::from("follower"), &Value::from("leader"))
    );
    // Every select is one unit of work; the clients cut off at the end had theirs routed but not counted.
    let units = number(&run, "/admin/units");
    assert!(
        units >= committed && units <= committed + 4.0,
        "{units} units for {committed} transactions"
    );
    let shares: f64 = ["leader", "f1", "f2"]
        .iter()
        .map(|n| number(instance(&run, n), "/share"))
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares add up to 1: {shares}");
    assert!(f1["max_lag_bytes"].is_u64(), "followers have a lag figure: {f1:#}");
    assert!(leader["max_lag_bytes"].is_null(), "the leader has none");
    assert!(!run["admin"]["samples"].as_array().expect("samples").is_empty());
    assert!(
        ran.stdout.contains("units of work routed during the run"),
        "{}",
        ran.stdout
    );
    for name in ["leader", "f1", "f2"] {
        assert!(
            ran.stdout.lines().any(|l| l.trim_start().starts_with(name)),
            "{name} in\n{}",
            ran.stdout
        );
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_replaying_shows_its_lag_and_sends_fresh_reads_elsewhere() {
    let c = private_cluster(1);
    let leader_url = c.app_url(c.leader());
    let init = bench(&["--url", &leader_url, "--init", "--scale", "1"]).await.ok();
    assert!(init.stdout.contains("scale 1"), "{}", init.stdout);
    wait_replayed(&c);
    let p = routed(&c, |_| {}).await;
    let f1 = c.followers()[0].clone();
    psql(&c, &f1, "SELECT pg_wal_replay_pause()");
    let files = Scratch::new("lag");
    let (url, admin, out) = (proxy_url(&p), p.proxy.admin_addr().to_string(), files.arg("run.json"));
    let ran = bench(&[
        "--url", &url, "-c", "3", "-T", "2s", "-w", "mixed:50", "--admin", &admin, "--json", &out,
    ])
    .await;
    psql(&c, &f1, "SELECT pg_wal_replay_resume()");
    ran.ok();
    let run = json(&files.path("run.json"));
    let lag = number(instance(&run, "f1"), "/max_lag_bytes");
    assert!(lag > 0.0, "f1 fell behind while paused: {:#}", run["admin"]);
    // Reads after a client's own writes had to see them: f1 never replayed those, so the leader served them.
    let ryw = &run["admin"]["read_your_writes"];
    assert!(number(ryw, "/on_leader") > 0.0, "{ryw:#}");
    assert_eq!(number(&run, "/failed"), 0.0, "{:#}", run["errors"]);
    p.stop().await;
}

/// Raises this process's soft limit on open files to `needed` (the proxy under test holds a socket per client).
fn open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= needed,
            "the hard limit on open files is {}: raise it",
            limit.rlim_max
        );
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_run_through_pgsplit() {
    pgbench_init();
    open_files(12_000);
    // Logins without a password exchange: this is about holding 10,000 clients, not 10,000 SCRAM proofs.
    let p = routed(cluster(), |config| {
        config.proxy.max_client_connections = 10_000;
        config.users[0].auth = AuthMethod::Trust;
    })
    .await;
    let files = Scratch::new("10k");
    let (url, out) = (proxy_url(&p), files.arg("run.json"));
    bench(&["--url", &url, "-c", "10000", "-j", "2", "-t", "1", "--json", &out])
        .await
        .ok();
    let run = json(&files.path("run.json"));
    assert_eq!(
        (number(&run, "/committed"), number(&run, "/failed")),
        (10_000.0, 0.0),
        "{:#}",
        run["errors"]
    );
    assert_eq!(number(&run, "/connections/opened"), 10_000.0);
    p.stop().await;
}
