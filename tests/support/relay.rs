//! A TCP relay the test owns between pgsplit and a server, which it can pause: while paused it forwards nothing
//! either way but keeps every connection open, so to pgsplit the server looks alive and silent — a hung server, or
//! a connection cut somewhere beyond the first hop.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct PausingRelay {
    pub port: u16,
    paused: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl PausingRelay {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> PausingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let port = listener.local_addr().expect("relay address").port();
        let (paused, watching) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, watching.clone()));
                tokio::spawn(pipe(server_read, client_write, watching.clone()));
            }
        });
        PausingRelay { port, paused, accept }
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for PausingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, not reading while paused.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Paused while waiting to read: stop before reading anything more.
            _ = paused.wait_for(|p| *p) => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
