//! Every bad configuration names the file, line, column and key, and says what was
//! expected.

use zonefwd::config::{Config, ConfigError, LoadEnv};

const ROUTE: &str = "[[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n";

fn env_with_resolv(text: &str) -> (tempfile::TempDir, LoadEnv) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resolv.conf");
    std::fs::write(&p, text).unwrap();
    (dir, LoadEnv { resolv_conf: p })
}

/// (file text, expected "line:column", expected key, expected message fragment)
const CASES: &[(&str, &str, &str, &str)] = &[
    // Syntax.
    ("[server\n", "1:8", "", "unclosed table"),
    // Unknown keys, at every level.
    ("[server]\nlistn = [\"127.0.0.1:53\"]\n", "2:1", "server.listn", "unknown key `listn`: did you mean `listen`?"),
    ("[acl]\nallowed = []\n", "2:1", "acl.allowed", "unknown key `allowed`: did you mean `allow`?"),
    ("[[route]]\nname = \"a\"\nzone = [\".\"]\nupstreams = [\"192.0.2.1\"]\n", "3:1", "route[0].zone", "unknown key `zone`: did you mean `zones`?"),
    ("[cashe]\nmax_entries = 5\n", "1:2", "cashe", "unknown key `cashe`: did you mean `cache`?"),
    // Missing and mistyped keys.
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\n", "1:1", "route[0]", "missing field `upstreams`"),
    ("[[route]]\nname = 7\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n", "2:8", "route[0].name", "expected a string"),
    ("[server]\nlisten = \"0.0.0.0:53\"\n", "2:10", "server.listen", "expected a list such as [\"0.0.0.0:53\"]"),
    // Values that do not parse.
    ("[server]\nlisten = [\"localhost:53\"]\n", "2:11", "server.listen[0]", "expected an address like"),
    ("[server]\ntcp_idle_timeout = \"10 parsecs\"\n", "2:20", "server.tcp_idle_timeout", "expected a duration like"),
    ("[server]\nmax_inflight = 0\n", "2:16", "server.max_inflight", "nonzero"),
    ("[server]\nudp_threads = 65\n", "2:15", "server.udp_threads", "at most 64"),
    ("[server]\nudp_threads = 0\n", "2:15", "server.udp_threads", "nonzero"),
    ("[server]\ntcp_max_lifetime = \"0s\"\n", "2:20", "server.tcp_max_lifetime", "longer than zero"),
    ("[server]\ntcp_max_connections_per_client = 0\n", "2:34", "server.tcp_max_connections_per_client", "nonzero"),
    ("[server]\nany_queries = \"drop\"\n", "2:15", "server.any_queries", "expected \"hinfo\", \"refuse\" or \"forward\""),
    ("[server]\nlog_format = \"xml\"\n", "2:14", "server.log_format", "expected \"human\" or \"json\""),
    ("[server]\nclient_burst = 0\n", "2:16", "server.client_burst", "at least 1"),
    ("[server]\nclient_limit_action = \"tarpit\"\n", "2:23", "server.client_limit_action", "expected \"drop\" or \"refuse\""),
    ("[server]\nclient_limit_exempt = [\"10.0.0.1/8\"]\n", "2:24", "server.client_limit_exempt[0]", "host bits are set"),
    ("[server]\nloop_detection = \"on\"\n", "2:18", "server.loop_detection", "expected true or false (no quotes)"),
    ("[server]\nupstream_udp_reuse = 0\n", "2:22", "server.upstream_udp_reuse", "must be 1 (a fresh socket per query) to 1000"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nclaim_cnames = 1\n", "5:16", "route[0].claim_cnames", "expected true or false (no quotes)"),
    ("[acl]\nallow = [\"10.1.2.3/8\"]\n", "2:10", "acl.allow[0]", "host bits are set"),
    ("[acl]\nallow = [\"10.0.0.0/40\"]\n", "2:10", "acl.allow[0]", "prefix length"),
    ("[acl]\nallow = []\n", "2:9", "acl.allow", "would refuse every client"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"168.63.129.16:99999\"]\n", "4:14", "route[0].upstreams[0]", "expected \"IP\", \"IP:PORT\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1:0\"]\n", "4:14", "route[0].upstreams[0]", "port 0"),
    ("[[route]]\nname = \"a\"\nzones = [\"*.corp.example\"]\nupstreams = [\"192.0.2.1\"]\n", "3:10", "route[0].zones[0]", "no wildcards"),
    ("[[route]]\nname = \"a\"\nzones = [\"corp..example\"]\nupstreams = [\"192.0.2.1\"]\n", "3:10", "route[0].zones[0]", "empty label"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\npolicy = \"fastest\"\n", "5:10", "route[0].policy", "expected \"sequential\", \"round_robin\" or \"random\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"5\"\n", "5:11", "route[0].timeout", "expected a duration like"),
    // The cache.
    ("[cache]\nmax_entries = 0\n", "2:15", "cache.max_entries", "nonzero"),
    ("[cache]\nservfail_ttl = \"10m\"\n", "2:16", "cache.servfail_ttl", "at most 5m"),
    ("[cache]\nmin_ttl = \"1h\"\nmax_ttl = \"10m\"\n", "3:11", "cache.max_ttl", "below min_ttl"),
    ("[cache]\nserve_stale = \"forever\"\n", "2:15", "cache.serve_stale", "expected a duration like"),
    ("[cache]\nprefetch = \"yes\"\n", "2:12", "cache.prefetch", "expected true or false (no quotes)"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ncache = \"off\"\n", "5:9", "route[0].cache", "true, false, or a table"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ncache = { max_entries = 5 }\n", "5:25", "route[0].cache.max_entries", "set max_entries in [cache]"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ncache = { negative_ttl = \"1s\" }\n", "5:11", "route[0].cache.negative_ttl", "unknown key `negative_ttl`: did you mean `negative_max_ttl`?"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nmax_qps = 0\n", "5:11", "route[0].max_qps", "nonzero"),
    ("[[route]]\nname = \"a\"\npresets = [\"gcp\"]\nupstreams = [\"192.0.2.1\"]\n", "3:12", "route[0].presets[0]", "no preset \"gcp\"; presets: azure"),
    ("[[route]]\nname = \"a\"\nupstreams = [\"192.0.2.1\"]\n", "1:1", "route[0].zones", "zones (\".\" for everything) or presets"),
    ("[[route]]\nname = \"a\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\nexpect_private = \"strict\"\n", "5:18", "route[0].expect_private", "expected \"warn\" or \"enforce\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nready = \"always\"\n", "5:9", "route[0].ready", "expected \"required\" or \"ignored\", got \"always\""),
    ("[server]\nready_requires_upstreams = true\n", "2:28", "server.ready_requires_upstreams", "removed: readiness is per route now; set ready = \"required\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntransport = \"quic\"\n", "5:13", "route[0].transport", "expected \"udp\" or \"tcp\", got \"quic\""),
    ("[[route]]\nname = \"a\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\nnxdomain_fallback = \"public\"\n", "5:21", "route[0].nxdomain_fallback", "no route named \"public\""),
    ("[[route]]\nname = \"a\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\nnxdomain_fallback = \"a\"\n", "5:21", "route[0].nxdomain_fallback", "cannot fall back to itself"),
    ("[[route]]\nname = \"a\"\npresets = [\"azure\"]\nupstreams = [\"192.0.2.1\"]\n[[route]]\nname = \"b\"\nzones = [\"blob.core.windows.net\"]\nupstreams = [\"192.0.2.2\"]\n", "7:10", "route[1].zones", "already routed by route \"a\" (line 3)"),
    // Mistakes an operator makes: an IPv6 address whose last group reads like a port,
    // a zone written as a URL or with a character no DNS name has, values of the
    // wrong type, the wrong kind of table.
    ("[server]\nlisten = [\"::1:5562\"]\n", "2:11", "server.listen[0]", "\"::1:5562\" is ambiguous: write \"[::1]:5562\" for port 5562 of ::1, or \"[::1:5562]\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"fd00::53:5353\"]\n", "4:14", "route[0].upstreams[0]", "write \"[fd00::53]:5353\" for port 5353 of fd00::53"),
    ("[[route]]\nname = \"a\"\nzones = [\"https://blob.core.windows.net\"]\nupstreams = [\"192.0.2.1\"]\n", "3:10", "route[0].zones[0]", "is a URL (https://): a zone is a DNS name, such as \"blob.core.windows.net\""),
    ("[[route]]\nname = \"a\"\nzones = [\"corp.example/24\"]\nupstreams = [\"192.0.2.1\"]\n", "3:10", "route[0].zones[0]", "'/' is in no DNS name"),
    ("[[route]]\nname = \"a\"\nzones = [\"corp example\"]\nupstreams = [\"192.0.2.1\"]\n", "3:10", "route[0].zones[0]", "' ' is in no DNS name"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = 5\n", "5:11", "route[0].timeout", "expected a duration string such as \"5s\", got integer `5`"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nmax_qps = \"900\"\n", "5:11", "route[0].max_qps", "expected a number, got the string \"900\": write it without quotes (max_qps = 900)"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nretransmit_budget = 5\n", "5:21", "route[0].retransmit_budget", "got the number 5: write retransmit_budget = \"5%\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nretransmit_budget = 0.05\n", "5:21", "route[0].retransmit_budget", "got the number 0.05: write retransmit_budget = \"5%\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\nretransmit_budget = \"80%\"\n", "5:21", "route[0].retransmit_budget", "expected a percentage from \"0%\" to \"50%\""),
    ("[route]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n", "1:1", "route", "routes are [[route]] tables (an array of tables): write [[route]], not [route]"),
    ("[server]\nlisen = [\"127.0.0.1:53\"]\n", "2:1", "server.lisen", "did you mean `listen`?"),
    // dnstap.
    ("[dnstap]\nsocket = \"/run/dnstap.sock\"\n", "2:10", "dnstap.socket", "\"unix:/path/to/socket\" or \"tcp:ADDRESS:PORT\""),
    ("[dnstap]\nsocket = \"unix:run/dnstap.sock\"\n", "2:10", "dnstap.socket", "must be absolute"),
    ("[dnstap]\nsocket = \"tcp:10.1.0.9\"\n", "2:10", "dnstap.socket", "give an address and port"),
    ("[dnstap]\nsocket = \"unix:/run/d.sock\"\nclient_sample_rate = 0\n", "3:22", "dnstap.client_sample_rate", "N is 1 (every one) or more"),
    ("[dnstap]\nsocket = \"unix:/run/d.sock\"\nclient_querys = true\n", "3:1", "dnstap.client_querys", "did you mean `client_query`?"),
    ("[dnstap]\nclient_query = true\n", "1:1", "dnstap", "missing field `socket`"),
    ("[dnstap]\nsocket = \"unix:/run/d.sock\"\nclient_query = false\nclient_response = false\nforwarder_query = false\nforwarder_response = false\n", "1:1", "dnstap", "every message type is off"),
    // Encrypted DNS.
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"https://10.1.0.4\"]\n", "4:14", "route[0].upstreams[0]", "the only scheme an upstream takes is tls://"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"tls://10.1.0.4#not a name\"]\n", "4:14", "route[0].upstreams[0]", "is not a DNS name"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"tls://10.1.0.4\"]\n", "4:13", "route[0].upstreams", "has no name to verify its certificate against: write tls://10.1.0.4#NAME"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"tls://10.1.0.4#dns.test\"]\ntls_pins = [\"md5/abc\"]\n", "5:13", "route[0].tls_pins[0]", "expected \"sha256/\""),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"tls://10.1.0.4#dns.test\"]\ntls_ca = \"/nonexistent/ca.pem\"\n", "5:10", "route[0].tls_ca", "cannot read /nonexistent/ca.pem"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"tls://10.1.0.4#dns.test\"]\ntls_ca = \"/ca.pem\"\ntls_insecure_no_verify = true\n", "5:10", "route[0].tls_ca", "checks no certificate, so tls_ca would not be used"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"10.1.0.4\"]\ntls_ca = \"/ca.pem\"\n", "5:10", "route[0].tls_ca", "no upstream of this route is tls://"),
    ("[server]\ntls_listen = [\"127.0.0.1:853\"]\n", "2:14", "server.tls_cert", "need a certificate: set tls_cert and tls_key"),
    ("[server]\nhttps_listen = [\"127.0.0.1\"]\ntls_cert = \"/c.pem\"\n", "3:12", "server.tls_key", "tls_cert is set without tls_key"),
    ("[server]\ntls_cert = \"/c.pem\"\ntls_key = \"/c.key\"\n", "2:12", "server.tls_cert", "no tls_listen or https_listen uses this certificate"),
    ("[server]\ntls_listen = [\"127.0.0.1\"]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/c.key\"\n", "3:12", "server.tls_cert", "cannot read /nonexistent/c.pem"),
    ("[server]\nlisten = [\"127.0.0.1:853\"]\ntls_listen = [\"127.0.0.1\"]\n", "3:15", "server.tls_listen", "already a listener"),
    // Cross-field checks.
    ("", "1:1", "route", "no [[route]] tables"),
    ("[[route]]\nname = \"a\"\nzones = []\nupstreams = [\"192.0.2.1\"]\n", "3:9", "route[0].zones", "empty list"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = []\n", "4:13", "route[0].upstreams", "empty list"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"0s\"\n", "5:11", "route[0].timeout", "longer than zero"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"1s\"\ntry_timeout = \"2s\"\n", "6:15", "route[0].try_timeout", "longer than the route's timeout"),
    ("[[route]]\nname = \"a\"\nzones = [\"corp.example\"]\nupstreams = [\"192.0.2.1\"]\n[[route]]\nname = \"b\"\nzones = [\"Corp.Example.\"]\nupstreams = [\"192.0.2.2\"]\n", "7:10", "route[1].zones", "already routed by route \"a\" (line 3)"),
    ("[[route]]\nname = \"a\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\n[[route]]\nname = \"a\"\nzones = [\"y.example\"]\nupstreams = [\"192.0.2.2\"]\n", "6:8", "route[1].name", "used twice"),
    ("[[route]]\nname = \"on prem\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n", "2:8", "route[0].name", "use letters, digits"),
    ("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\", \"192.0.2.1:53\"]\n", "4:27", "route[0].upstreams", "listed twice"),
    ("[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1\"]\n", "2:27", "server.listen", "listed twice"),
    ("[server]\nlisten = [\"127.0.0.1:53\"]\n[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1\"]\n", "6:14", "route[0].upstreams", "own listen address"),
];

#[test]
fn bad_files_are_located_and_explained() {
    let (_dir, env) = env_with_resolv("nameserver 192.0.2.53\n");
    let mut failures = Vec::new();
    for (text, at, key, fragment) in CASES {
        // A route, where the case has none, so that the case's error is the only one.
        let text = if text.contains("[route]") || text.is_empty() {
            text.to_string()
        } else {
            format!("{text}{ROUTE}")
        };
        let text = text.as_str();
        match Config::parse(text, "bad.toml", &env) {
            Ok(_) => failures.push(format!("accepted: {text:?}")),
            Err(ConfigError::Invalid(all)) => {
                let e = all.first();
                let shown = all.to_string();
                let got_at = format!("{}:{}", e.line, e.column);
                if got_at != *at
                    || e.key != *key
                    || !e.message.contains(fragment)
                    || !shown.starts_with(&format!("bad.toml:{at}: "))
                    || all.len() != 1
                {
                    failures.push(format!(
                        "{text:?}\n  want {at} {key:?} ~{fragment:?}\n  got  {shown}"
                    ));
                }
            }
            Err(other) => failures.push(format!("{text:?}: unexpected {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn system_upstreams_come_from_resolv_conf_and_must_not_loop() {
    let (_dir, env) = env_with_resolv("nameserver 192.0.2.53\nnameserver 2001:db8::53\n");
    let c = Config::parse(
        "[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"system\"]\n",
        "s.toml",
        &env,
    )
    .unwrap();
    let addrs: Vec<String> = c.routes[0]
        .upstreams
        .iter()
        .map(|u| u.addr.to_string())
        .collect();
    assert_eq!(addrs, ["192.0.2.53:53", "[2001:db8::53]:53"]);
    assert!(c.routes[0].upstreams.iter().all(|u| u.from_system));

    // resolv.conf pointing at zonefwd itself is a loop, reported at the "system" entry.
    let (_dir, env) = env_with_resolv("nameserver 127.0.0.1\n");
    let text = "[server]\nlisten = [\"0.0.0.0:53\"]\n[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"system\"]\n";
    let e = Config::parse(text, "s.toml", &env).unwrap_err().to_string();
    assert!(
        e.starts_with("s.toml:6:14: route[0].upstreams: \"system\" resolves to 127.0.0.1:53"),
        "{e}"
    );
    assert!(e.contains("would loop"), "{e}");

    let env = LoadEnv {
        resolv_conf: "/nonexistent/resolv.conf".into(),
    };
    let e = Config::parse(
        "[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"system\"]\n",
        "s.toml",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"system\" needs /nonexistent/resolv.conf"),
        "{e}"
    );
}

#[test]
fn route_cache_settings_overlay_the_global_ones() {
    use std::time::Duration;
    let text = "[cache]\nmax_entries = 500\nnegative_max_ttl = \"30m\"\nprefetch = false\n\
        [[route]]\nname = \"azure\"\nzones = [\"privatelink.blob.core.windows.net\"]\nupstreams = [\"168.63.129.16\"]\n\
        cache = { negative_max_ttl = \"10s\" }\nmax_qps = 900\n\
        [[route]]\nname = \"lab\"\nzones = [\"lab.example\"]\nupstreams = [\"192.0.2.2\"]\ncache = false\n\
        [[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n";
    let c = Config::parse(text, "c.toml", &LoadEnv::default()).unwrap();
    assert_eq!(c.cache_max_entries, 500);
    let (azure, lab, rest) = (&c.routes[0], &c.routes[1], &c.routes[2]);
    assert_eq!(azure.cache.negative_max_ttl, Duration::from_secs(10));
    assert!(!azure.cache.prefetch, "inherited from [cache]");
    assert_eq!(azure.max_qps, Some(900));
    assert!(!lab.cache.enabled);
    assert!(rest.cache.enabled);
    assert_eq!(rest.cache.negative_max_ttl, Duration::from_secs(1800));
    assert_eq!(rest.max_qps, None);
}

#[test]
fn unreadable_file_names_the_path() {
    let e = Config::load("/nonexistent/zonefwd.toml".as_ref(), &LoadEnv::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/zonefwd.toml: cannot read the config file"),
        "{e}"
    );
}

#[test]
fn warnings_for_risky_but_valid_settings() {
    let text = format!("[server]\nlisten = [\"0.0.0.0:53\"]\n[acl]\nallow = [\"0.0.0.0/0\"]\n{ROUTE}[[route]]\nname = \"azure\"\nzones = [\"privatelink.blob.core.windows.net\"]\nupstreams = [\"168.63.129.16\"]\ntimeout = \"2s\"\n");
    let c = Config::parse(&text, "w.toml", &LoadEnv::default()).unwrap();
    let all: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    let all = all.join("\n");
    assert!(all.contains("open resolver"), "{all}");
    assert!(all.contains("168.63.129.16 is at most 4s"), "{all}");
}

/// `check` reports every error of a file in one run, in file order, each located,
/// and a value in error does not bring a second error about its absence.
#[test]
fn every_error_of_a_file_is_reported_at_once_in_file_order() {
    let text = "[server]\n\
                listn = [\"127.0.0.1:53\"]\n\
                metrics = \"fd00::53:9153\"\n\
                [[route]]\n\
                name = \"azure\"\n\
                zones = [\"https://blob.core.windows.net\"]\n\
                upstreams = [\"168.63.129.16\"]\n\
                timeout = 5\n\
                max_qps = \"900\"\n\
                [[route]]\n\
                name = \"on-prem\"\n\
                zones = [\".\"]\n\
                upstreams = [\"10.1.0.4\"]\n\
                polcy = \"round_robin\"\n";
    let e = Config::parse(text, "all.toml", &LoadEnv::default()).unwrap_err();
    let ConfigError::Invalid(all) = &e else {
        panic!("{e}")
    };
    let places: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        places,
        [
            (2, "server.listn"),
            (3, "server.metrics"),
            (6, "route[0].zones[0]"),
            (8, "route[0].timeout"),
            (9, "route[0].max_qps"),
            (14, "route[1].polcy"),
        ],
        "{e}"
    );
    let shown = e.to_string();
    assert!(shown.ends_with("6 errors"), "{shown}");
    assert!(shown.contains("did you mean `policy`?"), "{shown}");
}

/// Allowed, but probably not meant: warned, with the fix.
#[test]
fn an_acl_entry_without_a_prefix_and_a_zone_listed_twice_are_warnings() {
    let text = "[acl]\nallow = [\"10.1.2.3\", \"10.0.0.0/8\"]\n\
                [[route]]\nname = \"a\"\nzones = [\"corp.example\", \"lab.example\", \"corp.example\"]\nupstreams = [\"192.0.2.1\"]\n";
    let c = Config::parse(text, "w.toml", &LoadEnv::default()).unwrap();
    let all: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("{w} ({})", w.fix))
        .collect();
    let all = all.join("\n");
    assert!(
        all.contains("acl.allow[0] = \"10.1.2.3\" has no prefix length: it admits that one host, 10.1.2.3/32"),
        "{all}"
    );
    assert!(
        all.contains("route[0].zones: zone corp.example. is listed twice in route \"a\""),
        "{all}"
    );
    assert_eq!(c.warnings.len(), 2, "{all}");
}
