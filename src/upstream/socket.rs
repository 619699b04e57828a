//! A connected UDP socket to one upstream, registered with the event loop for
//! readability only.
//!
//! tokio's `UdpSocket` always registers for writability too, so every datagram sent
//! wakes the epoll callback once more when the kernel frees its buffer. An upstream
//! socket carries one small query at a time and never waits to write: its query is
//! sent with a plain non-blocking `send`, and a full send buffer (`WouldBlock`) fails
//! the try like any other network error, so the next upstream is asked.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug)]
pub struct UpstreamSocket(AsyncFd<UdpSocket>);

impl UpstreamSocket {
    /// A socket connected to `server`, with `query` already sent. No explicit bind:
    /// connect binds an unbound socket to a port the kernel draws at random from the
    /// ephemeral range, as bind to port 0 would, one system call sooner. The query
    /// leaves before the socket is registered, so nothing waits on the event loop.
    pub fn open(server: SocketAddr, query: &[u8]) -> io::Result<UpstreamSocket> {
        let sock = Socket::new(
            Domain::for_address(server),
            Type::DGRAM.nonblocking(),
            Some(Protocol::UDP),
        )?;
        sock.connect(&server.into())?;
        sock.send(query)?;
        // tokio 1.54 deprecates this safe constructor (tokio#8587) because a type whose
        // `as_raw_fd` could change under the registration would make it unsound. A
        // std `UdpSocket` owns its descriptor for its whole life, and nothing here
        // replaces it (`AsyncFd::get_mut` is never called), so the condition
        // `register_with_interest` states as its safety contract holds.
        #[allow(deprecated)]
        let registered = AsyncFd::with_interest(UdpSocket::from(sock), Interest::READABLE);
        registered.map(UpstreamSocket)
    }

    /// Sends `query` now, or fails: the socket is not registered for writability.
    pub fn send(&self, query: &[u8]) -> io::Result<()> {
        self.0.get_ref().send(query).map(drop)
    }

    /// Forgets that the socket was readable, without a system call: the last receive
    /// left that mark, and reading the (nearly always empty) queue to clear it would
    /// cost a `recvfrom` per query. Whatever did reach the port meanwhile is read
    /// before the reply and checked like anything arriving during the query.
    pub fn forget_readable(&self) {
        use futures_util::FutureExt;
        if let Some(Ok(mut ready)) = self.0.readable().now_or_never() {
            ready.clear_ready();
        }
    }

    /// Waits until a datagram may be there, or an error (the ICMP port unreachable
    /// of an upstream that is not listening, ECONNREFUSED on a connected socket), then
    /// hands `read` the socket, whose receive returns either; `read`'s `WouldBlock`
    /// clears the mark and gives `None` (nothing was there after all).
    ///
    /// The error interest matters: epoll reports a pending socket error as EPOLLERR
    /// without EPOLLIN, which readability alone never wakes on, so a refused query
    /// waited out its whole try timeout instead of failing over at once.
    pub async fn when_readable<T>(
        &self,
        read: impl FnOnce(&UdpSocket) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let mut ready = self.0.ready(Interest::READABLE | Interest::ERROR).await?;
        match ready.try_io(|fd| read(fd.get_ref())) {
            Ok(result) => result.map(Some),
            Err(_would_block) => Ok(None),
        }
    }
}
