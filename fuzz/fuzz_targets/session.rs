//! Fuzz target `session`: the whole session state machine, driven over real sockets. One pgsplit (transaction
//! pooling, a leader pool of two) runs in this process in front of a scripted "server", also in this process, that
//! logs pgsplit in and then answers each batch pgsplit sends with the fuzzer's next server bytes. Each input logs a
//! client in and sends the fuzzer's client messages — well framed with arbitrary bodies, or raw bytes — in the pieces
//! the fuzzer chose, reads what comes back for a moment, and leaves.
//!
//! Checked: nothing panics (a panic anywhere, a session task included, aborts the process, which libFuzzer reports),
//! and once the client is gone every pool place comes back — in use, pgsplit must give each connection back or drop
//! it; it may never keep one.
//!
//! Input: [`Plan`] via `arbitrary` (the client's messages and the server's answers). Slow for a fuzz target (each
//! input is a login and a few round trips over loopback: hundreds a second), and meant to be: it covers what the
//! parser targets cannot, the relay's bookkeeping across both directions.

#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// What one input does.
#[derive(Arbitrary, Debug)]
struct Plan {
    /// The client's messages, in order, after its login.
    client: Vec<ClientPart>,
    /// What the server sends after each batch it gets from pgsplit (after the login), in order; then it is silent.
    server: Vec<Vec<u8>>,
    /// Bytes per write of the client's stream; 0 is all at once.
    chunk: u8,
}

#[derive(Arbitrary, Debug)]
enum ClientPart {
    /// A well-framed message of a frontend type, with any body.
    Message { tag: FrontendTag, body: Vec<u8> },
    /// A Query with this text and its NUL.
    Query(String),
    /// Raw bytes: anything at all.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FrontendTag {
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    Flush,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall,
}

impl FrontendTag {
    fn byte(self) -> u8 {
        match self {
            FrontendTag::Query => b'Q',
            FrontendTag::Parse => b'P',
            FrontendTag::Bind => b'B',
            FrontendTag::Describe => b'D',
            FrontendTag::Execute => b'E',
            FrontendTag::Close => b'C',
            FrontendTag::Sync => b'S',
            FrontendTag::Flush => b'H',
            FrontendTag::CopyData => b'd',
            FrontendTag::CopyDone => b'c',
            FrontendTag::CopyFail => b'f',
            FrontendTag::FunctionCall => b'F',
        }
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The server's answers for the input being run.
static SCRIPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Harness {
    runtime: Runtime,
    proxy: Proxy,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // A panic in any thread (a session task's included, which tokio would otherwise catch) is a finding.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let proxy = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("server binds");
            let port = listener.local_addr().expect("server address").port();
            tokio::spawn(serve(listener));
            let text = format!(
                "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nlogin_timeout = \"2s\"\n\
                 [server]\ntls = \"disable\"\nauth_methods = [\"none\"]\ncheckout_timeout = \"200ms\"\nconnect_timeout = \"1s\"\n\
                 [health]\ninterval = \"1h\"\ntimeout = \"500ms\"\n\
                 [[users]]\nname = \"app\"\npassword = \"app\"\nauth = \"trust\"\n\
                 [leader]\nhost = \"127.0.0.1\"\nport = {port}\nmax_connections = 2\n"
            );
            let config = Config::parse(&text, "fuzz.toml").expect("the fuzz config is valid");
            Proxy::start(config).await.expect("pgsplit starts")
        });
        Harness { runtime, proxy }
    })
}

/// The words of pgsplit's login-time query of `pg_settings` (`session::greeting`).
const LOGIN_QUESTION: &[u8] = b"FROM pg_catalog.pg_settings";

/// The scripted server: logs pgsplit in, then answers each read with the script's next bytes.
async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(speak(stream));
    }
}

async fn speak(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    // The startup packet, then a login that asks for nothing.
    if stream.read(&mut buf).await.unwrap_or(0) == 0 {
        return;
    }
    let greeting = [
        message(b'R', &0u32.to_be_bytes()),
        message(b'S', b"server_version\x0015.0\x00"),
        message(b'S', b"client_encoding\x00UTF8\x00"),
        message(b'S', b"standard_conforming_strings\x00on\x00"),
        message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
        message(b'Z', b"I"),
    ]
    .concat();
    if stream.write_all(&greeting).await.is_err() {
        return;
    }
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // pgsplit's own question at a user's first login (the server's defaults for it): answered as a server
        // would (nothing set), so that every input does not wait out its deadline.
        if buf[..n].windows(LOGIN_QUESTION.len()).any(|w| w == LOGIN_QUESTION) {
            let answer = [
                message(
                    b'T',
                    b"\x00\x01string_agg\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00",
                ),
                message(b'D', b"\x00\x01\xff\xff\xff\xff"),
                message(b'C', b"SELECT 1\x00"),
                message(b'Z', b"I"),
            ]
            .concat();
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            continue;
        }
        let next = {
            let mut script = SCRIPT.lock().unwrap_or_else(|p| p.into_inner());
            (!script.is_empty()).then(|| script.remove(0))
        };
        if let Some(bytes) = next
            && stream.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}

/// The startup packet of user `app` on database `app`.
fn startup() -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for s in ["user", "app", "database", "app"] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

async fn run(plan: Plan, port: u16) {
    let Ok(mut client) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let mut stream = startup();
    for part in &plan.client {
        match part {
            ClientPart::Message { tag, body } => stream.extend(message(tag.byte(), body)),
            ClientPart::Query(text) => stream.extend(message(b'Q', &[text.as_bytes(), b"\0"].concat())),
            ClientPart::Raw(bytes) => stream.extend_from_slice(bytes),
        }
    }
    let chunk = if plan.chunk == 0 {
        stream.len().max(1)
    } else {
        plan.chunk as usize
    };
    // Reads what comes back meanwhile, so pgsplit is never stuck writing to a client that does not read; once the
    // client has sent everything, it stays until the answers pause (or a moment at most), then leaves — wherever
    // the session is.
    let (mut reader, mut writer) = client.split();
    let mut sent = false;
    let mut sink = vec![0u8; 64 * 1024];
    let mut pieces = stream.chunks(chunk);
    let until = Instant::now() + Duration::from_millis(100);
    loop {
        let gap = if sent {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        tokio::select! {
            read = tokio::time::timeout(gap, reader.read(&mut sink)) => match read {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, broken, or quiet after everything was sent.
                _ if sent || !matches!(read, Err(_)) => return,
                _ => {}
            },
            written = async {
                match pieces.next() {
                    Some(piece) => writer.write_all(piece).await.is_ok(),
                    None => std::future::pending().await,
                }
            }, if !sent => {
                if !written {
                    return;
                }
                sent = pieces.len() == 0;
            }
        }
        if Instant::now() >= until {
            return;
        }
    }
}

fuzz_target!(|plan: Plan| {
    let harness = harness();
    *SCRIPT.lock().unwrap_or_else(|p| p.into_inner()) = plan.server.clone();
    let port = harness.proxy.local_addr().port();
    harness.runtime.block_on(run(plan, port));
    // The client is gone: every place of the leader pool must come back (idle, or dropped), soon.
    let pool = harness.proxy.context().topology.load().leader.pool.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = pool.stats();
        if stats.total == stats.idle && stats.waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a pool place was kept after the client left: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
});
