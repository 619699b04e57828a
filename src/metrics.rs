//! Prometheus metrics and the health endpoints, on `[server] metrics` (off unless set).
//!
//! Counting happens on the query path, so it is plain atomics kept per route (by name,
//! so counts survive a reload) and per upstream; nothing there takes a lock or hashes
//! a label set. At scrape time a prometheus-client `Collector` reads them and encodes
//! the exposition text: zonefwd does not write that format by hand.
//!
//! `/healthz`: the process answers. `/readyz`: the listeners serve and a configuration
//! is loaded; with `ready_requires_upstreams`, also every route has an upstream up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::handler::{Handler, Transport};
use crate::upstream::Lifecycle;
use crate::wire::rcode;

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
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
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
    /// By transport (udp, tcp) and response code.
    queries: [[AtomicU64; RCODES]; 2],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, transport: Transport, reply: &[u8], elapsed: Duration) {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
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
}

impl Metrics {
    /// The counters of the route called `name`, kept across reloads.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(routes.entry(name.to_string()).or_default())
    }
}

/// Readiness as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// Listeners serve and a configuration is loaded; false again once stopping.
    pub serving: AtomicBool,
    /// `[server] ready_requires_upstreams`.
    pub requires_upstreams: AtomicBool,
}

/// Reads every counter at scrape time.
struct Collect {
    handler: Arc<ArcSwap<Handler>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collect")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    m.encode_gauge(&v)
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let handler = self.handler.load();
        let routes: Vec<(String, Arc<RouteMetrics>)> = {
            let map = self
                .metrics
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = map
                .iter()
                .map(|(k, r)| (k.clone(), Arc::clone(r)))
                .collect();
            v.push(("-".to_string(), Arc::clone(&self.metrics.unrouted)));
            v
        };

        {
            let mut fam = enc.encode_descriptor(
                "zonefwd_queries",
                "Client queries answered, by route (- before one was chosen), transport and rcode",
                None,
                MetricType::Counter,
            )?;
            for (route, m) in &routes {
                for (t, transport) in ["udp", "tcp"].iter().enumerate() {
                    for (rc, n) in m.queries[t].iter().enumerate() {
                        let n = n.load(Ordering::Relaxed);
                        if n == 0 {
                            continue;
                        }
                        let name = rcode::name(rc as u16);
                        let labels = [
                            ("route", route.as_str()),
                            ("transport", transport),
                            ("rcode", name.as_str()),
                        ];
                        fam.encode_family(&labels)?
                            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                                &n, None,
                            )?;
                    }
                }
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "zonefwd_query_duration_seconds",
                "Time from receiving a query to having its answer, by route",
                None,
                MetricType::Histogram,
            )?;
            for (route, m) in &routes {
                let (sum, count, buckets) = m.latency.snapshot();
                let labels = [("route", route.as_str())];
                fam.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        type RouteValue = fn(&crate::upstream::UpstreamSet) -> u64;
        let per_route: [(&str, &str, RouteValue); 3] = [
            (
                "zonefwd_nxdomain_fallbacks",
                "NXDOMAIN answers asked again through the route's nxdomain_fallback",
                |s| s.nxdomain_fallbacks.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_public_answers",
                "Answers with public A/AAAA records from a route with expect_private",
                |s| s.public_answers.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_cname_claims",
                "CNAME targets from other routes' answers asked through this route (claim_cnames)",
                |s| s.cname_claims.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in per_route {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for set in handler.upstream_sets() {
                let labels = [("route", set.route.as_str())];
                fam.encode_family(&labels)?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        &value(set),
                        None,
                    )?;
            }
        }
        type UpstreamValue = fn(&crate::upstream::Upstream) -> u64;
        let per_upstream: [(&str, &str, MetricType, UpstreamValue); 9] = [
            (
                "zonefwd_upstream_queries",
                "Tries sent to an upstream",
                MetricType::Counter,
                |u| u.stats.sent.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_upstream_timeouts",
                "Tries that outlived try_timeout or the deadline",
                MetricType::Counter,
                |u| u.stats.timeouts.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_upstream_errors",
                "Tries that ended in a network error or a malformed reply",
                MetricType::Counter,
                |u| u.stats.errors.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_upstream_mismatched_replies",
                "Replies dropped for a wrong ID or question (forgeries or late answers, RFC 5452)",
                MetricType::Counter,
                |u| u.stats.mismatched.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_upstream_over_budget",
                "Tries not sent because max_qps was spent",
                MetricType::Counter,
                |u| u.over_budget.load(Ordering::Relaxed),
            ),
            (
                "zonefwd_upstream_up",
                "1 while the upstream is in rotation, 0 while marked down",
                MetricType::Gauge,
                |u| u64::from(!u.is_marked_down()),
            ),
            (
                "zonefwd_upstream_in_loop",
                "1 while a loop probe sent to the upstream came back to zonefwd (out of rotation)",
                MetricType::Gauge,
                |u| u64::from(u.looped.load(Ordering::Relaxed)),
            ),
            (
                "zonefwd_upstream_consecutive_failures",
                "Failures in a row",
                MetricType::Gauge,
                |u| u64::from(u.consecutive_failures()),
            ),
            (
                "zonefwd_upstream_idle_sockets",
                "Pooled UDP sockets open between queries (upstream_udp_reuse); closed within 3 s of opening",
                MetricType::Gauge,
                |u| u.pool.idle_len() as u64,
            ),
        ];
        for (name, help, ty, value) in per_upstream {
            let mut fam = enc.encode_descriptor(name, help, None, ty)?;
            for set in handler.upstream_sets() {
                for u in &set.upstreams {
                    let addr = u.addr.to_string();
                    let labels = [("route", set.route.as_str()), ("upstream", addr.as_str())];
                    let mut m = fam.encode_family(&labels)?;
                    match ty {
                        MetricType::Counter => m
                            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                                &value(u),
                                None,
                            )?,
                        _ => m.encode_gauge(&(value(u) as i64))?,
                    }
                }
            }
        }

        let cache = handler.cache();
        let s = &cache.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "zonefwd_cache_hits",
            "Queries answered from fresh cache entries",
            load(&s.hits),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_misses",
            "Cache lookups that found nothing usable",
            load(&s.misses),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_inserts",
            "Answers stored",
            load(&s.inserts),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_evictions",
            "Entries evicted to stay within max_entries",
            load(&s.evictions),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_stale_answers",
            "Expired answers served because upstreams failed or were slow (RFC 8767)",
            load(&s.stale_served),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_failures",
            "Failures remembered for servfail_ttl",
            load(&s.failures),
        )?;
        counter(
            &mut enc,
            "zonefwd_cache_prefetches",
            "Entries refreshed before they expired",
            load(&s.prefetches),
        )?;
        gauge(
            &mut enc,
            "zonefwd_cache_entries",
            "Entries in the cache",
            cache.len() as i64,
        )?;
        let r = &handler.resolver().stats;
        counter(
            &mut enc,
            "zonefwd_resolutions",
            "Upstream resolutions started",
            load(&r.started),
        )?;
        counter(
            &mut enc,
            "zonefwd_coalesced",
            "Queries that joined an identical one in flight",
            load(&r.coalesced),
        )?;
        counter(
            &mut enc,
            "zonefwd_acl_refused",
            "Queries refused because the client is outside acl.allow",
            load(&self.metrics.acl_refused),
        )?;
        counter(
            &mut enc,
            "zonefwd_dropped",
            "Messages dropped unanswered: responses (QR=1) and runts",
            load(&self.metrics.dropped),
        )?;
        counter(
            &mut enc,
            "zonefwd_malformed",
            "Queries answered FORMERR, NOTIMP or BADVERS",
            load(&self.metrics.malformed),
        )?;
        counter(
            &mut enc,
            "zonefwd_client_rate_limited",
            "Queries dropped or refused because their client was over server.client_qps",
            load(&self.metrics.client_rate_limited),
        )?;
        counter(
            &mut enc,
            "zonefwd_client_inflight_limited",
            "Queries dropped or refused because their client had server.client_max_inflight waiting",
            load(&self.metrics.client_inflight_limited),
        )?;
        counter(
            &mut enc,
            "zonefwd_forwarding_loops",
            "Loop probes that came back to zonefwd through an upstream",
            handler.loops_detected(),
        )?;
        counter(
            &mut enc,
            "zonefwd_cname_chains_broken",
            "claim_cnames chains answered SERVFAIL for a loop, the hop limit or the time limit",
            handler.broken_chains(),
        )?;
        gauge(
            &mut enc,
            "zonefwd_inflight",
            "Client queries being forwarded now",
            handler.inflight() as i64,
        )?;
        Ok(())
    }
}

/// The registry `/metrics` encodes.
pub fn registry(handler: Arc<ArcSwap<Handler>>, metrics: Arc<Metrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect { handler, metrics }));
    registry
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Answers one HTTP request, given its method and path.
fn route(
    method: &hyper::Method,
    path: &str,
    registry: &Registry,
    health: &Health,
    handler: &ArcSwap<Handler>,
) -> Response<Full<Bytes>> {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if !health.serving.load(Ordering::Relaxed) {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: listeners not serving\n".into(),
                );
            }
            if health.requires_upstreams.load(Ordering::Relaxed) {
                let mut down = String::new();
                for set in handler.load().upstream_sets() {
                    if set.upstreams.iter().all(|u| u.is_marked_down()) {
                        let _ = write!(down, " {}", set.route);
                    }
                }
                if !down.is_empty() {
                    return respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: every upstream is down on route(s):{down}\n"),
                    );
                }
            }
            respond(StatusCode::OK, "text/plain", "ready\n".into())
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the server stops.
pub async fn serve_http(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    handler: Arc<ArcSwap<Handler>>,
    life: Lifecycle,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = life.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (registry, health, handler) = (
            Arc::clone(&registry),
            Arc::clone(&health),
            Arc::clone(&handler),
        );
        let shutdown = life.shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = route(req.method(), req.uri().path(), &registry, &health, &handler);
                async move { Ok::<_, Infallible>(resp) }
            });
            // A client that never finishes its request headers is cut off.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::resolver::Resolver;

    fn handler() -> Arc<ArcSwap<Handler>> {
        let config = crate::config::Config::parse(
            "[server]\nloop_detection = false\n[[route]]\nname = \"r\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n",
            "t.toml",
            &crate::config::LoadEnv::default(),
        )
        .unwrap();
        let life = Lifecycle::default();
        let resolver = Arc::new(Resolver::new(Arc::new(Cache::new(10)), life.clone()));
        Arc::new(ArcSwap::from_pointee(Handler::new(
            &config,
            life,
            resolver,
            Arc::default(),
        )))
    }

    #[test]
    fn readiness_follows_the_listeners() {
        let h = handler();
        let registry = registry(Arc::clone(&h), Arc::default());
        let health = Health::default();
        let get = |path| route(&hyper::Method::GET, path, &registry, &health, &h).status();
        assert_eq!(
            get("/readyz"),
            StatusCode::SERVICE_UNAVAILABLE,
            "not serving yet"
        );
        assert_eq!(get("/healthz"), StatusCode::OK, "alive all the same");
        health.serving.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz"), StatusCode::OK);
        health.serving.store(false, Ordering::Relaxed);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE, "stopping");
        assert_eq!(
            route(&hyper::Method::POST, "/metrics", &registry, &health, &h).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

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
