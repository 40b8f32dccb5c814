//! A bare-socket client for tests that must send what no driver would: garbage, lying lengths, odd startup codes.
//! The readers and writers take any stream: a socket, or TLS over one (`support::tls`).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.expect("pgsplit accepts")
}

/// A StartupMessage (protocol 3.0) for `user` on `database`.
pub fn startup(user: &str, database: &str) -> Vec<u8> {
    startup_with(user, database, &[])
}

/// A StartupMessage for `user` on `database` with more parameters (`("client_encoding", "LATIN9")`).
pub fn startup_with(user: &str, database: &str, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    let params = params.iter().flat_map(|(name, value)| [*name, *value]);
    for s in ["user", user, "database", database].into_iter().chain(params) {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Reads backend messages as (tag, body) until the connection closes (bounded by a timeout).
pub async fn read_until_close(stream: &mut (impl AsyncRead + Unpin)) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("pgsplit closes the connection")
        .ok();
    split_messages(&bytes)
}

/// Reads messages until one with `tag` arrives; returns all read so far.
pub async fn read_until(stream: &mut (impl AsyncRead + Unpin), tag: u8) -> Vec<(u8, Vec<u8>)> {
    read_until_nth(stream, tag, 1).await
}

/// Reads messages until `n` with `tag` have arrived (the answers to `n` pipelined Syncs); returns all read so far.
pub async fn read_until_nth(stream: &mut (impl AsyncRead + Unpin), tag: u8, n: usize) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        let messages = split_messages(&bytes);
        if messages.iter().filter(|(t, _)| *t == tag).count() >= n {
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

/// Reads messages until an ErrorResponse arrives or the connection closes; returns all read so far.
pub async fn read_until_error_or_close(stream: &mut (impl AsyncRead + Unpin)) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        let messages = split_messages(&bytes);
        if messages.iter().any(|(t, _)| *t == b'E') {
            return messages;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        if n == 0 {
            return messages;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

pub fn split_messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
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

pub async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    stream.write_all(bytes).await.expect("writable");
    // A TLS stream may hold the last record until flushed.
    stream.flush().await.expect("writable");
}

/// One frontend message: `tag`, length, `body`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
}

/// Parse of `sql` as the statement `name`, no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstrs(&[name, sql]);
    body.extend_from_slice(&[0, 0]);
    message(b'P', &body)
}

/// Bind of the unnamed portal to `statement`, no parameters, text results.
pub fn bind(statement: &str) -> Vec<u8> {
    let mut body = cstrs(&["", statement]);
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    message(b'B', &body)
}

/// Execute of the unnamed portal, all rows.
pub fn execute() -> Vec<u8> {
    message(b'E', &[0, 0, 0, 0, 0])
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// Close of the statement `name`.
pub fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(&cstrs(&[name]));
    message(b'C', &body)
}

/// The tags of `messages`, as a string (`"12DCZ"`).
pub fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(tag, _)| *tag as char).collect()
}

/// The first column of every DataRow among `messages`, as text.
pub fn first_columns(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            String::from_utf8_lossy(&body[6..6 + len.max(0) as usize]).into_owned()
        })
        .collect()
}

/// Logs in as a `trust` user and reads up to the first ReadyForQuery; returns the stream and the pid pgsplit gave
/// the client (BackendKeyData).
pub async fn login_with_pid(port: u16, user: &str, database: &str) -> (TcpStream, u32) {
    let mut stream = connect(port).await;
    send(&mut stream, &startup(user, database)).await;
    let greeting = read_until(&mut stream, b'Z').await;
    assert!(greeting.iter().all(|(tag, _)| *tag != b'E'), "login: {greeting:?}");
    let (_, key) = greeting.iter().find(|(tag, _)| *tag == b'K').expect("BackendKeyData");
    (stream, u32::from_be_bytes([key[0], key[1], key[2], key[3]]))
}

/// Logs in as a `trust` user and reads up to the first ReadyForQuery.
pub async fn login(port: u16, user: &str, database: &str) -> TcpStream {
    let mut stream = connect(port).await;
    send(&mut stream, &startup(user, database)).await;
    let greeting = read_until(&mut stream, b'Z').await;
    assert!(greeting.iter().all(|(tag, _)| *tag != b'E'), "login: {greeting:?}");
    stream
}

/// Sends `messages` in one write and reads until the ReadyForQuery of the last Sync.
pub async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), messages: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    send(stream, &messages.concat()).await;
    read_until(stream, b'Z').await
}

/// One plain HTTP/1.1 GET (the admin API), the whole answer as text.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("admin API accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the admin API answers in time")
        .expect("readable");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Describe of the statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(&cstrs(&[name]));
    message(b'D', &body)
}

/// Bind of the unnamed portal to `statement` with `params` in text format, text results.
pub fn bind_text(statement: &str, params: &[&str]) -> Vec<u8> {
    let mut body = cstrs(&["", statement]);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for param in params {
        body.extend_from_slice(&(param.len() as i32).to_be_bytes());
        body.extend_from_slice(param.as_bytes());
    }
    body.extend_from_slice(&[0, 0]);
    message(b'B', &body)
}

/// A simple Query of `sql`.
pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstrs(&[sql]))
}

/// The ParameterStatus messages among `messages`, as (name, value).
pub fn parameters(messages: &[(u8, Vec<u8>)]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'S')
        .filter_map(|(_, body)| {
            let mut parts = body.split(|&b| b == 0);
            let name = String::from_utf8_lossy(parts.next()?).into_owned();
            let value = String::from_utf8_lossy(parts.next()?).into_owned();
            Some((name, value))
        })
        .collect()
}

/// Logs in as a `trust` user with extra startup parameters; returns the greeting up to the first ReadyForQuery.
pub async fn login_with(
    port: u16,
    user: &str,
    database: &str,
    params: &[(&str, &str)],
) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut stream = connect(port).await;
    send(&mut stream, &startup_with(user, database, params)).await;
    let greeting = read_until(&mut stream, b'Z').await;
    assert!(greeting.iter().all(|(tag, _)| *tag != b'E'), "login: {greeting:?}");
    (stream, greeting)
}

/// Writes `chunk` again and again, up to `limit` bytes, while pgsplit takes it within half a second each time;
/// returns how much it took. A client pgsplit stops reading (backpressure) is left with the rest.
pub async fn offer_until_refused(stream: &mut (impl AsyncWrite + Unpin), chunk: &[u8], limit: usize) -> usize {
    let mut taken = 0usize;
    while taken < limit {
        let write = async {
            stream.write_all(chunk).await?;
            stream.flush().await
        };
        match tokio::time::timeout(Duration::from_millis(500), write).await {
            Ok(written) => {
                written.expect("pgsplit keeps the connection");
                taken += chunk.len();
            }
            // Not taking more: backpressure.
            Err(_) => break,
        }
    }
    taken
}

/// Reads and discards backend messages up to ReadyForQuery without holding them: the tag and length of the
/// largest, and that message's last bytes. An ErrorResponse fails the test.
pub async fn read_to_ready_streaming(stream: &mut (impl AsyncRead + Unpin)) -> ((u8, usize), Vec<u8>) {
    let mut largest = ((0u8, 0usize), Vec::new());
    let mut scratch = vec![0u8; 1 << 16];
    loop {
        let mut header = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(120), stream.read_exact(&mut header))
            .await
            .expect("an answer in time")
            .expect("readable");
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 4;
        let (mut left, mut first, mut last) = (len, Vec::new(), Vec::new());
        while left > 0 {
            let n = stream.read(&mut scratch[..left.min(1 << 16)]).await.expect("readable");
            assert!(n > 0, "closed mid-message");
            if first.len() < 256 {
                first.extend_from_slice(&scratch[..n.min(256)]);
            }
            last.extend_from_slice(&scratch[n.saturating_sub(16)..n]);
            last.drain(..last.len().saturating_sub(16));
            left -= n;
        }
        assert_ne!(header[0], b'E', "error: {}", String::from_utf8_lossy(&first));
        if len > largest.0.1 {
            largest = ((header[0], len), last);
        }
        if header[0] == b'Z' {
            return largest;
        }
    }
}
