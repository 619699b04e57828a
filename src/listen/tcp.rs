//! TCP (RFC 7766): accepting connections within the server's and each client's
//! connection limits, and serving one connection: queries read while earlier ones are
//! still being forwarded, answered in whatever order they finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::admit::Action;
use crate::config::Server;
use crate::life::Lifecycle;
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::listen::Current;
use crate::transport::Transport;
use crate::wire;

/// The `[server] tcp_*` settings, fixed until a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    idle: Duration,
    pipelined: usize,
    max_queries: usize,
    lifetime: Duration,
    per_client: usize,
    max_connections: usize,
}

impl TcpOptions {
    pub fn of(server: &Server) -> Self {
        TcpOptions {
            idle: server.tcp_idle_timeout,
            pipelined: server.tcp_max_pipelined,
            max_queries: server.tcp_max_queries_per_connection,
            lifetime: server.tcp_max_lifetime,
            per_client: server.tcp_max_connections_per_client,
            max_connections: server.tcp_max_connections,
        }
    }
}

/// TCP connections per client address, so one client cannot take every slot.
#[derive(Default)]
struct ConnectionsPerClient(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// A client's hold on one of its connection slots, given back on drop.
struct ConnectionSlot {
    table: Arc<ConnectionsPerClient>,
    ip: IpAddr,
}

impl ConnectionsPerClient {
    fn take(table: &Arc<ConnectionsPerClient>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut t = table.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until the server stops, each served in a task of its own while
/// `limit` (`tcp_max_connections`, shared by every TCP listener) and the client's own
/// share allow.
pub async fn serve(
    listener: TcpListener,
    handler: Current,
    life: Lifecycle,
    limit: Arc<Semaphore>,
    opts: TcpOptions,
) {
    let full_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let client_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let per_client = Arc::new(ConnectionsPerClient::default());
    loop {
        let (stream, client) = tokio::select! {
            _ = life.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            if full_warning.ready() {
                tracing::warn!(%client, "server.tcp_max_connections reached: closing new tcp connections (logged at most every 10s)");
            }
            continue;
        };
        let Some(slot) = ConnectionsPerClient::take(&per_client, client.ip(), opts.per_client)
        else {
            if client_warning.ready() {
                tracing::warn!(%client, "server.tcp_max_connections_per_client reached: closing new tcp connections from this client (logged at most every 10s)");
            }
            continue;
        };
        let handler = Arc::clone(&handler);
        let life2 = life.clone();
        life.tasks.spawn(async move {
            connection(stream, client, handler, life2, opts).await;
            drop((permit, slot));
        });
    }
}

/// One client TCP connection (RFC 7766): queries are read while earlier ones are still
/// being forwarded, answered in whatever order they finish, at most `pipelined` in
/// flight; idle connections close after `idle`.
async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (answered, answers) = mpsc::channel::<Vec<u8>>(opts.pipelined);
    let reader = Reader {
        rd,
        client,
        handler,
        life,
        opts,
        pipeline: Arc::new(Semaphore::new(opts.pipelined)),
        answered,
    };
    // The reader's end drops its sender; the writer ends once the jobs still running
    // have answered and dropped theirs.
    tokio::join!(reader.run(), write_answers(wr, answers, opts.idle));
}

/// Writes each answer as it comes, framed; gives up on a client that stops reading.
async fn write_answers(
    mut wr: OwnedWriteHalf,
    mut answers: mpsc::Receiver<Vec<u8>>,
    idle: Duration,
) {
    while let Some(msg) = answers.recv().await {
        let frame = wire::framed(&msg);
        // A client that stops reading must not hold the task forever.
        match tokio::time::timeout(idle, wr.write_all(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = wr.shutdown().await;
}

/// The reading side of a connection, and what it hands each query to.
struct Reader {
    rd: OwnedReadHalf,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
    /// Queries of this connection in flight, at most `tcp_max_pipelined`.
    pipeline: Arc<Semaphore>,
    answered: mpsc::Sender<Vec<u8>>,
}

impl Reader {
    /// Reads and dispatches queries until the client stops, the connection has lived
    /// or served its share (RFC 9210 section 4: past either, zonefwd stops reading,
    /// answers what it has, and closes), or the server stops.
    async fn run(mut self) {
        let end_of_life = tokio::time::Instant::now() + self.opts.lifetime;
        for _ in 0..self.opts.max_queries {
            let Some(msg) = self.next_message(end_of_life).await else {
                return;
            };
            let Ok(permit) = Arc::clone(&self.pipeline).acquire_owned().await else {
                return;
            };
            if !self.dispatch(&msg, permit).await {
                return;
            }
        }
        tracing::debug!(client = %self.client, "closing a tcp connection at server.tcp_max_queries_per_connection");
    }

    /// The next query, or `None` when the connection should close.
    async fn next_message(&mut self, end_of_life: tokio::time::Instant) -> Option<Vec<u8>> {
        let (client, idle) = (self.client, self.opts.idle);
        let first = loop {
            // Waiting for the first byte of the next message is where a connection is
            // idle; `read` is cancel-safe, so the timeout loses nothing.
            let mut first = [0u8; 1];
            let got = tokio::select! {
                _ = self.life.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(end_of_life) => {
                    tracing::debug!(%client, "closing a tcp connection at server.tcp_max_lifetime");
                    return None;
                }
                r = tokio::time::timeout(idle, self.rd.read(&mut first)) => r,
            };
            match got {
                Ok(Ok(1)) => break first[0],
                Ok(_) => return None, // EOF or error
                // Answers still pending: not idle.
                Err(_) if self.pipeline.available_permits() < self.opts.pipelined => {}
                Err(_) => {
                    tracing::debug!(%client, "closing an idle tcp connection");
                    return None;
                }
            }
        };
        // The rest of the message must follow promptly (slow-read clients).
        let msg = tokio::time::timeout(idle, wire::read_framed_after(&mut self.rd, first)).await;
        let Ok(Ok(msg)) = msg else { return None };
        if msg.len() < wire::HEADER_LEN {
            tracing::debug!(%client, "closing a tcp connection that sent a runt message");
            return None;
        }
        Some(msg)
    }

    /// Answers `msg` inline or starts its job; `false` when the writer is gone.
    async fn dispatch(&self, msg: &[u8], permit: OwnedSemaphorePermit) -> bool {
        match self
            .handler
            .load()
            .prepare(msg, self.client, Transport::Tcp)
        {
            Action::Drop => true,
            Action::Reply(out) => self.answered.send(out).await.is_ok(),
            Action::Forward(job) => {
                let answered = self.answered.clone();
                // Boxed once here: unboxed, spawning and finishing the task would
                // copy a forwarded query's whole state several times.
                self.life.tasks.spawn(Box::pin(async move {
                    let out = job.run().await;
                    let _ = answered.send(out).await;
                    drop(permit);
                }));
                true
            }
        }
    }
}
