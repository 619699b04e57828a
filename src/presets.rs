//! The zone presets catalog (`presets/catalog.toml`, embedded at build time): which
//! zones a route must send to a cloud's resolver for private endpoints to resolve.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::wire;

const CATALOG: &str = include_str!("../presets/catalog.toml");

/// Azure's in-network resolver, the same address in every VNet and cloud.
pub const AZURE_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16));
/// The Route 53 VPC resolver at its link-local address, the same in every VPC (Nitro
/// instances; it is also at the VPC's base address plus two, which differs per VPC).
pub const AWS_VPC_RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253));
/// The same over IPv6.
pub const AWS_VPC_RESOLVER_V6: IpAddr =
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253));

/// Whether `ip` is a cloud's in-network resolver at an address every network shares.
pub fn is_cloud_resolver(ip: IpAddr) -> bool {
    [AZURE_DNS, AWS_VPC_RESOLVER, AWS_VPC_RESOLVER_V6].contains(&ip)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u32,
    pub updated: String,
    #[serde(rename = "preset")]
    pub presets: Vec<Preset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    /// The cloud, and the resolver the route should point at.
    pub cloud: String,
    pub zones: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The zone to forward (the public parent of the private zone).
    pub zone: String,
    /// The private DNS zone the service's records live in (may name a placeholder
    /// such as `<region>`).
    pub private: String,
    /// Whether `private` is a private DNS zone, every name of which should resolve to
    /// private addresses (false: a public name the cloud resolver answers privately).
    #[serde(default = "is_private_zone")]
    pub private_zone: bool,
    pub note: String,
}

fn is_private_zone() -> bool {
    true
}

/// A zone name whose labels may be `<...>` placeholders, each standing for any one
/// label: `privatelink.<region>.azmk8s.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonePattern {
    /// Lowercase labels, the root-most first; `None` for a placeholder.
    labels: Vec<Option<Vec<u8>>>,
}

impl ZonePattern {
    pub fn parse(text: &str) -> ZonePattern {
        ZonePattern {
            labels: text
                .trim_end_matches('.')
                .split('.')
                .rev()
                .filter(|l| !l.is_empty())
                .map(|l| (!l.contains('<')).then(|| l.to_ascii_lowercase().into_bytes()))
                .collect(),
        }
    }

    /// The zone of a lowercase wire name, the root itself being no pattern.
    pub fn of_wire(name: &[u8]) -> ZonePattern {
        ZonePattern {
            labels: wire_labels(name)
                .into_iter()
                .map(|l| Some(l.to_vec()))
                .collect(),
        }
    }

    /// Whether `name` (wire form, lowercase) is at or below this zone.
    pub fn contains(&self, name: &[u8]) -> bool {
        let labels = wire_labels(name);
        labels.len() >= self.labels.len()
            && self
                .labels
                .iter()
                .zip(&labels)
                .all(|(want, got)| want.as_deref().is_none_or(|w| w == *got))
    }
}

/// A wire name's labels, the root-most first.
fn wire_labels(name: &[u8]) -> Vec<&[u8]> {
    let mut labels: Vec<&[u8]> = wire::label_offsets(name)
        .map(|at| &name[at + 1..at + 1 + usize::from(name[at])])
        .collect();
    labels.reverse();
    labels
}

/// Every private DNS zone of the catalog, whichever preset lists it: a zone listed by
/// hand is recognised as well as one a preset brought.
pub fn private_zones() -> &'static [ZonePattern] {
    static Z: OnceLock<Vec<ZonePattern>> = OnceLock::new();
    Z.get_or_init(|| {
        catalog()
            .presets
            .iter()
            .flat_map(|p| &p.zones)
            .filter(|e| e.private_zone)
            .map(|e| ZonePattern::parse(&e.private))
            .collect()
    })
}

/// Whether the lowercase wire zone `zone` is one the catalog forwards as a public
/// zone (so that a CNAME into its private zone is followed), and not itself private.
pub fn is_public_forward_zone(zone: &[u8]) -> bool {
    static Z: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let public = Z.get_or_init(|| {
        catalog()
            .presets
            .iter()
            .flat_map(|p| p.wire_zones())
            .collect()
    });
    public.iter().any(|p| wire::names_equal(p, zone))
        && !private_zones().iter().any(|p| p.contains(zone))
}

/// The embedded catalog. It is checked by a unit test, so a bad edit fails the build's
/// tests rather than a user's configuration.
pub fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(|| toml::from_str(CATALOG).expect("presets/catalog.toml is valid"))
}

pub fn find(name: &str) -> Option<&'static Preset> {
    catalog().presets.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    catalog().presets.iter().map(|p| p.name.as_str()).collect()
}

impl Preset {
    /// The zones to forward, as lowercase wire names.
    pub fn wire_zones(&self) -> Vec<Vec<u8>> {
        self.zones
            .iter()
            .map(|e| wire::name_from_str(&e.zone).expect("catalog zones are valid names"))
            .collect()
    }
}

/// `zonefwd presets`: every preset, one line each.
pub fn list_text() -> String {
    let c = catalog();
    let mut out = format!(
        "zone presets (catalog version {}, updated {}):\n",
        c.version, c.updated
    );
    for p in &c.presets {
        out.push_str(&format!(
            "  {:<18} {:>3} zones  {}\n",
            p.name,
            p.zones.len(),
            p.cloud
        ));
    }
    out.push_str("\nzonefwd presets NAME prints a preset's zones; a route uses them with presets = [\"NAME\"].\n");
    out
}

/// `zonefwd presets NAME`: the zones, each with its private zone and a note.
pub fn show_text(p: &Preset) -> String {
    let mut out = format!("# {}: {}\n", p.name, p.cloud);
    let width = p.zones.iter().map(|e| e.zone.len()).max().unwrap_or(0);
    for e in &p.zones {
        let private = if e.private_zone {
            format!("private zone {}", e.private)
        } else {
            format!("{}, answered privately: no private zone", e.private)
        };
        out.push_str(&format!("{:<width$}  # {} ({private})\n", e.zone, e.note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn w(s: &str) -> Vec<u8> {
        wire::name_from_str(s).unwrap()
    }

    #[test]
    fn zone_patterns_match_at_and_below_with_placeholders_as_any_label() {
        // (pattern, name, contained)
        let cases = [
            (
                "privatelink.blob.core.windows.net",
                "acct.privatelink.blob.core.windows.net.",
                true,
            ),
            (
                "privatelink.blob.core.windows.net",
                "privatelink.blob.core.windows.net.",
                true,
            ),
            (
                "privatelink.blob.core.windows.net",
                "acct.blob.core.windows.net.",
                false,
            ),
            (
                "privatelink.<region>.azmk8s.io",
                "x-1a2b.privatelink.westeurope.azmk8s.io.",
                true,
            ),
            (
                "privatelink.<region>.azmk8s.io",
                "x-1a2b.hcp.westeurope.azmk8s.io.",
                false,
            ),
            (
                "ip-<a-b-c-d>.<region>.compute.internal",
                "ip-10-0-0-1.eu-west-1.compute.internal.",
                true,
            ),
            (
                "privatelink.<region>.azmk8s.io",
                "westeurope.azmk8s.io.",
                false,
            ),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                ZonePattern::parse(pattern).contains(&w(name)),
                want,
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn the_public_forward_zones_are_told_from_the_private_ones() {
        assert!(is_public_forward_zone(&w("blob.core.windows.net")));
        assert!(is_public_forward_zone(&w("azmk8s.io")));
        assert!(!is_public_forward_zone(&w(
            "privatelink.blob.core.windows.net"
        )));
        assert!(!is_public_forward_zone(&w("corp.example")));
        assert!(private_zones()
            .iter()
            .any(|p| p.contains(&w("a.privatelink.vaultcore.azure.net."))));
        assert!(
            !private_zones()
                .iter()
                .any(|p| p.contains(&w("sqs.eu-west-1.amazonaws.com."))),
            "an AWS interface endpoint's name is public"
        );
    }

    #[test]
    fn the_catalog_loads_and_every_entry_is_a_valid_distinct_name() {
        let c = catalog();
        assert!(c.version >= 1);
        let names: Vec<_> = names();
        for want in ["azure", "azure-government", "azure-china", "aws"] {
            assert!(names.contains(&want), "{want} missing");
        }
        for p in &c.presets {
            assert!(!p.zones.is_empty(), "{} is empty", p.name);
            let mut seen = HashSet::new();
            for e in &p.zones {
                let w = wire::name_from_str(&e.zone)
                    .unwrap_or_else(|err| panic!("{}: {:?}: {err}", p.name, e.zone));
                assert!(w.len() > 1, "{}: the root is not a preset zone", p.name);
                assert_eq!(e.zone, e.zone.to_ascii_lowercase(), "{}", e.zone);
                assert!(
                    !e.zone.ends_with('.'),
                    "{}: write zones without the final dot",
                    e.zone
                );
                assert!(seen.insert(w), "{}: {} listed twice", p.name, e.zone);
                assert!(!e.note.is_empty());
                // The private zone sits under the forwarded one, so forwarding the
                // public zone covers it (placeholders aside).
                let private = e
                    .private
                    .replace("<region>", "r")
                    .replace("<service>", "s")
                    .replace("<id>", "i")
                    .replace("<xx>", "x")
                    .replace("<a-b-c-d>", "a");
                assert!(
                    private == e.zone
                        || private.ends_with(&format!(".{}", e.zone))
                        || p.zones
                            .iter()
                            .any(|o| private.ends_with(&format!(".{}", o.zone))),
                    "{}: {} is not under any zone of the preset",
                    p.name,
                    e.private
                );
            }
        }
        let azure = find("azure").unwrap();
        let zones: Vec<&str> = azure.zones.iter().map(|e| e.zone.as_str()).collect();
        for z in [
            "blob.core.windows.net",
            "azmk8s.io",
            "database.windows.net",
            "vaultcore.azure.net",
        ] {
            assert!(zones.contains(&z), "{z}");
        }
        assert!(show_text(azure).contains("private zone privatelink.blob.core.windows.net"));
        assert!(list_text().contains("azure-china"));
    }
}
