//! What the changeover waits for besides the writes pgsplit routed: a transaction opened on the leader directly
//! that commits during the changeover is on the new leader (or failed, never acknowledged and lost); and a reload
//! asked for meanwhile waits its turn and then reads the file the changeover wrote.

use std::sync::Arc;
use std::time::Duration;

use pgsplit::topology::changeover::{self, Outcome, Progress, PromoteRequest, Step, StepState};

use super::files::{ConfigDir, config_text};
use crate::support::proxy::{TestProxy, changeover_until, connect_direct};
use crate::support::{WAIT, eventually, private_cluster, psql, value, wait_replayed};

fn state_of(progress: &Progress, step: Step) -> Option<StepState> {
    progress.step(step).map(|s| s.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_transaction_committing_during_a_changeover_is_on_the_new_leader_and_a_queued_reload_keeps_it() {
    let c = private_cluster(1);
    psql(
        &c,
        c.leader(),
        "CREATE TABLE marks (id int PRIMARY KEY, via text); GRANT ALL ON marks TO app;",
    );
    wait_replayed(&c);
    let dir = ConfigDir::new(&config_text(&c, &[1], ""));
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let control = p.proxy.context().control.clone();
    let topology = p.proxy.context().topology.clone();
    eventually("f1 usable", || {
        topology.load().pools[0].instances[0]
            .health
            .usable_for()
            .map(drop)
            .ok_or("not yet".into())
    })
    .await;

    // Through pgsplit: a write transaction left open, so that the changeover waits in its drain.
    let routed = p.connect().await;
    routed
        .batch_execute("BEGIN; INSERT INTO marks VALUES (1, 'pgsplit')")
        .await
        .expect("a write through pgsplit");
    // On the leader directly: a transaction holding a transaction id, which pgsplit never routed.
    let direct = connect_direct(&c, c.leader()).await;
    direct
        .batch_execute("BEGIN; INSERT INTO marks VALUES (2, 'direct')")
        .await
        .expect("a write on the leader directly");

    let mut request = PromoteRequest::new("f1");
    request.drain_timeout = Duration::from_secs(20);
    let run = tokio::spawn({
        let control = control.clone();
        async move { changeover::run(&control, &request).await }
    });
    changeover_until(&control, "the drain waits for the open write", |p| {
        state_of(p, Step::Drain) == Some(StepState::Running)
    })
    .await;

    // A reload asked for now must wait for the changeover. Polled once here, so that whatever it does before it
    // waits happens now, while the file still names the old leader.
    let reload = Arc::clone(&control);
    let reload = reload.reload();
    tokio::pin!(reload);
    tokio::select! {
        biased;
        _ = &mut reload => panic!("a reload ran in the middle of a changeover"),
        () = std::future::ready(()) => {}
    }

    routed
        .batch_execute("COMMIT")
        .await
        .expect("the write through pgsplit commits");
    changeover_until(&control, "the old leader fenced", |p| {
        state_of(p, Step::Fence) == Some(StepState::Done) || !p.is_running()
    })
    .await;
    // The direct transaction commits after the fence: the old leader still takes it (the fence holds back only
    // new transactions). Acknowledged, it must reach the new leader.
    let committed = direct.batch_execute("COMMIT").await;
    let progress = tokio::time::timeout(WAIT, run)
        .await
        .expect("the changeover ends")
        .unwrap()
        .expect("no other changeover runs");
    for step in &progress.steps {
        println!(
            "{:<12} {:<8} {:>5} ms  {}",
            step.step, step.state, step.millis, step.detail
        );
    }
    assert_eq!(progress.outcome, Outcome::Done, "{progress:#?}");
    let f1 = c.instance("f1").unwrap().clone();
    let on_f1 = psql(&c, &f1, "SELECT string_agg(via, ',' ORDER BY id) FROM marks");
    match committed {
        Ok(()) => assert_eq!(
            on_f1, "pgsplit,direct",
            "the acknowledged direct commit is on the new leader"
        ),
        Err(error) => {
            println!("the direct commit failed: {error}");
            assert_eq!(on_f1, "pgsplit");
        }
    }

    // The reload ran after the changeover, with the file the changeover wrote: f1 stays the leader.
    let reloaded = tokio::time::timeout(WAIT, reload).await.expect("the reload ends");
    println!("queued reload: {reloaded:?}");
    reloaded.expect("the file is valid");
    assert_eq!(
        &*topology.load().leader.name,
        "f1",
        "the queued reload kept the new leader"
    );
    let client = p.connect().await;
    let port = value(&client, "BEGIN; SELECT inet_server_port(); COMMIT").await;
    assert_eq!(port, f1.port.to_string(), "writes go to the new leader");
    p.stop().await;
}
