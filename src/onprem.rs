//! `zonefwd onprem-forwarders`: the conditional forwarders on-prem DNS servers need so
//! that every zone zonefwd sends to the cloud reaches zonefwd, and none that zonefwd
//! sends back to those servers.

use std::fmt::Write;
use std::net::IpAddr;

use crate::config::{Config, Route};
use crate::presets;
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// PowerShell for Windows DNS Server (Add-DnsServerConditionalForwarderZone).
    Windows,
    /// named.conf zone statements.
    Bind,
    /// unbound.conf forward-zone clauses.
    Unbound,
    /// A Corefile server block.
    Coredns,
    /// dnsmasq server= lines.
    Dnsmasq,
}

/// Which routes' zones on-prem DNS should send to zonefwd: those that go to the cloud.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The on-prem servers the output is for (`--onprem`); the catch-all route's
    /// upstreams count as on-prem too.
    pub onprem: Vec<IpAddr>,
    /// Cloud resolvers at addresses of their own (`--cloud`: the VPC's base address
    /// plus two), besides 168.63.129.16 and the VPC resolver's link-local addresses.
    pub cloud: Vec<IpAddr>,
}

/// A route and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its zones go to zonefwd.
    Forward,
    /// Left out, and why.
    LeftOut(String),
}

/// Each route but the catch-all, and whether on-prem DNS should forward its zones to
/// zonefwd: only routes that go to the cloud (a cloud resolver's address, a cloud
/// preset), and never one whose upstreams include an on-prem server, which would make
/// a loop (the on-prem server forwards the zone to zonefwd, zonefwd back to it).
pub fn select<'c>(config: &'c Config, selection: &Selection) -> Vec<(&'c Route, Verdict)> {
    let catch_all: Vec<IpAddr> = config
        .routes
        .iter()
        .filter(|r| r.zones.iter().any(|z| z.as_slice() == [0]))
        .flat_map(|r| r.upstreams.iter().map(|u| u.addr.ip()))
        .collect();
    let onprem = |ip: &IpAddr| selection.onprem.contains(ip) || catch_all.contains(ip);
    let cloud = |ip: IpAddr| presets::is_cloud_resolver(ip) || selection.cloud.contains(&ip);
    config
        .routes
        .iter()
        .filter(|r| r.zones.iter().any(|z| z.as_slice() != [0]))
        .map(|r| {
            let ips: Vec<IpAddr> = r.upstreams.iter().map(|u| u.addr.ip()).collect();
            let verdict = if let Some(ip) = ips.iter().find(|ip| onprem(ip)) {
                Verdict::LeftOut(format!(
                    "its upstream {ip} is an on-prem server (--onprem, or the catch-all route's upstreams): forwarding its zones to zonefwd would loop"
                ))
            } else if !r.presets.is_empty() || ips.iter().any(|ip| cloud(*ip)) {
                Verdict::Forward
            } else {
                Verdict::LeftOut(format!(
                    "its upstreams ({}) are not a cloud resolver (168.63.129.16, 169.254.169.253, fd00:ec2::253, or --cloud) and it uses no preset",
                    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
                ))
            };
            (r, verdict)
        })
        .collect()
}

/// (zone or route, route name or why): what `zones_and_left_out` lists.
type Named = Vec<(String, String)>;

/// The zones to forward, each with its route's name, and the routes left out, each
/// with why.
fn zones_and_left_out(config: &Config, selection: &Selection) -> (Named, Named) {
    let (mut zones, mut left_out) = (Vec::new(), Vec::new());
    for (r, verdict) in select(config, selection) {
        match verdict {
            Verdict::Forward => zones.extend(
                r.zones
                    .iter()
                    .filter(|z| z.as_slice() != [0])
                    .map(|z| (wire::zone_to_string(z), r.name.clone())),
            ),
            Verdict::LeftOut(why) => left_out.push((r.name.clone(), why)),
        }
    }
    (zones, left_out)
}

pub fn render(
    config: &Config,
    targets: &[IpAddr],
    selection: &Selection,
    format: Format,
) -> Result<String, String> {
    if targets.is_empty() {
        return Err("--target: at least one address of zonefwd".into());
    }
    let (zones, left_out) = zones_and_left_out(config, selection);
    if zones.is_empty() {
        let why: Vec<String> = left_out
            .iter()
            .map(|(route, why)| format!("route {route} left out: {why}"))
            .collect();
        return Err(format!(
            "{}: no route goes to the cloud: nothing to forward to zonefwd{}{}",
            config.source,
            if why.is_empty() { "" } else { "; " },
            why.join("; ")
        ));
    }
    let list = |sep: &str| {
        targets
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut s = String::new();
    let header = |s: &mut String, comment: &str| {
        let _ = writeln!(
            s,
            "{comment} Conditional forwarders to zonefwd ({}), generated from {} by zonefwd onprem-forwarders.",
            list(", "),
            config.source
        );
        let _ = writeln!(
            s,
            "{comment} {} zones; regenerate when the routes change.",
            zones.len()
        );
        for (route, why) in &left_out {
            let _ = writeln!(s, "{comment} route {route} left out: {why}");
        }
    };
    match format {
        Format::Windows => {
            header(&mut s, "#");
            let _ = writeln!(s, "# Run on each DNS server, or add -ReplicationScope Forest once for AD-integrated zones.");
            for (z, route) in &zones {
                let _ = writeln!(
                    s,
                    "Add-DnsServerConditionalForwarderZone -Name \"{z}\" -MasterServers {} -ForwarderTimeout 5 -PassThru  # route {route}",
                    list(",")
                );
            }
        }
        Format::Bind => {
            header(&mut s, "//");
            for (z, route) in &zones {
                let _ = writeln!(
                    s,
                    "zone \"{z}\" {{ type forward; forward only; forwarders {{ {}; }}; }}; // route {route}",
                    list("; ")
                );
            }
        }
        Format::Unbound => {
            header(&mut s, "#");
            for (z, route) in &zones {
                let _ = writeln!(s, "# route {route}\nforward-zone:\n  name: \"{z}.\"");
                for t in targets {
                    let _ = writeln!(s, "  forward-addr: {t}");
                }
            }
        }
        Format::Coredns => {
            header(&mut s, "#");
            let names: Vec<&str> = zones.iter().map(|(z, _)| z.as_str()).collect();
            let _ = writeln!(
                s,
                "{} {{\n    forward . {}\n    cache 30\n    errors\n}}",
                names.join(" "),
                list(" ")
            );
        }
        Format::Dnsmasq => {
            header(&mut s, "#");
            for (z, route) in &zones {
                let _ = writeln!(s, "# route {route}");
                for t in targets {
                    let _ = writeln!(s, "server=/{z}/{t}");
                }
            }
        }
    }
    Ok(s)
}
