//! The connection to the dnstap collector: connect (Unix socket or TCP), the Frame
//! Streams handshake, the queued frames written in batches, STOP and FINISH at the
//! end, and reconnection with backoff when the collector is absent or goes away.
//!
//! Nothing here can hold up a query: the query path only ever `try_send`s into the
//! bounded queue (`Tap`), and a frame that does not fit is dropped and counted. A
//! collector that stalls fills the queue; one that is gone is retried, the queue
//! filling meanwhile. Each change of state is logged once: connected, unreachable,
//! lost, dropping frames and flowing again.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::DnstapSocket;
use crate::dnstap::frames::{self, Control, ControlType};

/// Frames queued for the collector before new ones are dropped: CoreDNS's buffer, a
/// few seconds of a busy replica's messages, a few MiB at most.
pub const QUEUE_FRAMES: usize = 10_000;

/// Written in one go, at most: batches frames into few system calls.
const BATCH_BYTES: usize = 64 * 1024;

/// How long frames gather before a write that would not fill a batch: at most this
/// much delay in the collector's view, at most one write a millisecond.
const GATHER: Duration = Duration::from_millis(1);

/// Connecting and the handshake must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// At shutdown or a socket change: time to write what is queued, then for the
/// collector's FINISH.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The first wait before reconnecting, doubled each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What every writer reports, kept across reloads for the metrics.
#[derive(Debug, Default)]
pub struct DnstapCounts {
    /// Frames written to a collector.
    pub sent: AtomicU64,
    /// Frames dropped: the queue full, or lost with a connection.
    pub dropped: AtomicU64,
    /// A collector has accepted the stream and is being written to.
    pub connected: AtomicBool,
    /// `[dnstap]` is in the configuration in force.
    pub configured: AtomicBool,
    /// Frames are being dropped for a full queue; logged when it starts and ends.
    pub dropping: AtomicBool,
}

impl DnstapCounts {
    /// A frame that did not fit in the queue; the first of a run is logged.
    pub fn drop_one(&self, socket: &DnstapSocket) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(collector = %socket, "dnstap: the queue is full (the collector is slow or absent): dropping frames, counted in zonefwd_dnstap_frames_total{{result=\"dropped\"}}");
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How a connection ended.
enum Ended {
    /// The server stops, or the configuration no longer sends here: flushed.
    Done,
    Lost(io::Error),
}

/// Writes `frames` to the collector at `socket` until `shutdown`, or until every
/// sender is gone (a reload moved dnstap elsewhere or turned it off).
pub async fn run(
    socket: DnstapSocket,
    mut frames: mpsc::Receiver<Vec<u8>>,
    counts: Arc<DnstapCounts>,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut said_unreachable = false;
    loop {
        let attempt = tokio::select! {
            c = connect(&socket) => c,
            _ = shutdown.cancelled() => return,
        };
        let stream = match attempt {
            Ok(stream) => stream,
            Err(e) => {
                if !said_unreachable {
                    tracing::warn!(collector = %socket, error = %e, "dnstap: cannot reach the collector; retrying with backoff, frames queue meanwhile");
                    said_unreachable = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!(collector = %socket, "dnstap: connected, sending");
        (backoff, said_unreachable) = (FIRST_BACKOFF, false);
        counts.connected.store(true, Ordering::Relaxed);
        let ended = serve(stream, &mut frames, &counts, &socket, &shutdown).await;
        counts.connected.store(false, Ordering::Relaxed);
        match ended {
            Ended::Done => return,
            Ended::Lost(e) => {
                tracing::warn!(collector = %socket, error = %e, "dnstap: lost the collector; reconnecting");
            }
        }
    }
}

/// Whether the collector at `socket` takes a dnstap stream: the handshake, then an
/// empty stream ended at once (STOP, FINISH).
pub async fn check(socket: &DnstapSocket) -> io::Result<()> {
    let mut stream = connect(socket).await?;
    stream
        .write_all(&frames::control(ControlType::Stop, false))
        .await?;
    let finish = tokio::time::timeout(FLUSH_TIMEOUT, frames::read_control(&mut stream));
    match finish.await {
        Ok(Ok(c)) if c.kind == ControlType::Finish => Ok(()),
        Ok(Ok(c)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the collector answered STOP with {:?}, not FINISH", c.kind),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no FINISH after STOP",
        )),
    }
}

/// A connection that has been through READY, ACCEPT and START, within
/// `HANDSHAKE_TIMEOUT`.
async fn connect(socket: &DnstapSocket) -> io::Result<Box<dyn Stream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(socket))
        .await
        .unwrap_or_else(|_| {
            let e = io::Error::new(io::ErrorKind::TimedOut, "no answer to the handshake");
            Err(e)
        })
}

async fn handshake(socket: &DnstapSocket) -> io::Result<Box<dyn Stream>> {
    let mut stream: Box<dyn Stream> = match socket {
        DnstapSocket::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        DnstapSocket::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    };
    stream
        .write_all(&frames::control(ControlType::Ready, true))
        .await?;
    let accept = frames::read_control(&mut stream).await?;
    let takes_dnstap = accept.kind == ControlType::Accept
        && accept
            .content_types
            .iter()
            .any(|t| t == frames::CONTENT_TYPE);
    if !takes_dnstap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the collector answered READY with {:?}, not an ACCEPT of protobuf:dnstap.Dnstap",
                accept.kind
            ),
        ));
    }
    stream
        .write_all(&frames::control(ControlType::Start, true))
        .await?;
    Ok(stream)
}

/// Writes queued frames in batches until the end. The collector says nothing until
/// FINISH, so a read that ends (or says anything) means it went away.
async fn serve(
    stream: Box<dyn Stream>,
    frames: &mut mpsc::Receiver<Vec<u8>>,
    counts: &DnstapCounts,
    socket: &DnstapSocket,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let gone = frames::read_control(&mut rd);
    tokio::pin!(gone);
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            said = &mut gone => return Ended::Lost(went_away(said)),
            f = frames.recv() => f,
        };
        let Some(first) = first else {
            return finish(&mut wr, gone, frames, counts).await;
        };
        let mut n = fill(&mut batch, first, frames);
        if batch.len() < BATCH_BYTES {
            // The queue is empty: let frames gather for a moment, so that one write
            // carries many and the query threads wake this task once a batch, not once
            // a frame (a wake and a write per frame cost more than the frame itself).
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                said = &mut gone => return Ended::Lost(went_away(said)),
                _ = shutdown.cancelled() => {}
            }
            n += top_up(&mut batch, frames);
        }
        // A write under way when the server stops gets `FLUSH_TIMEOUT` to finish; only
        // a collector that does not read loses it.
        let given_up = async {
            shutdown.cancelled().await;
            tokio::time::sleep(FLUSH_TIMEOUT).await;
        };
        let written = tokio::select! {
            biased;
            w = wr.write_all(&batch) => w,
            said = &mut gone => Err(went_away(said)),
            _ = given_up => Err(io::Error::other("stopping while the collector was not reading")),
        };
        batch.clear();
        if let Err(e) = written {
            counts.dropped.fetch_add(n, Ordering::Relaxed);
            return Ended::Lost(e);
        }
        counts.sent.fetch_add(n, Ordering::Relaxed);
        if counts.dropping.swap(false, Ordering::Relaxed) {
            tracing::info!(collector = %socket, "dnstap: frames flow again");
        }
    }
}

/// `first` and whatever else is queued, up to `BATCH_BYTES`, into `batch`: how many.
fn fill(batch: &mut Vec<u8>, first: Vec<u8>, frames: &mut mpsc::Receiver<Vec<u8>>) -> u64 {
    batch.extend_from_slice(&first);
    1 + top_up(batch, frames)
}

/// Whatever is queued, up to `BATCH_BYTES`, into `batch`: how many.
fn top_up(batch: &mut Vec<u8>, frames: &mut mpsc::Receiver<Vec<u8>>) -> u64 {
    let mut n = 0;
    while batch.len() < BATCH_BYTES {
        let Ok(f) = frames.try_recv() else { break };
        batch.extend_from_slice(&f);
        n += 1;
    }
    n
}

/// The end of the stream: what is queued, STOP, and the collector's FINISH, all
/// within `FLUSH_TIMEOUT`; frames left are counted as dropped.
async fn finish<W: AsyncWrite + Unpin>(
    wr: &mut W,
    gone: std::pin::Pin<&mut impl std::future::Future<Output = io::Result<Control>>>,
    frames: &mut mpsc::Receiver<Vec<u8>>,
    counts: &DnstapCounts,
) -> Ended {
    frames.close();
    let flush = async {
        let mut batch = Vec::new();
        while let Ok(f) = frames.try_recv() {
            let n = fill(&mut batch, f, frames);
            wr.write_all(&batch).await?;
            counts.sent.fetch_add(n, Ordering::Relaxed);
            batch.clear();
        }
        wr.write_all(&frames::control(ControlType::Stop, false))
            .await?;
        wr.flush().await?;
        let said = gone.await?;
        if said.kind != ControlType::Finish {
            tracing::debug!(kind = ?said.kind, "dnstap: the collector answered STOP with something else than FINISH");
        }
        io::Result::Ok(())
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(FLUSH_TIMEOUT, flush)
        .await
        .map_err(io::Error::from)
    {
        tracing::debug!(error = %e, "dnstap: the stream did not end cleanly");
    }
    let mut left = 0;
    while frames.try_recv().is_ok() {
        left += 1;
    }
    counts.dropped.fetch_add(left, Ordering::Relaxed);
    Ended::Done
}

/// What a read from the collector mid-stream means: it closed, or broke the protocol.
fn went_away(said: io::Result<Control>) -> io::Error {
    match said {
        Ok(c) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the collector sent {:?} mid-stream", c.kind),
        ),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the collector closed the connection",
        ),
        Err(e) => e,
    }
}
