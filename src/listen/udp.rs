//! UDP: a thread per socket, each with a single-threaded runtime, receiving and
//! answering queries in batches (`batch`: recvmmsg/sendmmsg); forwarded queries are
//! answered in the serving loop itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::admit::Action;
use crate::life::Lifecycle;
use crate::listen::batch::{self, Batch};
use crate::listen::Current;
use crate::notify;
use crate::transport::Transport;

/// Largest client datagram read; a query is far smaller, anything cut short fails to
/// parse and is answered FORMERR.
const UDP_QUERY_BUF: usize = 4096;

/// Serves one UDP socket on a thread of its own with a single-threaded runtime: a
/// query is received, answered (from cache, inline) and sent on one thread, and the
/// forwarding it starts runs there too. A shared multi-threaded runtime spent more
/// CPU waking its workers for each other than on the queries themselves.
pub fn spawn_thread(
    index: usize,
    sock: std::net::UdpSocket,
    handler: Current,
    life: Lifecycle,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("zonefwd-udp-{index}"))
        .spawn(move || {
            rt.block_on(async move {
                match UdpSocket::from_std(sock) {
                    // Tracked, so the stop waits for the queries it is still answering.
                    Ok(sock) => {
                        life.tasks
                            .track_future(serve(Arc::new(sock), handler, life.clone()))
                            .await
                    }
                    Err(e) => tracing::error!(error = %e, "cannot serve a udp socket"),
                }
                // Queries this thread started finish on this runtime: keep it running
                // until every tracked task, here and elsewhere, is done.
                life.tasks.wait().await;
            })
        })?;
    Ok(())
}

/// A forwarded query being answered: its reply and where it goes, or `None` when the
/// answer panicked (a bug, already reported by the panic hook).
type Answering = Pin<Box<dyn Future<Output = Option<(Vec<u8>, SocketAddr)>>>>;

/// A forwarded query's answer, to be run by the serving loop itself rather than in a
/// task of its own: a task per query costs the runtime's task list, the tracker, a
/// task cell and a hand-off of the reply back to the loop. A panic ends this query
/// only, as it would end its task (release builds keep `panic = "unwind"` for this).
/// The answer's state, about a KiB, is made inside the box (from `answer`, which only
/// captures the job): made outside and moved in, or held unboxed in the loop's set,
/// it would be copied whole on the way.
fn answering<F: Future<Output = Vec<u8>>>(
    answer: impl FnOnce() -> F + 'static,
    client: SocketAddr,
) -> Answering {
    Box::pin(small(
        std::panic::AssertUnwindSafe(async move { (answer().await, client) })
            .catch_unwind()
            .map(Result::ok),
    ))
}

/// mimalloc serves blocks up to 1 KiB from per-size free lists; a larger one takes its
/// slower generic path, and the answer's state is allocated once per forwarded query.
const SMALL_ALLOCATION: usize = 1024;

/// `f`, checked at compile time to fit a small allocation, so a change that grows a
/// forwarded query's state past it fails the build instead of slowing every miss.
fn small<F>(f: F) -> F {
    const {
        assert!(
            std::mem::size_of::<F>() <= SMALL_ALLOCATION,
            "a forwarded query's state outgrew a small allocation: box a part of it"
        )
    };
    f
}

/// Receives, answers and forwards until the server stops, then answers what is still
/// in flight.
async fn serve(sock: Arc<UdpSocket>, handler: Current, life: Lifecycle) {
    let fd = sock.as_raw_fd();
    // What dnstap names as the responder of a client's query: the address bound (a
    // wildcard one names no interface).
    let server = sock
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let beat = life.heartbeats.register();
    let mut heartbeat = tokio::time::interval(notify::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Batch::new(UDP_QUERY_BUF);
    let mut received = Vec::with_capacity(batch::BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(batch::BATCH);
    let mut jobs: FuturesUnordered<Answering> = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = life.shutdown.cancelled() => break,
            _ = heartbeat.tick() => {
                beat.beat();
                continue;
            }
            Some(done) = jobs.next(), if !jobs.is_empty() => {
                replies.extend(done);
                finished(&mut jobs, &mut replies).await;
                flush(&sock, &mut batch, &mut replies).await;
                continue;
            }
            r = sock.readable() => if let Err(e) = r {
                tracing::debug!(error = %e, "udp socket error");
                continue;
            },
        }
        match sock.try_io(Interest::READABLE, || batch.recv(fd, &mut received)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier replies surface here on some systems;
                // they concern one client, not the socket.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        }
        let handler = handler.load();
        for (i, &(len, client)) in received.iter().enumerate() {
            match handler.prepare(batch.datagram(i, len), client, server, Transport::Udp) {
                Action::Drop => {}
                Action::Reply(out) => replies.push((out, client)),
                Action::Forward(job) => jobs.push(answering(move || job.run(), client)),
            }
        }
        flush(&sock, &mut batch, &mut replies).await;
    }
    // Stopping: no new queries, but those in flight still get their answers.
    while let Some(done) = jobs.next().await {
        replies.extend(done);
        finished(&mut jobs, &mut replies).await;
        flush(&sock, &mut batch, &mut replies).await;
    }
}

/// Collects the replies of every other answer already finished, so they leave in the
/// same `sendmmsg` as the one that woke the loop.
async fn finished(jobs: &mut FuturesUnordered<Answering>, into: &mut Vec<(Vec<u8>, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        while let Poll::Ready(Some(done)) = jobs.poll_next_unpin(cx) {
            into.extend(done);
        }
        Poll::Ready(())
    })
    .await
}

/// Sends `replies`, as many per system call as the socket takes; whatever it will not
/// take at once goes out one by one, waiting for room.
async fn flush(sock: &UdpSocket, batch: &mut Batch, replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
    let fd = sock.as_raw_fd();
    let mut sent = 0;
    while sent < replies.len() {
        match sock.try_io(Interest::WRITABLE, || batch.send(fd, &replies[sent..])) {
            Ok(n) if n > 0 => sent += n,
            _ => {
                let (out, client) = &replies[sent];
                send_udp(sock, out, *client).await;
                sent += 1;
            }
        }
    }
    replies.clear();
}

async fn send_udp(sock: &UdpSocket, out: &[u8], client: SocketAddr) {
    if let Err(e) = sock.send_to(out, client).await {
        tracing::debug!(%client, error = %e, "udp send failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_bug() -> Vec<u8> {
        panic!("a bug hit by one packet")
    }

    #[tokio::test]
    async fn a_panicking_answer_ends_only_its_own_query() {
        let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut jobs: FuturesUnordered<Answering> = FuturesUnordered::new();
        jobs.push(answering(a_bug, client));
        jobs.push(answering(|| async { vec![1, 2, 3] }, client));
        let mut replies = Vec::new();
        while let Some(done) = jobs.next().await {
            replies.extend(done);
        }
        assert_eq!(replies, vec![(vec![1, 2, 3], client)]);
    }
}
