//! What the answer section of a reply that walked clean holds: its A/AAAA addresses
//! (and which are public), the names its chain passes through, and whether it has a
//! CNAME.

use super::*;

/// The (type, RDATA) of each record in the answer section of a reply that
/// `parse_reply` accepted (`question_end` and `answers` from its `Reply`).
pub(super) fn answer_records(
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

/// The names an answer's chain passes through: each answer record's owner and each
/// CNAME's target, lowercase, uncompressed (`expect_private` asks whether any is in a
/// private zone).
pub fn answer_chain_names(msg: &[u8], question_end: usize, answers: u16) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let mut pos = question_end;
    for _ in 0..answers {
        let mut owner = Vec::new();
        let Ok(after) = read_name(msg, pos, Some(&mut owner)) else {
            break;
        };
        let (Ok(rtype), Ok(rdlen)) = (
            u16_at(msg, after, "type"),
            u16_at(msg, after + 8, "rdlength"),
        ) else {
            break;
        };
        let data = after + 10;
        if rtype == TYPE_CNAME {
            let mut target = Vec::new();
            if read_name(msg, data, Some(&mut target)).is_ok() {
                lowercase(&mut target);
                names.push(target);
            }
        }
        lowercase(&mut owner);
        names.push(owner);
        pos = data + usize::from(rdlen);
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
