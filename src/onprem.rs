//! `zonefwd onprem-forwarders`: the conditional forwarders on-prem DNS servers need so
//! that every zone zonefwd sends to the cloud reaches zonefwd.

use std::fmt::Write;
use std::net::IpAddr;

use crate::config::Config;
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

/// The zones of every route except the catch-all: those are what on-prem DNS must
/// send to zonefwd (the catch-all is on-prem DNS itself).
pub fn cloud_zones(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in &config.routes {
        for z in &r.zones {
            if z.as_slice() != [0] {
                out.push((
                    wire::name_to_string(z).trim_end_matches('.').to_string(),
                    r.name.clone(),
                ));
            }
        }
    }
    out
}

pub fn render(config: &Config, targets: &[IpAddr], format: Format) -> Result<String, String> {
    if targets.is_empty() {
        return Err("--target: at least one address of zonefwd".into());
    }
    let zones = cloud_zones(config);
    if zones.is_empty() {
        return Err(format!(
            "{}: no route has a zone other than \".\": nothing to forward to zonefwd",
            config.source
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
