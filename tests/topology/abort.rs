//! A changeover whose old leader stops answering (SIGSTOP to its processes: a hung host) neither hangs nor keeps
//! writes held: an operator's abort (`pgsplit promote --abort`) rolls it back, and without one its own deadlines
//! do. Either way writes are released while the leader is still stopped, the fence is lifted once it answers
//! again, and the old leader goes on as the leader.

use std::time::{Duration, Instant};

use pgsplit::topology::changeover::{self, Outcome, PromoteRequest, Step, StepState};
use pgsplit::topology::control::Control;
use pgsplit::topology::gate::Direction;
use tokio_postgres::Client;

use super::files::{ConfigDir, config_text};
use crate::support::freeze::Frozen;
use crate::support::proxy::{TestProxy, changeover_until, connect_direct, pgsplit_cli};
use crate::support::{LocalCluster, eventually, private_cluster, psql, value, wait_replayed};

/// Starts a changeover to f1 that will wait in its quiesce step for a transaction held open on the leader
/// directly (returned; it holds row `id`), for up to 30 s.
async fn start_stuck_changeover(c: &LocalCluster, control: &std::sync::Arc<Control>, id: u32) -> Client {
    let direct = connect_direct(c, c.leader()).await;
    direct
        .batch_execute(&format!("BEGIN; INSERT INTO marks VALUES ({id})"))
        .await
        .expect("a transaction on the leader directly");
    let mut request = PromoteRequest::new("f1");
    request.drain_timeout = Duration::from_secs(30);
    changeover::start(control, request).expect("no other changeover runs");
    changeover_until(control, "the changeover waits in quiesce", |p| {
        p.step(Step::Quiesce).is_some_and(|s| s.state == StepState::Running)
    })
    .await;
    direct
}

/// Writes through pgsplit land on the old leader, which is writable: the changeover left nothing behind.
async fn writes_go_on_on_the_old_leader(p: &TestProxy, c: &LocalCluster, id: u32) {
    let client = p.connect().await;
    let port = value(
        &client,
        &format!("INSERT INTO marks VALUES ({id}) RETURNING inet_server_port()"),
    )
    .await;
    assert_eq!(port, c.leader().port.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changeover_stuck_on_a_leader_that_stops_answering_is_aborted_or_times_out_and_rolls_back() {
    let c = private_cluster(1);
    psql(
        &c,
        c.leader(),
        "CREATE TABLE marks (id int PRIMARY KEY); GRANT ALL ON marks TO app;",
    );
    wait_replayed(&c);
    // Statements of pgsplit's own get health.timeout, 2 s: the abort below comes long before that.
    let dir = ConfigDir::new(&config_text(&c, &[1], ""));
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let control = p.proxy.context().control.clone();
    let deadline = control.deadline();
    let admin = p.proxy.admin_addr();
    let topology = p.proxy.context().topology.clone();
    eventually("f1 usable", || {
        topology.load().pools[0].instances[0]
            .health
            .usable_for()
            .map(drop)
            .ok_or("not yet".into())
    })
    .await;

    let (code, _, err) = pgsplit_cli(admin, &["promote", "--abort"]).await;
    assert_eq!(code, 2, "nothing to abort: {err}");
    assert!(err.contains("no changeover is running"), "{err}");

    // 1. The operator aborts a changeover waiting on a leader that answers: writes go on at once.
    let direct = start_stuck_changeover(&c, &control, 10).await;
    let asked = Instant::now();
    changeover::abort(&control).expect("a changeover to abort");
    let progress = changeover_until(&control, "the changeover over", |p| !p.is_running()).await;
    let over_after_abort = asked.elapsed();
    println!("abort: rolled back {over_after_abort:?} after the abort, with the leader answering");
    assert_eq!(progress.outcome, Outcome::RolledBack, "{progress:#?}");
    assert!(!control.gate.is_paused(Direction::Writes));
    direct
        .batch_execute("COMMIT")
        .await
        .expect("the leader is writable again");
    writes_go_on_on_the_old_leader(&p, &c, 11).await;

    // 2. The leader stops answering while the changeover waits on it; the operator aborts.
    let direct = start_stuck_changeover(&c, &control, 1).await;
    let frozen = Frozen::freeze(c.leader());
    let asked = Instant::now();
    let abort = tokio::spawn(pgsplit_cli(admin, &["promote", "--abort"]));
    eventually("the held writes released", || {
        (!control.gate.is_paused(Direction::Writes))
            .then_some(())
            .ok_or("writes still held".into())
    })
    .await;
    let released_after_abort = asked.elapsed();
    frozen.thaw();
    let (code, out, err) = abort.await.unwrap();
    let progress = control.board().current().expect("a changeover record");
    println!("{out}{err}abort: writes released {released_after_abort:?} after the abort, with the leader stopped");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("changeover rolled back: aborted by the operator"), "{out}");
    assert_eq!(progress.outcome, Outcome::RolledBack, "{progress:#?}");
    assert!(progress.abort_requested);
    assert_eq!(
        progress.step(Step::Rollback).map(|s| s.state),
        Some(StepState::Done),
        "{progress:#?}"
    );
    assert!(progress.step(Step::Promote).is_none(), "never promoted");
    assert!(
        released_after_abort < 2 * deadline + Duration::from_secs(3),
        "released within a statement deadline or two: {released_after_abort:?}"
    );
    direct
        .batch_execute("COMMIT")
        .await
        .expect("the leader is writable again");
    writes_go_on_on_the_old_leader(&p, &c, 2).await;

    // 3. The same hang with nobody to abort: the changeover's own deadline ends it.
    let direct = start_stuck_changeover(&c, &control, 3).await;
    let frozen = Frozen::freeze(c.leader());
    let stopped = Instant::now();
    eventually("the held writes released", || {
        (!control.gate.is_paused(Direction::Writes))
            .then_some(())
            .ok_or("writes still held".into())
    })
    .await;
    let released_after_hang = stopped.elapsed();
    frozen.thaw();
    let progress = changeover_until(&control, "the changeover over", |p| !p.is_running()).await;
    for step in &progress.steps {
        println!(
            "{:<12} {:<8} {:>5} ms  {}",
            step.step, step.state, step.millis, step.detail
        );
    }
    println!("bound: writes released {released_after_hang:?} after the leader stopped answering");
    assert_eq!(progress.outcome, Outcome::RolledBack, "{progress:#?}");
    let error = progress.error.clone().unwrap_or_default();
    assert!(error.contains("no answer within"), "{error}");
    assert!(!progress.abort_requested);
    assert_eq!(
        progress.step(Step::Rollback).map(|s| s.state),
        Some(StepState::Done),
        "{progress:#?}"
    );
    assert!(
        released_after_hang < 3 * deadline + Duration::from_secs(3),
        "released within a few statement deadlines: {released_after_hang:?}"
    );
    direct
        .batch_execute("COMMIT")
        .await
        .expect("the leader is writable again");
    writes_go_on_on_the_old_leader(&p, &c, 4).await;
    assert_eq!(&*topology.load().leader.name, "leader");
    p.stop().await;
}
