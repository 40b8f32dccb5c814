//! One client connection's life: startup negotiation → limits → authentication → greeting → relay.
//!
//! Owns the per-client state; borrows server connections from the pool through the relay. Never parses SQL
//! itself (that is the router's job) and never holds a server connection longer than the pool mode allows.

mod analyses;
pub mod cancel;
pub mod floor;
mod from_server;
mod intent;
mod local;
pub mod outflow;
pub mod plan;
mod read_your_writes;
pub mod relay;
pub mod replies;
mod retry;
mod server;
pub mod statements;
mod stop;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::context::{Endpoint, SessionContext};
use crate::pool::{ConnKey, LoginInfo, Settings};
use crate::protocol::auth::{self, AuthError};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use relay::{Relay, SessionEnd};

/// Serves one accepted client connection to the end.
pub async fn serve(mut stream: TcpStream, ctx: Arc<SessionContext>, endpoint: Endpoint) {
    let _ = stream.set_nodelay(true);
    let params = match negotiate(&mut stream, &ctx).await {
        Ok(Some(params)) => params,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(%error, "client startup failed");
            return reject(stream, error).await;
        }
    };
    let Some(_client_slot) = ClientSlot::take(&ctx) else {
        return reject(
            stream,
            SqlError::too_many_clients(ctx.config().proxy.max_client_connections),
        )
        .await;
    };
    let registration = ctx.cancels.register();
    let user = params.get("user").unwrap_or_default().to_owned();
    let mut buf = BytesMut::new();
    let users = ctx.credentials.load_full();
    let credentials = users.get(&user);
    match auth::authenticate(&mut stream, &mut buf, &user, credentials).await {
        Ok(()) => {}
        Err(AuthError::Rejected(error)) => {
            tracing::info!(user, code = %error.code, "client authentication failed");
            return reject(stream, error).await;
        }
        Err(AuthError::Io(error)) => return tracing::debug!(%error, "client left during authentication"),
    }
    let credentials = credentials.expect("authentication succeeds only for known users");
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    let mut wanted = match Settings::from_startup(&params.params) {
        Ok(wanted) => wanted,
        Err(message) => return reject(stream, SqlError::protocol_violation(message)).await,
    };
    // pgsplit's own setting never reaches a server.
    let min_lsn = wanted.get(plan::MIN_LSN).map(str::to_owned);
    wanted.reset(plan::MIN_LSN);
    if let Some(value) = min_lsn.as_deref().filter(|v| floor::parse_setting(v).is_none()) {
        let mut error = floor::invalid_min_lsn(value);
        error.severity = Severity::Fatal;
        return reject(stream, error).await;
    }
    let login = LoginInfo {
        key: ConnKey {
            user: user.as_str().into(),
            database: database.as_str().into(),
        },
        password: credentials.password.as_str().into(),
    };
    // The login-time connection (parameters for the greeting) comes from the leader, which always exists.
    let pool = ctx.topology.load().leader.pool.clone();
    let server_params = match pool.server_params(&login.key) {
        Some(p) => p,
        // First client of this user and database: log in to the server once now, so the client hears the
        // server's real parameters and a bad database name fails at login as it would without pgsplit.
        None => match server::borrow(&pool, &login, &wanted, ctx.config().server.checkout_timeout).await {
            Ok(conn) => {
                let params = Arc::new(conn.params.clone());
                pool.release(conn);
                params
            }
            Err(mut error) => {
                error.severity = Severity::Fatal;
                return reject(stream, error).await;
            }
        },
    };
    let mut greeting = BytesMut::new();
    for (name, value) in server_params.iter() {
        let value = wanted.get(name).unwrap_or(value);
        messages::parameter_status(&mut greeting, name, value);
    }
    messages::backend_key_data(&mut greeting, registration.slot.pid, registration.slot.secret);
    messages::ready_for_query(&mut greeting, TxStatus::Idle);
    if stream.write_all(&greeting).await.is_err() {
        return;
    }
    tracing::debug!(user, database, "client logged in");
    // What only the login needed is freed: the session's task keeps its memory for the client's whole life.
    drop((params, buf, greeting));
    // Boxed: a catalog load's state is large and would otherwise stay in the task's size after the login.
    let functions = Box::pin(ctx.functions.for_database(&database)).await;
    let mut relay = Relay::new(
        ctx.clone(),
        endpoint,
        login,
        wanted,
        functions,
        registration.slot.clone(),
        stream,
    );
    relay.floor.set_min(min_lsn.as_deref());
    match relay.run().await {
        SessionEnd::ClientGone => tracing::debug!(user, "client left"),
        end => tracing::info!(user, reason = %end, "client session ended"),
    }
}

/// Answers SSL/GSS requests (`N`: no encryption offered yet) and cancel requests; returns the StartupMessage, or
/// None when the connection carried a cancel request.
async fn negotiate(stream: &mut TcpStream, ctx: &SessionContext) -> Result<Option<StartupParams>, SqlError> {
    loop {
        let packet = startup::read_packet(stream)
            .await
            .map_err(|e| SqlError::protocol_violation(e.to_string()))?;
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                stream
                    .write_all(b"N")
                    .await
                    .map_err(|e| SqlError::protocol_violation(e.to_string()))?;
            }
            StartupPacket::Cancel { pid, secret } => {
                ctx.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            StartupPacket::Startup(params) => {
                if params
                    .get("replication")
                    .is_some_and(|r| r != "false" && r != "off" && r != "0")
                {
                    return Err(SqlError::new(
                        Severity::Fatal,
                        code::FEATURE_NOT_SUPPORTED,
                        "replication connections are not supported through pgsplit; connect to the server directly",
                    ));
                }
                if params.minor_version > 0 || params.protocol_options().next().is_some() {
                    let mut out = BytesMut::new();
                    startup::negotiate_protocol_version(&mut out, &params);
                    stream
                        .write_all(&out)
                        .await
                        .map_err(|e| SqlError::protocol_violation(e.to_string()))?;
                }
                return Ok(Some(params));
            }
        }
    }
}

async fn reject(mut stream: TcpStream, error: SqlError) {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Counts a logged-in client against `max_client_connections` for as long as it lives.
struct ClientSlot<'a>(&'a SessionContext);

impl<'a> ClientSlot<'a> {
    fn take(ctx: &'a SessionContext) -> Option<Self> {
        let max = ctx.config().proxy.max_client_connections;
        ctx.gauges
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ClientSlot(ctx))
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.gauges.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` would return, without running anything.
    fn future_size<F>(_: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connected client holds one session task for its whole life, so its size is most of what an idle
    /// client costs. Large, rare steps (a catalog load, a server login) are boxed to keep it small; this guards that.
    #[test]
    #[allow(unreachable_code)]
    fn a_session_task_stays_small() {
        let size = future_size(|| super::serve(unimplemented!(), unimplemented!(), unimplemented!()));
        // 2,752 bytes when this bound was set.
        assert!(size <= 3072, "the session future is {size} bytes");
    }
}
