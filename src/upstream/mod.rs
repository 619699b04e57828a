//! A route's upstream servers, top to bottom as a query meets them (the split of
//! CoreDNS's forward plugin):
//!
//! - `forward`: `UpstreamSet::resolve` (forward, NXDOMAIN fallback, guard) and the try
//!   loop within the route's deadline, in the route's order
//! - `set`: a route's upstreams as one, kept across reloads where unchanged
//! - `attempt`: one try against one upstream over the route's transport, and what
//!   its reply means (`Verdict`)
//! - `upstream`: one upstream server: settings, budget, rotation marks, transports
//! - `udp`: its UDP sockets and one exchange on one of them
//! - `tcp`: its kept, pipelined TCP connections
//! - `exchange`: what both transports share (`TryError`, `Exchanged`, query IDs)
//! - `health`: failures in a row and the `max_fails` mark; `probe`: the probe that
//!   brings a marked upstream back
//! - `guard`: `expect_private`, public addresses in a private route's answers
//! - `stats`: what one upstream's tries came to; `latency`: its answer times and the
//!   retransmit threshold they give; `retransmit`: the budget for wasted early
//!   retransmissions; `orphan`: a doubled try watched after its query ended

mod attempt;
mod exchange;
mod forward;
mod guard;
mod health;
mod latency;
mod orphan;
mod probe;
mod retransmit;
mod set;
mod stats;
mod tcp;
mod udp;
#[allow(clippy::module_inception)] // one upstream, in the module of upstreams
mod upstream;

pub use exchange::{random_id, Exchanged, TryError};
pub use set::{Previous, UpstreamSet};
pub use udp::exchange_once as udp_exchange_once;
pub use upstream::Upstream;
