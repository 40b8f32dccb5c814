//! An immediate switchover (issue 21 item 4): Patroni's `POST /switchover` with no `scheduled_at` CHECKPOINTs the
//! old leader and fast-shuts it down about 0.25 s later, ending its sessions with FATAL 57P01 wherever they are.
//! Autocommit writes cut that way run again on the new leader unseen; reads go on on the replicas; a transaction
//! cut part-way gets one ERROR (40001) and its session goes on: ROLLBACK, then the next transaction commits on the
//! new leader. Every acknowledged write is on the new leader exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::support::patroni::{PatroniProxy, turn};

/// How long any one wait of this test may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// What a client loop saw: acknowledged statements (when, and the first column of the answer), errors.
#[derive(Debug, Default)]
struct Seen {
    acks: Vec<(Instant, u32, Option<String>)>,
    errors: Vec<String>,
}

fn describe(error: &tokio_postgres::Error) -> String {
    let code = error.code().map_or("closed".to_owned(), |c| c.code().to_owned());
    let message = error
        .as_db_error()
        .map_or(error.to_string(), |e| e.message().to_owned());
    format!("{code}: {message}")
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}

/// Runs `sql(i)` through one client connection until `stop`, bounded in count; a closed session ends the loop
/// (and is an error).
fn client_loop(
    client: Client,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    sql: impl Fn(u32) -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 1..=100_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match client.simple_query(&sql(i)).await {
                Ok(messages) => seen
                    .lock()
                    .unwrap()
                    .acks
                    .push((Instant::now(), i, first_value(&messages))),
                Err(error) => {
                    seen.lock().unwrap().errors.push(describe(&error));
                    if client.is_closed() {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Polls `check` every 10 ms until it holds, for at most [`DEADLINE`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn code_of(client: &Client, sql: &str) -> Result<Option<String>, String> {
    match client.simple_query(sql).await {
        Ok(messages) => Ok(first_value(&messages)),
        Err(error) => Err(describe(&error)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_switchover_reruns_autocommit_writes_and_cuts_open_transactions_with_one_error() {
    let (_turn, cluster) = turn().await;
    let old = cluster.leader().unwrap().clone();
    let new = cluster.members().iter().find(|m| m.name != old.name).unwrap().clone();
    cluster
        .psql(
            &old,
            "DROP TABLE IF EXISTS immediate_log; \
             CREATE TABLE immediate_log (id bigint PRIMARY KEY, port int NOT NULL); \
             GRANT ALL ON immediate_log TO app",
        )
        .unwrap();
    cluster.wait_replayed(DEADLINE).unwrap();
    let p = PatroniProxy::start(cluster, "").await;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Seen::default()));
    let reads = Arc::new(Mutex::new(Seen::default()));
    let writer = client_loop(p.connect().await, stop.clone(), writes.clone(), |i| {
        format!("INSERT INTO immediate_log VALUES ({i}, current_setting('port')::int) RETURNING port")
    });
    let reader = client_loop(p.connect().await, stop.clone(), reads.clone(), |_| {
        "SELECT count(*) FROM immediate_log".into()
    });
    until("both loops run", || {
        writes.lock().unwrap().acks.len() >= 20 && reads.lock().unwrap().acks.len() >= 20
    })
    .await;

    // Two transactions that have written on the old leader: one idle, one inside a statement when it goes.
    let idle = p.connect().await;
    let busy = Arc::new(p.connect().await);
    for (client, id) in [(&idle, -1), (&*busy, -2)] {
        client.simple_query("BEGIN").await.unwrap();
        let port = code_of(
            client,
            &format!("INSERT INTO immediate_log VALUES ({id}, current_setting('port')::int) RETURNING port"),
        )
        .await
        .unwrap();
        assert_eq!(
            port,
            Some(old.port.to_string()),
            "the transaction runs on the old leader"
        );
    }
    let sleeping = {
        let busy = busy.clone();
        tokio::spawn(async move { code_of(&busy, "SELECT pg_sleep(60)").await })
    };

    let (watcher, connection) = tokio_postgres::connect(&cluster.app_url(&new), NoTls).await.unwrap();
    tokio::spawn(connection);
    let asked = Instant::now();
    // Patroni answers once the switchover is done: asked from a blocking thread while the candidate is watched.
    let switchover = {
        let (old, new) = (old.clone(), new.clone());
        tokio::task::spawn_blocking(move || cluster.switchover(&old, &old.name, &new.name, None))
    };
    // The moment the candidate is writable, seen directly (every 10 ms).
    let writable = loop {
        assert!(asked.elapsed() < DEADLINE, "{} was not promoted", new.name);
        if let Ok(Some(recovery)) = code_of(&watcher, "SELECT pg_is_in_recovery()::text").await
            && recovery == "false"
        {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (code, answer) = switchover.await.unwrap().unwrap();
    assert_eq!(code, 200, "Patroni switches over at once: {answer}");

    // The transaction inside a statement: one error, at once.
    let cut = tokio::time::timeout(DEADLINE, sleeping).await.unwrap().unwrap();
    let cut = cut.expect_err("the statement's transaction is cut");
    assert!(cut.starts_with("40001: the transaction was cut"), "{cut}");
    // The idle one: its next statement gets the one error.
    let next = code_of(&idle, "INSERT INTO immediate_log VALUES (-3, 0)").await;
    let next = next.expect_err("the idle transaction is cut");
    assert!(next.starts_with("40001: the transaction was cut"), "{next}");
    // Both sessions go on, PostgreSQL-like: a failed block until ROLLBACK, then the next transaction commits on
    // the new leader.
    assert_eq!(
        code_of(&busy, "SELECT 1").await.unwrap_err(),
        "25P02: current transaction is aborted, commands ignored until end of transaction block"
    );
    // ROLLBACK as a simple Query, and through the extended protocol (a statement prepared, then run).
    code_of(&idle, "ROLLBACK").await.unwrap();
    busy.execute("ROLLBACK", &[]).await.unwrap();
    for (client, id) in [(&idle, -4), (&*busy, -5)] {
        client.simple_query("BEGIN").await.unwrap();
        let port = code_of(
            client,
            &format!("INSERT INTO immediate_log VALUES ({id}, current_setting('port')::int) RETURNING port"),
        )
        .await
        .unwrap();
        code_of(client, "COMMIT").await.unwrap();
        assert_eq!(
            port,
            Some(new.port.to_string()),
            "the next transaction commits on the new leader"
        );
    }

    p.wait_following(cluster).await;
    let new_port = new.port.to_string();
    let started = Instant::now();
    loop {
        {
            let w = writes.lock().unwrap();
            let on_new = w
                .acks
                .iter()
                .filter(|(_, _, port)| port.as_deref() == Some(&new_port))
                .count();
            if on_new >= 20 {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "writes go on on the new leader: {on_new} acknowledged there; errors {:?}; last {:?}; writer done: \
                 {}",
                w.errors,
                w.acks.last(),
                writer.is_finished()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(DEADLINE, writer).await.unwrap().unwrap();
    tokio::time::timeout(DEADLINE, reader).await.unwrap().unwrap();
    let writes = std::mem::take(&mut *writes.lock().unwrap());
    let reads = std::mem::take(&mut *reads.lock().unwrap());

    // Acknowledged writes: on the old leader, then only on the new one.
    let first_new = writes
        .acks
        .iter()
        .position(|(_, _, port)| port.as_deref() == Some(&new_port))
        .expect("writes resumed on the new leader");
    let old_port = old.port.to_string();
    for (_, id, port) in &writes.acks[..first_new] {
        assert_eq!(port.as_deref(), Some(&*old_port), "write {id} before the change");
    }
    for (_, id, port) in &writes.acks[first_new..] {
        assert_eq!(port.as_deref(), Some(&*new_port), "write {id} after the change");
    }
    let resumed = writes.acks[first_new].0;
    // The write pause: the last acknowledgement from the old leader to the first from the new one.
    let last_old = writes.acks[first_new.checked_sub(1).expect("writes ran on the old leader")].0;
    let pause = resumed - last_old;
    let rows = cluster
        .psql(
            &new,
            "SELECT string_agg(id || ':' || port, ',' ORDER BY id) FROM immediate_log",
        )
        .unwrap();
    let on_new: BTreeMap<i64, String> = rows
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (id, port) = r.split_once(':').unwrap();
            (id.parse().unwrap(), port.to_owned())
        })
        .collect();
    let acked: BTreeMap<i64, String> = writes
        .acks
        .iter()
        .map(|(_, id, port)| (i64::from(*id), port.clone().unwrap()))
        .chain([(-4, new_port.clone()), (-5, new_port.clone())])
        .collect();
    println!(
        "immediate switchover {} -> {}: last write on {} acknowledged {:.2} s after the request, {} writable \
         {:.2} s after the request, first write on it acknowledged {:.2} s after that: write pause {:.2} s; \
         writer: {} ok, errors {:?}; reader: {} ok, errors {:?}; cut transactions: 1 error each ({cut} / {next})",
        old.name,
        new.name,
        old.name,
        last_old.saturating_duration_since(asked).as_secs_f64(),
        new.name,
        (writable - asked).as_secs_f64(),
        resumed.saturating_duration_since(writable).as_secs_f64(),
        pause.as_secs_f64(),
        writes.acks.len(),
        writes.errors,
        reads.acks.len(),
        reads.errors,
    );
    assert!(
        writes.errors.is_empty(),
        "autocommit writes cut by the switchover run again: {:?}",
        writes.errors
    );
    assert!(
        reads.errors.is_empty(),
        "reads go on on the replicas: {:?}",
        reads.errors
    );
    assert!(
        resumed.saturating_duration_since(writable) < Duration::from_secs(3),
        "writes resumed within 3 s of the new leader being writable"
    );
    assert_eq!(
        on_new, acked,
        "the new leader holds every acknowledged write, once, and nothing of the cut transactions"
    );
    p.stop().await;
}
