//! pgsplit as the TLS server of its clients (`[proxy.tls]`), and the TLS state both sides share across reloads.
//!
//! [`Tls`] holds the client-facing [`Acceptor`] and the server-facing [`ServerTls`] behind `ArcSwap`s: loaded at
//! start (a file that cannot be used stops start-up, naming it and why), loaded again at every reload (a file that
//! cannot be used then is logged and the old ones stay). A swap never touches connections already made: each
//! handshake took the config it started with. [`LoginStream`] is a client's connection during login, plain or
//! TLS, borrowed from the session; [`LoginStream::into_tls`] hands the TLS state on when the login is done.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::binding;
use super::connect::{ServerTls, provider};
use super::files::{self, TlsFileError};
use crate::config::{ClientTlsConfig, ClientTlsMode, Config};

/// ALPN protocol name PostgreSQL 17 registered; direct-TLS clients must offer it.
pub const ALPN: &[u8] = b"postgresql";

/// Client-facing TLS as configured now.
pub struct Acceptor {
    pub mode: ClientTlsMode,
    /// None with `disable`.
    config: Option<Arc<rustls::ServerConfig>>,
    /// `tls-server-end-point` of our certificate, when its algorithm gives one (SCRAM-SHA-256-PLUS is offered).
    end_point: Option<Vec<u8>>,
}

impl Acceptor {
    /// Reads the certificate chain and key of `[proxy.tls]`; without the table, TLS is off.
    pub fn load(tls: Option<&ClientTlsConfig>) -> Result<Acceptor, TlsFileError> {
        let disabled = Acceptor {
            mode: ClientTlsMode::Disable,
            config: None,
            end_point: None,
        };
        let Some(tls) = tls.filter(|t| t.mode != ClientTlsMode::Disable) else {
            return Ok(disabled);
        };
        // Validation makes sure both are set for prefer and require.
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Ok(disabled);
        };
        let chain = files::certificates(cert)?;
        let key_der = files::private_key(key)?;
        let end_point = binding::end_point(&chain[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError::new(cert, e))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| TlsFileError::new(key, format!("does not go with {}: {e}", cert.display())))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // No session resumption, as PostgreSQL does: libpq never resumes a TLS session, and each ticket would cost
        // every login randomness, a cache entry and one more record.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Acceptor {
            mode: tls.mode,
            config: Some(Arc::new(config)),
            end_point,
        })
    }

    /// The rustls config, None when TLS is off.
    pub fn config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.config.as_ref()
    }

    pub fn end_point(&self) -> Option<&[u8]> {
        self.end_point.as_deref()
    }
}

/// The TLS configs of both sides, swapped whole at every reload.
pub struct Tls {
    clients: ArcSwap<Acceptor>,
    servers: ArcSwap<ServerTls>,
}

impl Tls {
    /// Loads both sides; any file that cannot be used is an error (start-up stops).
    pub fn load(config: &Config) -> Result<Tls, TlsFileError> {
        Ok(Tls {
            clients: ArcSwap::from_pointee(Acceptor::load(config.proxy.tls.as_ref())?),
            servers: ArcSwap::from_pointee(ServerTls::load(&config.server)?),
        })
    }

    /// Loads both sides again (certificates may have been replaced on disk); a side whose files cannot be used
    /// keeps its old config. Returns what could not be loaded.
    pub fn reload(&self, config: &Config) -> Vec<TlsFileError> {
        let mut errors = Vec::new();
        match Acceptor::load(config.proxy.tls.as_ref()) {
            Ok(acceptor) => self.clients.store(Arc::new(acceptor)),
            Err(error) => errors.push(error),
        }
        match ServerTls::load(&config.server) {
            Ok(servers) => self.servers.store(Arc::new(servers)),
            Err(error) => errors.push(error),
        }
        for error in &errors {
            tracing::error!(%error, "TLS file not loaded; the certificates loaded before stay in use");
        }
        errors
    }

    pub fn clients(&self) -> Arc<Acceptor> {
        self.clients.load_full()
    }

    pub fn servers(&self) -> Arc<ServerTls> {
        self.servers.load_full()
    }
}

/// A client's connection while it logs in: the session's socket, plain or with TLS over it.
pub enum LoginStream<'a> {
    Plain(&'a mut TcpStream),
    Tls(Box<TlsStream<&'a mut TcpStream>>),
    /// A handshake failed half-way: nothing can be said any more.
    Broken,
}

impl<'a> LoginStream<'a> {
    pub fn is_tls(&self) -> bool {
        matches!(self, LoginStream::Tls(_))
    }

    /// Waits for the client's first byte and returns it without taking it (before TLS only).
    pub async fn peek_first(&self) -> io::Result<Option<u8>> {
        let LoginStream::Plain(tcp) = self else {
            return Ok(None);
        };
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        Ok((n == 1).then_some(first[0]))
    }

    /// Runs the TLS handshake on the plain socket (the caller has answered an SSLRequest with `S`, or seen a
    /// direct-TLS ClientHello). `direct`: the client must have offered ALPN `postgresql`.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>, direct: bool) -> io::Result<()> {
        let LoginStream::Plain(tcp) = std::mem::replace(self, LoginStream::Broken) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS is already on"));
        };
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a direct TLS connection must negotiate ALPN \"postgresql\"",
            ));
        }
        *self = LoginStream::Tls(Box::new(tls));
        Ok(())
    }

    /// The TLS state to hand to the session's transport ([`Transport::server_side`] with the socket); None for a
    /// plain connection. Plaintext the client already sent stays in it.
    ///
    /// [`Transport::server_side`]: crate::protocol::transport::Transport::server_side
    pub fn into_tls(self) -> Option<Box<ServerConnection>> {
        match self {
            LoginStream::Plain(_) | LoginStream::Broken => None,
            LoginStream::Tls(tls) => Some(Box::new(tls.into_inner().1)),
        }
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
}

impl AsyncRead for LoginStream<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LoginStream::Plain(tcp) => Pin::new(&mut **tcp).poll_read(cx, buf),
            LoginStream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            LoginStream::Broken => Poll::Ready(Err(broken())),
        }
    }
}

impl AsyncWrite for LoginStream<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LoginStream::Plain(tcp) => Pin::new(&mut **tcp).poll_write(cx, buf),
            LoginStream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            LoginStream::Broken => Poll::Ready(Err(broken())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LoginStream::Plain(tcp) => Pin::new(&mut **tcp).poll_flush(cx),
            LoginStream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
            LoginStream::Broken => Poll::Ready(Err(broken())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LoginStream::Plain(tcp) => Pin::new(&mut **tcp).poll_shutdown(cx),
            LoginStream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            LoginStream::Broken => Poll::Ready(Err(broken())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Pki;

    fn config(dir: &std::path::Path, mode: &str) -> Config {
        let files = if mode == "disable" {
            ""
        } else {
            "cert = \"server.crt\"\nkey = \"server.key\"\n"
        };
        let text = format!(
            "[proxy.tls]\nmode = \"{mode}\"\n{files}[leader]\nhost = \"h\"\nport = 1\n[[users]]\nname = \"a\"\n\
             password = \"a\"\n"
        );
        Config::parse(&text, &dir.join("proxy.toml").display().to_string()).unwrap()
    }

    #[test]
    fn certificates_load_at_start_and_a_bad_one_on_reload_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("pgsplit-accept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::new();
        let config = config(&dir, "require");
        // Missing files stop start-up, naming the file.
        let error = Tls::load(&config).err().expect("no certificate yet");
        assert!(
            error.to_string().contains("server.crt") && error.to_string().contains("cannot read"),
            "{error}"
        );
        std::fs::write(dir.join("server.crt"), &pki.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &pki.key_pem).unwrap();
        let tls = Tls::load(&config).expect("loads");
        let first = tls.clients();
        assert_eq!(first.mode, ClientTlsMode::Require);
        assert!(first.config().is_some() && first.end_point().is_some());
        assert_eq!(
            first.config().map(|c| c.send_tls13_tickets),
            Some(0),
            "no resumption tickets"
        );
        // A reload reads the files again; a broken key keeps what was loaded.
        std::fs::write(dir.join("server.key"), "not a key").unwrap();
        let errors = tls.reload(&config);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].path.ends_with("server.key"), "{}", errors[0]);
        assert!(Arc::ptr_eq(&first, &tls.clients()));
        // Fixed again: the reload takes the new one; disabling works without files.
        std::fs::write(dir.join("server.key"), &pki.key_pem).unwrap();
        assert!(tls.reload(&config).is_empty());
        assert!(!Arc::ptr_eq(&first, &tls.clients()));
        assert!(tls.reload(&super::tests::config(&dir, "disable")).is_empty());
        assert!(tls.clients().config().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
