//! What both transports' exchanges share: why a try produced no reply (`TryError`),
//! the reply that matched (`Exchanged`), the rule that tells this host's own shortage
//! of sockets from an upstream's failure, and where query IDs come from.

use std::io;

use crate::wire::{self, Reply};

/// Why a try produced no reply.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("network error: {0}")]
    Network(#[from] io::Error),
    #[error("{0}")]
    Malformed(wire::WireError),
    #[error("connection closed before a reply")]
    Closed,
    /// Every kept TCP connection to the upstream is at its pipelining limit: ours, so
    /// not counted as the upstream's failure.
    #[error("every kept tcp connection to the upstream is full")]
    Busy,
    /// No socket could be opened (out of descriptors or buffers): this host's
    /// trouble, not the upstream's, so not counted against its health either.
    #[error("no socket for the upstream: {0}")]
    NoSocket(io::Error),
    /// A datagram as large as the receive buffer (this many octets): it may have
    /// been cut.
    #[error("reply larger than {0} octets over udp")]
    Oversize(usize),
    /// A `tls://` upstream's handshake failed (its certificate, or the protocol): a
    /// failure of that upstream, never a reason to ask it in plain text.
    #[error("{0}")]
    Tls(crate::tls::HandshakeError),
}

/// A reply that matched the query and walked clean.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub bytes: Vec<u8>,
    pub reply: Reply,
}

/// Opening a socket failed for want of descriptors, buffers or memory: the host's limit
/// (`LimitNOFILE`, a container's), not the upstream's doing.
fn is_out_of_sockets(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let out = [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM];
    e.raw_os_error()
        .is_some_and(|n| out.iter().any(|&errno| errno as i32 == n))
}

/// An error opening a socket, as the try's error.
pub fn opening(e: io::Error) -> TryError {
    if is_out_of_sockets(&e) {
        TryError::NoSocket(e)
    } else {
        TryError::Network(e)
    }
}

/// A query ID from a CSPRNG (ChaCha, OS-seeded): RFC 5452 section 9.2.
pub fn random_id() -> u16 {
    rand::random()
}
