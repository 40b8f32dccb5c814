//! TLS for real, against a PostgreSQL leader with `ssl = on` and `hostssl` rules only, with certificates made by the
//! tests (`support::tls`): logins here — psql through pgsplit with `sslmode=verify-full` and
//! `channel_binding=require` running real queries (right and wrong CA, wrong host name), plaintext refused by
//! `mode = "require"`, PostgreSQL 17's direct TLS spoken with rustls, pgsplit's own connections (pooled, monitor)
//! verifying the server or refusing it and never falling back to plaintext, a server asking for a cleartext
//! password refused, and no secret in logs, `/status` or `Debug`. Sessions over TLS on both sides are in
//! `tls/sessions.rs` (pgbench, COPY, large results, pipelining, cancel), their memory in `tls/memory.rs`.

mod support;

#[path = "tls/memory.rs"]
mod memory;
#[path = "tls/sessions.rs"]
mod sessions;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pgsplit::admin::Status;
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::tls::pki;
use support::{ClusterOptions, PrivateCluster, eventually, private_cluster_with, psql};

/// The leader: TLS on; `cleartext` may log in only with a cleartext password, everyone else with SCRAM, and every
/// TCP login only over TLS — pgsplit's pooled connections too.
fn cluster() -> &'static PrivateCluster {
    static CLUSTER: OnceLock<PrivateCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = private_cluster_with(ClusterOptions {
            followers: 0,
            ssl: Some(pki().server_certificate()),
            hba_rules: vec!["hostssl all cleartext 127.0.0.1/32 password".into()],
            ..ClusterOptions::default()
        });
        psql(
            &cluster,
            cluster.leader(),
            "CREATE ROLE watcher LOGIN PASSWORD 'watch-s3cret';\n\
             CREATE ROLE cleartext LOGIN PASSWORD 'clear-s3cret';\n\
             GRANT pg_monitor TO watcher, cleartext;",
        );
        cluster
    })
}

/// The app user, logging in with its password.
const APP: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\n";

/// pgsplit's config after `[proxy]`'s own keys: `proxy_tls` (a `[proxy.tls]` table or nothing), `[server]` with
/// `server`, `users`, the leader, and `extra` (tables after `[[users]]`). `$CA`, `$WRONG_CA` stand for the files.
fn config_rest(proxy_tls: &str, server: &str, users: &str, extra: &str) -> String {
    let f = pki();
    format!(
        "{proxy_tls}\n[server]\n{server}\n{users}[leader]\nhost = \"127.0.0.1\"\nport = {}\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"2s\"\n{extra}",
        cluster().leader().port
    )
    .replace("$CA", &f.ca.display().to_string())
    .replace("$WRONG_CA", &f.wrong_ca.display().to_string())
}

/// pgsplit in front of the leader, in this process: see [`config_rest`].
async fn start_with(proxy_tls: &str, server: &str, users: &str, extra: &str) -> Proxy {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        config_rest(proxy_tls, server, users, extra)
    );
    let config = Config::parse(&text, &pki().dir.join("proxy.toml").display().to_string()).expect("valid config");
    Proxy::start(config).await.expect("proxy starts")
}

/// [`start_with`] the app user.
async fn start(proxy_tls: &str, server: &str, extra: &str) -> Proxy {
    start_with(proxy_tls, server, APP, extra).await
}

/// `[proxy.tls]` with `mode = "require"`.
fn client_tls() -> String {
    pki().proxy_tls("require")
}

/// psql running `commands` (each its own `-c`) with `conninfo` (password app unless it says otherwise):
/// (success, stdout, stderr).
async fn psql_through(conninfo: &str, commands: &[&str]) -> (bool, String, String) {
    let mut psql = tokio::process::Command::new("psql");
    psql.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"]);
    for command in commands {
        psql.args(["-c", command]);
    }
    let run = psql
        .arg(conninfo)
        .env("PGPASSWORD", "app")
        .env("PGCONNECT_TIMEOUT", "10")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("psql ends within 30 s")
        .expect("psql runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Whether the server connection that runs this session's statements is TLS, as the server sees it.
const SERVER_SIDE_TLS: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test]
async fn psql_runs_queries_over_verified_tls_with_channel_binding() {
    let p = start(&client_tls(), "tls = \"verify-full\"\ntls_ca = \"$CA\"", "").await;
    let (port, ca) = (p.local_addr().port(), pki().ca.display().to_string());
    let conninfo = format!(
        "host=localhost port={port} user=app dbname=app sslmode=verify-full sslrootcert={ca} channel_binding=require"
    );
    // libpq checked the certificate and the name, and that SCRAM signed this TLS channel (channel_binding=require
    // fails at AuthenticationOk otherwise); then a transaction, a read and the TLS facts of both sides.
    let commands = [
        "DROP TABLE IF EXISTS tls_psql",
        "BEGIN; CREATE TABLE tls_psql (i int); INSERT INTO tls_psql SELECT generate_series(1, 1000); COMMIT",
        "SELECT count(*), sum(i) FROM tls_psql",
        SERVER_SIDE_TLS,
        "\\conninfo",
    ];
    let (ok, stdout, stderr) = psql_through(&conninfo, &commands).await;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"1000|500500"), "{stdout}");
    assert!(lines.contains(&"t"), "the pooled connection is TLS: {stdout}");
    assert!(stdout.contains("SSL connection (protocol: TLSv1."), "{stdout}");
    let (ok, _, wrong) = psql_through(&format!("{conninfo} password=wrong"), &["SELECT 1"]).await;
    assert!(!ok && wrong.contains("password authentication failed"), "{wrong}");
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wrong_ca_or_host_name_fails_in_the_client_and_plaintext_is_refused_with_28000() {
    let p = start(&client_tls(), "tls = \"prefer\"", "").await;
    let port = p.local_addr().port();
    let f = pki();
    let wrong_ca = format!(
        "host=localhost port={port} user=app dbname=app sslmode=verify-full sslrootcert={}",
        f.wrong_ca.display()
    );
    let (ok, _, stderr) = psql_through(&wrong_ca, &["SELECT 1"]).await;
    assert!(!ok && stderr.contains("certificate verify failed"), "{stderr}");
    let wrong_host = format!(
        "host=pgsplit.invalid hostaddr=127.0.0.1 port={port} user=app dbname=app sslmode=verify-full sslrootcert={}",
        f.ca.display()
    );
    let (ok, _, stderr) = psql_through(&wrong_host, &["SELECT 1"]).await;
    assert!(!ok && stderr.contains("does not match host name"), "{stderr}");

    let plain = format!("host=127.0.0.1 port={port} user=app password=app dbname=app sslmode=disable");
    let error = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .err()
        .expect("plaintext is refused");
    assert_eq!(error.code().map(|c| c.code()), Some("28000"), "{error}");
    p.shutdown(Duration::from_secs(5)).await;
}

/// A TLS client of pgsplit's own port: (socket with TLS, whether ALPN was agreed).
async fn direct_tls(port: u16, alpn: bool) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = pki().client_config();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// Sends a StartupMessage for app/app and reads the first message's tag and body.
async fn first_answer(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> std::io::Result<(u8, Vec<u8>)> {
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message([("user", "app"), ("database", "app")], &mut startup)
        .unwrap();
    stream.write_all(&startup).await?;
    stream.flush().await?;
    let tag = stream.read_u8().await?;
    let len = stream.read_u32().await? as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body).await?;
    Ok((tag, body))
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql_is_taken_and_offers_scram_plus() {
    let p = start(&client_tls(), "tls = \"prefer\"", "").await;
    let port = p.local_addr().port();
    let mut stream = direct_tls(port, true).await.expect("direct TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let (tag, body) = first_answer(&mut stream).await.expect("an answer over TLS");
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10u32.to_be_bytes(), "AuthenticationSASL");
    let mechanisms = String::from_utf8_lossy(&body[4..]);
    assert!(
        mechanisms.contains("SCRAM-SHA-256-PLUS\0") && mechanisms.contains("SCRAM-SHA-256\0"),
        "{mechanisms:?}"
    );
    // Without ALPN, a direct connection gets nothing: PostgreSQL 17 refuses those too.
    let answer = match direct_tls(port, false).await {
        Ok(mut stream) => first_answer(&mut stream).await.map(|(tag, _)| tag),
        Err(error) => Err(error),
    };
    assert!(answer.is_err(), "{answer:?}");
    p.shutdown(Duration::from_secs(5)).await;
}

/// The leader's health as `/status` shows it: (healthy, reason).
fn leader_health(p: &Proxy) -> (bool, String) {
    let status = Status::capture(p.context());
    let leader = &status.instances[0];
    (leader.healthy, leader.reason.clone().unwrap_or_default())
}

const CONTROL: &str = "[control]\nuser = \"watcher\"\npassword = \"watch-s3cret\"\n";

#[tokio::test]
async fn the_monitor_verifies_the_server_and_refuses_a_wrong_ca() {
    // `watcher` may log in only over TLS: healthy means the monitor's connection was TLS, verified.
    let good = start("", "tls = \"verify-full\"\ntls_ca = \"$CA\"", CONTROL).await;
    eventually("the leader healthy over verified TLS", || match leader_health(&good) {
        (true, _) => Ok(()),
        (false, reason) => Err(reason),
    })
    .await;
    good.shutdown(Duration::from_secs(5)).await;

    let wrong = start("", "tls = \"verify-ca\"\ntls_ca = \"$WRONG_CA\"", CONTROL).await;
    eventually("the leader down: unknown issuer", || match leader_health(&wrong) {
        (false, reason) if reason.contains("certificate") => Ok(()),
        (healthy, reason) => Err(format!("healthy: {healthy}, reason: {reason}")),
    })
    .await;
    wrong.shutdown(Duration::from_secs(5)).await;

    let plain = start("", "tls = \"disable\"", CONTROL).await;
    eventually("the leader down: hostssl refuses plaintext", || {
        match leader_health(&plain) {
            (false, reason) if reason.contains("no encryption") => Ok(()),
            (healthy, reason) => Err(format!("healthy: {healthy}, reason: {reason}")),
        }
    })
    .await;
    plain.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_server_asking_for_a_cleartext_password_is_refused_unless_allowed() {
    let control = "[control]\nuser = \"cleartext\"\npassword = \"clear-s3cret\"\n";
    let refused = start("", "tls = \"verify-full\"\ntls_ca = \"$CA\"", control).await;
    eventually("the cleartext request refused", || match leader_health(&refused) {
        (false, reason) if reason.contains("\"password\" authentication") => Ok(()),
        (healthy, reason) => Err(format!("healthy: {healthy}, reason: {reason}")),
    })
    .await;
    refused.shutdown(Duration::from_secs(5)).await;

    let server = "tls = \"verify-full\"\ntls_ca = \"$CA\"\nauth_methods = [\"scram-sha-256\", \"password\"]";
    let allowed = start("", server, control).await;
    eventually("the leader healthy with cleartext allowed", || {
        match leader_health(&allowed) {
            (true, _) => Ok(()),
            (false, reason) => Err(reason),
        }
    })
    .await;
    allowed.shutdown(Duration::from_secs(5)).await;

    // A client of that role: its pooled connection meets the same request, and the client is told why.
    let users = format!("{APP}[[users]]\nname = \"cleartext\"\npassword = \"clear-s3cret\"\n");
    let pooled = start_with("", "tls = \"verify-full\"\ntls_ca = \"$CA\"", &users, "").await;
    let conninfo = format!(
        "host=127.0.0.1 port={} user=cleartext password=clear-s3cret dbname=app",
        pooled.local_addr().port()
    );
    let error = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let message = error.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("\"password\" authentication"), "{error}");
    pooled.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pooled_connections_verify_the_server_and_never_fall_back_to_plaintext() {
    let plain_client = |p: &Proxy| {
        format!(
            "host=127.0.0.1 port={} user=app password=app dbname=app",
            p.local_addr().port()
        )
    };
    // verify-full with the right CA: the session's statements run over TLS (the server says so).
    let good = start("", "tls = \"verify-full\"\ntls_ca = \"$CA\"", "").await;
    let (client, connection) = tokio_postgres::connect(&plain_client(&good), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    assert_eq!(support::value(&client, SERVER_SIDE_TLS).await, "t");
    drop(client);
    good.shutdown(Duration::from_secs(5)).await;

    // A wrong CA: the client hears why, naming the certificate. Had pgsplit tried plaintext, the hostssl-only
    // server would have answered "no encryption" instead.
    let wrong = start("", "tls = \"verify-ca\"\ntls_ca = \"$WRONG_CA\"", "").await;
    let error = tokio_postgres::connect(&plain_client(&wrong), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let db = error.as_db_error().expect("an error pgsplit sent");
    assert_eq!(db.code().code(), "57P03", "{error}");
    assert!(
        db.message().contains("UnknownIssuer") && !db.message().contains("no encryption"),
        "{error}"
    );
    assert!(db.hint().unwrap_or_default().contains("server.tls"), "{error}");
    wrong.shutdown(Duration::from_secs(5)).await;

    // disable: plaintext as told, which this server refuses (its own error, passed on).
    let plain = start("", "tls = \"disable\"", "").await;
    let error = tokio_postgres::connect(&plain_client(&plain), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let message = error.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("no encryption"), "{error:?}");
    plain.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn no_secret_reaches_the_logs_status_or_debug_output() {
    let logs = support::logs::capture();
    // A wrong control password: its failure is logged and shown in /status.
    let control = "[control]\nuser = \"watcher\"\npassword = \"not-the-watch-s3cret\"\n";
    let p = start(&client_tls(), "tls = \"verify-full\"\ntls_ca = \"$CA\"", control).await;
    eventually("the control login refused", || match leader_health(&p) {
        (false, reason) if reason.contains("password authentication failed") => Ok(()),
        (healthy, reason) => Err(format!("healthy: {healthy}, reason: {reason}")),
    })
    .await;
    let status = serde_json::to_string(&Status::capture(p.context())).unwrap();
    let config = format!("{:?}", p.context().config());
    for text in [&logs.text(), &status, &config] {
        for secret in ["not-the-watch-s3cret", "password = \"app\""] {
            assert!(!text.contains(secret), "{secret} in: {text}");
        }
    }
    assert!(config.contains("Secret(<redacted>)"), "{config}");
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_pooled_connection_handshake_verifies_and_never_falls_back() {
    use pgsplit::config::{ServerConfig, ServerTlsMode};
    use pgsplit::tls::ServerTls;
    use std::path::PathBuf;
    let (c, f) = (cluster(), pki());
    let server = |tls: ServerTlsMode, ca: Option<PathBuf>| ServerConfig {
        tls,
        tls_ca: ca,
        tls_cert: None,
        tls_key: None,
        auth_methods: Vec::new(),
        connect_timeout: Duration::from_secs(5),
        checkout_timeout: Duration::from_secs(5),
    };
    let connect = || TcpStream::connect(("127.0.0.1", c.leader().port));
    let verified = ServerTls::load(&server(ServerTlsMode::VerifyFull, Some(f.ca.clone()))).unwrap();
    let started = std::time::Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        let (transport, certificate) = verified.handshake(connect().await.unwrap(), "127.0.0.1").await.unwrap();
        assert!(transport.is_tls());
        let certificate = certificate.expect("the server's certificate");
        assert!(pgsplit::tls::binding::end_point(&certificate).is_some());
    }
    eprintln!(
        "SSLRequest + TLS handshake with verify-full: {:?} each (connect included)",
        started.elapsed() / rounds
    );
    let wrong = ServerTls::load(&server(ServerTlsMode::VerifyCa, Some(f.wrong_ca.clone()))).unwrap();
    let error = wrong
        .handshake(connect().await.unwrap(), "127.0.0.1")
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    let name = verified
        .handshake(connect().await.unwrap(), "127.0.0.2")
        .await
        .expect_err("wrong name");
    assert!(name.to_string().contains("not valid for name"), "{name}");
    // A server without TLS (a plain listener answering 'N'): prefer goes plain, require refuses.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    let prefer = ServerTls::load(&server(ServerTlsMode::Prefer, None)).unwrap();
    let (transport, _) = prefer
        .handshake(TcpStream::connect(addr).await.unwrap(), "127.0.0.1")
        .await
        .unwrap();
    assert!(!transport.is_tls());
    let require = ServerTls::load(&server(ServerTlsMode::Require, None)).unwrap();
    let refused = require
        .handshake(TcpStream::connect(addr).await.unwrap(), "127.0.0.1")
        .await;
    assert!(refused.is_err());
}
