//! Text for operators: the routing table (`check`) and where a name goes (`explain`).

use crate::local::{self, Decision};
use std::fmt::Write;
use std::str::FromStr;

use hickory_proto::rr::RecordType;

use crate::config::{Config, Route, UpstreamOrder, UpstreamTransport};
use crate::router::Router;
use crate::wire;

/// "A", "aaaa", "TYPE65" or "65" (RFC 3597 section 5 for the numeric form).
pub fn parse_qtype(s: &str) -> Result<u16, String> {
    let upper = s.to_ascii_uppercase();
    if let Ok(n) = upper.strip_prefix("TYPE").unwrap_or(&upper).parse::<u16>() {
        return Ok(n);
    }
    RecordType::from_str(&upper)
        .map(u16::from)
        .map_err(|_| format!("{s:?} is not a record type (try A, AAAA, CNAME, DS or TYPE65)"))
}

pub fn qtype_name(t: u16) -> String {
    match RecordType::from(t) {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        rt => rt.to_string(),
    }
}

/// One line on how a route uses the cache.
pub fn cache_summary(r: &Route) -> String {
    let c = &r.cache;
    if !c.enabled {
        return "off".to_string();
    }
    let d = |d| humantime::format_duration(d).to_string();
    format!(
        "on: TTLs kept within {}..{}, negative answers at most {}, failures remembered {}, {}, {}",
        d(c.min_ttl),
        d(c.max_ttl),
        d(c.negative_max_ttl),
        d(c.servfail_ttl),
        if c.serve_stale.is_zero() {
            "no stale answers".to_string()
        } else {
            format!(
                "stale answers up to {} past expiry when upstreams fail",
                d(c.serve_stale)
            )
        },
        if c.prefetch {
            "prefetch"
        } else {
            "no prefetch"
        }
    )
}

fn upstream_list(r: &Route) -> String {
    r.upstreams
        .iter()
        .map(|u| {
            if u.from_system {
                format!("{} (system)", u.addr)
            } else {
                u.spec()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The DoT and DoH listeners and the certificate they present, in a line each.
fn encrypted_summary(e: &crate::config::EncryptedListeners) -> String {
    let list = |a: &[std::net::SocketAddr]| {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::new();
    if !e.tls.is_empty() {
        let _ = writeln!(s, "dot     {} (DNS over TLS)", list(&e.tls));
    }
    if !e.https.is_empty() {
        let _ = writeln!(s, "doh     {} (DNS over HTTPS, /dns-query)", list(&e.https));
    }
    if let Some(id) = &e.identity {
        let names = if id.names.is_empty() {
            "no DNS names".to_string()
        } else {
            id.names.join(", ")
        };
        let _ = writeln!(
            s,
            "cert    {} for {names}, {}",
            id.cert.display(),
            id.validity
        );
    }
    s
}

/// What `zonefwd check` prints for a valid file.
/// `[dnstap]` in a line: where, which messages, which share of client queries.
fn dnstap_summary(d: &crate::config::DnstapConfig) -> String {
    let kinds = [
        (d.client_query, "client queries"),
        (d.client_response, "client responses"),
        (d.forwarder_query, "forwarder queries"),
        (d.forwarder_response, "forwarder responses"),
    ];
    let sent: Vec<&str> = kinds.iter().filter(|k| k.0).map(|k| k.1).collect();
    let sample = match d.client_sample_rate {
        1 => String::new(),
        n => format!("; 1 client query in {n}"),
    };
    format!("{}: {}{sample}", d.socket, sent.join(", "))
}

pub fn routing_table(config: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", config.source);
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(s, "listen  {} (udp and tcp)", listen.join(", "));
    s.push_str(&encrypted_summary(&config.server.encrypted));
    let acl: Vec<String> = config.acl.entries().iter().map(|c| c.to_string()).collect();
    let _ = writeln!(s, "acl     {}", acl.join(", "));
    let _ = writeln!(
        s,
        "cache   {} entries, shared by all routes",
        config.cache_max_entries
    );
    if let Some(d) = &config.dnstap {
        let _ = writeln!(s, "dnstap  {}", dnstap_summary(d));
    }
    let rows: Vec<[String; 5]> = config
        .routes
        .iter()
        .flat_map(|r| {
            r.zones.iter().map(move |z| {
                [
                    wire::name_to_string(z),
                    r.name.clone(),
                    r.order.as_str().to_string(),
                    humantime::format_duration(r.timeout).to_string(),
                    upstream_list(r),
                ]
            })
        })
        .collect();
    let header = ["ZONE", "ROUTE", "POLICY", "TIMEOUT", "UPSTREAMS"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(
            s,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    if !config
        .routes
        .iter()
        .any(|r| r.zones.iter().any(|z| z == &[0]))
    {
        let _ = writeln!(
            s,
            "names under no zone above are answered REFUSED (there is no \".\" route)"
        );
    }
    for r in &config.routes {
        let budget = r.max_qps.map_or(String::new(), |q| {
            format!("; at most {q} queries/s to each upstream")
        });
        let from = if r.source == config.source {
            String::new()
        } else {
            format!("; from {}", r.source)
        };
        let _ = writeln!(
            s,
            "route {}: cache {}{budget}{from}",
            r.name,
            cache_summary(r)
        );
    }
    // The certificate's expiry is a warning of now, not of the file: made here.
    let identity = config.server.encrypted.identity.as_ref();
    let expiry = identity.and_then(|id| id.expiry_problem(std::time::SystemTime::now()));
    let warnings = config.warnings.iter().map(|w| (&w.text, &w.fix));
    // &(String, String) as (&String, &String), like the warnings.
    let expiry = expiry.iter().map(|(text, fix)| (text, fix));
    for (text, fix) in warnings.chain(expiry) {
        let _ = writeln!(s, "warning: {text}\n         fix: {fix}");
    }
    s
}

/// What `zonefwd explain NAME [TYPE]` prints, and whether a route matched.
pub fn explain(config: &Config, name: &str, qtype: u16) -> Result<(String, bool), String> {
    let mut qname = wire::name_from_str(name).map_err(|e| format!("{name:?}: {e}"))?;
    let display = wire::name_to_string(&qname);
    wire::lowercase(&mut qname);
    let router = Router::for_config(config);
    let mut s = String::new();
    let _ = writeln!(s, "name       {display} {}", qtype_name(qtype));
    if let Some(matched) = explain_local(config, &qname, qtype, &mut s)? {
        return Ok((s, matched));
    }
    let Some(m) = router.route(&qname, qtype) else {
        let _ = writeln!(
            s,
            "route      none: zonefwd answers REFUSED (no zone covers this name and there is no \".\" route)"
        );
        return Ok((s, false));
    };
    let r = &config.routes[m.route];
    let _ = writeln!(s, "route      {}", r.name);
    let _ = writeln!(s, "zone       {}", wire::name_to_string(m.zone));
    if m.ds_to_parent {
        let _ = writeln!(
            s,
            "note       DS lives in the parent zone, so this DS query is routed as the parent's names are, not by the zone {display} itself"
        );
    }
    let addrs = upstream_list(r);
    let order = match r.order {
        UpstreamOrder::Sequential => r
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{}. {}", i + 1, u.addr))
            .collect::<Vec<_>>()
            .join("  "),
        UpstreamOrder::RoundRobin => {
            format!("starts one further along the list on each query: {addrs}")
        }
        UpstreamOrder::Random => format!("shuffled on each query: {addrs}"),
    };
    let _ = writeln!(s, "policy     {}", r.order.as_str());
    let _ = writeln!(s, "try order  {order}");
    if r.upstreams.iter().any(|u| u.from_system) {
        let _ = writeln!(
            s,
            "           (system = the nameservers of /etc/resolv.conf when the config was loaded)"
        );
    }
    let last_over_tcp = match r.transport {
        UpstreamTransport::Udp => ", then once over TCP when no try was answered",
        UpstreamTransport::Tcp => "",
    };
    let _ = writeln!(
        s,
        "timing     answer within {}; the next upstream is asked after {} without a reply, or at once on an error, SERVFAIL or REFUSED; each upstream is asked at most twice (a lone one three times){last_over_tcp}",
        humantime::format_duration(r.timeout),
        humantime::format_duration(r.try_timeout)
    );
    let _ = writeln!(s, "retransmit {}", retransmit_summary(r));
    let _ = writeln!(s, "cache      {}", cache_summary(r));
    if let Some(q) = r.max_qps {
        let _ = writeln!(
            s,
            "budget     at most {q} queries/s to each upstream; beyond it, a stale answer or SERVFAIL"
        );
    }
    if let Some(j) = r.nxdomain_fallback {
        let _ = writeln!(
            s,
            "fallback   an NXDOMAIN from this route is asked again through route {}",
            config.routes[j].name
        );
    }
    match r.expect_private {
        Some(crate::config::ExpectPrivate::Warn) => {
            let _ = writeln!(
                s,
                "guard      public A/AAAA addresses in answers are logged and counted"
            );
        }
        Some(crate::config::ExpectPrivate::Enforce) => {
            let _ = writeln!(
                s,
                "guard      an answer with a public A/AAAA address becomes SERVFAIL"
            );
        }
        None => {}
    }
    if r.claim_cnames {
        let _ = writeln!(
            s,
            "claims     CNAMEs in other routes' answers that point under this route's zones are followed through this route"
        );
    }
    if r.max_fails > 0 {
        let _ = writeln!(
            s,
            "health     an upstream is skipped after {} failures in a row until a probe every {} gets an answer; if all are down, all are tried",
            r.max_fails,
            humantime::format_duration(r.health_check)
        );
    }
    let _ = writeln!(s, "nothing was sent: this is what zonefwd would do");
    Ok((s, true))
}

/// What `[local]` records say of NAME TYPE: `Some(answered)` when they decide it
/// (their lines added to `s`), `None` when the query goes to its route.
fn explain_local(
    config: &Config,
    qname: &[u8],
    qtype: u16,
    s: &mut String,
) -> Result<Option<bool>, String> {
    let records = config.local.iter().filter(|r| r.name == qname);
    match local::decide(records, qtype) {
        Decision::Records(matching) => {
            for r in matching {
                let _ = writeln!(
                    s,
                    "answer     local record: {} (answered here, AA, not cached)",
                    r.record
                );
            }
            Ok(Some(true))
        }
        Decision::Cname(c) => {
            let _ = writeln!(
                s,
                "answer     local record: {}, then its target through the route below",
                c.record
            );
            let hickory_proto::rr::RData::CNAME(t) = &c.record.data else {
                return Ok(None);
            };
            let (rest, matched) = explain(config, &t.0.to_string(), qtype)?;
            s.push_str(&rest);
            Ok(Some(matched))
        }
        Decision::NoData => {
            let _ = writeln!(
                s,
                "answer     NODATA from local records (they hold only the other address family; answered here, AA)"
            );
            Ok(Some(true))
        }
        Decision::Elsewhere => Ok(None),
    }
}

/// When a route's tries are retransmitted before `try_timeout`, in words.
fn retransmit_summary(r: &Route) -> String {
    if r.transport == UpstreamTransport::Tcp {
        return "only at try_timeout: over TCP the kernel retransmits".to_string();
    }
    if r.retransmit_budget <= 0.0 {
        return "only at try_timeout (retransmit_budget = 0)".to_string();
    }
    format!(
        "sooner, once an upstream has answered 10 tries: when a try outlives the 99th percentile of its answer times (at least 10 ms); wasted retransmissions at most {}% of its queries",
        r.retransmit_budget * 100.0
    )
}
