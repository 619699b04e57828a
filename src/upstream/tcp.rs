//! Kept TCP connections to one upstream: every query of a `transport = "tcp"` route,
//! and the TCP retry of a UDP route's truncated reply; for a `tls://` upstream, the
//! same connections with TLS on them (RFC 7858 section 3.3: pipelined, kept, resumed),
//! and every query of it.
//!
//! Queries are pipelined (RFC 7766 section 6.2.1.1): several in flight on one
//! connection, each with a fresh random ID that no other query in flight on that
//! connection holds, and replies matched by ID and question in whatever order they
//! come (section 7). A query whose try was abandoned keeps its ID until its reply
//! comes or the connection ends, so a late reply can never answer a newer query.
//!
//! A connection is one task that connects, then writes queued queries and reads
//! replies side by side. A connection with queries waiting and nothing read for the
//! route's `try_timeout` is suspect: it takes no new query (the try loop's next try
//! goes to another connection), but a late reply on it still counts; it closes when
//! every query on it has been given up. It also ends when idle for `IDLE_TIMEOUT`
//! (section 6.2.3: clients close idle connections), when it has carried
//! `MAX_QUERIES_PER_CONNECTION` and the last reply is in, and when the upstream closes
//! or resets it: the queries still waiting then are asked again on another connection
//! (`Ask::Lost`), within the caller's deadline. A connection that ends without
//! carrying a reply makes the next one wait, doubling up to `BACKOFF_MAX`, so a server
//! that refuses or drops every connection is not hammered.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use crate::dnstap::{Leg, TryTap};
use crate::tls::client::Dialer;
use crate::transport::Transport;
use crate::upstream::exchange::{self, random_id, Exchanged, TryError};
use crate::upstream::stats::UpstreamStats;
use crate::wire::{self, Query, ReplyError};

/// Connections kept open to one upstream at most: a few (RFC 7766 section 6.2.2 asks
/// clients not to open more than they need), spread only when one carries many
/// queries at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Queries in flight on one connection before another is opened beside it.
const SPREAD_AT: usize = 32;
/// Queries in flight on one connection at most (given-up ones included): with
/// `MAX_CONNECTIONS`, more than the server's default `max_inflight`, so the
/// connections do not cap concurrency before the server's own limit does.
pub const MAX_PIPELINE: usize = 4096;
/// Queries one connection carries before it takes no more and closes when its last
/// reply is in: bounds how long one connection (and its given-up IDs) lives, as
/// Unbound's `max-reuse-tcp-queries` does.
const MAX_QUERIES_PER_CONNECTION: u32 = 10_000;
/// A connection with nothing in flight for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before a connection that follows one that carried no reply; it doubles
/// per such connection in a row, up to `BACKOFF_MAX`.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often one query is asked again after the connection it was on ended.
const MAX_RESENDS: u32 = 2;
/// Spare room kept in the read buffer before each read.
const READ_AHEAD: usize = 16 * 1024;

/// The kept TCP connections to one upstream.
#[derive(Debug)]
pub struct TcpConnections {
    shared: Arc<Shared>,
    conns: Mutex<Vec<Arc<Connection>>>,
}

/// What an upstream's connections share with their tasks.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    stats: Arc<UpstreamStats>,
    /// A `tls://` upstream's side of TLS, and the upstream as the configuration
    /// writes it (for the log).
    tls: Option<(Dialer, String)>,
    /// The route's `try_timeout`, in nanoseconds: queries waiting and nothing read
    /// for this long make a connection suspect. Set again by each reload.
    patience_ns: AtomicU64,
    /// Connections established now.
    open: AtomicU64,
    /// Connections opened to replace one that ended with queries waiting, failed, or
    /// could not connect.
    reconnects: AtomicU64,
    /// Connections that ended so and have not been replaced yet.
    owed: AtomicU64,
    /// Connections in a row that ended without carrying a reply: the backoff.
    barren_in_a_row: AtomicU32,
    /// What `Connection::quiet_since` counts from.
    epoch: Instant,
}

impl Shared {
    fn patience(&self) -> Duration {
        Duration::from_nanos(self.patience_ns.load(Ordering::Relaxed))
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// One kept connection: the queue its task writes from, and the queries in flight.
#[derive(Debug)]
struct Connection {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    inflight: Mutex<Inflight>,
    /// `inflight.waiting.len()`, read without the lock to pick a connection.
    load: AtomicUsize,
    /// Since when queries have waited with nothing read (`Shared::nanos`): set by
    /// each read, and by a query that finds none waiting.
    quiet_since: AtomicU64,
    carried: AtomicU32,
    end: CancellationToken,
    /// This end's address, once connected (for dnstap).
    local: OnceLock<SocketAddr>,
}

#[derive(Debug)]
struct Inflight {
    /// Set when the connection ended: nothing more is added.
    closed: bool,
    waiting: HashMap<u16, Waiter>,
    /// When a query was last queued or a reply last read: the idle clock.
    last_active: Instant,
}

#[derive(Debug)]
struct Waiter {
    q: Query,
    reply: oneshot::Sender<Ask>,
}

/// How a query asked on one connection ended.
#[derive(Debug)]
enum Ask {
    Answered(Exchanged),
    /// The try failed: the connection could not be made, or the reply is malformed.
    Failed(TryError),
    /// The connection ended before the reply: ask again on another.
    Lost(TryError),
}

impl TcpConnections {
    /// `patience`: the route's `try_timeout`; `tls`: for a `tls://` upstream.
    pub fn new(
        addr: SocketAddr,
        stats: Arc<UpstreamStats>,
        patience: Duration,
        tls: Option<(Dialer, String)>,
    ) -> Self {
        let c = TcpConnections {
            shared: Arc::new(Shared {
                addr,
                stats,
                tls,
                patience_ns: AtomicU64::new(0),
                open: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                owed: AtomicU64::new(0),
                barren_in_a_row: AtomicU32::new(0),
                epoch: Instant::now(),
            }),
            conns: Mutex::new(Vec::new()),
        };
        c.set_patience(patience);
        c
    }

    /// A reload's new `try_timeout` for a kept upstream.
    pub fn set_patience(&self, patience: Duration) {
        let ns = patience.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.shared.patience_ns.store(ns, Ordering::Relaxed);
    }

    /// Connections established now.
    pub fn open(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Connections opened to replace one that failed or ended with queries waiting.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// A `tls://` upstream's handshakes and last failure.
    pub fn tls(&self) -> Option<&Dialer> {
        self.shared.tls.as_ref().map(|(d, _)| d)
    }

    /// One exchange over a kept connection; asked again on another connection, at most
    /// `MAX_RESENDS` times, when the one it was on ends first. No deadline of its own:
    /// the caller holds it. With `tap`, each query and its reply go to dnstap.
    pub async fn exchange(
        &self,
        q: &Query,
        edns: bool,
        tap: Option<&TryTap<'_>>,
    ) -> Result<Exchanged, TryError> {
        let mut resends = 0;
        loop {
            let conn = self.pick()?;
            match conn.ask(&self.shared, q, edns, tap).await {
                Ask::Answered(a) => return Ok(a),
                Ask::Failed(e) => return Err(e),
                Ask::Lost(e) if resends == MAX_RESENDS => return Err(e),
                Ask::Lost(e) => {
                    resends += 1;
                    tracing::debug!(upstream = %self.shared.addr, error = %e, "tcp connection ended before the reply; asking again on another");
                }
            }
        }
    }

    fn conns(&self) -> MutexGuard<'_, Vec<Arc<Connection>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The least loaded connection that takes queries, or a new one when it is busy
    /// (`SPREAD_AT`) or there is none, while there is room.
    fn pick(&self) -> Result<Arc<Connection>, TryError> {
        let (now, patience) = (self.shared.nanos(Instant::now()), self.shared.patience());
        let mut conns = self.conns();
        conns.retain(|c| !c.end.is_cancelled());
        let best = conns
            .iter()
            .filter(|c| c.takes_queries(now, patience))
            .min_by_key(|c| c.load.load(Ordering::Relaxed));
        match best {
            Some(c) if c.load.load(Ordering::Relaxed) < SPREAD_AT => Ok(Arc::clone(c)),
            _ if conns.len() < MAX_CONNECTIONS => {
                let c = Connection::open(&self.shared);
                conns.push(Arc::clone(&c));
                Ok(c)
            }
            Some(c) => Ok(Arc::clone(c)),
            None => Err(TryError::Busy),
        }
    }
}

impl Drop for TcpConnections {
    /// The upstream left the configuration, or the server stops: its connections end.
    fn drop(&mut self) {
        for c in self.conns().drain(..) {
            c.end.cancel();
        }
    }
}

impl Connection {
    /// A new connection, already taking queries: its task connects (after the backoff)
    /// and then writes what was queued meanwhile.
    fn open(shared: &Arc<Shared>) -> Arc<Connection> {
        let (frames, queued) = mpsc::unbounded_channel();
        let conn = Arc::new(Connection {
            frames,
            inflight: Mutex::new(Inflight {
                closed: false,
                waiting: HashMap::new(),
                last_active: Instant::now(),
            }),
            load: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            carried: AtomicU32::new(0),
            end: CancellationToken::new(),
            local: OnceLock::new(),
        });
        let owed = shared
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if owed.is_ok() {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(run(Arc::clone(shared), Arc::clone(&conn), queued));
        conn
    }

    fn inflight(&self) -> MutexGuard<'_, Inflight> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queries waiting, and nothing read for `patience`: the upstream may have stopped
    /// answering on this connection.
    fn suspect(&self, now: u64, patience: Duration) -> bool {
        self.load.load(Ordering::Relaxed) > 0
            && now.saturating_sub(self.quiet_since.load(Ordering::Relaxed))
                >= patience.as_nanos() as u64
    }

    fn takes_queries(&self, now: u64, patience: Duration) -> bool {
        !self.end.is_cancelled()
            && self.carried.load(Ordering::Relaxed) < MAX_QUERIES_PER_CONNECTION
            && self.load.load(Ordering::Relaxed) < MAX_PIPELINE
            && !self.suspect(now, patience)
    }

    /// `q` on this connection, under an ID no query in flight here holds.
    async fn ask(&self, shared: &Shared, q: &Query, edns: bool, tap: Option<&TryTap<'_>>) -> Ask {
        let (reply, answer) = oneshot::channel();
        let id = {
            let mut inflight = self.inflight();
            if inflight.closed {
                return Ask::Lost(TryError::Closed);
            }
            let mut id = random_id();
            while inflight.waiting.contains_key(&id) {
                id = random_id();
            }
            let now = Instant::now();
            inflight.last_active = now;
            if inflight.waiting.is_empty() {
                self.quiet_since.store(shared.nanos(now), Ordering::Relaxed);
            }
            let q = q.clone();
            inflight.waiting.insert(id, Waiter { q, reply });
            self.load.store(inflight.waiting.len(), Ordering::Relaxed);
            id
        };
        self.carried.fetch_add(1, Ordering::Relaxed);
        // The query's bytes go to dnstap now, and are not kept across the wait.
        let sent = {
            let query = wire::build_upstream_query(q, id, edns);
            if self.frames.send(wire::framed(&query)).is_err() {
                // The task is gone; it failed (or will fail) every waiter, this one too.
                return Ask::Lost(TryError::Closed);
            }
            tap.map(|t| t.sent(self.leg(shared), &query))
        };
        let asked = answer.await.unwrap_or(Ask::Lost(TryError::Closed));
        if let (Some(sent), Ask::Answered(a)) = (sent, &asked) {
            sent.received(self.leg(shared), &a.bytes);
        }
        asked
    }

    /// Where a query on this connection goes, for dnstap (this end's address once
    /// connected).
    fn leg(&self, shared: &Shared) -> Leg {
        Leg {
            transport: if shared.tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
            local: self.local.get().copied(),
            upstream: shared.addr,
        }
    }

    /// `msg`, read off the connection, to the query with its ID if its question
    /// matches too (RFC 7766 section 7); anything else is counted and dropped.
    fn deliver(&self, shared: &Shared, msg: Vec<u8>) {
        let now = Instant::now();
        self.quiet_since.store(shared.nanos(now), Ordering::Relaxed);
        let mut inflight = self.inflight();
        inflight.last_active = now;
        let waiter = msg
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .and_then(|id| Some((id, inflight.waiting.remove(&id)?)));
        let Some((id, waiter)) = waiter else {
            shared.stats.mismatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let ask = match wire::parse_reply(&msg, id, &waiter.q) {
            Ok(reply) => Ask::Answered(Exchanged { bytes: msg, reply }),
            Err(ReplyError::Mismatch) => {
                // The right ID but another question: not this query's reply.
                shared.stats.mismatched.fetch_add(1, Ordering::Relaxed);
                inflight.waiting.insert(id, waiter);
                return;
            }
            Err(ReplyError::Malformed(e)) => Ask::Failed(TryError::Malformed(e)),
        };
        self.load.store(inflight.waiting.len(), Ordering::Relaxed);
        drop(inflight);
        // The try may have been given up meanwhile: then nobody listens.
        let _ = waiter.reply.send(ask);
    }

    /// Why the connection should end now, if it should.
    fn why_end(&self, shared: &Shared, now: Instant) -> Option<End> {
        let inflight = self.inflight();
        if inflight.waiting.is_empty() {
            if now.duration_since(inflight.last_active) >= IDLE_TIMEOUT
                || self.carried.load(Ordering::Relaxed) >= MAX_QUERIES_PER_CONNECTION
            {
                return Some(End::Quiet);
            }
            return None;
        }
        let given_up = inflight.waiting.values().all(|w| w.reply.is_closed());
        (given_up && self.suspect(shared.nanos(now), shared.patience())).then_some(End::Stalled)
    }

    /// The connection ended: every query still waiting learns it.
    fn close(&self, how: impl Fn() -> Ask) {
        self.end.cancel();
        let waiting = {
            let mut inflight = self.inflight();
            inflight.closed = true;
            self.load.store(0, Ordering::Relaxed);
            std::mem::take(&mut inflight.waiting)
        };
        for (_, w) in waiting {
            let _ = w.reply.send(how());
        }
    }
}

/// The wait before connecting, after `barren` connections in a row carried no reply:
/// none after a good one, then `BACKOFF_BASE` doubling to `BACKOFF_MAX`, drawn from its
/// upper half so that replicas restarting together spread out.
fn backoff(barren: u32) -> Duration {
    if barren == 0 {
        return Duration::ZERO;
    }
    let full = BACKOFF_BASE
        .saturating_mul(1 << (barren - 1).min(16))
        .min(BACKOFF_MAX);
    full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
}

/// Why a connection's task ended.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Idle, retired, or dropped with its upstream: nothing was lost.
    Quiet,
    /// Suspect, and every query on it given up.
    Stalled,
    /// The upstream closed the connection (an end of stream, maybe mid-reply).
    ClosedByUpstream,
    Error(io::ErrorKind),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quiet => f.write_str("idle"),
            End::Stalled => f.write_str("stalled"),
            End::ClosedByUpstream => f.write_str("closed by the upstream"),
            End::Error(kind) => write!(f, "{kind}"),
        }
    }
}

/// A connection's task, from connect to end.
async fn run(shared: Arc<Shared>, conn: Arc<Connection>, queued: mpsc::UnboundedReceiver<Vec<u8>>) {
    let wait = backoff(shared.barren_in_a_row.load(Ordering::Relaxed));
    let connected = tokio::select! {
        _ = conn.end.cancelled() => return conn.close(|| Ask::Lost(TryError::Closed)),
        c = async { sleep(wait).await; connect(&shared).await } => c,
    };
    let stream = match connected {
        Ok(s) => s,
        Err(failed) => {
            shared.barren_in_a_row.fetch_add(1, Ordering::Relaxed);
            shared.owed.fetch_add(1, Ordering::Relaxed);
            return conn.close(|| Ask::Failed(failed.error()));
        }
    };
    shared.open.fetch_add(1, Ordering::Relaxed);
    let ended = match stream {
        Stream::Plain(s) => {
            if let Ok(local) = s.local_addr() {
                let _ = conn.local.set(local);
            }
            let (rd, wr) = s.into_split();
            carry(&shared, &conn, rd, wr, queued).await
        }
        Stream::Tls(s) => {
            if let Ok(local) = s.get_ref().0.local_addr() {
                let _ = conn.local.set(local);
            }
            let (rd, wr) = tokio::io::split(s);
            carry(&shared, &conn, rd, wr, queued).await
        }
    };
    shared.open.fetch_sub(1, Ordering::Relaxed);
    let waiting = conn.load.load(Ordering::Relaxed);
    // A server may close a connection it finds idle (RFC 7766 section 6.2.3): that
    // costs nothing and is not a reconnect.
    let lost = waiting > 0 || matches!(ended, End::Stalled | End::Error(_));
    if lost {
        shared.owed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(upstream = %shared.addr, %ended, waiting, "tcp connection to the upstream ended");
    }
    conn.close(|| Ask::Lost(TryError::Closed));
}

/// Writes queued queries and reads replies until the connection ends; a connection
/// that carried no reply adds to the backoff.
async fn carry<R, W>(
    shared: &Shared,
    conn: &Connection,
    rd: R,
    wr: W,
    queued: mpsc::UnboundedReceiver<Vec<u8>>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (ended, replied) = tokio::select! {
        e = read_replies(shared, conn, rd) => e,
        e = write_queries(wr, queued) => (e, false),
        _ = conn.end.cancelled() => (End::Quiet, false),
    };
    if replied {
        shared.barren_in_a_row.store(0, Ordering::Relaxed);
    } else if !matches!(ended, End::Quiet) {
        shared.barren_in_a_row.fetch_add(1, Ordering::Relaxed);
    }
    ended
}

/// A connection to an upstream, plain or with TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why no connection could be made.
enum ConnectFailed {
    Tcp(io::Error),
    Tls(crate::tls::HandshakeError),
}

impl ConnectFailed {
    /// The failure as each waiting try's error: each gets its own copy (io::Error is
    /// not Clone), keeping the OS code so that `opening` tells a local shortage apart.
    fn error(&self) -> TryError {
        match self {
            ConnectFailed::Tcp(e) => {
                let copy = match e.raw_os_error() {
                    Some(c) => io::Error::from_raw_os_error(c),
                    None => io::Error::new(e.kind(), "tcp connect"),
                };
                exchange::opening(copy)
            }
            ConnectFailed::Tls(e) => TryError::Tls(e.clone()),
        }
    }
}

/// A connection to the upstream; for a `tls://` one, with its handshake done.
async fn connect(shared: &Shared) -> Result<Stream, ConnectFailed> {
    let tcp = connect_tcp(shared.addr).await.map_err(|e| {
        tracing::debug!(upstream = %shared.addr, error = %e, "tcp connect failed");
        ConnectFailed::Tcp(e)
    })?;
    match &shared.tls {
        None => Ok(Stream::Plain(tcp)),
        Some((dialer, spec)) => match dialer.handshake(tcp, spec).await {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(e) => Err(ConnectFailed::Tls(e)),
        },
    }
}

async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // An upstream on this host, on a port of the ephemeral range, that is not
    // listening: the kernel may draw that very port for our end, and the connection
    // then opens to itself (TCP simultaneous open) and holds the port the upstream
    // needs to come back on. Go's dialer checks the same.
    if stream.local_addr()? == addr {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connected to itself: nothing listens on the upstream's port",
        ));
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes each queued query, several in one system call when they queue up.
async fn write_queries<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
) -> End {
    let mut out = Vec::new();
    while let Some(frame) = queued.recv().await {
        out.clear();
        out.extend_from_slice(&frame);
        while let Ok(more) = queued.try_recv() {
            out.extend_from_slice(&more);
        }
        // A TLS stream holds what it was given until flushed.
        if let Err(e) = async {
            wr.write_all(&out).await?;
            wr.flush().await
        }
        .await
        {
            return End::Error(e.kind());
        }
    }
    End::Quiet
}

/// Reads replies and hands each to its query until the connection ends, saying too
/// whether any reply came. The end checks run on a timer reset only when it fires.
async fn read_replies<R: AsyncRead + Unpin>(
    shared: &Shared,
    conn: &Connection,
    mut rd: R,
) -> (End, bool) {
    let mut buf = Vec::with_capacity(READ_AHEAD);
    let mut replied = false;
    let check_every = || shared.patience().min(IDLE_TIMEOUT) / 4;
    let timer = sleep(check_every());
    tokio::pin!(timer);
    loop {
        if buf.capacity() - buf.len() < READ_AHEAD / 4 {
            buf.reserve(READ_AHEAD);
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => return (End::ClosedByUpstream, replied),
                Ok(_) => replied |= deliver_all(shared, conn, &mut buf),
                Err(e) => return (End::Error(e.kind()), replied),
            },
            () = &mut timer => {
                let now = Instant::now();
                if let Some(end) = conn.why_end(shared, now) {
                    return (end, replied);
                }
                timer.as_mut().reset(now + check_every());
            }
        }
    }
}

/// Hands every whole message in `buf` to its query and keeps the partial rest.
fn deliver_all(shared: &Shared, conn: &Connection, buf: &mut Vec<u8>) -> bool {
    let mut at = 0;
    while let Some(len) = buf
        .get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    {
        let Some(msg) = buf.get(at + 2..at + 2 + len) else {
            break;
        };
        conn.deliver(shared, msg.to_vec());
        at += 2 + len;
    }
    buf.drain(..at);
    at > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A loopback upstream answering every query on every connection with an empty
    /// reply, and the count of connections it accepted.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Ok(mut m) = wire::read_framed(&mut s).await {
                        m[2] |= 0x80; // QR
                        if s.write_all(&wire::framed(&m)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// A loopback upstream that accepts connections and never answers: every query
    /// stays in flight.
    async fn silent() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        addr
    }

    fn q(name: &str) -> Query {
        Query::own(wire::name_from_str(name).unwrap(), 1)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_and_the_next_query_opens_another() {
        let (addr, accepted) = upstream().await;
        let tcp = TcpConnections::new(addr, Arc::default(), Duration::from_secs(1), None);
        tcp.exchange(&q("a.example."), true, None).await.unwrap();
        tcp.exchange(&q("b.example."), true, None).await.unwrap();
        assert_eq!((tcp.open(), accepted.load(Ordering::SeqCst)), (1, 1));
        tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        assert_eq!(tcp.open(), 0, "closed once idle");
        tcp.exchange(&q("c.example."), true, None).await.unwrap();
        assert_eq!((tcp.open(), accepted.load(Ordering::SeqCst)), (1, 2));
        assert_eq!(tcp.reconnects(), 0, "an idle close is not a reconnect");
    }

    #[tokio::test]
    async fn a_new_query_never_takes_an_id_in_flight_on_its_connection() {
        let addr = silent().await;
        let tcp = TcpConnections::new(addr, Arc::default(), Duration::from_secs(60), None);
        let conn = Connection::open(&tcp.shared);
        // Every ID but one is in flight.
        const FREE: u16 = 4242;
        {
            let mut inflight = conn.inflight();
            for id in (0..=u16::MAX).filter(|&id| id != FREE) {
                let (reply, _) = oneshot::channel();
                let q = q("taken.example.");
                inflight.waiting.insert(id, Waiter { q, reply });
            }
        }
        let (c, shared) = (Arc::clone(&conn), Arc::clone(&tcp.shared));
        let asked =
            tokio::spawn(async move { c.ask(&shared, &q("free.example."), true, None).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while conn.inflight().waiting.len() < 65536 {
            assert!(Instant::now() < deadline, "the query was never registered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let name = wire::name_to_string(&conn.inflight().waiting[&FREE].q.qname);
        assert_eq!(name, "free.example.");
        asked.abort();
    }

    #[tokio::test]
    async fn with_every_connection_full_a_query_fails_at_once_as_busy() {
        let addr = silent().await;
        let tcp = Arc::new(TcpConnections::new(
            addr,
            Arc::default(),
            Duration::from_secs(60),
            None,
        ));
        let mut waiting = Vec::new();
        for i in 0..MAX_CONNECTIONS * MAX_PIPELINE {
            let tcp = Arc::clone(&tcp);
            waiting.push(tokio::spawn(async move {
                tcp.exchange(&q(&format!("n{i}.example.")), true, None)
                    .await
            }));
            if i % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let full = || {
            let conns = tcp.conns();
            conns.len() == MAX_CONNECTIONS
                && conns
                    .iter()
                    .all(|c| c.load.load(Ordering::Relaxed) == MAX_PIPELINE)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !full() {
            assert!(Instant::now() < deadline, "the connections never filled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let busy = tcp.exchange(&q("one-more.example."), true, None).await;
        assert!(matches!(busy, Err(TryError::Busy)), "{busy:?}");
        for w in waiting {
            w.abort();
        }
    }

    #[tokio::test]
    async fn the_upstream_leaving_the_configuration_closes_its_connections() {
        let (addr, _) = upstream().await;
        let stats = Arc::new(UpstreamStats::default());
        let tcp = TcpConnections::new(addr, Arc::clone(&stats), Duration::from_secs(1), None);
        tcp.exchange(&q("a.example."), true, None).await.unwrap();
        let conn = Arc::clone(&tcp.conns()[0]);
        drop(tcp);
        tokio::time::timeout(Duration::from_secs(10), conn.end.cancelled())
            .await
            .unwrap();
    }

    #[test]
    fn backoff_is_none_after_a_good_connection_then_doubles_to_its_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        for (barren, full_ms) in [
            (1, 50),
            (2, 100),
            (3, 200),
            (6, 1600),
            (7, 2000),
            (40, 2000),
        ] {
            let full = Duration::from_millis(full_ms);
            let b = backoff(barren);
            assert!(
                b >= full / 2 && b <= full,
                "{barren}: {b:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
