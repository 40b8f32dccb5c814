//! pgsplit as a TLS client of its servers (`[server] tls`, `tls_ca`, `tls_cert`/`tls_key`): the rustls client
//! config of each mode, and the handshake of a pooled server connection (SSLRequest, then TLS).
//!
//! - `disable`: no TLS. `prefer`: TLS when the server answers the SSLRequest with `S`, plaintext only when it
//!   answers `N`. `require`: TLS or no connection, certificate not checked (as libpq's `require` without a root
//!   file). `verify-ca`: the chain must lead to `tls_ca` (or Mozilla's roots), any name. `verify-full`: that, and the
//!   certificate must name the host pgsplit connects to.
//! - A failed handshake or verification is an error, never a retry in plaintext.

use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::files::{self, TlsFileError};
use crate::config::{ServerConfig, ServerTlsMode};
use crate::protocol::transport::Transport;

/// The ring provider, explicitly: a stray dependency enabling another provider can never change it.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How pgsplit's connections to servers do TLS, built from `[server]`.
pub struct ServerTls {
    mode: ServerTlsMode,
    /// None with `disable`.
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Why a server connection's TLS did not come about.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the server does not accept TLS (it answered the SSLRequest with 'N'), and server.tls = \"{0}\"")]
    Refused(&'static str),
    #[error("unexpected answer to the SSLRequest (byte {0:#04x}); the server may not speak PostgreSQL's protocol")]
    Unexpected(u8),
    #[error("\"{0}\" is not a valid TLS server name")]
    Name(String),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ServerTls {
    /// Reads `tls_ca` and the client certificate, if any; a file that cannot be used is an error naming it.
    pub fn load(server: &ServerConfig) -> Result<ServerTls, TlsFileError> {
        if server.tls == ServerTlsMode::Disable {
            return Ok(ServerTls {
                mode: server.tls,
                config: None,
            });
        }
        let roots_file = server.tls_ca.as_deref().unwrap_or("webpki-roots".as_ref());
        let builder = verifying_builder(server.tls, || roots(server), |e| TlsFileError::new(roots_file, e))?;
        let config = match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = files::certificates(cert)?;
                let key_der = files::private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsFileError::new(key, format!("does not go with {}: {e}", cert.display())))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(ServerTls {
            mode: server.tls,
            config: Some(Arc::new(config)),
        })
    }

    pub fn mode(&self) -> ServerTlsMode {
        self.mode
    }

    /// The rustls config, None with `disable`.
    pub fn client_config(&self) -> Option<&Arc<ClientConfig>> {
        self.config.as_ref()
    }

    /// Starts a pooled server connection on `tcp` to `host`: SSLRequest and handshake as the mode says. Returns the
    /// transport and, over TLS, the server's certificate (for SCRAM-SHA-256-PLUS,
    /// [`end_point`](super::binding::end_point)).
    pub async fn handshake(
        &self,
        mut tcp: TcpStream,
        host: &str,
    ) -> Result<(Transport, Option<CertificateDer<'static>>), HandshakeError> {
        let Some(config) = &self.config else {
            return Ok((Transport::Plain(tcp), None));
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|_| HandshakeError::Name(host.to_owned()))?;
        tcp.write_all(&SSL_REQUEST).await?;
        // Exactly one byte: whatever follows is the server's side of the handshake.
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.mode == ServerTlsMode::Prefer => return Ok((Transport::Plain(tcp), None)),
            b'N' => return Err(HandshakeError::Refused(mode_name(self.mode))),
            other => return Err(HandshakeError::Unexpected(other)),
        }
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(HandshakeError::Tls)?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned();
        Ok((Transport::from(stream), certificate))
    }
}

/// SSLRequest: length 8, code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Disable => "disable",
        ServerTlsMode::Prefer => "prefer",
        ServerTlsMode::Require => "require",
        ServerTlsMode::VerifyCa => "verify-ca",
        ServerTlsMode::VerifyFull => "verify-full",
    }
}

/// `tls_ca`'s certificates, or Mozilla's roots.
/// A rustls client config builder that checks a server's certificate as libpq's sslmode `mode` does: `verify-full`
/// the chain to `roots` and the name, `verify-ca` the chain only, `prefer` and `require` nothing but the handshake's
/// own signatures. `roots` is asked for only by the verifying modes. Every TLS client in pgsplit builds on it (its
/// pooled and own connections, and `pgsplit bench`).
pub fn verifying_builder<E>(
    mode: ServerTlsMode,
    roots: impl FnOnce() -> Result<RootCertStore, E>,
    error: impl Fn(String) -> E,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, E> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?;
    Ok(match mode {
        ServerTlsMode::VerifyFull | ServerTlsMode::VerifyCa => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots()?), provider)
                .build()
                .map_err(|e| error(e.to_string()))?;
            if mode == ServerTlsMode::VerifyFull {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
            }
        }
        ServerTlsMode::Disable | ServerTlsMode::Prefer | ServerTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider.signature_verification_algorithms))),
    })
}

fn roots(server: &ServerConfig) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    match &server.tls_ca {
        Some(path) => {
            for cert in files::certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsFileError::new(path, format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// verify-ca: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked last, after the chain: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// require/prefer: encryption without authentication of the server (libpq's `require`). The handshake's own
/// signatures are still checked, so the session keys belong to whoever holds the certificate's key.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
