//! Every wait has a deadline: a server that accepts and never answers, or one that stops answering pgsplit's own
//! statements, frees the session's pool place within the configured time, and the session is told.

use std::time::{Duration, Instant};

use pgsplit::config::AuthMethod;
use tokio::net::TcpListener;

use crate::support::relay::PausingRelay;
use crate::support::{cluster, eventually, proxy, raw};

/// A "server" that accepts and never says a word: a client's first login, which opens a server connection, fails
/// once `server.connect_timeout` passes, and the place it took in the pool is given back.
#[tokio::test]
async fn a_server_that_accepts_and_never_answers_costs_no_pool_place() {
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.leader.port = silent_port;
    config.server.connect_timeout = Duration::from_millis(400);
    let p = proxy::TestProxy::start(config, c).await;
    let started = Instant::now();
    let mut s = raw::connect(p.port()).await;
    raw::send(&mut s, &raw::startup("app", "app")).await;
    let answer = raw::read_until_close(&mut s).await;
    assert_eq!(raw::error_code(&answer).as_deref(), Some("57P03"), "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let stats = p.proxy.context().topology.load().leader.pool.stats();
    assert_eq!((stats.total, stats.waiting), (0, 0), "{stats:?}");
    held.abort();
    p.stop().await;
}

/// The leader stops answering between two clients: the second one, whose settings differ, needs pgsplit's own SET
/// on the pooled connection; it gets an error once `health.timeout` passes instead of waiting forever, the silent
/// connection is dropped, and once the leader answers again the next query works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_pgsplits_own_statements_is_given_up_on_in_time() {
    let c = cluster();
    let relay = PausingRelay::start(([127, 0, 0, 1], c.leader().port).into()).await;
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.leader.port = relay.port;
    config.leader.max_connections = 1;
    config.health.timeout = Duration::from_millis(500);
    let p = proxy::TestProxy::start(config, c).await;

    let mut first = raw::login(p.port(), "app", "app").await;
    let answer = raw::exchange(&mut first, &[raw::message(b'Q', b"SELECT 1\0")]).await;
    assert_eq!(raw::first_columns(&answer), ["1"]);
    drop(first);

    relay.pause();
    let mut second = raw::connect(p.port()).await;
    raw::send(
        &mut second,
        &raw::startup_with("app", "app", &[("application_name", "second")]),
    )
    .await;
    raw::read_until(&mut second, b'Z').await;
    let started = Instant::now();
    let answer = raw::exchange(&mut second, &[raw::message(b'Q', b"SELECT 2\0")]).await;
    let waited = started.elapsed();
    assert!(raw::error_code(&answer).is_some(), "{answer:?}");
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
    let pool = p.proxy.context().topology.load().leader.pool.clone();
    eventually("the silent connection dropped", || {
        let stats = pool.stats();
        (stats.total == 0).then_some(()).ok_or(format!("{stats:?}"))
    })
    .await;

    relay.resume();
    let answer = raw::exchange(&mut second, &[raw::message(b'Q', b"SELECT 3\0")]).await;
    assert_eq!(raw::first_columns(&answer), ["3"], "{answer:?}");
    drop(second);
    p.stop().await;
}
