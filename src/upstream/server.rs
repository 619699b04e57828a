//! One upstream server: its address, what its tries came to, its `max_qps` budget, its
//! health marks, its pool of UDP sockets and its kept TCP connections. An `Upstream` outlives a reload while its
//! route, address and settings stay the same (`UpstreamSet::new`), so its health, loop
//! mark and counters do too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Route;
use crate::life::Clock;
use crate::limit::{Rate, TokenBucket};
use crate::upstream::pool::SocketPool;
use crate::upstream::tcp::TcpConnections;

/// What happened to the tries sent to one upstream, for the metrics.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub sent: AtomicU64,
    /// Tries that outlived `try_timeout`, or were still unanswered at the deadline.
    pub timeouts: AtomicU64,
    /// Network errors and malformed replies.
    pub errors: AtomicU64,
    /// Replies from the upstream's address and port that matched no query (wrong ID
    /// or question): forgeries, or very late answers. Dropped; the wait goes on.
    pub mismatched: AtomicU64,
    /// Tries not sent because the budget was spent.
    pub over_budget: AtomicU64,
    /// Smoothed round-trip time of answered tries, in microseconds (0: none yet):
    /// the estimator of RFC 6298 section 2, gain 1/8.
    pub srtt_us: AtomicU64,
}

impl UpstreamStats {
    /// Folds one answered try's round trip into the smoothed figure.
    pub fn record_rtt(&self, rtt: std::time::Duration) {
        let sample = (rtt.as_micros() as u64).max(1);
        let _ = self
            .srtt_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |srtt| {
                Some(if srtt == 0 {
                    sample
                } else {
                    srtt - srtt / 8 + sample / 8
                })
            });
    }
}

/// The settings an upstream is built with; one that differs after a reload makes it
/// a new upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamSettings {
    pub addr: SocketAddr,
    pub max_fails: u32,
    pub max_qps: Option<u32>,
    /// `server.upstream_udp_reuse`.
    pub reuse: u32,
}

impl UpstreamSettings {
    pub fn of(route: &Route, addr: SocketAddr, reuse: u32) -> Self {
        UpstreamSettings {
            addr,
            max_fails: route.max_fails,
            max_qps: route.max_qps,
            reuse,
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
    /// Shared with the tasks of its TCP connections, which count mismatches too.
    pub stats: Arc<UpstreamStats>,
    pub(crate) fails: AtomicU32,
    /// When it last answered, in nanoseconds since `created`: a try sent before that
    /// whose answer never came is not a failure in a row (`health`).
    answered: AtomicU64,
    created: tokio::time::Instant,
    /// Woken when `max_fails` marks the upstream down, for the slow tries waiting on it
    /// to fail over then (`forward::DownWatch`).
    pub(crate) marked_down: Notify,
    pub(crate) probing: AtomicBool,
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
    pub pool: SocketPool,
    pub tcp: TcpConnections,
}

impl Upstream {
    /// `patience`: the route's `try_timeout`, after which a TCP connection with
    /// queries waiting and nothing read takes no new ones.
    pub fn new(settings: UpstreamSettings, now: Instant, patience: Duration) -> Self {
        let stats = Arc::new(UpstreamStats::default());
        Upstream {
            pool: SocketPool::new(settings.reuse),
            tcp: TcpConnections::new(settings.addr, Arc::clone(&stats), patience),
            addr: settings.addr,
            settings,
            stats,
            fails: AtomicU32::new(0),
            answered: AtomicU64::new(0),
            created: tokio::time::Instant::now(),
            marked_down: Notify::new(),
            probing: AtomicBool::new(false),
            looped: AtomicBool::new(false),
            manual_down: AtomicBool::new(false),
            budget: settings
                .max_qps
                .map(|q| (Rate::new(q, q, now), TokenBucket::new())),
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

    /// It answered (anything) just now.
    pub(crate) fn note_answer(&self) {
        let now = self.since_created(tokio::time::Instant::now());
        self.answered.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether it answered some try sent after `sent`.
    pub(crate) fn answered_after(&self, sent: tokio::time::Instant) -> bool {
        self.answered.load(Ordering::Relaxed) > self.since_created(sent)
    }

    fn since_created(&self, t: tokio::time::Instant) -> u64 {
        let d = t.saturating_duration_since(self.created);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// What `ctl status` says of it, in order of what explains it best.
    pub fn state(&self) -> UpstreamState {
        if self.manual_down.load(Ordering::Relaxed) {
            UpstreamState::DownByHand
        } else if self.looped.load(Ordering::Relaxed) {
            UpstreamState::InLoop
        } else if self.is_marked_down() {
            UpstreamState::Down
        } else if self.stats.sent.load(Ordering::Relaxed) == 0
            && self.answered.load(Ordering::Relaxed) == 0
            && self.consecutive_failures() == 0
        {
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

    /// What `order()` tries first: up, and not in a forwarding loop.
    pub fn in_rotation(&self) -> bool {
        self.is_up() && !self.looped.load(Ordering::Relaxed)
    }

    /// Past `max_fails` failures in a row: skipped while any other is up, and probed.
    pub fn is_marked_down(&self) -> bool {
        let max_fails = self.settings.max_fails;
        max_fails > 0 && self.consecutive_failures() >= max_fails
    }
}
