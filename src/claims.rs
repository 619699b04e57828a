//! `claim_cnames`: CNAME-aware routing.
//!
//! A client asks `acct.blob.core.windows.net`; the route that answers it (on-prem DNS,
//! resolving on the internet) returns `CNAME acct.privatelink.blob.core.windows.net`
//! and then the public address it found there. If a route claims
//! `privatelink.blob.core.windows.net`, the chain is cut at that CNAME, its target is
//! asked through the claiming route (Azure DNS, which knows the private zone), and the
//! client gets the first route's CNAMEs followed by the claiming route's answer: the
//! private address. CoreDNS's attempt at this (coredns/coredns#3781) was never merged.
//!
//! The splice is an answer zonefwd builds, so the rules that make it safe live here:
//! - only CNAMEs on the chain from the question name are followed (RFC 1034 3.6.2), so
//!   an unrelated CNAME in the answer cannot steer a lookup;
//! - a chain gets at most `MAX_HOPS` claimed lookups, and a name met twice is a loop:
//!   both end in SERVFAIL instead of bouncing between routes;
//! - the lookups of one chain run inside the resolution of the client's question, not
//!   as resolutions of their own, so two chains that claim each other's names cannot
//!   wait on each other;
//! - every TTL of the spliced answer is the minimum along the chain, so no client or
//!   cache keeps a link longer than its shortest-lived one;
//! - the rcode is the last lookup's (RFC 6604 section 2.1: it describes the last name
//!   in the chain), AA and AD are cleared (zonefwd is not authoritative, and a chain
//!   crossing into a private zone cannot be validated as a whole).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use crate::config::Config;
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::outcome::Outcome;
use crate::router::Router;
use crate::upstream::UpstreamSet;
use crate::wire::{self, rcode, Normalized, Query};

/// Claimed lookups one chain may take (BIND and Unbound stop following a chain after
/// 16 and 11 CNAMEs; each claimed hop here costs an upstream round trip).
pub const MAX_HOPS: usize = 8;

/// CNAMEs followed within one answer while looking for a claimed target.
const MAX_CHAIN: usize = 16;

/// The routes of one configuration that claim CNAME targets.
#[derive(Debug)]
pub struct Claims {
    router: Arc<Router>,
    sets: Vec<Arc<UpstreamSet>>,
    claiming: Vec<bool>,
    /// All claimed lookups of one chain finish within this: the longest route
    /// timeout, so a client waits at most the first route's timeout plus this.
    deadline: std::time::Duration,
    warning: Throttle,
    /// Chains that ended in SERVFAIL because of a loop or the hop limit.
    pub broken_chains: AtomicU64,
}

/// One claimed lookup of a spliced chain (for `zonefwd query`).
#[derive(Debug, Clone)]
pub struct Hop {
    pub route: String,
    pub name: String,
    pub upstream: std::net::SocketAddr,
}

/// How a chain that needed a claimed lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaseError {
    #[error("route {route:?} had no usable answer for {name}")]
    Failed { route: String, name: String },
    #[error("route {route:?} is over its max_qps budget")]
    OverBudget { route: String },
    #[error("the CNAME chain comes back to {name}")]
    Loop { name: String },
    #[error("the CNAME chain needs more than {MAX_HOPS} claimed lookups")]
    TooManyHops,
    #[error("the claimed lookups took longer than {0:?} in all")]
    Timeout(std::time::Duration),
}

/// An answer after `chase`: the spliced one, or the original untouched.
#[derive(Debug)]
pub struct Chased {
    pub reply: Normalized,
    pub hops: Vec<Hop>,
}

impl Claims {
    /// `None` when no route of `config` claims CNAMEs: answers then skip all of this.
    /// `router` and `sets` are the configuration's own (`Router::for_config`,
    /// `UpstreamSet::for_config`), shared rather than built again.
    pub fn for_config(
        config: &Config,
        router: &Arc<Router>,
        sets: &[Arc<UpstreamSet>],
    ) -> Option<Arc<Claims>> {
        let claiming: Vec<bool> = config.routes.iter().map(|r| r.claim_cnames).collect();
        claiming.contains(&true).then(|| {
            Arc::new(Claims {
                router: Arc::clone(router),
                sets: sets.to_vec(),
                claiming,
                deadline: config
                    .routes
                    .iter()
                    .map(|r| r.timeout)
                    .max()
                    .unwrap_or_default(),
                warning: Throttle::new(LIMIT_WARN_INTERVAL),
                broken_chains: AtomicU64::new(0),
            })
        })
    }

    /// The route claiming `target` for a query of `qtype`, unless it is the route
    /// that gave the answer (which already had its chance to follow the CNAME).
    fn claimer(&self, target: &Name, qtype: u16, answered_by: usize) -> Option<usize> {
        let mut wire_name = target.to_bytes().ok()?;
        wire::lowercase(&mut wire_name);
        let m = self.router.route(&wire_name, qtype)?;
        (self.claiming[m.route] && m.route != answered_by).then_some(m.route)
    }

    /// Follows `reply` (an answer to `q` from `route`) into claiming routes, if its
    /// CNAME chain leads there. Answers without CNAMEs return at once, untouched.
    pub async fn chase(
        &self,
        q: &Query,
        route: &Arc<UpstreamSet>,
        reply: Normalized,
    ) -> Result<Chased, ChaseError> {
        match tokio::time::timeout(self.deadline, self.follow(q, route, reply)).await {
            Ok(r) => r,
            Err(_) => Err(self.broken(ChaseError::Timeout(self.deadline), q)),
        }
    }

    async fn follow(
        &self,
        q: &Query,
        route: &Arc<UpstreamSet>,
        reply: Normalized,
    ) -> Result<Chased, ChaseError> {
        let untouched = |reply| {
            Ok(Chased {
                reply,
                hops: vec![],
            })
        };
        let Some((mut answered_by, mut current)) = self.chaseable(&reply, route) else {
            return untouched(reply);
        };
        // What the splice keeps of the first answer: its header and question.
        let (head, queries) = (current.metadata, current.queries.clone());
        let Some(question) = queries.first() else {
            return untouched(reply);
        };
        let mut start = question.name().clone();
        let mut seen = vec![start.to_lowercase()];
        let mut prefix: Vec<Record> = Vec::new();
        let mut hops = Vec::new();
        let mut last_rcode = reply.rcode;
        loop {
            let (owners, cut) = self.walk(&current.answers, &start, q.qtype, answered_by);
            let Some((target, claimer)) = cut else {
                break;
            };
            self.next_hop_allowed(hops.len(), &mut seen, &target, q)?;
            prefix.extend(chain_links(&current.answers, &owners));
            let set = &self.sets[claimer];
            set.cname_claims.fetch_add(1, Ordering::Relaxed);
            let (sub, upstream) = self.lookup(q, set, &target).await?;
            tracing::debug!(
                name = %wire::name_to_string(&q.qname),
                target = %target,
                route = %set.route,
                "claim_cnames: resolving a CNAME target through the route that claims it"
            );
            hops.push(Hop {
                route: set.route.clone(),
                name: target.to_string(),
                upstream,
            });
            let Ok(msg) = Message::from_vec(&sub.bytes) else {
                return Err(ChaseError::Failed {
                    route: set.route.clone(),
                    name: target.to_string(),
                });
            };
            last_rcode = sub.rcode;
            current = msg;
            start = target;
            answered_by = claimer;
        }
        if hops.is_empty() {
            return untouched(reply);
        }
        let spliced = splice(head, queries, prefix, current, last_rcode).ok_or_else(|| {
            ChaseError::Failed {
                route: self.sets[answered_by].route.clone(),
                name: start.to_string(),
            }
        })?;
        Ok(Chased {
            reply: spliced,
            hops,
        })
    }

    /// Where a chase starts: the index of the route that answered and the answer
    /// decoded, when the answer is one to chase (NOERROR or NXDOMAIN, whole, with a
    /// CNAME).
    fn chaseable(&self, reply: &Normalized, route: &Arc<UpstreamSet>) -> Option<(usize, Message)> {
        if !matches!(reply.rcode, rcode::NOERROR | rcode::NXDOMAIN)
            || reply.truncated
            || !wire::answer_has_cname(&reply.bytes, reply.question_end, reply.answers)
        {
            return None;
        }
        let answered_by = self.sets.iter().position(|s| Arc::ptr_eq(s, route))?;
        // zonefwd walked and accepted these bytes; a decoder that still refuses them
        // leaves the answer as the upstream gave it.
        let current = Message::from_vec(&reply.bytes).ok()?;
        Some((answered_by, current))
    }

    /// A chain may take another hop: fewer than `MAX_HOPS` so far, and not to a name
    /// it has been to (which is remembered).
    fn next_hop_allowed(
        &self,
        hops: usize,
        seen: &mut Vec<Name>,
        target: &Name,
        q: &Query,
    ) -> Result<(), ChaseError> {
        if hops == MAX_HOPS {
            return Err(self.broken(ChaseError::TooManyHops, q));
        }
        let lower = target.to_lowercase();
        if seen.contains(&lower) {
            let err = ChaseError::Loop {
                name: target.to_string(),
            };
            return Err(self.broken(err, q));
        }
        seen.push(lower);
        Ok(())
    }

    /// The chain of CNAMEs from `start` in `answers`: their owners, and the first
    /// target another route claims.
    fn walk(
        &self,
        answers: &[Record],
        start: &Name,
        qtype: u16,
        answered_by: usize,
    ) -> (Vec<Name>, Option<(Name, usize)>) {
        let mut owners = Vec::new();
        let mut name = start.clone();
        for _ in 0..MAX_CHAIN {
            let Some(target) = answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == name => Some(c.0.clone()),
                _ => None,
            }) else {
                break;
            };
            owners.push(name);
            if let Some(claimer) = self.claimer(&target, qtype, answered_by) {
                return (owners, Some((target, claimer)));
            }
            if owners.contains(&target) {
                // A loop inside one upstream's answer: nothing for us to claim.
                break;
            }
            name = target;
        }
        (owners, None)
    }

    /// Asks `target` through the claiming route, with the client's type, class and
    /// DO/CD bits, so the answer fits the question it is spliced into.
    async fn lookup(
        &self,
        q: &Query,
        set: &UpstreamSet,
        target: &Name,
    ) -> Result<(Normalized, std::net::SocketAddr), ChaseError> {
        let failed = || ChaseError::Failed {
            route: set.route.clone(),
            name: target.to_string(),
        };
        let qname = target.to_bytes().map_err(|_| failed())?;
        let mut qname_lower = qname.clone();
        wire::lowercase(&mut qname_lower);
        let sub = Query {
            id: 0,
            flags: q.flags,
            qname,
            qname_lower,
            qtype: q.qtype,
            qclass: q.qclass,
            edns: q.edns,
        };
        match set.resolve(&sub).await {
            Outcome::Answered { answer, by } => {
                let n = wire::normalize(&answer.bytes, &answer.reply).ok_or_else(failed)?;
                // SERVFAIL, REFUSED or TC after the TCP retry: the claimed half of the
                // chain is unknown, and the public half is what claiming it avoids.
                if n.truncated || !matches!(n.rcode, rcode::NOERROR | rcode::NXDOMAIN) {
                    return Err(failed());
                }
                Ok((n, by.upstream()))
            }
            Outcome::Failed => Err(failed()),
            Outcome::OverBudget => Err(ChaseError::OverBudget {
                route: set.route.clone(),
            }),
        }
    }

    /// Counts and logs a chain that could not be completed by zonefwd's own limits.
    fn broken(&self, err: ChaseError, q: &Query) -> ChaseError {
        self.broken_chains.fetch_add(1, Ordering::Relaxed);
        if self.warning.ready() {
            tracing::warn!(name = %wire::name_to_string(&q.qname), "claim_cnames: {err}: answering SERVFAIL (logged at most every 10s)");
        }
        err
    }
}

/// The first answer's header and question, its chain up to the first cut (`prefix`),
/// then the last claimed answer's records; every TTL the minimum along the chain.
fn splice(
    head: Metadata,
    queries: Vec<hickory_proto::op::Query>,
    prefix: Vec<Record>,
    last: Message,
    rcode: u16,
) -> Option<Normalized> {
    let mut m = Message::new(head.id, MessageType::Response, head.op_code);
    m.metadata.recursion_desired = head.recursion_desired;
    m.metadata.checking_disabled = head.checking_disabled;
    m.metadata.recursion_available = true;
    m.metadata.response_code = ResponseCode::from_low((rcode & 0x0f) as u8);
    m.queries = queries;
    m.answers = prefix;
    m.answers.extend(last.answers);
    m.authorities = last.authorities;
    let min = m.answers.iter().map(|r| r.ttl).min()?;
    for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
        r.ttl = r.ttl.min(min);
    }
    wire::normalized_from(m.to_vec().ok()?, rcode)
}

/// The links of the chain up to a cut, with their signatures: a CNAME owner holds
/// nothing else (RFC 2181 section 10.1) except DNSSEC records.
fn chain_links(answers: &[Record], owners: &[Name]) -> Vec<Record> {
    answers
        .iter()
        .filter(|r| {
            matches!(r.record_type(), RecordType::CNAME | RecordType::RRSIG)
                && owners.contains(&r.name)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::life::Lifecycle;

    const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:5353"]
[acl]
allow = ["127.0.0.0/8"]
[[route]]
name = "onprem"
zones = ["."]
upstreams = ["127.0.0.1:5301"]
[[route]]
name = "azure"
zones = ["privatelink.blob.core.windows.net"]
upstreams = ["127.0.0.1:5302"]
claim_cnames = true
[[route]]
name = "lab"
zones = ["lab.example"]
upstreams = ["127.0.0.1:5303"]
"#;

    fn claims() -> Arc<Claims> {
        let config =
            crate::config::Config::parse(CONFIG, "test.toml", &Default::default()).expect("config");
        let sets = UpstreamSet::for_config(
            &config,
            &Lifecycle::default(),
            &mut Default::default(),
            None,
        );
        let router = Arc::new(Router::for_config(&config));
        Claims::for_config(&config, &router, &sets).expect("a route claims")
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            300,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(name(target))),
        )
    }

    #[test]
    fn claimer_is_another_claiming_route() {
        let c = claims();
        assert_eq!(
            c.claimer(&name("Acct.PrivateLink.blob.core.windows.net."), 1, 0),
            Some(1)
        );
        // The claiming route's own answers are not claimed again.
        assert_eq!(
            c.claimer(&name("acct.privatelink.blob.core.windows.net."), 1, 1),
            None
        );
        // Routes without claim_cnames claim nothing.
        assert_eq!(c.claimer(&name("a.lab.example."), 1, 0), None);
        assert_eq!(c.claimer(&name("blob.core.windows.net."), 1, 2), None);
    }

    #[test]
    fn walk_follows_only_the_chain_from_the_question() {
        let c = claims();
        let answers = vec![
            // Not on the chain: must not steer anything.
            cname(
                "unrelated.example.",
                "other.privatelink.blob.core.windows.net.",
            ),
            cname("www.example.", "acct.blob.core.windows.net."),
            cname(
                "acct.blob.core.windows.net.",
                "acct.privatelink.blob.core.windows.net.",
            ),
            cname(
                "acct.privatelink.blob.core.windows.net.",
                "blob.bl5prdstr.store.core.windows.net.",
            ),
        ];
        let (owners, cut) = c.walk(&answers, &name("WWW.example."), 1, 0);
        assert_eq!(
            owners,
            vec![name("www.example."), name("acct.blob.core.windows.net.")]
        );
        assert_eq!(
            cut,
            Some((name("acct.privatelink.blob.core.windows.net."), 1))
        );
        // A loop within one answer ends the walk without a cut.
        let looped = vec![
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
        ];
        assert_eq!(c.walk(&looped, &name("a.example."), 1, 0).1, None);
    }

    #[test]
    fn claim_on_the_root_route_is_refused() {
        let bad = CONFIG.replace(
            "zones = [\".\"]\nupstreams = [\"127.0.0.1:5301\"]",
            "zones = [\".\"]\nupstreams = [\"127.0.0.1:5301\"]\nclaim_cnames = true",
        );
        let err = crate::config::Config::parse(&bad, "test.toml", &Default::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("route[0].claim_cnames"), "{text}");
        assert!(text.contains("test.toml:10:"), "{text}");
    }
}
