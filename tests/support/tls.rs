//! TLS for the integration tests, with certificates made here (rcgen): a CA, a certificate it signs for `localhost`
//! and 127.0.0.1, and a CA that signed nothing — as files (pgsplit's `[proxy.tls]`, a server's `ssl = on`), and the
//! tests' own TLS clients: a bare one (SSLRequest, then rustls, then whatever the test sends) and tokio-postgres over
//! rustls. Every client verifies pgsplit's certificate and name against the test CA.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pgsplit::demo::cluster::ServerCertificate;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::raw;

/// The test's certificates, as files in a directory of this process's own.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// Made on first use, once per test binary.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (ca, wrong) = (ca("pgsplit test CA"), ca("somebody else's CA"));
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let dir = std::env::temp_dir().join(format!("pgsplit-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("certificate dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("certificate file");
            path
        };
        Pki {
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

impl Pki {
    /// The same certificate for a PostgreSQL server (`ClusterOptions.ssl`).
    pub fn server_certificate(&self) -> ServerCertificate {
        ServerCertificate {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// pgsplit's `[proxy.tls]` table with `mode` and these files.
    pub fn proxy_tls(&self, mode: &str) -> String {
        format!(
            "[proxy.tls]\nmode = \"{mode}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A rustls client that trusts the test CA only.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// An SSLRequest to pgsplit on `port`, its `S`, then a TLS handshake verifying `localhost`.
pub async fn connect(port: u16) -> TlsStream<TcpStream> {
    let mut tcp = raw::connect(port).await;
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("SSLRequest sent");
    let answer = tokio::time::timeout(Duration::from_secs(10), tcp.read_u8())
        .await
        .expect("an answer to the SSLRequest in time")
        .expect("an answer to the SSLRequest");
    assert_eq!(answer, b'S', "pgsplit accepts TLS");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki().client_config()));
    let name = ServerName::try_from("localhost").expect("a name");
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("the handshake in time")
        .expect("a verified TLS handshake")
}

/// [`connect`], then a login as a `trust` user, read up to the first ReadyForQuery.
pub async fn login(port: u16, user: &str, database: &str) -> TlsStream<TcpStream> {
    let mut stream = connect(port).await;
    raw::send(&mut stream, &raw::startup(user, database)).await;
    let greeting = raw::read_until(&mut stream, b'Z').await;
    assert!(greeting.iter().all(|(tag, _)| *tag != b'E'), "login: {greeting:?}");
    stream
}

/// tokio-postgres through TLS (verify-full against the test CA) with `conninfo`, its connection driven by a task.
pub async fn tokio_postgres(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(pki().client_config());
    let (client, connection) = tokio_postgres::connect(&format!("{conninfo} sslmode=require"), tls).await?;
    tokio::spawn(connection);
    Ok(client)
}
