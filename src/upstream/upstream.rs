//! One upstream server: its address and settings, what its tries came to (`stats`),
//! its health, its `max_qps` budget, the marks that take it out of rotation (a
//! forwarding loop, an operator's hand), and its transports (`udp`, `tcp`). An
//! `Upstream` outlives a reload while its route, address and settings stay the same
//! (`UpstreamSet::new`), so its health, loop mark and counters do too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Route, UpstreamAddr};
use crate::life::Clock;
use crate::limit::{Rate, TokenBucket};
use crate::tls::client::{Dialer, Trust};
use crate::upstream::health::Health;
use crate::upstream::retransmit::RetransmitBudget;
use crate::upstream::stats::UpstreamStats;
use crate::upstream::tcp::TcpConnections;
use crate::upstream::udp::UdpSockets;

/// The settings an upstream is built with; one that differs after a reload makes it
/// a new upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSettings {
    pub addr: SocketAddr,
    pub max_fails: u32,
    pub max_qps: Option<u32>,
    /// `server.upstream_udp_reuse`.
    pub reuse: u32,
    /// `tls://`: its name and the route's trust (a renewed `tls_ca` makes it new).
    pub tls: Option<Arc<TlsTarget>>,
}

/// What a `tls://` upstream is asked as, and how its certificate is checked.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TlsTarget {
    pub name: Option<String>,
    pub trust: Trust,
}

impl UpstreamSettings {
    pub fn of(route: &Route, u: &UpstreamAddr, reuse: u32) -> Self {
        let tls = match (&u.tls, &route.tls) {
            (Some(t), Some(trust)) => Some(Arc::new(TlsTarget {
                name: t.name.clone(),
                trust: trust.clone(),
            })),
            _ => None,
        };
        UpstreamSettings {
            addr: u.addr,
            max_fails: route.max_fails,
            max_qps: route.max_qps,
            reuse,
            tls,
        }
    }

    /// As the configuration writes it (`tls://ADDR#NAME` for DNS over TLS).
    pub fn spec(&self) -> String {
        match self.tls.as_deref() {
            None => self.addr.to_string(),
            Some(TlsTarget { name: None, .. }) => format!("tls://{}", self.addr),
            Some(TlsTarget { name: Some(n), .. }) => format!("tls://{}#{n}", self.addr),
        }
    }
}

/// An upstream's state as an operator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// Neither asked nor probed yet: nothing is known of it.
    Unknown,
    Up,
    /// Marked down by `max_fails` failures in a row; probed until it answers.
    Down,
    /// Taken out of rotation by hand (`zonefwd ctl upstream ROUTE ADDR down`):
    /// planned work, not a failure.
    DownByHand,
    /// A loop probe sent to it came back to zonefwd.
    InLoop,
}

impl UpstreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Unknown => "unknown",
            UpstreamState::Up => "up",
            UpstreamState::Down => "down",
            UpstreamState::DownByHand => "down_by_hand",
            UpstreamState::InLoop => "in_loop",
        }
    }
}

/// One upstream server, its health and its budget.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub settings: UpstreamSettings,
    /// Shared with its transports, which count mismatched replies.
    pub stats: Arc<UpstreamStats>,
    /// Failures in a row, the `max_fails` mark and its probe.
    pub health: Health,
    /// A loop probe sent here came back to zonefwd (`loopcheck`): out of rotation.
    pub looped: AtomicBool,
    /// Taken out of rotation by hand (`zonefwd ctl upstream ROUTE ADDR down`); kept
    /// across reloads with the upstream.
    pub manual_down: AtomicBool,
    /// A query budget: `max_qps` per second, bursts of up to one second's worth. The
    /// cloud resolvers drop what exceeds their limits (Azure: 1000 qps per VM to
    /// 168.63.129.16; AWS: 1024 packets/s per interface), so zonefwd keeps under them
    /// itself and says so.
    budget: Option<(Rate, TokenBucket)>,
    /// How many early retransmissions were wasted lately, against `retransmit_budget`.
    pub retransmit_budget: RetransmitBudget,
    pub udp: UdpSockets,
    pub tcp: TcpConnections,
}

impl Upstream {
    /// `patience`: the route's `try_timeout`, after which a TCP connection with
    /// queries waiting and nothing read takes no new ones.
    pub fn new(settings: UpstreamSettings, now: Instant, patience: Duration) -> Self {
        let stats = Arc::new(UpstreamStats::default());
        let tls = settings.tls.as_deref().map(|t| {
            let dialer = Dialer::new(t.name.as_deref(), settings.addr.ip(), &t.trust);
            (dialer, settings.spec())
        });
        Upstream {
            udp: UdpSockets::new(settings.addr, Arc::clone(&stats), settings.reuse),
            tcp: TcpConnections::new(settings.addr, Arc::clone(&stats), patience, tls),
            addr: settings.addr,
            health: Health::new(settings.max_fails),
            looped: AtomicBool::new(false),
            manual_down: AtomicBool::new(false),
            budget: settings
                .max_qps
                .map(|q| (Rate::new(q, q, now), TokenBucket::new())),
            retransmit_budget: RetransmitBudget::default(),
            settings,
            stats,
        }
    }

    /// The clock is read only when there is a budget to check.
    pub(crate) fn within_budget(&self, clock: &dyn Clock) -> bool {
        match &self.budget {
            None => true,
            Some((rate, bucket)) if bucket.try_take(rate, clock.now()) => true,
            Some(_) => {
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.health.consecutive_failures()
    }

    /// What `ctl status` says of it, in order of what explains it best.
    pub fn state(&self) -> UpstreamState {
        if self.manual_down.load(Ordering::Relaxed) {
            UpstreamState::DownByHand
        } else if self.looped.load(Ordering::Relaxed) {
            UpstreamState::InLoop
        } else if self.is_marked_down() {
            UpstreamState::Down
        } else if self.stats.sent.load(Ordering::Relaxed) == 0 && self.health.never_heard_of() {
            UpstreamState::Unknown
        } else {
            UpstreamState::Up
        }
    }

    /// Up: neither marked down by failures nor taken out by hand (a loop is shown
    /// on its own, `looped`).
    pub fn is_up(&self) -> bool {
        !self.is_marked_down() && !self.manual_down.load(Ordering::Relaxed)
    }

    /// What the try loop tries first: up, and not in a forwarding loop.
    pub fn in_rotation(&self) -> bool {
        self.is_up() && !self.looped.load(Ordering::Relaxed)
    }

    /// Usable when nothing is in rotation: neither in a loop (the query would only
    /// come back) nor taken out by hand; marked down by failures is a guess worth
    /// more than a SERVFAIL.
    pub fn usable(&self) -> bool {
        !self.looped.load(Ordering::Relaxed) && !self.manual_down.load(Ordering::Relaxed)
    }

    /// Asked over DNS over TLS only (`tls://`): never over UDP or plain TCP.
    pub fn is_tls(&self) -> bool {
        self.settings.tls.is_some()
    }

    /// Past `max_fails` failures in a row: skipped while any other is up, and probed.
    pub fn is_marked_down(&self) -> bool {
        self.health.is_marked_down()
    }
}
