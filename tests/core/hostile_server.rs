//! A server that breaks the protocol harms only the session it serves: pgsplit tells that client and closes its
//! connection to the server, the pool place comes back, and nothing panics. The "server" is a script the test runs
//! on a loopback port: it logs pgsplit in (no TLS, `auth_methods = ["none"]`), then answers the first query with bytes no
//! PostgreSQL would send.

use std::time::Duration;

use pgsplit::config::{AuthMethod, ServerAuthMethod, ServerTlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{cluster, eventually, proxy, raw};

/// A message from the server: `tag`, length, `body`.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    raw::message(tag, body)
}

/// What a server says to log a client in: AuthenticationOk, a parameter, a key, ready.
fn greeting() -> Vec<u8> {
    [
        message(b'R', &0u32.to_be_bytes()),
        message(b'S', b"server_version\x0015.0\x00"),
        message(b'S', b"client_encoding\x00UTF8\x00"),
        message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
        message(b'Z', b"I"),
    ]
    .concat()
}

/// Serves each connection: the greeting after the startup packet, then `answer` to the first message after it, then
/// silence until pgsplit closes.
async fn scripted_server(listener: TcpListener, answer: Vec<u8>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            // The startup packet.
            if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            if stream.write_all(&greeting()).await.is_err() {
                return;
            }
            // The first query.
            if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            let _ = stream.write_all(&answer).await;
            let _ = stream.read(&mut buf).await;
        });
    }
}

#[tokio::test]
async fn a_server_that_breaks_the_protocol_harms_only_its_session() {
    let answers: [(&str, Vec<u8>); 4] = [
        ("a ReadyForQuery with no status", message(b'Z', b"")),
        ("a ReadyForQuery with a status no server sends", message(b'Z', b"X")),
        ("a length below four", b"D\x00\x00\x00\x02".to_vec()),
        (
            "a 1 GB ParameterStatus",
            [&b"S\x40\x00\x00\x00"[..], &[b'x'; 100]].concat(),
        ),
    ];
    for (what, answer) in answers {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(scripted_server(listener, answer));
        let c = cluster();
        let mut config = proxy::config_for(c);
        config.users[0].auth = AuthMethod::Trust;
        config.leader.port = port;
        // The script speaks no TLS.
        config.server.tls = ServerTlsMode::Disable;
        config.server.auth_methods = vec![ServerAuthMethod::None];
        config.server.checkout_timeout = Duration::from_secs(2);
        let p = proxy::TestProxy::start(config, c).await;

        let mut s = raw::login(p.port(), "app", "app").await;
        raw::send(&mut s, &raw::message(b'Q', b"SELECT 1\0")).await;
        let got = tokio::time::timeout(Duration::from_secs(10), read_all(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{what}: the client was left waiting"));
        let codes = raw::error_code(&raw::split_messages(&got));
        assert!(codes.is_some(), "{what}: the client is told ({got:?})");
        let pool = p.proxy.context().topology.load().leader.pool.clone();
        eventually(&format!("{what}: the pool place back"), || {
            let stats = pool.stats();
            (stats.total == stats.idle).then_some(()).ok_or(format!("{stats:?}"))
        })
        .await;
        server.abort();
        p.stop().await;
    }
}

/// Everything the client gets until pgsplit closes the connection or sends ReadyForQuery.
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if raw::split_messages(&got).iter().any(|(tag, _)| *tag == b'Z') {
            return got;
        }
    }
}
