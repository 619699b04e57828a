//! Rate-limited warnings: a limit that trips under a flood is logged, not once per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a warning through at most once per interval, so a flood that trips a limit
/// says so in the log without writing a line per packet.
#[derive(Debug)]
pub struct Throttle {
    start: Instant,
    interval_ms: u64,
    next_ms: AtomicU64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle {
            start: Instant::now(),
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
        }
    }

    pub fn ready(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

pub const LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(10);
