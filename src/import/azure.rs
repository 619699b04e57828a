//! Azure DNS Private Resolver forwarding rulesets, as `az dns-resolver forwarding-rule
//! list --ruleset-name R -g G -o json` prints them: a list of rules, each with `name`,
//! `domainName` (with its trailing dot), `forwardingRuleState` (`Enabled` or
//! `Disabled`), `targetDnsServers` (`[{ipAddress, port}]`, tried in order) and
//! `metadata`.
//!
//! Azure's semantics, and how the routes keep them: the longest matching suffix wins
//! (so it does in zonefwd); names no rule matches are resolved by Azure DNS itself
//! (a catch-all route to 168.63.129.16, unless a "." rule takes them); and a "." rule
//! does not capture the names Azure reserves for its own services, which stay with
//! Azure DNS (a route with zonefwd's `azure` preset, the private-endpoint zones, to
//! 168.63.129.16).

use std::net::SocketAddr;

use serde_json::Value;

use super::rules::{domain, parse_json, render, target, Existing, Implicit, ImportError, Rule};

/// Azure's in-VNet resolver; it drops above 1,000 qps per VM, so routes to it keep to
/// 900.
const AZURE_DNS: SocketAddr = SocketAddr::new(crate::presets::AZURE_DNS, 53);

/// The routes for the ruleset in `text`, as TOML.
pub fn azure_ruleset(text: &str, source: &str, existing: &Existing) -> Result<String, ImportError> {
    let what = "az dns-resolver forwarding-rule list -o json";
    let rules = match parse_json(text, what)? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| rule(i, v))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ImportError::input(format!(
                "expected a list of forwarding rules, as {what} prints"
            )))
        }
    };
    let notes = [
        "Azure DNS Private Resolver semantics, kept: the longest matching suffix wins (as in zonefwd);".to_string(),
        "each rule's targets are tried in order, the first until it stops answering (zonefwd's default policy);".to_string(),
        "disabled rules are listed at the end, not routed.".to_string(),
    ];
    let limit = (AZURE_DNS.ip(), 900);
    render(
        &format!("azure-ruleset {source}"),
        &notes,
        &rules,
        &implicit(&rules),
        limit,
        existing,
    )
}

fn rule(index: usize, v: &Value) -> Result<Rule, ImportError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !v.is_object() {
        return Err(ImportError::rule(
            index,
            &name,
            "expected an object with name, domainName and targetDnsServers",
        ));
    }
    let domain = domain(v.get("domainName").and_then(Value::as_str), index, &name)?;
    let servers = v
        .get("targetDnsServers")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ImportError::rule(index, &name, "the rule has no targetDnsServers"))?;
    let targets = servers
        .iter()
        .map(|t| {
            let ip = t.get("ipAddress").and_then(Value::as_str);
            target(ip, t.get("port").and_then(Value::as_u64), index, &name)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let skipped = match v.get("forwardingRuleState").and_then(Value::as_str) {
        None | Some("Enabled") => None,
        Some("Disabled") => Some("disabled in Azure".to_string()),
        Some(other) => {
            return Err(ImportError::rule(
                index,
                &name,
                format!("forwardingRuleState {other:?}: expected \"Enabled\" or \"Disabled\""),
            ))
        }
    };
    Ok(Rule {
        index,
        name,
        domain,
        targets,
        skipped,
    })
}

/// What Azure does without a rule saying so: unmatched names to Azure DNS, or, with a
/// "." rule, Azure's own zones to Azure DNS still.
fn implicit(rules: &[Rule]) -> Vec<Implicit> {
    let routed: Vec<&str> = rules
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| r.domain.as_str())
        .collect();
    if !routed.contains(&".") {
        return vec![Implicit {
            name: "azure-dns",
            comment: "Names no rule matches: Azure resolves them itself (168.63.129.16, reachable only from inside the VNet).".to_string(),
            zones: vec![".".to_string()],
            preset: None,
            upstreams: vec![AZURE_DNS],
        }];
    }
    let preset = crate::presets::find("azure").expect("the azure preset is in the catalog");
    let zones: Vec<String> = preset.zones.iter().map(|z| z.zone.clone()).collect();
    let taken: Vec<&String> = zones
        .iter()
        .filter(|z| routed.contains(&z.as_str()))
        .collect();
    let comment = "The \".\" rule does not capture the names Azure reserves: Azure DNS (168.63.129.16) keeps them.\nzonefwd's azure preset lists the private-endpoint zones among them.";
    if taken.is_empty() {
        return vec![Implicit {
            name: "azure-reserved",
            comment: comment.to_string(),
            zones: vec![],
            preset: Some("azure"),
            upstreams: vec![AZURE_DNS],
        }];
    }
    // A rule routes one of the preset's zones itself: list the rest one by one.
    let rest = zones
        .iter()
        .filter(|z| !routed.contains(&z.as_str()))
        .cloned()
        .collect();
    vec![Implicit {
        name: "azure-reserved",
        comment: format!(
            "{comment}\nThe azure preset less the zones rules route themselves ({}).",
            taken
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        zones: rest,
        preset: None,
        upstreams: vec![AZURE_DNS],
    }]
}
