//! Domain names in wire form: read through compression pointers (only backwards,
//! never onto TTL octets), folded, compared, printed and parsed.
use super::codes::{HEADER_LEN, MAX_LABEL_LEN, MAX_NAME_LEN};
use super::fields::WireError;

/// Reads the (possibly compressed) name at `pos`, appending its uncompressed wire form
/// to `out` when given. Returns the position just after the name as it is stored.
pub fn read_name(msg: &[u8], start: usize, out: Option<&mut Vec<u8>>) -> Result<usize, WireError> {
    read_name_avoiding(msg, start, out, &[])
}

/// Octets [from, to) reached through a compression pointer while reading the name that
/// starts at `name_start` may be used: they lie wholly before that name (a pointer
/// refers to an earlier, complete name, RFC 1035 4.1.4) and outside every TTL field.
pub(super) fn earlier_name_bytes(ttls: &[u16], name_start: usize, from: usize, to: usize) -> bool {
    to <= name_start && !touches_ttl(ttls, from, to)
}

/// Whether [start, end) touches any of the 4-octet TTL fields at `ttls` (ascending).
pub(super) fn touches_ttl(ttls: &[u16], start: usize, end: usize) -> bool {
    let i = ttls.partition_point(|&o| usize::from(o) + 4 <= start);
    ttls.get(i).is_some_and(|&o| usize::from(o) < end)
}

/// `read_name`, refusing names that are read, through a compression pointer, out of a
/// TTL field. zonefwd rewrites TTLs (clamping, ageing), so a name aliased onto TTL
/// octets would change meaning after it was validated; real compression points only
/// at earlier names.
pub(super) fn read_name_avoiding(
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
                if target >= floor || target < HEADER_LEN || inside_a_question_label(msg, target) {
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

/// Whether `target` falls inside a label of the question name (which starts at the
/// header's end) rather than on one of its label boundaries. zonefwd writes each
/// client's spelling of the question back over it (0x20 randomisation, RFC 1035 7.3):
/// a name read from the middle of a label could take a letter there for a length or
/// a pointer octet and change meaning when the case changes. Real compression points
/// at whole names.
fn inside_a_question_label(msg: &[u8], target: usize) -> bool {
    let mut at = HEADER_LEN;
    while at < target {
        match msg.get(at) {
            Some(&l) if l != 0 && l & 0xc0 == 0 => at += 1 + usize::from(l),
            // Past the question's root label (or not a plain label): after the name.
            _ => return false,
        }
    }
    at > target
}

/// ASCII-lowercases a wire-format name in place (RFC 4343: only A-Z fold). The
/// length octets are below 64, outside A-Z, so folding the whole name leaves them as
/// they are and needs no walk of the labels.
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

/// A zone as configuration files and other servers' configurations write it: no
/// trailing dot, and "." for the root.
pub fn zone_to_string(zone: &[u8]) -> String {
    if zone == [0] {
        ".".to_string()
    } else {
        name_to_string(zone).trim_end_matches('.').to_string()
    }
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
