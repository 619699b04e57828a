//! The response cache: normalized upstream replies keyed by question.
//!
//! An entry is the upstream's reply as bytes (see `wire::Normalized`) with the offset of
//! every TTL, so a hit is a copy plus a patch of the ID, the question's spelling and
//! the TTLs: no re-resolution, no re-ordering of records. The key is the whole
//! question as sent upstream (lowercased name, type, class, and the DO/CD/RD/AD bits),
//! never a single record, so one answer cannot poison another question
//! (RUSTSEC-2026-0106 was a per-record cache).
//!
//! Eviction is quick_cache's, a CLOCK-Pro/S3-FIFO policy: scan resistant, so a flood of
//! random names (a "water torture" attack) passes through the small probation queue
//! without flushing the popular entries an LRU would lose.
//!
//! Time comes from a `Clock` (`life`) so tests drive TTLs without sleeping.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::{
    sync::Cache as QuickCache, DefaultHashBuilder, Equivalent, Lifecycle, UnitWeighter,
};

use crate::config::CachePolicy;
use crate::wire::{self, rcode, Normalized, Query};

/// TTL of an answer served stale (RFC 8767 section 4).
pub const STALE_TTL: u32 = 30;

const KEY_DO: u8 = 1;
const KEY_CD: u8 = 2;
const KEY_RD: u8 = 4;
const KEY_AD: u8 = 8;

/// Every bit of the query that reaches the upstream and can change its answer.
fn key_bits(q: &Query) -> u8 {
    let mut b = 0;
    if q.edns.is_some_and(|e| e.dnssec_ok) {
        b |= KEY_DO;
    }
    if q.flags & wire::FLAG_CD != 0 {
        b |= KEY_CD;
    }
    if q.flags & wire::FLAG_RD != 0 {
        b |= KEY_RD;
    }
    if q.flags & wire::FLAG_AD != 0 {
        b |= KEY_AD;
    }
    b
}

#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    bits: u8,
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} type {} class {} bits {:#x}",
            wire::name_to_string(&self.name),
            self.qtype,
            self.qclass,
            self.bits
        )
    }
}

impl CacheKey {
    pub fn of(q: &Query) -> Self {
        CacheKey {
            name: q.qname_lower.clone().into_boxed_slice(),
            qtype: q.qtype,
            qclass: q.qclass,
            bits: key_bits(q),
        }
    }
}

/// A key borrowed from a query, so a lookup allocates nothing. It hashes as the
/// `CacheKey` it matches does.
pub struct KeyRef<'a> {
    name: &'a [u8],
    qtype: u16,
    qclass: u16,
    bits: u8,
}

impl<'a> KeyRef<'a> {
    pub fn of(q: &'a Query) -> Self {
        KeyRef {
            name: &q.qname_lower,
            qtype: q.qtype,
            qclass: q.qclass,
            bits: key_bits(q),
        }
    }
}

fn hash_parts<H: Hasher>(state: &mut H, name: &[u8], qtype: u16, qclass: u16, bits: u8) {
    state.write(name);
    // One integer for the rest: each write is a mixing round, and a forwarded query
    // hashes its key five times (cache, in-flight map, eviction).
    state.write_u64(u64::from(qtype) << 24 | u64::from(qclass) << 8 | u64::from(bits));
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, &self.name, self.qtype, self.qclass, self.bits)
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.name, self.qtype, self.qclass, self.bits)
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, k: &CacheKey) -> bool {
        self.qtype == k.qtype
            && self.qclass == k.qclass
            && self.bits == k.bits
            && *self.name == *k.name
    }
}

/// A cached answer. The reply is held inline, not behind an `Arc` of its own: one
/// allocation less per entry (about 30 MiB at a million entries).
#[derive(Debug)]
pub struct Stored {
    /// TTLs already clamped (positive) or capped at the negative TTL (negative).
    pub reply: Normalized,
    pub at: Instant,
    /// Seconds the entry is fresh: the smallest TTL it holds.
    pub lifetime: u32,
    hits: AtomicU32,
    prefetching: AtomicBool,
}

impl Stored {
    pub fn expires(&self) -> Instant {
        self.at + Duration::from_secs(u64::from(self.lifetime))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The last good answer, possibly expired (kept for serve-stale).
    data: Option<Arc<Stored>>,
    /// A failure is remembered until then (RFC 9520).
    failed_until: Option<Instant>,
}

/// What the cache knows about a question.
#[derive(Debug)]
pub enum Lookup {
    /// Serve it, aged by `age` seconds; `prefetch`: also refresh it now.
    Fresh {
        stored: Arc<Stored>,
        age: u32,
        prefetch: bool,
    },
    /// A recent failure is remembered: do not ask upstream; serve `stale` if any,
    /// else SERVFAIL.
    Failing {
        stale: Option<Arc<Stored>>,
    },
    /// Expired, but within `serve_stale`: ask upstream, and serve this if that fails.
    Stale(Arc<Stored>),
    Miss,
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub inserts: AtomicU64,
    pub failures: AtomicU64,
    pub stale_served: AtomicU64,
    pub prefetches: AtomicU64,
    pub evictions: Arc<AtomicU64>,
}

/// Counts evictions for the stats.
#[derive(Clone, Debug)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Entry> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: CacheKey, _: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Cache {
    inner: QuickCache<CacheKey, Entry, UnitWeighter, DefaultHashBuilder, Evictions>,
    pub stats: CacheStats,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.inner.len())
            .finish()
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl Cache {
    pub fn new(max_entries: usize) -> Self {
        let stats = CacheStats::default();
        let inner = QuickCache::with(
            max_entries,
            max_entries as u64,
            UnitWeighter,
            DefaultHashBuilder::default(),
            Evictions(Arc::clone(&stats.evictions)),
        );
        Cache { inner, stats }
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn lookup(&self, q: &Query, policy: &CachePolicy, now: Instant) -> Lookup {
        let Some(e) = self.inner.get(&KeyRef::of(q)) else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        let stale_ok = |d: &Arc<Stored>| {
            !policy.serve_stale.is_zero() && now < d.expires() + policy.serve_stale
        };
        if e.failed_until.is_some_and(|until| now < until) {
            return Lookup::Failing {
                stale: e.data.filter(stale_ok),
            };
        }
        match e.data {
            Some(d) if now < d.expires() => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let age = secs(now.saturating_duration_since(d.at));
                let remaining = d.lifetime.saturating_sub(age);
                let popular = d.hits.fetch_add(1, Ordering::Relaxed) + 1 >= 2;
                // Unbound's rule: refresh in the last tenth of the TTL, once.
                let prefetch = policy.prefetch
                    && popular
                    && u64::from(remaining) * 10 <= u64::from(d.lifetime)
                    && !d.prefetching.swap(true, Ordering::Relaxed);
                if prefetch {
                    self.stats.prefetches.fetch_add(1, Ordering::Relaxed);
                }
                Lookup::Fresh {
                    stored: d,
                    age,
                    prefetch,
                }
            }
            Some(d) if stale_ok(&d) => Lookup::Stale(d),
            _ => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss
            }
        }
    }

    /// Caches an upstream answer if it may be cached, and returns the entry (TTLs as the
    /// cache will serve them, so the client of a miss sees what later hits see), or
    /// gives the answer back untouched. It takes the answer by value: the entry is the
    /// answer itself, its TTLs rewritten in place, not a copy.
    /// Positive answers: every TTL clamped to [min_ttl, max_ttl], fresh for the
    /// smallest. Negative answers (NXDOMAIN, or NOERROR without answers) need an SOA in
    /// the authority section: fresh for min(SOA TTL, SOA MINIMUM) capped by
    /// negative_max_ttl (RFC 2308 section 5), and no TTL inside exceeds that.
    /// Truncated replies, other rcodes, and extended rcodes are not cached.
    pub fn store_answer(
        &self,
        q: &Query,
        mut reply: Normalized,
        policy: &CachePolicy,
        now: Instant,
    ) -> Result<Arc<Stored>, Normalized> {
        if reply.truncated || reply.ttl_offsets.is_empty() {
            return Err(reply);
        }
        let (min, max) = (secs(policy.min_ttl), secs(policy.max_ttl));
        // (floor, cap) for every TTL in the answer, and how long it stays fresh.
        let (floor, cap, lifetime) = match reply.rcode {
            rcode::NOERROR if reply.answers > 0 => {
                let lifetime = reply
                    .ttl_offsets
                    .iter()
                    .map(|&o| reply.ttl_at(o).clamp(min, max))
                    .min()
                    .unwrap_or(0);
                (min, max, lifetime)
            }
            rcode::NOERROR | rcode::NXDOMAIN => {
                let Some((soa_ttl, minimum)) = reply.soa else {
                    // No SOA: nothing says how long the name is absent (RFC 2308 5).
                    return Err(reply);
                };
                let negative = soa_ttl
                    .min(minimum)
                    .clamp(min, secs(policy.negative_max_ttl).max(min));
                (0, negative, negative)
            }
            _ => return Err(reply),
        };
        if lifetime == 0 {
            return Err(reply);
        }
        for i in 0..reply.ttl_offsets.len() {
            let o = reply.ttl_offsets[i];
            let ttl = reply.ttl_at(o).clamp(floor, cap);
            reply.set_ttl_at(o, ttl);
        }
        let stored = Arc::new(Stored {
            reply,
            at: now,
            lifetime,
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
        });
        self.inner.insert(
            CacheKey::of(q),
            Entry {
                data: Some(Arc::clone(&stored)),
                failed_until: None,
            },
        );
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(stored)
    }

    /// Remembers that the question could not be answered (SERVFAIL, or nothing in
    /// time) for `servfail_ttl`, keeping any older answer for serve-stale.
    pub fn store_failure(&self, q: &Query, policy: &CachePolicy, now: Instant) {
        if policy.servfail_ttl.is_zero() {
            return;
        }
        let data = self.inner.peek(&KeyRef::of(q)).and_then(|e| e.data);
        self.inner.insert(
            CacheKey::of(q),
            Entry {
                data,
                failed_until: Some(now + policy.servfail_ttl),
            },
        );
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn note_stale_served(&self) {
        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which entries `Cache::flush` removes (`zonefwd ctl flush`).
#[derive(Debug, Clone, Copy)]
pub enum Flush<'a> {
    /// One name (lowercase wire form), every type or one.
    Name {
        name: &'a [u8],
        qtype: Option<u16>,
    },
    /// Every entry at or below a zone.
    Zone(&'a [u8]),
    /// NXDOMAIN, NODATA and remembered failures, everywhere or at or below a zone.
    Negative {
        zone: Option<&'a [u8]>,
    },
    All,
}

/// What the cache holds for one question, for `zonefwd ctl cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedView {
    pub qtype: u16,
    /// `None`: only a remembered failure.
    pub rcode: Option<u16>,
    pub answers: u16,
    /// Seconds of freshness left; 0 once stale.
    pub ttl_left: u64,
    pub stale: bool,
    /// A failure is being remembered (answered SERVFAIL or stale until it passes).
    pub failing: bool,
}

/// `name` is `zone` or below it, on label boundaries (both lowercase wire form).
fn at_or_below(name: &[u8], zone: &[u8]) -> bool {
    zone == [0] || name == zone || wire::label_offsets(name).any(|o| &name[o..] == zone)
}

impl Entry {
    /// NXDOMAIN, NODATA (NOERROR without answers), or a remembered failure.
    fn is_negative(&self) -> bool {
        self.failed_until.is_some()
            || self.data.as_ref().is_some_and(|d| {
                d.reply.rcode == rcode::NXDOMAIN
                    || (d.reply.rcode == rcode::NOERROR && d.reply.answers == 0)
            })
    }
}

impl Flush<'_> {
    fn matches(&self, key: &CacheKey, entry: &Entry) -> bool {
        match *self {
            Flush::Name { name, qtype } => {
                &*key.name == name && qtype.is_none_or(|t| t == key.qtype)
            }
            Flush::Zone(zone) => at_or_below(&key.name, zone),
            Flush::Negative { zone } => {
                entry.is_negative() && zone.is_none_or(|z| at_or_below(&key.name, z))
            }
            Flush::All => true,
        }
    }
}

impl Cache {
    /// Removes the entries `which` names and says how many. Resolutions in flight
    /// are not disturbed: they store their answer when it comes, and the next query
    /// for a flushed name goes upstream.
    pub fn flush(&self, which: Flush<'_>) -> usize {
        let removed = AtomicUsize::new(0);
        self.inner.retain(|key, entry| {
            let hit = which.matches(key, entry);
            if hit {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            !hit
        });
        removed.into_inner()
    }

    /// What is cached for `name` (lowercase wire form), of one type or every type.
    pub fn inspect(&self, name: &[u8], qtype: Option<u16>, now: Instant) -> Vec<CachedView> {
        let mut out: Vec<CachedView> = self
            .inner
            .iter()
            .filter(|(k, _)| &*k.name == name && qtype.is_none_or(|t| t == k.qtype))
            .map(|(k, e)| {
                let fresh_until = e.data.as_ref().map(|d| d.expires());
                CachedView {
                    qtype: k.qtype,
                    rcode: e.data.as_ref().map(|d| d.reply.rcode),
                    answers: e.data.as_ref().map_or(0, |d| d.reply.answers),
                    ttl_left: fresh_until.map_or(0, |t| t.saturating_duration_since(now).as_secs()),
                    stale: fresh_until.is_some_and(|t| now >= t),
                    failing: e.failed_until.is_some_and(|t| now < t),
                }
            })
            .collect();
        out.sort_by_key(|v| v.qtype);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{build_upstream_query, parse_query, parse_reply, FLAG_QR, FLAG_RD};

    fn q(name: &str, qtype: u16) -> Query {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&wire::name_from_str(name).unwrap());
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        parse_query(&m).unwrap()
    }

    /// An upstream reply to `q`: rcode, A records with these TTLs, an optional SOA
    /// (TTL, MINIMUM) in authority.
    fn reply(q: &Query, rc: u16, ttls: &[u32], soa: Option<(u32, u32)>) -> Normalized {
        let mut r = build_upstream_query(q, 77, false);
        r[2..4].copy_from_slice(&(FLAG_QR | FLAG_RD | rc).to_be_bytes());
        r[6..8].copy_from_slice(&(ttls.len() as u16).to_be_bytes());
        r[8..10].copy_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        for t in ttls {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
        }
        if let Some((ttl, min)) = soa {
            r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&22u16.to_be_bytes());
            r.extend_from_slice(&[0, 0]);
            for v in [1u32, 2, 3, 4, min] {
                r.extend_from_slice(&v.to_be_bytes());
            }
        }
        let p = parse_reply(&r, 77, q).unwrap();
        wire::normalize(&r, &p).unwrap()
    }

    fn policy() -> CachePolicy {
        CachePolicy::default()
    }

    fn fresh(l: Lookup) -> (u32, Arc<Stored>, bool) {
        match l {
            Lookup::Fresh {
                stored,
                age,
                prefetch,
            } => (age, stored, prefetch),
            other => panic!("expected a fresh hit, got {other:?}"),
        }
    }

    #[test]
    fn ttl_counts_down_and_expires() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let a = q("www.example", 1);
        assert!(c
            .store_answer(&a, reply(&a, 0, &[300, 120], None), &policy(), t0)
            .is_ok());
        let (age, s, _) = fresh(c.lookup(&a, &policy(), t0 + Duration::from_secs(100)));
        assert_eq!((age, s.lifetime), (100, 120));
        let served = wire::render(&s.reply, &a, 512, wire::Ttls::Aged(age));
        let p = parse_reply(&served, a.id, &a).unwrap();
        let ttl =
            |o: u16| u32::from_be_bytes(served[o as usize..o as usize + 4].try_into().unwrap());
        assert_eq!((ttl(p.ttl_offsets[0]), ttl(p.ttl_offsets[1])), (200, 20));
        // At 120 s it has expired; serve_stale keeps it for stale use only.
        assert!(matches!(
            c.lookup(&a, &policy(), t0 + Duration::from_secs(120)),
            Lookup::Stale(_)
        ));
        let no_stale = CachePolicy {
            serve_stale: Duration::ZERO,
            ..policy()
        };
        assert!(matches!(
            c.lookup(&a, &no_stale, t0 + Duration::from_secs(120)),
            Lookup::Miss
        ));
        // Beyond the stale window it is gone.
        let day = Duration::from_secs(86400);
        assert!(matches!(
            c.lookup(&a, &policy(), t0 + day + Duration::from_secs(121)),
            Lookup::Miss
        ));
    }

    #[test]
    fn min_and_max_ttl_clamp() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let p = CachePolicy {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(600),
            ..policy()
        };
        let a = q("clamp.example", 1);
        c.store_answer(&a, reply(&a, 0, &[5, 86400], None), &p, t0)
            .unwrap();
        let (_, s, _) = fresh(c.lookup(&a, &p, t0));
        assert_eq!(s.lifetime, 60);
        assert_eq!(s.reply.ttl_at(s.reply.ttl_offsets[0]), 60);
        assert_eq!(s.reply.ttl_at(s.reply.ttl_offsets[1]), 600);
        // TTL 0 without a floor: not cached at all.
        let z = q("zero.example", 1);
        assert!(c
            .store_answer(&z, reply(&z, 0, &[0], None), &policy(), t0)
            .is_err());
    }

    #[test]
    fn negative_ttl_comes_from_the_soa() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let nx = q("nx.example", 1);
        // min(SOA TTL 900, MINIMUM 300) = 300.
        let nx_reply = reply(&nx, rcode::NXDOMAIN, &[], Some((900, 300)));
        assert!(c.store_answer(&nx, nx_reply, &policy(), t0).is_ok());
        let (_, s, _) = fresh(c.lookup(&nx, &policy(), t0));
        assert_eq!(s.lifetime, 300);
        assert_eq!(
            s.reply.ttl_at(s.reply.ttl_offsets[0]),
            300,
            "the SOA's TTL says how long"
        );
        // Capped by negative_max_ttl.
        let p = CachePolicy {
            negative_max_ttl: Duration::from_secs(10),
            ..policy()
        };
        let nodata = q("nodata.example", 28);
        let nodata_reply = reply(&nodata, 0, &[], Some((900, 300)));
        assert!(c.store_answer(&nodata, nodata_reply, &p, t0).is_ok());
        assert_eq!(fresh(c.lookup(&nodata, &p, t0)).1.lifetime, 10);
        // No SOA: not cached.
        let bare = q("bare.example", 1);
        let no_soa = reply(&bare, rcode::NXDOMAIN, &[], None);
        assert!(c.store_answer(&bare, no_soa, &policy(), t0).is_err());
        // REFUSED and SERVFAIL are never cached as answers.
        for rc in [rcode::REFUSED, rcode::SERVFAIL] {
            let r = reply(&bare, rc, &[60], None);
            assert!(c.store_answer(&bare, r, &policy(), t0).is_err());
        }
    }

    #[test]
    fn failures_are_remembered_briefly_and_keep_stale_data() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let a = q("flaky.example", 1);
        c.store_answer(&a, reply(&a, 0, &[10], None), &policy(), t0)
            .unwrap();
        let t1 = t0 + Duration::from_secs(20);
        c.store_failure(&a, &policy(), t1);
        match c.lookup(&a, &policy(), t1 + Duration::from_secs(4)) {
            Lookup::Failing { stale: Some(s) } => assert_eq!(s.lifetime, 10),
            other => panic!("{other:?}"),
        }
        // servfail_ttl (5 s) later, the upstream may be asked again; stale still there.
        assert!(matches!(
            c.lookup(&a, &policy(), t1 + Duration::from_secs(5)),
            Lookup::Stale(_)
        ));
        // A failure without earlier data.
        let b = q("never.example", 1);
        c.store_failure(&b, &policy(), t0);
        assert!(matches!(
            c.lookup(&b, &policy(), t0),
            Lookup::Failing { stale: None }
        ));
        assert!(matches!(
            c.lookup(&b, &policy(), t0 + Duration::from_secs(6)),
            Lookup::Miss
        ));
    }

    #[test]
    fn prefetch_is_offered_once_in_the_last_tenth_for_popular_entries() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let a = q("hot.example", 1);
        c.store_answer(&a, reply(&a, 0, &[100], None), &policy(), t0)
            .unwrap();
        assert!(!fresh(c.lookup(&a, &policy(), t0 + Duration::from_secs(50))).2);
        // Second hit, but 50 s remain: not yet.
        assert!(!fresh(c.lookup(&a, &policy(), t0 + Duration::from_secs(50))).2);
        assert!(fresh(c.lookup(&a, &policy(), t0 + Duration::from_secs(91))).2);
        assert!(
            !fresh(c.lookup(&a, &policy(), t0 + Duration::from_secs(92))).2,
            "only once"
        );
        let off = CachePolicy {
            prefetch: false,
            ..policy()
        };
        let b = q("cold.example", 1);
        c.store_answer(&b, reply(&b, 0, &[100], None), &off, t0)
            .unwrap();
        c.lookup(&b, &off, t0);
        assert!(!fresh(c.lookup(&b, &off, t0 + Duration::from_secs(95))).2);
    }

    #[test]
    fn keys_separate_case_insensitively_by_type_class_and_bits() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        let base = q("Key.Example", 1);
        c.store_answer(&base, reply(&base, 0, &[60], None), &policy(), t0)
            .unwrap();
        assert!(
            matches!(
                c.lookup(&q("kEY.eXAMPLE", 1), &policy(), t0),
                Lookup::Fresh { .. }
            ),
            "case folds"
        );
        assert!(
            matches!(c.lookup(&q("key.example", 28), &policy(), t0), Lookup::Miss),
            "qtype"
        );
        let mut ch = q("key.example", 1);
        ch.qclass = 3;
        assert!(
            matches!(c.lookup(&ch, &policy(), t0), Lookup::Miss),
            "qclass"
        );
        let mut cd = q("key.example", 1);
        cd.flags |= wire::FLAG_CD;
        assert!(matches!(c.lookup(&cd, &policy(), t0), Lookup::Miss), "CD");
        let mut dnssec = q("key.example", 1);
        dnssec.edns = Some(wire::Edns {
            payload: 1232,
            version: 0,
            dnssec_ok: true,
            nsid: false,
        });
        assert!(
            matches!(c.lookup(&dnssec, &policy(), t0), Lookup::Miss),
            "DO"
        );
        let mut plain_edns = q("key.example", 1);
        plain_edns.edns = Some(wire::Edns {
            payload: 4096,
            version: 0,
            dnssec_ok: false,
            nsid: false,
        });
        assert!(
            matches!(c.lookup(&plain_edns, &policy(), t0), Lookup::Fresh { .. }),
            "EDNS without DO is the same question"
        );
        let mut no_rd = q("key.example", 1);
        no_rd.flags &= !wire::FLAG_RD;
        assert!(
            matches!(c.lookup(&no_rd, &policy(), t0), Lookup::Miss),
            "RD"
        );
    }

    #[test]
    fn the_bound_holds_under_ten_times_more_names() {
        let c = Cache::new(1000);
        let t0 = Instant::now();
        for i in 0..10_000 {
            let a = q(&format!("n{i}.example"), 1);
            c.store_answer(&a, reply(&a, 0, &[300], None), &policy(), t0)
                .unwrap();
            assert!(c.len() <= 1000, "{} entries after {i} inserts", c.len());
        }
        assert!(c.stats.evictions.load(Ordering::Relaxed) >= 9000);
        assert!(
            c.len() >= 900,
            "the cache still holds most of its capacity: {}",
            c.len()
        );
    }

    #[test]
    fn popular_entries_survive_a_scan_of_new_names() {
        let c = Cache::new(1000);
        let t0 = Instant::now();
        let hot: Vec<Query> = (0..100).map(|i| q(&format!("hot{i}.example"), 1)).collect();
        for h in &hot {
            c.store_answer(h, reply(h, 0, &[3600], None), &policy(), t0)
                .unwrap();
            c.lookup(h, &policy(), t0);
            c.lookup(h, &policy(), t0);
        }
        for i in 0..20_000 {
            let a = q(&format!("{i}.random.example"), 1);
            c.store_answer(&a, reply(&a, 0, &[3600], None), &policy(), t0)
                .unwrap();
        }
        let kept = hot
            .iter()
            .filter(|h| matches!(c.lookup(h, &policy(), t0), Lookup::Fresh { .. }))
            .count();
        assert!(
            kept >= 90,
            "only {kept} of 100 hot entries survived 20000 one-off names"
        );
    }
}
