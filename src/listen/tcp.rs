//! TCP (RFC 7766): accepting connections within the server's and each client's
//! connection limits, and serving one connection: queries read while earlier ones are
//! still being forwarded, answered in whatever order they finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

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
    let (mut rd, mut wr) = stream.into_split();
    let (answered, mut answers) = mpsc::channel::<Vec<u8>>(opts.pipelined);
    let pipeline = Arc::new(Semaphore::new(opts.pipelined));

    let writer = async move {
        while let Some(msg) = answers.recv().await {
            let frame = wire::framed(&msg);
            // A client that stops reading must not hold the task forever.
            match tokio::time::timeout(opts.idle, wr.write_all(&frame)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = wr.shutdown().await;
    };

    let reader = async move {
        // RFC 9210 section 4: a connection's life and its number of queries are
        // bounded; past either, zonefwd stops reading, answers what it has, and closes.
        let end_of_life = tokio::time::Instant::now() + opts.lifetime;
        let mut queries = 0usize;
        loop {
            // Waiting for the first byte of the next message is where a connection is
            // idle; `read` is cancel-safe, so the timeout loses nothing.
            let mut first = [0u8; 1];
            let got = tokio::select! {
                _ = life.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(end_of_life) => {
                    tracing::debug!(%client, "closing a tcp connection at server.tcp_max_lifetime");
                    break;
                }
                r = tokio::time::timeout(opts.idle, rd.read(&mut first)) => r,
            };
            match got {
                Ok(Ok(1)) => {}
                Ok(_) => break, // EOF or error
                Err(_) => {
                    if pipeline.available_permits() < opts.pipelined {
                        continue; // answers still pending: not idle
                    }
                    tracing::debug!(%client, "closing an idle tcp connection");
                    break;
                }
            }
            // The rest of the message must follow promptly (slow-read clients).
            let msg =
                tokio::time::timeout(opts.idle, wire::read_framed_after(&mut rd, first[0])).await;
            let Ok(Ok(msg)) = msg else { break };
            if msg.len() < wire::HEADER_LEN {
                tracing::debug!(%client, "closing a tcp connection that sent a runt message");
                break;
            }
            let Ok(permit) = Arc::clone(&pipeline).acquire_owned().await else {
                break;
            };
            queries += 1;
            match handler.load().prepare(&msg, client, Transport::Tcp) {
                Action::Drop => {}
                Action::Reply(out) => {
                    if answered.send(out).await.is_err() {
                        break;
                    }
                }
                Action::Forward(job) => {
                    let answered = answered.clone();
                    // Boxed once here: unboxed, spawning and finishing the task would
                    // copy a forwarded query's whole state several times.
                    life.tasks.spawn(Box::pin(async move {
                        let out = job.run().await;
                        let _ = answered.send(out).await;
                        drop(permit);
                    }));
                }
            }
            if queries >= opts.max_queries {
                tracing::debug!(%client, "closing a tcp connection at server.tcp_max_queries_per_connection");
                break;
            }
        }
        // Dropping our sender lets the writer end once the spawned jobs have answered.
    };

    tokio::join!(reader, writer);
}
