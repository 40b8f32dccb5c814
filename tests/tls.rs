//! TLS for real, against a PostgreSQL leader with `ssl = on` and `hostssl` rules, with certificates made here (a CA,
//! a certificate for localhost and 127.0.0.1, and a CA that signed nothing): psql logging in through pgsplit with
//! `sslmode=verify-full` and `channel_binding=require` (right and wrong CA, wrong host name), plaintext refused by
//! `mode = "require"`, PostgreSQL 17's direct TLS spoken with rustls, pgsplit's own connections verifying the server
//! (or refusing it), a server asking for a cleartext password refused, and no secret in logs, `/status` or
//! `Debug`.
//!
//! Until the relay takes a TLS transport, a session over TLS ends after its greeting with FATAL 0A000: these tests
//! check the login up to there.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pgsplit::admin::Status;
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{ClusterOptions, PrivateCluster, ServerCertificate, eventually, private_cluster_with, psql};

/// The test's certificates, as files.
struct Files {
    dir: PathBuf,
    ca: PathBuf,
    wrong_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let (ca, wrong) = (ca("pgsplit test CA"), ca("somebody else's CA"));
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).unwrap();
        let dir = std::env::temp_dir().join(format!("pgsplit-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Files {
            ca: write("ca.crt", &ca.pem()),
            wrong_ca: write("wrong-ca.crt", &wrong.pem()),
            cert: write("server.crt", &cert.pem()),
            key: write("server.key", &key.serialize_pem()),
            ca_der: ca.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            dir,
        }
    })
}

/// The leader: TLS on; `cleartext` may log in only with a cleartext password, `app` also without TLS (pooled
/// connections are plain until the relay takes TLS), everyone else only over TLS.
fn cluster() -> &'static PrivateCluster {
    static CLUSTER: OnceLock<PrivateCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let files = files();
        let cluster = private_cluster_with(ClusterOptions {
            followers: 0,
            ssl: Some(ServerCertificate {
                cert_pem: files.cert_pem.clone(),
                key_pem: files.key_pem.clone(),
            }),
            hba_rules: vec![
                "hostssl all cleartext 127.0.0.1/32 password".into(),
                "host all app 127.0.0.1/32 scram-sha-256".into(),
            ],
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

/// pgsplit in front of the leader; `extra` is appended to the config (its tables after `[[users]]`).
async fn start(proxy_tls: &str, server: &str, extra: &str) -> Proxy {
    let (c, f) = (cluster(), files());
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{proxy_tls}\n[server]\n{server}\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n[leader]\nhost = \"127.0.0.1\"\nport = {}\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"2s\"\n{extra}",
        c.leader().port
    )
    .replace("$CA", &f.ca.display().to_string())
    .replace("$WRONG_CA", &f.wrong_ca.display().to_string())
    .replace("$CERT", &f.cert.display().to_string())
    .replace("$KEY", &f.key.display().to_string());
    let config = Config::parse(&text, &f.dir.join("proxy.toml").display().to_string()).expect("valid config");
    Proxy::start(config).await.expect("proxy starts")
}

const CLIENT_TLS: &str = "[proxy.tls]\nmode = \"require\"\ncert = \"$CERT\"\nkey = \"$KEY\"\n";

/// psql with `conninfo` (password app): (success, stderr).
async fn psql_through(conninfo: &str) -> (bool, String) {
    let run = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT 1", conninfo])
        .env("PGPASSWORD", "app")
        .env("PGCONNECT_TIMEOUT", "10")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("psql ends within 30 s")
        .expect("psql runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn psql_logs_in_over_verified_tls_with_channel_binding() {
    let p = start(CLIENT_TLS, "tls = \"prefer\"", "").await;
    let (port, ca) = (p.local_addr().port(), files().ca.display().to_string());
    let conninfo = format!(
        "host=localhost port={port} user=app dbname=app sslmode=verify-full sslrootcert={ca} channel_binding=require"
    );
    let (ok, stderr) = psql_through(&conninfo).await;
    // libpq checked the certificate and the name, and that SCRAM signed this TLS channel (channel_binding=require
    // fails at AuthenticationOk otherwise); then pgsplit said what it cannot do yet.
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("cannot relay queries over TLS yet"), "{stderr}");
    let wrong = psql_through(&format!("{conninfo} password=wrong")).await.1;
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wrong_ca_or_host_name_fails_in_the_client_and_plaintext_is_refused_with_28000() {
    let p = start(CLIENT_TLS, "tls = \"prefer\"", "").await;
    let port = p.local_addr().port();
    let f = files();
    let wrong_ca = format!(
        "host=localhost port={port} user=app dbname=app sslmode=verify-full sslrootcert={}",
        f.wrong_ca.display()
    );
    let (ok, stderr) = psql_through(&wrong_ca).await;
    assert!(!ok && stderr.contains("certificate verify failed"), "{stderr}");
    let wrong_host = format!(
        "host=pgsplit.invalid hostaddr=127.0.0.1 port={port} user=app dbname=app sslmode=verify-full sslrootcert={}",
        f.ca.display()
    );
    let (ok, stderr) = psql_through(&wrong_host).await;
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
    let mut roots = rustls::RootCertStore::empty();
    roots.add(files().ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
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
    let p = start(CLIENT_TLS, "tls = \"prefer\"", "").await;
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
}

#[tokio::test]
async fn no_secret_reaches_the_logs_status_or_debug_output() {
    let logs = support::logs::capture();
    // A wrong control password: its failure is logged and shown in /status.
    let control = "[control]\nuser = \"watcher\"\npassword = \"not-the-watch-s3cret\"\n";
    let p = start(CLIENT_TLS, "tls = \"verify-full\"\ntls_ca = \"$CA\"", control).await;
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
    let (c, f) = (cluster(), files());
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
