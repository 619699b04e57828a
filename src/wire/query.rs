//! A client query: the checks it must pass before anything of it goes upstream
//! (`parse_query`, a `Rejection` for each refusal), and the query zonefwd sends.

use std::ops::Range;

use super::codes::{
    rcode, CLASS_IN, EDNS_DO, EDNS_PAYLOAD, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RD, HEADER_LEN,
    MIN_UDP_PAYLOAD, OPCODE_MASK, OPTION_NSID, TYPE_OPT,
};
use super::fields::{count, flags, id, push_opt, push_question, u16_at, u32_at, WireError};
use super::name::{lowercase, read_name, read_name_avoiding};

/// EDNS as the client sent it (RFC 6891 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// The client asked for the server's identity: an NSID option with no data (RFC
    /// 5001 section 2.1).
    pub nsid: bool,
}

impl Edns {
    /// What the client can take over UDP: below 512 counts as 512 (RFC 6891 6.2.5),
    /// and zonefwd sends no more than 1232 to avoid fragmentation.
    pub fn udp_limit(edns: Option<&Edns>) -> usize {
        match edns {
            None => usize::from(MIN_UDP_PAYLOAD),
            Some(e) => usize::from(e.payload.clamp(MIN_UDP_PAYLOAD, EDNS_PAYLOAD)),
        }
    }
}

/// A client query that passed every check and may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// The question name as the client spelled it, uncompressed wire form.
    pub qname: Vec<u8>,
    /// The same, lowercased: for routing, matching and (later) cache keys.
    pub qname_lower: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query {
    /// A query of zonefwd's own (health and loop probes, `query`, `doctor`): `qname`
    /// in wire form, class IN, RD set, no EDNS.
    pub fn own(qname: Vec<u8>, qtype: u16) -> Query {
        let mut qname_lower = qname.clone();
        lowercase(&mut qname_lower);
        Query {
            id: 0,
            flags: FLAG_RD,
            qname,
            qname_lower,
            qtype,
            qclass: CLASS_IN,
            edns: None,
        }
    }
}

/// Why a query is answered without forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub rcode: u16,
    pub reason: &'static str,
    /// Echoed in the reply when it could be read.
    pub question: Option<(Vec<u8>, u16, u16)>,
    pub edns: Option<Edns>,
}

/// First look at a datagram or TCP frame from a client. `None` means drop without a
/// word: too short for a header, or a response (QR=1). Answering responses is how
/// packet loops and reflection start (RUSTSEC-2023-0041).
pub fn is_answerable_query(msg: &[u8]) -> bool {
    msg.len() >= HEADER_LEN && flags(msg) & FLAG_QR == 0
}

pub(super) fn read_question(msg: &[u8]) -> Result<(Vec<u8>, u16, u16, usize), WireError> {
    let (qname, qtype, qclass, end) = question(msg)?;
    Ok((qname.to_vec(), qtype, qclass, end))
}

/// The question's name (wire form, as spelled), type, class and end, borrowed from
/// `msg`. The name is the octets from offset 12 to its root label: a compression
/// pointer there could only point into the header, which `read_name` refuses.
pub(super) fn question(msg: &[u8]) -> Result<(&[u8], u16, u16, usize), WireError> {
    let pos = read_name(msg, HEADER_LEN, None)?;
    let qtype = u16_at(msg, pos, "question")?;
    let qclass = u16_at(msg, pos + 2, "question")?;
    Ok((&msg[HEADER_LEN..pos], qtype, qclass, pos + 4))
}

/// Fixed part of a resource record after its owner name.
pub(super) struct RecordHead {
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl: u32,
    pub(super) rdata: Range<usize>,
}

pub(super) fn read_record(
    msg: &[u8],
    pos: usize,
    ttls: &[u16],
) -> Result<(RecordHead, bool, usize), WireError> {
    let name_end = read_name_avoiding(msg, pos, None, ttls)?;
    let root_owner = name_end == pos + 1 && msg[pos] == 0;
    let rtype = u16_at(msg, name_end, "record")?;
    let class = u16_at(msg, name_end + 2, "record")?;
    let ttl = u32_at(msg, name_end + 4, "record")?;
    let rdlen = usize::from(u16_at(msg, name_end + 8, "record")?);
    let start = name_end + 10;
    if start + rdlen > msg.len() {
        return Err(WireError::Truncated("record data"));
    }
    Ok((
        RecordHead {
            rtype,
            class,
            ttl,
            rdata: start..start + rdlen,
        },
        root_owner,
        start + rdlen,
    ))
}

/// Walks a query's EDNS options: every length within the record; whether one of them
/// is an empty NSID option (RFC 5001 2.1). The others are hop-by-hop and ignored (RFC
/// 6891 6.1.2).
pub(super) fn check_options(rdata: &[u8]) -> Result<bool, WireError> {
    let mut i = 0;
    let mut nsid = false;
    while i < rdata.len() {
        let code = u16_at(rdata, i, "option").map_err(|_| WireError::BadOption)?;
        let len = usize::from(u16_at(rdata, i + 2, "option").map_err(|_| WireError::BadOption)?);
        nsid |= code == OPTION_NSID && len == 0;
        i += 4 + len;
        if i > rdata.len() {
            return Err(WireError::BadOption);
        }
    }
    Ok(nsid)
}

/// Parses a client query that `is_answerable_query` let through (RFC 1035 4.1,
/// RFC 6891 6.1, RFC 8906 section 3). Anything odd is rejected here, so nothing the
/// client sent reaches an upstream except the question and the RD/AD/CD/DO bits.
pub fn parse_query(msg: &[u8]) -> Result<Query, Rejection> {
    let (qname, qtype, qclass, end) = header_and_question(msg)?;
    let refused = |(rcode, reason, edns): Refusal| Rejection {
        rcode,
        reason,
        question: Some((qname.clone(), qtype, qclass)),
        edns,
    };
    let edns = additional_records(msg, end).map_err(refused)?;
    question_and_version(qtype, edns).map_err(refused)?;
    // Copied and folded in one pass (see `lowercase`).
    let qname_lower = qname.to_ascii_lowercase();
    Ok(Query {
        id: id(msg),
        flags: flags(msg),
        qname,
        qname_lower,
        qtype,
        qclass,
        edns,
    })
}

/// Why a readable question is refused: rcode, reason, and the EDNS read so far (echoed
/// in the reply).
type Refusal = (u16, &'static str, Option<Edns>);

/// The opcode, the section counts and the one question: (name, type, class, where
/// the additional records start).
fn header_and_question(msg: &[u8]) -> Result<(Vec<u8>, u16, u16, usize), Rejection> {
    let reject = |rcode, reason, question| Rejection {
        rcode,
        reason,
        question,
        edns: None,
    };
    let question = if count(msg, 0) == 1 {
        read_question(msg).ok()
    } else {
        None
    };
    if flags(msg) & OPCODE_MASK != 0 {
        let q = question.map(|(n, t, c, _)| (n, t, c));
        return Err(reject(rcode::NOTIMP, "opcode other than QUERY", q));
    }
    let (qname, qtype, qclass, pos) = match (count(msg, 0), question) {
        (1, Some(q)) => q,
        (1, None) => return Err(reject(rcode::FORMERR, "unreadable question", None)),
        _ => return Err(reject(rcode::FORMERR, "question count is not 1", None)),
    };
    if count(msg, 1) != 0 || count(msg, 2) != 0 {
        let q = Some((qname, qtype, qclass));
        return Err(reject(
            rcode::FORMERR,
            "query with answer or authority records",
            q,
        ));
    }
    Ok((qname, qtype, qclass, pos))
}

/// The additional section from `pos` to the end: at most one OPT, owned by the root,
/// with well-formed options; nothing after the last record. Other additional records
/// (TSIG, SIG(0)) are hop-by-hop and are not forwarded.
fn additional_records(msg: &[u8], mut pos: usize) -> Result<Option<Edns>, Refusal> {
    let mut edns = None;
    for _ in 0..count(msg, 3) {
        let Ok((rec, root_owner, next)) = read_record(msg, pos, &[]) else {
            return Err((rcode::FORMERR, "unreadable additional record", None));
        };
        if rec.rtype == TYPE_OPT {
            edns = Some(opt_record(msg, &rec, root_owner, edns.is_some())?);
        }
        pos = next;
    }
    if pos != msg.len() {
        return Err((rcode::FORMERR, "trailing bytes after the records", edns));
    }
    Ok(edns)
}

/// One OPT record of a query (RFC 6891 6.1.1 and 6.1.2).
fn opt_record(
    msg: &[u8],
    rec: &RecordHead,
    root_owner: bool,
    seen_one: bool,
) -> Result<Edns, Refusal> {
    if seen_one {
        return Err((rcode::FORMERR, "more than one opt record", None));
    }
    if !root_owner {
        return Err((rcode::FORMERR, "opt owner is not the root", None));
    }
    let Ok(nsid) = check_options(&msg[rec.rdata.clone()]) else {
        return Err((rcode::FORMERR, "malformed edns options", None));
    };
    Ok(Edns {
        payload: rec.class,
        version: (rec.ttl >> 16) as u8,
        dnssec_ok: rec.ttl & EDNS_DO != 0,
        nsid,
    })
}

/// OPT is no question type; an EDNS version above 0 gets BADVERS with the highest
/// version zonefwd supports, 0 (RFC 6891 6.1.3).
fn question_and_version(qtype: u16, edns: Option<Edns>) -> Result<(), Refusal> {
    if qtype == TYPE_OPT {
        return Err((rcode::FORMERR, "opt as a question type", edns));
    }
    if edns.is_some_and(|e| e.version > 0) {
        return Err((rcode::BADVERS, "unsupported edns version", edns));
    }
    Ok(())
}

/// The query zonefwd sends upstream: the client's question and RD/AD/CD bits under a
/// fresh ID, with zonefwd's own OPT (payload 1232, the client's DO bit) unless `edns`
/// is off for a server that rejected EDNS. The client's OPT options (cookies, ECS,
/// padding) are hop-by-hop and stay behind (RFC 6891 section 6.1.1).
pub fn build_upstream_query(q: &Query, id: u16, edns: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + q.qname.len() + 4 + 11);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(q.flags & (FLAG_RD | FLAG_AD | FLAG_CD)).to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    push_question(&mut out, &q.qname, q.qtype, q.qclass);
    if edns {
        let dnssec_ok = q.edns.is_some_and(|e| e.dnssec_ok);
        push_opt(&mut out, EDNS_PAYLOAD, 0, dnssec_ok);
    }
    out
}
