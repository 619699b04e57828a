//! Per-client limits: a query rate (token bucket) and a cap on queries waiting on
//! upstreams.
//!
//! The in-flight cap is the answer to DNSBomb (CVE-2024-33655): a client that sends
//! queries for names whose upstream is slow makes them pile up, then receives all the
//! answers at once. The global `max_inflight` bounds the pile; this bounds one client's
//! share of it, so one client cannot starve the rest.
//!
//! A client is an IPv4 address or an IPv6 /64 (one host's usual allocation: per
//! address, a single IPv6 host could take 2^64 budgets). The table is sharded and
//! bounded: when a shard is full, idle entries (full bucket, nothing in flight) go first.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Hasher = quick_cache::DefaultHashBuilder;

use crate::acl::Acl;
use crate::limit::{Rate, TokenBucket};

/// What a client over a limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Nothing: the cheapest answer, and no reflection toward a forged source.
    Drop,
    /// REFUSED, so a well-behaved client learns to back off or try another server.
    Refuse,
}

/// The limits as configured (`[server] client_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimitConfig {
    /// Queries per second per client; 0 turns the rate limit off.
    pub qps: u32,
    /// Queries a client may send at once after being quiet.
    pub burst: u32,
    /// Queries per client waiting on upstreams; 0 turns the cap off.
    pub max_inflight: u32,
    pub action: OverLimit,
    /// Clients no per-client limit applies to (on-prem DNS servers that forward for
    /// thousands of hosts), matched as the ACL is (IPv4-mapped addresses as IPv4).
    pub exempt: Acl,
}

/// Why a query was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate,
    Inflight,
}

const SHARDS: usize = 32;
/// Clients tracked per shard; 32 x 2048 = 65536 in all, ~3 MiB at most.
const SHARD_CAPACITY: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(u32::from(v4)),
                None => Key::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    bucket: TokenBucket,
    inflight: u32,
}

/// The clients being tracked: shared by every configuration a reload brings, so a
/// client's in-flight count and rate stay one across the overlap.
#[derive(Debug)]
pub struct ClientTable {
    hasher: Hasher,
    /// foldhash like the shard choice; seeded per process, so sources cannot aim at
    /// one bucket.
    shards: Box<[Mutex<HashMap<Key, Entry, Hasher>>]>,
    /// Where the buckets' times count from.
    epoch: Instant,
}

impl Default for ClientTable {
    fn default() -> Self {
        ClientTable {
            hasher: Hasher::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Default::default())))
                .collect(),
            epoch: Instant::now(),
        }
    }
}

impl ClientTable {
    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry, Hasher>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clients tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The limits of one configuration over the shared table.
#[derive(Debug)]
pub struct ClientLimits {
    config: ClientLimitConfig,
    /// `client_qps` and `client_burst`; `None` when the rate limit is off.
    rate: Option<Rate>,
    table: Arc<ClientTable>,
}

/// Held by a query being forwarded; gives its in-flight slot back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<ClientTable>,
    key: Key,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut shard = self.table.shard(self.key);
        if let Some(e) = shard.get_mut(&self.key) {
            e.inflight = e.inflight.saturating_sub(1);
        }
    }
}

impl ClientLimits {
    pub fn new(config: ClientLimitConfig, table: Arc<ClientTable>) -> Self {
        let rate = (config.qps > 0).then(|| Rate::new(config.qps, config.burst, table.epoch));
        ClientLimits {
            config,
            rate,
            table,
        }
    }

    pub fn action(&self) -> OverLimit {
        self.config.action
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.config.exempt.allows(ip)
    }

    /// The entry for `key`, made room for if the shard is full.
    fn entry<'a>(
        &self,
        shard: &'a mut HashMap<Key, Entry, Hasher>,
        key: Key,
        now: Instant,
    ) -> &'a mut Entry {
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&key) {
            // Idle entries are the same as no entry: a full bucket, nothing in flight.
            shard.retain(|_, e| {
                e.inflight > 0 || self.rate.is_some_and(|r| !e.bucket.is_full(&r, now))
            });
            if shard.len() > SHARD_CAPACITY * 3 / 4 {
                // Still mostly busy (a flood of sources): forget entries with nothing in
                // flight down to three quarters, so the next quarter of new clients
                // costs no scan (a slot's drop must find its entry, so those stay).
                let excess = shard.len() - SHARD_CAPACITY * 3 / 4;
                let victims: Vec<Key> = shard
                    .iter()
                    .filter(|(_, e)| e.inflight == 0)
                    .map(|(k, _)| *k)
                    .take(excess)
                    .collect();
                for k in victims {
                    shard.remove(&k);
                }
            }
        }
        shard.entry(key).or_insert(Entry {
            bucket: TokenBucket::new(),
            inflight: 0,
        })
    }

    /// Takes one token from the client's bucket.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Some(rate) = self.rate.filter(|_| !self.exempt(ip)) else {
            return Ok(());
        };
        let key = Key::of(ip);
        let mut shard = self.table.shard(key);
        let e = self.entry(&mut shard, key, now);
        if e.bucket.try_take(&rate, now) {
            Ok(())
        } else {
            Err(Refusal::Rate)
        }
    }

    /// A slot for one query about to wait on an upstream; `None` for an exempt client
    /// or when the cap is off.
    pub fn start(&self, ip: IpAddr, now: Instant) -> Result<Option<ClientSlot>, Refusal> {
        if self.config.max_inflight == 0 || self.exempt(ip) {
            return Ok(None);
        }
        let key = Key::of(ip);
        let mut shard = self.table.shard(key);
        let e = self.entry(&mut shard, key, now);
        if e.inflight >= self.config.max_inflight {
            return Err(Refusal::Inflight);
        }
        e.inflight += 1;
        Ok(Some(ClientSlot {
            table: Arc::clone(&self.table),
            key,
        }))
    }

    /// Clients tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.table.tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(qps: u32, burst: u32, inflight: u32, exempt: &[&str]) -> ClientLimitConfig {
        ClientLimitConfig {
            qps,
            burst,
            max_inflight: inflight,
            action: OverLimit::Drop,
            exempt: Acl::new(exempt.iter().map(|s| s.parse().unwrap()).collect()),
        }
    }

    fn limits(qps: u32, burst: u32, inflight: u32, exempt: &[&str]) -> ClientLimits {
        ClientLimits::new(config(qps, burst, inflight, exempt), Arc::default())
    }

    #[test]
    fn a_new_configuration_shares_the_table() {
        let table = Arc::new(ClientTable::default());
        let old = ClientLimits::new(config(0, 0, 1, &[]), Arc::clone(&table));
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held = old.start(ip, t0).unwrap();
        assert!(held.is_some());
        // The reloaded configuration sees the query still in flight under the old one.
        let new = ClientLimits::new(config(0, 0, 1, &[]), table);
        assert_eq!(new.start(ip, t0).unwrap_err(), Refusal::Inflight);
        drop(held);
        assert!(new.start(ip, t0).unwrap().is_some());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = limits(10, 5, 0, &[]);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.admit(ip, t0), Ok(()));
        }
        assert_eq!(l.admit(ip, t0), Err(Refusal::Rate));
        // Another client has its own bucket.
        assert_eq!(l.admit("10.0.0.2".parse().unwrap(), t0), Ok(()));
        // 10 qps: one token per 100 ms, never more than the burst.
        assert_eq!(l.admit(ip, t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(
            l.admit(ip, t0 + Duration::from_millis(100)),
            Err(Refusal::Rate)
        );
        let later = t0 + Duration::from_secs(60);
        let admitted = (0..20).filter(|_| l.admit(ip, later).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn ipv6_clients_share_a_64_and_mapped_ipv4_is_ipv4() {
        let l = limits(1, 1, 0, &[]);
        let t0 = Instant::now();
        assert!(l.admit("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(l.admit("2001:db8::2".parse().unwrap(), t0).is_err());
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
        assert!(l.admit("10.1.1.1".parse().unwrap(), t0).is_ok());
        assert!(l.admit("::ffff:10.1.1.1".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn exempt_clients_are_not_limited() {
        let l = limits(1, 1, 1, &["10.9.0.0/16"]);
        let t0 = Instant::now();
        let ip: IpAddr = "10.9.3.4".parse().unwrap();
        for _ in 0..100 {
            assert!(l.admit(ip, t0).is_ok());
        }
        let slots: Vec<_> = (0..10).map(|_| l.start(ip, t0).unwrap()).collect();
        assert!(slots.iter().all(Option::is_none));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn inflight_slots_are_capped_and_given_back() {
        let l = limits(0, 0, 2, &[]);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.start(ip, t0).unwrap();
        let b = l.start(ip, t0).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(l.start(ip, t0).unwrap_err(), Refusal::Inflight);
        assert!(l.start("10.0.0.2".parse().unwrap(), t0).unwrap().is_some());
        drop(a);
        let c = l.start(ip, t0).unwrap();
        assert!(c.is_some());
        // The rate limit is off: admit never refuses.
        assert!((0..1000).all(|_| l.admit(ip, t0).is_ok()));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_sources() {
        let l = limits(5, 5, 4, &[]);
        let t0 = Instant::now();
        // A client with a query in flight keeps its entry through the flood.
        let held: IpAddr = "10.200.0.1".parse().unwrap();
        let _slot = l.start(held, t0).unwrap();
        for i in 0..200_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.admit(ip, t0);
        }
        assert!(l.tracked() <= SHARDS * SHARD_CAPACITY);
        let s = l.start(held, t0).unwrap();
        assert!(s.is_some());
        drop(s);
        // Nothing else was in flight; three more slots fit, the fifth does not.
        let more: Vec<_> = (0..3).map(|_| l.start(held, t0).unwrap()).collect();
        assert_eq!(more.len(), 3);
        assert_eq!(l.start(held, t0).unwrap_err(), Refusal::Inflight);
    }
}
