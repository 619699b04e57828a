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
mod codes;
mod fields;
mod frame;
mod name;
mod query;
mod relay;
mod reply;
mod synth;
#[cfg(test)]
mod tests;

pub use answers::{
    answer_addresses, answer_chain_names, answer_has_cname, is_private_address, public_addresses,
};
pub use codes::{
    rcode, CLASS_CH, CLASS_IN, EDNS_PAYLOAD, FLAG_AA, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD,
    FLAG_TC, FLAG_Z, HEADER_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_TCP_MESSAGE, MIN_UDP_PAYLOAD,
    OPCODE_MASK, OPTION_NSID, RCODE_MASK, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_AXFR, TYPE_CNAME,
    TYPE_DS, TYPE_HINFO, TYPE_IXFR, TYPE_NS, TYPE_OPT, TYPE_SOA, TYPE_TXT,
};
pub use fields::{flags, id, WireError};
pub use frame::{framed, read_framed, read_framed_after};
pub use name::{
    label_offsets, lowercase, name_from_str, name_to_string, names_equal, read_name,
    zone_to_string, NameError,
};
pub use query::{build_upstream_query, is_answerable_query, parse_query, Edns, Query, Rejection};
pub use relay::{normalize, normalized_from, render, Normalized, Ttls};
pub use reply::{freshness, parse_reply, Reply, ReplyError};
pub use synth::{
    add_identity, any_hinfo_reply, chaos_reply, error_reply, local_reply, refusal_reply, reply_for,
    truncated_reply,
};
