//! Limits: the token bucket behind client rates (`client_qps`) and upstream budgets
//! (`max_qps`), the cap on queries in flight (`max_inflight`), and the `Throttle` that
//! keeps a tripped limit's warning to one log line per interval.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rate and a burst, shared by every bucket that follows it (a route's upstreams, or
/// every client), so a bucket itself is one atomic.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Time one token takes to come back, in nanoseconds.
    interval_ns: u64,
    /// How far ahead of now a bucket's schedule may run: `burst` tokens' worth.
    tolerance_ns: u64,
    /// Where bucket times count from; earlier instants count as this one.
    epoch: Instant,
}

impl Rate {
    /// `per_second` tokens a second, at most `burst` at once after a quiet spell.
    /// `per_second` must not be 0 (callers treat 0 as "no limit" and keep no bucket).
    pub fn new(per_second: u32, burst: u32, epoch: Instant) -> Rate {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        Rate {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst),
            epoch,
        }
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A token bucket kept as the time its schedule is booked up to (the generic cell rate
/// algorithm, which is the token bucket stated in time): a take books one interval
/// after `max(booked, now)` and is allowed while that stays within the tolerance. One
/// compare-and-swap per take, no lock, and 8 bytes a bucket.
#[derive(Debug, Default)]
pub struct TokenBucket {
    booked_ns: AtomicU64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new() -> TokenBucket {
        TokenBucket::default()
    }

    /// Takes one token if there is one.
    pub fn try_take(&self, rate: &Rate, now: Instant) -> bool {
        let now = rate.ns(now);
        let mut booked = self.booked_ns.load(Ordering::Relaxed);
        loop {
            let next = booked.max(now) + rate.interval_ns;
            if next - now > rate.tolerance_ns {
                return false;
            }
            match self.booked_ns.compare_exchange_weak(
                booked,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => booked = actual,
            }
        }
    }

    /// Every token is back: the bucket is as good as a new one.
    pub fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        self.booked_ns.load(Ordering::Relaxed) <= rate.ns(now)
    }
}

/// Client queries being forwarded, counted once for the whole server: a reload changes
/// the cap, not the count, so while old and new configurations overlap the queries of
/// both count against it.
#[derive(Debug, Default)]
pub struct InflightCount {
    now: AtomicUsize,
}

/// One query's place in the count, given back when dropped.
#[derive(Debug)]
pub struct InflightPermit {
    count: Arc<InflightCount>,
}

impl InflightCount {
    /// A place, if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<InflightPermit> {
        self.now
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(InflightPermit {
            count: Arc::clone(self),
        })
    }

    /// Queries holding a place now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.count.now.fetch_sub(1, Ordering::AcqRel);
    }
}

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

/// How often a tripped limit may log.
pub const LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// (tokens a second, burst, take at ms, allowed)
    type Step = (u64, bool);

    fn run(per_second: u32, burst: u32, steps: &[Step]) {
        let t0 = Instant::now();
        let rate = Rate::new(per_second, burst, t0);
        let bucket = TokenBucket::new();
        for (i, &(at_ms, allowed)) in steps.iter().enumerate() {
            let now = t0 + Duration::from_millis(at_ms);
            assert_eq!(
                bucket.try_take(&rate, now),
                allowed,
                "step {i}: take at {at_ms} ms ({per_second}/s, burst {burst})"
            );
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        // 10 a second, burst 5: five at once, then one per 100 ms.
        let mut steps = vec![(0, true); 5];
        steps.extend([
            (0, false),
            (100, true),
            (100, false),
            (150, false),
            (200, true),
        ]);
        run(10, 5, &steps);
    }

    #[test]
    fn a_quiet_spell_refills_no_more_than_the_burst() {
        let mut steps = vec![(0, true); 3];
        steps.push((0, false));
        steps.extend(vec![(60_000, true); 3]);
        steps.push((60_000, false));
        run(1, 3, &steps);
    }

    #[test]
    fn one_seconds_worth_is_the_upstream_budget() {
        // max_qps = 4 with burst = rate: four in the first instant, one per 250 ms after.
        let mut steps = vec![(0, true); 4];
        steps.extend([
            (0, false),
            (249, false),
            (250, true),
            (500, true),
            (500, false),
        ]);
        run(4, 4, &steps);
    }

    #[test]
    fn full_means_every_token_is_back() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 2, t0);
        let bucket = TokenBucket::new();
        assert!(bucket.is_full(&rate, t0));
        assert!(bucket.try_take(&rate, t0));
        assert!(!bucket.is_full(&rate, t0 + Duration::from_millis(99)));
        assert!(bucket.is_full(&rate, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn the_inflight_count_caps_and_gives_back() {
        let count = Arc::new(InflightCount::default());
        let a = count.try_acquire(2).unwrap();
        let _b = count.try_acquire(2).unwrap();
        assert!(count.try_acquire(2).is_none());
        // A lower cap (a reload) counts the places already taken.
        assert!(count.try_acquire(1).is_none());
        assert_eq!(count.current(), 2);
        drop(a);
        assert_eq!(count.current(), 1);
        assert!(count.try_acquire(2).is_some());
    }

    #[test]
    fn instants_before_the_epoch_count_as_the_epoch() {
        let t0 = Instant::now();
        let rate = Rate::new(1, 1, t0 + Duration::from_secs(5));
        let bucket = TokenBucket::new();
        assert!(bucket.try_take(&rate, t0));
        assert!(!bucket.try_take(&rate, t0));
    }
}
