//! Upstream health: consecutive failures, the mark that takes an upstream out of
//! rotation at `max_fails`, and the probe that brings it back (over the route's
//! transport: a TCP route's upstream is back when TCP to it works).
//!
//! The probe holds its upstream by a `Weak`: when a reload drops the upstream from the
//! configuration, the probe ends at its next round instead of probing (and keeping the
//! upstream's socket pool open) until the server stops.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::UpstreamTransport;
use crate::job::STALE_ANSWER_AFTER;
use crate::upstream::{exchange, Upstream, UpstreamSet};
use crate::wire::{self, Query};

impl UpstreamSet {
    pub(crate) fn success(&self, idx: usize) {
        let u = &self.upstreams[idx];
        u.note_answer();
        let before = u.fails.swap(0, Ordering::Relaxed);
        if self.max_fails > 0 && before >= self.max_fails {
            tracing::info!(route = %self.route, upstream = %u.addr, "upstream answers again; back in rotation");
        }
    }

    /// How long a client with a stale answer at hand waits for a fresh one: RFC 8767
    /// section 5's client response timer, 1.8 s; nothing while every upstream of the
    /// route is down, where the wait would be spent for certain (the section's failure
    /// recheck: a known failure is answered from stale data at once). The resolution
    /// goes on either way and refreshes the cache when an upstream answers.
    ///
    /// A downstream resolver that forwards here (BIND, Unbound) gives up on a silent
    /// forwarder well before 1.8 s, so without this its clients got SERVFAIL for
    /// names zonefwd held stale answers for.
    pub fn stale_answer_after(&self) -> Duration {
        if self.all_down() {
            Duration::ZERO
        } else {
            STALE_ANSWER_AFTER
        }
    }

    /// A try sent at `sent` failed. It counts towards `max_fails` only when nothing
    /// sent after it has been answered since: the failures must be in a row. Without
    /// that, under a steady stream, the tries lost while an upstream was away keep
    /// timing out after it is back, marking it down again between its answers.
    pub(crate) fn failure(&self, idx: usize, sent: Instant) {
        let u = &self.upstreams[idx];
        if u.answered_after(sent) {
            return;
        }
        let now = u.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_fails > 0 && now == self.max_fails {
            u.marked_down.notify_waiters();
            tracing::warn!(route = %self.route, upstream = %u.addr, failures = now, "upstream marked down; probing it every {}", humantime::format_duration(self.health_check));
            self.spawn_probe(idx);
        }
    }

    /// Probes a down upstream with `. NS` until it answers (any reply counts: the
    /// server is there), the server stops, or the upstream leaves the configuration.
    fn spawn_probe(&self, idx: usize) {
        let u = &self.upstreams[idx];
        if self.life.shutdown.is_cancelled() || u.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let upstream = Arc::downgrade(u);
        let (interval, per_probe, max_fails) =
            (self.health_check, self.try_timeout, self.max_fails);
        let shutdown = self.life.shutdown.clone();
        let route = self.route.clone();
        let transport = self.transport;
        self.life.tasks.spawn(async move {
            let probe = probe_query();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                let Some(u) = still_down(&upstream, max_fails) else {
                    break;
                };
                let answered = tokio::time::timeout(per_probe, async {
                    match transport {
                        UpstreamTransport::Udp => {
                            exchange::udp(u.addr, &probe, true, &u.stats.mismatched).await
                        }
                        UpstreamTransport::Tcp => u.tcp.exchange(&probe, true).await,
                    }
                })
                .await;
                if matches!(answered, Ok(Ok(_))) {
                    u.note_answer();
                    u.fails.store(0, Ordering::Relaxed);
                    tracing::info!(route = %route, upstream = %u.addr, "health probe answered; upstream back in rotation");
                }
            }
            if let Some(u) = upstream.upgrade() {
                u.probing.store(false, Ordering::Release);
            }
        });
    }
}

/// The upstream, while it is still configured and still down.
fn still_down(upstream: &Weak<Upstream>, max_fails: u32) -> Option<Arc<Upstream>> {
    upstream
        .upgrade()
        .filter(|u| u.consecutive_failures() >= max_fails)
}

fn probe_query() -> Query {
    Query::own(vec![0], wire::TYPE_NS)
}
