//! Pause/resume and the orchestrated changeover (`pgsplit promote`) under load: pgbench through pgsplit, plus a
//! writer connected to the leader directly and a client whose misclassified writes run on the leader as reads.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgsplit::config::Config;
use pgsplit::topology::changeover::{self, Outcome, PromoteRequest, StepState};
use pgsplit::topology::gate::Direction;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::files::{ConfigDir, config_text};
use crate::support::proxy::{TestProxy, connect_direct, routed};
use crate::support::{LocalCluster, cluster, eventually, pgbench_counts, private_cluster, psql, value, wait_replayed};

/// Each side client's bound on statements, whatever happens.
const MAX_STATEMENTS: i64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_holds_writes_lets_reads_run_and_resume_releases_them() {
    let c = cluster();
    let p = routed(c, |_| {}).await;
    let control = p.proxy.context().control.clone();
    let (reader, writer) = (p.connect().await, p.connect().await);
    control.gate.pause(Direction::Writes);
    let held = tokio::spawn(async move {
        let port = value(&writer, "BEGIN; SELECT inet_server_port(); COMMIT").await;
        (port, Instant::now())
    });
    // Reads go on meanwhile (each one a full round trip through a follower).
    for _ in 0..20 {
        assert_eq!(value(&reader, "SELECT 1").await, "1");
    }
    assert!(!held.is_finished(), "the write waits while paused");
    let resumed_at = Instant::now();
    control.gate.resume();
    let (port, finished_at) = held.await.unwrap();
    assert_eq!(port, c.leader().port.to_string(), "then runs on the leader");
    assert!(finished_at >= resumed_at, "it finished only after the resume");
    p.stop().await;
}

/// What a side client saw: the ids whose statement was acknowledged, and how many failed.
struct Tally {
    acknowledged: Vec<i64>,
    failed: u64,
}

/// Runs `statements(id)` on `client`, one round trip each, for ids 1, 2, … until `stop` (or [`MAX_STATEMENTS`]),
/// pacing itself so that it does not crowd pgbench out of the two cores. An id is acknowledged when its last
/// statement answers with the id itself: it says it wrote that id.
fn side_client(
    client: Client,
    stop: Arc<AtomicBool>,
    statements: impl Fn(i64) -> Vec<String> + Send + 'static,
) -> JoinHandle<(Client, Tally)> {
    tokio::spawn(async move {
        let mut tally = Tally {
            acknowledged: Vec::new(),
            failed: 0,
        };
        let mut pace = tokio::time::interval(Duration::from_millis(3));
        for id in 1..=MAX_STATEMENTS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            pace.tick().await;
            let mut answer = None;
            for statement in statements(id) {
                answer = client.simple_query(&statement).await.ok();
            }
            let wrote = answer.iter().flatten().any(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0) == Some(id.to_string().as_str()),
                _ => false,
            });
            match answer {
                Some(_) if wrote => tally.acknowledged.push(id),
                Some(_) => {}
                None => tally.failed += 1,
            }
        }
        (client, tally)
    })
}

/// The acknowledged ids that `table` on `instance` lacks.
fn missing(c: &LocalCluster, instance: &str, table: &str, acknowledged: &[i64]) -> Vec<i64> {
    let instance = c.instance(instance).unwrap().clone();
    let present: HashSet<i64> = psql(c, &instance, &format!("SELECT id FROM {table}"))
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    acknowledged
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect()
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
    // `drill_bump` writes on a primary (and answers the id it wrote), but the config below calls it read-only:
    // pgsplit routes it as a read. Called right after the same client's write, with `read_your_writes_wait =
    // "0s"`, it runs on the leader as a read — a unit pgsplit does not count as a write, so only the quiesce step
    // keeps its commit from being lost. On a standby it writes nothing and answers NULL (a follower refusing it
    // would teach pgsplit that it writes, and it would go as a write from then on).
    psql(
        &c,
        &leader,
        "CREATE TABLE direct_log (id bigint PRIMARY KEY); CREATE TABLE bumps (id bigint PRIMARY KEY); \
         CREATE FUNCTION drill_bump(n bigint) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$ BEGIN \
           IF pg_is_in_recovery() THEN RETURN NULL; END IF; \
           INSERT INTO bumps VALUES (n); RETURN n; END $$; \
         GRANT ALL ON direct_log, bumps TO app;",
    );
    wait_replayed(&c);

    let extra = "[routing]\nread_your_writes_wait = \"0s\"\nread_only_functions = [\"drill_bump\"]\n";
    let dir = ConfigDir::new(&config_text(&c, &[1, 1], extra));
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

    let stop = Arc::new(AtomicBool::new(false));
    // Straight into the old leader, not through pgsplit: after the fence these fail (25006), never get lost.
    let direct = side_client(connect_direct(&c, &leader).await, stop.clone(), |id| {
        vec![format!("INSERT INTO direct_log VALUES ({id}) RETURNING id")]
    });
    // Through pgsplit: a write (it raises the client's floor), then the misclassified "read", which therefore
    // runs on the leader.
    let bumper = side_client(p.connect().await, stop.clone(), |id| {
        vec![
            format!("INSERT INTO bumps VALUES (-{id})"),
            format!("SELECT drill_bump({id})"),
        ]
    });

    let pgbench = tokio::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &p.port().to_string(), "-U", c.app_user()])
        .args(["-c", "8", "-j", "8", "-T", "12", "-n", c.app_database()])
        .env("PGPASSWORD", c.app_password())
        .output();
    let pgbench = tokio::spawn(pgbench);
    // The changeover starts about 4 s into the 12 s run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let control = p.proxy.context().control.clone();
    let old_leader = topology.load().leader.clone();
    let progress = changeover::run(&control, &PromoteRequest::new("f1"))
        .await
        .expect("no other changeover runs");
    let out = pgbench.await.unwrap().expect("pgbench runs");
    stop.store(true, Ordering::Relaxed);
    let (_direct, direct) = direct.await.unwrap();
    let (_bumper, bumps) = bumper.await.unwrap();
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
    let on_leader: Vec<_> = old_leader
        .routed()
        .into_iter()
        .filter(|(r, _)| *r != "transaction")
        .collect();
    println!(
        "changeover drill: pgbench {processed} transactions, {failed} failed, longest write pause {pause} ms; \
         direct writer {} acknowledged, {} failed; misclassified reads {} acknowledged, {} failed; old leader \
         served {on_leader:?}",
        direct.acknowledged.len(),
        direct.failed,
        bumps.acknowledged.len(),
        bumps.failed
    );
    assert_eq!(failed, 0, "no failed transaction");
    assert!(processed > 0);
    assert!(
        !direct.acknowledged.is_empty() && !bumps.acknowledged.is_empty(),
        "the side clients ran"
    );
    assert!(
        on_leader.iter().any(|(r, n)| *r == "read_your_writes" && *n > 0),
        "reads ran on the old leader: {on_leader:?}"
    );

    // Every acknowledged commit is on the new leader: pgbench's, the direct writer's, the misclassified reads'.
    let f1 = c.instance("f1").unwrap().clone();
    let history = psql(&c, &f1, "SELECT count(*) FROM pgbench_history WHERE delta <> 424242");
    assert_eq!(
        history.trim(),
        processed.to_string(),
        "pgbench_history on f1 = transactions reported"
    );
    assert_eq!(
        missing(&c, "f1", "direct_log", &direct.acknowledged),
        Vec::<i64>::new(),
        "direct commits lost"
    );
    assert_eq!(
        missing(&c, "f1", "bumps", &bumps.acknowledged),
        Vec::<i64>::new(),
        "misclassified writes lost"
    );

    // The old timeline's floor still compares: the writer sees its row, wherever its read runs.
    assert_eq!(value(&writer, "SHOW pgsplit.last_write_lsn").await, floor_before);
    assert_eq!(
        value(&writer, marker).await,
        "1",
        "the write from before the changeover is read back"
    );
    // A write on the new timeline: f2 still follows the fenced old leader, on the old timeline, so it serves no
    // reads at all; the writer's read of it runs on the new leader.
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
