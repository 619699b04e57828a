//! What every part of a running server shares: the `Lifecycle` (background work that
//! must stop with the server) and the `Clock` that TTLs and budgets read, injected so
//! tests drive time instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the parts of a running server share: background work that must stop with it,
/// and the clock (injected so tests can drive TTLs and budgets).
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub clock: Arc<dyn Clock>,
    /// Each serving loop's last round, for the systemd watchdog.
    pub heartbeats: Arc<crate::notify::Heartbeats>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::with_clock(Arc::new(SystemClock))
    }
}

impl Lifecycle {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Lifecycle {
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            clock,
            heartbeats: Arc::default(),
        }
    }
}

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Instant;

    /// The time now, given `read`, an `Instant::now()` taken a moment ago: the system
    /// clock answers `read` itself, one read fewer per query (a read is about 30 ns
    /// in a VM); a clock that tests drive ignores it.
    fn now_given(&self, read: Instant) -> Instant {
        let _ = read;
        self.now()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_given(&self, read: Instant) -> Instant {
        read
    }
}

/// A clock that moves only when told to: for tests of TTL logic.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_ms: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}
