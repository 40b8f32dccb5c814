//! Every client encoding PostgreSQL accepts works through pgsplit: text in an ASCII-safe encoding (LATIN9 here) is
//! classified by its shape and reads still reach followers; a setting with non-ASCII text in it keeps the session on
//! its connection, so it is never replayed as other bytes; text in an encoding that is not ASCII-safe (Shift JIS,
//! whose 表 ends in a backslash byte) runs on the leader, exactly as sent.

use pgsplit::config::AuthMethod;

use crate::support::proxy::routed;
use crate::support::{cluster, raw};

/// Logs in with `client_encoding` set at startup.
async fn login(port: u16, encoding: &str) -> tokio::net::TcpStream {
    let mut s = raw::connect(port).await;
    raw::send(
        &mut s,
        &raw::startup_with("app", "app", &[("client_encoding", encoding)]),
    )
    .await;
    let greeting = raw::read_until(&mut s, b'Z').await;
    assert!(greeting.iter().all(|(tag, _)| *tag != b'E'), "login: {greeting:?}");
    s
}

/// The first column of each row, as the client's bytes.
fn first_column_bytes(messages: &[(u8, Vec<u8>)]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
            body[6..6 + len].to_vec()
        })
        .collect()
}

/// Sends one Query (the client's bytes) and returns its answer, which must hold no error.
async fn query(s: &mut tokio::net::TcpStream, sql: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let answer = raw::exchange(s, &[raw::message(b'Q', &[sql, b"\0"].concat())]).await;
    assert_eq!(
        raw::error_code(&answer),
        None,
        "{}: {answer:?}",
        String::from_utf8_lossy(sql)
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin9_and_shift_jis_clients_are_served_in_their_own_bytes() {
    let c = cluster();
    let p = routed(c, |config| {
        config.users[0].auth = AuthMethod::Trust;
        config.routing.read_your_writes = false;
    })
    .await;
    let leader = c.leader().port.to_string().into_bytes();
    let followers: Vec<Vec<u8>> = c.followers().iter().map(|f| f.port.to_string().into_bytes()).collect();

    let mut latin9 = login(p.port(), "LATIN9").await;
    // A read with a non-ASCII literal: classified by its shape, so it runs on a follower.
    let answer = query(&mut latin9, b"SELECT 'caf\xe9', inet_server_port()::text").await;
    let columns: Vec<Vec<u8>> = answer
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .flat_map(|(_, body)| {
            let first = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
            let second_at = 6 + first;
            let second = i32::from_be_bytes([
                body[second_at],
                body[second_at + 1],
                body[second_at + 2],
                body[second_at + 3],
            ]) as usize;
            [
                body[6..6 + first].to_vec(),
                body[second_at + 4..second_at + 4 + second].to_vec(),
            ]
        })
        .collect();
    assert_eq!(columns[0], b"caf\xe9", "the client's own bytes back");
    assert!(
        followers.contains(&columns[1]),
        "read on a follower, not {:?}",
        columns[1]
    );
    // A write with one goes to the leader and stores the text.
    query(&mut latin9, b"CREATE TABLE IF NOT EXISTS encodings_t (v text)").await;
    query(&mut latin9, b"INSERT INTO encodings_t VALUES ('na\xefve')").await;
    let answer = query(
        &mut latin9,
        b"SELECT v FROM encodings_t, (SELECT txid_current()) AS on_leader",
    )
    .await;
    assert!(first_column_bytes(&answer).contains(&b"na\xefve".to_vec()));
    // A setting with a non-ASCII value: the session stays on its connection, and the value is the client's.
    query(&mut latin9, b"SET encodings.label = 'caf\xe9'").await;
    for _ in 0..3 {
        let answer = query(&mut latin9, b"SHOW encodings.label").await;
        assert_eq!(first_column_bytes(&answer), [b"caf\xe9".to_vec()]);
    }

    let mut sjis = login(p.port(), "SJIS").await;
    let answer = query(&mut sjis, b"SELECT '\x95\x5c' || inet_server_port()::text").await;
    assert_eq!(
        first_column_bytes(&answer),
        [[&b"\x95\x5c"[..], &leader].concat()],
        "the leader, and the client's bytes"
    );
    drop((latin9, sjis));
    p.stop().await;
}

/// With `standard_conforming_strings = off` a backslash escapes a quote in a plain string: pgsplit lexes as the
/// server does, so a write that only this reading reveals goes to the leader (on a follower it would fail after the
/// first statement's row had gone out, too late to run again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_lexed_with_the_sessions_standard_conforming_strings() {
    let c = cluster();
    let p = routed(c, |config| {
        config.users[0].auth = AuthMethod::Trust;
        config.routing.read_your_writes = false;
    })
    .await;
    let mut s = login(p.port(), "UTF8").await;
    query(&mut s, b"SET standard_conforming_strings = off").await;
    for _ in 0..3 {
        let answer = query(
            &mut s,
            b"SELECT 'x\\' AS a, ' ; SELECT txid_current()::text AS b; --' AS c",
        )
        .await;
        assert_eq!(
            first_column_bytes(&answer).len(),
            2,
            "two statements, two rows: {answer:?}"
        );
    }
    drop(s);
    p.stop().await;
}
