//! The zone presets catalog (`presets/catalog.toml`, embedded at build time): which
//! zones a route must send to a cloud's resolver for private endpoints to resolve.

use std::sync::OnceLock;

use serde::Deserialize;

use crate::wire;

const CATALOG: &str = include_str!("../presets/catalog.toml");

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
    pub note: String,
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
        out.push_str(&format!(
            "{:<width$}  # {} ({})\n",
            e.zone, e.note, e.private
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
        assert!(show_text(azure).contains("privatelink.blob.core.windows.net"));
        assert!(list_text().contains("azure-china"));
    }
}
