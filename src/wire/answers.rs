//! What the answer section of a reply that walked clean holds: its A/AAAA addresses
//! (and which are public), the names its chain passes through, and whether it has a
//! CNAME.

use super::codes::{TYPE_A, TYPE_AAAA, TYPE_CNAME};
use super::fields::u16_at;
use super::name::{lowercase, read_name};

/// One record of the answer section, by place: where its owner name starts, its type,
/// and where its RDATA lies (a name in it may point back into the message).
struct AnswerRecord {
    owner: usize,
    rtype: u16,
    data: std::ops::Range<usize>,
}

/// Each record of the answer section of a reply that `parse_reply` accepted
/// (`question_end` and `answers` from its `Reply`): the one walk the readers below
/// share.
fn answer_record_places(
    msg: &[u8],
    question_end: usize,
    answers: u16,
) -> impl Iterator<Item = AnswerRecord> + '_ {
    let mut pos = question_end;
    (0..answers).map_while(move |_| {
        let owner = pos;
        let after = read_name(msg, owner, None).ok()?;
        let rtype = u16_at(msg, after, "type").ok()?;
        let rdlen = usize::from(u16_at(msg, after + 8, "rdlength").ok()?);
        let data = after + 10..after + 10 + rdlen;
        msg.get(data.clone())?;
        pos = data.end;
        Some(AnswerRecord { owner, rtype, data })
    })
}

/// The (type, RDATA) of each record in the answer section of a reply that
/// `parse_reply` accepted (`question_end` and `answers` from its `Reply`).
pub(super) fn answer_records(
    msg: &[u8],
    question_end: usize,
    answers: u16,
) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    answer_record_places(msg, question_end, answers).map(move |r| (r.rtype, &msg[r.data]))
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

/// The names an answer's chain passes through: each answer record's owner and each
/// CNAME's target, lowercase, uncompressed (`expect_private` asks whether any is in a
/// private zone).
pub fn answer_chain_names(msg: &[u8], question_end: usize, answers: u16) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    for r in answer_record_places(msg, question_end, answers) {
        let at = |start: usize| {
            let mut name = Vec::new();
            read_name(msg, start, Some(&mut name)).ok()?;
            lowercase(&mut name);
            Some(name)
        };
        if r.rtype == TYPE_CNAME {
            names.extend(at(r.data.start));
        }
        names.extend(at(r.owner));
    }
    names
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
