//! `expect_private`: a name in a private DNS zone should resolve to private addresses
//! only. A public A/AAAA record for one usually means the private DNS zone is not
//! linked to the network and the cloud resolver answered from the public zone.
//!
//! Only names in private zones count. A cloud route forwards the public zones
//! (`blob.core.windows.net`) so that the CNAME into the private zone
//! (`acct.privatelink.blob.core.windows.net`) is followed by the cloud resolver; the
//! same public zone holds every storage account and web app without a private
//! endpoint, whose public addresses are the right answer. So an answer is counted when
//! its name or a name its CNAME chain passes through is in a private zone (the
//! catalog's, `presets::private_zones`, or a zone of the route that is not a public
//! forward zone), or when the route's own zones are all private.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{ExpectPrivate, Route};
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::outcome::Outcome;
use crate::presets::{self, ZonePattern};
use crate::upstream::exchange::Exchanged;
use crate::wire::{self, Query};

/// Which names of a route's answers the guard looks at.
#[derive(Debug)]
enum Scope {
    /// The route's zones are all private: every answer.
    Everything,
    /// Names in these private zones, or reached through a CNAME into one.
    Under(Vec<ZonePattern>),
}

/// A route's `expect_private`, and what it has seen.
#[derive(Debug)]
pub struct PrivateGuard {
    mode: ExpectPrivate,
    scope: Scope,
    warning: Throttle,
    public_answers: AtomicU64,
}

impl PrivateGuard {
    /// The guard of `route`, if it has `expect_private`.
    pub fn for_route(route: &Route) -> Option<PrivateGuard> {
        let mode = route.expect_private?;
        let own_private: Vec<&Vec<u8>> = route
            .zones
            .iter()
            .filter(|z| z.as_slice() != [0] && !presets::is_public_forward_zone(z))
            .collect();
        let scope = if own_private.len() == route.zones.len() {
            Scope::Everything
        } else {
            let mut zones = presets::private_zones().to_vec();
            zones.extend(own_private.into_iter().map(|z| ZonePattern::of_wire(z)));
            Scope::Under(zones)
        };
        Some(PrivateGuard {
            mode,
            scope,
            warning: Throttle::new(LIMIT_WARN_INTERVAL),
            public_answers: AtomicU64::new(0),
        })
    }

    /// Whether this answer is for a private name.
    fn applies(&self, q: &Query, answer: &Exchanged) -> bool {
        let Scope::Under(zones) = &self.scope else {
            return true;
        };
        let in_private = |name: &[u8]| zones.iter().any(|z| z.contains(name));
        in_private(&q.qname_lower)
            || wire::answer_chain_names(
                &answer.bytes,
                answer.reply.question_end,
                answer.reply.answers,
            )
            .iter()
            .any(|n| in_private(n))
    }
}

impl PrivateGuard {
    /// Answers with public A/AAAA records for private names.
    pub fn public_answers(&self) -> u64 {
        self.public_answers.load(Ordering::Relaxed)
    }

    /// Public A/AAAA records for a private name are counted and logged (`warn`), or
    /// turn the answer into a failure (`enforce`) so the client gets SERVFAIL rather
    /// than an address that leaves the private network.
    pub fn check(&self, route: &str, q: &Query, out: Outcome<Exchanged>) -> Outcome<Exchanged> {
        let Outcome::Answered { answer, by } = &out else {
            return out;
        };
        let public = wire::public_addresses(
            &answer.bytes,
            answer.reply.question_end,
            answer.reply.answers,
        );
        if public.is_empty() || !self.applies(q, answer) {
            return out;
        }
        self.public_answers.fetch_add(1, Ordering::Relaxed);
        if self.warning.ready() {
            let addrs: Vec<String> = public.iter().map(|a| a.to_string()).collect();
            tracing::warn!(
                route = %route,
                upstream = %by.upstream(),
                name = %wire::name_to_string(&q.qname),
                addresses = %addrs.join(" "),
                action = if self.mode == ExpectPrivate::Enforce { "servfail" } else { "answered" },
                "expect_private: a public address for a name in a private zone (is the private DNS zone linked to this network? logged at most every 10s)"
            );
        }
        match self.mode {
            ExpectPrivate::Warn => out,
            ExpectPrivate::Enforce => Outcome::Failed,
        }
    }
}
