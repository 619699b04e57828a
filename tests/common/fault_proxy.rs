//! A fault-injecting proxy between zonefwd and a fake upstream: the faults netem would
//! make on a real link (these machines have no netem), in user space, exact and
//! portable. zonefwd is configured with the proxy's address as its upstream; the proxy
//! relays UDP and TCP to the fake and does to the traffic what its `Fault` says.
//! Everything stays on 127.0.0.0/8.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::RData;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{framed, qname_of, read_framed, udp_and_tcp_on_one_port, LOCALHOST};

/// The answer a forgery carries; a client or cache that ever holds it was poisoned.
pub const FORGED_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

/// What the proxy does to the traffic it relays.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Relays everything as it is.
    Clean,
    /// Drops each datagram, query or reply, with this probability (so a round trip is
    /// lost with about twice it).
    Loss(f64),
    /// Holds each reply `base` plus or minus up to `jitter`, uniformly.
    Delay { base: Duration, jitter: Duration },
    /// Sends each reply twice, the copy up to 20 ms after the first.
    Duplicate,
    /// Holds each reply a random 0 to 50 ms, so replies overtake one another.
    Reorder,
    /// Before each reply, two forgeries with the right ID and question and the answer
    /// `FORGED_IP`: one from another port, one from 127.0.0.2 (RFC 5452 section 9.1).
    WrongSource,
    /// The upstream goes away `at` after the proxy starts (its sockets closed, so the
    /// kernel refuses what comes) and is back on the same port `down` later.
    Restart { at: Duration, down: Duration },
    /// TCP: each connection is reset (RST) when its `every`-th query arrives.
    TcpReset { every: usize },
    /// TCP: each connection's `every`-th reply is cut after half its bytes, then the
    /// connection is closed.
    TcpCloseMidReply { every: usize },
    /// Nothing gets through, either way.
    Blackhole,
    /// A resolver's answer times: 10% of names (fixed by the name) answered 300 to
    /// 500 ms after the proxy first saw a query for them, as names the resolver must
    /// resolve, the rest at once, as names in its cache; a second query for a slow
    /// name is answered when its resolution ends. Each datagram is also lost with
    /// probability `loss`.
    SlowTail { loss: f64 },
}

/// `SlowTail`: the share of names that are slow, and how slow.
const SLOW_SHARE_PERCENT: u64 = 10;
const SLOW_MIN_MS: u64 = 300;
const SLOW_SPREAD_MS: u64 = 200;

/// What the proxy saw.
#[derive(Default)]
pub struct ProxyLog {
    /// Names of the queries that reached the proxy (health probes ask for ".").
    pub names: Mutex<Vec<String>>,
    pub forgeries_sent: AtomicUsize,
    pub duplicates_sent: AtomicUsize,
    pub dropped: AtomicUsize,
    pub tcp_cut: AtomicUsize,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub log: Arc<ProxyLog>,
    /// What `Fault::Restart`'s `at` counts from.
    pub started: Instant,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything one proxy relays with: where to, the fault, and the log.
struct Relay {
    target: SocketAddr,
    fault: Fault,
    log: Arc<ProxyLog>,
    /// `WrongSource`: the socket on 127.0.0.2 and the upstream's own port, one for
    /// every forgery (two could not bind it at once).
    impostor: Option<UdpSocket>,
    /// `SlowTail`: when a query for each name first reached the proxy.
    first_seen: Mutex<HashMap<String, Instant>>,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port (UDP and TCP) in front of `target`.
    pub async fn start(target: SocketAddr, fault: Fault) -> FaultProxy {
        let (udp, tcp) = udp_and_tcp_on_one_port(0).await;
        let addr = udp.local_addr().unwrap();
        let started = Instant::now();
        let log = Arc::new(ProxyLog::default());
        let impostor = match fault {
            Fault::WrongSource => {
                let other_host =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), addr.port());
                Some(UdpSocket::bind(other_host).await.unwrap())
            }
            _ => None,
        };
        let relay = Arc::new(Relay {
            target,
            fault,
            log: log.clone(),
            impostor,
            first_seen: Mutex::default(),
        });
        let task = tokio::spawn(run(relay, udp, tcp, started));
        FaultProxy {
            addr,
            log,
            started,
            task,
        }
    }

    /// The client queries that reached the proxy, health probes left out.
    pub fn client_queries(&self) -> usize {
        let names = self.log.names.lock().unwrap();
        names.iter().filter(|n| n.as_str() != ".").count()
    }
}

/// Relays until aborted (its relaying tasks with it); for `Restart`, closes
/// everything at `at` and binds the same port again `down` later.
async fn run(relay: Arc<Relay>, udp: UdpSocket, tcp: TcpListener, started: Instant) {
    let port = udp.local_addr().unwrap().port();
    let serving = serve(&relay, udp, tcp);
    let Fault::Restart { at, down } = relay.fault else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(started + at).await;
    drop(serving);
    tokio::time::sleep(down).await;
    let (udp, tcp) = udp_and_tcp_on_one_port(port).await;
    let _serving = serve(&relay, udp, tcp);
    std::future::pending().await
}

/// The UDP and TCP relays, stopped when this is dropped.
fn serve(relay: &Arc<Relay>, udp: UdpSocket, tcp: TcpListener) -> AbortOnDrop {
    AbortOnDrop(vec![
        tokio::spawn(udp_front(relay.clone(), Arc::new(udp))),
        tokio::spawn(tcp_front(relay.clone(), tcp)),
    ])
}

impl Relay {
    fn chance(&self, p: f64) -> bool {
        rand::random::<f64>() < p
    }

    /// Whether this datagram (either way) is lost.
    fn drops(&self) -> bool {
        let lost = match self.fault {
            Fault::Loss(p) | Fault::SlowTail { loss: p } => self.chance(p),
            Fault::Blackhole => true,
            _ => false,
        };
        if lost {
            self.log.dropped.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }

    fn note_query(&self, raw: &[u8]) {
        if let Ok(m) = Message::from_vec(raw) {
            let name = qname_of(&m);
            if matches!(self.fault, Fault::SlowTail { .. }) {
                let mut first = self.first_seen.lock().unwrap();
                first.entry(name.clone()).or_insert_with(Instant::now);
            }
            self.log.names.lock().unwrap().push(name);
        }
    }

    /// How long to hold `reply` before it goes out.
    fn hold(&self, reply: &[u8]) -> Duration {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match self.fault {
            Fault::SlowTail { .. } => self.resolution_left(reply),
            Fault::Delay { base, jitter } => {
                let offset = (rand::random::<f64>() * 2.0 - 1.0) * ms(jitter);
                Duration::from_secs_f64((ms(base) + offset).max(0.0) / 1000.0)
            }
            Fault::Reorder => Duration::from_secs_f64(rand::random::<f64>() * 0.050),
            _ => Duration::ZERO,
        }
    }

    /// `SlowTail`: how long until the resolution of the reply's name ends (zero for a
    /// name the resolver has cached, or one resolved already).
    fn resolution_left(&self, reply: &[u8]) -> Duration {
        let Ok(m) = Message::from_vec(reply) else {
            return Duration::ZERO;
        };
        let name = qname_of(&m);
        let Some(takes) = resolution_time(&name) else {
            return Duration::ZERO;
        };
        let first = self.first_seen.lock().unwrap().get(&name).copied();
        first.map_or(Duration::ZERO, |at| {
            (at + takes).saturating_duration_since(Instant::now())
        })
    }
}

/// `SlowTail`: how long resolving `name` takes, for the slow names; the same for a
/// name on every run (FNV-1a of the name).
pub fn resolution_time(name: &str) -> Option<Duration> {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    (h % 100 < SLOW_SHARE_PERCENT)
        .then(|| Duration::from_millis(SLOW_MIN_MS + (h / 100) % (SLOW_SPREAD_MS + 1)))
}

// ---- UDP ------------------------------------------------------------------------

/// Reads zonefwd's queries; each zonefwd port gets its own socket towards the fake, so
/// the fake's replies find their way back to it. Aborted (a restart), it takes the
/// reply tasks with it, and with them the last hold on the front socket: the port
/// closes, and the kernel refuses what comes.
async fn udp_front(relay: Arc<Relay>, front: Arc<UdpSocket>) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut back_tasks = AbortOnDrop(Vec::new());
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        relay.note_query(&buf[..n]);
        if relay.drops() {
            continue;
        }
        let back = match backs.entry(client) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let back = Arc::new(UdpSocket::bind((LOCALHOST, 0)).await.unwrap());
                back.connect(relay.target).await.unwrap();
                back_tasks.0.push(tokio::spawn(udp_back(
                    relay.clone(),
                    back.clone(),
                    front.clone(),
                    client,
                )));
                e.insert(back).clone()
            }
        };
        let _ = back.send(&buf[..n]).await;
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The fake's replies for one zonefwd port, back to it through the fault.
async fn udp_back(
    relay: Arc<Relay>,
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok(n) = back.recv(&mut buf).await else {
            return;
        };
        if relay.drops() {
            continue;
        }
        let reply = buf[..n].to_vec();
        let (relay, front) = (relay.clone(), front.clone());
        tokio::spawn(async move { udp_reply(&relay, &front, client, reply).await });
    }
}

async fn udp_reply(relay: &Relay, front: &UdpSocket, client: SocketAddr, reply: Vec<u8>) {
    if matches!(relay.fault, Fault::WrongSource) {
        send_forgeries(relay, client, &reply).await;
    }
    tokio::time::sleep(relay.hold(&reply)).await;
    let _ = front.send_to(&reply, client).await;
    if matches!(relay.fault, Fault::Duplicate) {
        tokio::time::sleep(Duration::from_secs_f64(rand::random::<f64>() * 0.020)).await;
        let _ = front.send_to(&reply, client).await;
        relay.log.duplicates_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reply with its answers replaced by `FORGED_IP`, sent from another port of
/// 127.0.0.1 and from 127.0.0.2 on the upstream's own port.
async fn send_forgeries(relay: &Relay, client: SocketAddr, reply: &[u8]) {
    let Some(forged) = forge(reply) else {
        return;
    };
    let other_port = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    for from in [Some(&other_port), relay.impostor.as_ref()]
        .into_iter()
        .flatten()
    {
        if from.send_to(&forged, client).await.is_ok() {
            relay.log.forgeries_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn forge(reply: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(reply).ok()?;
    for r in m.answers.iter_mut() {
        if matches!(r.data, RData::A(_)) {
            r.data = RData::A(A(FORGED_IP));
        }
    }
    m.to_vec().ok()
}

// ---- TCP ------------------------------------------------------------------------

async fn tcp_front(relay: Arc<Relay>, listener: TcpListener) {
    let mut conns = AbortOnDrop(Vec::new());
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        conns.0.retain(|t| !t.is_finished());
        conns.0.push(tokio::spawn(tcp_relay(relay.clone(), client)));
    }
}

/// One zonefwd connection relayed to its own connection to the fake, frame by frame.
async fn tcp_relay(relay: Arc<Relay>, client: TcpStream) {
    if matches!(relay.fault, Fault::Blackhole) {
        // Accepts and never answers: a silent server, not a refused one.
        let _held = &client;
        std::future::pending::<()>().await;
    }
    if matches!(relay.fault, Fault::TcpReset { .. }) {
        // Closed with SO_LINGER 0, the socket goes with an RST, not a FIN.
        client.set_zero_linger().unwrap();
    }
    let Ok(upstream) = TcpStream::connect(relay.target).await else {
        return;
    };
    let (mut from_client, to_client) = client.into_split();
    let (from_upstream, mut to_upstream) = upstream.into_split();
    let replies = AbortOnDrop(vec![tokio::spawn(tcp_replies(
        relay.clone(),
        from_upstream,
        to_client,
    ))]);
    let mut queries = 0;
    while let Ok(raw) = read_framed(&mut from_client).await {
        queries += 1;
        relay.note_query(&raw);
        if let Fault::TcpReset { every } = relay.fault {
            if queries % every == 0 {
                relay.log.tcp_cut.fetch_add(1, Ordering::Relaxed);
                // Both halves dropped: the reset goes out.
                drop(replies);
                return;
            }
        }
        if to_upstream.write_all(&framed(&raw)).await.is_err() {
            return;
        }
    }
}

/// The fake's replies on one connection, back to zonefwd; for `TcpCloseMidReply`, the
/// `every`-th is cut in half and the connection closed.
async fn tcp_replies(
    relay: Arc<Relay>,
    mut from_upstream: tokio::net::tcp::OwnedReadHalf,
    mut to_client: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut replies = 0;
    while let Ok(raw) = read_framed(&mut from_upstream).await {
        replies += 1;
        let bytes = framed(&raw);
        if let Fault::TcpCloseMidReply { every } = relay.fault {
            if replies % every == 0 {
                relay.log.tcp_cut.fetch_add(1, Ordering::Relaxed);
                let _ = to_client.write_all(&bytes[..bytes.len() / 2]).await;
                let _ = to_client.shutdown().await;
                return;
            }
        }
        if to_client.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
