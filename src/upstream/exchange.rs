//! One exchange with one upstream server: a query out, the matching reply back.
//!
//! Each UDP query gets a socket of its own, bound to a port the kernel picks at
//! random from the ephemeral range and connected to the upstream, so the kernel only
//! delivers datagrams from that address and port; the ID comes from a CSPRNG and the
//! reply must also echo the question (RFC 5452 sections 4, 9.1, 9.2). Anything that
//! does not match is dropped and the wait goes on: a forged reply cannot end a query.
//! None of these functions time out on their own; the caller holds the deadline.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire::{self, Query, Reply, ReplyError};

/// Why a try produced no reply.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("network error: {0}")]
    Network(#[from] io::Error),
    #[error("{0}")]
    Malformed(wire::WireError),
    #[error("connection closed before a reply")]
    Closed,
    /// A datagram as large as the receive buffer: it may have been cut.
    #[error("reply larger than {UDP_RECV_BUF} octets over udp")]
    Oversize,
}

/// A reply that matched the query and walked clean.
#[derive(Debug, Clone)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub reply: Reply,
}

/// Largest datagram taken from an upstream over UDP. We advertise 1232 octets
/// (build_upstream_query), so a compliant server stays far below; one that ignores it
/// and fills the buffer is asked again over TCP. Small on purpose: a 64 KiB zeroed
/// buffer per try cost a fifth of the forwarding CPU (memset and page faults).
const UDP_RECV_BUF: usize = 4096;

pub fn random_id() -> u16 {
    rand::random()
}

/// `mismatched` counts replies dropped for a wrong ID or question.
pub async fn udp(
    server: SocketAddr,
    q: &Query,
    edns: bool,
    mismatched: &AtomicU64,
) -> Result<Answer, TryError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    let id = random_id();
    sock.send(&wire::build_upstream_query(q, id, edns)).await?;
    // Uninitialised capacity: recv_buf_from writes into it without zeroing first.
    let mut buf: Vec<u8> = Vec::with_capacity(UDP_RECV_BUF);
    loop {
        buf.clear();
        let (n, from) = sock.recv_buf_from(&mut buf).await?;
        if n >= UDP_RECV_BUF {
            return Err(TryError::Oversize);
        }
        if from != server {
            // The connected socket already filters by source; this is the belt to
            // those braces.
            tracing::debug!(%server, %from, "ignoring datagram from an unexpected source");
            continue;
        }
        match wire::parse_reply(&buf[..n], id, q) {
            Ok(reply) => return Ok(Answer { bytes: buf, reply }),
            Err(ReplyError::Mismatch) => {
                mismatched.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%server, "ignoring a reply that does not match the query (id or question)");
            }
            Err(ReplyError::Malformed(e)) => return Err(TryError::Malformed(e)),
        }
    }
}

pub async fn tcp(
    server: SocketAddr,
    q: &Query,
    edns: bool,
    mismatched: &AtomicU64,
) -> Result<Answer, TryError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let id = random_id();
    let msg = wire::build_upstream_query(q, id, edns);
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    frame.extend_from_slice(&msg);
    stream.write_all(&frame).await?;
    loop {
        let len = match stream.read_u16().await {
            Ok(l) => usize::from(l),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(TryError::Closed),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; len];
        match stream.read_exact(&mut buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(TryError::Closed),
            Err(e) => return Err(e.into()),
        }
        match wire::parse_reply(&buf, id, q) {
            Ok(reply) => return Ok(Answer { bytes: buf, reply }),
            Err(ReplyError::Mismatch) => {
                mismatched.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%server, "ignoring a tcp message that does not match the query");
            }
            Err(ReplyError::Malformed(e)) => return Err(TryError::Malformed(e)),
        }
    }
}
