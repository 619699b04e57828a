//! A route's upstreams as one: built from the route's configuration (keeping the
//! upstreams a reload did not change), with the route's settings the try loop reads
//! (`forward`) and what the metrics and `ctl status` ask of the route.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Config, Route, RouteReadiness, UpstreamOrder, UpstreamTransport};
use crate::dnstap::{QueryTap, Tap};
use crate::life::Lifecycle;
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::router::Router;
use crate::upstream::guard::PrivateGuard;
use crate::upstream::probe::ProbePlan;
use crate::upstream::upstream::{Upstream, UpstreamSettings};
use crate::wire::Query;

#[derive(Debug)]
pub struct UpstreamSet {
    pub route: String,
    pub upstreams: Vec<Arc<Upstream>>,
    pub(crate) order: UpstreamOrder,
    /// `transport`: how every try of this route travels.
    pub transport: UpstreamTransport,
    pub(crate) rr: AtomicUsize,
    pub(crate) timeout: Duration,
    pub(crate) try_timeout: Duration,
    /// `retransmit_budget`: the share of an upstream's tries that wasted early
    /// retransmissions may reach; 0 turns early retransmission off.
    pub(crate) retransmit_budget: f64,
    pub(crate) health_check: Duration,
    pub(crate) budget_warning: Throttle,
    /// This host's own limits (descriptors, full TCP pipelines), warned of once per
    /// interval.
    pub(crate) local_warning: Throttle,
    pub(crate) life: Lifecycle,
    /// `expect_private`: what to do with public addresses for private names.
    pub(crate) guard: Option<PrivateGuard>,
    /// `nxdomain_fallback`: the route NXDOMAIN answers are asked again through, set
    /// once every route of the configuration exists.
    pub fallback: OnceLock<Arc<UpstreamSet>>,
    /// NXDOMAIN answers asked again through the fallback route.
    pub nxdomain_fallbacks: AtomicU64,
    /// CNAME targets from other routes' answers resolved here (`claim_cnames`).
    pub cname_claims: AtomicU64,
    /// `ready`: whether this route's outage makes the replica unready (`readiness`).
    pub ready: RouteReadiness,
    /// `[dnstap]`, when it sends forwarded tries.
    dnstap: Option<RouteTap>,
}

/// A route's dnstap: the tap, and the route's zones for a forwarded message's
/// `query_zone` (built only when dnstap sends forwarded tries).
#[derive(Debug)]
struct RouteTap {
    tap: Arc<Tap>,
    zones: Router,
}

/// The upstreams of the configuration being replaced, by route name and settings, for
/// the new one to take over where nothing about them changed.
#[derive(Default)]
pub struct Previous(HashMap<(String, UpstreamSettings), Vec<Arc<Upstream>>>);

impl Previous {
    pub fn of<'a>(sets: impl IntoIterator<Item = &'a Arc<UpstreamSet>>) -> Previous {
        let mut map: HashMap<_, Vec<_>> = HashMap::new();
        for set in sets {
            for u in &set.upstreams {
                map.entry((set.route.clone(), u.settings.clone()))
                    .or_default()
                    .push(Arc::clone(u));
            }
        }
        Previous(map)
    }

    /// The old upstream with these settings on this route, or a new one.
    fn take_or_new(
        &mut self,
        route: &str,
        settings: UpstreamSettings,
        patience: Duration,
        life: &Lifecycle,
    ) -> Arc<Upstream> {
        match self
            .0
            .get_mut(&(route.to_string(), settings.clone()))
            .and_then(Vec::pop)
        {
            Some(kept) => {
                kept.tcp.set_patience(patience);
                kept
            }
            None => Arc::new(Upstream::new(settings, life.clock.now(), patience)),
        }
    }
}

impl UpstreamSet {
    /// One set per route of `config`, in order, each route's `nxdomain_fallback` wired
    /// to the set of the route it names; upstreams found in `previous` are kept.
    pub fn for_config(
        config: &Config,
        life: &Lifecycle,
        previous: &mut Previous,
        dnstap: Option<&Arc<Tap>>,
    ) -> Vec<Arc<UpstreamSet>> {
        let dnstap = dnstap.filter(|t| t.forwards());
        let sets: Vec<Arc<UpstreamSet>> = config
            .routes
            .iter()
            .map(|r| {
                Arc::new(UpstreamSet::new(
                    r,
                    config.server.upstream_udp_reuse,
                    life.clone(),
                    previous,
                    dnstap.cloned(),
                ))
            })
            .collect();
        for (i, r) in config.routes.iter().enumerate() {
            if let Some(j) = r.nxdomain_fallback {
                let _ = sets[i].fallback.set(Arc::clone(&sets[j]));
            }
        }
        sets
    }

    /// `reuse`: `server.upstream_udp_reuse`.
    pub fn new(
        route: &Route,
        reuse: u32,
        life: Lifecycle,
        previous: &mut Previous,
        dnstap: Option<Arc<Tap>>,
    ) -> Self {
        UpstreamSet {
            route: route.name.clone(),
            upstreams: route
                .upstreams
                .iter()
                .map(|u| {
                    let settings = UpstreamSettings::of(route, u, reuse);
                    previous.take_or_new(&route.name, settings, route.try_timeout, &life)
                })
                .collect(),
            order: route.order,
            transport: route.transport,
            rr: AtomicUsize::new(0),
            timeout: route.timeout,
            try_timeout: route.try_timeout,
            retransmit_budget: route.retransmit_budget,
            health_check: route.health_check,
            budget_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            local_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            life,
            guard: PrivateGuard::for_route(route),
            fallback: OnceLock::new(),
            nxdomain_fallbacks: AtomicU64::new(0),
            cname_claims: AtomicU64::new(0),
            ready: route.ready,
            dnstap: dnstap.map(|tap| RouteTap {
                tap,
                zones: Router::new(route.zones.iter().map(|z| (z.as_slice(), 0))),
            }),
        }
    }

    /// dnstap for the tries of `q`, when forwarded tries are sent.
    pub(crate) fn query_tap<'a>(&'a self, q: &Query) -> Option<QueryTap<'a>> {
        let d = self.dnstap.as_ref()?;
        Some(QueryTap {
            tap: &d.tap,
            route: &self.route,
            zone: d.zones.route(&q.qname_lower, q.qtype).map(|m| m.zone),
        })
    }

    /// No upstream is in rotation: marked down by failures, taken out by hand, or in
    /// a forwarding loop.
    pub fn all_down(&self) -> bool {
        !self.upstreams.iter().any(|u| u.in_rotation())
    }

    /// The route's deadline for one query.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Answers with public A/AAAA records for private names (0 without a guard).
    pub fn public_answers(&self) -> u64 {
        self.guard.as_ref().map_or(0, PrivateGuard::public_answers)
    }

    /// How long a try to `u` waits before it is retransmitted early: its upstream's
    /// threshold, when the model has one below `try_timeout`, over UDP (TCP
    /// retransmits in the kernel; a late TCP try is slow, not lost), with a budget.
    pub fn retransmit_after(&self, u: &Upstream) -> Option<Duration> {
        if self.transport != UpstreamTransport::Udp || self.retransmit_budget <= 0.0 {
            return None;
        }
        u.stats
            .latency
            .threshold()
            .filter(|&after| after < self.try_timeout)
    }

    /// What a try to `u` waits before a retransmission, as `ctl status` and the
    /// metrics show it: the early threshold, or `try_timeout`.
    pub fn retransmit_wait(&self, u: &Upstream) -> Duration {
        self.retransmit_after(u).unwrap_or(self.try_timeout)
    }

    /// How this route probes an upstream its tries marked down.
    pub(crate) fn probe_plan(&self) -> ProbePlan {
        ProbePlan {
            route: self.route.clone(),
            interval: self.health_check,
            per_probe: self.try_timeout,
            transport: self.transport,
            life: self.life.clone(),
        }
    }
}
