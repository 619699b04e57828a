//! The fixed-size fields every walk and writer shares: the header's ID, flags and
//! counts, 16- and 32-bit integers at an offset (bounds-checked on read), the question
//! and OPT writers, and `WireError`, what a walk that fails says.

use super::codes::{EDNS_DO, TYPE_OPT};

/// The OPT record zonefwd writes: root owner, `payload`, the extended rcode's upper
/// bits and the DO bit (RFC 6891 6.1.2, 6.1.3).
pub(super) fn push_opt(out: &mut Vec<u8>, payload: u16, ext_rcode: u8, dnssec_ok: bool) {
    let ttl = (u32::from(ext_rcode) << 24) | if dnssec_ok { EDNS_DO } else { 0 };
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

pub(super) fn push_question(out: &mut Vec<u8>, qname: &[u8], qtype: u16, qclass: u16) {
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
