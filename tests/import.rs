//! `zonefwd import azure-ruleset` and `import route53-rules`: the managed resolvers'
//! rules as routes. The fixtures follow the two CLIs' documented output, extra fields
//! included. Each import must pass `check` and route every imported domain to its
//! rule's targets, as `explain` says.

mod common;

use std::path::Path;

use common::zonefwd_cli;

const AZURE: &str = "tests/fixtures/azure-ruleset.json";
const ROUTE53: &str = "tests/fixtures/route53-rules.json";

/// The import's TOML, taken as a fragment by a main file; returns that file.
fn imported(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let (code, out, err) = zonefwd_cli(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    std::fs::write(dir.join("imported.toml"), out).unwrap();
    let main = dir.join("zonefwd.toml");
    std::fs::write(
        &main,
        "include = [\"imported.toml\"]\n[server]\nlisten = [\"127.0.0.1:5300\"]\n",
    )
    .unwrap();
    main
}

/// What `explain NAME` prints as the try order, e.g. "1. 10.0.0.1:53  2. 10.0.0.2:53".
fn try_order(main: &Path, name: &str) -> String {
    let (code, out, err) = zonefwd_cli(&["explain", "-c", main.to_str().unwrap(), name]);
    assert_eq!(code, 0, "explain {name}: {err}");
    out.lines()
        .find_map(|l| l.strip_prefix("try order"))
        .unwrap_or_else(|| panic!("explain {name}: {out}"))
        .trim()
        .to_string()
}

fn check_passes(main: &Path) {
    let (code, out, err) = zonefwd_cli(&["check", "-c", main.to_str().unwrap()]);
    assert_eq!(code, 0, "check: {out}{err}");
}

#[test]
fn an_azure_ruleset_routes_each_domain_to_its_rules_targets() {
    let dir = tempfile::tempdir().unwrap();
    let main = imported(dir.path(), &["import", "azure-ruleset", AZURE]);
    check_passes(&main);
    for (name, order) in [
        ("web.corp.contoso.com", "1. 10.10.0.4:53  2. 10.10.0.5:53"),
        ("lab.contoso.com", "1. 10.10.0.4:53  2. 10.10.0.5:53"),
        ("db.fabrikam.internal", "1. 192.168.50.10:5353"),
        // The "." rule is the catch-all; the disabled rule's domain falls to it.
        ("www.example.org", "1. 10.20.0.53:53"),
        ("host.old.contoso.com", "1. 10.20.0.53:53"),
        // Azure's reserved names stay with Azure DNS despite the "." rule.
        (
            "acct.privatelink.blob.core.windows.net",
            "1. 168.63.129.16:53",
        ),
    ] {
        assert_eq!(try_order(&main, name), order, "{name}");
    }
    let text = std::fs::read_to_string(dir.path().join("imported.toml")).unwrap();
    assert!(
        text.contains("# not routed, disabled in Azure: rule 3 \"contoso-old\""),
        "{text}"
    );
}

#[test]
fn without_a_dot_rule_unmatched_names_go_to_azure_dns() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(AZURE).unwrap()).unwrap();
    rules.retain(|r| r["domainName"] != ".");
    let file = dir.path().join("rules.json");
    std::fs::write(&file, serde_json::to_string(&rules).unwrap()).unwrap();
    let main = imported(
        dir.path(),
        &["import", "azure-ruleset", file.to_str().unwrap()],
    );
    check_passes(&main);
    assert_eq!(try_order(&main, "www.example.org"), "1. 168.63.129.16:53");
    assert_eq!(
        try_order(&main, "x.corp.contoso.com"),
        "1. 10.10.0.4:53  2. 10.10.0.5:53"
    );
}

#[test]
fn route53_rules_route_forward_system_and_recursive_rules() {
    let dir = tempfile::tempdir().unwrap();
    let main = imported(
        dir.path(),
        &[
            "import",
            "route53-rules",
            ROUTE53,
            "--vpc-resolver",
            "10.50.0.2",
        ],
    );
    check_passes(&main);
    for (name, order) in [
        ("app.corp.example.com", "1. 10.50.0.10:53  2. 10.50.0.11:53"),
        ("dc1.ad.example.com", "1. 10.50.0.20:53"),
        // SYSTEM carves aws.corp.example.com back to the VPC resolver.
        ("db.aws.corp.example.com", "1. 10.50.0.2:53"),
        // RECURSIVE: everything else to the VPC resolver; the rule being deleted
        // is not routed.
        ("www.example.org", "1. 10.50.0.2:53"),
        ("x.retired.example.com", "1. 10.50.0.2:53"),
    ] {
        assert_eq!(try_order(&main, name), order, "{name}");
    }
}

/// A bad input, and what the error must say.
struct Bad {
    what: &'static str,
    args: &'static [&'static str],
    json: &'static str,
    says: &'static str,
}

const BAD: &[Bad] = &[
    Bad { what: "not JSON", args: &["azure-ruleset"], json: "{\"name\": ", says: "not JSON" },
    Bad { what: "azure: not a list", args: &["azure-ruleset"], json: "{\"value\": []}", says: "expected a list of forwarding rules" },
    Bad {
        what: "azure: no domain",
        args: &["azure-ruleset"],
        json: r#"[{"name": "a", "domainName": "a.example.", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]},
                 {"name": "nodomain", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]}]"#,
        says: "rule 1 (\"nodomain\"): the rule has no domain name",
    },
    Bad {
        what: "azure: a target that is not an IP",
        args: &["azure-ruleset"],
        json: r#"[{"name": "byname", "domainName": "a.example.", "targetDnsServers": [{"ipAddress": "dns1.corp.example", "port": 53}]}]"#,
        says: "rule 0 (\"byname\"): target \"dns1.corp.example\" is not an IP address",
    },
    Bad {
        what: "azure: a domain routed twice with different targets",
        args: &["azure-ruleset"],
        json: r#"[{"name": "first", "domainName": "a.example.", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]},
                 {"name": "second", "domainName": "A.example.", "targetDnsServers": [{"ipAddress": "10.0.0.2", "port": 53}]}]"#,
        says: "rule 1 (\"second\"): domain a.example is routed by rule 0 (\"first\") to 10.0.0.1:53, and here to 10.0.0.2:53",
    },
    Bad {
        what: "azure: an unknown state",
        args: &["azure-ruleset"],
        json: r#"[{"name": "s", "domainName": "a.example.", "forwardingRuleState": "Paused", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]}]"#,
        says: "rule 0 (\"s\"): forwardingRuleState \"Paused\"",
    },
    Bad { what: "route53: no ResolverRules", args: &["route53-rules"], json: "[]", says: "expected an object with a \"ResolverRules\" list" },
    Bad {
        what: "route53: SYSTEM without --vpc-resolver",
        args: &["route53-rules"],
        json: r#"{"ResolverRules": [{"Id": "rslvr-rr-1", "Name": "carve", "DomainName": "aws.corp.example.", "RuleType": "SYSTEM", "Status": "COMPLETE"}]}"#,
        says: "rule 0 (\"carve\"): a SYSTEM rule sends aws.corp.example back to the VPC resolver: give its address with --vpc-resolver",
    },
    Bad {
        what: "route53: a target that is not an IP",
        args: &["route53-rules"],
        json: r#"{"ResolverRules": [{"Id": "rslvr-rr-1", "Name": "f", "DomainName": "x.example.", "RuleType": "FORWARD", "TargetIps": [{"Ip": "10.0.0.300", "Port": 53}]}]}"#,
        says: "rule 0 (\"f\"): target \"10.0.0.300\" is not an IP address",
    },
    Bad {
        what: "route53: no domain, named by its Id",
        args: &["route53-rules"],
        json: r#"{"ResolverRules": [{"Id": "rslvr-rr-9", "RuleType": "FORWARD", "TargetIps": [{"Ip": "10.0.0.1", "Port": 53}]}]}"#,
        says: "rule 0 (\"rslvr-rr-9\"): the rule has no domain name",
    },
    Bad {
        what: "route53: DNS over HTTPS targets",
        args: &["route53-rules"],
        json: r#"{"ResolverRules": [{"Id": "r", "Name": "doh", "DomainName": "x.example.", "RuleType": "FORWARD", "TargetIps": [{"Ip": "10.0.0.1", "Port": 443, "Protocol": "DoH"}]}]}"#,
        says: "rule 0 (\"doh\"): target protocol DoH",
    },
    Bad {
        what: "route53: routed twice with different targets",
        args: &["route53-rules"],
        json: r#"{"ResolverRules": [{"Id": "a", "Name": "a", "DomainName": "x.example.", "RuleType": "FORWARD", "TargetIps": [{"Ip": "10.0.0.1"}]},
                                   {"Id": "b", "Name": "b", "DomainName": "x.example", "RuleType": "FORWARD", "TargetIps": [{"Ip": "10.0.0.2"}]}]}"#,
        says: "rule 1 (\"b\"): domain x.example is routed by rule 0 (\"a\")",
    },
];

#[test]
fn bad_input_gets_an_error_that_names_the_rule_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for bad in BAD {
        let file = dir.path().join("rules.json");
        std::fs::write(&file, bad.json).unwrap();
        let mut args = vec!["import"];
        args.extend_from_slice(bad.args);
        args.push(file.to_str().unwrap());
        let (code, out, err) = zonefwd_cli(&args);
        assert_eq!(code, 2, "{}: {out}{err}", bad.what);
        assert!(out.is_empty(), "{}: printed {out}", bad.what);
        assert!(err.contains(bad.says), "{}: {err}", bad.what);
    }
}

#[test]
fn the_same_domain_twice_with_the_same_targets_is_one_zone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(
        &file,
        r#"[{"name": "a", "domainName": "x.example.", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]},
            {"name": "b", "domainName": "x.example.", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]}]"#,
    )
    .unwrap();
    let main = imported(
        dir.path(),
        &["import", "azure-ruleset", file.to_str().unwrap()],
    );
    check_passes(&main);
    assert_eq!(try_order(&main, "x.example"), "1. 10.0.0.1:53");
}

#[test]
fn a_rule_for_one_of_azures_reserved_zones_keeps_that_zone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(
        &file,
        r#"[{"name": "all", "domainName": ".", "targetDnsServers": [{"ipAddress": "10.0.0.1", "port": 53}]},
            {"name": "blob", "domainName": "blob.core.windows.net.", "targetDnsServers": [{"ipAddress": "10.0.0.2", "port": 53}]}]"#,
    )
    .unwrap();
    let main = imported(
        dir.path(),
        &["import", "azure-ruleset", file.to_str().unwrap()],
    );
    check_passes(&main);
    assert_eq!(
        try_order(&main, "acct.blob.core.windows.net"),
        "1. 10.0.0.2:53"
    );
    assert_eq!(
        try_order(&main, "kv.vault.azure.net"),
        "1. 168.63.129.16:53"
    );
    assert_eq!(try_order(&main, "www.example.org"), "1. 10.0.0.1:53");
}

/// The recommended Azure configuration, which the README shows (and which includes
/// `conf.d/*.toml`).
fn readme_aks_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/azure.toml")).unwrap()
}

/// `--config PATH`: the import leaves out the catch-all and every zone PATH routes,
/// each as a comment naming the route, and its output passes `check` in PATH's conf.d.
#[test]
fn an_import_fits_the_readmes_aks_configuration_as_a_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("zonefwd.toml");
    std::fs::write(&main, readme_aks_config()).unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let rules = serde_json::json!([
        {"name": "everything", "domainName": ".", "forwardingRuleState": "Enabled",
         "targetDnsServers": [{"ipAddress": "10.20.0.53", "port": 53}]},
        {"name": "blob", "domainName": "blob.core.windows.net.", "forwardingRuleState": "Enabled",
         "targetDnsServers": [{"ipAddress": "10.20.0.54", "port": 53}]},
        {"name": "corp", "domainName": "corp.contoso.com.", "forwardingRuleState": "Enabled",
         "targetDnsServers": [{"ipAddress": "10.10.0.4", "port": 53}]},
    ]);
    let file = dir.path().join("rules.json");
    std::fs::write(&file, rules.to_string()).unwrap();
    let args = [
        "import",
        "azure-ruleset",
        file.to_str().unwrap(),
        "--config",
        main.to_str().unwrap(),
    ];
    let (code, out, err) = zonefwd_cli(&args);
    assert_eq!(code, 0, "{err}");
    for said in [
        "# left out: . is routed by route \"on-prem\"",
        "# left out: blob.core.windows.net is routed by route \"azure\"",
    ] {
        assert!(out.contains(said), "{said}:\n{out}");
    }
    std::fs::write(dir.path().join("conf.d/imported.toml"), &out).unwrap();
    check_passes(&main);
    assert_eq!(try_order(&main, "x.corp.contoso.com"), "1. 10.10.0.4:53");
    assert_eq!(
        try_order(&main, "acct.blob.core.windows.net"),
        "1. 168.63.129.16:53",
        "the main file keeps its zone"
    );
    assert_eq!(
        try_order(&main, "www.example.org"),
        "1. 10.1.0.4:53  2. 10.1.0.5:53",
        "and its catch-all"
    );
}
