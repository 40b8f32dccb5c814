//! Socket options every connection pgsplit accepts or opens gets: no Nagle delay, and TCP keepalives with a user
//! timeout (`[tcp]`), so a peer that vanished without a word — a crashed host, a cable pulled, a NAT entry
//! dropped — is noticed by the kernel and the session and pool slot it held are freed, instead of waiting forever
//! on a connection that will never speak again.

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::TcpConfig;

/// Applies `tcp` to `stream`. Failing to set an option is reported, not fatal: the connection still works.
pub fn configure(stream: &TcpStream, tcp: &TcpConfig) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(tcp.keepalive_idle)
        .with_interval(tcp.keepalive_interval)
        .with_retries(tcp.keepalive_count);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(tcp.user_timeout))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn keepalive_and_user_timeout_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let tcp = TcpConfig {
            keepalive_idle: Duration::from_secs(7),
            keepalive_interval: Duration::from_secs(3),
            keepalive_count: 4,
            user_timeout: Duration::from_millis(9000),
        };
        configure(&stream, &tcp).expect("options set");
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(7)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(3)
        );
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 4);
        assert_eq!(
            socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_millis(9000))
        );
        assert!(stream.nodelay().expect("TCP_NODELAY"));
    }
}
