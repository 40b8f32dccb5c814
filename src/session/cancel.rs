//! Cancel keys. Each client gets a (pid, secret) from pgsplit; while it borrows a server connection, its slot
//! points at that connection's own key, so a CancelRequest reaches whichever server runs the client's query. The
//! pid also names the session to end when someone terminates it (as `pg_terminate_backend` ends a backend).
//!
//! A CancelRequest goes to the server the way pgsplit's connections do (`[server] tls`, as libpq sends its
//! cancels): over TLS when the mode asks for it, verified as the mode says, never in plaintext where TLS is
//! required.
//!
//! The pids pgsplit issues are above any pid Linux can give a process (`PID_MAX_LIMIT`, 2^22), so a pid a client
//! names is either one of pgsplit's or a server backend's, never both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rand::RngExt;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::pool::CancelTarget;
use crate::tls::ServerTls;

const CANCEL_REQUEST_CODE: u32 = 80877102;

/// Linux's upper bound on process ids (`PID_MAX_LIMIT` on 64-bit systems): no server backend has a pid above it.
pub const MAX_SYSTEM_PID: u32 = 1 << 22;

#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<u32, Arc<CancelSlot>>>,
}

/// One client's key and the server connection it is using right now, if any.
pub struct CancelSlot {
    pub pid: u32,
    pub secret: u32,
    /// Who logged in: only the same user may signal the session by its pid.
    pub user: Arc<str>,
    target: Mutex<Option<CancelTarget>>,
    /// Ends the session's task: set by whoever spawned it, once it has.
    task: SessionTask,
}

/// The handle that ends a session's task, set just after the task is spawned (the task may run before that, so
/// it is read only when someone terminates the session). Aborting drops the task's future wherever it waits —
/// no check on the session's path — and everything it held goes back by ownership.
pub type SessionTask = Arc<OnceLock<AbortHandle>>;

impl CancelSlot {
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    fn target(&self) -> Option<CancelTarget> {
        self.target.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Removes the client's key when its session ends.
pub struct Registration<'a> {
    registry: &'a CancelRegistry,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.slot.pid);
    }
}

impl CancelRegistry {
    /// Issues a fresh, unused key for a new client of `user` whose session runs as `task`.
    pub fn register(&self, task: SessionTask, user: &str) -> Registration<'_> {
        let mut rng = rand::rng();
        let mut clients = self.lock();
        let pid = loop {
            // Positive, like a real backend pid (some drivers store it in a signed int), and above every pid a
            // server backend can have.
            let pid = rng.random_range(MAX_SYSTEM_PID + 1..i32::MAX as u32);
            if !clients.contains_key(&pid) {
                break pid;
            }
        };
        let slot = Arc::new(CancelSlot {
            pid,
            secret: rng.random(),
            user: user.into(),
            target: Mutex::new(None),
            task,
        });
        clients.insert(pid, slot.clone());
        Registration { registry: self, slot }
    }

    /// Forwards a client's CancelRequest to the server connection it is using, if the key matches, with TLS as
    /// `tls` says; connecting to the server may take up to `connect_timeout`.
    pub async fn cancel(&self, pid: u32, secret: u32, connect_timeout: Duration, tls: &ServerTls) {
        let target = self
            .lock()
            .get(&pid)
            .filter(|slot| slot.secret == secret)
            .and_then(|slot| slot.target());
        match target {
            Some(target) => {
                let sent = crate::runtime::timeout(connect_timeout, send_cancel(&target, tls)).await;
                if let Err(error) = sent.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
                    tracing::warn!(%error, host = %target.host, port = target.port, "forwarding a cancel request failed");
                }
            }
            None => tracing::debug!(pid, "cancel request with no matching running query"),
        }
    }

    /// Ends the session of the client that holds `pid`, wherever it is: whatever it holds is given back as it
    /// drops, and the client's connection closes. Returns whether such a session exists.
    pub fn terminate(&self, pid: u32) -> bool {
        match self.lock().get(&pid).and_then(|slot| slot.task.get()) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Whether `pid` is a session pgsplit issued it to, still connected.
    pub fn knows(&self, pid: u32) -> bool {
        self.lock().contains_key(&pid)
    }

    /// `pg_terminate_backend(pid)` / `pg_cancel_backend(pid)` by a client of `user`, for a pid pgsplit issued:
    /// ends that session, or sends a cancel to whatever server runs its query (in the background: the answer does
    /// not wait for it). Only the same user may (PostgreSQL asks for membership in the session's role, which
    /// pgsplit cannot check).
    pub fn signal(
        &self,
        pid: u32,
        user: &str,
        terminate: bool,
        connect_timeout: Duration,
        tls: Arc<ServerTls>,
    ) -> Signaled {
        let slot = match self.lock().get(&pid) {
            Some(slot) => slot.clone(),
            None => return Signaled::NoSession,
        };
        if *slot.user != *user {
            return Signaled::NotPermitted;
        }
        if terminate {
            return match slot.task.get() {
                Some(task) => {
                    task.abort();
                    Signaled::Done
                }
                None => Signaled::NoSession,
            };
        }
        if let Some(target) = slot.target() {
            tokio::spawn(async move {
                let sent = crate::runtime::timeout(connect_timeout, send_cancel(&target, &tls)).await;
                if let Err(error) = sent.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
                    tracing::warn!(%error, host = %target.host, port = target.port, "forwarding a cancel failed");
                }
            });
        }
        Signaled::Done
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<CancelSlot>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a signal by pid did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signaled {
    /// Sent (the session is ended, or its running query is being canceled).
    Done,
    /// No session has that pid (any more).
    NoSession,
    /// The session is another user's.
    NotPermitted,
}

async fn send_cancel(target: &CancelTarget, tls: &ServerTls) -> std::io::Result<()> {
    let tcp = TcpStream::connect((&*target.host, target.port)).await?;
    let (mut stream, _) = tls.handshake(tcp, &target.host).await.map_err(std::io::Error::other)?;
    let mut packet = BytesMut::with_capacity(16);
    packet.put_u32(16);
    packet.put_u32(CANCEL_REQUEST_CODE);
    packet.put_u32(target.pid);
    packet.put_u32(target.secret);
    stream.write_all(&packet).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{ServerConfig, ServerTlsMode};
    use crate::tls::testing::Pki;

    fn server_tls(mode: ServerTlsMode) -> ServerTls {
        ServerTls::load(&ServerConfig {
            tls: mode,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            auth_methods: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            checkout_timeout: Duration::from_secs(5),
        })
        .expect("nothing to load")
    }

    /// A server on loopback that answers an SSLRequest with `answer` (`S`: then a TLS handshake with `pki`'s
    /// certificate) and returns the bytes it received afterwards, until the client closes.
    async fn server(
        answer: u8,
        pki: Option<Arc<rustls::ServerConfig>>,
    ) -> (CancelTarget, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 8];
            tcp.read_exact(&mut request).await.expect("SSLRequest");
            assert_eq!(request, crate::tls::connect::SSL_REQUEST);
            tcp.write_all(&[answer]).await.expect("answer");
            let mut rest = Vec::new();
            match pki {
                Some(config) => {
                    let mut tls = tokio_rustls::TlsAcceptor::from(config)
                        .accept(tcp)
                        .await
                        .expect("handshake");
                    let _ = tls.read_to_end(&mut rest).await;
                }
                None => {
                    let _ = tcp.read_to_end(&mut rest).await;
                }
            }
            rest
        });
        let target = CancelTarget {
            host: "127.0.0.1".into(),
            port,
            pid: 7,
            secret: 42,
        };
        (target, received)
    }

    fn packet() -> Vec<u8> {
        [16u32, CANCEL_REQUEST_CODE, 7, 42]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    #[tokio::test]
    async fn a_cancel_goes_over_tls_when_the_server_takes_it_and_never_in_plaintext_when_tls_is_required() {
        let pki = Pki::new();
        let (target, received) = server(b'S', Some(pki.server_config())).await;
        send_cancel(&target, &server_tls(ServerTlsMode::Require))
            .await
            .expect("sent over TLS");
        assert_eq!(received.await.expect("server task"), packet(), "the request, decrypted");

        let (target, received) = server(b'N', None).await;
        let refused = send_cancel(&target, &server_tls(ServerTlsMode::Require)).await;
        assert!(refused.is_err());
        assert!(
            received.await.expect("server task").is_empty(),
            "nothing sent in plaintext"
        );

        // prefer, like libpq: plaintext only when the server says it has no TLS.
        let (target, received) = server(b'N', None).await;
        send_cancel(&target, &server_tls(ServerTlsMode::Prefer))
            .await
            .expect("sent in plaintext");
        assert_eq!(received.await.expect("server task"), packet());
    }
}
