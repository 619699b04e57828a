//! How long one upstream takes to answer: a histogram of its answered tries' round
//! trips, and the retransmit threshold read from it (a high quantile, above a floor).
//!
//! A forwarder's upstream is a resolver: names in its cache come back in a
//! millisecond, names it must resolve take tens or hundreds. A mean and a variance
//! (RFC 6298's estimator, CoreDNS's 2x average of 2018) put the timer inside that
//! second mode and fire on every uncached name; a quantile of the whole mix puts it
//! past the slow names, so only a try slower than nearly all answers this upstream
//! gave is retransmitted early.
//!
//! Only answered tries are samples (RFC 6298 section 3, Karn): a try that timed out
//! says nothing about how long an answer takes. Each try has its own ID and port, so
//! an answer is never ambiguous between a try and its retransmission.
//!
//! Cheap on the hot path: recording is two relaxed atomic additions to counters of
//! this upstream (no lock shared by all queries); every `REFRESH` samples the one
//! recorder that completes the round re-reads the histogram (`BUCKETS` loads), sets
//! the threshold, and halves the counts once there are `WINDOW` of them, so the model
//! follows an upstream that changes and old samples fade.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Round trips are bucketed in quarter octaves of microseconds (each bucket at most
/// 19% wider than the one before), from 1 µs to 2^27 µs (134 s, past any timeout).
const BUCKETS: usize = 108;
const MAX_US: u64 = (1 << 27) - 1;

/// The threshold is re-read from the histogram every this many samples.
const REFRESH: u32 = 32;

/// Fewer samples than this: no model yet, and the route's `try_timeout` alone holds.
/// Few on purpose: every query lost before the model speaks pays `try_timeout`, and
/// at 30% loss an upstream answers one try in two (10 answers: about 10 queries lost
/// on the way, under 1% of a 2,000-query stream). The threshold of 10 samples is their
/// slowest; it is re-read at 32 and every 32 after, and the budget bounds what a
/// young model wastes.
pub const MIN_SAMPLES: u32 = 10;

/// Past this many samples the counts are halved: a window of the last few thousand.
const WINDOW: u32 = 2048;

/// The quantile of answer times that a try must outlast to be retransmitted early,
/// in thousandths.
const QUANTILE_PERMILLE: u64 = 990;

/// Never earlier than this: below it, a scheduling hiccup on a loaded host or a
/// queue in a switch would pass for a loss. Unbound's floor is 50 ms
/// (`infra-cache-min-rtt`); a forwarder's upstream is usually nearer than an
/// authoritative server, and the quantile keeps the timer past its slow answers.
pub const FLOOR: Duration = Duration::from_millis(10);

/// One upstream's answer times.
#[derive(Debug)]
pub struct Latency {
    counts: [AtomicU32; BUCKETS],
    /// Samples recorded since the model was made; every `REFRESH`th refreshes it.
    recorded: AtomicU32,
    /// The retransmit threshold in microseconds; 0 while there are too few samples.
    threshold_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            recorded: AtomicU32::new(0),
            threshold_us: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// One answered try took `rtt`.
    pub fn record(&self, rtt: Duration) {
        let us = (rtt.as_micros() as u64).clamp(1, MAX_US);
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        let n = self
            .recorded
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        // Each of the first samples refreshes, so the model starts the moment it has
        // `MIN_SAMPLES` (and this rule alone decides when), then every `REFRESH`.
        if n <= MIN_SAMPLES || n.is_multiple_of(REFRESH) {
            self.refresh();
        }
    }

    /// How long a try to this upstream may go unanswered before it is retransmitted:
    /// the `QUANTILE_PERMILLE` quantile of its answer times (the top of its bucket),
    /// at least `FLOOR` and twice its fastest answer. `None` with too few samples.
    pub fn threshold(&self) -> Option<Duration> {
        match self.threshold_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Re-reads the histogram. Two recorders may refresh at once; both read nearly
    /// the same counts, and the last store wins.
    fn refresh(&self) {
        let counts: [u32; BUCKETS] =
            std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed));
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        self.threshold_us
            .store(threshold_us(&counts, total), Ordering::Relaxed);
        if total >= u64::from(WINDOW) {
            for c in &self.counts {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v / 2));
            }
        }
    }
}

/// The threshold the counts give, in microseconds; 0 with fewer than `MIN_SAMPLES`.
fn threshold_us(counts: &[u32; BUCKETS], total: u64) -> u64 {
    if total < u64::from(MIN_SAMPLES) {
        return 0;
    }
    let wanted = (total * QUANTILE_PERMILLE).div_ceil(1000);
    let mut seen = 0;
    let mut quantile = MAX_US;
    for (i, &c) in counts.iter().enumerate() {
        seen += u64::from(c);
        if seen >= wanted {
            quantile = upper(i);
            break;
        }
    }
    let fastest = counts.iter().position(|&c| c > 0).map_or(0, upper);
    quantile.max(2 * fastest).max(FLOOR.as_micros() as u64)
}

/// The bucket of a round trip of `us` microseconds (1 to `MAX_US`): below 4 one per
/// microsecond, then four per octave.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize;
    4 * (octave - 1) + ((us >> (octave - 2)) & 3) as usize
}

/// The smallest round trip in bucket `i`, in microseconds.
fn lower(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let (octave, quarter) = (i / 4 + 1, (i % 4) as u64);
    (4 + quarter) << (octave - 2)
}

/// The smallest round trip past bucket `i`.
fn upper(i: usize) -> u64 {
    lower(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn model(samples: impl IntoIterator<Item = Duration>) -> Latency {
        let l = Latency::default();
        for s in samples {
            l.record(s);
        }
        l
    }

    #[test]
    fn buckets_are_ordered_and_each_round_trip_falls_in_its_own() {
        for us in (1..5000).chain([MAX_US / 3, MAX_US]) {
            let b = bucket(us);
            assert!(b < BUCKETS, "{us}");
            assert!(lower(b) <= us && us < upper(b), "{us} in bucket {b}");
            assert!(
                upper(b) <= lower(b) + lower(b) / 4 + 1,
                "{us}: bucket too wide"
            );
        }
    }

    #[test]
    fn no_threshold_until_there_are_enough_samples() {
        const { assert!(MIN_SAMPLES > 1) };
        let l = model((0..MIN_SAMPLES - 1).map(|_| ms(1)));
        assert_eq!(l.threshold(), None);
        l.record(ms(1));
        assert!(l.threshold().is_some());
    }

    #[test]
    fn the_threshold_never_goes_below_the_floor_nor_twice_the_fastest_answer() {
        // (answer times, least threshold)
        let cases: [(Vec<Duration>, Duration); 2] = [
            // A loopback upstream: well under the floor.
            (vec![Duration::from_micros(300); 64], FLOOR),
            // A steady 40 ms (a VPN): the fastest answer, doubled.
            (vec![ms(40); 64], ms(80)),
        ];
        for (samples, least) in cases {
            let t = model(samples.clone()).threshold().unwrap();
            assert!(t >= least, "{t:?} < {least:?} for {:?}", samples[0]);
            assert!(t <= least + least / 4, "{t:?} far above {least:?}");
        }
    }

    #[test]
    fn a_slow_tail_of_uncached_names_stays_under_the_threshold() {
        // A resolver: 90% of names from its cache in 1 ms, 10% resolved in 300-500 ms.
        let samples = (0..1000).map(|i| {
            if i % 10 == 0 {
                ms(300 + (i % 200) as u64)
            } else {
                ms(1)
            }
        });
        let t = model(samples).threshold().unwrap();
        assert!(t > ms(499), "{t:?}: the slow names would be retransmitted");
        assert!(t < ms(700), "{t:?}");
    }

    #[test]
    fn the_model_follows_an_upstream_that_gets_slower() {
        let l = model((0..WINDOW).map(|_| ms(1)));
        assert!(l.threshold().unwrap() < ms(20));
        for _ in 0..WINDOW {
            l.record(ms(100));
        }
        assert!(l.threshold().unwrap() >= ms(100), "{:?}", l.threshold());
    }
}
