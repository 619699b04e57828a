//! A route's upstreams as one: built from the route's configuration (keeping the
//! upstreams a reload did not change), and `resolve`, which forwards a query and then
//! applies the route's NXDOMAIN fallback and private-answer guard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Config, Route, RouteReadiness, UpstreamOrder, UpstreamTransport};
use crate::life::Lifecycle;
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::outcome::Outcome;
use crate::upstream::guard::PrivateGuard;
use crate::upstream::{Exchanged, Upstream, UpstreamSettings};
use crate::wire::{self, rcode, Query};

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
    pub(crate) max_fails: u32,
    pub(crate) health_check: Duration,
    pub(crate) budget_warning: Throttle,
    /// This host's own limits (descriptors, full TCP pipelines), warned of once per
    /// interval.
    pub(crate) local_warning: Throttle,
    pub(crate) life: Lifecycle,
    /// `expect_private`: what to do with public addresses for private names.
    pub guard: Option<PrivateGuard>,
    /// `nxdomain_fallback`: the route NXDOMAIN answers are asked again through, set
    /// once every route of the configuration exists.
    pub fallback: OnceLock<Arc<UpstreamSet>>,
    /// NXDOMAIN answers asked again through the fallback route.
    pub nxdomain_fallbacks: AtomicU64,
    /// CNAME targets from other routes' answers resolved here (`claim_cnames`).
    pub cname_claims: AtomicU64,
    /// `ready`: whether this route's outage makes the replica unready (`readiness`).
    pub ready: RouteReadiness,
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
                map.entry((set.route.clone(), u.settings))
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
            .get_mut(&(route.to_string(), settings))
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
    ) -> Vec<Arc<UpstreamSet>> {
        let sets: Vec<Arc<UpstreamSet>> = config
            .routes
            .iter()
            .map(|r| {
                Arc::new(UpstreamSet::new(
                    r,
                    config.server.upstream_udp_reuse,
                    life.clone(),
                    previous,
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
    pub fn new(route: &Route, reuse: u32, life: Lifecycle, previous: &mut Previous) -> Self {
        UpstreamSet {
            route: route.name.clone(),
            upstreams: route
                .upstreams
                .iter()
                .map(|u| {
                    let settings = UpstreamSettings::of(route, u.addr, reuse);
                    previous.take_or_new(&route.name, settings, route.try_timeout, &life)
                })
                .collect(),
            order: route.order,
            transport: route.transport,
            rr: AtomicUsize::new(0),
            timeout: route.timeout,
            try_timeout: route.try_timeout,
            max_fails: route.max_fails,
            health_check: route.health_check,
            budget_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            local_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            life,
            guard: PrivateGuard::for_route(route),
            fallback: OnceLock::new(),
            nxdomain_fallbacks: AtomicU64::new(0),
            cname_claims: AtomicU64::new(0),
            ready: route.ready,
        }
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

    /// What a resolution through this route gives: `forward`, then the route's
    /// NXDOMAIN fallback and private-answer guard.
    pub async fn resolve(&self, q: &Query) -> Outcome<Exchanged> {
        // Boxed: it keeps the state of a forwarded query in two allocations under 1 KiB
        // each, mimalloc's fast path, instead of one over it (`listen::udp::small`).
        let out = Box::pin(self.forward(q)).await;
        let Some(fallback) = self.fallback.get() else {
            return self.guard(q, out);
        };
        match out {
            Outcome::Answered { answer, upstream } if answer.reply.rcode == rcode::NXDOMAIN => {
                // A private zone linked to the VNet says NXDOMAIN for names it lacks
                // (another tenant's storage account): ask where public names resolve,
                // as Azure's "fallback to internet" link policy does.
                self.nxdomain_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(route = %self.route, fallback = %fallback.route, name = %wire::name_to_string(&q.qname), "nxdomain: asking the fallback route");
                // Boxed: a rare path, and unboxed it sized every forwarded query's
                // future for two forwards at once.
                match Box::pin(fallback.forward(q)).await {
                    out @ Outcome::Answered { .. } => fallback.guard(q, out),
                    // The fallback had nothing: the NXDOMAIN stands.
                    _ => Outcome::Answered { answer, upstream },
                }
            }
            out => self.guard(q, out),
        }
    }
}
