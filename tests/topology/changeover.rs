//! Pause/resume and the orchestrated changeover (`pgsplit promote`) under load.

use std::time::{Duration, Instant};

use pgsplit::config::Config;
use pgsplit::topology::changeover::{Outcome, PromoteRequest, StepState};
use pgsplit::topology::gate::Direction;

use super::files::{ConfigDir, config_text};
use crate::support::proxy::{TestProxy, routed};
use crate::support::{cluster, eventually, pgbench_counts, private_cluster, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_holds_writes_lets_reads_run_and_resume_releases_them() {
    let c = cluster();
    let p = routed(c, |_| {}).await;
    let control = p.proxy.context().control.clone();
    let (reader, writer) = (p.connect().await, p.connect().await);
    control.gate.pause(Direction::Writes);
    let held = tokio::spawn(async move {
        let started = Instant::now();
        let port = value(&writer, "BEGIN; SELECT inet_server_port(); COMMIT").await;
        (port, started.elapsed())
    });
    // Reads go on meanwhile (each one a full round trip through a follower).
    for _ in 0..20 {
        assert_eq!(value(&reader, "SELECT 1").await, "1");
    }
    assert!(!held.is_finished(), "the write waits while paused");
    let paused_for = Instant::now();
    control.gate.resume();
    let (port, waited) = held.await.unwrap();
    assert_eq!(port, c.leader().port.to_string(), "then runs on the leader");
    assert!(waited >= paused_for.elapsed(), "it waited for the resume");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changeover_under_pgbench_loses_no_commit_and_fails_no_transaction() {
    let c = private_cluster(2);
    let leader = c.leader().clone();
    let init = c
        .tools()
        .command("pgbench")
        .args(["-i", "-s", "1", "-q", "-h"])
        .arg(&leader.socket_dir)
        .args(["-p", &leader.port.to_string(), "-U", c.app_user(), c.app_database()])
        .output()
        .expect("pgbench -i runs");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    c.wait_replayed(Duration::from_secs(30)).expect("followers caught up");

    let dir = ConfigDir::new(&config_text(&c, &[1, 1], ""));
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let topology = p.proxy.context().topology.clone();
    eventually("followers usable", || {
        let t = topology.load();
        t.pools[0]
            .instances
            .iter()
            .all(|i| i.health.usable_for().is_some())
            .then_some(())
            .ok_or("not yet".into())
    })
    .await;

    // A client that wrote before the changeover keeps its read-your-writes floor across it.
    let writer = p.connect().await;
    let marker = "SELECT count(*) FROM pgbench_history WHERE delta = 424242";
    value(
        &writer,
        "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 424242) RETURNING 1",
    )
    .await;
    let floor_before = value(&writer, "SHOW pgsplit.last_write_lsn").await;

    let pgbench = tokio::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &p.port().to_string(), "-U", c.app_user()])
        .args(["-c", "8", "-j", "8", "-T", "20", "-n", c.app_database()])
        .env("PGPASSWORD", c.app_password())
        .output();
    let pgbench = tokio::spawn(pgbench);
    // The changeover starts about 5 s into the 20 s run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let progress = p.proxy.context().control.promote(PromoteRequest::new("f1")).await;
    let out = pgbench.await.unwrap().expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in &progress.steps {
        println!(
            "changeover {:?}: {:?} in {} ms — {}",
            step.step, step.state, step.millis, step.detail
        );
    }
    assert_eq!(progress.outcome, Outcome::Done, "{progress:#?}");
    assert!(
        progress.steps.iter().all(|s| s.state != StepState::Failed),
        "{progress:#?}"
    );
    assert!(
        out.status.success(),
        "pgbench: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (processed, failed) = pgbench_counts(&stdout);
    let pause = progress.write_pause_ms.expect("the pause was measured");
    println!("changeover drill: {processed} transactions, {failed} failed, longest write pause {pause} ms");
    assert_eq!(failed, 0, "no failed transaction");
    assert!(processed > 0);

    // Every acknowledged commit is on the new leader.
    let f1 = c.instance("f1").unwrap().clone();
    let history = c
        .psql(&f1, "SELECT count(*) FROM pgbench_history WHERE delta <> 424242")
        .unwrap();
    assert_eq!(
        history.trim(),
        processed.to_string(),
        "pgbench_history on f1 = transactions reported"
    );

    // The old timeline's floor still compares: the writer sees its row, wherever its read runs.
    assert_eq!(value(&writer, "SHOW pgsplit.last_write_lsn").await, floor_before);
    assert_eq!(
        value(&writer, marker).await,
        "1",
        "the write from before the changeover is read back"
    );
    // A write on the new timeline: f2 still follows the fenced old leader and never gets it, so the writer's
    // read of it runs on the new leader (because of the floor, or because f2 fell too far behind to be usable).
    value(
        &writer,
        "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 424242) RETURNING 1",
    )
    .await;
    assert_eq!(
        value(&writer, marker).await,
        "2",
        "the write after the changeover is read back"
    );
    let route = value(&writer, "SHOW pgsplit.route").await;
    assert!(route.starts_with("instance=f1 "), "{route}");

    // Writes now land on f1, and the file says so.
    let client = p.connect().await;
    let port = value(&client, "BEGIN; SELECT inet_server_port(); COMMIT").await;
    assert_eq!(port, f1.port.to_string());
    value(
        &client,
        "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 0) RETURNING 1",
    )
    .await;
    let written = Config::load(&dir.path()).expect("the rewritten file is valid");
    assert_eq!((written.leader.name.as_str(), written.leader.port), ("f1", f1.port));
    assert_eq!(written.follower_pools[0].instances.len(), 1, "only f2 follows");
    assert!(
        dir.read().starts_with("# written by the topology tests"),
        "comments kept"
    );
    p.stop().await;
}
