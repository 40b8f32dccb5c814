//! A bare-socket client for tests that must send what no driver would: garbage, lying lengths, odd startup codes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.expect("pgsplit accepts")
}

/// A StartupMessage (protocol 3.0) for `user` on `database`.
pub fn startup(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for s in ["user", user, "database", database] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Reads backend messages as (tag, body) until the connection closes (bounded by a timeout).
pub async fn read_until_close(stream: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("pgsplit closes the connection")
        .ok();
    split_messages(&bytes)
}

/// Reads messages until one with `tag` arrives; returns all read so far.
pub async fn read_until(stream: &mut TcpStream, tag: u8) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        let messages = split_messages(&bytes);
        if messages.iter().any(|(t, _)| *t == tag) {
            return messages;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("readable");
        assert!(n > 0, "closed before message '{}': {messages:?}", tag as char);
        bytes.extend_from_slice(&chunk[..n]);
    }
}

fn split_messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if bytes.len() < 1 + len {
            break;
        }
        messages.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    messages
}

/// The SQLSTATE of the first ErrorResponse among `messages`.
pub fn error_code(messages: &[(u8, Vec<u8>)]) -> Option<String> {
    let (_, body) = messages.iter().find(|(tag, _)| *tag == b'E')?;
    let mut fields = body.split(|&b| b == 0);
    fields
        .find(|f| f.first() == Some(&b'C'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("writable");
}
