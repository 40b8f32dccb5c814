//! Several worker threads (`proxy.workers`): sessions are spread over them, server connections move between them
//! as sessions on different workers borrow them, and the instance's connection limit holds exactly throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pgsplit::config::{PoolMode, WorkerCount};

use crate::support::cluster;
use crate::support::proxy::{self, TestProxy};

const WORKERS: usize = 4;
const POOL: usize = 3;
const CLIENTS: usize = 16;

async fn proxy_with_workers() -> TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.proxy.pool_mode = PoolMode::Transaction;
    config.proxy.workers = WorkerCount {
        threads: WORKERS,
        from_cpus: None,
    };
    config.leader.max_connections = POOL;
    // Short: a waiter that a returned connection passed over and nothing handed one to later fails its
    // transaction instead of waiting out the default.
    config.server.checkout_timeout = Duration::from_secs(1);
    TestProxy::start(config, c).await
}

/// pgbench tpcb-like through 4 workers and a leader pool of 3: every transaction commits (no waiter is left waiting
/// for a second, though returned connections are kept on their worker for a while), the 16 clients sit 4 to a
/// worker, connections change workers, and the pool never holds more than its 3 places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_on_four_workers_share_three_connections_within_the_limit() {
    tokio::task::spawn_blocking(crate::support::pgbench_init).await.unwrap();
    let p = Arc::new(proxy_with_workers().await);
    let leader = p.proxy.context().topology.load().leader.clone();
    let done = Arc::new(AtomicBool::new(false));
    let most_sessions = Arc::new(AtomicUsize::new(0));
    // Watches the pool and the workers until pgbench ends; every look is one lock and a few loads.
    let watcher = std::thread::spawn({
        let (p, done, most_sessions, leader) = (p.clone(), done.clone(), most_sessions.clone(), leader.clone());
        move || {
            let mut spread_seen = None;
            while !done.load(Ordering::Acquire) {
                let stats = leader.pool.stats();
                assert!(
                    stats.total <= POOL,
                    "{} server connections, the limit is {POOL}",
                    stats.total
                );
                let sessions = p.proxy.worker_sessions();
                let total: usize = sessions.iter().sum();
                most_sessions.fetch_max(total, Ordering::Relaxed);
                if total == CLIENTS {
                    spread_seen = Some(sessions);
                }
                std::thread::yield_now();
            }
            spread_seen
        }
    });
    let args = ["-c", "16", "-j", "2", "-t", "100", "-b", "tpcb-like"];
    let (processed, failed) = crate::support::pgbench_through(p.port(), &args).await;
    done.store(true, Ordering::Release);
    let spread = watcher.join().expect("the watcher saw the limit hold");
    let stats = leader.pool.stats();
    eprintln!("{processed} transactions, {failed} failed; sessions per worker {spread:?}; pool {stats:?}");
    assert_eq!((processed, failed), (16 * 100, 0));
    assert_eq!(
        spread,
        Some(vec![CLIENTS / WORKERS; WORKERS]),
        "all 16 clients were seen at once, 4 on each worker"
    );
    assert!(
        stats.moves > 0,
        "3 connections served sessions on 4 workers without moving"
    );
    assert_eq!(stats.idle, stats.total, "every connection came back");
    assert!(stats.total <= POOL);
    let p = Arc::into_inner(p).expect("the watcher let go");
    // Sessions end as their clients leave; the seats go with them.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while p.proxy.worker_sessions().iter().sum::<usize>() > 0 {
        assert!(std::time::Instant::now() < give_up, "{:?}", p.proxy.worker_sessions());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.stop().await;
}
