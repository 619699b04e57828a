//! One try against one upstream over the route's transport, and what its reply means
//! for the query (`Verdict`): UDP with EDNS, again without EDNS for a server that
//! predates it, over TCP when the reply is truncated or too large; or every query over
//! a kept TCP connection. The try loop (`forward`) decides when tries start and stop.

use crate::config::UpstreamTransport;
use crate::dnstap::TryTap;
use crate::upstream::exchange::{Exchanged, TryError};
use crate::upstream::udp::SetAside;
use crate::upstream::upstream::Upstream;
use crate::wire::{rcode, Query};

/// What one try's reply means for the query.
pub enum Verdict {
    /// Relay it and stop.
    Final(Exchanged),
    /// A reply, but one that asks for the next upstream (SERVFAIL, REFUSED, or TC
    /// with TCP unavailable): kept in case nothing better comes.
    Soft(Exchanged),
    Failed(TryError),
}

/// One try against one upstream, over the route's transport.
/// Each message sent and received goes to dnstap when `tap` is given.
pub async fn one_try(
    u: &Upstream,
    q: &Query,
    transport: UpstreamTransport,
    set_aside: SetAside<'_>,
    tap: Option<&TryTap<'_>>,
) -> Verdict {
    match transport {
        // A `tls://` upstream is asked over its TLS connections whatever the route's
        // transport: never in plain text.
        _ if u.is_tls() => tcp_try(u, q, tap).await,
        UpstreamTransport::Udp => udp_try(u, q, set_aside, tap).await,
        UpstreamTransport::Tcp => tcp_try(u, q, tap).await,
    }
}

/// UDP with EDNS; once more without EDNS if the server answers FORMERR without an OPT
/// (RFC 6891 section 7: it predates EDNS); over a kept TCP connection if the reply is
/// truncated (RFC 7766 section 5) or larger than we take over UDP.
async fn udp_try(
    u: &Upstream,
    q: &Query,
    set_aside: SetAside<'_>,
    tap: Option<&TryTap<'_>>,
) -> Verdict {
    let addr = u.addr;
    let mut edns = true;
    let mut answer = match u.udp.exchange(q, edns, Some(set_aside), tap).await {
        Ok(a) => a,
        Err(TryError::Oversize(_)) => return tcp_verdict(u.tcp.exchange(q, edns, tap).await),
        Err(e) => return Verdict::Failed(e),
    };
    if is_pre_edns(&answer) {
        edns = false;
        answer = match u.udp.exchange(q, edns, Some(set_aside), tap).await {
            Ok(a) => a,
            Err(e) => return Verdict::Failed(e),
        };
    }
    if answer.reply.truncated {
        match u.tcp.exchange(q, edns, tap).await {
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

/// Every query over a kept TCP connection (`transport = "tcp"`, and `tls://`), with the same
/// FORMERR-without-OPT retry as UDP.
async fn tcp_try(u: &Upstream, q: &Query, tap: Option<&TryTap<'_>>) -> Verdict {
    match u.tcp.exchange(q, true, tap).await {
        Ok(a) if is_pre_edns(&a) => tcp_verdict(u.tcp.exchange(q, false, tap).await),
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
