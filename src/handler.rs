//! The per-configuration state a client query meets: ACL, limits, routes and their
//! upstream sets, claims and the loop detector, built from one `Config`, and the
//! `ServerState` that outlives any one configuration.
//!
//! A reload builds a new `Handler` and swaps it in whole (`server`), so a query is
//! handled entirely by the old configuration or entirely by the new one. What must
//! not restart with a reload (the cache and in-flight map, the metrics, the client
//! table, the in-flight count, and every upstream whose settings did not change) is
//! handed over, not rebuilt. `admit` holds what `prepare` does with a query.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::acl::Acl;
use crate::cache::Cache;
use crate::claims::Claims;
use crate::clients::{ClientLimits, ClientTable};
use crate::config::{AnyQueries, CachePolicy, Config};
use crate::dnstap::{DnstapOutput, Tap};
use crate::life::{Clock, Lifecycle};
use crate::limit::{InflightCount, Throttle, LIMIT_WARN_INTERVAL};
use crate::local::LocalZone;
use crate::loopcheck::LoopDetector;
use crate::metrics::{Metrics, RouteMetrics};
use crate::readiness::Readiness;
use crate::reloads::ReloadStats;
use crate::resolver::Resolver;
use crate::router::Router;
use crate::upstream::{Previous, UpstreamSet};

/// What outlives any one configuration.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub life: Lifecycle,
    /// The cache and the in-flight map.
    pub resolver: Arc<Resolver>,
    pub metrics: Arc<Metrics>,
    pub clients: Arc<ClientTable>,
    /// Client queries being forwarded, under every configuration still answering.
    pub inflight: Arc<InflightCount>,
    /// Serving, draining: what `/readyz` and `ctl status` report with the routes.
    pub readiness: Arc<Readiness>,
    /// Reloads applied and refused, and the restart-only settings pending.
    pub reloads: Arc<ReloadStats>,
    /// The dnstap writer, kept while `[dnstap] socket` stays the same.
    pub dnstap: Arc<DnstapOutput>,
    /// Stream connections (TCP, DoT, DoH) and TLS handshakes, by listener kind.
    pub streams: Arc<crate::listen::accept::StreamStats>,
}

impl ServerState {
    pub fn new(config: &Config, life: Lifecycle) -> Self {
        ServerState {
            resolver: Arc::new(Resolver::new(
                Arc::new(Cache::new(config.cache_max_entries)),
                life.clone(),
            )),
            life,
            metrics: Arc::default(),
            clients: Arc::default(),
            inflight: Arc::default(),
            readiness: Arc::default(),
            reloads: Arc::default(),
            dnstap: Arc::default(),
            streams: Arc::default(),
        }
    }
}

/// One route as the query path uses it.
pub(crate) struct RouteState {
    pub(crate) set: Arc<UpstreamSet>,
    pub(crate) cache_policy: CachePolicy,
    pub(crate) metrics: Arc<RouteMetrics>,
}

pub struct Handler {
    pub(crate) query_log: bool,
    /// `[dnstap]`: client queries and responses go here.
    pub(crate) dnstap: Option<Arc<Tap>>,
    pub(crate) any_queries: AnyQueries,
    pub(crate) overload_warning: Throttle,
    pub(crate) limit_warning: Throttle,
    pub(crate) clients: ClientLimits,
    pub(crate) loops: Option<Arc<LoopDetector>>,
    pub(crate) acl: Acl,
    pub(crate) router: Arc<Router>,
    pub(crate) routes: Vec<RouteState>,
    pub(crate) claims: Option<Arc<Claims>>,
    pub(crate) inflight: Arc<InflightCount>,
    pub(crate) max_inflight: usize,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) life: Lifecycle,
    /// `identity`: answered as NSID and to CHAOS `id.server.` (RFC 5001, RFC 4892).
    pub(crate) identity: Option<Arc<[u8]>>,
    /// `[local]` records.
    pub(crate) local: LocalZone,
    /// `tls_cert` and `tls_key`: what the DoT and DoH listeners' next handshakes
    /// present. A configuration without them keeps the running pair (the listeners
    /// stay until a restart).
    pub(crate) certificate: Option<crate::tls::server::Identity>,
}

impl Handler {
    /// A handler for `config` over `state`; the upstreams of `previous` (the handler
    /// being replaced) that `config` keeps as they were are taken over with their
    /// health, loop marks and counters.
    pub fn new(config: &Config, state: &ServerState, previous: Option<&Handler>) -> Self {
        let life = state.life.clone();
        let mut kept = previous.map_or_else(Previous::default, |h| Previous::of(h.upstream_sets()));
        let dnstap = state.dnstap.tap_for(config, &life);
        let sets = UpstreamSet::for_config(config, &life, &mut kept, dnstap.as_ref());
        let router = Arc::new(Router::for_config(config));
        let claims = Claims::for_config(config, &router, &sets);
        let routes: Vec<RouteState> = sets
            .into_iter()
            .zip(&config.routes)
            .map(|(set, r)| RouteState {
                set,
                cache_policy: r.cache,
                metrics: state.metrics.route(&r.name),
            })
            .collect();
        let loops = config.server.loop_detection.then(|| {
            Arc::new(LoopDetector::new(
                routes
                    .iter()
                    .zip(&config.routes)
                    .map(|(route, r)| (&route.set, r.zones[0].as_slice())),
            ))
        });
        let resolver = Arc::clone(&state.resolver);
        Handler {
            loops,
            query_log: config.server.query_log,
            dnstap,
            any_queries: config.server.any_queries,
            overload_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            limit_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            clients: ClientLimits::new(
                config.server.client_limits.clone(),
                Arc::clone(&state.clients),
            ),
            acl: config.acl.clone(),
            router,
            routes,
            claims,
            inflight: Arc::clone(&state.inflight),
            max_inflight: config.server.max_inflight,
            metrics: Arc::clone(&state.metrics),
            cache: Arc::clone(resolver.cache()),
            resolver,
            clock: life.clock.clone(),
            life,
            identity: config
                .server
                .identity
                .as_deref()
                .map(|i| Arc::from(i.as_bytes())),
            local: LocalZone::new(&config.local),
            certificate: config
                .server
                .encrypted
                .identity
                .clone()
                .or_else(|| previous.and_then(|p| p.certificate.clone())),
        }
    }

    /// Starts what runs beside the listeners for this configuration (loop probes).
    /// Called once the handler is the current one: a probe that comes back must meet
    /// the detector that sent it.
    pub fn start_background(&self) {
        if let Some(d) = &self.loops {
            d.spawn(&self.life.tasks, self.life.shutdown.clone());
        }
    }

    pub fn upstream_sets(&self) -> impl Iterator<Item = &Arc<UpstreamSet>> {
        self.routes.iter().map(|r| &r.set)
    }

    /// Closes every route's idle upstream sockets that are past their age.
    pub fn sweep_idle_sockets(&self) {
        let now = Instant::now();
        let closed: usize = self
            .upstream_sets()
            .flat_map(|set| set.upstreams.iter())
            .map(|u| u.udp.sweep(now))
            .sum();
        if closed > 0 {
            tracing::trace!(closed, "closed idle upstream sockets past their age");
        }
    }

    /// Loop probes that came back (0 when loop detection is off).
    pub fn loops_detected(&self) -> u64 {
        self.loops
            .as_ref()
            .map_or(0, |d| d.detected.load(Ordering::Relaxed))
    }

    /// claim_cnames chains that hit a loop, the hop limit or the time limit.
    pub fn broken_chains(&self) -> u64 {
        self.claims
            .as_ref()
            .map_or(0, |c| c.broken_chains.load(Ordering::Relaxed))
    }
}
