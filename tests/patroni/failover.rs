//! Unplanned leader changes (issue 21 item 4): the leader's postmaster killed (Patroni fails over in about 2 s with
//! `primary_start_timeout: 0`). Reads go on on the replicas throughout; writes are held while no leader is
//! confirmed and resume on the new one; no write lands anywhere but a confirmed leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::support::patroni::{PatroniProxy, turn};

/// What a client loop saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u32,
    /// Errors by SQLSTATE (or "closed" when the session itself ended).
    errors: Vec<String>,
    /// When the first statement after `since` succeeded, if one did.
    first_ok_after: Option<Instant>,
    /// The longest a single statement took.
    longest: Duration,
}

/// Runs `sql(i)` in a loop through `p` until `stop`, reconnecting when the session ends, bounded in count.
fn client_loop(
    p: &PatroniProxy,
    stop: Arc<AtomicBool>,
    since: Arc<std::sync::Mutex<Option<Instant>>>,
    sql: impl Fn(u32) -> String + Send + 'static,
) -> tokio::task::JoinHandle<Seen> {
    let conninfo = p.conninfo();
    tokio::spawn(async move {
        let connect = || async {
            let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await.ok()?;
            tokio::spawn(connection);
            Some(client)
        };
        let mut seen = Seen::default();
        let mut client: Option<Client> = connect().await;
        for i in 1..=100_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(c) = client.as_ref() else {
                client = connect().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let started = Instant::now();
            match c.simple_query(&sql(i)).await {
                Ok(_) => {
                    seen.ok += 1;
                    let mark = *since.lock().unwrap();
                    if seen.first_ok_after.is_none() && mark.is_some_and(|t| started > t) {
                        seen.first_ok_after = Some(Instant::now());
                    }
                }
                Err(error) => {
                    let code = error.code().map_or("closed".to_owned(), |c| c.code().to_owned());
                    let message = error
                        .as_db_error()
                        .map_or(error.to_string(), |e| e.message().to_owned());
                    seen.errors.push(format!("{code}: {message}"));
                    if c.is_closed() {
                        client = None;
                    }
                }
            }
            seen.longest = seen.longest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_failed_over_and_writes_resume_on_the_new_one() {
    let (_turn, cluster) = turn().await;
    let old = cluster.leader().unwrap().clone();
    cluster
        .psql(
            &old,
            "DROP TABLE IF EXISTS failover_log; CREATE TABLE failover_log (id bigint PRIMARY KEY); \
             GRANT ALL ON failover_log TO app",
        )
        .unwrap();
    cluster.wait_replayed(Duration::from_secs(30)).unwrap();
    let p = PatroniProxy::start(cluster, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(std::sync::Mutex::new(None));
    let writer = client_loop(&p, stop.clone(), killed_at.clone(), |i| {
        format!("INSERT INTO failover_log VALUES ({i})")
    });
    let reader = client_loop(&p, stop.clone(), killed_at.clone(), |_| {
        "SELECT count(*) FROM failover_log".into()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let replicas: Vec<_> = cluster
        .members()
        .iter()
        .filter(|m| m.name != old.name)
        .cloned()
        .collect();
    let mut watchers = Vec::new();
    for replica in &replicas {
        let (client, connection) = tokio_postgres::connect(&cluster.app_url(replica), NoTls).await.unwrap();
        tokio::spawn(connection);
        watchers.push((replica.name.clone(), client));
    }
    let pid = cluster.kill_postmaster(&old).unwrap();
    let kill = Instant::now();
    *killed_at.lock().unwrap() = Some(kill);
    // The moment a replica is writable, seen directly (every 10 ms).
    let (new, writable) = loop {
        assert!(kill.elapsed() < Duration::from_secs(30), "no replica was promoted");
        let mut promoted = None;
        for (name, client) in &watchers {
            if let Ok(rows) = client.simple_query("SELECT pg_is_in_recovery()::text").await
                && rows
                    .iter()
                    .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("false")))
            {
                promoted = Some(name.clone());
            }
        }
        if let Some(name) = promoted {
            break (name, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    p.wait_following(cluster).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let reads = reader.await.unwrap();

    let resumed = writes.first_ok_after.expect("writes resumed");
    let resume_after_writable = resumed.saturating_duration_since(writable);
    println!(
        "killed {}'s postmaster (pid {pid}); {new} writable {:.2} s later; writes resumed {:.2} s after that; \
         writer: {} ok, errors {:?}, longest {:?}; reader: {} ok, errors {:?}, longest {:?}",
        old.name,
        (writable - kill).as_secs_f64(),
        resume_after_writable.as_secs_f64(),
        writes.ok,
        writes.errors,
        writes.longest,
        reads.ok,
        reads.errors,
        reads.longest,
    );
    assert!(
        resume_after_writable < Duration::from_secs(3),
        "writes resumed within 3 s of the new leader being writable"
    );
    assert!(
        reads.errors.is_empty(),
        "reads go on on the replicas: {:?}",
        reads.errors
    );
    assert!(
        writes.errors.is_empty(),
        "autocommit writes cut by the crash run again: {:?}",
        writes.errors
    );
    assert_eq!(cluster.leader().unwrap().name, new);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autocommit_write_whose_leader_session_was_terminated_runs_again_unseen() {
    let (_turn, cluster) = turn().await;
    let leader = cluster.leader().unwrap().clone();
    cluster
        .psql(
            &leader,
            "DROP TABLE IF EXISTS cut_log; CREATE TABLE cut_log (id bigint PRIMARY KEY, pid int); \
             GRANT ALL ON cut_log TO app",
        )
        .unwrap();
    let p = PatroniProxy::start(cluster, "").await;
    let client = p.connect().await;
    for id in 1..=3 {
        // The pooled leader connection the last unit used: its session is terminated behind pgsplit's back (a
        // shutdown or a postmaster's death does the same to every session), and it goes out again at once (idle
        // connections are probed before reuse only a second after they came back).
        let pid = crate::support::value(&client, "BEGIN; SELECT pg_backend_pid(); COMMIT").await;
        let killed = cluster
            .psql(&leader, &format!("SELECT pg_terminate_backend({pid}, 5000)"))
            .unwrap();
        assert_eq!(killed, "t");
        let ran_on = crate::support::value(
            &client,
            &format!("INSERT INTO cut_log VALUES ({id}, pg_backend_pid()) RETURNING pid"),
        )
        .await;
        assert_ne!(ran_on, pid, "it ran again, on another connection");
    }
    let rows = cluster.psql(&leader, "SELECT count(*) FROM cut_log").unwrap();
    assert_eq!(rows, "3", "each write ran once");
    p.stop().await;
}
