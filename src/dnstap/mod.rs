//! dnstap (`[dnstap]`): what clients ask and get (CLIENT_QUERY, CLIENT_RESPONSE) and
//! each try sent upstream (FORWARDER_QUERY, FORWARDER_RESPONSE), as protobuf messages
//! over Frame Streams to a collector (dnstap-receiver, go-dnscollector, Vector).
//!
//! This module owns the switchboard: `DnstapOutput`, the server's one writer to the
//! configured collector, kept across reloads while the socket is the same, and `Tap`,
//! one configuration's view of it (which messages, which client queries), which the
//! query path asks to send a message. `message` makes a message's frame, `frames`
//! speaks Frame Streams, `collector` holds the connection. The query path never
//! waits: a frame that does not fit in the queue is dropped and counted.
//!
//! What goes where dnstap leaves room (docs/dnstap.md): the route is the `policy`
//! (type "route", rule its name, match QNAME); `extra` holds `route=NAME answer=KIND`
//! on a client response and `route=NAME` (and `retransmission=late|timeout` on a
//! retransmitted try) on forwarder messages.

mod collector;
mod frames;
mod message;
mod proto;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{host_name, Config, DnstapConfig, DnstapSocket};
use crate::life::Lifecycle;
use crate::outcome::RetransmitReason;
use crate::transport::Transport;

/// Whether a collector takes a dnstap stream, for `doctor`.
pub use collector::check as check_collector;
pub use collector::DnstapCounts;
use message::{Event, Origin};
use proto::{MessageType, SocketProtocol};

/// The server's dnstap writer: the collector connection for the configured socket
/// and what it has sent and dropped. Outlives configurations.
#[derive(Debug, Default)]
pub struct DnstapOutput {
    pub counts: Arc<DnstapCounts>,
    writer: Mutex<Option<Writer>>,
}

/// The writer task for one socket, and its queue.
#[derive(Debug)]
struct Writer {
    socket: DnstapSocket,
    frames: mpsc::Sender<Vec<u8>>,
}

impl DnstapOutput {
    /// The tap `config` asks for: over the running writer when its socket is the
    /// same, else over a new one. A writer no configuration uses any more sends what
    /// it has, then STOP, and ends once the last query of the old one is done.
    pub fn tap_for(&self, config: &Config, life: &Lifecycle) -> Option<Arc<Tap>> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.counts
            .configured
            .store(config.dnstap.is_some(), Ordering::Relaxed);
        let Some(wanted) = &config.dnstap else {
            *writer = None;
            return None;
        };
        let frames = match &*writer {
            Some(w) if w.socket == wanted.socket => w.frames.clone(),
            _ => {
                let (frames, queued) = mpsc::channel(collector::QUEUE_FRAMES);
                life.tasks.spawn(collector::run(
                    wanted.socket.clone(),
                    queued,
                    Arc::clone(&self.counts),
                    life.shutdown.clone(),
                ));
                *writer = Some(Writer {
                    socket: wanted.socket.clone(),
                    frames: frames.clone(),
                });
                frames
            }
        };
        Some(Arc::new(Tap::new(wanted, config, frames, &self.counts)))
    }

    /// The collector configured, if any, for `ctl status`.
    pub fn socket(&self) -> Option<DnstapSocket> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.as_ref().map(|w| w.socket.clone())
    }
}

/// One configuration's dnstap: which messages it sends, and to which queue.
#[derive(Debug)]
pub struct Tap {
    frames: mpsc::Sender<Vec<u8>>,
    counts: Arc<DnstapCounts>,
    origin: Origin,
    config: DnstapConfig,
}

impl Tap {
    fn new(
        wanted: &DnstapConfig,
        config: &Config,
        frames: mpsc::Sender<Vec<u8>>,
        counts: &Arc<DnstapCounts>,
    ) -> Tap {
        let identity = (config.server.identity.clone())
            .unwrap_or_else(|| host_name().unwrap_or_else(|_| "zonefwd".to_string()));
        Tap {
            frames,
            counts: Arc::clone(counts),
            origin: Origin {
                identity: Bytes::from(identity),
                version: Bytes::from_static(
                    concat!("zonefwd ", env!("CARGO_PKG_VERSION")).as_bytes(),
                ),
            },
            config: wanted.clone(),
        }
    }

    /// Whether forwarded tries are sent at all.
    pub fn forwards(&self) -> bool {
        self.config.forwarder_query || self.config.forwarder_response
    }

    /// A client's query as it arrived on `server`: sent as CLIENT_QUERY when it is
    /// sampled; what its response needs to follow it, when that is sent too.
    pub fn client(
        self: &Arc<Self>,
        msg: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        transport: Transport,
    ) -> Option<Box<ClientTap>> {
        let c = &self.config;
        if !(c.client_query || c.client_response) || !sampled(c.client_sample_rate) {
            return None;
        }
        let tap = ClientTap {
            tap: Arc::clone(self),
            client,
            server,
            protocol: protocol(transport),
            arrived: SystemTime::now(),
        };
        if c.client_query {
            tap.send(MessageType::ClientQuery, Some(msg), None, None, None);
        }
        c.client_response.then(|| Box::new(tap))
    }

    /// Queues the event's frame, or drops and counts it when the queue is full.
    fn send(&self, event: Event<'_>) {
        if self.frames.try_send(event.frame(&self.origin)).is_err() {
            self.counts.drop_one(&self.config.socket);
        }
    }
}

/// One sampled client query, for its response.
#[derive(Debug)]
pub struct ClientTap {
    tap: Arc<Tap>,
    client: SocketAddr,
    server: SocketAddr,
    protocol: SocketProtocol,
    arrived: SystemTime,
}

impl ClientTap {
    /// The reply as sent: CLIENT_RESPONSE, with the route (`-` before one is chosen)
    /// and how it was answered (the query log's `outcome`).
    pub fn response(&self, reply: &[u8], route: &str, answer: &str) {
        let routed = (route != "-").then_some(route);
        let extra = pairs(&[("route", route), ("answer", answer)]);
        let kind = MessageType::ClientResponse;
        self.send(kind, None, Some(reply), routed, Some(extra));
    }

    fn send(
        &self,
        kind: MessageType,
        query: Option<&[u8]>,
        response: Option<&[u8]>,
        route: Option<&str>,
        extra: Option<Vec<u8>>,
    ) {
        self.tap.send(Event {
            kind,
            protocol: self.protocol,
            initiator: Some(self.client),
            responder: self.server,
            query_time: self.arrived,
            response_time: response.map(|_| SystemTime::now()),
            query,
            response,
            zone: None,
            route,
            extra,
        });
    }
}

/// One forwarded query's dnstap: the route, and its zone for this query's name.
#[derive(Debug, Clone, Copy)]
pub struct QueryTap<'a> {
    pub tap: &'a Tap,
    pub route: &'a str,
    pub zone: Option<&'a [u8]>,
}

/// One try of a forwarded query, and whether it is a retransmission. Small: each try's
/// future holds one.
#[derive(Debug, Clone, Copy)]
pub struct TryTap<'a> {
    pub query: &'a QueryTap<'a>,
    pub retransmission: Option<RetransmitReason>,
}

/// Where one forwarded message went: the transport, zonefwd's socket (unknown for a
/// TCP connection still connecting) and the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Leg {
    pub transport: Transport,
    pub local: Option<SocketAddr>,
    pub upstream: SocketAddr,
}

/// A query sent upstream, waiting for its reply. Boxed: it waits in the try's state,
/// which dnstap must not enlarge for every query.
#[derive(Debug)]
pub struct Sent<'a> {
    tap: &'a TryTap<'a>,
    at: SystemTime,
}

impl Sent<'_> {
    /// `reply` received for this query over `leg`: FORWARDER_RESPONSE.
    pub fn received(&self, leg: Leg, reply: &[u8]) {
        if self.tap.query.tap.config.forwarder_response {
            let kind = MessageType::ForwarderResponse;
            self.tap.send(kind, leg, self.at, None, Some(reply));
        }
    }
}

impl<'a> TryTap<'a> {
    /// `query` sent over `leg`: FORWARDER_QUERY; what its reply needs.
    pub fn sent(&'a self, leg: Leg, query: &[u8]) -> Box<Sent<'a>> {
        let at = SystemTime::now();
        if self.query.tap.config.forwarder_query {
            self.send(MessageType::ForwarderQuery, leg, at, Some(query), None);
        }
        Box::new(Sent { tap: self, at })
    }

    fn send(
        &self,
        kind: MessageType,
        leg: Leg,
        sent: SystemTime,
        query: Option<&[u8]>,
        response: Option<&[u8]>,
    ) {
        let q = self.query;
        let extra = match self.retransmission {
            Some(r) => pairs(&[("route", q.route), ("retransmission", r.as_str())]),
            None => pairs(&[("route", q.route)]),
        };
        q.tap.send(Event {
            kind,
            protocol: protocol(leg.transport),
            initiator: leg.local,
            responder: leg.upstream,
            query_time: sent,
            response_time: response.map(|_| SystemTime::now()),
            query,
            response,
            zone: q.zone,
            route: Some(q.route),
            extra: Some(extra),
        });
    }
}

/// `key=value` pairs, separated by spaces, for `extra`.
fn pairs(kv: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for (i, (k, v)) in kv.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn protocol(t: Transport) -> SocketProtocol {
    match t {
        Transport::Udp => SocketProtocol::Udp,
        Transport::Tcp => SocketProtocol::Tcp,
        Transport::Tls => SocketProtocol::Dot,
        Transport::Https => SocketProtocol::Doh,
    }
}

/// One client query in `every`, counted per thread: no shared counter on the path
/// every query takes.
fn sampled(every: u32) -> bool {
    thread_local! {
        static SEEN: Cell<u32> = const { Cell::new(0) };
    }
    every <= 1
        || SEEN.with(|seen| {
            let n = seen.get() + 1;
            seen.set(n % every);
            n == every
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_query_in_n_is_sampled() {
        for (every, asked, want) in [(1, 10, 10), (4, 8, 2), (4, 7, 1), (10, 100, 10)] {
            // Each case on a thread of its own: the count is per thread.
            let got = std::thread::spawn(move || (0..asked).filter(|_| sampled(every)).count())
                .join()
                .unwrap();
            assert_eq!(got, want, "1 in {every} of {asked}");
        }
    }
}
