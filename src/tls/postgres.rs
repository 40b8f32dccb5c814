//! TLS and the authentication allow-list for pgsplit's own tokio-postgres connections (monitor, catalog, control):
//! [`connect`] opens the socket itself and hands it to tokio-postgres with [`PgTls`], which does the rustls
//! handshake when the server accepts TLS (with the `tls-server-end-point` binding for SCRAM-SHA-256-PLUS).
//!
//! tokio-postgres answers a cleartext or md5 request with the password without asking, so the stream it reads
//! goes through [`Guarded`]: it watches the server's messages up to AuthenticationOk and breaks the connection
//! before tokio-postgres sees a request `server.auth_methods` does not allow, or an AuthenticationOk that comes
//! without any authentication when `none` is not allowed. After AuthenticationOk it only passes bytes on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::binding;
use super::connect::ServerTls;
use crate::config::ServerTlsMode;
use crate::protocol::login::AuthMethods;

/// Why an own connection did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", crate::topology::conn::error_chain(.0))]
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for OpenError {
    fn from(error: tokio_postgres::Error) -> Self {
        OpenError::Postgres(error)
    }
}

/// Keepalives of pgsplit's own connections: idle, interval, probes.
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub retries: u32,
}

/// Connects to `host:port` and logs in with `login` (user, password, database, options), TLS as `tls` says and
/// only by the `methods` allowed, all within `timeout`.
pub async fn connect(
    login: &tokio_postgres::Config,
    host: &str,
    port: u16,
    tls: &ServerTls,
    methods: AuthMethods,
    keepalive: &Keepalive,
    timeout: Duration,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<Guarded<TcpStream>, Guarded<TlsOver>>,
    ),
    OpenError,
> {
    let open = async {
        let tcp = TcpStream::connect((host, port)).await.map_err(OpenError::Connect)?;
        let socket = socket2::SockRef::from(&tcp);
        let _ = socket.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(keepalive.idle)
                .with_interval(keepalive.interval)
                .with_retries(keepalive.retries),
        );
        let _ = tcp.set_nodelay(true);
        let mut login = login.clone();
        login.ssl_mode(match tls.mode() {
            ServerTlsMode::Disable => SslMode::Disable,
            ServerTlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let stream = Guarded::new(tcp, methods, tls.mode() != ServerTlsMode::Disable);
        let connector = PgTls {
            tls,
            host: host.to_owned(),
            methods,
        };
        login.connect_raw(stream, connector).await.map_err(OpenError::from)
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::Timeout(timeout)),
    }
}

/// The TLS connector tokio-postgres calls once the server said `S`.
pub struct PgTls<'a> {
    tls: &'a ServerTls,
    host: String,
    methods: AuthMethods,
}

pub type TlsOver = tokio_rustls::client::TlsStream<TcpStream>;

impl TlsConnect<Guarded<TcpStream>> for PgTls<'_> {
    type Stream = Guarded<TlsOver>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Guarded<TlsOver>>> + Send>>;

    fn connect(self, stream: Guarded<TcpStream>) -> Self::Future {
        let config = self.tls.client_config().cloned();
        let name = ServerName::try_from(self.host.clone());
        let methods = self.methods;
        Box::pin(async move {
            let config = config.ok_or_else(|| io::Error::other("TLS is disabled (server.tls)"))?;
            let name = name.map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a valid TLS server name"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream.inner)
                .await?;
            Ok(Guarded::new(tls, methods, false))
        })
    }
}

/// A stream whose incoming authentication requests are checked against the allowed methods.
pub struct Guarded<S> {
    inner: S,
    watch: Option<AuthWatch>,
}

impl<S> Guarded<S> {
    /// `ssl_answer`: the first byte read is the answer to an SSLRequest, not a message.
    fn new(inner: S, methods: AuthMethods, ssl_answer: bool) -> Guarded<S> {
        Guarded {
            inner,
            watch: Some(AuthWatch {
                methods,
                skip: usize::from(ssl_answer),
                header: [0; 9],
                have: 0,
                asked: false,
            }),
        }
    }
}

/// Follows the server's messages during authentication.
struct AuthWatch {
    methods: AuthMethods,
    /// Bytes still to pass before the next message header.
    skip: usize,
    /// Tag, length and (for 'R') the request code.
    header: [u8; 9],
    have: usize,
    /// The server asked for some authentication.
    asked: bool,
}

impl AuthWatch {
    /// Looks at `bytes`; Ok(true) once AuthenticationOk went by (nothing more to watch).
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<bool> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let len = || u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
            if self.have == 5 && (self.header[0] != b'R' || len() < 8) {
                self.skip = len().saturating_sub(4);
                self.have = 0;
            } else if self.have == 9 {
                let code = u32::from_be_bytes([self.header[5], self.header[6], self.header[7], self.header[8]]);
                self.methods
                    .check(code, self.asked)
                    .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
                if code == 0 {
                    return Ok(true);
                }
                self.asked = true;
                self.skip = len() - 8;
                self.have = 0;
            }
        }
        Ok(false)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(watch) = &mut this.watch
            && watch.scan(&buf.filled()[before..])?
        {
            this.watch = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TlsStream for Guarded<TlsOver> {
    fn channel_binding(&self) -> ChannelBinding {
        let certificate = self
            .inner
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        match certificate.and_then(|cert| binding::end_point(cert)) {
            Some(data) => ChannelBinding::tls_server_end_point(data),
            None => ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerAuthMethod;

    fn request(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    fn watch(methods: &[ServerAuthMethod], ssl_answer: bool) -> AuthWatch {
        Guarded::new((), AuthMethods::of(methods), ssl_answer).watch.unwrap()
    }

    #[test]
    fn cleartext_and_md5_requests_break_the_connection_unless_allowed() {
        let scram_only = [ServerAuthMethod::ScramSha256];
        for code in [3, 5] {
            let error = watch(&scram_only, false).scan(&request(code, b"salt")).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        }
        let mut allowed = watch(&[ServerAuthMethod::Md5], true);
        // The SSLRequest's answer, a notice, the md5 request (split), then AuthenticationOk.
        let mut bytes = vec![b'N', b'N', 0, 0, 0, 6, b'x', 0];
        bytes.extend(request(5, b"salt"));
        bytes.extend(request(0, b""));
        let (a, b) = bytes.split_at(11);
        assert!(!allowed.scan(a).unwrap());
        assert!(allowed.scan(b).unwrap());
    }

    #[test]
    fn authentication_ok_without_a_request_needs_none() {
        let ok = request(0, b"");
        assert!(watch(&[ServerAuthMethod::ScramSha256], false).scan(&ok).is_err());
        assert!(watch(&[ServerAuthMethod::None], false).scan(&ok).unwrap());
        let mut sasl = request(10, b"SCRAM-SHA-256\0\0");
        sasl.extend(request(12, b"v=xyz"));
        sasl.extend(request(0, b""));
        assert!(watch(&[ServerAuthMethod::ScramSha256], false).scan(&sasl).unwrap());
        assert!(watch(&[ServerAuthMethod::Md5], false).scan(&sasl).is_err());
    }
}
