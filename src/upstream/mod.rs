//! A route's upstream servers: the order they are tried in, tries within the route's
//! deadline, TC -> TCP, and health.
//!
//! Split the way CoreDNS's forward plugin splits proxy, policy and health check:
//! `exchange` talks to one server; `UpstreamSet::forward` decides who is asked when;
//! `Upstream` keeps the consecutive-failure count and runs the background probe.

pub mod exchange;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::seq::SliceRandom;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{Clock, SystemClock};
use crate::config::{ExpectPrivate, Policy, Route};
use crate::throttle::{Throttle, LIMIT_WARN_INTERVAL};
use crate::wire::{self, rcode, Query};
pub use exchange::{Answer, TryError};

/// What the parts of a running server share: background work that must stop with it,
/// and the clock (injected so tests can drive TTLs and budgets).
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub clock: Arc<dyn Clock>,
    /// Each serving loop's last round, for the systemd watchdog.
    pub heartbeats: Arc<crate::notify::Heartbeats>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::with_clock(Arc::new(SystemClock))
    }
}

impl Lifecycle {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Lifecycle {
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            clock,
            heartbeats: Arc::default(),
        }
    }
}

/// A query budget: `rate` per second, bursts of up to one second's worth. The cloud
/// resolvers drop what exceeds their limits (Azure: 1000 qps per VM to 168.63.129.16;
/// AWS: 1024 packets/s per interface), so zonefwd keeps under them itself and says so.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl TokenBucket {
    pub fn new(per_second: u32, now: std::time::Instant) -> Self {
        TokenBucket {
            rate: f64::from(per_second),
            state: std::sync::Mutex::new((f64::from(per_second), now)),
        }
    }

    pub fn try_take(&self, now: std::time::Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What happened to the tries sent to one upstream, for the metrics.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub sent: AtomicU64,
    /// Tries that outlived `try_timeout`, or were still unanswered at the deadline.
    pub timeouts: AtomicU64,
    /// Network errors and malformed replies.
    pub errors: AtomicU64,
    /// Replies from the upstream's address and port that matched no query (wrong ID
    /// or question): forgeries, or very late answers. Dropped; the wait goes on.
    pub mismatched: AtomicU64,
}

/// One upstream server, its health and its budget.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: UpstreamStats,
    max_fails: u32,
    fails: AtomicU32,
    probing: AtomicBool,
    /// A loop probe sent here came back to zonefwd (`loopcheck`): out of rotation.
    pub looped: AtomicBool,
    budget: Option<TokenBucket>,
    /// Tries not sent because the budget was spent.
    pub over_budget: AtomicU64,
    pub pool: exchange::SocketPool,
}

impl Upstream {
    fn new(
        addr: SocketAddr,
        max_fails: u32,
        max_qps: Option<u32>,
        reuse: u32,
        now: std::time::Instant,
    ) -> Self {
        Upstream {
            pool: exchange::SocketPool::new(reuse),
            addr,
            stats: UpstreamStats::default(),
            max_fails,
            fails: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            looped: AtomicBool::new(false),
            budget: max_qps.map(|q| TokenBucket::new(q, now)),
            over_budget: AtomicU64::new(0),
        }
    }

    /// The clock is read only when there is a budget to check.
    fn within_budget(&self, clock: &dyn Clock) -> bool {
        match &self.budget {
            None => true,
            Some(b) if b.try_take(clock.now()) => true,
            Some(_) => {
                self.over_budget.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Past `max_fails` failures in a row: skipped while any other is up, and probed.
    pub fn is_marked_down(&self) -> bool {
        self.max_fails > 0 && self.consecutive_failures() >= self.max_fails
    }
}

/// How one query went, for logs (and later metrics).
#[derive(Debug)]
pub enum Outcome {
    /// A reply to relay: a real answer, or the last SERVFAIL/REFUSED/truncated reply
    /// when no upstream did better.
    Reply {
        answer: Answer,
        upstream: SocketAddr,
    },
    /// Nothing usable before the deadline.
    Failed,
    /// Every upstream's `max_qps` budget was spent: nothing was sent.
    OverBudget,
}

/// What a single try ended with.
enum TryResult {
    /// Relay it and stop.
    Final(Answer),
    /// A reply, but one that asks for the next upstream (SERVFAIL, REFUSED, or TC
    /// with TCP unavailable): kept in case nothing better comes.
    Soft(Answer),
    Failed(TryError),
}

type TryFuture<'a> = Pin<Box<dyn std::future::Future<Output = (usize, TryResult)> + Send + 'a>>;

/// The tries of one query in flight. Nearly every query needs only its first try, so
/// that one runs alone; a `FuturesUnordered` (two allocations and a waker of its own)
/// is set up only when a second try joins it.
enum Running<'a> {
    Idle,
    One(TryFuture<'a>),
    Many(FuturesUnordered<TryFuture<'a>>),
}

impl<'a> Running<'a> {
    fn push(&mut self, f: TryFuture<'a>) {
        *self = match std::mem::replace(self, Running::Idle) {
            Running::Idle => Running::One(f),
            Running::One(first) => {
                let many = FuturesUnordered::new();
                many.push(first);
                many.push(f);
                Running::Many(many)
            }
            Running::Many(many) => {
                many.push(f);
                Running::Many(many)
            }
        };
    }

    fn is_empty(&self) -> bool {
        match self {
            Running::Idle => true,
            Running::One(_) => false,
            Running::Many(many) => many.is_empty(),
        }
    }

    /// The next try to end; `None` when none is running. Cancel-safe: a try not yet
    /// ended stays in `self`.
    async fn next(&mut self) -> Option<(usize, TryResult)> {
        let out = match self {
            Running::Idle => return None,
            Running::One(f) => f.as_mut().await,
            Running::Many(many) => return many.next().await,
        };
        *self = Running::Idle;
        Some(out)
    }
}

/// Where a try stands, so each failure is counted once: when the try fails, when it
/// outlives `try_timeout`, or when the deadline ends it, whichever comes first; and a
/// try that answered is never counted as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TryState {
    Running,
    /// Past `try_timeout`, failure already counted, still allowed to answer.
    Overdue,
    Done,
}

#[derive(Debug)]
pub struct UpstreamSet {
    pub route: String,
    pub upstreams: Vec<Arc<Upstream>>,
    policy: Policy,
    rr: AtomicUsize,
    timeout: Duration,
    try_timeout: Duration,
    max_fails: u32,
    health_check: Duration,
    budget_warning: Throttle,
    life: Lifecycle,
    /// `expect_private`: what to do with public addresses in this route's answers.
    pub expect_private: Option<ExpectPrivate>,
    guard_warning: Throttle,
    /// Answers with public A/AAAA records (`expect_private`).
    pub public_answers: AtomicU64,
    /// `nxdomain_fallback`: the route NXDOMAIN answers are asked again through, set
    /// once every route of the configuration exists.
    pub fallback: OnceLock<Arc<UpstreamSet>>,
    /// NXDOMAIN answers asked again through the fallback route.
    pub nxdomain_fallbacks: AtomicU64,
    /// CNAME targets from other routes' answers resolved here (`claim_cnames`).
    pub cname_claims: AtomicU64,
}

impl UpstreamSet {
    /// One set per route of `config`, in order, each route's `nxdomain_fallback` wired
    /// to the set of the route it names.
    pub fn for_config(config: &crate::config::Config, life: &Lifecycle) -> Vec<Arc<UpstreamSet>> {
        let sets: Vec<Arc<UpstreamSet>> = config
            .routes
            .iter()
            .map(|r| {
                Arc::new(UpstreamSet::new(
                    r,
                    config.server.upstream_udp_reuse,
                    life.clone(),
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

    /// The route's deadline for one query.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `reuse`: `server.upstream_udp_reuse`.
    pub fn new(route: &Route, reuse: u32, life: Lifecycle) -> Self {
        UpstreamSet {
            route: route.name.clone(),
            upstreams: route
                .upstreams
                .iter()
                .map(|u| {
                    Arc::new(Upstream::new(
                        u.addr,
                        route.max_fails,
                        route.max_qps,
                        reuse,
                        life.clock.now(),
                    ))
                })
                .collect(),
            policy: route.policy,
            rr: AtomicUsize::new(0),
            timeout: route.timeout,
            try_timeout: route.try_timeout,
            max_fails: route.max_fails,
            health_check: route.health_check,
            budget_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            life,
            expect_private: route.expect_private,
            guard_warning: Throttle::new(LIMIT_WARN_INTERVAL),
            public_answers: AtomicU64::new(0),
            fallback: OnceLock::new(),
            nxdomain_fallbacks: AtomicU64::new(0),
            cname_claims: AtomicU64::new(0),
        }
    }

    /// Upstream indexes in the order this query will try them: the healthy ones in
    /// policy order, or all of them when none is healthy (a guess beats a SERVFAIL).
    ///
    /// An upstream in a forwarding loop is never tried: the query would only come back.
    pub fn order(&self) -> Vec<usize> {
        let usable = |i: &usize| !self.upstreams[*i].looped.load(Ordering::Relaxed);
        let mut order: Vec<usize> = (0..self.upstreams.len())
            .filter(usable)
            .filter(|&i| !self.upstreams[i].is_marked_down())
            .collect();
        if order.is_empty() {
            order.extend((0..self.upstreams.len()).filter(usable));
        }
        if order.is_empty() {
            return order;
        }
        match self.policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                let k = self.rr.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(k);
            }
            Policy::Random => order.shuffle(&mut rand::rng()),
        }
        order
    }

    /// What a resolution through this route gives: `forward`, then the route's
    /// NXDOMAIN fallback and private-answer guard.
    pub async fn resolve(&self, q: &Query) -> Outcome {
        // Boxed: it keeps the state of a forwarded query in two allocations under 1 KiB
        // each, mimalloc's fast path, instead of one over it (`server::small`).
        let out = Box::pin(self.forward(q)).await;
        let Some(fallback) = self.fallback.get() else {
            return self.guard(q, out);
        };
        match out {
            Outcome::Reply { answer, upstream } if answer.reply.rcode == rcode::NXDOMAIN => {
                // A private zone linked to the VNet says NXDOMAIN for names it lacks
                // (another tenant's storage account): ask where public names resolve,
                // as Azure's "fallback to internet" link policy does.
                self.nxdomain_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(route = %self.route, fallback = %fallback.route, name = %wire::name_to_string(&q.qname), "nxdomain: asking the fallback route");
                // Boxed: a rare path, and unboxed it sized every forwarded query's
                // future for two forwards at once.
                match Box::pin(fallback.forward(q)).await {
                    out @ Outcome::Reply { .. } => fallback.guard(q, out),
                    // The fallback had nothing: the NXDOMAIN stands.
                    _ => Outcome::Reply { answer, upstream },
                }
            }
            out => self.guard(q, out),
        }
    }

    /// `expect_private`: public A/AAAA records in an answer are counted and logged
    /// (`warn`), or turn the answer into a failure (`enforce`) so the client gets
    /// SERVFAIL rather than an address that leaves the private network.
    fn guard(&self, q: &Query, out: Outcome) -> Outcome {
        let (Some(mode), Outcome::Reply { answer, upstream }) = (self.expect_private, &out) else {
            return out;
        };
        let public = wire::public_addresses(
            &answer.bytes,
            answer.reply.question_end,
            answer.reply.answers,
        );
        if public.is_empty() {
            return out;
        }
        self.public_answers.fetch_add(1, Ordering::Relaxed);
        if self.guard_warning.ready() {
            let addrs: Vec<String> = public.iter().map(|a| a.to_string()).collect();
            tracing::warn!(
                route = %self.route,
                upstream = %upstream,
                name = %wire::name_to_string(&q.qname),
                addresses = %addrs.join(" "),
                action = if mode == ExpectPrivate::Enforce { "servfail" } else { "answered" },
                "expect_private: a public address in an answer from a private route (is the private DNS zone linked to this network? logged at most every 10s)"
            );
        }
        match mode {
            ExpectPrivate::Warn => out,
            ExpectPrivate::Enforce => Outcome::Failed,
        }
    }

    /// Forwards `q` within the route's deadline. Tries go to the upstreams in
    /// `order()`, each upstream at most twice (so a lone upstream gets one
    /// retransmission). A try that fails, or answers SERVFAIL/REFUSED, starts the next
    /// one at once; a try that is merely slow starts the next one after
    /// `try_timeout` but stays open, so a late answer still wins until the deadline.
    pub async fn forward(&self, q: &Query) -> Outcome {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let order = self.order();
        if order.is_empty() {
            if self.budget_warning.ready() {
                tracing::warn!(route = %self.route, "every upstream of this route is in a forwarding loop: answering SERVFAIL (logged at most every 10s)");
            }
            return Outcome::Failed;
        }
        // Each upstream in order, then each once more.
        let plan_len = 2 * order.len();
        let plan = |i: usize| order[i % order.len()];
        let mut next = 0;
        let mut running = Running::Idle;
        // Per try: upstream index and state.
        let mut tries: Vec<(usize, TryState)> = Vec::with_capacity(plan_len);
        let mut fallback: Option<(Answer, SocketAddr)> = None;
        let mut try_timer = started;

        // The next try whose upstream has budget left, to be run; none when none has.
        let launch =
            |tries: &mut Vec<(usize, TryState)>, next: &mut usize, try_timer: &mut Instant| {
                while *next < plan_len {
                    let idx = plan(*next);
                    *next += 1;
                    if !self.upstreams[idx].within_budget(&*self.life.clock) {
                        continue;
                    }
                    let n = tries.len();
                    tries.push((idx, TryState::Running));
                    let u = &self.upstreams[idx];
                    u.stats.sent.fetch_add(1, Ordering::Relaxed);
                    *try_timer = Instant::now() + self.try_timeout;
                    return Some(Box::pin(async move { (n, one_try(u, q).await) }) as TryFuture<'_>);
                }
                None
            };
        if let Some(first) = launch(&mut tries, &mut next, &mut try_timer) {
            running.push(first);
        } else {
            if self.budget_warning.ready() {
                tracing::warn!(route = %self.route, "max_qps spent on every upstream: answering from stale cache or SERVFAIL (logged at most every 10s)");
            }
            return Outcome::OverBudget;
        }

        loop {
            // One timer for whichever comes first: the newest try's timeout or the
            // deadline (two timers per query were 5% of a forwarded query's
            // instructions). The try timeout is off once every try is launched and the
            // newest one counted, so an expired timer cannot spin.
            let try_timer_on =
                next < plan_len || tries.last().is_some_and(|t| t.1 == TryState::Running);
            let wake = if try_timer_on {
                try_timer.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                biased;
                Some((n, result)) = running.next() => {
                    let (idx, state) = tries[n];
                    tries[n].1 = TryState::Done;
                    let addr = self.upstreams[idx].addr;
                    match result {
                        TryResult::Final(answer) => {
                            self.success(idx);
                            return Outcome::Reply { answer, upstream: addr };
                        }
                        TryResult::Soft(answer) => {
                            self.success(idx);
                            tracing::debug!(route = %self.route, upstream = %addr, rcode = %rcode::name(answer.reply.rcode), truncated = answer.reply.truncated, "trying the next upstream");
                            fallback = Some((answer, addr));
                        }
                        TryResult::Failed(e) => {
                            tracing::debug!(route = %self.route, upstream = %addr, error = %e, "upstream try failed");
                            self.upstreams[idx].stats.errors.fetch_add(1, Ordering::Relaxed);
                            if state == TryState::Running {
                                self.failure(idx);
                            }
                        }
                    }
                    match launch(&mut tries, &mut next, &mut try_timer) {
                        Some(t) => running.push(t),
                        None if running.is_empty() => break,
                        None => {}
                    }
                }
                _ = sleep_until(wake), if wake < deadline => {
                    // The newest try is overdue: count it, start the next if any.
                    if let Some(t) = tries.last_mut() {
                        if t.1 == TryState::Running {
                            t.1 = TryState::Overdue;
                            self.upstreams[t.0].stats.timeouts.fetch_add(1, Ordering::Relaxed);
                            self.failure(t.0);
                        }
                    }
                    if let Some(t) = launch(&mut tries, &mut next, &mut try_timer) {
                        running.push(t);
                    }
                }
                _ = sleep_until(deadline), if wake == deadline => {
                    for t in tries.iter().filter(|t| t.1 == TryState::Running) {
                        self.upstreams[t.0].stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        self.failure(t.0);
                    }
                    break;
                }
            }
        }
        match fallback {
            Some((answer, upstream)) => Outcome::Reply { answer, upstream },
            None => Outcome::Failed,
        }
    }

    fn success(&self, idx: usize) {
        let u = &self.upstreams[idx];
        let before = u.fails.swap(0, Ordering::Relaxed);
        if self.max_fails > 0 && before >= self.max_fails {
            tracing::info!(route = %self.route, upstream = %u.addr, "upstream answers again; back in rotation");
        }
    }

    fn failure(&self, idx: usize) {
        let u = &self.upstreams[idx];
        let now = u.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_fails > 0 && now == self.max_fails {
            tracing::warn!(route = %self.route, upstream = %u.addr, failures = now, "upstream marked down; probing it every {}", humantime::format_duration(self.health_check));
            self.spawn_probe(idx);
        }
    }

    /// Probes a down upstream with `. NS` until it answers (any reply counts: the
    /// server is there) or the server stops.
    fn spawn_probe(&self, idx: usize) {
        let u = Arc::clone(&self.upstreams[idx]);
        if self.life.shutdown.is_cancelled() || u.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (interval, per_probe, max_fails) =
            (self.health_check, self.try_timeout, self.max_fails);
        let shutdown = self.life.shutdown.clone();
        let route = self.route.clone();
        self.life.tasks.spawn(async move {
            let probe = probe_query();
            while u.consecutive_failures() >= max_fails {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                let ok = matches!(
                    tokio::time::timeout(per_probe, exchange::udp(u.addr, &probe, true, &u.stats.mismatched)).await,
                    Ok(Ok(_))
                );
                if ok {
                    u.fails.store(0, Ordering::Relaxed);
                    tracing::info!(route = %route, upstream = %u.addr, "health probe answered; upstream back in rotation");
                }
            }
            u.probing.store(false, Ordering::Release);
        });
    }
}

fn probe_query() -> Query {
    Query::own(vec![0], wire::TYPE_NS)
}

/// One try against one upstream: UDP with EDNS; once more without EDNS if the server
/// answers FORMERR without an OPT (RFC 6891 section 7: it predates EDNS); over TCP if
/// the reply is truncated.
async fn one_try(u: &Upstream, q: &Query) -> TryResult {
    let (addr, mismatched) = (u.addr, &u.stats.mismatched);
    let mut edns = true;
    let mut answer = match exchange::udp_pooled(&u.pool, addr, q, edns, mismatched).await {
        Ok(a) => a,
        // Bigger than we take over UDP: as if truncated.
        Err(TryError::Oversize) => match exchange::tcp(addr, q, edns, mismatched).await {
            Ok(a) => return classify(a),
            Err(e) => return TryResult::Failed(e),
        },
        Err(e) => return TryResult::Failed(e),
    };
    if answer.reply.rcode == rcode::FORMERR && answer.reply.opt.is_none() {
        edns = false;
        answer = match exchange::udp(addr, q, edns, mismatched).await {
            Ok(a) => a,
            Err(e) => return TryResult::Failed(e),
        };
    }
    if answer.reply.truncated {
        match exchange::tcp(addr, q, edns, mismatched).await {
            Ok(a) => answer = a,
            Err(e) => {
                // Some hosts block TCP to the cloud resolver (Azure's guest agent
                // firewall for non-root processes): keep the truncated reply so the
                // client at least learns it was truncated, and try elsewhere.
                tracing::debug!(upstream = %addr, error = %e, "tcp retry after a truncated reply failed");
                return TryResult::Soft(answer);
            }
        }
    }
    classify(answer)
}

/// SERVFAIL, REFUSED and a truncated reply ask for the next upstream; anything else
/// is the answer.
fn classify(answer: Answer) -> TryResult {
    match answer.reply.rcode {
        rcode::SERVFAIL | rcode::REFUSED => TryResult::Soft(answer),
        _ if answer.reply.truncated => TryResult::Soft(answer),
        _ => TryResult::Final(answer),
    }
}
