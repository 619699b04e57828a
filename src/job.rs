//! A forwarded query: resolved (joining an identical resolution in flight), answered
//! from what the upstream said, or from a stale answer when the upstreams fail or are
//! slow (RFC 8767), then counted and logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Stored, STALE_TTL};
use crate::claims::Claims;
use crate::clients::ClientSlot;
use crate::config::CachePolicy;
use crate::dnstap::ClientTap;
use crate::limit::InflightPermit;
use crate::local::LocalSplice;
use crate::metrics::RouteMetrics;
use crate::outcome::Outcome;
use crate::query_log::QueryLog;
use crate::resolver::Resolver;
use crate::transport::Transport;
use crate::upstream::UpstreamSet;
use crate::wire::{self, rcode, Query, Ttls};

/// RFC 8767 section 5's client response timer: with a stale answer at hand, a client
/// waits at most this long for a fresh one (the resolution goes on and refreshes the
/// cache); not at all when the route's upstreams are all down (`stale_answer_after`).
const STALE_ANSWER_AFTER: Duration = Duration::from_millis(1800);

/// How long a client with a stale answer at hand waits for a fresh one:
/// `STALE_ANSWER_AFTER`, or nothing while every upstream of the route is down, where
/// the wait would be spent for certain (RFC 8767 section 5's failure recheck: a known
/// failure is answered from stale data at once). The resolution goes on either way and
/// refreshes the cache when an upstream answers.
///
/// A downstream resolver that forwards here (BIND, Unbound) gives up on a silent
/// forwarder well before 1.8 s, so without this its clients got SERVFAIL for
/// names zonefwd held stale answers for.
fn stale_answer_after(route: &UpstreamSet) -> Duration {
    if route.all_down() {
        Duration::ZERO
    } else {
        STALE_ANSWER_AFTER
    }
}

/// A query on its way upstream; holds its in-flight places until it is answered.
pub struct Job {
    pub(crate) query: Query,
    pub(crate) route: Arc<UpstreamSet>,
    pub(crate) cache_policy: CachePolicy,
    /// An expired answer to fall back on (RFC 8767).
    pub(crate) stale: Option<Arc<Stored>>,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) claims: Option<Arc<Claims>>,
    /// `identity`, for the NSID of the reply.
    pub(crate) identity: Option<Arc<[u8]>>,
    pub(crate) client: SocketAddr,
    pub(crate) transport: Transport,
    /// When the query arrived: the latency metric and the query log count from here,
    /// the time waiting for a task included.
    pub(crate) started: Instant,
    pub(crate) query_log: bool,
    /// dnstap's record of the client's query, for its response.
    pub(crate) tap: Option<Box<ClientTap>>,
    pub(crate) metrics: Arc<RouteMetrics>,
    pub(crate) permit: InflightPermit,
    pub(crate) slot: Option<ClientSlot>,
    /// A local CNAME whose target this query is: the client's answer is the CNAME
    /// and this one's, spliced.
    pub(crate) splice: Option<Box<LocalSplice>>,
}

impl Job {
    /// Resolves and builds the client's reply. Run it to the end (the listeners do):
    /// a resolution it leads may run inside it, and other clients may be waiting for
    /// that one. (An async block over `self`, not an async fn: that would hold the job
    /// twice.)
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    pub fn run(self) -> impl Future<Output = Vec<u8>> {
        async move {
            let q = &self.query;
            let limit = self.transport.limit(q);
            // With a stale answer at hand the client stops waiting after a while, and
            // the resolution goes on without it (RFC 8767 section 5).
            let patience = self.stale.as_ref().map(|_| stale_answer_after(&self.route));
            let res = self
                .resolver
                .answer(
                    q,
                    &self.route,
                    self.cache_policy,
                    self.claims.as_ref(),
                    patience,
                )
                .await;
            let failed = res.as_deref().is_none_or(Outcome::is_failure);
            let answer = match res.as_deref() {
                Some(Outcome::Answered { answer, by }) => Some((answer, *by)),
                _ => None,
            };
            let served_stale = failed && self.stale.is_some();
            let upstream = answer.as_ref().map(|a| a.1);
            let mut out = match (answer, &self.stale) {
                // A failure with a stale answer at hand: the stale answer (RFC 8767).
                (_, Some(s)) if failed => {
                    self.resolver.cache().note_stale_served();
                    wire::render(&s.reply, q, limit, Ttls::Fixed(STALE_TTL))
                }
                // An answer, or the SERVFAIL/REFUSED/TC an upstream gave when none did better.
                (Some((reply, _)), _) => wire::render(reply, q, limit, Ttls::AsStored),
                (None, _) => wire::reply_for(q, rcode::SERVFAIL),
            };
            // The client's query: its own, or the one a local CNAME stood for.
            let client = self.splice.as_ref().map_or(q, |s| &s.client);
            if let Some(s) = &self.splice {
                out = s.finish_inline(&out, self.transport.limit(client));
            }
            if let Some(identity) = self.identity.as_deref() {
                wire::add_identity(&mut out, client, identity, self.transport.limit(client));
            }
            self.metrics
                .observe(self.transport, &out, self.started.elapsed());
            let outcome = if self.splice.is_some() {
                "local-cname"
            } else if served_stale {
                "stale"
            } else if upstream.is_some() {
                "upstream"
            } else {
                "servfail"
            };
            if self.query_log {
                QueryLog {
                    client: self.client,
                    transport: self.transport,
                    query: client,
                    route: &self.route.route,
                    upstream,
                    outcome,
                    started: self.started,
                }
                .emit(&out);
            }
            if let Some(tap) = &self.tap {
                tap.response(&out, &self.route.route, outcome);
            }
            // The in-flight places are held until the answer is made. Named here so
            // that the block takes them at all: an async block captures only the
            // fields it uses, and would drop these at its creation.
            drop((self.permit, self.slot));
            out
        }
    }
}
