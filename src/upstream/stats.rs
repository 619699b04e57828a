//! What the tries sent to one upstream came to: the counters the metrics and
//! `ctl status` read, shared by the try loop and the tasks of the upstream's kept TCP
//! connections, and the smoothed round-trip time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    pub fn record_rtt(&self, rtt: Duration) {
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
