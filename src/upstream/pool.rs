//! Connected UDP sockets to one upstream, kept between queries
//! (`server.upstream_udp_reuse`), and the rules that bound how long a port stays open.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upstream::socket::UpstreamSocket;

/// A pooled socket is closed after this long, however few queries it carried: it
/// bounds how long one random port stays open to be found by a side channel such as
/// SADDNS (CVE-2020-25705), which scans ports at about 1000 a second.
pub const POOL_MAX_AGE: Duration = Duration::from_secs(2);

/// Idle sockets kept per upstream: more than the queries one upstream has in flight
/// under any load measured, so the pool itself never caps concurrency.
const POOL_MAX_IDLE: usize = 1024;

/// Connected UDP sockets to one upstream, each on its own random port, handed to one
/// query at a time (`server.upstream_udp_reuse`), since opening, registering and
/// closing a socket costs more than the query it carries; a socket that carried
/// a reply cleanly goes back for the next query until it has carried `reuse` queries
/// or lived `POOL_MAX_AGE`. A try that ends any other way (timeout, error, a client
/// gone) closes its socket, so a late reply never meets the next query.
#[derive(Debug)]
pub struct SocketPool {
    idle: Mutex<Vec<Pooled>>,
    pub(super) reuse: u32,
}

#[derive(Debug)]
pub(super) struct Pooled {
    pub(super) sock: UpstreamSocket,
    pub(super) uses: u32,
    pub(super) born: Instant,
    /// The ID of the query this socket carried last: a copy of its reply arriving
    /// later (the upstream or the network sent it twice) is skipped without counting
    /// it as a forgery.
    pub(super) last_id: Option<u16>,
}

impl Pooled {
    /// Not yet `POOL_MAX_AGE` old: the one age rule `take`, `give` and `sweep` apply.
    fn young(&self, now: Instant) -> bool {
        now.duration_since(self.born) < POOL_MAX_AGE
    }
}

impl SocketPool {
    /// `reuse`: queries per socket; 0 or 1 is a fresh socket for every query.
    pub fn new(reuse: u32) -> Self {
        SocketPool {
            idle: Mutex::new(Vec::new()),
            reuse,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle socket young enough to use, or none.
    pub(super) fn take(&self, now: Instant) -> Option<Pooled> {
        let mut idle = self.idle();
        while let Some(p) = idle.pop() {
            if p.young(now) {
                return Some(p);
            }
        }
        None
    }

    pub(super) fn give(&self, p: Pooled, now: Instant) {
        if p.uses >= self.reuse || !p.young(now) {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < POOL_MAX_IDLE {
            idle.push(p);
        }
    }

    /// Idle sockets now.
    pub fn idle_len(&self) -> usize {
        self.idle().len()
    }

    /// Closes the idle sockets `POOL_MAX_AGE` old, which `take` would only drop when
    /// it reached them: after a burst, an upstream could otherwise keep up to
    /// `POOL_MAX_IDLE` descriptors (and their ports) open for as long as no query came.
    /// Returns how many it closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut idle = self.idle();
        let before = idle.len();
        idle.retain(|p| p.young(now));
        before - idle.len()
    }
}
