//! Read-your-writes with Patroni (issue 21 item 6): a floor taken on one pgsplit instance (`SHOW
//! pgsplit.last_write_lsn`) carried to a connection on another (`SET pgsplit.min_lsn`) shows it the row, and
//! floors stay valid across a switchover: WAL positions only grow from one timeline to the next. The replicas'
//! replay is stopped while a floor is checked, so a read that ignored it would miss the row.

use std::time::{Duration, SystemTime};

use pgsplit::demo::cluster::PatroniCluster;

use crate::support::patroni::{PatroniProxy, turn};
use crate::support::{eventually, value};

/// Replay stopped on every member but Patroni's leader: their startup (recovery) process is SIGSTOPped — WAL still
/// arrives, nothing is applied — and SIGCONTinued on drop, also when the test fails. (Patroni resumes a replay
/// paused with `pg_wal_replay_pause()` at its next loop, and resets a `recovery_min_apply_delay` it did not set.)
struct ReplayStopped(Vec<libc::pid_t>);

impl ReplayStopped {
    fn on_replicas(cluster: &PatroniCluster) -> ReplayStopped {
        let leader = cluster.leader().unwrap().name.clone();
        let mut stopped = ReplayStopped(Vec::new());
        for member in cluster.members().iter().filter(|m| m.name != leader) {
            let sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'";
            let pid: libc::pid_t = cluster.psql_on(member, "postgres", sql).unwrap().parse().unwrap();
            // SAFETY: kill(2) on the startup process of a server this test's cluster runs.
            assert_eq!(
                unsafe { libc::kill(pid, libc::SIGSTOP) },
                0,
                "{}: SIGSTOP {pid}",
                member.name
            );
            stopped.0.push(pid);
        }
        stopped
    }
}

impl Drop for ReplayStopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as above; resumes what `on_replicas` stopped.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Writes row `id` through `writer` and returns the connection's floor afterwards.
async fn write(writer: &tokio_postgres::Client, id: i64) -> String {
    writer
        .simple_query(&format!("INSERT INTO ryw_patroni VALUES ({id})"))
        .await
        .unwrap();
    value(writer, "SHOW pgsplit.last_write_lsn").await
}

/// Whether a fresh connection through `p`, with `floor` carried in or not, sees row `id`.
async fn sees(p: &PatroniProxy, floor: Option<&str>, id: i64) -> bool {
    let reader = p.connect().await;
    if let Some(floor) = floor {
        reader
            .batch_execute(&format!("SET pgsplit.min_lsn = '{floor}'"))
            .await
            .unwrap();
    }
    let seen = value(&reader, &format!("SELECT count(*) FROM ryw_patroni WHERE id = {id}")).await == "1";
    eprintln!(
        "read of {id} with floor {floor:?}: seen {seen}, route {}",
        value(&reader, "SHOW pgsplit.route").await
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_carries_between_pgsplit_instances_and_across_a_switchover() {
    let (_turn, cluster) = turn().await;
    let old = cluster.leader().unwrap().clone();
    cluster
        .psql(
            &old,
            "DROP TABLE IF EXISTS ryw_patroni; CREATE TABLE ryw_patroni (id bigint PRIMARY KEY); \
             GRANT ALL ON ryw_patroni TO app",
        )
        .unwrap();
    cluster.wait_replayed(Duration::from_secs(30)).unwrap();
    let a = PatroniProxy::start(cluster, "").await;
    let b = PatroniProxy::start(cluster, "").await;
    let writer = a.connect().await;

    let stopped = ReplayStopped::on_replicas(cluster);
    let floor = write(&writer, 1).await;
    let missed = !sees(&b, None, 1).await;
    let carried = sees(&b, Some(&floor), 1).await;
    drop(stopped);
    assert!(
        missed,
        "without the floor, a read on late replicas misses the row (the check means something)"
    );
    assert!(carried, "with A's floor, B's read sees A's row");

    let new = cluster.members().iter().find(|m| m.name != old.name).unwrap().clone();
    let at = SystemTime::now() + Duration::from_secs(2);
    let (code, answer) = cluster.switchover(&old, &old.name, &new.name, Some(at)).unwrap();
    assert_eq!(code, 202, "{answer}");
    eventually("Patroni names the new leader", || match cluster.leader() {
        Ok(leader) if leader.name == new.name => Ok(()),
        Ok(leader) => Err(leader.name.clone()),
        Err(e) => Err(e.to_string()),
    })
    .await;
    a.wait_following(cluster).await;
    b.wait_following(cluster).await;

    // The floor from the old leader's timeline still holds on the new one, for the writer and for B.
    assert_eq!(
        value(&writer, "SELECT count(*) FROM ryw_patroni WHERE id = 1").await,
        "1"
    );
    assert!(sees(&b, Some(&floor), 1).await, "the old floor on the new timeline");
    let stopped = ReplayStopped::on_replicas(cluster);
    let after = write(&writer, 2).await;
    let missed = !sees(&b, None, 2).await;
    let carried = sees(&b, Some(&after), 2).await;
    let own = value(&writer, "SELECT count(*) FROM ryw_patroni WHERE id = 2").await;
    drop(stopped);
    assert!(missed, "the replicas of the new leader are behind");
    assert!(carried, "a floor taken on the new leader carries to B");
    assert_eq!(own, "1", "the writer reads its own write on the new leader's timeline");
    println!("floors: before the switchover {floor}, after {after}");
    a.stop().await;
    b.stop().await;
}
