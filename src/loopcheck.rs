//! Run-time forwarding-loop detection, after CoreDNS's `loop` plugin.
//!
//! A loop is a configuration that sends a query back to the zonefwd that forwarded it:
//! `system` resolving through a server that forwards the zone here, an on-prem server
//! whose conditional forwarder for a cloud zone points at zonefwd while zonefwd's route
//! for that zone points at the on-prem server, or two zonefwd instances forwarding to
//! each other. The config check catches an upstream that is our own listen address;
//! the rest can only be seen by trying.
//!
//! So, when a configuration loads and every minute after, zonefwd sends each upstream
//! of each route a probe: `zonefwd-loop-<nonce>-<n>.<zone>` HINFO, the nonce random per
//! configuration. If that name arrives at our own listener, the probe went round:
//! the upstream is taken out of rotation (`zonefwd_forwarding_loops` counts it, and
//! the log says which route and upstream), and the probe is refused so it stops there.
//! The next probe that comes back without going round puts the upstream back.
//!
//! Even before a probe has run, a loop cannot melt the machine: the looping query
//! joins its own resolution in flight (coalescing) at the second pass and waits out
//! the route's deadline, so a loop costs a handful of packets, not a storm.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::upstream::{udp_exchange_once, Upstream, UpstreamSet};
use crate::wire::{self, Query};

/// Every label of a probe name starts with this.
const PREFIX: &[u8] = b"zonefwd-loop-";
/// Probes go out when a configuration loads, then this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);

struct Target {
    route: String,
    upstream: Arc<Upstream>,
    timeout: Duration,
    /// The probe question, lowercase wire format.
    qname: Vec<u8>,
    /// Set when this probe reaches our own listener.
    came_back: AtomicBool,
}

pub struct LoopDetector {
    /// The probe label without the target number: `zonefwd-loop-<nonce>-`.
    label: Vec<u8>,
    targets: Vec<Target>,
    /// Probes that came back: loops seen, across rounds.
    pub detected: AtomicU64,
}

impl LoopDetector {
    /// `routes`: each route's upstreams and one of its zones (wire format), which the
    /// probe names are made under so the upstream takes them the way the route's
    /// queries go.
    pub fn new<'a>(routes: impl Iterator<Item = (&'a Arc<UpstreamSet>, &'a [u8])>) -> Self {
        let nonce: u64 = rand::random();
        let label = [PREFIX, format!("{nonce:016x}-").as_bytes()].concat();
        let mut targets = Vec::new();
        for (set, zone) in routes {
            for u in &set.upstreams {
                let first = [&label[..], targets.len().to_string().as_bytes()].concat();
                let mut qname = vec![first.len() as u8];
                qname.extend_from_slice(&first);
                qname.extend_from_slice(zone);
                if qname.len() > wire::MAX_NAME_LEN {
                    // A zone this long leaves no room for the probe label.
                    continue;
                }
                targets.push(Target {
                    route: set.route.clone(),
                    upstream: Arc::clone(u),
                    timeout: set.timeout(),
                    qname,
                    came_back: AtomicBool::new(false),
                });
            }
        }
        LoopDetector {
            label,
            targets,
            detected: AtomicU64::new(0),
        }
    }

    /// Is this query (lowercase name) one of our probes come back? If so, notes the
    /// loop; the caller refuses the query so it goes no further.
    pub fn is_own_probe(&self, qname_lower: &[u8], client: std::net::SocketAddr) -> bool {
        let n = self.label.len();
        // Cheap for every other query: one length test and one comparison.
        if qname_lower.first().is_none_or(|&l| usize::from(l) <= n)
            || qname_lower.get(1..=n) != Some(&self.label[..])
        {
            return false;
        }
        let len = usize::from(qname_lower[0]);
        let Some(t) = std::str::from_utf8(&qname_lower[1 + n..=len])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .and_then(|i| self.targets.get(i))
        else {
            return false;
        };
        if !t.came_back.swap(true, Ordering::Relaxed) {
            self.detected.fetch_add(1, Ordering::Relaxed);
            if !t.upstream.looped.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    route = %t.route,
                    upstream = %t.upstream.addr,
                    via = %client,
                    "forwarding loop: a probe sent to this upstream came back to zonefwd; the upstream is out of rotation until a probe comes back clean. Check that the upstream (or the server it forwards to) does not forward this zone to zonefwd"
                );
            }
        }
        true
    }

    /// One round: a probe to every upstream at once, then each upstream's loop flag
    /// set from what came back.
    async fn round(&self) {
        let probes = self.targets.iter().map(|t| async move {
            t.came_back.store(false, Ordering::Relaxed);
            let q = Query::own(t.qname.clone(), wire::TYPE_HINFO);
            // A `tls://` upstream is asked over its TLS connections: never in plain text.
            let asked = async {
                if t.upstream.is_tls() {
                    t.upstream.tcp.exchange(&q, true, None).await.map(|_| ())
                } else {
                    udp_exchange_once(t.upstream.addr, &q).await.map(|_| ())
                }
            };
            let answered = tokio::time::timeout(t.timeout, asked)
                .await
                .is_ok_and(|r| r.is_ok());
            let looped = t.came_back.load(Ordering::Relaxed);
            if !looped && answered && t.upstream.looped.swap(false, Ordering::Relaxed) {
                tracing::info!(route = %t.route, upstream = %t.upstream.addr, "loop probe came back clean; upstream back in rotation");
            }
        });
        futures_util::future::join_all(probes).await;
    }

    /// Probes now and every `PROBE_INTERVAL` while the configuration that made this
    /// detector is current (the task holds it weakly) and until shutdown.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tasks.spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(d) => d.round().await,
                    None => return,
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
            }
        });
    }
}
