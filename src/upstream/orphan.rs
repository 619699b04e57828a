//! A try retransmitted early whose query ended on another try's answer: watched until
//! its own `try_timeout`, so what became of it still reaches its upstream.
//!
//! Dropping it would lose two things. Its answer, had it come, makes the early
//! retransmission wasted (`retransmit`): without it, a slow upstream doubled to a fast
//! one would never spend its budget. Its silence is a failure: without it, an upstream
//! that went dark behind a model of fast answers would have every query retransmitted
//! to the next one, never reach `max_fails`, and stay in rotation. The watch holds the
//! try's socket (set aside by the exchange, `udp::Unanswered`) and nothing of the query.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use crate::upstream::probe::{self, ProbePlan};
use crate::upstream::udp::Unanswered;
use crate::upstream::upstream::Upstream;

/// A doubled try left unanswered when its query ended.
pub struct Orphan {
    pub upstream: Arc<Upstream>,
    pub unanswered: Unanswered,
    pub sent: Instant,
    /// The try's `try_timeout` ends here.
    pub until: Instant,
}

impl Orphan {
    /// Watches it in a task of its own (ended at shutdown), or settles it now when its
    /// time is up already.
    pub fn watch(self, plan: ProbePlan) {
        if Instant::now() >= self.until {
            self.timed_out(plan);
            return;
        }
        let tasks = plan.life.tasks.clone();
        tasks.spawn(async move {
            let answered = tokio::select! {
                _ = plan.life.shutdown.cancelled() => return,
                answered = tokio::time::timeout_at(self.until, self.unanswered.answered()) => answered,
            };
            match answered {
                Ok(Ok(())) => self.answered(&plan.route),
                Ok(Err(e)) => {
                    tracing::debug!(route = %plan.route, upstream = %self.upstream.addr, error = %e, "retransmitted try failed after its query ended");
                    self.upstream.stats.errors.fetch_add(1, Ordering::Relaxed);
                    probe::try_failed(&self.upstream, self.sent, || plan);
                }
                Err(_elapsed) => self.timed_out(plan),
            }
        });
    }

    /// It answered after all: the retransmission was wasted, and the answer time is a
    /// sample.
    fn answered(&self, route: &str) {
        let stats = &self.upstream.stats;
        stats.retransmits_wasted.fetch_add(1, Ordering::Relaxed);
        stats.record_rtt(self.sent.elapsed());
        probe::try_answered(route, &self.upstream);
    }

    fn timed_out(&self, plan: ProbePlan) {
        self.upstream.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        probe::try_failed(&self.upstream, self.sent, || plan);
    }
}
