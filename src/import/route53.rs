//! Route 53 Resolver rules, as `aws route53resolver list-resolver-rules` prints them:
//! `{"ResolverRules": [{Id, Name, DomainName, RuleType, Status, TargetIps: [{Ip, Port}]}]}`.
//!
//! The most specific rule wins (so it does in zonefwd). FORWARD rules go to their
//! targets; SYSTEM rules carve a subdomain back to the VPC resolver, whose address
//! must be given (`--vpc-resolver`); the RECURSIVE rule (the auto-defined "Internet
//! Resolver" for ".") is the catch-all to the VPC resolver, and so are names no rule
//! matches.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::rules::{domain, parse_json, render, target, Existing, Implicit, ImportError, Rule};

/// The VPC resolver's link-local address, the same in every VPC (Nitro instances).
const VPC_LINK_LOCAL: IpAddr = crate::presets::AWS_VPC_RESOLVER;

/// The routes for the rules in `text`, as TOML. `vpc_resolver`: the VPC resolver
/// (the VPC's base address plus two, or 169.254.169.253), needed by SYSTEM rules.
pub fn route53_rules(
    text: &str,
    source: &str,
    vpc_resolver: Option<IpAddr>,
    existing: &Existing,
) -> Result<String, ImportError> {
    let what = "aws route53resolver list-resolver-rules";
    let json = parse_json(text, what)?;
    let Some(items) = json.get("ResolverRules").and_then(Value::as_array) else {
        return Err(ImportError::input(format!(
            "expected an object with a \"ResolverRules\" list, as {what} prints"
        )));
    };
    let rules = items
        .iter()
        .enumerate()
        .map(|(i, v)| rule(i, v, vpc_resolver))
        .collect::<Result<Vec<_>, _>>()?;
    let vpc = SocketAddr::new(vpc_resolver.unwrap_or(VPC_LINK_LOCAL), 53);
    let mut notes = vec![
        "Route 53 Resolver semantics, kept: the most specific rule wins (as in zonefwd); SYSTEM rules go back to the VPC resolver.".to_string(),
        "list-resolver-rules lists every rule in the region, associated with this VPC or not: drop the routes of rules it does not use.".to_string(),
    ];
    if vpc_resolver.is_none() {
        notes.push(format!(
            "The VPC resolver is taken to be {VPC_LINK_LOCAL} (link-local, Nitro instances); --vpc-resolver IP names another."
        ));
    }
    let implicit = if rules.iter().any(|r| r.skipped.is_none() && r.domain == ".") {
        vec![]
    } else {
        vec![Implicit {
            name: "vpc-resolver",
            comment: "Names no rule matches: the VPC resolver answers them.".to_string(),
            zones: vec![".".to_string()],
            preset: None,
            upstreams: vec![vpc],
        }]
    };
    // 1,024 packets/s per network interface towards the VPC resolver.
    let limit = (vpc.ip(), 921);
    render(
        &format!("route53-rules {source}"),
        &notes,
        &rules,
        &implicit,
        limit,
        existing,
    )
}

fn rule(index: usize, v: &Value, vpc_resolver: Option<IpAddr>) -> Result<Rule, ImportError> {
    let str_of = |k: &str| v.get(k).and_then(Value::as_str);
    let name = str_of("Name")
        .or(str_of("Id"))
        .unwrap_or_default()
        .to_string();
    if !v.is_object() {
        return Err(ImportError::rule(
            index,
            &name,
            "expected an object with DomainName, RuleType and TargetIps",
        ));
    }
    let domain = domain(str_of("DomainName"), index, &name)?;
    let targets = match str_of("RuleType") {
        Some("FORWARD") => forward_targets(v, index, &name)?,
        Some("SYSTEM") => match vpc_resolver {
            Some(ip) => vec![SocketAddr::new(ip, 53)],
            None => {
                return Err(ImportError::rule(index, &name, format!(
                    "a SYSTEM rule sends {domain} back to the VPC resolver: give its address with --vpc-resolver IP (the VPC's base address plus two, or {VPC_LINK_LOCAL})"
                )))
            }
        },
        Some("RECURSIVE") => vec![SocketAddr::new(vpc_resolver.unwrap_or(VPC_LINK_LOCAL), 53)],
        other => {
            return Err(ImportError::rule(index, &name, format!(
                "RuleType {}: expected FORWARD, SYSTEM or RECURSIVE",
                other.map_or("missing".to_string(), |o| format!("{o:?}"))
            )))
        }
    };
    let skipped = match str_of("Status") {
        None | Some("COMPLETE") | Some("UPDATING") => None,
        Some(s) => Some(format!("status {s}")),
    };
    Ok(Rule {
        index,
        name,
        domain,
        targets,
        skipped,
    })
}

/// A FORWARD rule's `TargetIps`: `Ip` or `Ipv6`, and `Port`; DNS over HTTPS targets
/// are refused, since zonefwd speaks DNS over UDP and TCP only.
fn forward_targets(v: &Value, index: usize, name: &str) -> Result<Vec<SocketAddr>, ImportError> {
    let ips = v
        .get("TargetIps")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ImportError::rule(index, name, "a FORWARD rule without TargetIps"))?;
    ips.iter()
        .map(|t| {
            if let Some(p) = t
                .get("Protocol")
                .and_then(Value::as_str)
                .filter(|p| *p != "Do53")
            {
                return Err(ImportError::rule(
                    index,
                    name,
                    format!("target protocol {p}: zonefwd forwards over DNS (Do53) only"),
                ));
            }
            let ip = t.get("Ip").or(t.get("Ipv6")).and_then(Value::as_str);
            target(ip, t.get("Port").and_then(Value::as_u64), index, name)
        })
        .collect()
}
