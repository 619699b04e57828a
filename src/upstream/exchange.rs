//! One exchange with one upstream server: a query out, the matching reply back.
//!
//! Each UDP query in flight has a socket of its own (fresh, or from the upstream's
//! `SocketPool`), bound to a port the kernel picks at random from the ephemeral range
//! and connected to the upstream, so the kernel only delivers datagrams from that
//! address and port; the ID comes from a CSPRNG and the
//! reply must also echo the question (RFC 5452 sections 4, 9.1, 9.2). Anything that
//! does not match is dropped and the wait goes on: a forged reply cannot end a query.
//! None of these functions time out on their own; the caller holds the deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::upstream::pool::{Pooled, SocketPool};
use crate::upstream::socket::UpstreamSocket;
use crate::wire::{self, Query, Reply, ReplyError};

/// Why a try produced no reply.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("network error: {0}")]
    Network(#[from] io::Error),
    #[error("{0}")]
    Malformed(wire::WireError),
    #[error("connection closed before a reply")]
    Closed,
    /// Every kept TCP connection to the upstream is at its pipelining limit: ours, so
    /// not counted as the upstream's failure.
    #[error("every kept tcp connection to the upstream is full")]
    Busy,
    /// No socket could be opened (out of descriptors or buffers): this host's
    /// trouble, not the upstream's, so not counted against its health either.
    #[error("no socket for the upstream: {0}")]
    NoSocket(io::Error),
    /// A datagram as large as the receive buffer: it may have been cut.
    #[error("reply larger than {UDP_RECV_BUF} octets over udp")]
    Oversize,
}

/// A reply that matched the query and walked clean.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub bytes: Vec<u8>,
    pub reply: Reply,
}

/// Largest datagram taken from an upstream over UDP. We advertise 1232 octets
/// (build_upstream_query), so a compliant server stays far below; one that ignores it
/// and fills the buffer is asked again over TCP. Small on purpose: a 64 KiB zeroed
/// buffer per try cost a fifth of the forwarding CPU (memset and page faults).
const UDP_RECV_BUF: usize = 4096;

/// Opening a socket failed for want of descriptors, buffers or memory: the host's limit
/// (`LimitNOFILE`, a container's), not the upstream's doing.
fn is_out_of_sockets(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let out = [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM];
    e.raw_os_error()
        .is_some_and(|n| out.iter().any(|&errno| errno as i32 == n))
}

/// An error opening a socket, as the try's error.
pub fn opening(e: io::Error) -> TryError {
    if is_out_of_sockets(&e) {
        TryError::NoSocket(e)
    } else {
        TryError::Network(e)
    }
}

pub fn random_id() -> u16 {
    rand::random()
}

/// One UDP exchange on a socket of its own. `mismatched` counts replies dropped for a
/// wrong ID or question.
pub async fn udp(
    server: SocketAddr,
    q: &Query,
    edns: bool,
    mismatched: &AtomicU64,
) -> Result<Exchanged, TryError> {
    let id = random_id();
    let sock =
        UpstreamSocket::open(server, &wire::build_upstream_query(q, id, edns)).map_err(opening)?;
    receive(&sock, server, q, id, None, mismatched).await
}

/// `udp` on a socket from `pool`, given back when the exchange ended cleanly.
pub async fn udp_pooled(
    pool: &SocketPool,
    server: SocketAddr,
    q: &Query,
    edns: bool,
    mismatched: &AtomicU64,
) -> Result<Exchanged, TryError> {
    if pool.reuse <= 1 {
        return udp(server, q, edns, mismatched).await;
    }
    // One clock read serves the whole exchange: a socket given back a little past
    // POOL_MAX_AGE is still never used again, `take` drops it first.
    let now = Instant::now();
    let (mut p, id) = match pool.take(now) {
        Some(p) => {
            p.sock.forget_readable();
            let mut id = random_id();
            while Some(id) == p.last_id {
                id = random_id();
            }
            p.sock.send(&wire::build_upstream_query(q, id, edns))?;
            (p, id)
        }
        None => {
            let id = random_id();
            let p = Pooled {
                sock: UpstreamSocket::open(server, &wire::build_upstream_query(q, id, edns))
                    .map_err(opening)?,
                uses: 0,
                born: now,
                last_id: None,
            };
            (p, id)
        }
    };
    p.uses += 1;
    let answer = receive(&p.sock, server, q, id, p.last_id, mismatched).await?;
    p.last_id = Some(id);
    pool.give(p, now);
    Ok(answer)
}

/// The reply to query `id`, sent on `sock`. Datagrams with the ID `previous`
/// (replies to the socket's last query) are skipped uncounted.
async fn receive(
    sock: &UpstreamSocket,
    server: SocketAddr,
    q: &Query,
    id: u16,
    previous: Option<u16>,
    mismatched: &AtomicU64,
) -> Result<Exchanged, TryError> {
    loop {
        // Read and checked without an await in between, so the thread's buffer is
        // this query's alone meanwhile.
        let step = sock
            .when_readable(|s| {
                RECV_BUF.with_borrow_mut(|buf| {
                    let (n, from) = s.recv_from(buf)?;
                    Ok(check_reply(
                        &buf[..n],
                        from,
                        server,
                        q,
                        id,
                        previous,
                        mismatched,
                    ))
                })
            })
            .await?;
        if let Some(Some(answer)) = step {
            return answer;
        }
    }
}

thread_local! {
    /// Where a thread's upstream replies land before the one that matches is copied
    /// out at its own size: a buffer per query would be a 4 KiB allocation each, which
    /// mimalloc serves on its slow path.
    static RECV_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; UDP_RECV_BUF].into_boxed_slice());
}

/// What one datagram means for the query `id`: `None` to keep waiting (a datagram
/// from elsewhere, a late copy of the previous reply, a mismatch), or the try's end.
fn check_reply(
    datagram: &[u8],
    from: SocketAddr,
    server: SocketAddr,
    q: &Query,
    id: u16,
    previous: Option<u16>,
    mismatched: &AtomicU64,
) -> Option<Result<Exchanged, TryError>> {
    if datagram.len() >= UDP_RECV_BUF {
        return Some(Err(TryError::Oversize));
    }
    if from != server {
        // The connected socket already filters by source; this is the belt to those
        // braces.
        tracing::debug!(%server, %from, "ignoring datagram from an unexpected source");
        return None;
    }
    match wire::parse_reply(datagram, id, q) {
        Ok(reply) => Some(Ok(Exchanged {
            bytes: datagram.to_vec(),
            reply,
        })),
        // A late copy of the reply to the socket's previous query.
        Err(ReplyError::Mismatch)
            if previous.is_some_and(|p| datagram.get(..2) == Some(&p.to_be_bytes()[..])) =>
        {
            None
        }
        Err(ReplyError::Mismatch) => {
            mismatched.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%server, "ignoring a reply that does not match the query (id or question)");
            None
        }
        Err(ReplyError::Malformed(e)) => Some(Err(TryError::Malformed(e))),
    }
}

/// One TCP exchange on a connection of its own, for `doctor`, which checks that a
/// new connection can be made; the server asks over kept connections (`tcp.rs`).
pub async fn tcp(
    server: SocketAddr,
    q: &Query,
    edns: bool,
    mismatched: &AtomicU64,
) -> Result<Exchanged, TryError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let id = random_id();
    stream
        .write_all(&wire::framed(&wire::build_upstream_query(q, id, edns)))
        .await?;
    loop {
        let buf = match wire::read_framed(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(TryError::Closed),
            Err(e) => return Err(e.into()),
        };
        match wire::parse_reply(&buf, id, q) {
            Ok(reply) => return Ok(Exchanged { bytes: buf, reply }),
            Err(ReplyError::Mismatch) => {
                mismatched.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%server, "ignoring a tcp message that does not match the query");
            }
            Err(ReplyError::Malformed(e)) => return Err(TryError::Malformed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::pool::POOL_MAX_AGE;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::UdpSocket;

    /// What the fake upstream sends after each reply.
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        Nothing,
        /// The same reply once more.
        Duplicate,
        /// The reply with another ID, as a forger who knows the port would.
        Forged,
    }

    /// A loopback upstream answering every query with an empty NOERROR reply, then
    /// sending what `then` says.
    async fn upstream(then: Then) -> (SocketAddr, Arc<std::sync::Mutex<Vec<SocketAddr>>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let from = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&from);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                seen.lock().unwrap().push(peer);
                let mut r = buf[..n].to_vec();
                r[2] |= 0x80; // QR
                let _ = sock.send_to(&r, peer).await;
                match then {
                    Then::Nothing => {}
                    Then::Duplicate => {
                        let _ = sock.send_to(&r, peer).await;
                    }
                    Then::Forged => {
                        r[0] ^= 0x5a;
                        let _ = sock.send_to(&r, peer).await;
                    }
                }
            }
        });
        (addr, from)
    }

    fn q(name: &str) -> Query {
        Query::own(wire::name_from_str(name).unwrap(), 1)
    }

    #[tokio::test]
    async fn a_socket_carries_up_to_reuse_queries_one_at_a_time() {
        let (addr, from) = upstream(Then::Nothing).await;
        let pool = SocketPool::new(3);
        let bad = AtomicU64::new(0);
        for i in 0..7 {
            udp_pooled(&pool, addr, &q(&format!("n{i}.example.")), true, &bad)
                .await
                .unwrap();
        }
        let ports: Vec<u16> = from.lock().unwrap().iter().map(|a| a.port()).collect();
        // Three queries per socket, then a new one (its port drawn afresh).
        assert_eq!(ports[0], ports[2]);
        assert_eq!(ports[3], ports[5]);
        assert_ne!(ports[2], ports[3]);
        assert_ne!(ports[5], ports[6]);
        assert_eq!(pool.idle_len(), 1);

        // Two queries in flight at once get two sockets.
        let (qa, qb) = (q("a.example."), q("b.example."));
        let (a, b) = tokio::join!(
            udp_pooled(&pool, addr, &qa, true, &bad),
            udp_pooled(&pool, addr, &qb, true, &bad)
        );
        a.unwrap();
        b.unwrap();
        let ports: Vec<u16> = from.lock().unwrap().iter().map(|a| a.port()).collect();
        assert_ne!(ports[7], ports[8]);
    }

    #[tokio::test]
    async fn a_try_that_does_not_end_cleanly_closes_its_socket() {
        // Nobody answers: the caller's deadline drops the try, and its socket with it.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let pool = SocketPool::new(10);
        let bad = AtomicU64::new(0);
        let t = tokio::time::timeout(
            Duration::from_millis(100),
            udp_pooled(
                &pool,
                silent.local_addr().unwrap(),
                &q("x.example."),
                true,
                &bad,
            ),
        )
        .await;
        assert!(t.is_err());
        assert_eq!(pool.idle_len(), 0);
    }

    /// Two queries on one pooled socket, with a pause between them long enough for
    /// whatever the upstream sends after its first reply to queue on the idle socket.
    /// Returns the second answer, the source ports the upstream saw and the count of
    /// mismatched datagrams.
    async fn two_queries_with_a_pause(then: Then) -> (Exchanged, Vec<u16>, u64) {
        let (addr, from) = upstream(then).await;
        let pool = SocketPool::new(10);
        let bad = AtomicU64::new(0);
        udp_pooled(&pool, addr, &q("one.example."), true, &bad)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = udp_pooled(&pool, addr, &q("two.example."), true, &bad)
            .await
            .unwrap();
        let ports = from.lock().unwrap().iter().map(|a| a.port()).collect();
        (a, ports, bad.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_late_copy_of_the_last_reply_is_skipped_uncounted() {
        let (a, ports, bad) = two_queries_with_a_pause(Then::Duplicate).await;
        assert_eq!(ports[0], ports[1]);
        assert_eq!(wire::name_to_string(&a.bytes[12..26]), "two.example.");
        // Read before the reply and recognised by its ID: not counted as forged.
        assert_eq!(bad, 0);
    }

    #[tokio::test]
    async fn a_forgery_waiting_on_an_idle_socket_is_checked_like_any_other() {
        let (a, ports, bad) = two_queries_with_a_pause(Then::Forged).await;
        // Same socket, and the query still got its own answer.
        assert_eq!(ports[0], ports[1]);
        assert_eq!(wire::name_to_string(&a.bytes[12..26]), "two.example.");
        assert_eq!(bad, 1);
    }

    #[tokio::test]
    async fn sockets_retire_by_age() {
        let (addr, _) = upstream(Then::Nothing).await;
        let pool = SocketPool::new(10);
        let bad = AtomicU64::new(0);
        udp_pooled(&pool, addr, &q("one.example."), true, &bad)
            .await
            .unwrap();
        assert_eq!(pool.idle_len(), 1);
        // Not handed out once POOL_MAX_AGE has passed since it was opened.
        assert!(pool.take(Instant::now() + POOL_MAX_AGE).is_none());
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_sockets_once_too_old() {
        let (addr, _) = upstream(Then::Nothing).await;
        let pool = SocketPool::new(10);
        let bad = AtomicU64::new(0);
        // Two queries at once: two sockets, both idle after.
        let (one, two) = (q("one.example."), q("two.example."));
        let (a, b) = tokio::join!(
            udp_pooled(&pool, addr, &one, true, &bad),
            udp_pooled(&pool, addr, &two, true, &bad),
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(pool.idle_len(), 2);
        assert_eq!(pool.sweep(Instant::now()), 0, "young sockets stay");
        assert_eq!(pool.idle_len(), 2);
        assert_eq!(pool.sweep(Instant::now() + POOL_MAX_AGE), 2);
        assert_eq!(pool.idle_len(), 0);
    }
}
