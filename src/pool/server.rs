//! One server connection: its transport (plain, or TLS per `[server] tls`), read buffer, the parameters the server
//! reported, and its cancel key. Opened (SSLRequest and handshake through [`ServerTls`]) and logged in here —
//! SCRAM-SHA-256-PLUS when the server offers it over TLS; the session relays bytes over it; the pool owns it while
//! idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::prepared::PreparedCache;
use super::settings::Settings;
use super::slot::Slot;
use crate::config::{Config, TcpConfig};
use crate::protocol::error::{Severity, SqlError};
use crate::protocol::io::read_frame;
use crate::protocol::login::{self, AuthMethods, LoginError, Security};
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::transport::Transport;
use crate::secret::Secret;
use crate::tls::ServerTls;
use crate::tls::connect::HandshakeError;

/// Server connections are shared only between clients of the same user and database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub user: Arc<str>,
    pub database: Arc<str>,
}

/// Everything needed to open a server connection for a client. Only user and database go into the startup
/// packet: settings are applied with SET afterwards, so that RESET returns to the server's defaults rather than
/// to whichever client happened to open the connection.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    pub key: ConnKey,
    pub password: Secret,
}

/// How connections to servers are opened: the connect-and-login deadline, the socket options, and the
/// authentication methods a server may ask for. TLS is the [`ServerTls`] loaded from the same `[server]` table
/// (its files are read at start and reload, never by a pool), given at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Connecting and logging in must finish within this (`server.connect_timeout`).
    pub timeout: Duration,
    pub tcp: TcpConfig,
    pub auth: AuthMethods,
}

impl ConnectOptions {
    pub fn of(config: &Config) -> ConnectOptions {
        ConnectOptions {
            timeout: config.server.connect_timeout,
            tcp: config.tcp,
            auth: AuthMethods::of(&config.server.auth_methods),
        }
    }
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
    pub stream: Transport,
    /// Bytes read from the server and not yet forwarded.
    pub buf: BytesMut,
    pub key: ConnKey,
    /// Reported parameters (ParameterStatus), as the server last told them.
    pub params: Vec<(String, String)>,
    /// The session settings pgsplit applied (or saw the client apply) on this connection.
    pub settings: Settings,
    /// The prepared statements this connection has (under pgsplit's names).
    pub prepared: PreparedCache,
    pub cancel: CancelTarget,
    /// When an idle connection is next probed before reuse ([`PROBE_AFTER`] after it went back to the pool).
    probe_at: Instant,
    /// Its place in the instance's pool, given back when the connection drops.
    slot: Slot,
    /// The worker thread whose I/O driver the socket is registered with (`crate::runtime`).
    worker: usize,
}

/// Idle time after which a pooled connection is checked before reuse.
pub const PROBE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Login(#[from] LoginError),
    /// No TLS as `server.tls` requires it (refused, or the certificate failed verification): never retried in
    /// plaintext.
    #[error(transparent)]
    Tls(#[from] HandshakeError),
}

impl ConnectError {
    /// What a client is told: the server's own refusal (bad database, bad setting) as it is, anything else as
    /// 57P03 naming the instance — a TLS failure with what to check rather than "retry later".
    pub fn to_sql_error(&self, instance: &str) -> SqlError {
        match self {
            ConnectError::Login(LoginError::Refused { code, message }) => {
                SqlError::new(Severity::Error, code.clone(), message.clone())
            }
            ConnectError::Tls(_) => SqlError::server_unavailable(instance, self).with_hint(
                "pgsplit never connects to a server without the TLS that server.tls asks for; check server.tls, \
                 server.tls_ca and the server's certificate.",
            ),
            other => SqlError::server_unavailable(instance, other),
        }
    }
}

/// Server-side read buffer; grows for large messages, shrinks back by being reused.
pub const READ_CHUNK: usize = 16 * 1024;

impl ServerConn {
    /// Opens a connection in `slot` (which goes back if this fails), with TLS as `tls` says.
    pub(super) async fn connect(
        (host, port): (&Arc<str>, u16),
        login: &LoginInfo,
        options: ConnectOptions,
        tls: &ServerTls,
        slot: Slot,
    ) -> Result<Box<Self>, ConnectError> {
        crate::runtime::timeout(options.timeout, Self::open(host, port, login, &options, tls, slot))
            .await
            .map_err(|_| ConnectError::Timeout(options.timeout))?
    }

    async fn open(
        host: &Arc<str>,
        port: u16,
        login: &LoginInfo,
        options: &ConnectOptions,
        tls: &ServerTls,
        slot: Slot,
    ) -> Result<Box<Self>, ConnectError> {
        let tcp = TcpStream::connect((&**host, port)).await?;
        crate::tcp::configure(&tcp, &options.tcp)?;
        // SSLRequest and handshake per `server.tls`; a refusal or a failed verification ends here.
        let (mut stream, certificate) = tls.handshake(tcp, host).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let params = [("user", &*login.key.user), ("database", &*login.key.database)];
        let security = Security {
            methods: options.auth,
            tls: stream.is_tls(),
            end_point: certificate.as_deref().and_then(crate::tls::binding::end_point),
        };
        let password = login.password.expose();
        let greeting = login::login(&mut stream, &mut buf, &params, &login.key.user, password, &security).await?;
        Ok(Box::new(ServerConn {
            stream,
            buf,
            key: login.key.clone(),
            params: greeting.params,
            settings: Settings::default(),
            prepared: PreparedCache::default(),
            probe_at: Instant::now() + PROBE_AFTER,
            cancel: CancelTarget {
                host: host.clone(),
                port,
                pid: greeting.pid,
                secret: greeting.secret,
            },
            slot,
            worker: crate::runtime::current_worker(),
        }))
    }

    /// The worker whose I/O driver polls this connection's socket.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Registers the socket with the calling worker's I/O driver instead of its old worker's, numbered `worker`.
    /// What is buffered (read bytes, TLS state) moves with it. On error the connection is closed.
    pub(super) fn move_to(self: Box<Self>, worker: usize) -> std::io::Result<Box<Self>> {
        let mut conn = *self;
        conn.stream = conn.stream.rebind()?;
        conn.worker = worker;
        Ok(Box::new(conn))
    }

    /// Closes the connection but keeps its place, for the pool to hand on.
    pub(super) fn into_slot(self: Box<Self>) -> Slot {
        let ServerConn { slot, .. } = *self;
        slot
    }

    /// An idle pooled connection should have nothing to say; readable bytes or EOF mean the server closed it or
    /// sent something unsolicited (a FATAL before shutting down). One non-blocking read, skipped for connections
    /// back in the pool for less than [`PROBE_AFTER`]: under load they cycle far faster than that, and the read
    /// would cost a system call per transaction.
    pub fn is_idle_and_open(&self) -> bool {
        if Instant::now() < self.probe_at {
            return true;
        }
        self.stream.is_silent()
    }

    /// Marks the moment the connection went back to the pool.
    pub fn returned(&mut self) {
        self.probe_at = Instant::now() + PROBE_AFTER;
    }

    /// Applies `wanted` if this connection's settings differ (one round trip, within `deadline`), else does
    /// nothing.
    pub async fn sync_settings(&mut self, wanted: &Settings, deadline: Duration) -> Result<(), ConnectError> {
        if let Some(sql) = wanted.sync_sql(&self.settings) {
            // Boxed: rarely needed, and its state would otherwise weigh on every session's task.
            Box::pin(self.run_own(&sql, deadline)).await?;
            self.settings.clone_from(wanted);
        }
        Ok(())
    }

    /// Runs `sql` (pgsplit's own statement, e.g. `DISCARD ALL`) and reads to ReadyForQuery, within `deadline`. Ok
    /// only if it succeeded and left the connection idle; a server error comes back as `LoginError::Refused`. On
    /// any other error the connection is in an unknown state: the caller must drop it.
    pub async fn run_own(&mut self, sql: &str, deadline: Duration) -> Result<(), ConnectError> {
        self.query_own(sql, deadline).await.map(drop)
    }

    /// Like [`run_own`](Self::run_own), for a query of pgsplit's own returning one value: the first column of
    /// its first row, as text (None for NULL or no row).
    pub async fn query_own(&mut self, sql: &str, deadline: Duration) -> Result<Option<String>, ConnectError> {
        crate::runtime::timeout(deadline, self.exchange_own(sql))
            .await
            .map_err(|_| ConnectError::Timeout(deadline))?
    }

    async fn exchange_own(&mut self, sql: &str) -> Result<Option<String>, ConnectError> {
        let mut value = None;
        let mut out = BytesMut::new();
        messages::query(&mut out, sql.as_bytes());
        self.stream.write_all(&out).await?;
        let mut failed = None;
        loop {
            let (tag, body) = read_frame(&mut self.stream, &mut self.buf, 1 << 20)
                .await
                .map_err(LoginError::from)?;
            match tag {
                b'E' => {
                    failed = Some(LoginError::Refused {
                        code: messages::error_field(&body, b'C').unwrap_or("XX000").to_owned(),
                        message: messages::error_field(&body, b'M').unwrap_or("unknown error").to_owned(),
                    });
                }
                b'D' if value.is_none() => value = messages::first_column(&body).map(str::to_owned),
                b'S' => {
                    if let Some((name, reported)) = messages::parse_parameter_status(&body) {
                        record_parameter(&mut self.params, name, reported);
                    }
                }
                b'Z' => {
                    let idle = body.first().copied().and_then(TxStatus::from_byte) == Some(TxStatus::Idle);
                    return match failed {
                        Some(error) => Err(error.into()),
                        None if !idle => Err(LoginError::Protocol(format!("\"{sql}\" left a transaction open")).into()),
                        None => Ok(value),
                    };
                }
                _ => {}
            }
        }
    }
}

/// Records a parameter a server reported (ParameterStatus) in its connection's `params`, which so stay what the
/// server last said.
pub fn record_parameter(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    match params.iter_mut().find(|(n, _)| n == name) {
        Some((_, known)) if known == value => {}
        Some((_, known)) => value.clone_into(known),
        None => params.push((name.to_owned(), value.to_owned())),
    }
}
