//! Batched UDP I/O for the listeners: `recvmmsg` takes up to `BATCH` queries in one
//! system call and `sendmmsg` sends the answers made from them in one more.
//!
//! A cache hit costs zonefwd little beyond its two system calls (most of a hit's CPU
//! is the kernel's: one receive and one send), so under load the calls themselves are
//! what to save. nix wraps both calls in safe functions,
//! so `forbid(unsafe_code)` holds.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams per system call: enough to amortise the call, few enough that the first
/// answer of a batch is not held back noticeably.
pub const BATCH: usize = 32;

pub struct Batch {
    bufs: Vec<Vec<u8>>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

impl Batch {
    pub fn new(buf_size: usize) -> Self {
        Batch {
            bufs: vec![vec![0u8; buf_size]; BATCH],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Receives what is queued, up to `BATCH` datagrams, without blocking, into
    /// `out` as (length, sender); `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd, out: &mut Vec<(usize, SocketAddr)>) -> io::Result<()> {
        out.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let msgs = recvmmsg(
            fd,
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for m in msgs {
            // A datagram cut to the buffer size is left cut: it fails to parse and is
            // answered FORMERR (a query is far smaller than the buffer).
            if let Some(from) = m.address.as_ref().and_then(to_std) {
                out.push((m.bytes, from));
            }
        }
        Ok(())
    }

    /// The `i`th datagram of the last `recv`.
    pub fn datagram(&self, i: usize, len: usize) -> &[u8] {
        &self.bufs[i][..len.min(self.bufs[i].len())]
    }

    /// Sends up to `BATCH` of `msgs` without blocking; returns how many went out.
    pub fn send(&mut self, fd: RawFd, msgs: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let msgs = &msgs[..msgs.len().min(BATCH)];
        let addrs: Vec<Option<SockaddrStorage>> = msgs
            .iter()
            .map(|(_, a)| Some(SockaddrStorage::from(*a)))
            .collect();
        let iovs: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            fd,
            &mut self.send_headers,
            iovs.iter(),
            &addrs,
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }
}
