//! The transport over real loopback sockets and real TLS (certificates made here): large transfers both ways
//! through small buffers, a peer that stops reading, the ends of a stream, and a TLS record split across reads.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::tls::testing::Pki;

const DEADLINE: Duration = Duration::from_secs(30);

async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// A TLS connection over loopback, handshake done: (pgsplit as TLS client, pgsplit as TLS server).
async fn tls_pair(pki: &Pki) -> (Transport, Transport) {
    let (client, server) = socket_pair().await;
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let name = ServerName::try_from("localhost").unwrap();
    let (client, server) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
    (client.unwrap().into(), server.unwrap().into())
}

/// Reads until at least one byte or the end comes; returns how many (0 = end).
async fn read_some(t: &mut Transport, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        poll_fn(|cx| t.poll_read_ready(cx)).await?;
        match t.read_now(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

/// Writes everything readiness-style, through `try_write` and `flush_now`, in pieces of at most `piece` bytes.
async fn send(t: &mut Transport, mut bytes: &[u8], piece: usize) {
    while !bytes.is_empty() || t.wants_flush() {
        let result = if bytes.is_empty() {
            t.flush_now().map(|()| 0)
        } else {
            t.try_write(&bytes[..piece.min(bytes.len())])
        };
        match result {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => poll_fn(|cx| t.poll_write_ready(cx)).await.unwrap(),
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads exactly `len` bytes through a buffer of small capacity (so reads are partial).
async fn receive(t: &mut Transport, len: usize, capacity: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let mut buf = BytesMut::with_capacity(capacity);
        let n = read_some(t, &mut buf).await.unwrap();
        assert!(n > 0, "ended after {} of {len} bytes", got.len());
        assert!(n <= capacity.max(MIN_READ));
        got.extend_from_slice(&buf);
    }
    got
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
}

#[tokio::test]
async fn large_transfers_cross_both_ways_at_once_through_partial_reads_and_writes() {
    let pki = Pki::new();
    for tls in [false, true] {
        let (mut a, mut b) = if tls {
            tls_pair(&pki).await
        } else {
            let (a, b) = socket_pair().await;
            (Transport::Plain(a), Transport::Plain(b))
        };
        assert_eq!(a.is_tls(), tls);
        let (to_b, to_a) = (pattern(6 << 20, 1), pattern(5 << 20, 7));
        within("the transfers", async {
            // Each side writes and reads at once, so neither can wait on the other's reading.
            let (a_side, b_side) = tokio::join!(
                async {
                    let (mut tx, mut rx) = (Vec::new(), Vec::new());
                    let mut buf = BytesMut::with_capacity(1000);
                    let mut sent = &to_b[..];
                    while !sent.is_empty() || a.wants_flush() || rx.len() < to_a.len() {
                        let step = sent.len().min(7919);
                        match if step > 0 {
                            a.try_write(&sent[..step])
                        } else {
                            a.flush_now().map(|()| 0)
                        } {
                            Ok(n) => {
                                tx.extend_from_slice(&sent[..n]);
                                sent = &sent[n..];
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) => panic!("a writes: {e}"),
                        }
                        buf.clear();
                        match a.read_now(&mut buf) {
                            Ok(0) => panic!("a: early end"),
                            Ok(_) => rx.extend_from_slice(&buf),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                // Neither side moved: wait for either readiness.
                                poll_fn(|cx| match (a.poll_read_ready(cx), a.poll_write_ready(cx)) {
                                    (Poll::Pending, Poll::Pending) => Poll::Pending,
                                    _ => Poll::Ready(()),
                                })
                                .await;
                            }
                            Err(e) => panic!("a reads: {e}"),
                        }
                    }
                    (tx, rx)
                },
                async {
                    let received = receive(&mut b, to_b.len(), 777).await;
                    send(&mut b, &to_a, 10_007).await;
                    received
                }
            );
            assert_eq!(a_side.0, to_b);
            assert!(b_side == to_b, "b received other bytes (tls: {tls})");
            assert!(a_side.1 == to_a, "a received other bytes (tls: {tls})");
        })
        .await;
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_stops_the_writer_with_bounded_memory() {
    let pki = Pki::new();
    let (mut a, mut b) = tls_pair(&pki).await;
    let chunk = vec![7u8; 16 * 1024];
    let mut accepted = 0usize;
    within("the writer blocks", async {
        loop {
            match a.try_write(&chunk) {
                Ok(n) => accepted += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    // Taken: what the kernel buffers on both sides plus at most MAX_PENDING_TLS in memory.
    let Transport::Tls(tls) = &a else { unreachable!() };
    assert!(tls.conn.wants_write(), "ciphertext waits for the socket");
    let kernel = {
        let sock = socket2::SockRef::from(&tls.tcp);
        let peer = socket2::SockRef::from(b.tcp());
        sock.send_buffer_size().unwrap() + peer.recv_buffer_size().unwrap()
    };
    assert!(
        accepted <= kernel + MAX_PENDING_TLS + chunk.len(),
        "{accepted} bytes taken with {kernel} bytes of kernel buffers"
    );
    // Asking again changes nothing: still WouldBlock, nothing more taken.
    for _ in 0..100 {
        assert_eq!(a.try_write(&chunk).unwrap_err().kind(), ErrorKind::WouldBlock);
    }
    // The reader drains it all; then the writer's pending ciphertext goes out.
    within("the reader drains", async {
        let (received, ()) = tokio::join!(receive(&mut b, accepted, 64 * 1024), async {
            while a.wants_flush() {
                match a.flush_now() {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => poll_fn(|cx| a.poll_write_ready(cx)).await.unwrap(),
                    other => other.unwrap(),
                }
            }
        });
        assert!(received.iter().all(|&byte| byte == 7));
    })
    .await;
}

#[tokio::test]
async fn close_notify_ends_the_stream_after_the_data_before_it() {
    let pki = Pki::new();
    let (mut a, mut b) = tls_pair(&pki).await;
    within("the close", async {
        send(&mut a, b"last words", 100).await;
        a.close_notify();
        send(&mut a, b"", 1).await;
        assert_eq!(receive(&mut b, 10, 100).await, b"last words");
        let mut buf = BytesMut::with_capacity(100);
        assert_eq!(read_some(&mut b, &mut buf).await.unwrap(), 0);
        // And it stays ended.
        assert_eq!(b.read_now(&mut buf).unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_socket_closed_without_close_notify_reads_as_the_end() {
    let pki = Pki::new();
    let (a, mut b) = tls_pair(&pki).await;
    let (c, d) = socket_pair().await;
    let mut d = Transport::Plain(d);
    // The write sides end (FIN) without close_notify; dropping a socket with unread bytes (TLS 1.3's tickets)
    // would reset it instead.
    for tcp in [a.tcp(), &c] {
        socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write).unwrap();
    }
    within("the ends", async {
        let mut buf = BytesMut::with_capacity(100);
        assert_eq!(read_some(&mut b, &mut buf).await.unwrap(), 0);
        assert_eq!(read_some(&mut d, &mut buf).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_record_split_across_reads_comes_out_whole_once_complete() {
    let pki = Pki::new();
    let (client, server) = socket_pair().await;
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let name = ServerName::try_from("localhost").unwrap();
    let (client, server) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
    let (mut tcp, mut conn) = client.unwrap().into_inner();
    let mut server: Transport = server.unwrap().into();
    // One record, as ciphertext, sent in two halves.
    let message = pattern(3000, 3);
    conn.writer().write_all(&message).unwrap();
    let mut record = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut record).unwrap();
    }
    let half = record.len() / 2;
    within("the split record", async {
        tcp.write_all(&record[..half]).await.unwrap();
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        let mut buf = BytesMut::with_capacity(8192);
        // The first half alone gives nothing (maybe after a spurious wake-up or two).
        for _ in 0..3 {
            assert_eq!(server.read_now(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        }
        tcp.write_all(&record[half..]).await.unwrap();
        assert_eq!(receive(&mut server, message.len(), 8192).await, message);
    })
    .await;
}

#[tokio::test]
async fn plaintext_already_decrypted_counts_as_readiness() {
    let pki = Pki::new();
    let (mut a, mut b) = tls_pair(&pki).await;
    within("the reads", async {
        send(&mut a, &pattern(10_000, 5), 10_000).await;
        // A read into a small buffer leaves decrypted bytes behind: the transport is ready without the socket.
        let mut buf = BytesMut::with_capacity(100);
        let n = read_some(&mut b, &mut buf).await.unwrap();
        assert!(n > 0 && n <= 4096);
        let Transport::Tls(tls) = &b else { unreachable!() };
        assert!(tls.plaintext > 0);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(b.poll_read_ready(&mut cx).is_ready());
        let rest = receive(&mut b, 10_000 - n, 100).await;
        let mut all = buf.to_vec();
        all.extend(rest);
        assert_eq!(all, pattern(10_000, 5));
    })
    .await;
}

#[tokio::test]
async fn a_broken_record_is_invalid_data() {
    let pki = Pki::new();
    let (client, server) = socket_pair().await;
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let name = ServerName::try_from("localhost").unwrap();
    let (client, server) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
    let (mut tcp, mut conn) = client.unwrap().into_inner();
    let mut server: Transport = server.unwrap().into();
    conn.writer().write_all(b"hello").unwrap();
    let mut record = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut record).unwrap();
    }
    let last = record.len() - 1;
    record[last] ^= 0x55;
    within("the forged record", async {
        tcp.write_all(&record).await.unwrap();
        let mut buf = BytesMut::with_capacity(100);
        let error = read_some(&mut server, &mut buf).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert!(buf.is_empty());
    })
    .await;
}

#[tokio::test]
async fn await_style_reads_and_writes_cross_tls_whole_and_shutdown_ends_the_stream() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let (mut a, mut b) = tls_pair(&pki).await;
    let message = pattern(300_000, 9);
    within("the await-style exchange", async {
        // Larger than the pending-ciphertext limit and the peer's reads: the writer waits on the socket.
        let (written, got) = tokio::join!(
            async {
                a.write_all(&message).await.unwrap();
                a.shutdown().await.unwrap();
            },
            async {
                let mut got = Vec::new();
                AsyncReadExt::read_to_end(&mut b, &mut got).await.unwrap();
                got
            }
        );
        let () = written;
        assert!(
            got == message,
            "{} of {} bytes, or other bytes",
            got.len(),
            message.len()
        );
        assert!(!a.wants_flush(), "close_notify went out with the rest");
    })
    .await;
}

#[tokio::test]
async fn a_silent_peer_is_silent_and_one_that_spoke_is_not() {
    let pki = Pki::new();
    let (mut a, b) = tls_pair(&pki).await;
    within("the checks", async {
        assert!(b.is_silent());
        send(&mut a, b"unsolicited", 100).await;
        let deadline = std::time::Instant::now() + DEADLINE;
        while b.is_silent() {
            assert!(std::time::Instant::now() < deadline, "never saw the bytes");
            tokio::task::yield_now().await;
        }
    })
    .await;
}
