//! The probe that brings a down upstream back into rotation, over the route's
//! transport (a TCP route's upstream is back when TCP to it works), and what a try's
//! end means for its upstream's health: `try_answered`, `try_failed`.
//!
//! The probe holds its upstream by a `Weak`: when a reload drops the upstream from the
//! configuration, the probe ends at its next round instead of probing (and keeping the
//! upstream's sockets open) until the server stops.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::UpstreamTransport;
use crate::life::Lifecycle;
use crate::upstream::upstream::Upstream;
use crate::wire::{self, Query};

/// What a route's probe needs to know: how often, how long each, over what.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub route: String,
    pub interval: Duration,
    pub per_probe: Duration,
    pub transport: UpstreamTransport,
    pub life: Lifecycle,
}

/// Probes a down upstream with `. NS` every `plan.interval` until it answers (any
/// reply counts: the server is there), the server stops, or the upstream leaves the
/// configuration. One probe per upstream at a time.
pub fn probe_until_back(u: &Arc<Upstream>, plan: ProbePlan) {
    if plan.life.shutdown.is_cancelled() || !u.health.start_probing() {
        return;
    }
    tracing::warn!(route = %plan.route, upstream = %u.addr, failures = u.consecutive_failures(), "upstream marked down; probing it every {}", humantime::format_duration(plan.interval));
    let upstream = Arc::downgrade(u);
    let tasks = plan.life.tasks.clone();
    tasks.spawn(async move {
        let probe = Query::own(vec![0], wire::TYPE_NS);
        loop {
            tokio::select! {
                _ = plan.life.shutdown.cancelled() => break,
                _ = tokio::time::sleep(plan.interval) => {}
            }
            let Some(u) = still_down(&upstream) else {
                break;
            };
            let answered = tokio::time::timeout(plan.per_probe, async {
                match plan.transport {
                    // Over the transport queries take: TLS for a `tls://` upstream.
                    _ if u.is_tls() => u.tcp.exchange(&probe, true, None).await,
                    UpstreamTransport::Udp => u.udp.exchange(&probe, true, None, None).await,
                    UpstreamTransport::Tcp => u.tcp.exchange(&probe, true, None).await,
                }
            })
            .await;
            if matches!(answered, Ok(Ok(_))) {
                u.health.probe_answered();
                tracing::info!(route = %plan.route, upstream = %u.addr, "health probe answered; upstream back in rotation");
            }
        }
        if let Some(u) = upstream.upgrade() {
            u.health.stop_probing();
        }
    });
}

/// A try to `u` was answered (anything): its failures in a row end.
pub fn try_answered(route: &str, u: &Upstream) {
    if u.health.answered() {
        tracing::info!(route = %route, upstream = %u.addr, "upstream answers again; back in rotation");
    }
}

/// A try to `u`, sent at `sent`, failed: counted towards `max_fails`, and the upstream
/// probed (`plan`) once that marks it down.
pub fn try_failed(u: &Arc<Upstream>, sent: Instant, plan: impl FnOnce() -> ProbePlan) {
    if u.health.failed(sent) {
        probe_until_back(u, plan());
    }
}

/// The upstream, while it is still configured and still down.
fn still_down(upstream: &Weak<Upstream>) -> Option<Arc<Upstream>> {
    upstream.upgrade().filter(|u| u.is_marked_down())
}
