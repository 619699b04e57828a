//! What a query does with its route's upstreams: `resolve` (forward, then the route's
//! NXDOMAIN fallback and private-answer guard) and the try loop under it.
//!
//! The try loop forwards one query within its route's deadline. Tries go to the
//! upstreams in the route's order (`policy`: the healthy ones, sequential, round
//! robin or random), each upstream at most twice; a lone upstream (the cloud
//! resolver is one address) gets a third try while none of its tries has been
//! answered, so that a lost datagram costs a retransmission, not a SERVFAIL: with 5%
//! loss each way, two tries leave about 1% of queries unanswered, three about 0.1%
//! (RFC 9520 section 3.2 allows two retries). A try that fails, or answers
//! SERVFAIL/REFUSED, starts the next one at once; a try that is merely slow starts
//! the next one after `try_timeout` but stays open, so a late answer still wins until
//! the deadline.
//!
//! A try still waiting after a tenth of `try_timeout` (at most 100 ms) also waits for
//! its upstream to be marked down by other queries' tries, and starts the next try
//! then: when an upstream goes silent under a steady stream, only the `max_fails`
//! queries whose timeouts mark it down pay the whole `try_timeout`; the ones in flight
//! with them fail over at that moment, and the ones after skip it. Answers that come
//! quickly never reach the watch.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::seq::SliceRandom;
use tokio::sync::futures::Notified;
use tokio::time::{sleep_until, Instant};

use crate::config::{UpstreamOrder, UpstreamTransport};
use crate::outcome::Outcome;
use crate::upstream::exchange::{Exchanged, TryError};
use crate::upstream::probe;
use crate::upstream::set::UpstreamSet;
use crate::upstream::upstream::Upstream;
use crate::wire::{self, rcode, Query};

/// What one try's reply means for the query.
enum Verdict {
    /// Relay it and stop.
    Final(Exchanged),
    /// A reply, but one that asks for the next upstream (SERVFAIL, REFUSED, or TC
    /// with TCP unavailable): kept in case nothing better comes.
    Soft(Exchanged),
    Failed(TryError),
}

/// When a try starts to watch its upstream's mark: this share of `try_timeout`, and
/// at most `WATCH_AFTER_MAX`.
const WATCH_AFTER_SHARE: u32 = 10;
const WATCH_AFTER_MAX: Duration = Duration::from_millis(100);

type TryFuture<'a> = Pin<Box<dyn std::future::Future<Output = (usize, Verdict)> + Send + 'a>>;

/// A slow try's watch on its upstream being marked down (`Upstream::marked_down`).
struct DownWatch<'a>(Option<Pin<Box<Notified<'a>>>>);

impl<'a> DownWatch<'a> {
    /// Watches `u`; true when it is down already.
    fn watch(&mut self, u: &'a Upstream) -> bool {
        let mut notified = Box::pin(u.health.when_marked_down());
        // Registered before the mark is read, so a mark made in between still wakes it.
        notified.as_mut().enable();
        if u.is_marked_down() {
            self.0 = None;
            return true;
        }
        self.0 = Some(notified);
        false
    }

    fn clear(&mut self) {
        self.0 = None;
    }

    /// When the watched upstream is marked down; never when none is watched.
    async fn fired(&mut self) {
        match &mut self.0 {
            Some(notified) => notified.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

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
    async fn next(&mut self) -> Option<(usize, Verdict)> {
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

/// One query's tries: the plan (each upstream in order, then each once more), the
/// tries launched so far, and the best soft reply yet.
struct Tries<'a> {
    set: &'a UpstreamSet,
    q: &'a Query,
    order: Vec<usize>,
    next: usize,
    /// Per try launched: upstream index, state, and when it was sent.
    launched: Vec<(usize, TryState, Instant)>,
    fallback: Option<(Exchanged, SocketAddr)>,
    /// When the newest try becomes overdue.
    try_timer: Instant,
    /// When the newest try starts to watch for its upstream being marked down (the
    /// try timer, once it does).
    watch_from: Instant,
    /// The newest try's watch, once it is slow.
    watch: DownWatch<'a>,
}

impl<'a> Tries<'a> {
    fn plan_len(&self) -> usize {
        match self.order.len() {
            1 if self.fallback.is_none() => 3,
            n => 2 * n,
        }
    }

    /// The next try whose upstream has budget left, to be run; none when none has.
    fn launch(&mut self) -> Option<TryFuture<'a>> {
        let set = self.set;
        while self.next < self.plan_len() {
            let idx = self.order[self.next % self.order.len()];
            self.next += 1;
            if !set.upstreams[idx].within_budget(&*set.life.clock) {
                continue;
            }
            let n = self.launched.len();
            let now = Instant::now();
            self.launched.push((idx, TryState::Running, now));
            let u = &set.upstreams[idx];
            u.stats.sent.fetch_add(1, Ordering::Relaxed);
            self.try_timer = now + set.try_timeout;
            self.watch_from = now + watch_after(set.try_timeout);
            let (q, transport) = (self.q, set.transport);
            return Some(Box::pin(async move { (n, one_try(u, q, transport).await) }));
        }
        None
    }

    /// What to wait for besides the tries: the newest try's timeout, or the deadline.
    /// The try timeout is off once every try is launched and the newest one counted,
    /// so an expired timer cannot spin.
    fn wake(&self, deadline: Instant) -> Instant {
        let timer_on = self.next < self.plan_len()
            || self
                .launched
                .last()
                .is_some_and(|t| t.1 == TryState::Running);
        if timer_on {
            self.watch_from.min(deadline)
        } else {
            deadline
        }
    }

    /// The timer fired before the deadline: true when the newest try is overdue, or
    /// its upstream, watched from now on, is down already; either way the caller
    /// moves on.
    fn timer(&mut self, now: Instant) -> bool {
        if now >= self.try_timer {
            return true;
        }
        self.watch_from = self.try_timer;
        match self.launched.last() {
            // Only worth it when the next try would go elsewhere: a lone upstream's
            // retransmission keeps its own timer.
            Some(&(idx, TryState::Running, _))
                if self.next < self.plan_len()
                    && self.order[self.next % self.order.len()] != idx =>
            {
                self.watch.watch(&self.set.upstreams[idx])
            }
            _ => false,
        }
    }

    /// Try `n` ended: the answer to relay, or `None` to go on.
    fn ended(&mut self, n: usize, verdict: Verdict) -> Option<Outcome<Exchanged>> {
        let set = self.set;
        let (idx, state, sent) = self.launched[n];
        self.launched[n].1 = TryState::Done;
        self.watch.clear();
        let addr = set.upstreams[idx].addr;
        if !matches!(verdict, Verdict::Failed(_)) {
            set.upstreams[idx].stats.record_rtt(sent.elapsed());
        }
        match verdict {
            Verdict::Final(answer) => {
                answered(set, idx);
                return Some(Outcome::Answered {
                    answer,
                    upstream: addr,
                });
            }
            Verdict::Soft(answer) => {
                answered(set, idx);
                tracing::debug!(route = %set.route, upstream = %addr, rcode = %rcode::name(answer.reply.rcode), truncated = answer.reply.truncated, "trying the next upstream");
                self.fallback = Some((answer, addr));
            }
            Verdict::Failed(TryError::Busy) => {
                // Our own limit, not the upstream's failure: not counted against it.
                if set.local_warning.ready() {
                    tracing::warn!(route = %set.route, upstream = %addr, "every kept tcp connection to the upstream is full: trying the next upstream (logged at most every 10s)");
                }
            }
            Verdict::Failed(TryError::NoSocket(e)) => {
                // Out of descriptors here: a healthy upstream must not be marked down
                // for it, nor each query logged.
                if set.local_warning.ready() {
                    tracing::warn!(route = %set.route, upstream = %addr, error = %e, "cannot open a socket to the upstream: answering SERVFAIL or stale until descriptors free up (raise LimitNOFILE or max_inflight down; logged at most every 10s)");
                }
            }
            Verdict::Failed(e) => {
                tracing::debug!(route = %set.route, upstream = %addr, error = %e, "upstream try failed");
                set.upstreams[idx]
                    .stats
                    .errors
                    .fetch_add(1, Ordering::Relaxed);
                if state == TryState::Running {
                    failed(set, idx, sent);
                }
            }
        }
        None
    }

    /// The newest try is overdue: its failure is counted now.
    fn overdue(&mut self) {
        if let Some(t) = self.launched.last_mut() {
            if t.1 == TryState::Running {
                t.1 = TryState::Overdue;
                self.set.upstreams[t.0]
                    .stats
                    .timeouts
                    .fetch_add(1, Ordering::Relaxed);
                failed(self.set, t.0, t.2);
            }
        }
    }

    /// The newest try is given up on (overdue, or its upstream marked down): counted,
    /// and the next one started.
    fn move_on(&mut self, running: &mut Running<'a>) {
        self.watch.clear();
        self.overdue();
        if let Some(t) = self.launch() {
            running.push(t);
        }
    }

    /// The deadline ended every try still running: each counts as a timeout.
    fn expired(&self) {
        for t in self.launched.iter().filter(|t| t.1 == TryState::Running) {
            self.set.upstreams[t.0]
                .stats
                .timeouts
                .fetch_add(1, Ordering::Relaxed);
            failed(self.set, t.0, t.2);
        }
    }

    /// Nothing better came: the last soft reply, if any.
    fn give_up(self) -> Outcome<Exchanged> {
        match self.fallback {
            Some((answer, upstream)) => Outcome::Answered { answer, upstream },
            None => Outcome::Failed,
        }
    }
}

impl UpstreamSet {
    /// What a resolution through this route gives: `forward`, then the route's
    /// NXDOMAIN fallback and private-answer guard.
    pub async fn resolve(&self, q: &Query) -> Outcome<Exchanged> {
        // Boxed: it keeps the state of a forwarded query in two allocations under 1 KiB
        // each, mimalloc's fast path, instead of one over it (`listen::udp::small`).
        let out = Box::pin(self.forward(q)).await;
        let Some(fallback) = self.fallback.get() else {
            return self.guarded(q, out);
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
                    out @ Outcome::Answered { .. } => fallback.guarded(q, out),
                    // The fallback had nothing: the NXDOMAIN stands.
                    _ => Outcome::Answered { answer, upstream },
                }
            }
            out => self.guarded(q, out),
        }
    }

    /// The route's private-answer guard on `out`, if it has one.
    fn guarded(&self, q: &Query, out: Outcome<Exchanged>) -> Outcome<Exchanged> {
        match &self.guard {
            Some(guard) => guard.check(&self.route, q, out),
            None => out,
        }
    }

    /// Forwards `q` within the route's deadline (see the module doc for the plan).
    pub async fn forward(&self, q: &Query) -> Outcome<Exchanged> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let order = order(self);
        if order.is_empty() {
            if self.budget_warning.ready() {
                tracing::warn!(route = %self.route, "no upstream of this route is in rotation (taken out by hand, or in a forwarding loop): answering from stale cache or SERVFAIL (logged at most every 10s)");
            }
            return Outcome::Failed;
        }
        let mut tries = Tries {
            set: self,
            q,
            launched: Vec::with_capacity(2 * order.len()),
            order,
            next: 0,
            fallback: None,
            try_timer: started,
            watch_from: started,
            watch: DownWatch(None),
        };
        let mut running = Running::Idle;
        let Some(first) = tries.launch() else {
            if self.budget_warning.ready() {
                tracing::warn!(route = %self.route, "max_qps spent on every upstream: answering from stale cache or SERVFAIL (logged at most every 10s)");
            }
            return Outcome::OverBudget;
        };
        running.push(first);
        loop {
            // One timer for whichever comes first, not one per kind of wait.
            let wake = tries.wake(deadline);
            tokio::select! {
                biased;
                Some((n, verdict)) = running.next() => {
                    if let Some(out) = tries.ended(n, verdict) {
                        return out;
                    }
                    match tries.launch() {
                        Some(t) => running.push(t),
                        None if running.is_empty() => break,
                        None => {}
                    }
                }
                _ = tries.watch.fired() => tries.move_on(&mut running),
                _ = sleep_until(wake), if wake < deadline => {
                    if tries.timer(Instant::now()) {
                        tries.move_on(&mut running);
                    }
                }
                _ = sleep_until(deadline), if wake == deadline => {
                    tries.expired();
                    break;
                }
            }
        }
        tries.give_up()
    }
}

/// Upstream indexes in the order this query will try them: the ones in rotation in
/// the route's `policy` order, or, when none is, every one still usable (a guess beats
/// a SERVFAIL). An upstream in a forwarding loop is never tried (the query would only
/// come back), nor one taken out by hand.
fn order(set: &UpstreamSet) -> Vec<usize> {
    let ups = &set.upstreams;
    let mut order: Vec<usize> = (0..ups.len()).filter(|&i| ups[i].in_rotation()).collect();
    if order.is_empty() {
        order.extend((0..ups.len()).filter(|&i| ups[i].usable()));
    }
    if order.is_empty() {
        return order;
    }
    match set.order {
        UpstreamOrder::Sequential => {}
        UpstreamOrder::RoundRobin => {
            let k = set.rr.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(k);
        }
        UpstreamOrder::Random => order.shuffle(&mut rand::rng()),
    }
    order
}

/// A try to `set.upstreams[idx]` was answered (anything): its failures in a row end.
fn answered(set: &UpstreamSet, idx: usize) {
    let u = &set.upstreams[idx];
    if u.health.answered() {
        tracing::info!(route = %set.route, upstream = %u.addr, "upstream answers again; back in rotation");
    }
}

/// A try to `set.upstreams[idx]`, sent at `sent`, failed: counted towards
/// `max_fails`, and the upstream probed once that marks it down.
fn failed(set: &UpstreamSet, idx: usize, sent: Instant) {
    let u = &set.upstreams[idx];
    if u.health.failed(sent) {
        probe::probe_until_back(u, set.probe_plan());
    }
}

fn watch_after(try_timeout: Duration) -> Duration {
    (try_timeout / WATCH_AFTER_SHARE).min(WATCH_AFTER_MAX)
}

/// One try against one upstream, over the route's transport.
async fn one_try(u: &Upstream, q: &Query, transport: UpstreamTransport) -> Verdict {
    match transport {
        UpstreamTransport::Udp => udp_try(u, q).await,
        UpstreamTransport::Tcp => tcp_try(u, q).await,
    }
}

/// UDP with EDNS; once more without EDNS if the server answers FORMERR without an OPT
/// (RFC 6891 section 7: it predates EDNS); over a kept TCP connection if the reply is
/// truncated (RFC 7766 section 5) or larger than we take over UDP.
async fn udp_try(u: &Upstream, q: &Query) -> Verdict {
    let addr = u.addr;
    let mut edns = true;
    let mut answer = match u.udp.exchange(q, edns).await {
        Ok(a) => a,
        Err(TryError::Oversize(_)) => return tcp_verdict(u.tcp.exchange(q, edns).await),
        Err(e) => return Verdict::Failed(e),
    };
    if is_pre_edns(&answer) {
        edns = false;
        answer = match u.udp.exchange(q, edns).await {
            Ok(a) => a,
            Err(e) => return Verdict::Failed(e),
        };
    }
    if answer.reply.truncated {
        match u.tcp.exchange(q, edns).await {
            Ok(a) => answer = a,
            Err(e) => {
                // Some hosts block TCP to the cloud resolver (Azure's guest agent
                // firewall for non-root processes): keep the truncated reply so the
                // client at least learns it was truncated, and try elsewhere.
                tracing::debug!(upstream = %addr, error = %e, "tcp retry after a truncated reply failed");
                return Verdict::Soft(answer);
            }
        }
    }
    classify(answer)
}

/// Every query over a kept TCP connection (`transport = "tcp"`), with the same
/// FORMERR-without-OPT retry as UDP.
async fn tcp_try(u: &Upstream, q: &Query) -> Verdict {
    match u.tcp.exchange(q, true).await {
        Ok(a) if is_pre_edns(&a) => tcp_verdict(u.tcp.exchange(q, false).await),
        answered => tcp_verdict(answered),
    }
}

fn tcp_verdict(answered: Result<Exchanged, TryError>) -> Verdict {
    match answered {
        Ok(a) => classify(a),
        Err(e) => Verdict::Failed(e),
    }
}

/// FORMERR without an OPT: a server that predates EDNS (RFC 6891 section 7).
fn is_pre_edns(answer: &Exchanged) -> bool {
    answer.reply.rcode == rcode::FORMERR && answer.reply.opt.is_none()
}

/// SERVFAIL, REFUSED and a truncated reply ask for the next upstream; anything else
/// is the answer.
fn classify(answer: Exchanged) -> Verdict {
    match answer.reply.rcode {
        rcode::SERVFAIL | rcode::REFUSED => Verdict::Soft(answer),
        _ if answer.reply.truncated => Verdict::Soft(answer),
        _ => Verdict::Final(answer),
    }
}
