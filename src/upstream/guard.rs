//! `expect_private`: a private route's answers should hold private addresses only.
//! A public A/AAAA record in one usually means the private DNS zone is not linked to
//! the network and the cloud resolver answered from the public zone instead.

use std::sync::atomic::Ordering;

use crate::config::ExpectPrivate;
use crate::outcome::Outcome;
use crate::upstream::{Exchanged, UpstreamSet};
use crate::wire::{self, Query};

impl UpstreamSet {
    /// Public A/AAAA records in an answer are counted and logged (`warn`), or turn the
    /// answer into a failure (`enforce`) so the client gets SERVFAIL rather than an
    /// address that leaves the private network.
    pub(crate) fn guard(&self, q: &Query, out: Outcome<Exchanged>) -> Outcome<Exchanged> {
        let (Some(mode), Outcome::Answered { answer, upstream }) = (self.expect_private, &out)
        else {
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
}
