//! What happens to a client message before anything is sent upstream, as named stages:
//! the first look, the client's rate, the ACL, the query checks, what zonefwd answers
//! itself, the route, the cache, the client's and the server's in-flight caps. Each
//! stage passes the query on or ends it with an `Action`.
//!
//! `prepare` is synchronous and cheap: everything that can be answered without an
//! upstream (drops, REFUSED, FORMERR, NOTIMP, BADVERS, cache hits, overload) is decided
//! here, so listeners answer it inline. Only queries that must be forwarded become a
//! `Job`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{Lookup, Stored, STALE_TTL};
use crate::clients::{ClientSlot, OverLimit};
use crate::config::AnyQueries;
use crate::dnstap::ClientTap;
use crate::handler::{Handler, RouteState};
use crate::job::Job;
use crate::limit::InflightPermit;
use crate::local::{LocalAnswer, LocalSplice};
use crate::metrics::RouteMetrics;
use crate::query_log::QueryLog;
use crate::transport::Transport;
use crate::wire::{self, rcode, Query, Rejection, Ttls};

/// What to do with a message from a client.
pub enum Action {
    /// Say nothing: not a query we may answer (short, or QR=1).
    Drop,
    /// Answer at once.
    Reply(Vec<u8>),
    /// Forward, then answer. (Boxed: the other variants are small and common.)
    Forward(Box<Job>),
}

/// A stage's result: the query goes on (with what the stage found), or this is its
/// answer.
type Stage<T> = Result<T, Action>;

/// A message as it arrived.
struct Incoming<'a> {
    msg: &'a [u8],
    client: SocketAddr,
    transport: Transport,
    /// The latency metric and the query log count from here.
    started: Instant,
    /// dnstap's record of it, when its response is to be sent.
    tap: Option<&'a ClientTap>,
}

/// Where an inline answer is counted: its route's name and metrics (`-` and the
/// unrouted metrics before a route is chosen).
#[derive(Clone, Copy)]
struct CountedAt<'a> {
    route: &'a str,
    metrics: &'a RouteMetrics,
}

impl Handler {
    /// What to do with `msg`, from `client` to this server's `server` address.
    pub fn prepare(
        &self,
        msg: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        transport: Transport,
    ) -> Action {
        let tap = self.dnstap.as_ref().and_then(|t| {
            wire::is_answerable_query(msg)
                .then(|| t.client(msg, client, server, transport))
                .flatten()
        });
        let m = Incoming {
            msg,
            client,
            transport,
            started: Instant::now(),
            tap: tap.as_deref(),
        };
        match self.admit(&m) {
            Ok(mut job) => {
                job.tap = tap;
                Action::Forward(job)
            }
            Err(action) => action,
        }
    }

    /// The stages, in order.
    fn admit(&self, m: &Incoming<'_>) -> Stage<Box<Job>> {
        self.answerable(m)?;
        let parsed = wire::parse_query(m.msg);
        // The rate limit comes before the ACL, so a flood from outside it is dropped
        // rather than answered one REFUSED per packet.
        self.client_rate(m, &parsed)?;
        self.acl(m, &parsed)?;
        let q = self.checked(m, parsed)?;
        self.answered_here(m, &q)?;
        let (q, splice) = self.local(m, q)?;
        let Some(splice) = splice else {
            return self.upstream_stages(m, q, None);
        };
        // A local CNAME's target: what the later stages answer inline (from the cache,
        // or a refusal) is for the target's question, and becomes the client's.
        let (client, limit) = (splice.client.clone(), m.transport.limit(&splice.client));
        let cname = splice.cname.clone();
        self.upstream_stages(m, q, Some(splice))
            .map_err(|action| match action {
                Action::Reply(reply) => {
                    let view = LocalSplice { client, cname };
                    Action::Reply(view.finish_inline(&reply, limit))
                }
                other => other,
            })
    }

    /// The stages from the route on, for a query that may go upstream.
    fn upstream_stages(
        &self,
        m: &Incoming<'_>,
        q: Query,
        splice: Option<Box<LocalSplice>>,
    ) -> Stage<Box<Job>> {
        let route = self.route(m, &q)?;
        let at = CountedAt {
            route: &route.set.route,
            metrics: &route.metrics,
        };
        let stale = self.cached(m, &q, route, at)?;
        let slot = self.client_inflight(m, &q, at)?;
        let permit = self.server_inflight(m, &q, at, stale.as_deref())?;
        Ok(Box::new(Job {
            route: Arc::clone(&route.set),
            cache_policy: route.cache_policy,
            stale,
            resolver: Arc::clone(&self.resolver),
            claims: self.claims.clone(),
            identity: self.identity.clone(),
            query: q,
            client: m.client,
            transport: m.transport,
            started: m.started,
            query_log: self.query_log,
            tap: None,
            metrics: Arc::clone(&route.metrics),
            permit,
            slot,
            splice,
        }))
    }

    /// `[local]` records: answered here with AA, or, for a local CNAME, the query goes
    /// on as the CNAME's target (resolved through the route that owns it), with what
    /// the answer is spliced after.
    fn local(&self, m: &Incoming<'_>, q: Query) -> Stage<(Query, Option<Box<LocalSplice>>)> {
        if self.local.is_empty() {
            return Ok((q, None));
        }
        let cname = match self.local.answer(&q) {
            LocalAnswer::Elsewhere => return Ok((q, None)),
            LocalAnswer::Reply(reply) => {
                let reply = if reply.len() > m.transport.limit(&q) {
                    wire::truncated_reply(&q)
                } else {
                    reply
                };
                return Err(self.answer(m, &q, self.unrouted(), "local", reply));
            }
            LocalAnswer::Cname(cname) => cname,
        };
        let Some(target) = LocalSplice::target_query(&q, cname) else {
            let reply = wire::reply_for(&q, rcode::SERVFAIL);
            return Err(self.answer(m, &q, self.unrouted(), "local", reply));
        };
        let splice = LocalSplice {
            client: q,
            cname: cname.record.clone(),
        };
        Ok((target, Some(Box::new(splice))))
    }

    /// Not a query at all (a runt, or a response): dropped without a word.
    fn answerable(&self, m: &Incoming<'_>) -> Stage<()> {
        if wire::is_answerable_query(m.msg) {
            return Ok(());
        }
        tracing::debug!(client = %m.client, transport = m.transport.as_str(), len = m.msg.len(), "dropping a message that is not a query");
        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        Err(Action::Drop)
    }

    /// `client_qps`: over it, dropped or refused as `client_limit_action` says.
    fn client_rate(&self, m: &Incoming<'_>, parsed: &Result<Query, Rejection>) -> Stage<()> {
        if self.clients.admit(m.client.ip(), m.started).is_ok() {
            return Ok(());
        }
        self.metrics
            .client_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        if self.limit_warning.ready() {
            tracing::warn!(client = %m.client, "a client is over server.client_qps (logged at most every 10s)");
        }
        Err(match self.clients.action() {
            OverLimit::Drop => Action::Drop,
            OverLimit::Refuse => {
                let reply = refused(m.msg, parsed);
                m.tapped(&reply, "-", "client-rate");
                Action::Reply(reply)
            }
        })
    }

    /// `acl.allow`: others get REFUSED.
    fn acl(&self, m: &Incoming<'_>, parsed: &Result<Query, Rejection>) -> Stage<()> {
        if self.acl.allows(m.client.ip()) {
            return Ok(());
        }
        tracing::debug!(client = %m.client, transport = m.transport.as_str(), "refusing a client outside the acl");
        let reply = refused(m.msg, parsed);
        self.metrics.acl_refused.fetch_add(1, Ordering::Relaxed);
        Err(match parsed {
            Ok(q) => self.answer(m, q, self.unrouted(), "refused-acl", reply),
            Err(_) => self.unrouted_reply(m, "refused-acl", reply),
        })
    }

    /// The query checks (`wire::parse_query`): a rejected query gets its rcode.
    fn checked(&self, m: &Incoming<'_>, parsed: Result<Query, Rejection>) -> Stage<Query> {
        parsed.map_err(|rej| {
            tracing::debug!(client = %m.client, transport = m.transport.as_str(), reason = rej.reason, rcode = %rcode::name(rej.rcode), "rejecting a query");
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            self.unrouted_reply(m, "malformed", rej.reply(m.msg))
        })
    }

    /// Queries zonefwd answers itself whatever the route: CHAOS-class questions about
    /// the server (RFC 4892; never forwarded, or the client would learn another
    /// server's identity), zone transfers, ANY (RFC 8482) and its own loop probes
    /// coming round.
    fn answered_here(&self, m: &Incoming<'_>, q: &Query) -> Stage<()> {
        let (outcome, reply) = if q.qclass == wire::CLASS_CH {
            ("chaos", wire::chaos_reply(q, self.identity.as_deref()))
        } else if q.qtype == wire::TYPE_AXFR || q.qtype == wire::TYPE_IXFR {
            // Zone transfers are a conversation with the primary, not something to
            // relay one message at a time.
            ("refused-xfr", wire::reply_for(q, rcode::REFUSED))
        } else if q.qtype == wire::TYPE_ANY && self.any_queries != AnyQueries::Forward {
            // RFC 8482: ANY is the amplifier of choice and answers nothing a stub needs.
            let reply = match self.any_queries {
                AnyQueries::Refuse => wire::reply_for(q, rcode::REFUSED),
                _ => wire::any_hinfo_reply(q),
            };
            ("any-rfc8482", reply)
        } else if self
            .loops
            .as_ref()
            .is_some_and(|l| l.is_own_probe(&q.qname_lower, m.client))
        {
            // Our own loop probe came round: stop it here.
            ("loop-probe", wire::reply_for(q, rcode::REFUSED))
        } else {
            return Ok(());
        };
        Err(self.answer(m, q, self.unrouted(), outcome, reply))
    }

    /// The route whose zones hold the name; REFUSED when none does.
    fn route(&self, m: &Incoming<'_>, q: &Query) -> Stage<&RouteState> {
        match self.router.route(&q.qname_lower, q.qtype) {
            Some(found) => Ok(&self.routes[found.route]),
            None => {
                tracing::debug!(client = %m.client, name = %wire::name_to_string(&q.qname), "no route for this name");
                let reply = wire::reply_for(q, rcode::REFUSED);
                Err(self.answer(m, q, self.unrouted(), "no-route", reply))
            }
        }
    }

    /// The cache: a fresh answer (refreshed in the background near its expiry), a
    /// remembered failure (stale data if any, RFC 8767), or on to the upstream with
    /// whatever expired answer there is to fall back on.
    fn cached(
        &self,
        m: &Incoming<'_>,
        q: &Query,
        route: &RouteState,
        at: CountedAt<'_>,
    ) -> Stage<Option<Arc<Stored>>> {
        let policy = &route.cache_policy;
        if !policy.enabled {
            return Ok(None);
        }
        let limit = m.transport.limit(q);
        let (outcome, reply) = match self
            .cache
            .lookup(q, policy, self.clock.now_given(m.started))
        {
            Lookup::Fresh {
                stored,
                age,
                prefetch,
            } => {
                if prefetch {
                    // Refresh in the background; this client is served now.
                    self.resolver
                        .prefetch(q, &route.set, *policy, self.claims.as_ref());
                }
                (
                    "cache",
                    wire::render(&stored.reply, q, limit, Ttls::Aged(age)),
                )
            }
            Lookup::Failing { stale: Some(s) } => {
                self.cache.note_stale_served();
                (
                    "stale",
                    wire::render(&s.reply, q, limit, Ttls::Fixed(STALE_TTL)),
                )
            }
            Lookup::Failing { stale: None } => {
                ("failure-cached", wire::reply_for(q, rcode::SERVFAIL))
            }
            Lookup::Stale(s) => return Ok(Some(s)),
            Lookup::Miss => return Ok(None),
        };
        Err(self.answer(m, q, at, outcome, reply))
    }

    /// `client_max_inflight`: the answer to DNSBomb (CVE-2024-33655), one client's
    /// queries piling up behind a slow upstream.
    fn client_inflight(
        &self,
        m: &Incoming<'_>,
        q: &Query,
        at: CountedAt<'_>,
    ) -> Stage<Option<ClientSlot>> {
        self.clients.start(m.client.ip(), m.started).map_err(|_| {
            self.metrics
                .client_inflight_limited
                .fetch_add(1, Ordering::Relaxed);
            if self.limit_warning.ready() {
                tracing::warn!(client = %m.client, "a client has server.client_max_inflight queries waiting on upstreams (logged at most every 10s)");
            }
            match self.clients.action() {
                OverLimit::Drop => Action::Drop,
                OverLimit::Refuse => {
                    let reply = wire::reply_for(q, rcode::REFUSED);
                    self.answer(m, q, at, "client-limit", reply)
                }
            }
        })
    }

    /// `max_inflight`, for the whole server: overloaded, an expired answer beats a
    /// SERVFAIL (RFC 8767's purpose).
    fn server_inflight(
        &self,
        m: &Incoming<'_>,
        q: &Query,
        at: CountedAt<'_>,
        stale: Option<&Stored>,
    ) -> Stage<InflightPermit> {
        self.inflight.try_acquire(self.max_inflight).ok_or_else(|| {
            if self.overload_warning.ready() {
                tracing::warn!(client = %m.client, "server.max_inflight queries are in flight: answering new ones from stale cache or SERVFAIL (logged at most every 10s)");
            }
            let reply = match stale {
                Some(s) => {
                    self.cache.note_stale_served();
                    let limit = m.transport.limit(q);
                    wire::render(&s.reply, q, limit, Ttls::Fixed(STALE_TTL))
                }
                None => wire::reply_for(q, rcode::SERVFAIL),
            };
            self.answer(m, q, at, "overload", reply)
        })
    }

    /// Where answers before a route is chosen are counted.
    fn unrouted(&self) -> CountedAt<'_> {
        CountedAt {
            route: "-",
            metrics: &self.metrics.unrouted,
        }
    }

    /// An inline answer to a parsed query: counted, and logged when `server.query_log`
    /// is on.
    fn answer(
        &self,
        m: &Incoming<'_>,
        q: &Query,
        at: CountedAt<'_>,
        outcome: &'static str,
        mut reply: Vec<u8>,
    ) -> Action {
        if let Some(identity) = self.identity.as_deref() {
            wire::add_identity(&mut reply, q, identity, m.transport.limit(q));
        }
        at.metrics.observe(m.transport, &reply, m.started.elapsed());
        if self.query_log {
            QueryLog {
                client: m.client,
                transport: m.transport,
                query: q,
                route: at.route,
                upstream: None,
                outcome,
                started: m.started,
            }
            .emit(&reply);
        }
        m.tapped(&reply, at.route, outcome);
        Action::Reply(reply)
    }

    /// An answer to a message that did not parse: counted as unrouted, not logged
    /// (there is no query to log), sent to dnstap as `outcome`.
    fn unrouted_reply(&self, m: &Incoming<'_>, outcome: &str, reply: Vec<u8>) -> Action {
        self.metrics
            .unrouted
            .observe(m.transport, &reply, m.started.elapsed());
        m.tapped(&reply, "-", outcome);
        Action::Reply(reply)
    }
}

impl Incoming<'_> {
    /// The reply, to dnstap as CLIENT_RESPONSE when the query was sampled.
    fn tapped(&self, reply: &[u8], route: &str, outcome: &str) {
        if let Some(tap) = self.tap {
            tap.response(reply, route, outcome);
        }
    }
}

/// REFUSED, echoing the question when it can be read: stub resolvers match replies on
/// it (RFC 5452) and would otherwise wait out their timeout.
fn refused(msg: &[u8], parsed: &Result<Query, Rejection>) -> Vec<u8> {
    match parsed {
        Ok(q) => wire::refusal_reply(
            msg,
            Some((&q.qname, q.qtype, q.qclass)),
            q.edns.as_ref(),
            rcode::REFUSED,
        ),
        Err(rej) => wire::refusal_reply(msg, rej.question(), None, rcode::REFUSED),
    }
}
