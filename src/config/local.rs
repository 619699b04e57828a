//! `[local]`: names zonefwd answers itself, from zone-file lines (`records`, parsed by
//! hickory-proto's zone-file parser) and hosts(5) files (`hosts`, each address also
//! answering its PTR). Errors are located: file:line:column for a record line,
//! file:line for a hosts file.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;
use toml::Spanned;

use super::error::{ConfigError, SourceText};
use super::types::LocalRecord;

/// The TTL of the records a hosts file gives (hosts(5) has none).
pub const HOSTS_TTL: u32 = 300;

/// `records`: one zone-file line each, absolute names, class IN.
pub(super) fn parse_records(
    list: Spanned<Vec<Spanned<String>>>,
    src: &SourceText<'_>,
) -> Result<Vec<LocalRecord>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in list.into_inner().into_iter().enumerate() {
        let key = format!("local.records[{i}]");
        let fail = |m: String| src.error(line.span(), &key, m);
        let text = line.get_ref().trim();
        if text.starts_with('$') {
            return Err(fail(
                "one record per line: no $ORIGIN, $TTL or $INCLUDE".into(),
            ));
        }
        let (_, sets) = Parser::new(text, None, Some(Name::root()))
            .parse()
            .map_err(|e| fail(format!("not a zone-file record: {e}")))?;
        let records: Vec<Record> = sets
            .into_values()
            .flat_map(|s| s.records_without_rrsigs().cloned().collect::<Vec<_>>())
            .collect();
        if records.len() != 1 {
            return Err(fail(format!(
                "one record per line, found {}",
                records.len()
            )));
        }
        out.push(local_record(records.into_iter().next().expect("one")).map_err(fail)?);
    }
    Ok(out)
}

/// `hosts`: hosts(5) files, relative to the configuration file's directory. Each
/// address answers for each of its names, and its PTR names the first.
pub(super) fn read_hosts(
    list: Spanned<Vec<Spanned<String>>>,
    src: &SourceText<'_>,
) -> Result<Vec<LocalRecord>, ConfigError> {
    let base = Path::new(src.file).parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for (i, path) in list.into_inner().into_iter().enumerate() {
        let file = base.join(path.get_ref()).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| {
            src.error(
                path.span(),
                &format!("local.hosts[{i}]"),
                format!("{file}: {e}"),
            )
        })?;
        let hosts = SourceText {
            file: &file,
            text: &text,
        };
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let span = offset..offset + line.trim_end().len();
            offset += line.len();
            let content = line.split('#').next().unwrap_or("");
            let mut words = content.split_whitespace();
            let Some(addr) = words.next() else { continue };
            let fail = |m: String| hosts.error(span.clone(), "", m);
            let ip = IpAddr::from_str(addr)
                .map_err(|_| fail(format!("{addr:?} is not an IP address")))?;
            let names: Vec<&str> = words.collect();
            if names.is_empty() {
                return Err(fail(format!("{addr} has no host name")));
            }
            for (j, name) in names.iter().enumerate() {
                let owner = Name::from_ascii(name)
                    .map(|mut n| {
                        n.set_fqdn(true);
                        n
                    })
                    .map_err(|e| fail(format!("{name:?} is not a host name: {e}")))?;
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                out.push(
                    local_record(Record::from_rdata(owner.clone(), HOSTS_TTL, rdata))
                        .map_err(fail)?,
                );
                if j == 0 {
                    let reverse = Name::from(ip);
                    let ptr = Record::from_rdata(reverse, HOSTS_TTL, RData::PTR(PTR(owner)));
                    out.push(local_record(ptr).map_err(fail)?);
                }
            }
        }
    }
    Ok(out)
}

/// The record with its owner and RDATA in wire form (names uncompressed, so the RDATA
/// can stand in any reply).
fn local_record(record: Record) -> Result<LocalRecord, String> {
    if record.dns_class != DNSClass::IN {
        return Err(format!(
            "class {}: local records are class IN",
            record.dns_class
        ));
    }
    let mut name = record
        .name
        .to_lowercase()
        .to_bytes()
        .map_err(|e| e.to_string())?;
    crate::wire::lowercase(&mut name);
    let mut rdata = Vec::new();
    let mut enc = BinEncoder::new(&mut rdata);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    record.data.emit(&mut enc).map_err(|e| e.to_string())?;
    Ok(LocalRecord {
        name,
        rtype: u16::from(record.record_type()),
        ttl: record.ttl,
        rdata,
        record,
    })
}
