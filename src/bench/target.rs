//! The endpoint under test: the `--url` parsed into a tokio-postgres config plus the TLS mode libpq would use
//! (`sslmode`, `sslrootcert`), and opening one connection to it. TLS is rustls with the ring provider:
//! `prefer`/`require` encrypt without checking the certificate, `verify-ca` checks the chain, `verify-full` the
//! chain and the host name; roots come from `sslrootcert`, else the webpki roots. Knows nothing of workloads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::BenchError;
use crate::config::ServerTlsMode;
use crate::tls::connect::verifying_builder;

/// A connection attempt that takes longer is not coming (unless the URL says `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What the server sees as `application_name` unless the URL sets one.
const APPLICATION_NAME: &str = "pgsplit bench";

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Result<TlsMode, BenchError> {
        Ok(match text {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(BenchError::Usage(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full (allow is not \
                     supported)"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    mode: TlsMode,
}

impl Target {
    /// A `postgres://` URL (or a libpq `key=value` string). `sslmode` and `sslrootcert` are taken out and handled
    /// here; anything tokio-postgres does not know is refused by it.
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let (rest, ssl) = take_ssl_params(url);
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|error| BenchError::Usage(format!("--url: {}", one_line(&error.to_string()))))?;
        if config.get_hosts().is_empty() {
            return Err(BenchError::Usage("--url names no host".into()));
        }
        let mode = match &ssl.mode {
            Some(text) => TlsMode::parse(text)?,
            None => match config.get_ssl_mode() {
                SslMode::Disable => TlsMode::Disable,
                SslMode::Require => TlsMode::Require,
                _ => TlsMode::Prefer,
            },
        };
        // libpq: `require` with a root certificate file verifies the chain, as `verify-ca` does.
        let mode = match (mode, &ssl.root_cert) {
            (TlsMode::Require, Some(_)) => TlsMode::VerifyCa,
            (mode, _) => mode,
        };
        config.ssl_mode(match mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = match mode {
            TlsMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(tls_config(mode, ssl.root_cert.as_deref())?)),
        };
        Ok(Target { config, tls, mode })
    }

    /// Opens a connection; its I/O runs on a task of its own until the client is dropped.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn database(&self) -> &str {
        self.config.get_dbname().or(self.config.get_user()).unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }
}

/// `host:port` for messages and reports (never the password).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        write!(f, "{host}:{port}")
    }
}

/// Runs a connection's I/O until it closes. Notices and notifications are dropped: a workload's notices (a
/// ROLLBACK with no transaction, `DROP … IF EXISTS`) would otherwise be logged on the terminal, once per
/// transaction. Errors reach the client on its next call.
async fn drive<S, T>(mut connection: Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(_)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {}
}

/// The TLS parameters libpq takes that tokio-postgres does not.
#[derive(Debug, Default, PartialEq)]
struct SslParams {
    mode: Option<String>,
    root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query string (percent-decoded), or out of a `key=value`
/// string, and gives back the rest.
fn take_ssl_params(url: &str) -> (String, SslParams) {
    let mut ssl = SslParams::default();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            ssl.mode = Some(value);
            false
        }
        "sslrootcert" => {
            ssl.root_cert = Some(PathBuf::from(value));
            false
        }
        _ => true,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        keep(key, percent_decode(value))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(key.trim(), value.trim().trim_matches('\'').to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, ssl)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_config(mode: TlsMode, root_cert: Option<&Path>) -> Result<ClientConfig, BenchError> {
    let mode = match mode {
        TlsMode::Disable => ServerTlsMode::Disable,
        TlsMode::Prefer => ServerTlsMode::Prefer,
        TlsMode::Require => ServerTlsMode::Require,
        TlsMode::VerifyCa => ServerTlsMode::VerifyCa,
        TlsMode::VerifyFull => ServerTlsMode::VerifyFull,
    };
    let builder = verifying_builder(
        mode,
        || root_store(root_cert),
        |error| BenchError::Usage(format!("TLS: {error}")),
    )?;
    Ok(builder.with_no_client_auth())
}

/// `sslrootcert`'s certificates, else the webpki roots (`sslrootcert=system` asks for those too).
fn root_store(root_cert: Option<&Path>) -> Result<RootCertStore, BenchError> {
    let mut roots = RootCertStore::empty();
    match root_cert.filter(|path| *path != Path::new("system")) {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let unreadable = |reason: String| BenchError::Usage(format!("sslrootcert {}: {reason}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|error| unreadable(error.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| unreadable(error.to_string()))?;
            if certs.is_empty() {
                return Err(unreadable("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|error| unreadable(error.to_string()))?;
            }
        }
    }
    Ok(roots)
}

/// A client error on one line: the server's severity, SQLSTATE and message, or the driver's own words with their
/// causes (a TLS handshake's failure says why only in its source).
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), one_line(db.message()));
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    one_line(&text)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_params_are_taken_out_of_urls_and_decoded() {
        let (rest, ssl) =
            take_ssl_params("postgres://app:pw@db:5432/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&x=1");
        assert_eq!(rest, "postgres://app:pw@db:5432/app?x=1");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        let (rest, ssl) = take_ssl_params("postgresql://db/app?sslmode=require");
        assert_eq!(
            (rest.as_str(), ssl.mode.as_deref()),
            ("postgresql://db/app", Some("require"))
        );
        let (rest, ssl) = take_ssl_params("host=db sslmode=disable user=app");
        assert_eq!(
            (rest.as_str(), ssl.mode.as_deref()),
            ("host=db user=app", Some("disable"))
        );
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_negotiates() {
        let target = Target::parse("postgres://app@127.0.0.1:5432/app").unwrap();
        assert_eq!(target.mode(), TlsMode::Prefer, "libpq's default");
        assert_eq!(target.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(target.to_string(), "127.0.0.1:5432");
        assert_eq!(target.config.get_application_name(), Some(APPLICATION_NAME));
        let target = Target::parse("postgres://app@127.0.0.1/app?sslmode=verify-full").unwrap();
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert!(target.tls.is_some());
        let target = Target::parse("postgres://app@127.0.0.1/app?sslmode=disable").unwrap();
        assert!(target.tls.is_none());
    }

    #[test]
    fn bad_urls_and_modes_are_usage_errors() {
        for url in [
            "postgres://app@127.0.0.1/app?sslmode=allow",
            "postgres://app@127.0.0.1/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "postgres://app@127.0.0.1/app?bogus=1",
            "http://nothing",
        ] {
            assert!(matches!(Target::parse(url), Err(BenchError::Usage(_))), "{url}");
        }
    }
}
