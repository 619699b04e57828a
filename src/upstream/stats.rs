//! What the tries sent to one upstream came to: the counters the metrics and
//! `ctl status` read, shared by the try loop and the tasks of the upstream's kept TCP
//! connections, the smoothed round-trip time, and the model of its answer times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::upstream::latency::Latency;

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
    /// The answer times of its answered tries: the early retransmission's threshold.
    pub latency: Latency,
    /// Tries doubled by a new try while unanswered: past the retransmit threshold...
    pub retransmits_late: AtomicU64,
    /// ... or past `try_timeout` (or marked down meanwhile).
    pub retransmits_timeout: AtomicU64,
    /// Early (`late`) retransmissions whose doubled try answered as well.
    pub retransmits_wasted: AtomicU64,
    /// Late tries not retransmitted early because the budget was spent.
    pub retransmits_held: AtomicU64,
}

impl UpstreamStats {
    /// One answered try's round trip, into the smoothed figure and the model.
    pub fn record_rtt(&self, rtt: Duration) {
        self.latency.record(rtt);
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
