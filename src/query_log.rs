//! The query log (`server.query_log`): one line per answered query, at info level on
//! the target `zonefwd::query`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::outcome::AnsweredBy;
use crate::transport::Transport;
use crate::wire::{self, rcode, Query};

pub struct QueryLog<'a> {
    pub client: SocketAddr,
    pub transport: Transport,
    pub query: &'a Query,
    pub route: &'a str,
    /// The upstream try whose reply it is, if one is.
    pub upstream: Option<AnsweredBy>,
    /// How it was answered: upstream, cache, stale, failure-cached, overload, servfail,
    /// refused-acl, no-route, refused-xfr, any-rfc8482, loop-probe, client-limit, chaos.
    pub outcome: &'static str,
    pub started: Instant,
}

impl QueryLog<'_> {
    pub fn emit(&self, reply: &[u8]) {
        tracing::info!(
            target: "zonefwd::query",
            client = %self.client,
            transport = self.transport.as_str(),
            name = %wire::name_to_string(&self.query.qname),
            qtype = %crate::report::qtype_name(self.query.qtype),
            route = self.route,
            upstream = %self.upstream.map_or_else(|| "-".to_string(), |by| by.upstream().to_string()),
            // A retransmission's reply: "late" (past the upstream's retransmit
            // threshold) or "timeout" (past try_timeout); "-" for a first try's.
            retransmission = self.upstream.and_then(|by| by.retransmission).map_or("-", |r| r.as_str()),
            rcode = %rcode::name(u16::from(reply[3] & 0x0f)),
            ms = self.started.elapsed().as_secs_f64() * 1000.0,
            outcome = self.outcome,
            "query"
        );
    }
}
