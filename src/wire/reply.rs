//! An upstream reply: matched against the query sent, and walked once to prove it
//! well formed and to find its rcode, OPT, TTL fields and negative SOA.

use std::ops::Range;

use super::codes::{FLAG_QR, FLAG_TC, HEADER_LEN, OPCODE_MASK, RCODE_MASK, TYPE_OPT, TYPE_SOA};
use super::fields::{count, flags, id, u32_at, WireError};
use super::name::names_equal;
use super::query::{check_options, question, read_record, Query};

/// What a walk of an upstream reply found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Full response code: the header's 4 bits and the OPT's upper 8 (RFC 6891 6.1.3).
    pub rcode: u16,
    pub truncated: bool,
    /// End of the question, where the answer section starts.
    pub question_end: usize,
    /// Where the OPT record is, if the upstream sent one.
    pub opt: Option<Range<usize>>,
    pub opt_is_last: bool,
    /// End of the last record: bytes after it are dropped, never relayed.
    pub end: usize,
    pub answers: u16,
    /// Offsets of every TTL field except the OPT's (whose "TTL" holds flags).
    pub ttl_offsets: Vec<u16>,
    /// The first SOA of the authority section: (TTL, MINIMUM), for negative caching
    /// (RFC 2308 section 5).
    pub soa: Option<(u32, u32)>,
}

/// Why an upstream datagram was not accepted as the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not a reply to what was asked (RFC 5452 section 9.1: ID and question must
    /// match). Ignored; the real reply may still come.
    #[error("not a reply to this query")]
    Mismatch,
    /// Matches the query but cannot be relayed: counts as a failed try.
    #[error("malformed reply: {0}")]
    Malformed(WireError),
}

/// Validates an upstream reply against the query that was sent (`sent_id` and the
/// question) and walks every record so nothing malformed reaches the client.
pub fn parse_reply(msg: &[u8], sent_id: u16, q: &Query) -> Result<Reply, ReplyError> {
    if msg.len() < HEADER_LEN || id(msg) != sent_id {
        return Err(ReplyError::Mismatch);
    }
    let flags = flags(msg);
    if flags & FLAG_QR == 0 || flags & OPCODE_MASK != 0 || count(msg, 0) != 1 {
        return Err(ReplyError::Mismatch);
    }
    let (qname, qtype, qclass, question_end) = question(msg).map_err(ReplyError::Malformed)?;
    if qtype != q.qtype || qclass != q.qclass || !names_equal(qname, &q.qname_lower) {
        return Err(ReplyError::Mismatch);
    }
    walk(msg, question_end).map_err(ReplyError::Malformed)
}

/// How long a shared HTTP cache may keep a reply (RFC 8484 section 5.1): the smallest
/// TTL of its records (the OPT's "TTL" holds flags, and is not one), and for a
/// negative answer no longer than its SOA's MINIMUM (RFC 2308 section 5). `None` for a
/// reply with no record (SERVFAIL, REFUSED), which nothing says may be kept.
pub fn freshness(msg: &[u8]) -> Option<u32> {
    let (_, _, _, question_end) = question(msg).ok()?;
    let r = walk(msg, question_end).ok()?;
    let smallest = r
        .ttl_offsets
        .iter()
        .filter_map(|&o| u32_at(msg, usize::from(o), "ttl").ok())
        .min()?;
    Some(match r.soa {
        Some((_, minimum)) if r.answers == 0 => smallest.min(minimum),
        _ => smallest,
    })
}

/// Walks the records after the question (a message already known to have one).
pub(super) fn walk(msg: &[u8], question_end: usize) -> Result<Reply, WireError> {
    let (an, ns, ar) = (
        usize::from(count(msg, 1)),
        usize::from(count(msg, 2)),
        usize::from(count(msg, 3)),
    );
    let mut pos = question_end;
    let mut opt = None;
    let mut opt_is_last = false;
    let mut ext = 0u8;
    let mut soa = None;
    let mut ttl_offsets = Vec::with_capacity(an + ns + ar);
    for i in 0..an + ns + ar {
        let (rec, root_owner, next) = read_record(msg, pos, &ttl_offsets)?;
        opt_is_last = false;
        if rec.rtype == TYPE_OPT {
            if i < an + ns {
                return Err(WireError::MisplacedOpt);
            }
            if opt.is_some() {
                return Err(WireError::DuplicateOpt);
            }
            if !root_owner {
                return Err(WireError::OptOwner);
            }
            check_options(&msg[rec.rdata.clone()])?;
            ext = (rec.ttl >> 24) as u8;
            opt = Some(pos..next);
            opt_is_last = true;
        } else {
            // The TTL sits 6 octets before the RDATA (TTL, RDLENGTH).
            ttl_offsets.push((rec.rdata.start - 6) as u16);
            if rec.rtype == TYPE_SOA && (an..an + ns).contains(&i) && soa.is_none() {
                // MINIMUM is the last field of the SOA RDATA.
                if rec.rdata.len() >= 22 {
                    soa = Some((rec.ttl, u32_at(msg, rec.rdata.end - 4, "soa")?));
                }
            }
        }
        pos = next;
    }
    Ok(Reply {
        rcode: (u16::from(ext) << 4) | (flags(msg) & RCODE_MASK),
        truncated: flags(msg) & FLAG_TC != 0,
        question_end,
        opt,
        opt_is_last,
        end: pos,
        answers: an as u16,
        ttl_offsets,
        soa,
    })
}
