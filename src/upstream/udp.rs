//! UDP to one upstream: the sockets kept between queries, and one exchange on one of
//! them, a query out and the matching reply back.
//!
//! Each query in flight has a socket of its own (fresh, or idle in `UdpSockets`),
//! bound to a port the kernel picks at random from the ephemeral range and connected
//! to the upstream, so the kernel only delivers datagrams from that address and port;
//! the ID comes from a CSPRNG and the reply must also echo the question (RFC 5452
//! sections 4, 9.1, 9.2). Anything that does not match is dropped and the wait goes
//! on: a forged reply cannot end a query. No two queries in flight share a socket; a
//! socket that carried a reply cleanly goes back for the next query until it has
//! carried `server.upstream_udp_reuse` queries or lived `SOCKET_MAX_AGE`.
//!
//! A socket is registered with the event loop for readability only. tokio's
//! `UdpSocket` always registers for writability too, so every datagram sent wakes the
//! epoll callback once more when the kernel frees its buffer. An upstream socket
//! carries one small query at a time and never waits to write: its query is sent with
//! a plain non-blocking `send`, and a full send buffer (`WouldBlock`) fails the try
//! like any other network error, so the next upstream is asked.
//!
//! Nothing here times out on its own: the caller holds the deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::dnstap::{Leg, TryTap};
use crate::transport::Transport;
use crate::upstream::exchange::{opening, random_id, Exchanged, TryError};
use crate::upstream::stats::UpstreamStats;
use crate::wire::{self, Query, ReplyError};

/// A pooled socket is closed after this long, however few queries it carried: it
/// bounds how long one random port stays open to be found by a side channel such as
/// SADDNS (CVE-2020-25705), which scans ports at about 1000 a second.
pub const SOCKET_MAX_AGE: Duration = Duration::from_secs(2);

/// Idle sockets kept per upstream: more than the queries one upstream has in flight
/// under any load measured, so the pool itself never caps concurrency.
const MAX_IDLE_SOCKETS: usize = 1024;

/// Largest datagram taken from an upstream over UDP. We advertise 1232 octets
/// (build_upstream_query), so a compliant server stays far below; one that ignores it
/// and fills the buffer is asked again over TCP. Small on purpose: a 64 KiB zeroed
/// buffer per try cost a fifth of the forwarding CPU (memset and page faults).
const UDP_RECV_BUF: usize = 4096;

/// The UDP sockets to one upstream: one query at a time on each, kept between
/// queries (`server.upstream_udp_reuse`), since opening, registering and closing a
/// socket costs more than the query it carries. A try that ends any other way than
/// with its reply (timeout, error, a client gone) closes its socket, so a late reply
/// never meets the next query.
#[derive(Debug)]
pub struct UdpSockets {
    addr: SocketAddr,
    /// Shared with the upstream: replies that match no query are counted there.
    stats: Arc<UpstreamStats>,
    idle: Mutex<Vec<Pooled>>,
    /// Queries per socket; 0 or 1 is a fresh socket for every query.
    reuse: u32,
}

impl UdpSockets {
    pub fn new(addr: SocketAddr, stats: Arc<UpstreamStats>, reuse: u32) -> Self {
        UdpSockets {
            addr,
            stats,
            idle: Mutex::new(Vec::new()),
            reuse,
        }
    }

    /// One exchange on a socket of this upstream's, kept for the next query when it
    /// ended cleanly. No deadline of its own: the caller holds it. With `set_aside`,
    /// a try dropped while it waits leaves its socket there (`Unanswered`) instead of
    /// closing it, so its fate can still be learned. With `tap`, the query and its
    /// reply go to dnstap as sent and received.
    pub async fn exchange(
        &self,
        q: &Query,
        edns: bool,
        set_aside: Option<SetAside<'_>>,
        tap: Option<&TryTap<'_>>,
    ) -> Result<Exchanged, TryError> {
        // One clock read serves the whole exchange: a socket given back a little past
        // SOCKET_MAX_AGE is still never used again, `take` drops it first.
        let now = Instant::now();
        // The query's bytes go to dnstap now, and are not kept across the wait.
        let (p, id, sent) = {
            let (mut p, id, query) = self.ask(q, edns, now)?;
            let sent = tap.map(|t| t.sent(self.leg(&mut p), &query));
            (p, id, sent)
        };
        let mut waiting = Waiting {
            pooled: Some(p),
            id,
            set_aside,
        };
        let p = waiting.pooled.as_ref().expect("held until the reply");
        let answer = receive(&p.sock, self.addr, q, id, p.last_id, &self.stats.mismatched).await;
        // Ended, one way or the other: not set aside.
        let mut p = waiting.pooled.take().expect("held until the reply");
        let answer = answer?;
        if let Some(sent) = sent {
            sent.received(self.leg(&mut p), &answer.bytes);
        }
        p.last_id = Some(id);
        self.give(p, now);
        Ok(answer)
    }

    /// A socket with `q` sent on it under a fresh ID (an idle one, or a new one), the
    /// ID, and the query as sent.
    fn ask(&self, q: &Query, edns: bool, now: Instant) -> Result<(Pooled, u16, Vec<u8>), TryError> {
        let Some(mut p) = self.take(now) else {
            let (sock, id, query) = open_asking(self.addr, q, edns)?;
            let mut p = Pooled::new(sock, now);
            p.uses = 1;
            return Ok((p, id, query));
        };
        p.sock.forget_readable();
        let mut id = random_id();
        while Some(id) == p.last_id {
            id = random_id();
        }
        let query = wire::build_upstream_query(q, id, edns);
        p.sock.send(&query)?;
        p.uses += 1;
        Ok((p, id, query))
    }

    /// Where a query on `p` goes, for dnstap.
    fn leg(&self, p: &mut Pooled) -> Leg {
        Leg {
            transport: Transport::Udp,
            local: p.local(),
            upstream: self.addr,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle socket young enough to use, or none (always none without reuse).
    fn take(&self, now: Instant) -> Option<Pooled> {
        if self.reuse <= 1 {
            return None;
        }
        let mut idle = self.idle();
        while let Some(p) = idle.pop() {
            if p.young(now) {
                return Some(p);
            }
        }
        None
    }

    fn give(&self, p: Pooled, now: Instant) {
        if p.uses >= self.reuse || !p.young(now) {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(p);
        }
    }

    /// Idle sockets now.
    pub fn idle_len(&self) -> usize {
        self.idle().len()
    }

    /// Closes the idle sockets `SOCKET_MAX_AGE` old, which `take` would only drop when
    /// it reached them: after a burst, an upstream could otherwise keep up to
    /// `MAX_IDLE_SOCKETS` descriptors (and their ports) open for as long as no query
    /// came. Returns how many it closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut idle = self.idle();
        let before = idle.len();
        idle.retain(|p| p.young(now));
        before - idle.len()
    }
}

/// One exchange with `server` on a socket of its own, closed after: for the checks
/// that ask an address once (`doctor`, the loop probe), which count no mismatches.
pub async fn exchange_once(server: SocketAddr, q: &Query) -> Result<Exchanged, TryError> {
    let (sock, id, _) = open_asking(server, q, true)?;
    receive(&sock, server, q, id, None, &AtomicU64::new(0)).await
}

/// A new socket to `server` with `q` sent on it under a fresh ID: the socket, the ID
/// and the query as sent.
fn open_asking(
    server: SocketAddr,
    q: &Query,
    edns: bool,
) -> Result<(UpstreamSocket, u16, Vec<u8>), TryError> {
    let id = random_id();
    let query = wire::build_upstream_query(q, id, edns);
    let sock = UpstreamSocket::open(server, &query).map_err(opening)?;
    Ok((sock, id, query))
}

/// Where a try's socket goes when the try is dropped while it waits: the bin of its
/// query's tries (`SetAsideTries`), under the try's number.
#[derive(Clone, Copy)]
pub struct SetAside<'a> {
    pub bin: &'a SetAsideTries,
    pub n: usize,
}

/// The sockets of one query's tries that were dropped unanswered, by try number:
/// nearly always empty (a `Vec` allocates only on its first push).
#[derive(Default)]
pub struct SetAsideTries(Mutex<Vec<(usize, Unanswered)>>);

impl SetAsideTries {
    pub fn take(&self) -> Vec<(usize, Unanswered)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A try's socket whose reply has not come yet.
#[derive(Debug)]
pub struct Unanswered {
    sock: UpstreamSocket,
    id: u16,
}

impl Unanswered {
    /// Waits for the reply to its query: a response with its ID (the socket is
    /// connected, so only the upstream's address and port reach it). The question is
    /// not checked: nothing is relayed, the reply only says the upstream answered.
    /// An error is the try's failure (a refused port).
    pub async fn answered(&self) -> io::Result<()> {
        loop {
            let step = self
                .sock
                .when_readable(|s| {
                    let mut header = [0u8; 12];
                    let n = s.recv(&mut header)?;
                    Ok(n == header.len()
                        && u16::from_be_bytes([header[0], header[1]]) == self.id
                        && header[2] & 0x80 != 0)
                })
                .await?;
            if step == Some(true) {
                return Ok(());
            }
        }
    }
}

/// One exchange's socket while it waits for the reply: set aside if the exchange is
/// dropped then, closed if it has nowhere to go.
struct Waiting<'a> {
    pooled: Option<Pooled>,
    id: u16,
    set_aside: Option<SetAside<'a>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let (Some(p), Some(to)) = (self.pooled.take(), self.set_aside) {
            let unanswered = Unanswered {
                sock: p.sock,
                id: self.id,
            };
            let mut bin = to.bin.0.lock().unwrap_or_else(|e| e.into_inner());
            bin.push((to.n, unanswered));
        }
    }
}

#[derive(Debug)]
struct Pooled {
    sock: UpstreamSocket,
    uses: u32,
    born: Instant,
    /// The ID of the query this socket carried last: a copy of its reply arriving
    /// later (the upstream or the network sent it twice) is skipped without counting
    /// it as a forgery.
    last_id: Option<u16>,
    /// The socket's own address, once dnstap has asked for it (boxed: a pooled socket
    /// is part of every try's state, dnstap or not).
    local: Option<Box<SocketAddr>>,
}

impl Pooled {
    fn new(sock: UpstreamSocket, born: Instant) -> Self {
        Pooled {
            sock,
            uses: 0,
            born,
            last_id: None,
            local: None,
        }
    }

    /// The socket's own address (one system call, the first time only).
    fn local(&mut self) -> Option<SocketAddr> {
        if self.local.is_none() {
            self.local = self.sock.0.get_ref().local_addr().ok().map(Box::new);
        }
        self.local.as_deref().copied()
    }

    /// Not yet `SOCKET_MAX_AGE` old: the one age rule `take`, `give` and `sweep` apply.
    fn young(&self, now: Instant) -> bool {
        now.duration_since(self.born) < SOCKET_MAX_AGE
    }
}

/// A connected UDP socket, registered for readability only (see the module doc).
#[derive(Debug)]
struct UpstreamSocket(AsyncFd<UdpSocket>);

impl UpstreamSocket {
    /// A socket connected to `server`, with `query` already sent. No explicit bind:
    /// connect binds an unbound socket to a port the kernel draws at random from the
    /// ephemeral range, as bind to port 0 would, one system call sooner. The query
    /// leaves before the socket is registered, so nothing waits on the event loop.
    fn open(server: SocketAddr, query: &[u8]) -> io::Result<UpstreamSocket> {
        let sock = Socket::new(
            Domain::for_address(server),
            Type::DGRAM.nonblocking(),
            Some(Protocol::UDP),
        )?;
        sock.connect(&server.into())?;
        sock.send(query)?;
        // tokio 1.54 deprecates this safe constructor (tokio#8587) because a type whose
        // `as_raw_fd` could change under the registration would make it unsound. A
        // std `UdpSocket` owns its descriptor for its whole life, and nothing here
        // replaces it (`AsyncFd::get_mut` is never called), so the condition
        // `register_with_interest` states as its safety contract holds.
        #[allow(deprecated)]
        let registered = AsyncFd::with_interest(UdpSocket::from(sock), Interest::READABLE);
        registered.map(UpstreamSocket)
    }

    /// Sends `query` now, or fails: the socket is not registered for writability.
    fn send(&self, query: &[u8]) -> io::Result<()> {
        self.0.get_ref().send(query).map(drop)
    }

    /// Forgets that the socket was readable, without a system call: the last receive
    /// left that mark, and reading the (nearly always empty) queue to clear it would
    /// cost a `recvfrom` per query. Whatever did reach the port meanwhile is read
    /// before the reply and checked like anything arriving during the query.
    fn forget_readable(&self) {
        use futures_util::FutureExt;
        if let Some(Ok(mut ready)) = self.0.readable().now_or_never() {
            ready.clear_ready();
        }
    }

    /// Waits until a datagram may be there, or an error (the ICMP port unreachable
    /// of an upstream that is not listening, ECONNREFUSED on a connected socket), then
    /// hands `read` the socket, whose receive returns either; `read`'s `WouldBlock`
    /// clears the mark and gives `None` (nothing was there after all).
    ///
    /// The error interest matters: epoll reports a pending socket error as EPOLLERR
    /// without EPOLLIN, which readability alone never wakes on, so a refused query
    /// waited out its whole try timeout instead of failing over at once.
    pub async fn when_readable<T>(
        &self,
        read: impl FnOnce(&UdpSocket) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let mut ready = self.0.ready(Interest::READABLE | Interest::ERROR).await?;
        match ready.try_io(|fd| read(fd.get_ref())) {
            Ok(result) => result.map(Some),
            Err(_would_block) => Ok(None),
        }
    }
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
        return Some(Err(TryError::Oversize(UDP_RECV_BUF)));
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

#[cfg(test)]
mod tests {
    use super::*;
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

    fn sockets(addr: SocketAddr, reuse: u32) -> UdpSockets {
        UdpSockets::new(addr, Arc::default(), reuse)
    }

    fn q(name: &str) -> Query {
        Query::own(wire::name_from_str(name).unwrap(), 1)
    }

    #[tokio::test]
    async fn a_socket_carries_up_to_reuse_queries_one_at_a_time() {
        let (addr, from) = upstream(Then::Nothing).await;
        let sockets = sockets(addr, 3);
        for i in 0..7 {
            sockets
                .exchange(&q(&format!("n{i}.example.")), true, None, None)
                .await
                .unwrap();
        }
        let ports: Vec<u16> = from.lock().unwrap().iter().map(|a| a.port()).collect();
        // Three queries per socket, then a new one (its port drawn afresh).
        assert_eq!(ports[0], ports[2]);
        assert_eq!(ports[3], ports[5]);
        assert_ne!(ports[2], ports[3]);
        assert_ne!(ports[5], ports[6]);
        assert_eq!(sockets.idle_len(), 1);

        // Two queries in flight at once get two sockets.
        let (qa, qb) = (q("a.example."), q("b.example."));
        let (a, b) = tokio::join!(
            sockets.exchange(&qa, true, None, None),
            sockets.exchange(&qb, true, None, None)
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
        let sockets = sockets(silent.local_addr().unwrap(), 10);
        let t = tokio::time::timeout(
            Duration::from_millis(100),
            sockets.exchange(&q("x.example."), true, None, None),
        )
        .await;
        assert!(t.is_err());
        assert_eq!(sockets.idle_len(), 0);
    }

    /// Two queries on one pooled socket, with a pause between them long enough for
    /// whatever the upstream sends after its first reply to queue on the idle socket.
    /// Returns the second answer, the source ports the upstream saw and the count of
    /// mismatched datagrams.
    async fn two_queries_with_a_pause(then: Then) -> (Exchanged, Vec<u16>, u64) {
        let (addr, from) = upstream(then).await;
        let sockets = sockets(addr, 10);
        sockets
            .exchange(&q("one.example."), true, None, None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = sockets
            .exchange(&q("two.example."), true, None, None)
            .await
            .unwrap();
        let ports = from.lock().unwrap().iter().map(|a| a.port()).collect();
        (a, ports, sockets.stats.mismatched.load(Ordering::Relaxed))
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
        let sockets = sockets(addr, 10);
        sockets
            .exchange(&q("one.example."), true, None, None)
            .await
            .unwrap();
        assert_eq!(sockets.idle_len(), 1);
        // Not handed out once SOCKET_MAX_AGE has passed since it was opened.
        assert!(sockets.take(Instant::now() + SOCKET_MAX_AGE).is_none());
        assert_eq!(sockets.idle_len(), 0);
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_sockets_once_too_old() {
        let (addr, _) = upstream(Then::Nothing).await;
        let sockets = sockets(addr, 10);
        // Two queries at once: two sockets, both idle after.
        let (one, two) = (q("one.example."), q("two.example."));
        let (a, b) = tokio::join!(
            sockets.exchange(&one, true, None, None),
            sockets.exchange(&two, true, None, None),
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(sockets.idle_len(), 2);
        assert_eq!(sockets.sweep(Instant::now()), 0, "young sockets stay");
        assert_eq!(sockets.idle_len(), 2);
        assert_eq!(sockets.sweep(Instant::now() + SOCKET_MAX_AGE), 2);
        assert_eq!(sockets.idle_len(), 0);
    }
}
