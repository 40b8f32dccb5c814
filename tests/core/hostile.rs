//! Well-framed messages pgsplit cannot use (SPEC §4): each gets what PostgreSQL itself answers, or FATAL 08P01 for
//! that client alone, and never costs a pool slot, a pin or a counter.

use std::time::Duration;

use pgsplit::config::{AuthMethod, PoolMode};

use crate::support::{cluster, eventually, proxy, raw};

/// A trust-auth proxy in transaction mode with a leader pool of `pool` connections.
async fn trust_proxy(pool: usize) -> proxy::TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.proxy.pool_mode = PoolMode::Transaction;
    config.leader.max_connections = pool;
    config.server.checkout_timeout = Duration::from_secs(2);
    proxy::TestProxy::start(config, c).await
}

/// Parse bodies that are well framed but unusable: a name with no NUL, a query with no NUL, no parameter count, a
/// parameter count promising types that are not there.
fn broken_parses() -> Vec<Vec<u8>> {
    vec![
        raw::message(b'P', b"name-without-nul"),
        raw::message(b'P', b"\0SELECT 1"),
        raw::message(b'P', b"\0SELECT 1\0"),
        raw::message(b'P', b"\0SELECT 1\0\x00\x03\x00\x00"),
        raw::message(b'P', b"s1\0SELECT '\xff\xfe'\0\x00\x00"),
    ]
}

/// Every one of these, sent by as many clients as the leader pool has connections, is answered as PostgreSQL
/// would answer it (an ERROR, then ReadyForQuery: the session goes on), and afterwards the pool is back where it
/// was: writes from other clients still get a connection.
#[tokio::test]
async fn unusable_query_bodies_are_answered_and_leak_no_pool_slot() {
    let p = trust_proxy(4).await;
    // A Query with no closing NUL; one whose text is not UTF-8; one whose NUL comes early.
    let queries: [&[u8]; 3] = [b"SELECT 1", b"SELECT '\xff\xfe'\0", b"SELECT 1\0junk\0"];
    for body in queries {
        for _ in 0..4 {
            let mut s = raw::login(p.port(), "app", "app").await;
            let answer = raw::exchange(&mut s, &[raw::message(b'Q', body)]).await;
            let code = raw::error_code(&answer);
            assert!(
                matches!(code.as_deref(), Some("08P01" | "22021")),
                "{body:?} -> {answer:?}"
            );
            assert_eq!(raw::tags(&answer).chars().last(), Some('Z'), "{body:?} -> {answer:?}");
            // The session goes on.
            let answer = raw::exchange(&mut s, &[raw::message(b'Q', b"SELECT 41 + 1\0")]).await;
            assert_eq!(raw::first_columns(&answer), ["42"], "{answer:?}");
        }
    }
    for parse in broken_parses() {
        for _ in 0..4 {
            let mut s = raw::login(p.port(), "app", "app").await;
            let answer = raw::exchange(&mut s, &[parse.clone(), raw::sync()]).await;
            assert!(raw::error_code(&answer).is_some(), "{parse:?} -> {answer:?}");
            let answer = raw::exchange(&mut s, &[raw::message(b'Q', b"SELECT 41 + 1\0")]).await;
            assert_eq!(raw::first_columns(&answer), ["42"], "{answer:?}");
        }
    }
    let writer = p.connect().await;
    writer
        .batch_execute("CREATE TABLE IF NOT EXISTS hostile_writes (x int)")
        .await
        .expect("the leader pool still lends connections");
    writer
        .batch_execute("INSERT INTO hostile_writes VALUES (1)")
        .await
        .expect("the leader pool still lends connections");
    let pool = p.proxy.context().topology.load().leader.pool.clone();
    eventually("every slot back in the pool", || {
        let stats = pool.stats();
        (stats.total == stats.idle && stats.waiting == 0)
            .then_some(())
            .ok_or(format!("{stats:?}"))
    })
    .await;
    drop(writer);
    p.stop().await;
}

/// Bind, Describe, Execute and Close with truncated fields, and messages of types no frontend sends: the server's
/// ERROR or FATAL 08P01, for that client alone.
#[tokio::test]
async fn truncated_extended_messages_are_answered_for_that_client_alone() {
    let p = trust_proxy(2).await;
    let broken: [Vec<u8>; 6] = [
        raw::message(b'B', b"portal-without-nul"),
        raw::message(b'B', b"\0\0\x00\x05"),
        raw::message(b'D', b"X"),
        raw::message(b'D', b""),
        raw::message(b'E', b"\0\x00"),
        raw::message(b'C', b"Sno-nul"),
    ];
    for message in broken {
        let mut s = raw::login(p.port(), "app", "app").await;
        raw::send(&mut s, &[message.clone(), raw::sync()].concat()).await;
        let answer = raw::read_until_error_or_close(&mut s).await;
        assert!(raw::error_code(&answer).is_some(), "{message:?} -> {answer:?}");
    }
    let client = p.connect().await;
    client.batch_execute("SELECT 1").await.expect("others unaffected");
    let pool = p.proxy.context().topology.load().leader.pool.clone();
    eventually("every slot back in the pool", || {
        let stats = pool.stats();
        (stats.total == stats.idle).then_some(()).ok_or(format!("{stats:?}"))
    })
    .await;
    drop(client);
    p.stop().await;
}

/// Past `proxy.max_prepared_statements`, a Parse (or SQL `PREPARE`) of one more named statement gets ERROR 53400
/// and the rest of its batch is skipped, as after any failed Parse; the session goes on, and closing a statement
/// makes room again.
#[tokio::test]
async fn named_statements_past_the_limit_get_53400_and_the_session_goes_on() {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.proxy.max_prepared_statements = 3;
    let p = proxy::TestProxy::start(config, c).await;
    let mut s = raw::login(p.port(), "app", "app").await;
    for name in ["s1", "s2", "s3"] {
        let answer = raw::exchange(&mut s, &[raw::parse(name, "SELECT 1"), raw::sync()]).await;
        assert_eq!(raw::tags(&answer), "1Z", "{name}: {answer:?}");
    }
    let answer = raw::exchange(
        &mut s,
        &[
            raw::parse("s4", "SELECT 4"),
            raw::bind("s4"),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(raw::tags(&answer), "EZ", "{answer:?}");
    assert_eq!(raw::error_code(&answer).as_deref(), Some("53400"));
    let answer = raw::exchange(&mut s, &[raw::message(b'Q', b"PREPARE p4 AS SELECT 4\0")]).await;
    assert_eq!(raw::error_code(&answer).as_deref(), Some("53400"), "{answer:?}");
    assert_eq!(raw::tags(&answer).chars().last(), Some('Z'));

    let answer = raw::exchange(&mut s, &[raw::close_statement("s1"), raw::sync()]).await;
    assert_eq!(raw::tags(&answer), "3Z", "{answer:?}");
    let answer = raw::exchange(
        &mut s,
        &[
            raw::parse("s4", "SELECT 4"),
            raw::bind("s4"),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(raw::first_columns(&answer), ["4"], "{answer:?}");
    drop(s);
    p.stop().await;
}
