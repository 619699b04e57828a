//! One request: the checks, the ACL, the route, the upstream, the reply.
//!
//! `prepare` is synchronous and cheap: everything that can be answered without an
//! upstream (drops, REFUSED, FORMERR, NOTIMP, BADVERS, overload) is decided there, so
//! listeners answer it inline. Only queries that must be forwarded become a `Job`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::Either;
use futures_util::FutureExt;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::acl::Acl;
use crate::cache::{Cache, Clock, Lookup, Stored, STALE_TTL};
use crate::claims::Claims;
use crate::clients::{ClientLimits, ClientSlot, OverLimit};
use crate::config::Config;
use crate::config::{AnyQueries, CachePolicy};
use crate::loopcheck::LoopDetector;
use crate::metrics::{Metrics, RouteMetrics};
use crate::resolver::{self, Resolution, Resolver, Start};
use crate::router::Router;
use crate::throttle::{Throttle, LIMIT_WARN_INTERVAL};
use crate::upstream::{Lifecycle, UpstreamSet};
use crate::wire::{self, rcode, Query, Ttls};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The largest reply this client can take on this transport.
    pub fn limit(self, q: &Query) -> usize {
        match self {
            Transport::Udp => wire::Edns::udp_limit(q.edns.as_ref()),
            Transport::Tcp => wire::MAX_TCP_MESSAGE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What to do with a message from a client.
pub enum Action {
    /// Say nothing: not a query we may answer (short, or QR=1).
    Drop,
    /// Answer at once.
    Reply(Vec<u8>),
    /// Forward, then answer. (Boxed: the other variants are small and common.)
    Forward(Box<Job>),
}

/// A query on its way upstream; holds its in-flight permit until it is answered.
pub struct Job {
    query: Query,
    route: Arc<UpstreamSet>,
    policy: CachePolicy,
    /// An expired answer to fall back on (RFC 8767).
    stale: Option<Arc<Stored>>,
    resolver: Arc<Resolver>,
    claims: Option<Arc<Claims>>,
    cache: Arc<Cache>,
    client: SocketAddr,
    transport: Transport,
    /// When the query arrived: the latency metric and the query log count from here,
    /// the time waiting for a task included.
    started: Instant,
    query_log: bool,
    metrics: Arc<RouteMetrics>,
    _permit: OwnedSemaphorePermit,
    _slot: Option<ClientSlot>,
}

/// The query log line (`server.query_log`): one per answered query.
struct QueryLog<'a> {
    client: SocketAddr,
    transport: Transport,
    query: &'a Query,
    route: &'a str,
    upstream: Option<SocketAddr>,
    /// How it was answered: upstream, cache, stale, failure-cached, overload, servfail,
    /// refused-acl, no-route, refused-xfr.
    outcome: &'static str,
    started: Instant,
}

impl QueryLog<'_> {
    fn emit(&self, reply: &[u8]) {
        tracing::info!(
            target: "zonefwd::query",
            client = %self.client,
            transport = self.transport.as_str(),
            name = %wire::name_to_string(&self.query.qname),
            qtype = %crate::report::qtype_name(self.query.qtype),
            route = self.route,
            upstream = %self.upstream.map_or_else(|| "-".to_string(), |u| u.to_string()),
            rcode = %rcode::name(u16::from(reply[3] & 0x0f)),
            ms = self.started.elapsed().as_secs_f64() * 1000.0,
            outcome = self.outcome,
            "query"
        );
    }
}

/// RFC 8767 section 5's client response timer: with a stale answer at hand, a client
/// waits at most this long for a fresh one (the resolution goes on and refreshes the
/// cache).
pub const STALE_ANSWER_AFTER: Duration = Duration::from_millis(1800);

pub struct Handler {
    query_log: bool,
    any_queries: AnyQueries,
    overload_warning: Throttle,
    limit_warning: Throttle,
    clients: Arc<ClientLimits>,
    loops: Option<Arc<LoopDetector>>,
    acl: Acl,
    router: Arc<Router>,
    routes: Vec<(Arc<UpstreamSet>, CachePolicy, Arc<RouteMetrics>)>,
    claims: Option<Arc<Claims>>,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    metrics: Arc<Metrics>,
    cache: Arc<Cache>,
    resolver: Arc<Resolver>,
    clock: Arc<dyn Clock>,
    life: Lifecycle,
}

impl Handler {
    /// The `resolver` (and the cache it fills) is passed in so it outlives one
    /// configuration: a reload keeps both.
    pub fn new(
        config: &Config,
        life: Lifecycle,
        resolver: Arc<Resolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sets = UpstreamSet::for_config(config, &life);
        let router = Arc::new(Router::for_config(config));
        let claims = Claims::for_config(config, &router, &sets);
        let routes: Vec<_> = sets
            .into_iter()
            .zip(&config.routes)
            .map(|(set, r)| (set, r.cache, metrics.route(&r.name)))
            .collect();
        let loops = config.server.loop_detection.then(|| {
            Arc::new(LoopDetector::new(
                routes
                    .iter()
                    .zip(&config.routes)
                    .map(|((set, _, _), r)| (set, r.zones[0].as_slice())),
            ))
        });
        Handler {
            loops,
            query_log: config.server.query_log,
            any_queries: config.server.any_queries,
            overload_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            limit_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            clients: Arc::new(ClientLimits::new(config.server.client_limits.clone())),
            acl: config.acl.clone(),
            router,
            routes,
            claims,
            inflight: Arc::new(Semaphore::new(config.server.max_inflight)),
            max_inflight: config.server.max_inflight,
            metrics,
            cache: Arc::clone(resolver.cache()),
            resolver,
            clock: life.clock.clone(),
            life,
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

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    pub fn upstream_sets(&self) -> impl Iterator<Item = &Arc<UpstreamSet>> {
        self.routes.iter().map(|r| &r.0)
    }

    /// Closes every route's idle upstream sockets that are past their age.
    pub fn sweep_idle_sockets(&self) {
        let now = Instant::now();
        let closed: usize = self
            .upstream_sets()
            .flat_map(|set| set.upstreams.iter())
            .map(|u| u.pool.sweep(now))
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

    /// Client queries being forwarded now.
    pub fn inflight(&self) -> usize {
        self.max_inflight - self.inflight.available_permits()
    }

    /// An inline answer to a parsed query, logged when `server.query_log` is on.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        client: SocketAddr,
        transport: Transport,
        q: &Query,
        (route, metrics): (&str, &RouteMetrics),
        outcome: &'static str,
        started: Instant,
        reply: Vec<u8>,
    ) -> Action {
        metrics.observe(transport, &reply, started.elapsed());
        if self.query_log {
            QueryLog {
                client,
                transport,
                query: q,
                route,
                upstream: None,
                outcome,
                started,
            }
            .emit(&reply);
        }
        Action::Reply(reply)
    }

    pub fn prepare(&self, msg: &[u8], client: SocketAddr, transport: Transport) -> Action {
        let started = Instant::now();
        if !wire::is_answerable_query(msg) {
            tracing::debug!(%client, transport = transport.as_str(), len = msg.len(), "dropping a message that is not a query");
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        }
        let unrouted = ("-", &*self.metrics.unrouted);
        let parsed = wire::parse_query(msg);
        // REFUSED echoing the question when it can be read: stub resolvers match
        // replies on it (RFC 5452) and would otherwise wait out their timeout.
        let refusal = |parsed: &Result<Query, wire::Rejection>| {
            let question = match parsed {
                Ok(q) => Some((q.qname.as_slice(), q.qtype, q.qclass)),
                Err(rej) => rej
                    .question
                    .as_ref()
                    .map(|(n, t, c)| (n.as_slice(), *t, *c)),
            };
            let edns = parsed.as_ref().ok().and_then(|q| q.edns.as_ref());
            wire::error_reply(
                wire::id(msg),
                wire::flags(msg),
                question,
                edns,
                rcode::REFUSED,
            )
        };
        // The rate limit comes before the ACL, so a flood from outside it is dropped
        // rather than answered one REFUSED per packet.
        if self.clients.admit(client.ip(), started).is_err() {
            self.metrics
                .client_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            if self.limit_warning.ready() {
                tracing::warn!(%client, "a client is over server.client_qps (logged at most every 10s)");
            }
            return match self.clients.action() {
                OverLimit::Drop => Action::Drop,
                OverLimit::Refuse => Action::Reply(refusal(&parsed)),
            };
        }
        if !self.acl.allows(client.ip()) {
            tracing::debug!(%client, transport = transport.as_str(), "refusing a client outside the acl");
            let reply = refusal(&parsed);
            self.metrics.acl_refused.fetch_add(1, Ordering::Relaxed);
            return match &parsed {
                Ok(q) => self.answer(
                    client,
                    transport,
                    q,
                    unrouted,
                    "refused-acl",
                    started,
                    reply,
                ),
                Err(_) => {
                    self.metrics
                        .unrouted
                        .observe(transport, &reply, started.elapsed());
                    Action::Reply(reply)
                }
            };
        }
        let q = match parsed {
            Ok(q) => q,
            Err(rej) => {
                tracing::debug!(%client, transport = transport.as_str(), reason = rej.reason, rcode = %rcode::name(rej.rcode), "rejecting a query");
                let question = rej
                    .question
                    .as_ref()
                    .map(|(n, t, c)| (n.as_slice(), *t, *c));
                let reply = wire::error_reply(
                    wire::id(msg),
                    wire::flags(msg),
                    question,
                    rej.edns.as_ref(),
                    rej.rcode,
                );
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .unrouted
                    .observe(transport, &reply, started.elapsed());
                return Action::Reply(reply);
            }
        };
        if q.qtype == wire::TYPE_AXFR || q.qtype == wire::TYPE_IXFR {
            // Zone transfers are a conversation with the primary, not something to
            // relay one message at a time.
            let reply = wire::reply_for(&q, rcode::REFUSED);
            return self.answer(
                client,
                transport,
                &q,
                unrouted,
                "refused-xfr",
                started,
                reply,
            );
        }
        if q.qtype == wire::TYPE_ANY && self.any_queries != AnyQueries::Forward {
            // RFC 8482: ANY is the amplifier of choice and answers nothing a stub needs.
            let reply = match self.any_queries {
                AnyQueries::Refuse => wire::reply_for(&q, rcode::REFUSED),
                _ => wire::any_hinfo_reply(&q),
            };
            return self.answer(
                client,
                transport,
                &q,
                unrouted,
                "any-rfc8482",
                started,
                reply,
            );
        }
        if let Some(loops) = &self.loops {
            if loops.is_own_probe(&q.qname_lower, client) {
                // Our own loop probe came round: stop it here.
                let reply = wire::reply_for(&q, rcode::REFUSED);
                return self.answer(
                    client,
                    transport,
                    &q,
                    unrouted,
                    "loop-probe",
                    started,
                    reply,
                );
            }
        }
        let Some(m) = self.router.route(&q.qname_lower, q.qtype) else {
            tracing::debug!(%client, name = %wire::name_to_string(&q.qname), "no route for this name");
            let reply = wire::reply_for(&q, rcode::REFUSED);
            return self.answer(client, transport, &q, unrouted, "no-route", started, reply);
        };
        let (route, policy, route_metrics) = &self.routes[m.route];
        let here = (route.route.as_str(), &**route_metrics);
        let mut stale = None;
        if policy.enabled {
            let limit = transport.limit(&q);
            match self.cache.lookup(&q, policy, self.clock.now_given(started)) {
                Lookup::Fresh {
                    stored,
                    age,
                    prefetch,
                } => {
                    if prefetch {
                        // Refresh in the background; this client is served now.
                        drop(
                            self.resolver
                                .resolve(&q, route, *policy, self.claims.as_ref()),
                        );
                    }
                    let reply = wire::render(&stored.reply, &q, limit, Ttls::Aged(age));
                    return self.answer(client, transport, &q, here, "cache", started, reply);
                }
                Lookup::Failing { stale: Some(s) } => {
                    self.cache.note_stale_served();
                    let reply = wire::render(&s.reply, &q, limit, Ttls::Fixed(STALE_TTL));
                    return self.answer(client, transport, &q, here, "stale", started, reply);
                }
                Lookup::Failing { stale: None } => {
                    let reply = wire::reply_for(&q, rcode::SERVFAIL);
                    return self.answer(
                        client,
                        transport,
                        &q,
                        here,
                        "failure-cached",
                        started,
                        reply,
                    );
                }
                Lookup::Stale(s) => stale = Some(s),
                Lookup::Miss => {}
            }
        }
        let slot = match self.clients.start(client.ip(), started) {
            Ok(slot) => slot,
            Err(_) => {
                // DNSBomb (CVE-2024-33655): one client's queries piling up behind a
                // slow upstream.
                self.metrics
                    .client_inflight_limited
                    .fetch_add(1, Ordering::Relaxed);
                if self.limit_warning.ready() {
                    tracing::warn!(%client, "a client has server.client_max_inflight queries waiting on upstreams (logged at most every 10s)");
                }
                return match self.clients.action() {
                    OverLimit::Drop => Action::Drop,
                    OverLimit::Refuse => {
                        let reply = wire::reply_for(&q, rcode::REFUSED);
                        self.answer(client, transport, &q, here, "client-limit", started, reply)
                    }
                };
            }
        };
        let Ok(permit) = Arc::clone(&self.inflight).try_acquire_owned() else {
            if self.overload_warning.ready() {
                tracing::warn!(%client, "server.max_inflight queries are in flight: answering new ones from stale cache or SERVFAIL (logged at most every 10s)");
            }
            // Overloaded: an expired answer beats a SERVFAIL (RFC 8767's purpose).
            let reply = match stale {
                Some(s) => {
                    self.cache.note_stale_served();
                    wire::render(&s.reply, &q, transport.limit(&q), Ttls::Fixed(STALE_TTL))
                }
                None => wire::reply_for(&q, rcode::SERVFAIL),
            };
            return self.answer(client, transport, &q, here, "overload", started, reply);
        };
        Action::Forward(Box::new(Job {
            route: Arc::clone(route),
            policy: *policy,
            stale,
            resolver: Arc::clone(&self.resolver),
            claims: self.claims.clone(),
            cache: Arc::clone(&self.cache),
            query: q,
            client,
            transport,
            started,
            query_log: self.query_log,
            metrics: Arc::clone(route_metrics),
            _permit: permit,
            _slot: slot,
        }))
    }
}

impl Job {
    /// Resolves (joining an identical resolution in flight) and builds the client's
    /// reply, falling back on a stale answer when the upstreams fail or are slow.
    /// Run it to the end (the listeners spawn it): a resolution it leads may run
    /// inside it, and other clients may be waiting for that one.
    /// (An async block over `self`, not an async fn: that would hold the job twice.)
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    pub fn run(self) -> impl Future<Output = Vec<u8>> {
        async move {
            let q = &self.query;
            let limit = self.transport.limit(q);
            let start = self
                .resolver
                .start(q, &self.route, self.policy, self.claims.as_ref());
            // The wait is chosen before it is awaited, so `start` is not held (in the
            // future's state) through it.
            let waiting = match (start, &self.stale) {
                // Nobody gives up on this resolution early: it runs in this task.
                (Start::Lead(lead), None) => Either::Left(lead.run().map(Some)),
                (Start::Joined(pending), None) => {
                    Either::Right(Either::Left(resolver::wait(pending)))
                }
                // With a stale answer at hand the client stops waiting after a while,
                // and the resolution goes on without it (RFC 8767 section 5).
                (start, Some(_)) => Either::Right(Either::Right(
                    tokio::time::timeout(STALE_ANSWER_AFTER, resolver::wait(start.spawned()))
                        .map(|r| r.ok().flatten()),
                )),
            };
            let res = waiting.await;
            let failed = res.as_deref().is_none_or(Resolution::is_failure);
            let answer = match res.as_deref() {
                Some(Resolution::Answer { reply, upstream }) => Some((reply, *upstream)),
                _ => None,
            };
            let served_stale = failed && self.stale.is_some();
            let upstream = answer.as_ref().map(|a| a.1);
            let out = match (answer, &self.stale) {
                // A failure with a stale answer at hand: the stale answer (RFC 8767).
                (_, Some(s)) if failed => {
                    self.cache.note_stale_served();
                    wire::render(&s.reply, q, limit, Ttls::Fixed(STALE_TTL))
                }
                // An answer, or the SERVFAIL/REFUSED/TC an upstream gave when none did better.
                (Some((reply, _)), _) => wire::render(reply, q, limit, Ttls::AsStored),
                (None, _) => wire::reply_for(q, rcode::SERVFAIL),
            };
            self.metrics
                .observe(self.transport, &out, self.started.elapsed());
            if self.query_log {
                QueryLog {
                    client: self.client,
                    transport: self.transport,
                    query: q,
                    route: &self.route.route,
                    upstream,
                    outcome: if served_stale {
                        "stale"
                    } else if upstream.is_some() {
                        "upstream"
                    } else {
                        "servfail"
                    },
                    started: self.started,
                }
                .emit(&out);
            }
            // The permit and the client's slot are held until the answer is made.
            // Named here so that the block takes them at all: an async block
            // captures only the fields it uses, and would drop these at its creation.
            drop((self._permit, self._slot));
            out
        }
    }
}
