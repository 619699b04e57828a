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
//!
//! Over UDP, a try also gets a retransmission before `try_timeout` once it outlives
//! its upstream's retransmit threshold (`latency`: the 99th percentile of that
//! upstream's answer times, at least 10 ms), while the route's `retransmit_budget`
//! allows (`retransmit`): a lost datagram then costs about that threshold, not
//! `try_timeout`. Such an early retransmission is not a failure of the late try, which
//! stays open as any other; if the query ends first, the try is watched to its own
//! `try_timeout` (`orphan`), so its answer or its silence still counts. When every UDP
//! try is spent unanswered, the last goes over TCP (`launch_over_tcp`).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::seq::SliceRandom;
use tokio::sync::futures::Notified;
use tokio::time::{sleep_until, Instant};

use crate::config::{UpstreamOrder, UpstreamTransport};
use crate::dnstap::{QueryTap, TryTap};
use crate::outcome::{AnsweredBy, Outcome, RetransmitReason};
use crate::upstream::attempt::{one_try, Verdict};
use crate::upstream::exchange::{Exchanged, TryError};
use crate::upstream::orphan::Orphan;
use crate::upstream::probe;
use crate::upstream::set::UpstreamSet;
use crate::upstream::udp::{SetAside, SetAsideTries};
use crate::upstream::upstream::Upstream;
use crate::wire::{self, rcode, Query};

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

/// One try launched.
#[derive(Debug, Clone, Copy)]
struct Launched {
    /// Its upstream's index in the set.
    idx: usize,
    state: TryState,
    sent: Instant,
    /// Why a newer try doubled it while it was unanswered, if one did.
    doubled: Option<RetransmitReason>,
}

/// One query's tries: the plan (each upstream in order, then each once more), the
/// tries launched so far, and the best soft reply yet.
struct Tries<'a> {
    set: &'a UpstreamSet,
    q: &'a Query,
    order: Vec<usize>,
    next: usize,
    launched: Vec<Launched>,
    fallback: Option<(Exchanged, AnsweredBy)>,
    /// Where a try dropped unanswered leaves its socket (`orphan`).
    set_aside: &'a SetAsideTries,
    /// When the newest try becomes overdue.
    try_timer: Instant,
    /// When the newest try is late by its upstream's measure and may be retransmitted
    /// early; `None` without a model, over TCP, or with `retransmit_budget = 0`.
    late_at: Option<Instant>,
    /// Early retransmissions so far: each doubles the wait before the next (RFC 6298
    /// section 5.5's backoff), so a slow name the model has not caught up with costs
    /// one wasted query, not one per try.
    early: u32,
    /// A UDP route's last resort is left (`launch_over_tcp`).
    tcp_left: bool,
    /// When the newest try starts to watch for its upstream being marked down (the
    /// try timer, once it does).
    watch_from: Instant,
    /// The newest try's watch, once it is slow.
    watch: DownWatch<'a>,
    /// dnstap, when the route sends forwarded tries.
    tap: Option<&'a QueryTap<'a>>,
}

impl<'a> Tries<'a> {
    fn plan_len(&self) -> usize {
        match self.order.len() {
            1 if self.fallback.is_none() => 3,
            n => 2 * n,
        }
    }

    /// The next try whose upstream has budget left, to be run; none when none has.
    /// `doubling`: why it starts while the newest try is unanswered, if it does.
    fn launch(&mut self, doubling: Option<RetransmitReason>) -> Option<TryFuture<'a>> {
        let set = self.set;
        while self.next < self.plan_len() {
            let idx = self.order[self.next % self.order.len()];
            self.next += 1;
            if set.upstreams[idx].within_budget(&*set.life.clock) {
                return Some(self.start(idx, set.transport, doubling));
            }
        }
        None
    }

    /// Every UDP try is spent and none has been answered: one more to the first
    /// upstream, over TCP. RFC 9520 section 3.2 counts sends per server and transport,
    /// so this is not a fourth UDP send; a lossy path loses datagrams, and TCP
    /// retransmits them itself. Early retransmission spends the UDP tries within
    /// milliseconds, which leaves the route's deadline for this.
    fn launch_over_tcp(&mut self, doubling: Option<RetransmitReason>) -> Option<TryFuture<'a>> {
        if !self.tcp_left || self.fallback.is_some() {
            return None;
        }
        self.tcp_left = false;
        let idx = self.order[0];
        self.set.upstreams[idx]
            .within_budget(&*self.set.life.clock)
            .then(|| self.start(idx, UpstreamTransport::Tcp, doubling))
    }

    /// Sends a try to `set.upstreams[idx]` over `transport`, now; `doubling` says why,
    /// when it retransmits an unanswered try (for dnstap).
    fn start(
        &mut self,
        idx: usize,
        transport: UpstreamTransport,
        doubling: Option<RetransmitReason>,
    ) -> TryFuture<'a> {
        let set = self.set;
        let n = self.launched.len();
        let now = Instant::now();
        self.launched.push(Launched {
            idx,
            state: TryState::Running,
            sent: now,
            doubled: None,
        });
        let u = &set.upstreams[idx];
        u.stats.sent.fetch_add(1, Ordering::Relaxed);
        self.try_timer = now + set.try_timeout;
        self.watch_from = now + watch_after(set.try_timeout);
        self.late_at = set
            .retransmit_after(u)
            .filter(|_| transport == UpstreamTransport::Udp)
            .map(|after| match self.early {
                0 => now + after,
                k => now + after * (1 << k.min(8)),
            });
        let q = self.q;
        let set_aside = SetAside {
            bin: self.set_aside,
            n,
        };
        let tap = self.tap.map(|query| TryTap {
            query,
            retransmission: doubling,
        });
        Box::pin(async move { (n, one_try(u, q, transport, set_aside, tap.as_ref()).await) })
    }

    /// What to wait for besides the tries: the newest try's late mark, its watch or
    /// timeout, or the deadline. The try timeout is off once every try is launched and
    /// the newest one counted, so an expired timer cannot spin.
    fn wake(&self, deadline: Instant) -> Instant {
        let timer_on = self.next < self.plan_len()
            || (self.tcp_left && self.fallback.is_none())
            || self
                .launched
                .last()
                .is_some_and(|t| t.state == TryState::Running);
        let mut wake = deadline;
        if timer_on {
            wake = wake.min(self.watch_from);
        }
        if let Some(late) = self.late_at {
            wake = wake.min(late);
        }
        wake
    }

    /// The timer fired before the deadline: whether the newest try is to be doubled
    /// now, and why. Late by its upstream's measure (budget allowing); overdue; or
    /// slow and its upstream, watched from now on, down already.
    fn due(&mut self, now: Instant) -> Option<RetransmitReason> {
        if now >= self.try_timer {
            return Some(RetransmitReason::Timeout);
        }
        if self.late_at.is_some_and(|late| now >= late) {
            self.late_at = None;
            if self.may_retransmit_early() {
                return Some(RetransmitReason::Late);
            }
        }
        if now >= self.watch_from {
            self.watch_from = self.try_timer;
            if self.watch_newest() {
                return Some(RetransmitReason::Timeout);
            }
        }
        None
    }

    /// The newest try is late: it is unanswered, a next try is planned, and its
    /// upstream's wasted retransmissions leave room for one more.
    fn may_retransmit_early(&self) -> bool {
        let Some(t) = self.launched.last() else {
            return false;
        };
        if t.state != TryState::Running || (self.next >= self.plan_len() && !self.tcp_left) {
            return false;
        }
        let stats = &self.set.upstreams[t.idx].stats;
        let allowed = self.set.upstreams[t.idx].retransmit_budget.allows(
            self.set.retransmit_budget,
            &stats.sent,
            &stats.retransmits_wasted,
            self.early,
        );
        if !allowed {
            stats.retransmits_held.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Starts watching the newest try's upstream for a down mark: true when it is
    /// down already. Only worth it when the next try would go elsewhere: a lone
    /// upstream's retransmission keeps its own timer.
    fn watch_newest(&mut self) -> bool {
        match self.launched.last() {
            Some(t)
                if t.state == TryState::Running
                    && self.next < self.plan_len()
                    && self.order[self.next % self.order.len()] != t.idx =>
            {
                self.watch.watch(&self.set.upstreams[t.idx])
            }
            _ => false,
        }
    }

    /// Try `n` ended: the answer to relay, or `None` to go on.
    fn ended(&mut self, n: usize, verdict: Verdict) -> Option<Outcome<Exchanged>> {
        let set = self.set;
        let Launched {
            idx,
            state,
            sent,
            doubled,
        } = self.launched[n];
        self.launched[n].state = TryState::Done;
        self.watch.clear();
        let addr = set.upstreams[idx].addr;
        let stats = &set.upstreams[idx].stats;
        if !matches!(verdict, Verdict::Failed(_)) {
            stats.record_rtt(sent.elapsed());
            if doubled == Some(RetransmitReason::Late) {
                stats.retransmits_wasted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let by = AnsweredBy::new(addr, self.retransmission(n));
        match verdict {
            Verdict::Final(answer) => {
                answered(set, idx);
                return Some(Outcome::Answered { answer, by });
            }
            Verdict::Soft(answer) => {
                answered(set, idx);
                tracing::debug!(route = %set.route, upstream = %addr, rcode = %rcode::name(answer.reply.rcode), truncated = answer.reply.truncated, "trying the next upstream");
                self.fallback = Some((answer, by));
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

    /// Whether try `n` was a retransmission, and why: the reason its predecessor was
    /// doubled, when that one was still unanswered.
    fn retransmission(&self, n: usize) -> Option<RetransmitReason> {
        n.checked_sub(1).and_then(|p| self.launched[p].doubled)
    }

    /// The newest try is given up on (overdue, or its upstream marked down): it, and
    /// every older try still running past its own `try_timeout`, is counted as failed.
    fn overdue(&mut self) {
        let now = Instant::now();
        let (set, last) = (self.set, self.launched.len().saturating_sub(1));
        for (n, t) in self.launched.iter_mut().enumerate() {
            if t.state != TryState::Running || (n != last && now < t.sent + set.try_timeout) {
                continue;
            }
            timed_out(set, t);
        }
    }

    /// Doubles the newest try with the next one, for `reason`. A late try stays
    /// running, not failed; an overdue one is counted.
    fn retransmit(&mut self, reason: RetransmitReason, running: &mut Running<'a>) {
        let newest = self.launched.len() - 1;
        let unanswered = self.launched[newest].state == TryState::Running;
        match reason {
            RetransmitReason::Timeout => {
                self.watch.clear();
                self.overdue();
            }
            RetransmitReason::Late => self.early += 1,
        }
        let doubling = unanswered.then_some(reason);
        let next = self
            .launch(doubling)
            .or_else(|| self.launch_over_tcp(doubling));
        let Some(t) = next else {
            return;
        };
        running.push(t);
        if unanswered {
            let doubled = &mut self.launched[newest];
            doubled.doubled = Some(reason);
            let stats = &self.set.upstreams[doubled.idx].stats;
            match reason {
                RetransmitReason::Late => &stats.retransmits_late,
                RetransmitReason::Timeout => &stats.retransmits_timeout,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The deadline ended every try still running: each counts as a timeout.
    fn expired(&mut self) {
        let set = self.set;
        for t in self
            .launched
            .iter_mut()
            .filter(|t| t.state == TryState::Running)
        {
            timed_out(set, t);
        }
    }

    /// The query ended with tries still running (their futures dropped, their sockets
    /// set aside): the ones doubled early are watched to their own `try_timeout`.
    fn adopt_orphans(&self) {
        let set = self.set;
        for (n, unanswered) in self.set_aside.take() {
            let t = self.launched[n];
            if t.state != TryState::Running || t.doubled != Some(RetransmitReason::Late) {
                continue;
            }
            Orphan {
                upstream: Arc::clone(&set.upstreams[t.idx]),
                unanswered,
                sent: t.sent,
                until: t.sent + set.try_timeout,
            }
            .watch(set.probe_plan());
        }
    }

    /// Nothing better came: the last soft reply, if any.
    fn give_up(&mut self) -> Outcome<Exchanged> {
        match self.fallback.take() {
            Some((answer, by)) => Outcome::Answered { answer, by },
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
            Outcome::Answered { answer, by } if answer.reply.rcode == rcode::NXDOMAIN => {
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
                    _ => Outcome::Answered { answer, by },
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
        let set_aside = SetAsideTries::default();
        let tap = self.query_tap(q);
        let mut tries = Tries {
            set: self,
            q,
            launched: Vec::with_capacity(2 * order.len()),
            order,
            next: 0,
            fallback: None,
            set_aside: &set_aside,
            try_timer: started,
            late_at: None,
            early: 0,
            tcp_left: self.transport == UpstreamTransport::Udp,
            watch_from: started,
            watch: DownWatch(None),
            tap: tap.as_ref(),
        };
        let mut running = Running::Idle;
        let Some(first) = tries.launch(None) else {
            if self.budget_warning.ready() {
                tracing::warn!(route = %self.route, "max_qps spent on every upstream: answering from stale cache or SERVFAIL (logged at most every 10s)");
            }
            return Outcome::OverBudget;
        };
        running.push(first);
        let out = tries.run(&mut running, deadline).await;
        // The tries still running leave their sockets in `set_aside` as they go; only
        // a try doubled early is watched after its query.
        drop(running);
        if tries.early > 0 {
            tries.adopt_orphans();
        }
        out
    }
}

impl<'a> Tries<'a> {
    /// Until a try's reply is the answer, every try has ended, or the deadline.
    async fn run(&mut self, running: &mut Running<'a>, deadline: Instant) -> Outcome<Exchanged> {
        loop {
            // One timer for whichever comes first, not one per kind of wait.
            let wake = self.wake(deadline);
            tokio::select! {
                biased;
                Some((n, verdict)) = running.next() => {
                    if let Some(out) = self.ended(n, verdict) {
                        return out;
                    }
                    match self.launch(None) {
                        Some(t) => running.push(t),
                        None if running.is_empty() => break,
                        None => {}
                    }
                }
                _ = self.watch.fired() => self.retransmit(RetransmitReason::Timeout, running),
                _ = sleep_until(wake), if wake < deadline => {
                    if let Some(reason) = self.due(Instant::now()) {
                        self.retransmit(reason, running);
                    }
                }
                _ = sleep_until(deadline), if wake == deadline => {
                    self.expired();
                    break;
                }
            }
        }
        self.give_up()
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
    probe::try_answered(&set.route, &set.upstreams[idx]);
}

/// Try `t`, still running, has timed out: counted as a timeout and a failure once,
/// and left open (`Overdue`) for a late answer.
fn timed_out(set: &UpstreamSet, t: &mut Launched) {
    t.state = TryState::Overdue;
    set.upstreams[t.idx]
        .stats
        .timeouts
        .fetch_add(1, Ordering::Relaxed);
    failed(set, t.idx, t.sent);
}

/// A try to `set.upstreams[idx]`, sent at `sent`, failed: counted towards
/// `max_fails`, and the upstream probed once that marks it down.
fn failed(set: &UpstreamSet, idx: usize, sent: Instant) {
    probe::try_failed(&set.upstreams[idx], sent, || set.probe_plan());
}

fn watch_after(try_timeout: Duration) -> Duration {
    (try_timeout / WATCH_AFTER_SHARE).min(WATCH_AFTER_MAX)
}
