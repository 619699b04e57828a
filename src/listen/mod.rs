//! The listeners: where client queries come in and their answers go out.
//!
//! - `bind`: the sockets, bound before serving starts
//! - `holder`: who holds a port zonefwd could not bind, and the fix
//! - `udp`: a thread per UDP socket, batched receive and send (`batch`)
//! - `tcp`: accept within limits, and one RFC 7766 connection
//!
//! zonefwd owns its listeners instead of using hickory-server's: that one answers the
//! queries of a TCP connection one after another (no RFC 7766 out-of-order
//! pipelining, so one slow upstream stalls the connection), spawns a task per UDP
//! datagram without a bound, and can only send replies it encodes from records, which
//! rules out relaying the upstream's bytes.

pub mod accept;
pub mod batch;
mod bind;
pub mod holder;
pub mod https;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::handler::Handler;

pub use bind::{BindError, Listeners};

/// The handler every listener uses for its next query; a reload swaps it whole, so a
/// query is handled entirely by the old configuration or entirely by the new one.
pub type Current = Arc<ArcSwap<Handler>>;
