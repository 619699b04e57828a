//! Query coalescing: one upstream resolution per question in flight.
//!
//! Identical questions that arrive while one is being resolved wait for that one's
//! answer instead of sending their own. Besides sparing the upstream (Azure drops what
//! exceeds 1000 qps per VM), this closes the birthday attack on forwarders: without
//! it an attacker triggers many identical upstream queries and races forged replies
//! against all of them at once (RFC 5452 section 5, dnsmasq's DNSpooq
//! CVE-2020-25686).
//!
//! A resolution outlives any client who stops waiting for it: it runs in the task
//! of the client that started it, which runs to its end whatever the client does,
//! or, when that client may give up early (a stale answer at hand), in a task of its
//! own. The other waiters and the cache always get its result.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::FutureExt;
use hashbrown::hash_table::{Entry, HashTable};
use quick_cache::Equivalent;
use tokio::sync::Notify;

use crate::cache::{Cache, CacheKey, KeyRef, Stored};
use crate::claims::Claims;
use crate::config::CachePolicy;
use crate::life::Lifecycle;
use crate::outcome::Outcome;
use crate::upstream::UpstreamSet;
use crate::wire::{self, rcode, Normalized, Query};

/// An answer as its waiters share it: the cache entry it became, or the reply alone
/// when it was not cached.
#[derive(Debug)]
pub enum SharedAnswer {
    Cached(Arc<Stored>),
    Uncached(Normalized),
}

impl std::ops::Deref for SharedAnswer {
    type Target = Normalized;

    fn deref(&self) -> &Normalized {
        match self {
            SharedAnswer::Cached(stored) => &stored.reply,
            SharedAnswer::Uncached(reply) => reply,
        }
    }
}

/// How a resolution ended, as every waiter sees it.
pub type Resolution = Outcome<SharedAnswer>;

impl Resolution {
    /// Not an answer a client should rely on when a stale one is at hand (RFC 8767
    /// section 5: timeouts, SERVFAIL and REFUSED count as failures).
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Answered { answer, .. } => {
                matches!(answer.rcode, rcode::SERVFAIL | rcode::REFUSED) || answer.truncated
            }
            Outcome::Failed | Outcome::OverBudget => true,
        }
    }
}

/// Where a resolution's result appears for everyone waiting on it. Lighter than a
/// `watch` channel, which wakes through eight `Notify`s, and almost always nobody but
/// its leader waits.
#[derive(Debug, Default)]
pub struct ResultSlot {
    result: std::sync::OnceLock<Arc<Resolution>>,
    /// Set once the result is in, or once the resolution ended without one.
    ended: std::sync::atomic::AtomicBool,
    ready: Notify,
}

impl ResultSlot {
    /// Ends the resolution: `result` for everyone waiting, or `None` if it died.
    fn end(&self, result: Option<Arc<Resolution>>) {
        if let Some(r) = result {
            let _ = self.result.set(r);
        }
        self.ended.store(true, Ordering::Release);
        self.ready.notify_waiters();
    }
}

/// foldhash, randomly seeded per process (as the router and the cache use): cheaper
/// than SipHash for a map every forwarded query enters and leaves.
type Hasher = quick_cache::DefaultHashBuilder;

/// A question in flight. The map is a `HashTable` so that an entry can be found again
/// by its hash and its slot: the resolution that leaves the map keeps no copy of the
/// key (an allocation per forwarded query) and does not hash it a second time.
#[derive(Debug)]
struct InFlight {
    key: CacheKey,
    slot: Arc<ResultSlot>,
}

#[derive(Debug, Default)]
pub struct ResolverStats {
    /// Resolutions started (each sends at least one upstream query, budget allowing).
    pub started: AtomicU64,
    /// Client queries that joined a resolution already in flight.
    pub coalesced: AtomicU64,
}

#[derive(Debug)]
pub struct Resolver {
    inflight: Mutex<HashTable<InFlight>>,
    hasher: Hasher,
    cache: Arc<Cache>,
    life: Lifecycle,
    pub stats: Arc<ResolverStats>,
}

impl Resolver {
    pub fn new(cache: Arc<Cache>, life: Lifecycle) -> Self {
        Resolver {
            inflight: Mutex::new(HashTable::new()),
            hasher: Hasher::default(),
            cache,
            life,
            stats: Arc::default(),
        }
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashTable<InFlight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resolution of `q`'s question for one client: the one in flight if there is
    /// one, or a new one on `route`. With `claims`, an answer whose CNAME chain leads
    /// into a claiming route's zones is followed there and spliced before it is cached
    /// and served. `None` if the resolution ended without a result.
    ///
    /// Without `patience` the client waits for the end, and a new resolution runs
    /// inside the returned future, which must then be run to its end (the listeners
    /// do): other clients may join it. With `patience` (a stale answer at hand, RFC 8767
    /// section 5) the client stops waiting after that long, and the resolution goes
    /// on in a task of its own to refresh the cache.
    // Inlined into `Job::run`, so the future is built in place in the job's state
    // rather than built here and moved there.
    #[inline(always)]
    pub fn answer<'q>(
        self: &Arc<Self>,
        q: &'q Query,
        route: &Arc<UpstreamSet>,
        cache_policy: CachePolicy,
        claims: Option<&Arc<Claims>>,
        patience: Option<Duration>,
    ) -> impl Future<Output = Option<Arc<Resolution>>> + 'q {
        let start = self.start(q, route, cache_policy, claims);
        // The wait is chosen before it is awaited, so `start` is not held (in the
        // future's state) through it.
        match (start, patience) {
            // Nobody gives up on this resolution early: it runs in this task.
            (Start::Lead(lead), None) => Either::Left(lead.run().map(Some)),
            (Start::Joined(slot), None) => Either::Right(Either::Left(wait(slot))),
            (start, Some(patience)) => Either::Right(Either::Right(
                tokio::time::timeout(patience, wait(start.spawned())).map(|r| r.ok().flatten()),
            )),
        }
    }

    /// Refreshes `q`'s cached answer in a task of its own (a cache hit near its
    /// expiry, RFC 8767's prefetch), unless its question is in flight already; the
    /// client is served from the cache meanwhile.
    pub fn prefetch(
        self: &Arc<Self>,
        q: &Query,
        route: &Arc<UpstreamSet>,
        cache_policy: CachePolicy,
        claims: Option<&Arc<Claims>>,
    ) {
        drop(self.start(q, route, cache_policy, claims).spawned());
    }

    /// Joins the resolution of `q`'s question in flight, or registers a new one and
    /// hands it to the caller to run (`Lead::run`, in a task that is never dropped
    /// before it ends) or to spawn (`Lead::spawn`). Running it in the client's own
    /// task saves a task per forwarded query when nobody needs the resolution to
    /// outlive the client.
    fn start<'q>(
        self: &Arc<Self>,
        q: &'q Query,
        route: &Arc<UpstreamSet>,
        cache_policy: CachePolicy,
        claims: Option<&Arc<Claims>>,
    ) -> Start<'q> {
        let want = KeyRef::of(q);
        let hash = self.hasher.hash_one(&want);
        let slot = {
            let mut map = self.inflight();
            let entry = map.entry(
                hash,
                |e| want.equivalent(&e.key),
                |e| self.hasher.hash_one(&e.key),
            );
            match entry {
                Entry::Occupied(e) => {
                    self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    return Start::Joined(Arc::clone(&e.get().slot));
                }
                Entry::Vacant(e) => {
                    let slot = Arc::<ResultSlot>::default();
                    e.insert(InFlight {
                        key: CacheKey::of(q),
                        slot: Arc::clone(&slot),
                    });
                    slot
                }
            }
        };
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        Start::Lead(Lead {
            work: Work {
                registered: Registered {
                    resolver: Arc::clone(self),
                    hash,
                    slot,
                },
                route: Arc::clone(route),
                cache_policy,
                claims: claims.cloned(),
            },
            q,
        })
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
}

/// How `Resolver::start` went.
enum Start<'q> {
    /// The question was in flight already: its result will appear in this slot.
    Joined(Arc<ResultSlot>),
    /// A new resolution, registered in the in-flight map, for the caller to run.
    Lead(Lead<'q>),
}

impl Start<'_> {
    /// Where the result will come, a new resolution running in a task of its own.
    fn spawned(self) -> Arc<ResultSlot> {
        match self {
            Start::Joined(slot) => slot,
            Start::Lead(lead) => lead.spawn(),
        }
    }
}

/// A resolution registered in the in-flight map and not yet run. Dropped unrun, it
/// leaves the map and its waiters get `None`. It borrows the client's query: run in
/// the client's task, it needs no copy of it.
struct Lead<'q> {
    work: Work,
    q: &'q Query,
}

impl<'q> Lead<'q> {
    /// Runs the resolution in a task of its own, with a copy of the query, so it
    /// outlives the caller; the result appears in the returned slot.
    fn spawn(self) -> Arc<ResultSlot> {
        let slot = Arc::clone(&self.work.registered.slot);
        let tasks = self.work.registered.resolver.life.tasks.clone();
        let (work, q) = (self.work, self.q.clone());
        // Boxed for the same reason as the listeners' query tasks.
        tasks.spawn(Box::pin(async move {
            work.run(&q).await;
        }));
        slot
    }

    /// Resolves, caches the result, publishes it to every waiter and returns it.
    /// (Work::run's future itself: an async wrapper would hold the Lead twice.)
    fn run(self) -> impl Future<Output = Arc<Resolution>> + 'q {
        self.work.run(self.q)
    }
}

/// What a resolution needs besides the query.
struct Work {
    registered: Registered,
    route: Arc<UpstreamSet>,
    cache_policy: CachePolicy,
    claims: Option<Arc<Claims>>,
}

impl Work {
    /// Resolves `q`, caches the result, publishes it to every waiter and returns it.
    /// The fields are used in place, not bound to locals: the future would hold the
    /// Work twice (as captured and as bound).
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn run(self, q: &Query) -> impl Future<Output = Arc<Resolution>> + '_ {
        async move {
            let got = match self.route.resolve(q).await {
                Outcome::Answered { answer, by } => {
                    match wire::normalize(&answer.bytes, &answer.reply) {
                        Some(n) => match &self.claims {
                            None => Ok((n, by)),
                            // Boxed: the chase's state is two thirds of this future's size,
                            // and every forwarded query's task would otherwise carry and
                            // copy it.
                            Some(c) => match Box::pin(c.chase(q, &self.route, n)).await {
                                Ok(chased) => Ok((chased.reply, by)),
                                Err(crate::claims::ChaseError::OverBudget { .. }) => {
                                    Err(Outcome::OverBudget)
                                }
                                Err(_) => Err(Outcome::Failed),
                            },
                        },
                        None => Err(Outcome::Failed),
                    }
                }
                Outcome::Failed => Err(Outcome::Failed),
                Outcome::OverBudget => Err(Outcome::OverBudget),
            };
            let this = &self.registered.resolver;
            // Read only on the paths that cache something (not at all with the cache off).
            let now = || this.life.clock.now();
            let res = match got {
                Ok((reply, by)) => {
                    let answer = if !self.cache_policy.enabled {
                        SharedAnswer::Uncached(reply)
                    } else if reply.rcode == rcode::SERVFAIL {
                        this.cache.store_failure(q, &self.cache_policy, now());
                        SharedAnswer::Uncached(reply)
                    } else {
                        // Waiters get the answer as the cache holds it (TTLs clamped), so
                        // a miss and the hits after it agree.
                        match this.cache.store_answer(q, reply, &self.cache_policy, now()) {
                            Ok(stored) => SharedAnswer::Cached(stored),
                            Err(reply) => SharedAnswer::Uncached(reply),
                        }
                    };
                    Outcome::Answered { answer, by }
                }
                Err(Outcome::Failed) if self.cache_policy.enabled => {
                    this.cache.store_failure(q, &self.cache_policy, now());
                    Outcome::Failed
                }
                // Our own limit, not the upstream's failure: nothing to remember.
                Err(res) => res,
            };
            // Into the cache first, out of the in-flight map second: a query arriving in
            // between finds one or the other, never neither (and a query that joined the
            // slot just before it ended finds the result there).
            let res = Arc::new(res);
            self.registered.slot.end(Some(Arc::clone(&res)));
            drop(self.registered);
            res
        }
    }
}

/// A question's entry in the in-flight map, taken out when this is dropped, however
/// the resolution ends (even by a panic), but only if the entry is still this
/// resolution's own; otherwise later queries would join a dead resolution.
struct Registered {
    resolver: Arc<Resolver>,
    /// The key's hash: the entry is the one with this hash and this slot.
    hash: u64,
    slot: Arc<ResultSlot>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        {
            let mut map = self.resolver.inflight();
            if let Ok(e) = map.find_entry(self.hash, |e| Arc::ptr_eq(&e.slot, &self.slot)) {
                e.remove();
            }
        }
        // Ended without a result (a panic, or never run): the waiters get none.
        if !self.slot.ended.load(Ordering::Acquire) {
            self.slot.end(None);
        }
    }
}

/// Waits for a resolution's result; `None` if it ended without one.
async fn wait(slot: Arc<ResultSlot>) -> Option<Arc<Resolution>> {
    loop {
        // Registered before the check, so an end between the two still wakes us.
        let notified = slot.ready.notified();
        if slot.ended.load(Ordering::Acquire) {
            return slot.result.get().cloned();
        }
        notified.await;
    }
}
