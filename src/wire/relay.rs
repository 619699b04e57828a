//! An upstream reply relayed: normalized once so any client who asked the same
//! question can be served from it, then rendered per client (ID, question spelling,
//! TTLs, OPT, truncation).

use super::codes::{rcode, EDNS_PAYLOAD, FLAG_CD, FLAG_RA, FLAG_RD, FLAG_TC, FLAG_Z, HEADER_LEN};
use super::fields::{count, flags, push_opt, set_u16};
use super::query::{question, Query};
use super::reply::{walk, Reply};
use super::synth::reply_for;

/// An upstream reply made ready to serve any client who asked the same question: no
/// OPT (it is hop-by-hop and rebuilt per client), RA set, Z clear, nothing after the
/// last record. The cache stores exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub bytes: Vec<u8>,
    /// Full response code, including any extended bits the upstream's OPT carried.
    pub rcode: u16,
    pub truncated: bool,
    pub question_end: usize,
    pub answers: u16,
    pub ttl_offsets: Vec<u16>,
    pub soa: Option<(u32, u32)>,
}

impl Normalized {
    pub fn ttl_at(&self, offset: u16) -> u32 {
        let o = usize::from(offset);
        u32::from_be_bytes([
            self.bytes[o],
            self.bytes[o + 1],
            self.bytes[o + 2],
            self.bytes[o + 3],
        ])
    }

    pub fn set_ttl_at(&mut self, offset: u16, ttl: u32) {
        let o = usize::from(offset);
        self.bytes[o..o + 4].copy_from_slice(&ttl.to_be_bytes());
    }
}

/// Normalizes a reply `parse_reply` accepted; `None` when an OPT in the middle of the
/// additional section could not be re-encoded away.
pub fn normalize(msg: &[u8], r: &Reply) -> Option<Normalized> {
    let (mut bytes, walked) = match &r.opt {
        None => (msg[..r.end].to_vec(), None),
        Some(opt) if r.opt_is_last => {
            let mut b = msg[..opt.start].to_vec();
            let ar = count(&b, 3) - 1;
            set_u16(&mut b, 10, ar);
            (b, None)
        }
        // Removing an OPT from the middle would shift names that later compression
        // pointers refer to; let a full decoder re-encode this rare shape, then walk
        // the result for its own offsets.
        Some(_) => {
            let b = reencode_without_opt(&msg[..r.end])?;
            let w = walk(&b, r.question_end).ok()?;
            (b, Some(w))
        }
    };
    let f = (flags(&bytes) | FLAG_RA) & !FLAG_Z;
    set_u16(&mut bytes, 2, f);
    let w = walked.as_ref().unwrap_or(r);
    Some(Normalized {
        bytes,
        rcode: r.rcode,
        truncated: r.truncated,
        question_end: r.question_end,
        answers: w.answers,
        ttl_offsets: w.ttl_offsets.clone(),
        soa: w.soa,
    })
}

/// A message zonefwd built itself (a spliced CNAME chain) made into a `Normalized`
/// with the full `rcode` given: walked like an upstream's reply, and refused if it
/// carries an OPT (normalized replies never do).
pub fn normalized_from(bytes: Vec<u8>, rcode: u16) -> Option<Normalized> {
    if bytes.len() < HEADER_LEN || count(&bytes, 0) != 1 {
        return None;
    }
    let (_, _, _, question_end) = question(&bytes).ok()?;
    let w = walk(&bytes, question_end).ok()?;
    if w.opt.is_some() || w.end != bytes.len() {
        return None;
    }
    Some(Normalized {
        rcode,
        truncated: w.truncated,
        question_end,
        answers: w.answers,
        ttl_offsets: w.ttl_offsets,
        soa: w.soa,
        bytes,
    })
}

/// How the TTLs of a served reply are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttls {
    /// As stored (a reply straight from upstream).
    AsStored,
    /// Decremented by the entry's age in seconds, never below 0 (a cache hit).
    Aged(u32),
    /// All set to this value (a stale answer, RFC 8767 section 4: 30 seconds).
    Fixed(u32),
}

/// A normalized reply served to one client: its ID and question spelling, TTLs as
/// asked, and an OPT made for this client (none if it sent none). A reply larger than
/// `limit` becomes header + question + OPT with TC=1 (RFC 1035 4.2.1, RFC 6891 7), so
/// the client retries over TCP rather than trusting a partial RRset.
pub fn render(n: &Normalized, q: &Query, limit: usize, ttls: Ttls) -> Vec<u8> {
    let ext_rcode = (n.rcode >> 4) as u8;
    if ext_rcode != 0 && q.edns.is_none() {
        // An extended rcode cannot be said to a client without EDNS.
        return reply_for(q, rcode::SERVFAIL);
    }
    let opt_len = if q.edns.is_some() { 11 } else { 0 };
    if n.bytes.len() + opt_len > limit {
        return truncated(&n.bytes, n.question_end, q, ext_rcode);
    }
    let mut out = Vec::with_capacity(n.bytes.len() + opt_len);
    out.extend_from_slice(&n.bytes);
    set_u16(&mut out, 0, q.id);
    set_u16(&mut out, 2, flags_for(flags(&n.bytes), q));
    // The question is stored uncompressed at offset 12 (read_name refuses pointers
    // into the header) and matched this client's ignoring case, so it has the same
    // length: write the client's spelling back (RFC 1035 7.3, 0x20 randomisation).
    out[HEADER_LEN..HEADER_LEN + q.qname.len()].copy_from_slice(&q.qname);
    match ttls {
        Ttls::AsStored => {}
        Ttls::Aged(age) => {
            for &o in &n.ttl_offsets {
                let ttl = n.ttl_at(o).saturating_sub(age);
                let o = usize::from(o);
                out[o..o + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
        Ttls::Fixed(ttl) => {
            for &o in &n.ttl_offsets {
                let o = usize::from(o);
                out[o..o + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
    }
    if let Some(e) = &q.edns {
        let ar = count(&out, 3) + 1;
        set_u16(&mut out, 10, ar);
        push_opt(&mut out, EDNS_PAYLOAD, ext_rcode, e.dnssec_ok);
    }
    out
}

/// The stored reply's flags with this client's RD and CD: RD is copied from the
/// query (RFC 1035 section 4.1.1) and so is CD (RFC 4035 section 3.2.2). An upstream
/// may clear CD (an authoritative server need not echo it), and a cached reply was
/// asked for by another client with flags of its own.
fn flags_for(stored: u16, q: &Query) -> u16 {
    let copied = FLAG_RD | FLAG_CD;
    (stored & !copied) | (q.flags & copied)
}

pub(super) fn truncated(full: &[u8], question_end: usize, q: &Query, ext_rcode: u8) -> Vec<u8> {
    let mut out = full[..question_end].to_vec();
    set_u16(&mut out, 0, q.id);
    out[HEADER_LEN..HEADER_LEN + q.qname.len()].copy_from_slice(&q.qname);
    set_u16(&mut out, 2, flags_for(flags(full), q) | FLAG_TC);
    set_u16(&mut out, 6, 0);
    set_u16(&mut out, 8, 0);
    set_u16(&mut out, 10, u16::from(q.edns.is_some()));
    if let Some(e) = &q.edns {
        push_opt(&mut out, EDNS_PAYLOAD, ext_rcode, e.dnssec_ok);
    }
    out
}

pub(super) fn reencode_without_opt(msg: &[u8]) -> Option<Vec<u8>> {
    let mut m = hickory_proto::op::Message::from_vec(msg).ok()?;
    m.edns = None;
    m.to_vec().ok()
}
