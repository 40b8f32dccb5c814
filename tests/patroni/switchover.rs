//! A switchover Patroni scheduled ahead, followed by two pgsplit instances under pgbench (issue 21 item 3): each
//! holds new writes before the time, lets running ones finish, and releases them on the new leader once
//! PostgreSQL confirms it — no client error, no lost commit.

use std::time::{Duration, SystemTime};

use crate::support::patroni::{PatroniProxy, longest_transaction_ms, pgbench_init, pgbench_run, turn};
use crate::support::pgbench_counts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_scheduled_ahead_under_pgbench_through_two_pgsplits_fails_and_loses_nothing() {
    let (_turn, cluster) = turn().await;
    tokio::task::spawn_blocking(|| pgbench_init(cluster)).await.unwrap();
    let a = PatroniProxy::start(cluster, "").await;
    let b = PatroniProxy::start(cluster, "").await;
    let old = cluster.leader().unwrap().clone();
    let new = cluster.members().iter().find(|m| m.name != old.name).unwrap().clone();

    let run_a = tokio::spawn(pgbench_run(cluster, a.port(), 4, 9, "switchover-a"));
    let run_b = tokio::spawn(pgbench_run(cluster, b.port(), 4, 9, "switchover-b"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = SystemTime::now() + Duration::from_secs(3);
    let (code, answer) = cluster.switchover(&old, &old.name, &new.name, Some(at)).unwrap();
    assert_eq!(code, 202, "Patroni schedules it: {answer}");

    let out_a = run_a.await.unwrap().expect("pgbench runs");
    let out_b = run_b.await.unwrap().expect("pgbench runs");
    let mut transactions = 0;
    for (name, out) in [("a", &out_a), ("b", &out_b)] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench through pgsplit {name}: {stderr}\n{stdout}"
        );
        assert!(!stderr.contains("aborted"), "pgbench through pgsplit {name}: {stderr}");
        let (processed, failed) = pgbench_counts(&stdout);
        assert_eq!(failed, 0, "pgbench through pgsplit {name}: {stdout}");
        assert!(processed > 0);
        transactions += processed;
    }

    assert_eq!(
        cluster.leader().unwrap().name,
        new.name,
        "Patroni carried the switchover out"
    );
    let history = cluster.psql(&new, "SELECT count(*) FROM pgbench_history").unwrap();
    assert_eq!(
        history,
        transactions.to_string(),
        "every reported transaction is on the new leader"
    );

    let mut report = Vec::new();
    for (name, p) in [("a", &a), ("b", &b)] {
        assert_eq!(&*p.proxy.context().topology.load().leader.name, new.name.as_str());
        let status = pgsplit::admin::Status::capture(p.proxy.context()).patroni.unwrap();
        let hold = status.last_hold.expect("writes were held");
        assert_eq!(hold.released_on.as_deref(), Some(new.name.as_str()), "{hold:?}");
        let switchover = status.switchover.expect("the switchover was followed");
        assert_eq!(
            switchover.running_at_time, None,
            "drained before the time: {switchover:?}"
        );
        report.push(format!(
            "pgsplit {name}: writes held {} ms ({}), drained in {:?} ms; longest pgbench transaction {:.0} ms",
            hold.held_ms.unwrap_or_default(),
            hold.reason,
            switchover.drained_ms,
            longest_transaction_ms(cluster, &format!("switchover-{name}")),
        ));
    }
    println!(
        "scheduled switchover {} -> {} under pgbench through two pgsplits: {transactions} transactions, 0 failed, \
         pgbench_history = {transactions}\n{}",
        old.name,
        new.name,
        report.join("\n")
    );
    a.stop().await;
    b.stop().await;
}
