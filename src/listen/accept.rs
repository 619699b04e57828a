//! Accepting stream connections (plain TCP, DoT, DoH) within the server's limits:
//! `tcp_max_connections` across every stream listener, and
//! `tcp_max_connections_per_client` for one client address across them all, so one
//! client cannot take every slot by spreading over transports. What a connection is
//! then served with is the caller's (`tcp`, `tls`, `https`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::life::Lifecycle;
use crate::limit::{Throttle, LIMIT_WARN_INTERVAL};
use crate::tls::HandshakeCounts;
use crate::transport::Transport;

/// What one kind of stream listener (TCP, DoT, DoH) accepted, for the metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: AtomicU64,
    /// Closed at once: over `tcp_max_connections` or the client's share.
    pub refused: AtomicU64,
    pub open: AtomicU64,
    /// DoT and DoH: their handshakes, by outcome.
    pub handshakes: HandshakeCounts,
}

/// Per stream transport, in `Transport::ALL`'s order (UDP's stays empty).
#[derive(Debug, Default)]
pub struct StreamStats([ConnectionStats; Transport::ALL.len()]);

impl StreamStats {
    pub fn of(&self, t: Transport) -> &ConnectionStats {
        &self.0[t as usize]
    }
}

/// The connection slots every stream listener draws from.
pub struct StreamLimits {
    /// `tcp_max_connections`.
    server: Arc<Semaphore>,
    /// `tcp_max_connections_per_client`.
    per_client: usize,
    by_client: Arc<ConnectionsPerClient>,
}

impl StreamLimits {
    pub fn new(max_connections: usize, per_client: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            server: Arc::new(Semaphore::new(max_connections)),
            per_client,
            by_client: Arc::default(),
        })
    }
}

/// Connections per client address, so one client cannot take every slot.
#[derive(Default)]
struct ConnectionsPerClient(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// A connection's hold on its slots (the server's and its client's), given back on
/// drop.
pub struct ConnectionSlot {
    _server: tokio::sync::OwnedSemaphorePermit,
    table: Arc<ConnectionsPerClient>,
    ip: IpAddr,
}

impl ConnectionsPerClient {
    fn take(table: &Arc<ConnectionsPerClient>, ip: IpAddr, max: usize) -> bool {
        let mut t = table.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
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

/// Accepts connections on `listener` (for `kind`: tcp, tls or https) until the server
/// stops, each served by `serve` in a task of its own while the limits allow; the slot
/// is held until `serve` ends.
pub async fn accept<F, Fut>(
    listener: TcpListener,
    kind: Transport,
    limits: Arc<StreamLimits>,
    stats: Arc<StreamStats>,
    life: Lifecycle,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let full_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let client_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let accept_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let name = kind.as_str();
    loop {
        let (stream, client) = tokio::select! {
            _ = life.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning, and
                    // say so once per interval, not 20 times a second.
                    if accept_warning.ready() {
                        tracing::warn!(error = %e, listener = name, "accept failed (logged at most every 10s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stats.of(kind).accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = Arc::clone(&limits.server).try_acquire_owned() else {
            stats.of(kind).refused.fetch_add(1, Ordering::Relaxed);
            if full_warning.ready() {
                tracing::warn!(%client, listener = name, "server.tcp_max_connections reached: closing new connections (logged at most every 10s)");
            }
            continue;
        };
        if !ConnectionsPerClient::take(&limits.by_client, client.ip(), limits.per_client) {
            stats.of(kind).refused.fetch_add(1, Ordering::Relaxed);
            if client_warning.ready() {
                tracing::warn!(%client, listener = name, "server.tcp_max_connections_per_client reached: closing new connections from this client (logged at most every 10s)");
            }
            continue;
        }
        let slot = ConnectionSlot {
            _server: permit,
            table: Arc::clone(&limits.by_client),
            ip: client.ip(),
        };
        let served = serve(stream, client);
        stats.of(kind).open.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        life.tasks.spawn(async move {
            served.await;
            drop(slot);
            stats.of(kind).open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
