//! Limits and bad input (SPEC §4): 53300 for too many clients (FATAL) and a checkout timeout (ERROR, the session
//! goes on); 08P01 for malformed or oversized messages, closing only the offender.

use std::time::{Duration, Instant};

use pgsplit::config::{AuthMethod, PoolMode};
use tokio_postgres::error::SqlState;

use crate::support::{cluster, proxy, raw};

#[tokio::test]
async fn clients_over_the_limit_get_fatal_53300_and_a_freed_slot_is_reusable() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.proxy.max_client_connections = 2;
    let p = proxy::TestProxy::start(config, c).await;
    let first = p.connect().await;
    let second = p.connect().await;
    let err = p.connect_as("app", "app").await.expect_err("third client refused");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    assert!(err.as_db_error().unwrap().message().contains("max_client_connections"));
    drop(first);
    // The slot frees when pgsplit notices the disconnect; retry until then (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match p.connect_as("app", "app").await {
            Ok(client) => break client,
            Err(e) if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS) && Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    };
    third.simple_query("SELECT 1").await.unwrap();
    drop((second, third));
    p.stop().await;
}

#[tokio::test]
async fn a_client_waiting_past_checkout_timeout_gets_error_53300_and_carries_on() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.leader.max_connections = 1;
    config.server.checkout_timeout = Duration::from_millis(300);
    let p = proxy::TestProxy::start(config, c).await;
    let holder = p.connect().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let waiter = p.connect().await;
    let started = Instant::now();
    let err = waiter.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("\"leader\"") && message.contains('1'), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    holder.batch_execute("COMMIT").await.unwrap();
    let rows = waiter
        .query_one("SELECT 2::int", &[])
        .await
        .expect("the session went on");
    assert_eq!(rows.get::<_, i32>(0), 2);
    drop((holder, waiter));
    p.stop().await;
}

#[tokio::test]
async fn the_pool_never_opens_more_than_max_connections() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 3).await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = p.connect().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                client.simple_query("SELECT pg_sleep(0.001)").await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = p.proxy.context().topology.load().leader.pool.stats();
    assert!(stats.total <= 3 && stats.total >= 1, "{stats:?}");
    assert_eq!(stats.waiting, 0);
    p.stop().await;
}

/// Runs queries on a healthy client while `attack` runs; every one must succeed.
async fn neighbour_survives<F: std::future::Future<Output = ()>>(p: &proxy::TestProxy, attack: F) {
    let client = p.connect().await;
    let neighbour = tokio::spawn(async move {
        for i in 0..50i32 {
            let rows = client
                .query_one("SELECT $1::int + 1", &[&i])
                .await
                .expect("neighbour unaffected");
            assert_eq!(rows.get::<_, i32>(0), i + 1);
        }
    });
    attack.await;
    neighbour.await.unwrap();
}

#[tokio::test]
async fn garbage_before_startup_gets_fatal_08p01_and_others_carry_on() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Session, 2).await;
    neighbour_survives(&p, async {
        for garbage in [
            &b"\x00\x00\x00\x03xyz"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x00\x00\x00\x10\x00\x02\x00\x00user\0x\0\0\0",
        ] {
            let mut s = raw::connect(p.port()).await;
            raw::send(&mut s, garbage).await;
            let answer = raw::read_until_close(&mut s).await;
            assert_eq!(
                raw::error_code(&answer).as_deref(),
                Some("08P01"),
                "{garbage:?} -> {answer:?}"
            );
        }
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_messages_after_login_get_fatal_08p01_for_that_client_only() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.proxy.pool_mode = PoolMode::Session;
    let p = proxy::TestProxy::start(config, c).await;
    neighbour_survives(&p, async {
        // A 1 GiB length claim, an impossible length, an unknown message type.
        for message in [
            &b"Q\x40\x00\x00\x00SELECT"[..],
            b"Q\x00\x00\x00\x02",
            b"\x01\x00\x00\x00\x04",
        ] {
            let mut s = raw::connect(p.port()).await;
            raw::send(&mut s, &raw::startup("app", "app")).await;
            raw::read_until(&mut s, b'Z').await;
            raw::send(&mut s, message).await;
            let answer = raw::read_until_close(&mut s).await;
            assert_eq!(
                raw::error_code(&answer).as_deref(),
                Some("08P01"),
                "{message:?} -> {answer:?}"
            );
        }
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn ssl_and_gssenc_requests_are_declined_and_startup_goes_on() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    let p = proxy::TestProxy::start(config, c).await;
    for request in [80877103u32, 80877104] {
        let mut s = raw::connect(p.port()).await;
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&request.to_be_bytes());
        raw::send(&mut s, &packet).await;
        let mut answer = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
        raw::send(&mut s, &raw::startup("app", "app")).await;
        let greeting = raw::read_until(&mut s, b'Z').await;
        assert!(greeting.iter().any(|(tag, _)| *tag == b'K'), "BackendKeyData sent");
        assert!(
            greeting
                .iter()
                .any(|(tag, body)| *tag == b'S' && body.starts_with(b"server_version\0"))
        );
    }
    p.stop().await;
}
