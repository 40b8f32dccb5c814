//! An event in the middle of a run: `--promote-at` runs pgsplit's orchestrated changeover under load, and the run
//! reports the write pause as the clients saw it next to pgsplit's own account.

use serde_json::Value;

use crate::support::private_cluster;
use crate::support::proxy::routed;
use crate::support::wait_replayed;
use crate::tool::{Scratch, bench, json, number};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_at_shows_the_write_pause_clients_saw() {
    let c = private_cluster(2);
    bench(&["--url", &c.app_url(c.leader()), "--init"]).await.ok();
    wait_replayed(&c);
    let p = routed(&c, |_| {}).await;
    let files = Scratch::new("changeover");
    let url = format!("postgres://app:app@127.0.0.1:{}/{}", p.port(), p.database);
    let (admin, out) = (p.proxy.admin_addr().to_string(), files.arg("run.json"));
    let ran = bench(&[
        "--url",
        &url,
        "-c",
        "4",
        "-T",
        "4s",
        "-w",
        "tpcb",
        "--admin",
        &admin,
        "--promote-at",
        "1s",
        "f1",
        "--json",
        &out,
    ])
    .await
    .ok();
    let run = json(&files.path("run.json"));
    let events = run["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        (&event["action"], &event["outcome"]),
        (&Value::from("promote f1"), &Value::from("done"))
    );
    assert!(number(event, "/started_at_s") >= 1.0, "{event:#}");
    let held = number(event, "/proxy_write_pause_ms");
    let seen = number(event, "/clients/longest_write_gap_ms");
    println!("changeover under bench: pgsplit held writes {held} ms; clients saw {seen} ms without a write");
    // Clients wait at least as long as pgsplit held their writes (less a few ms of clock reading), and writes
    // went on after it.
    assert!(seen + 5.0 >= held, "clients saw {seen} ms, pgsplit held {held} ms");
    assert!(
        number(event, "/clients/committed") > 0.0,
        "writes went on after the changeover: {event:#}"
    );
    assert!(
        number(event, "/clients/failed") <= 2.0,
        "a changeover fails no or few transactions: {:#}",
        run["errors"]
    );
    let f1 = run["admin"]["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == "f1"))
        .expect("f1 in the admin figures");
    assert_eq!(
        (&f1["role_at_start"], &f1["role"]),
        (&Value::from("follower"), &Value::from("leader"))
    );
    assert!(ran.stdout.contains("promote f1: done"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("clients saw: longest gap without a write"),
        "{}",
        ran.stdout
    );
    p.stop().await;
}
