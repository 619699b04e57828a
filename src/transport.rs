//! The transport a client query came on, and what that allows its reply.

use crate::wire::{self, Query};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The largest reply this client can take on this transport.
    pub fn limit(self, q: &Query) -> usize {
        match self {
            Transport::Udp => wire::Edns::udp_limit(q.edns.as_ref()),
            Transport::Tcp => wire::MAX_TCP_MESSAGE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}
