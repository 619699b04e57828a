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
//!
//! - `name`: names (read through compression pointers, fold, compare, print, parse)
//! - `query`: a client query's checks (`parse_query`, each refusal a `Rejection`) and
//!   the query sent upstream
//! - `reply`: an upstream reply's walk (`parse_reply`)
//! - `answers`: what a walked reply's answer section holds (addresses, CNAMEs)
//! - `relay`: a reply made ready for any client (`normalize`) and written for one
//!   (`render`, TTL offsets)
//! - `synth`: replies zonefwd makes itself (errors, RFC 8482 HINFO)
//! - `frame`: the TCP length prefix (RFC 1035 4.2.2)

mod answers;
mod frame;
mod name;
mod query;
mod relay;
mod reply;
mod synth;
#[cfg(test)]
mod tests;

pub use self::{answers::*, frame::*, name::*, query::*, relay::*, reply::*, synth::*};

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
pub const TYPE_HINFO: u16 = 13;
pub const TYPE_ANY: u16 = 255;
pub const TYPE_TXT: u16 = 16;
pub const CLASS_IN: u16 = 1;
/// CHAOS: the class of a server's questions about itself (RFC 4892).
pub const CLASS_CH: u16 = 3;
/// The EDNS option of a server's identity (RFC 5001).
pub const OPTION_NSID: u16 = 3;

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
pub(super) const EDNS_DO: u32 = 0x0000_8000;

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

/// The OPT record zonefwd writes: root owner, `payload`, the extended rcode's upper
/// bits and the DO bit (RFC 6891 6.1.2, 6.1.3).
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

pub(super) fn u16_at(msg: &[u8], pos: usize, what: &'static str) -> Result<u16, WireError> {
    match msg.get(pos..pos + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated(what)),
    }
}

pub(super) fn u32_at(msg: &[u8], pos: usize, what: &'static str) -> Result<u32, WireError> {
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

pub(super) fn set_u16(msg: &mut [u8], pos: usize, v: u16) {
    msg[pos..pos + 2].copy_from_slice(&v.to_be_bytes());
}

pub(super) fn count(msg: &[u8], n: usize) -> u16 {
    u16::from_be_bytes([msg[4 + 2 * n], msg[5 + 2 * n]])
}
