//! A route's upstream servers, split the way CoreDNS's forward plugin is:
//!
//! - `set`: a route's upstreams as one, and `resolve` (forward, NXDOMAIN fallback, guard)
//! - `forward`: the try loop within the route's deadline
//! - `policy`: the order the upstreams are tried in
//! - `health`: consecutive failures, marks, and the probe that brings one back
//! - `guard`: `expect_private`, public addresses in a private route's answers
//! - `server`: one upstream server, its counters, budget and socket pool
//! - `exchange`: one query out to one server, the matching reply back (UDP, TCP)
//! - `pool`: the UDP sockets kept between queries
//! - `socket`: one connected UDP socket, registered for readability only
//! - `tcp`: the TCP connections kept between queries, pipelined

pub mod exchange;
mod forward;
mod guard;
mod health;
mod policy;
mod pool;
mod server;
mod set;
mod socket;
mod tcp;

pub use exchange::Exchanged;
pub use server::{Upstream, UpstreamSettings};
pub use set::{Previous, UpstreamSet};
