//! How asking for an answer ended, the same three ways at every layer: the upstream set
//! (`Outcome<Exchanged>`, the reply as read) and the resolver (`Outcome<SharedAnswer>`,
//! the reply as its waiters share it); and which try's reply an answer is (`AnsweredBy`:
//! its upstream, and whether it was a retransmission, `RetransmitReason`).

use std::net::{IpAddr, SocketAddr};

#[derive(Debug)]
pub enum Outcome<A> {
    /// A reply to relay: a real answer, or the last SERVFAIL/REFUSED/truncated reply
    /// when no upstream did better.
    Answered { answer: A, by: AnsweredBy },
    /// Nothing usable before the route's deadline.
    Failed,
    /// Every upstream's `max_qps` budget was spent: nothing was sent.
    OverBudget,
}

/// The try whose reply it is: its upstream, and whether it retransmitted a try that
/// was still unanswered (and why), for the query log. The address is kept as IP and
/// port, 20 octets where a `SocketAddr` takes 32: it rides in every forwarded query's
/// state (`listen::udp::small`), and an IPv6 upstream's flow label and scope are not
/// what a log line needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnsweredBy {
    ip: IpAddr,
    port: u16,
    pub retransmission: Option<RetransmitReason>,
}

impl AnsweredBy {
    pub fn new(upstream: SocketAddr, retransmission: Option<RetransmitReason>) -> Self {
        AnsweredBy {
            ip: upstream.ip(),
            port: upstream.port(),
            retransmission,
        }
    }

    pub fn upstream(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// Why a try was doubled by a new one while it was still unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetransmitReason {
    /// It outlived the upstream's retransmit threshold (`latency`).
    Late,
    /// It outlived `try_timeout`, or its upstream was marked down meanwhile.
    Timeout,
}

impl RetransmitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetransmitReason::Late => "late",
            RetransmitReason::Timeout => "timeout",
        }
    }
}
