//! Replies zonefwd makes itself: errors that echo what could be read of the query,
//! and RFC 8482's HINFO answer to ANY.

use super::codes::{
    rcode, CLASS_CH, CLASS_IN, EDNS_PAYLOAD, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC,
    HEADER_LEN, OPCODE_MASK, OPTION_NSID, RCODE_MASK, TYPE_HINFO, TYPE_TXT,
};
use super::fields::{flags, id, push_opt, push_question, set_u16};
use super::query::{Edns, Query, Rejection};

/// A locally made reply (REFUSED, SERVFAIL, FORMERR, NOTIMP, BADVERS): the client's ID,
/// opcode and RD/CD bits, the question when it could be read, and an OPT when the
/// client sent a usable one (always for BADVERS, RFC 6891 6.1.3).
pub fn error_reply(
    id: u16,
    query_flags: u16,
    question: Option<(&[u8], u16, u16)>,
    edns: Option<&Edns>,
    rcode: u16,
) -> Vec<u8> {
    let flags = FLAG_QR
        | FLAG_RA
        | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD))
        | (rcode & RCODE_MASK);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[
        0,
        u8::from(question.is_some()),
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ]);
    if let Some((qname, qtype, qclass)) = question {
        push_question(&mut out, qname, qtype, qclass);
    }
    if let Some(e) = edns {
        push_opt(&mut out, EDNS_PAYLOAD, (rcode >> 4) as u8, e.dnssec_ok);
    }
    out
}

/// RFC 8482 section 4.2: the minimal answer to ANY, one synthesised HINFO record
/// ("RFC8482", "") for the question name, so ANY cannot be used for amplification.
pub fn any_hinfo_reply(q: &Query) -> Vec<u8> {
    // 3789: the TTL RFC 8482 suggests.
    let rdata = [7, b'R', b'F', b'C', b'8', b'4', b'8', b'2', 0];
    one_record_reply(q, TYPE_HINFO, q.qclass, 3789, &rdata)
}

/// A NOERROR reply to `q` holding one record for the question name, and an OPT when
/// the client sent one.
fn one_record_reply(q: &Query, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    records_reply(q, class, &[(rtype, ttl, rdata)])
}

/// A NOERROR reply to `q` holding `records` (type, TTL, RDATA) for the question name,
/// all of `class`, and an OPT when the client sent one.
fn records_reply(q: &Query, class: u16, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
    let mut out = error_reply(
        q.id,
        q.flags,
        Some((&q.qname, q.qtype, q.qclass)),
        None,
        rcode::NOERROR,
    );
    set_u16(&mut out, 6, records.len() as u16);
    for &(rtype, ttl, rdata) in records {
        out.extend_from_slice(&[0xc0, 12]); // owner: the question name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&class.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    if let Some(e) = &q.edns {
        set_u16(&mut out, 10, 1);
        push_opt(&mut out, EDNS_PAYLOAD, 0, e.dnssec_ok);
    }
    out
}

/// The authoritative answer from `[local]` records (none: NODATA).
pub fn local_reply(q: &Query, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
    let mut out = records_reply(q, CLASS_IN, records);
    let with_aa = flags(&out) | FLAG_AA;
    set_u16(&mut out, 2, with_aa);
    out
}

/// An empty NOERROR reply with TC set: the answer did not fit; ask over TCP.
pub fn truncated_reply(q: &Query) -> Vec<u8> {
    let mut out = reply_for(q, rcode::NOERROR);
    let with_tc = flags(&out) | FLAG_TC;
    set_u16(&mut out, 2, with_tc);
    out
}

/// The reply to a query that reached the forwarding stage but got no usable upstream
/// answer.
pub fn reply_for(q: &Query, rcode: u16) -> Vec<u8> {
    error_reply(
        q.id,
        q.flags,
        Some((&q.qname, q.qtype, q.qclass)),
        q.edns.as_ref(),
        rcode,
    )
}

impl Rejection {
    /// The reply to the rejected query `msg`: this rejection's rcode, echoing the
    /// question and EDNS when they could be read.
    pub fn reply(&self, msg: &[u8]) -> Vec<u8> {
        refusal_reply(msg, self.question(), self.edns.as_ref(), self.rcode)
    }

    /// The question as it could be read, borrowed.
    pub fn question(&self) -> Option<(&[u8], u16, u16)> {
        self.question
            .as_ref()
            .map(|(n, t, c)| (n.as_slice(), *t, *c))
    }
}

/// A locally made reply to the raw message `msg` (its ID and flags), for a query that
/// did not parse or is refused before it did.
pub fn refusal_reply(
    msg: &[u8],
    question: Option<(&[u8], u16, u16)>,
    edns: Option<&Edns>,
    rcode: u16,
) -> Vec<u8> {
    error_reply(id(msg), flags(msg), question, edns, rcode)
}

/// `id.server.` and `hostname.bind.`: CHAOS TXT names that ask which server answered
/// (RFC 4892 section 2). Lowercased wire form, as `Query::qname_lower` holds them.
const IDENTITY_NAMES: [&[u8]; 2] = [b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"];

/// The answer to a CHAOS-class query, which zonefwd never forwards: its `identity` as
/// one TXT string for `id.server.` and `hostname.bind.` (RFC 4892), when one is set;
/// REFUSED for everything else, `version.bind.` and `version.server.` included.
pub fn chaos_reply(q: &Query, identity: Option<&[u8]>) -> Vec<u8> {
    let asks_identity = q.qtype == TYPE_TXT && IDENTITY_NAMES.contains(&q.qname_lower.as_slice());
    let Some(id) = identity.filter(|id| asks_identity && id.len() <= 255) else {
        return reply_for(q, rcode::REFUSED);
    };
    let rdata = [&[id.len() as u8][..], id].concat();
    let mut out = one_record_reply(q, TYPE_TXT, CLASS_CH, 0, &rdata);
    // Authoritative: zonefwd speaks for itself here.
    let with_aa = flags(&out) | FLAG_AA;
    set_u16(&mut out, 2, with_aa);
    out
}

/// Adds the server's `identity` (`[server] identity`) to `reply` as an NSID option
/// when the query `q` asked for one (RFC 5001 section 2.2).
pub fn add_identity(reply: &mut Vec<u8>, q: &Query, identity: &[u8], limit: usize) {
    if q.edns.is_some_and(|e| e.nsid) {
        add_nsid(reply, identity, limit);
    }
}

/// Adds `identity` as an NSID option to `reply`, whose last record is the option-less
/// OPT zonefwd writes, when the reply stays within `limit`. NSID is best effort: a
/// reply it would not fit goes without it.
fn add_nsid(reply: &mut Vec<u8>, identity: &[u8], limit: usize) {
    let n = reply.len();
    let ours =
        n >= HEADER_LEN + 11 && reply[n - 11..n - 8] == [0, 0, 41] && reply[n - 2..] == [0, 0];
    if !ours || n + 4 + identity.len() > limit || identity.len() > usize::from(u16::MAX) - 4 {
        return;
    }
    set_u16(reply, n - 2, identity.len() as u16 + 4);
    reply.extend_from_slice(&OPTION_NSID.to_be_bytes());
    reply.extend_from_slice(&(identity.len() as u16).to_be_bytes());
    reply.extend_from_slice(identity);
}
