//! Logins are bounded (SPEC §2, §4): a client that has not finished logging in within `proxy.login_timeout` is
//! closed and never held a client slot; connections that do not log in are capped by `proxy.max_pending_logins`,
//! the oldest giving way, so they can neither lock real clients out nor stop the admin API.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::{cluster, proxy, raw};

/// Waits (bounded) until the peer closes `stream`; returns what it sent before closing.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut bytes))
        .await
        .expect("pgsplit closed the connection in time")
        .ok();
    bytes
}

/// A connection that stops at the password prompt is closed once `login_timeout` passes, and while it waits it
/// holds no client slot: with `max_client_connections = 1`, a real client logs in meanwhile.
#[tokio::test]
async fn a_login_that_stalls_is_closed_at_login_timeout_and_holds_no_client_slot() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.proxy.max_client_connections = 1;
    config.proxy.login_timeout = Duration::from_millis(500);
    let p = proxy::TestProxy::start(config, c).await;

    let started = Instant::now();
    let mut silent = raw::connect(p.port()).await;
    let mut at_password = raw::connect(p.port()).await;
    raw::send(&mut at_password, &raw::startup("app", "app")).await;
    let prompt = raw::read_until(&mut at_password, b'R').await;
    assert_eq!(raw::tags(&prompt), "R", "asked for a password");

    let client = p.connect().await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("the one client slot was free");

    for stream in [&mut silent, &mut at_password] {
        let answer = raw::split_messages(&closed_within(stream, Duration::from_secs(10)).await);
        assert_eq!(raw::error_code(&answer).as_deref(), Some("57014"), "{answer:?}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "closed after {waited:?}");
    drop(client);
    p.stop().await;
}

/// 200 connections that never send a startup packet, against `max_pending_logins = 8`: real clients still log in
/// and run queries, the admin API still answers, the oldest idle sockets are closed, and at no time are more than
/// 8 waiting.
#[tokio::test]
async fn a_flood_of_idle_sockets_neither_locks_clients_out_nor_stops_the_admin_api() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.proxy.max_pending_logins = 8;
    let p = proxy::TestProxy::start(config, c).await;

    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(raw::connect(p.port()).await);
    }
    let client = p.connect().await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("a real client logs in past the flood");
    let health = raw::http_get(p.proxy.admin_addr(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // The oldest were told to make room: 53300, then closed.
    let answer = raw::split_messages(&closed_within(&mut idle[0], Duration::from_secs(10)).await);
    assert_eq!(raw::error_code(&answer).as_deref(), Some("53300"), "{answer:?}");
    let pending = p.proxy.pending_logins();
    assert!(pending <= 8, "{pending} pending logins");
    drop(idle);
    drop(client);
    p.stop().await;
}
