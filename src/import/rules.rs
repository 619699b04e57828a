//! The rules of a managed resolver as zonefwd reads them (`Rule`, `ImportError` and
//! the JSON helpers both importers share), what an existing configuration already
//! routes (`Existing`), and `render`, which writes the rules as `[[route]]` tables.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use crate::wire;

/// One rule as the managed resolver states it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its place in the input, from 0.
    pub index: usize,
    pub name: String,
    /// Lowercase, without the trailing dot; "." for the root.
    pub domain: String,
    pub targets: Vec<SocketAddr>,
    /// Why the rule is not routed (disabled, not active), if it is not.
    pub skipped: Option<String>,
}

/// A bad input: the rule it is about, if any, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", at.as_ref().map(|(i, n)| format!("rule {i} ({n:?}): ")).unwrap_or_default())]
pub struct ImportError {
    pub at: Option<(usize, String)>,
    pub message: String,
}

impl ImportError {
    pub(super) fn input(message: impl Into<String>) -> Self {
        ImportError {
            at: None,
            message: message.into(),
        }
    }

    pub(super) fn rule(index: usize, name: &str, message: impl Into<String>) -> Self {
        ImportError {
            at: Some((index, name.to_string())),
            message: message.into(),
        }
    }
}

/// A route the import adds beside the rules' own: the managed resolver's implicit
/// behaviour made explicit (Azure DNS for unmatched names, say).
#[derive(Debug, Clone)]
pub struct Implicit {
    pub name: &'static str,
    pub comment: String,
    /// `zones = [...]`, or `presets = [...]` when `preset` is set.
    pub zones: Vec<String>,
    pub preset: Option<&'static str>,
    pub upstreams: Vec<SocketAddr>,
}

/// The configuration the import is to fit (`--config PATH`): the zones it routes and
/// its route names. Empty: nothing to fit.
#[derive(Debug, Default)]
pub struct Existing {
    source: String,
    /// zone (lowercase, no trailing dot, "." for the root) -> the route that has it.
    zones: HashMap<String, String>,
    names: Vec<String>,
}

impl Existing {
    pub fn of(config: &crate::config::Config) -> Existing {
        let mut zones = HashMap::new();
        for r in &config.routes {
            for z in &r.zones {
                zones.insert(wire::zone_to_string(z), r.name.clone());
            }
        }
        Existing {
            source: config.source.clone(),
            zones,
            names: config.routes.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// The route of the configuration that routes `zone`, if one does.
    fn route_of(&self, zone: &str) -> Option<&str> {
        self.zones.get(zone).map(String::as_str)
    }

    fn left_out(&self, zone: &str, route: &str) -> String {
        format!(
            "left out: {zone} is routed by route {route:?} of {}",
            self.source
        )
    }

    /// Whether the output keeps `zone`: not when the configuration routes it, which a
    /// comment then says.
    fn keeps(&self, zone: &str, comments: &mut Vec<String>) -> bool {
        match self.route_of(zone) {
            Some(route) => {
                comments.push(self.left_out(zone, route));
                false
            }
            None => true,
        }
    }

    /// `zones` less those the configuration routes; a comment for each left out.
    fn fit(&self, zones: Vec<String>, comments: &mut Vec<String>) -> Vec<String> {
        zones
            .into_iter()
            .filter(|z| self.keeps(z, comments))
            .collect()
    }

    /// An implicit route made to fit: a preset the configuration routes part of
    /// becomes the list of the rest; `None` when nothing is left.
    fn fit_implicit(&self, i: &Implicit, comments: &mut Vec<String>) -> Option<Implicit> {
        let zones = match i.preset {
            Some(p) if self.zones.is_empty() => {
                return Some(Implicit {
                    preset: Some(p),
                    ..i.clone()
                })
            }
            Some(p) => crate::presets::find(p)
                .map(|p| p.zones.iter().map(|z| z.zone.clone()).collect())
                .unwrap_or_default(),
            None => i.zones.clone(),
        };
        let rest = self.fit(zones, comments);
        (!rest.is_empty()).then(|| Implicit {
            zones: rest,
            preset: None,
            ..i.clone()
        })
    }
}

/// The JSON text, or an error saying it is not JSON.
pub(super) fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, ImportError> {
    serde_json::from_str(text)
        .map_err(|e| ImportError::input(format!("not JSON ({e}): expected the output of {what}")))
}

/// A rule's domain as a zone: lowercase, no trailing dot, a valid name.
pub(super) fn domain(raw: Option<&str>, index: usize, name: &str) -> Result<String, ImportError> {
    let raw = raw
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ImportError::rule(index, name, "the rule has no domain name"))?;
    if raw == "." {
        return Ok(".".to_string());
    }
    let d = raw.trim_end_matches('.').to_ascii_lowercase();
    wire::name_from_str(&d).map_err(|e| {
        ImportError::rule(
            index,
            name,
            format!("domain {raw:?} is not a DNS name: {e}"),
        )
    })?;
    Ok(d)
}

/// One target: an IP address (not a host name) and a port, 53 when absent.
pub(super) fn target(
    ip: Option<&str>,
    port: Option<u64>,
    index: usize,
    name: &str,
) -> Result<SocketAddr, ImportError> {
    let ip_text = ip.unwrap_or_default();
    let ip: IpAddr = ip_text.parse().map_err(|_| {
        ImportError::rule(
            index,
            name,
            format!("target {ip_text:?} is not an IP address"),
        )
    })?;
    let port = match port {
        None => 53,
        Some(p @ 1..=65535) => p as u16,
        Some(p) => {
            return Err(ImportError::rule(
                index,
                name,
                format!("target {ip}: port {p} is not a port"),
            ))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// A cloud resolver among the targets, and the `max_qps` that keeps under its limit
/// (90% of it, as `doctor` advises).
pub type CloudLimit = (IpAddr, u32);

/// The TOML for `rules` and the `implicit` routes, after a header of `notes`, fit
/// to `existing`.
pub fn render(
    source: &str,
    notes: &[String],
    rules: &[Rule],
    implicit: &[Implicit],
    cloud: CloudLimit,
    existing: &Existing,
) -> Result<String, ImportError> {
    check_conflicts(rules)?;
    let mut out = String::new();
    let routed = rules.iter().filter(|r| r.skipped.is_none()).count();
    let _ = writeln!(
        out,
        "# Imported by `zonefwd import {source}`: {} rules, {routed} routed.",
        rules.len()
    );
    for n in notes {
        let _ = writeln!(out, "# {n}");
    }
    if !existing.source.is_empty() {
        let _ = writeln!(
            out,
            "# Fit to {} as a fragment: the zones it routes are left out below.",
            existing.source
        );
    }
    let mut names = Names(existing.names.clone());
    let mut comments = Vec::new();
    for group in groups(rules) {
        let group: Vec<&Rule> = group
            .into_iter()
            .filter(|r| existing.keeps(&r.domain, &mut comments))
            .collect();
        if !group.is_empty() {
            out.push('\n');
            write_group(&mut out, &mut names, &group, cloud);
        }
    }
    for i in implicit {
        if let Some(i) = existing.fit_implicit(i, &mut comments) {
            out.push('\n');
            write_implicit(&mut out, &mut names, &i, cloud);
        }
    }
    let skipped: Vec<&Rule> = rules.iter().filter(|r| r.skipped.is_some()).collect();
    if !skipped.is_empty() || !comments.is_empty() {
        out.push('\n');
    }
    for c in comments {
        let _ = writeln!(out, "# {c}");
    }
    for r in skipped {
        let _ = writeln!(
            out,
            "# not routed, {}: rule {} {:?}: {} -> {}",
            r.skipped.as_deref().unwrap_or_default(),
            r.index,
            r.name,
            r.domain,
            list(&r.targets)
        );
    }
    Ok(out)
}

/// A domain routed by two rules to different targets is an error; the same targets
/// twice is one route.
fn check_conflicts(rules: &[Rule]) -> Result<(), ImportError> {
    let mut first: HashMap<&str, &Rule> = HashMap::new();
    for r in rules.iter().filter(|r| r.skipped.is_none()) {
        match first.get(r.domain.as_str()) {
            Some(f) if f.targets != r.targets => {
                return Err(ImportError::rule(
                    r.index,
                    &r.name,
                    format!(
                        "domain {} is routed by rule {} ({:?}) to {}, and here to {}: keep one",
                        r.domain,
                        f.index,
                        f.name,
                        list(&f.targets),
                        list(&r.targets)
                    ),
                ))
            }
            Some(_) => {}
            None => {
                first.insert(&r.domain, r);
            }
        }
    }
    Ok(())
}

/// The routed rules grouped by target list, in the order each list first appears.
fn groups(rules: &[Rule]) -> Vec<Vec<&Rule>> {
    let mut groups: Vec<Vec<&Rule>> = Vec::new();
    for r in rules.iter().filter(|r| r.skipped.is_none()) {
        match groups.iter_mut().find(|g| g[0].targets == r.targets) {
            Some(g) if g.iter().any(|x| x.domain == r.domain) => {}
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
}

fn write_group(out: &mut String, names: &mut Names, group: &[&Rule], cloud: CloudLimit) {
    let rules: Vec<String> = group
        .iter()
        .map(|r| format!("{:?} ({})", r.name, r.domain))
        .collect();
    let _ = writeln!(out, "# rules: {}", rules.join(", "));
    let zones: Vec<String> = group.iter().map(|r| r.domain.clone()).collect();
    let name = names.unique(&group[0].name);
    write_route(out, &name, ("zones", &zones), &group[0].targets, cloud);
}

fn write_implicit(out: &mut String, names: &mut Names, i: &Implicit, cloud: CloudLimit) {
    for line in i.comment.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let name = names.unique(i.name);
    match i.preset {
        Some(p) => write_route(
            out,
            &name,
            ("presets", &[p.to_string()]),
            &i.upstreams,
            cloud,
        ),
        None => write_route(out, &name, ("zones", &i.zones), &i.upstreams, cloud),
    }
}

/// One `[[route]]`: `zones` is the key (`zones` or `presets`) and its values.
fn write_route(
    out: &mut String,
    name: &str,
    (key, zones): (&str, &[String]),
    upstreams: &[SocketAddr],
    (cloud, max_qps): CloudLimit,
) {
    let quoted = |v: &[String]| -> String {
        let q: Vec<String> = v
            .iter()
            .map(|s| toml::Value::String(s.clone()).to_string())
            .collect();
        q.join(", ")
    };
    let ups: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "[[route]]");
    let _ = writeln!(out, "name = {}", toml::Value::String(name.to_string()));
    let _ = writeln!(out, "{key} = [{}]", quoted(zones));
    let _ = writeln!(out, "upstreams = [{}]", quoted(&ups));
    if upstreams.iter().any(|u| u.ip() == cloud) {
        let _ = writeln!(
            out,
            "# {cloud} drops what exceeds its limit: zonefwd keeps under it"
        );
        let _ = writeln!(out, "max_qps = {max_qps}");
    }
}

fn list(targets: &[SocketAddr]) -> String {
    let t: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
    t.join(", ")
}

/// Route names: a rule's name made fit for zonefwd (letters, digits, '-', '_', '.'),
/// unique among the routes printed.
#[derive(Default)]
struct Names(Vec<String>);

impl Names {
    fn unique(&mut self, raw: &str) -> String {
        let mut base: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if base.is_empty() {
            base = "rule".to_string();
        }
        let mut name = base.clone();
        let mut n = 2;
        while self.0.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.0.push(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_made_fit_and_unique() {
        let mut n = Names::default();
        assert_eq!(n.unique("corp rules/ä"), "corp-rules--");
        assert_eq!(n.unique("corp rules/ä"), "corp-rules---2");
        assert_eq!(n.unique(""), "rule");
    }
}
