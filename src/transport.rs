//! The transport a client query came on, and what that allows its reply.

use crate::wire::{self, Query};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over HTTPS (RFC 8484).
    Https,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Https,
    ];

    /// The largest reply this client can take on this transport.
    pub fn limit(self, q: &Query) -> usize {
        match self {
            Transport::Udp => wire::Edns::udp_limit(q.edns.as_ref()),
            Transport::Tcp | Transport::Tls | Transport::Https => wire::MAX_TCP_MESSAGE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Https => "https",
        }
    }
}
