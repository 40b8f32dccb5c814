//! TLS on both of pgsplit's sides, with rustls and the ring provider: towards clients (`[proxy.tls]`: certificates
//! loaded at start and on every reload, the SSLRequest and direct-TLS handshakes) and towards servers
//! (`[server] tls`: verification modes, the handshake of pooled connections, and pgsplit's own tokio-postgres
//! connections). Also the `tls-server-end-point` channel binding SCRAM-SHA-256-PLUS uses.
//!
//! Owns configs and handshakes; the bytes of a connection after its handshake belong to
//! [`Transport`](crate::protocol::transport::Transport).

#[cfg(test)]
pub(crate) mod testing;

pub mod accept;
pub mod binding;
pub mod connect;
pub mod files;
pub mod postgres;

pub use accept::{Acceptor, Tls};
pub use connect::ServerTls;
pub use files::TlsFileError;
