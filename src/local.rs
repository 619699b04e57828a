//! `[local]` records answered by zonefwd itself, with AA set: the records of the
//! asked type; NODATA for A or AAAA when the name has only the other family (so a
//! name pinned to a private endpoint never leaks a public IPv6 address); a CNAME,
//! whose target is resolved through the route that owns it and spliced after it
//! (`LocalSplice`). Other types of such a name are forwarded as usual. Local answers
//! are not cached.

use std::collections::HashMap;

use hickory_proto::op::{Message, Query as HickoryQuery};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use crate::config::LocalRecord;
use crate::wire::{self, rcode, Query};

/// The local records by owner (lowercase wire form).
#[derive(Debug, Default)]
pub struct LocalZone {
    names: HashMap<Vec<u8>, Vec<LocalRecord>>,
}

/// What the local records say about a query.
pub enum LocalAnswer<'a> {
    /// The reply.
    Reply(Vec<u8>),
    /// A local CNAME: its target is to be resolved and spliced after it.
    Cname(&'a LocalRecord),
    /// Nothing local for this query: it goes on to its route.
    Elsewhere,
}

impl LocalZone {
    pub fn new(records: &[LocalRecord]) -> Self {
        let mut names: HashMap<Vec<u8>, Vec<LocalRecord>> = HashMap::new();
        for r in records {
            names.entry(r.name.clone()).or_default().push(r.clone());
        }
        LocalZone { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn answer(&self, q: &Query) -> LocalAnswer<'_> {
        let Some(records) = self.names.get(&q.qname_lower) else {
            return LocalAnswer::Elsewhere;
        };
        if q.qclass != wire::CLASS_IN {
            return LocalAnswer::Elsewhere;
        }
        match decide(records.iter(), q.qtype) {
            Decision::Records(matching) => {
                let matching: Vec<(u16, u32, &[u8])> = matching
                    .iter()
                    .map(|r| (r.rtype, r.ttl, r.rdata.as_slice()))
                    .collect();
                LocalAnswer::Reply(wire::local_reply(q, &matching))
            }
            Decision::Cname(cname) => LocalAnswer::Cname(cname),
            Decision::NoData => LocalAnswer::Reply(wire::local_reply(q, &[])),
            Decision::Elsewhere => LocalAnswer::Elsewhere,
        }
    }
}

/// What one name's local records decide for a type: the rule the answers and
/// `explain` both follow.
pub enum Decision<'a> {
    /// Records of the asked type.
    Records(Vec<&'a LocalRecord>),
    /// A CNAME, for any other type.
    Cname(&'a LocalRecord),
    /// A or AAAA asked, only the other family given.
    NoData,
    /// Nothing local: the query goes to its route.
    Elsewhere,
}

/// The decision for `qtype` among the records of one name.
pub fn decide<'a>(
    records: impl Iterator<Item = &'a LocalRecord> + Clone,
    qtype: u16,
) -> Decision<'a> {
    let matching: Vec<&LocalRecord> = records.clone().filter(|r| r.rtype == qtype).collect();
    if !matching.is_empty() {
        return Decision::Records(matching);
    }
    if let Some(cname) = records.clone().find(|r| r.rtype == wire::TYPE_CNAME) {
        return Decision::Cname(cname);
    }
    let address = |t: u16| t == wire::TYPE_A || t == wire::TYPE_AAAA;
    if address(qtype) && records.clone().any(|r| address(r.rtype)) {
        return Decision::NoData;
    }
    Decision::Elsewhere
}

/// A local CNAME's answer in the making: the client's query, and the CNAME to put
/// before the target's answer.
#[derive(Debug)]
pub struct LocalSplice {
    pub client: Query,
    pub cname: Record,
}

impl LocalSplice {
    /// The query for the CNAME's target, asked in the client's stead.
    pub fn target_query(client: &Query, cname: &LocalRecord) -> Option<Query> {
        let target = match &cname.record.data {
            hickory_proto::rr::RData::CNAME(c) => c.0.to_bytes().ok()?,
            _ => return None,
        };
        let mut lower = target.clone();
        wire::lowercase(&mut lower);
        Some(Query {
            qname: target,
            qname_lower: lower,
            ..client.clone()
        })
    }

    /// The client's reply from an answer made inline for the target (a cache hit, or
    /// a refusal): an answer (NOERROR or NXDOMAIN) is spliced; anything else is the
    /// same rcode for the client's own question.
    pub fn finish_inline(&self, target_reply: &[u8], limit: usize) -> Vec<u8> {
        let code = target_reply
            .get(3)
            .map_or(rcode::SERVFAIL, |b| u16::from(b & 0x0f));
        match code {
            rcode::NOERROR | rcode::NXDOMAIN => self.splice(target_reply, limit),
            other => wire::reply_for(&self.client, other),
        }
    }

    /// The client's reply: its question, the local CNAME, then the target's answer as
    /// `target_reply` (rendered for the target query) holds it; within `limit`, or
    /// truncated.
    pub fn splice(&self, target_reply: &[u8], limit: usize) -> Vec<u8> {
        let client = &self.client;
        let spliced = Message::from_vec(target_reply).ok().and_then(|mut msg| {
            let name = Name::from_bytes(&client.qname).ok()?;
            let mut question = HickoryQuery::query(name.clone(), RecordType::from(client.qtype));
            question.set_query_class(DNSClass::from(client.qclass));
            msg.queries = vec![question];
            let mut cname = self.cname.clone();
            cname.name = name;
            msg.answers.insert(0, cname);
            // The CNAME is ours; the rest is the upstream's.
            msg.metadata.authoritative = false;
            msg.metadata.id = client.id;
            let mut out = msg.to_vec().ok()?;
            // hickory writes names lowercase; the question (uncompressed at offset 12,
            // the message's first name) gets the client's spelling back (RFC 1035 7.3).
            let question = out.get_mut(wire::HEADER_LEN..wire::HEADER_LEN + client.qname.len())?;
            if question.eq_ignore_ascii_case(&client.qname) {
                question.copy_from_slice(&client.qname);
            }
            Some(out)
        });
        match spliced {
            Some(out) if out.len() <= limit => out,
            Some(_) => wire::truncated_reply(client),
            None => wire::reply_for(client, rcode::SERVFAIL),
        }
    }
}
