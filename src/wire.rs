//! DNS wire format: the little a forwarder must read and rewrite (RFC 1035 section 4.1).
//!
//! zonefwd relays the upstream's reply as bytes instead of decoding and re-encoding
//! records, so the client gets exactly what the upstream said (record order, unknown
//! types, DNSSEC records, compression) with only the ID, the question's spelling, RA
//! and the hop-by-hop OPT record rewritten. That needs a walker that can prove a
//! message well formed and find the OPT record, not a full decoder.
//!
//! Every read is bounds-checked. Compression pointers may only point backwards, below
//! the start of the label run that holds them, and never into the header: pointer
//! loops and forward pointers (RFC 9267 section 2) are errors, never hangs. Each
//! record takes at least 11 octets, so a walk is linear in the message length.

use std::ops::Range;

pub const HEADER_LEN: usize = 12;
/// RFC 1035 section 2.3.4, in octets of the uncompressed wire form.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_LABEL_LEN: usize = 63;
/// Largest message over UDP without EDNS (RFC 1035 section 4.2.1).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The payload size advertised to upstreams and the cap on what is sent to clients
/// over UDP: the DNS Flag Day 2020 value, which avoids IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;
pub const MAX_TCP_MESSAGE: usize = 65535;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_DS: u16 = 43;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const CLASS_IN: u16 = 1;

pub const FLAG_QR: u16 = 0x8000;
pub const OPCODE_MASK: u16 = 0x7800;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_Z: u16 = 0x0040;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
pub const RCODE_MASK: u16 = 0x000f;
/// The DO bit in the OPT record's TTL field (RFC 3225).
const EDNS_DO: u32 = 0x0000_8000;

/// Response codes, including the extended ones carried partly in OPT (RFC 6891 6.1.3).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;

    /// The mnemonic used in logs and tool output.
    pub fn name(rcode: u16) -> String {
        match rcode {
            NOERROR => "NOERROR".into(),
            FORMERR => "FORMERR".into(),
            SERVFAIL => "SERVFAIL".into(),
            NXDOMAIN => "NXDOMAIN".into(),
            NOTIMP => "NOTIMP".into(),
            REFUSED => "REFUSED".into(),
            BADVERS => "BADVERS".into(),
            other => format!("RCODE{other}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than a dns header")]
    ShortHeader,
    #[error("message ends inside a {0}")]
    Truncated(&'static str),
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("compression pointer that does not point backwards")]
    BadPointer,
    #[error("reserved label type")]
    BadLabelType,
    #[error("opt record outside the additional section")]
    MisplacedOpt,
    #[error("more than one opt record")]
    DuplicateOpt,
    #[error("opt record with a non-root owner name")]
    OptOwner,
    #[error("malformed edns option")]
    BadOption,
}

fn u16_at(msg: &[u8], pos: usize, what: &'static str) -> Result<u16, WireError> {
    match msg.get(pos..pos + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated(what)),
    }
}

fn u32_at(msg: &[u8], pos: usize, what: &'static str) -> Result<u32, WireError> {
    match msg.get(pos..pos + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(WireError::Truncated(what)),
    }
}

pub fn id(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

pub fn flags(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[2], msg[3]])
}

fn set_u16(msg: &mut [u8], pos: usize, v: u16) {
    msg[pos..pos + 2].copy_from_slice(&v.to_be_bytes());
}

fn count(msg: &[u8], n: usize) -> u16 {
    u16::from_be_bytes([msg[4 + 2 * n], msg[5 + 2 * n]])
}

/// The (type, RDATA) of each record in the answer section of a reply that
/// `parse_reply` accepted (`question_end` and `answers` from its `Reply`).
fn answer_records(
    msg: &[u8],
    question_end: usize,
    answers: u16,
) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    let mut pos = question_end;
    (0..answers).map_while(move |_| {
        let after = read_name(msg, pos, None).ok()?;
        let rtype = u16_at(msg, after, "type").ok()?;
        let rdlen = usize::from(u16_at(msg, after + 8, "rdlength").ok()?);
        let data = after + 10;
        let rdata = msg.get(data..data + rdlen)?;
        pos = data + rdlen;
        Some((rtype, rdata))
    })
}

/// The addresses of the A and AAAA records in the answer section of a reply that
/// `parse_reply` accepted (`question_end` and `answers` from its `Reply`).
pub fn answer_addresses(msg: &[u8], question_end: usize, answers: u16) -> Vec<std::net::IpAddr> {
    answer_records(msg, question_end, answers)
        .filter_map(|(rtype, rdata)| match (rtype, rdata.len()) {
            (TYPE_A, 4) => Some(std::net::IpAddr::from(
                <[u8; 4]>::try_from(rdata).expect("4 octets"),
            )),
            (TYPE_AAAA, 16) => Some(std::net::IpAddr::from(
                <[u8; 16]>::try_from(rdata).expect("16 octets"),
            )),
            _ => None,
        })
        .collect()
}

/// The A/AAAA addresses of the answer section outside private ranges
/// (`is_private_address`): what `expect_private` looks for.
pub fn public_addresses(msg: &[u8], question_end: usize, answers: u16) -> Vec<std::net::IpAddr> {
    let mut v = answer_addresses(msg, question_end, answers);
    v.retain(|ip| !is_private_address(*ip));
    v
}

/// Whether the answer section holds a CNAME: the cheap test before `claim_cnames`
/// decodes a reply.
pub fn answer_has_cname(msg: &[u8], question_end: usize, answers: u16) -> bool {
    answer_records(msg, question_end, answers).any(|(rtype, _)| rtype == TYPE_CNAME)
}

/// Private, shared (CGNAT) or unique-local: where private endpoints and private
/// clusters live. Everything else is public for `expect_private`.
pub fn is_private_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_address(std::net::IpAddr::V4(v4)),
            None => (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

/// Reads the (possibly compressed) name at `pos`, appending its uncompressed wire form
/// to `out` when given. Returns the position just after the name as it is stored.
pub fn read_name(msg: &[u8], start: usize, out: Option<&mut Vec<u8>>) -> Result<usize, WireError> {
    read_name_avoiding(msg, start, out, &[])
}

/// Octets [from, to) reached through a compression pointer while reading the name that
/// starts at `name_start` may be used: they lie wholly before that name (a pointer
/// refers to an earlier, complete name, RFC 1035 4.1.4) and outside every TTL field.
fn earlier_name_bytes(ttls: &[u16], name_start: usize, from: usize, to: usize) -> bool {
    to <= name_start && !touches_ttl(ttls, from, to)
}

/// Whether [start, end) touches any of the 4-octet TTL fields at `ttls` (ascending).
fn touches_ttl(ttls: &[u16], start: usize, end: usize) -> bool {
    let i = ttls.partition_point(|&o| usize::from(o) + 4 <= start);
    ttls.get(i).is_some_and(|&o| usize::from(o) < end)
}

/// `read_name`, refusing names that are read, through a compression pointer, out of a
/// TTL field. zonefwd rewrites TTLs (clamping, ageing), so a name aliased onto TTL
/// octets would change meaning after it was validated; real compression points only
/// at earlier names.
fn read_name_avoiding(
    msg: &[u8],
    start: usize,
    mut out: Option<&mut Vec<u8>>,
    ttls: &[u16],
) -> Result<usize, WireError> {
    let mut pos = start;
    let mut after: Option<usize> = None;
    // A pointer must target below the start of the label run it ends, so targets
    // strictly decrease and every walk ends.
    let mut floor = start;
    let mut len = 0usize;
    loop {
        let b = *msg.get(pos).ok_or(WireError::Truncated("name"))?;
        match b & 0xc0 {
            0x00 => {
                let l = usize::from(b);
                len += l + 1;
                if len > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                if l == 0 {
                    if after.is_some() && !earlier_name_bytes(ttls, start, pos, pos + 1) {
                        return Err(WireError::BadPointer);
                    }
                    if let Some(o) = out.as_deref_mut() {
                        o.push(0);
                    }
                    return Ok(after.unwrap_or(pos + 1));
                }
                let label = msg
                    .get(pos + 1..pos + 1 + l)
                    .ok_or(WireError::Truncated("label"))?;
                if after.is_some() && !earlier_name_bytes(ttls, start, pos, pos + 1 + l) {
                    return Err(WireError::BadPointer);
                }
                if let Some(o) = out.as_deref_mut() {
                    o.push(b);
                    o.extend_from_slice(label);
                }
                pos += 1 + l;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(WireError::Truncated("pointer"))?;
                if after.is_some() && !earlier_name_bytes(ttls, start, pos, pos + 2) {
                    return Err(WireError::BadPointer);
                }
                let target = (usize::from(b & 0x3f) << 8) | usize::from(lo);
                if target >= floor || target < HEADER_LEN {
                    return Err(WireError::BadPointer);
                }
                after.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            // 0x40 and 0x80: extended label types, obsolete (RFC 6891 section 5).
            _ => return Err(WireError::BadLabelType),
        }
    }
}

/// ASCII-lowercases a wire-format name in place (RFC 4343: only A-Z fold). The
/// length octets are below 64, outside A-Z, so folding the whole name leaves them as
/// they are and needs no walk of the labels (the walk was 2% of a forwarded query).
pub fn lowercase(name: &mut [u8]) {
    name.make_ascii_lowercase();
}

/// Compares two uncompressed wire names, ignoring ASCII case. Length octets are below
/// 64 and so never change under ASCII folding, which makes a byte compare exact.
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Offsets of each label start in an uncompressed wire name: each is the start of a
/// suffix that is itself a name, from the whole name down to the last label.
pub fn label_offsets(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let l = usize::from(*name.get(i)?);
        if l == 0 {
            return None;
        }
        let at = i;
        i += l + 1;
        Some(at)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("label longer than 63 characters")]
    LabelTooLong,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("character {0:?} is not allowed in a name")]
    BadChar(char),
}

/// Parses a presentation-format name ("a.example.com", trailing dot optional, "." is
/// the root) into uncompressed wire form. Escapes are not supported: names here are
/// zone names and query names typed by an operator.
pub fn name_from_str(s: &str) -> Result<Vec<u8>, NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s == "." {
        return Ok(vec![0]);
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() + 2);
    for label in s.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong);
        }
        if let Some(c) = label.chars().find(|c| !c.is_ascii_graphic() || *c == '\\') {
            return Err(NameError::BadChar(c));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong);
    }
    Ok(out)
}

/// Presentation form of an uncompressed wire name, with a trailing dot; octets that are
/// not printable, and dots inside labels, are escaped as in RFC 1035 section 5.1.
pub fn name_to_string(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    for at in label_offsets(name) {
        let l = usize::from(name[at]);
        for &c in &name[at + 1..at + 1 + l] {
            match c {
                b'.' | b'\\' => {
                    s.push('\\');
                    s.push(char::from(c));
                }
                0x21..=0x7e => s.push(char::from(c)),
                _ => s.push_str(&format!("\\{c:03}")),
            }
        }
        s.push('.');
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// EDNS as the client sent it (RFC 6891 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
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

fn read_question(msg: &[u8]) -> Result<(Vec<u8>, u16, u16, usize), WireError> {
    let (qname, qtype, qclass, end) = question(msg)?;
    Ok((qname.to_vec(), qtype, qclass, end))
}

/// The question's name (wire form, as spelled), type, class and end, borrowed from
/// `msg`. The name is the octets from offset 12 to its root label: a compression
/// pointer there could only point into the header, which `read_name` refuses.
fn question(msg: &[u8]) -> Result<(&[u8], u16, u16, usize), WireError> {
    let pos = read_name(msg, HEADER_LEN, None)?;
    let qtype = u16_at(msg, pos, "question")?;
    let qclass = u16_at(msg, pos + 2, "question")?;
    Ok((&msg[HEADER_LEN..pos], qtype, qclass, pos + 4))
}

/// Fixed part of a resource record after its owner name.
struct RecordHead {
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: Range<usize>,
}

fn read_record(
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

fn check_options(rdata: &[u8]) -> Result<(), WireError> {
    let mut i = 0;
    while i < rdata.len() {
        let len = usize::from(u16_at(rdata, i + 2, "option").map_err(|_| WireError::BadOption)?);
        i += 4 + len;
        if i > rdata.len() {
            return Err(WireError::BadOption);
        }
    }
    Ok(())
}

/// Parses a client query that `is_answerable_query` let through (RFC 1035 4.1,
/// RFC 6891 6.1, RFC 8906 section 3). Anything odd is rejected here, so nothing the
/// client sent reaches an upstream except the question and the RD/AD/CD/DO bits.
pub fn parse_query(msg: &[u8]) -> Result<Query, Rejection> {
    let id = id(msg);
    let flags = flags(msg);
    let reject = |rcode, reason, question, edns| Rejection {
        rcode,
        reason,
        question,
        edns,
    };
    let question = if count(msg, 0) == 1 {
        read_question(msg).ok()
    } else {
        None
    };
    if flags & OPCODE_MASK != 0 {
        let q = question.map(|(n, t, c, _)| (n, t, c));
        return Err(reject(rcode::NOTIMP, "opcode other than QUERY", q, None));
    }
    let (qname, qtype, qclass, mut pos) = match (count(msg, 0), question) {
        (1, Some(q)) => q,
        (1, None) => return Err(reject(rcode::FORMERR, "unreadable question", None, None)),
        _ => {
            return Err(reject(
                rcode::FORMERR,
                "question count is not 1",
                None,
                None,
            ))
        }
    };
    let q = || Some((qname.clone(), qtype, qclass));
    if count(msg, 1) != 0 || count(msg, 2) != 0 {
        return Err(reject(
            rcode::FORMERR,
            "query with answer or authority records",
            q(),
            None,
        ));
    }
    let mut edns = None;
    for _ in 0..count(msg, 3) {
        let (rec, root_owner, next) = match read_record(msg, pos, &[]) {
            Ok(r) => r,
            Err(_) => {
                return Err(reject(
                    rcode::FORMERR,
                    "unreadable additional record",
                    q(),
                    None,
                ))
            }
        };
        if rec.rtype == TYPE_OPT {
            if edns.is_some() {
                // RFC 6891 6.1.1: more than one OPT is a FORMERR.
                return Err(reject(
                    rcode::FORMERR,
                    "more than one opt record",
                    q(),
                    None,
                ));
            }
            if !root_owner {
                return Err(reject(
                    rcode::FORMERR,
                    "opt owner is not the root",
                    q(),
                    None,
                ));
            }
            if check_options(&msg[rec.rdata.clone()]).is_err() {
                return Err(reject(rcode::FORMERR, "malformed edns options", q(), None));
            }
            edns = Some(Edns {
                payload: rec.class,
                version: (rec.ttl >> 16) as u8,
                dnssec_ok: rec.ttl & EDNS_DO != 0,
            });
        }
        // Other additional records (TSIG, SIG(0)) are hop-by-hop and are not forwarded.
        pos = next;
    }
    if pos != msg.len() {
        return Err(reject(
            rcode::FORMERR,
            "trailing bytes after the records",
            q(),
            edns,
        ));
    }
    if qtype == TYPE_OPT {
        return Err(reject(rcode::FORMERR, "opt as a question type", q(), edns));
    }
    if let Some(e) = edns {
        if e.version > 0 {
            // RFC 6891 6.1.3: answer BADVERS with the highest version we support (0).
            return Err(reject(
                rcode::BADVERS,
                "unsupported edns version",
                q(),
                edns,
            ));
        }
    }
    // Copied and folded in one pass (see `lowercase`).
    let qname_lower = qname.to_ascii_lowercase();
    Ok(Query {
        id,
        flags,
        qname,
        qname_lower,
        qtype,
        qclass,
        edns,
    })
}

fn push_opt(out: &mut Vec<u8>, payload: u16, ext_rcode: u8, dnssec_ok: bool) {
    let ttl = (u32::from(ext_rcode) << 24) | if dnssec_ok { EDNS_DO } else { 0 };
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

fn push_question(out: &mut Vec<u8>, qname: &[u8], qtype: u16, qclass: u16) {
    out.extend_from_slice(qname);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
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

pub const TYPE_HINFO: u16 = 13;
pub const TYPE_ANY: u16 = 255;

/// RFC 8482 section 4.2: the minimal answer to ANY, one synthesised HINFO record
/// ("RFC8482", "") for the question name, so ANY cannot be used for amplification.
pub fn any_hinfo_reply(q: &Query) -> Vec<u8> {
    let mut out = error_reply(
        q.id,
        q.flags,
        Some((&q.qname, q.qtype, q.qclass)),
        None,
        rcode::NOERROR,
    );
    set_u16(&mut out, 6, 1);
    out.extend_from_slice(&[0xc0, 12]); // owner: the question name
    out.extend_from_slice(&TYPE_HINFO.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    out.extend_from_slice(&3789u32.to_be_bytes()); // the TTL RFC 8482 suggests
    out.extend_from_slice(&9u16.to_be_bytes());
    out.extend_from_slice(&[7, b'R', b'F', b'C', b'8', b'4', b'8', b'2', 0]);
    if let Some(e) = &q.edns {
        set_u16(&mut out, 10, 1);
        push_opt(&mut out, EDNS_PAYLOAD, 0, e.dnssec_ok);
    }
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

/// Walks the records after the question (a message already known to have one).
fn walk(msg: &[u8], question_end: usize) -> Result<Reply, WireError> {
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

fn truncated(full: &[u8], question_end: usize, q: &Query, ext_rcode: u8) -> Vec<u8> {
    let mut out = full[..question_end].to_vec();
    set_u16(&mut out, 0, q.id);
    out[HEADER_LEN..HEADER_LEN + q.qname.len()].copy_from_slice(&q.qname);
    set_u16(&mut out, 2, flags(full) | FLAG_TC);
    set_u16(&mut out, 6, 0);
    set_u16(&mut out, 8, 0);
    set_u16(&mut out, 10, u16::from(q.edns.is_some()));
    if let Some(e) = &q.edns {
        push_opt(&mut out, EDNS_PAYLOAD, ext_rcode, e.dnssec_ok);
    }
    out
}

fn reencode_without_opt(msg: &[u8]) -> Option<Vec<u8>> {
    let mut m = hickory_proto::op::Message::from_vec(msg).ok()?;
    m.edns = None;
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path a forwarded reply takes: normalize, then render with TTLs as stored.
    fn relay(msg: &[u8], r: &Reply, q: &Query, limit: usize) -> Vec<u8> {
        match normalize(msg, r) {
            Some(n) => render(&n, q, limit, Ttls::AsStored),
            None => reply_for(q, rcode::SERVFAIL),
        }
    }

    /// Number of labels in an uncompressed wire name, the root not counted.
    fn label_count(name: &[u8]) -> usize {
        label_offsets(name).count()
    }

    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut v = header(0x1234, FLAG_RD, [1, 0, 0, 0]);
        push_question(&mut v, &name_from_str(name).unwrap(), qtype, CLASS_IN);
        v
    }

    #[test]
    fn lowercase_folds_labels_and_keeps_every_length() {
        // Every label length a name can have (1-63), in upper case.
        let labels: Vec<String> = (1..=63).map(|n| "AZ".repeat(32)[..n].to_string()).collect();
        for chunk in labels.chunks(3) {
            let mut w = name_from_str(&chunk.join(".")).unwrap();
            lowercase(&mut w);
            assert_eq!(w, name_from_str(&chunk.join(".").to_lowercase()).unwrap());
        }
        let q = parse_query(&query("WwW.ExAmPlE.", 1)).unwrap();
        assert_eq!(q.qname_lower, name_from_str("www.example.").unwrap());
        assert_eq!(q.qname, name_from_str("WwW.ExAmPlE.").unwrap());
    }

    #[test]
    fn names_round_trip_and_validate() {
        let w = name_from_str("Www.Example.COM.").unwrap();
        assert_eq!(name_to_string(&w), "Www.Example.COM.");
        assert_eq!(name_from_str("."), Ok(vec![0]));
        assert_eq!(name_to_string(&[0]), ".");
        assert_eq!(name_from_str("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(name_from_str(&"a".repeat(64)), Err(NameError::LabelTooLong));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(name_from_str(&long), Err(NameError::NameTooLong));
        assert_eq!(name_from_str("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(name_to_string(&[3, b'a', b'.', 0xff, 0]), "a\\.\\255.");
        assert_eq!(label_count(&w), 3);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_errors() {
        let mut m = header(1, 0, [1, 0, 0, 0]);
        // Label "a" then a pointer back to that label: a loop.
        m.extend_from_slice(&[1, b'a', 0xc0, 12]);
        assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
        // Pointer to itself.
        let mut m = header(1, 0, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xc0, 12]);
        assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
        // Pointer into the header.
        let mut m = header(1, 0, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xc0, 2]);
        assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
        // A valid backwards pointer.
        let mut m = header(1, 0, [1, 0, 0, 0]);
        m.extend_from_slice(&[1, b'b', 0, 1, b'a', 0xc0, 12]);
        let mut out = Vec::new();
        assert_eq!(read_name(&m, 15, Some(&mut out)), Ok(19));
        assert_eq!(out, vec![1, b'a', 1, b'b', 0]);
        // Label type 0x40 is reserved.
        let mut m = header(1, 0, [1, 0, 0, 0]);
        m.extend_from_slice(&[0x41, 0]);
        assert_eq!(read_name(&m, 12, None), Err(WireError::BadLabelType));
    }

    #[test]
    fn names_may_not_alias_ttl_octets() {
        // An owner name that points at the last octet of an earlier TTL (0x00, which
        // reads as the root) would change meaning when zonefwd rewrites that TTL.
        let q = parse_query(&query("a", 1)).unwrap();
        let mut r = header(1, FLAG_QR, [1, 2, 0, 0]);
        push_question(&mut r, &q.qname, 1, 1);
        let first = r.len();
        answer_a(&mut r, 256); // TTL octets 00 00 01 00
        let ttl_last = first + 2 + 4 + 3;
        r.extend_from_slice(&[
            0xc0,
            ttl_last as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            9,
            0,
            4,
            1,
            2,
            3,
            4,
        ]);
        assert_eq!(
            parse_reply(&r, 1, &q),
            Err(ReplyError::Malformed(WireError::BadPointer))
        );
        // The same pointer aimed at the question name is ordinary compression.
        let n = r.len();
        r[n - 15] = 12;
        assert!(parse_reply(&r, 1, &q).is_ok());
    }

    #[test]
    fn names_read_through_pointers_end_before_the_name_that_points() {
        // The pointer goes backwards, to a length octet (9) at the end of an earlier
        // record, but the label it starts runs on into the pointing record itself,
        // over its TTL.
        let q = parse_query(&query("a", 1)).unwrap();
        let mut r = header(1, FLAG_QR, [1, 2, 0, 0]);
        push_question(&mut r, &q.qname, 1, 1);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 9]);
        let nine = r.len() - 1;
        r.extend_from_slice(&[0xc0, nine as u8, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            parse_reply(&r, 1, &q),
            Err(ReplyError::Malformed(WireError::BadPointer))
        );
    }

    #[test]
    fn long_names_are_rejected_even_through_pointers() {
        // 5 labels of 63 = 320 octets.
        let mut m = header(1, 0, [1, 0, 0, 0]);
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'x'; 63]);
        }
        m.push(0);
        assert_eq!(read_name(&m, 12, None), Err(WireError::NameTooLong));
    }

    #[test]
    fn query_checks() {
        let q = parse_query(&query("Example.com", 1)).unwrap();
        assert_eq!(q.qname_lower, name_from_str("example.com").unwrap());
        assert_eq!(q.edns, None);

        let mut two = header(1, 0, [2, 0, 0, 0]);
        push_question(&mut two, &[0], 1, 1);
        push_question(&mut two, &[0], 1, 1);
        assert_eq!(parse_query(&two).unwrap_err().rcode, rcode::FORMERR);

        let mut trailing = query("a", 1);
        trailing.push(0);
        assert_eq!(parse_query(&trailing).unwrap_err().rcode, rcode::FORMERR);

        let mut notify = query("a", 6);
        notify[2] |= 0x20; // opcode 4 (NOTIFY)
        let r = parse_query(&notify).unwrap_err();
        assert_eq!(r.rcode, rcode::NOTIMP);
        assert!(r.question.is_some());

        let mut two_opt = query("a", 1);
        two_opt[11] = 2;
        push_opt(&mut two_opt, 1232, 0, false);
        push_opt(&mut two_opt, 1232, 0, false);
        assert_eq!(
            parse_query(&two_opt).unwrap_err().reason,
            "more than one opt record"
        );

        let mut v1 = query("a", 1);
        v1[11] = 1;
        push_opt(&mut v1, 1232, 0, false);
        let n = v1.len();
        v1[n - 5] = 1; // version 1
        let r = parse_query(&v1).unwrap_err();
        assert_eq!(r.rcode, rcode::BADVERS);
        let reply = error_reply(1, 0, None, r.edns.as_ref(), r.rcode);
        // Header rcode 0, OPT extended rcode 1: 16 = BADVERS.
        assert_eq!(flags(&reply) & RCODE_MASK, 0);
        assert_eq!(reply[reply.len() - 6], 1);

        let mut opt_in_answer = query("a", 1);
        opt_in_answer[7] = 1;
        push_opt(&mut opt_in_answer, 1232, 0, false);
        assert_eq!(
            parse_query(&opt_in_answer).unwrap_err().rcode,
            rcode::FORMERR
        );

        let mut bad_option = query("a", 1);
        bad_option[11] = 1;
        bad_option.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 9]);
        assert_eq!(
            parse_query(&bad_option).unwrap_err().reason,
            "malformed edns options"
        );
    }

    #[test]
    fn upstream_query_carries_question_bits_and_own_opt() {
        let mut m = header(7, FLAG_RD | FLAG_CD | FLAG_AA, [1, 0, 0, 1]);
        push_question(&mut m, &name_from_str("a.B").unwrap(), 28, 1);
        push_opt(&mut m, 4096, 0, true);
        let q = parse_query(&m).unwrap();
        let up = build_upstream_query(&q, 0xbeef, true);
        assert_eq!(id(&up), 0xbeef);
        assert_eq!(flags(&up), FLAG_RD | FLAG_CD);
        let parsed = parse_query(&up).unwrap();
        assert_eq!(parsed.qname, q.qname);
        assert_eq!(
            parsed.edns,
            Some(Edns {
                payload: 1232,
                version: 0,
                dnssec_ok: true
            })
        );
        let plain = build_upstream_query(&q, 1, false);
        assert_eq!(parse_query(&plain).unwrap().edns, None);
    }

    fn answer_a(out: &mut Vec<u8>, ttl: u32) {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
    }

    #[test]
    fn reply_match_and_relay() {
        let q = parse_query(&query("WwW.example.com", 1)).unwrap();
        let mut r = header(99, FLAG_QR | FLAG_RD | FLAG_AA, [1, 1, 0, 1]);
        push_question(&mut r, &name_from_str("www.example.com").unwrap(), 1, 1);
        answer_a(&mut r, 300);
        push_opt(&mut r, 1232, 0, false);
        assert_eq!(parse_reply(&r, 98, &q), Err(ReplyError::Mismatch));
        let parsed = parse_reply(&r, 99, &q).unwrap();
        assert_eq!(parsed.rcode, rcode::NOERROR);
        assert!(parsed.opt_is_last);
        let out = relay(&r, &parsed, &q, 512);
        assert_eq!(id(&out), q.id);
        assert_eq!(flags(&out), FLAG_QR | FLAG_RD | FLAG_AA | FLAG_RA);
        assert_eq!(count(&out, 3), 0, "client sent no OPT, so none comes back");
        assert_eq!(&out[12..12 + q.qname.len()], &q.qname[..]);
        assert_eq!(out.len(), r.len() - 11);

        // A question for another name is not ours.
        let other = parse_query(&query("mail.example.com", 1)).unwrap();
        assert_eq!(parse_reply(&r, 99, &other), Err(ReplyError::Mismatch));
    }

    #[test]
    fn relay_truncates_for_small_clients() {
        let q = parse_query(&query("big.example", 16)).unwrap();
        let mut r = header(5, FLAG_QR, [1, 3, 0, 0]);
        push_question(&mut r, &q.qname, 16, 1);
        for _ in 0..3 {
            r.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 200]);
            r.extend_from_slice(&[199; 200]);
        }
        let p = parse_reply(&r, 5, &q).unwrap();
        let out = relay(&r, &p, &q, 512);
        assert!(flags(&out) & FLAG_TC != 0);
        assert_eq!(count(&out, 1), 0);
        assert_eq!(out.len(), p.question_end);
        // Over TCP it fits whole.
        let full = relay(&r, &p, &q, MAX_TCP_MESSAGE);
        assert_eq!(full.len(), r.len());
    }

    #[test]
    fn malformed_replies_are_rejected() {
        let q = parse_query(&query("a.example", 1)).unwrap();
        let mut r = header(5, FLAG_QR, [1, 2, 0, 0]);
        push_question(&mut r, &q.qname, 1, 1);
        answer_a(&mut r, 1);
        assert!(matches!(
            parse_reply(&r, 5, &q),
            Err(ReplyError::Malformed(WireError::Truncated(_)))
        ));
        let mut r = header(5, FLAG_QR, [1, 1, 0, 0]);
        push_question(&mut r, &q.qname, 1, 1);
        push_opt(&mut r, 1232, 0, false);
        assert_eq!(
            parse_reply(&r, 5, &q),
            Err(ReplyError::Malformed(WireError::MisplacedOpt))
        );
    }

    #[test]
    fn opt_in_the_middle_is_reencoded() {
        let mut m = header(3, 0, [1, 0, 0, 1]);
        push_question(&mut m, &name_from_str("x.example").unwrap(), 1, 1);
        push_opt(&mut m, 1232, 0, true);
        let q = parse_query(&m).unwrap();
        let mut r = header(9, FLAG_QR, [1, 0, 0, 2]);
        push_question(&mut r, &q.qname, 1, 1);
        push_opt(&mut r, 1232, 0, false);
        answer_a(&mut r, 30);
        let p = parse_reply(&r, 9, &q).unwrap();
        assert!(!p.opt_is_last);
        let out = relay(&r, &p, &q, 1232);
        let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(msg.additionals.len(), 1);
        assert!(msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
        assert_eq!(msg.metadata.id, 3);
    }

    #[test]
    fn walk_finds_ttls_and_the_negative_soa() {
        let q = parse_query(&query("nx.example", 1)).unwrap();
        let mut r = header(8, FLAG_QR | 3, [1, 1, 1, 1]);
        push_question(&mut r, &q.qname, 1, 1);
        answer_a(&mut r, 77);
        // SOA in authority: owner = question name (pointer), TTL 900, MINIMUM 60.
        r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
        r.extend_from_slice(&900u32.to_be_bytes());
        let mut rdata = vec![0, 0]; // mname ".", rname "."
        for v in [1u32, 2, 3, 4, 60] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
        push_opt(&mut r, 1232, 0, false);
        let p = parse_reply(&r, 8, &q).unwrap();
        assert_eq!(p.soa, Some((900, 60)));
        assert_eq!(p.ttl_offsets.len(), 2, "OPT's flags are not a TTL");
        let n = normalize(&r, &p).unwrap();
        assert_eq!(n.ttl_at(n.ttl_offsets[0]), 77);
        assert_eq!(n.ttl_at(n.ttl_offsets[1]), 900);
        let aged = render(&n, &q, 512, Ttls::Aged(100));
        let back = parse_reply(&aged, q.id, &q).unwrap();
        let t = |o: u16| u32::from_be_bytes(aged[o as usize..o as usize + 4].try_into().unwrap());
        assert_eq!(
            (t(back.ttl_offsets[0]), t(back.ttl_offsets[1])),
            (0, 800),
            "never below 0"
        );
        let stale = render(&n, &q, 512, Ttls::Fixed(30));
        assert!(back.ttl_offsets.iter().all(|&o| u32::from_be_bytes(
            stale[o as usize..o as usize + 4].try_into().unwrap()
        ) == 30));
    }

    #[test]
    fn extended_rcode_without_client_edns_becomes_servfail() {
        let q = parse_query(&query("a", 1)).unwrap();
        let mut r = header(4, FLAG_QR, [1, 0, 0, 1]);
        push_question(&mut r, &q.qname, 1, 1);
        push_opt(&mut r, 1232, 1, false);
        let p = parse_reply(&r, 4, &q).unwrap();
        assert_eq!(p.rcode, 16);
        let out = relay(&r, &p, &q, 512);
        assert_eq!(flags(&out) & RCODE_MASK, rcode::SERVFAIL);
    }
}
