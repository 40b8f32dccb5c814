//! One server connection: its socket, read buffer, the parameters the server reported, and its cancel key.
//! Opened and logged in here; the session relays bytes over it; the pool owns it while idle.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::io::read_frame;
use crate::protocol::login::{self, LoginError};
use crate::protocol::messages::{self, TxStatus};

/// Server connections are shared only between clients of the same user and database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub user: Arc<str>,
    pub database: Arc<str>,
}

/// Everything needed to open a server connection for a client.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    pub key: ConnKey,
    pub password: Arc<str>,
    /// Startup parameters to send besides user and database (application_name, client_encoding, options, …).
    pub params: Arc<[(String, String)]>,
}

/// Where to send a CancelRequest for the query running on a server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub host: Arc<str>,
    pub port: u16,
    pub pid: u32,
    pub secret: u32,
}

#[derive(Debug)]
pub struct ServerConn {
    pub stream: TcpStream,
    /// Bytes read from the server and not yet forwarded.
    pub buf: BytesMut,
    pub key: ConnKey,
    /// Reported parameters (ParameterStatus), as the server last told them.
    pub params: Vec<(String, String)>,
    pub cancel: CancelTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Server-side read buffer; grows for large messages, shrinks back by being reused.
pub const READ_CHUNK: usize = 16 * 1024;

impl ServerConn {
    pub async fn connect(
        host: &Arc<str>,
        port: u16,
        login: &LoginInfo,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(timeout, Self::open(host, port, login))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    async fn open(host: &Arc<str>, port: u16, login: &LoginInfo) -> Result<Self, ConnectError> {
        let mut stream = TcpStream::connect((&**host, port)).await?;
        stream.set_nodelay(true)?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut params: Vec<(&str, &str)> = vec![("user", &login.key.user), ("database", &login.key.database)];
        params.extend(login.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let greeting = login::login(&mut stream, &mut buf, &params, &login.key.user, &login.password).await?;
        Ok(ServerConn {
            stream,
            buf,
            key: login.key.clone(),
            params: greeting.params,
            cancel: CancelTarget {
                host: host.clone(),
                port,
                pid: greeting.pid,
                secret: greeting.secret,
            },
        })
    }

    pub fn record_param(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.params.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Runs `sql` (pgsplit's own statement, e.g. `DISCARD ALL`) and reads to ReadyForQuery. Ok only if it
    /// succeeded and left the connection idle.
    pub async fn run_own(&mut self, sql: &str) -> Result<(), ConnectError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut failed = false;
        loop {
            let (tag, body) = read_frame(&mut self.stream, &mut self.buf, 1 << 20)
                .await
                .map_err(LoginError::from)?;
            match tag {
                b'E' => failed = true,
                b'S' => {
                    if let Some((name, value)) = messages::parse_parameter_status(&body) {
                        self.record_param(name, value);
                    }
                }
                b'Z' => {
                    let idle = body.first().copied().and_then(TxStatus::from_byte) == Some(TxStatus::Idle);
                    return if failed || !idle {
                        Err(LoginError::Protocol(format!("\"{sql}\" failed on the server")).into())
                    } else {
                        Ok(())
                    };
                }
                _ => {}
            }
        }
    }
}
