//! How asking for an answer ended, the same three ways at every layer: the upstream set
//! (`Outcome<Exchanged>`, the reply as read) and the resolver (`Outcome<SharedAnswer>`,
//! the reply as its waiters share it).

use std::net::SocketAddr;

#[derive(Debug)]
pub enum Outcome<A> {
    /// A reply to relay: a real answer, or the last SERVFAIL/REFUSED/truncated reply
    /// when no upstream did better.
    Answered { answer: A, upstream: SocketAddr },
    /// Nothing usable before the route's deadline.
    Failed,
    /// Every upstream's `max_qps` budget was spent: nothing was sent.
    OverBudget,
}
