//! What the query path counts, per route and per server, and what a scrape reads
//! besides (`Sources`, `Observed`): plain atomics, no lock and no label hashing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::Cache;
use crate::dnstap::DnstapCounts;
use crate::limit::InflightCount;
use crate::listen::accept::StreamStats;
use crate::reloads::ReloadStats;
use crate::resolver::ResolverStats;
use crate::tls::validity::Validity;
use crate::transport::Transport;
use crate::upstream::UpstreamSet;
use crate::wire::rcode;

/// What the metrics read of the configuration in force (it changes with a reload).
pub trait Observed: Send + Sync + 'static {
    /// The routes' upstream sets, in configuration order.
    fn upstream_sets(&self) -> Vec<Arc<UpstreamSet>>;
    /// Loop probes that came back.
    fn loops_detected(&self) -> u64;
    /// claim_cnames chains that broke.
    fn broken_chains(&self) -> u64;
    /// The validity of the certificate the DoT and DoH listeners serve, if any.
    fn certificate(&self) -> Option<Validity>;
}

/// Everything a scrape reads: the counters, the parts of the server that outlive a
/// configuration, and the configuration in force.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<Cache>,
    pub resolutions: Arc<ResolverStats>,
    pub inflight: Arc<InflightCount>,
    pub reloads: Arc<ReloadStats>,
    pub dnstap: Arc<DnstapCounts>,
    pub configured: Arc<dyn Observed>,
    /// Stream connections and TLS handshakes, by transport.
    pub streams: Arc<StreamStats>,
    /// The stream transports listened on (TCP, and DoT and DoH when configured).
    pub stream_kinds: Vec<Transport>,
}

/// Response codes counted one by one; anything above lands in the last slot.
const RCODES: usize = 24;
/// Latency buckets, in seconds: a cache hit is well under a millisecond, the cloud
/// resolver's slow path a few seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Per-bucket counts (prometheus-client's encoder accumulates them into the
    /// exposition's cumulative `le` buckets), with the observations above the largest
    /// bound in the +Inf bucket.
    pub(super) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        let bounded: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(bounded)));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// What is counted for one route.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// By transport (`Transport::ALL`'s order) and response code.
    pub(super) queries: [[AtomicU64; RCODES]; Transport::ALL.len()],
    pub(super) latency: Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, transport: Transport, reply: &[u8], elapsed: Duration) {
        let t = transport as usize;
        let rc = usize::from(reply.get(3).map_or(rcode::SERVFAIL as u8, |b| b & 0x0f));
        self.queries[t][rc.min(RCODES - 1)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }
}

/// Counters that belong to the server rather than to a route.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
    /// Answered before a route was chosen: refused by the ACL, malformed, no route.
    pub unrouted: Arc<RouteMetrics>,
    pub acl_refused: AtomicU64,
    /// Not queries at all (responses, runts): dropped without a word.
    pub dropped: AtomicU64,
    /// Queries answered FORMERR, NOTIMP or BADVERS.
    pub malformed: AtomicU64,
    /// Queries over `server.client_qps`.
    pub client_rate_limited: AtomicU64,
    /// Queries over `server.client_max_inflight`.
    pub client_inflight_limited: AtomicU64,
    /// Control-socket clients refused for their credentials.
    pub control_refused: AtomicU64,
}

impl Metrics {
    /// The counters of the route called `name`, kept across reloads.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(routes.entry(name.to_string()).or_default())
    }

    /// Every route's counters by name, and the unrouted ones as route `-`.
    pub(super) fn routes_with_unrouted(&self) -> Vec<(String, Arc<RouteMetrics>)> {
        let map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .iter()
            .map(|(k, r)| (k.clone(), Arc::clone(r)))
            .collect();
        v.push(("-".to_string(), Arc::clone(&self.unrouted)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_each_observation_once() {
        let hist = Histogram::default();
        hist.observe(Duration::from_micros(300));
        hist.observe(Duration::from_millis(30));
        hist.observe(Duration::from_secs(60));
        let (sum, count, buckets) = hist.snapshot();
        assert_eq!(count, 3);
        assert_eq!(
            buckets.iter().map(|b| b.1).sum::<u64>(),
            3,
            "per-bucket counts add up to the count"
        );
        assert_eq!(
            buckets.last().unwrap(),
            &(f64::INFINITY, 1),
            "60 s is above every bound"
        );
        assert!((sum - 60.0303).abs() < 1e-9);
    }
}
