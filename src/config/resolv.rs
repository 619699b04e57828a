//! `"system"` upstreams: the nameservers of resolv.conf, and whether an address would
//! reach zonefwd itself.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;

use super::types::DNS_PORT;

/// Would sending to `upstream` reach this listener? The same address, or a wildcard
/// listener on the same port and a loopback upstream (other than systemd-resolved's
/// stub addresses, which hold their own more specific sockets).
pub(crate) fn is_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    if listen.port() != upstream.port() {
        return false;
    }
    if listen.ip() == upstream.ip() {
        return true;
    }
    listen.ip().is_unspecified()
        && listen.is_ipv4() == upstream.is_ipv4()
        && upstream.ip().is_loopback()
        && !is_resolved_stub(upstream.ip())
}

/// systemd-resolved's stub listeners: loopback addresses that are not zonefwd even
/// when it listens on 0.0.0.0.
pub(crate) fn is_resolved_stub(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 53]) || ip == IpAddr::from([127, 0, 0, 54])
}

/// The nameservers of a resolv.conf, port 53. Link-local IPv6 entries need a numeric
/// zone index (`fe80::1%2`); interface names are not resolved here.
/// The nameservers of a resolv.conf, and the entries skipped.
pub fn read_resolv_conf(path: &Path) -> Result<(Vec<SocketAddr>, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("\"system\" needs {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(ns) = words.next() else { continue };
        let addr = match ns.split_once('%') {
            None => ns
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, DNS_PORT)),
            Some((ip, zone)) => match (ip.parse::<Ipv6Addr>(), zone.parse::<u32>()) {
                (Ok(ip), Ok(zone)) => {
                    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, zone)))
                }
                _ => None,
            },
        };
        match addr {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => {}
            None => skipped.push(ns.to_string()),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "\"system\": {} lists no usable nameserver",
            path.display()
        ));
    }
    Ok((out, skipped))
}
