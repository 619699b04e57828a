//! `zonefwd query` and `zonefwd doctor`: live checks of a configuration, from the host
//! zonefwd runs on, the way zonefwd itself would send the queries.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RData;

use crate::config::{Config, Route};
use crate::router::Router;
use crate::upstream::{exchange, Lifecycle, Outcome, UpstreamSet};
use crate::wire::{self, Query};

/// Azure's platform resolver (168.63.129.16) and AWS's link-local VPC resolver.
const AZURE_DNS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(168, 63, 129, 16));
const AWS_DNS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 253));

/// `zonefwd query NAME TYPE`: resolves now through the route `explain` would pick,
/// with its upstreams, fallback and guard, and prints what came back. Exit status:
/// true when an answer (any rcode but SERVFAIL) came back.
pub async fn query(config: &Config, name: &str, qtype: u16) -> Result<(String, bool), String> {
    let qname = wire::name_from_str(name).map_err(|e| format!("{name:?}: {e}"))?;
    let q = Query::own(qname, qtype);
    let router = Router::for_config(config);
    let Some(m) = router.route(&q.qname_lower, qtype) else {
        return Ok((
            format!(
                "{name}: no route matches and there is no \".\" route: zonefwd answers REFUSED\n"
            ),
            false,
        ));
    };
    let life = Lifecycle::default();
    let sets = UpstreamSet::for_config(config, &life);
    let set = &sets[m.route];
    let started = Instant::now();
    let outcome = set.resolve(&q).await;
    let rtt = started.elapsed();
    life.shutdown.cancel();
    let mut out = String::new();
    let _ = writeln!(out, "route:     {}", set.route);
    let ok = match outcome {
        Outcome::Reply { answer, upstream } => {
            let _ = writeln!(out, "upstream:  {upstream}");
            let _ = writeln!(out, "time:      {:.1} ms", rtt.as_secs_f64() * 1000.0);
            let msg = Message::from_vec(&answer.bytes)
                .map_err(|e| format!("cannot decode the reply: {e}"))?;
            let _ = writeln!(out, "rcode:     {}", msg.metadata.response_code);
            let mut hops = 0;
            for r in &msg.answers {
                if matches!(r.data, RData::CNAME(_)) {
                    hops += 1;
                }
                let _ = writeln!(out, "answer:    {r}");
            }
            if hops > 0 {
                let _ = writeln!(out, "cnames:    {hops} hop(s)");
            }
            for r in &msg.authorities {
                let _ = writeln!(out, "authority: {r}");
            }
            let public: Vec<String> = wire::answer_addresses(
                &answer.bytes,
                answer.reply.question_end,
                answer.reply.answers,
            )
            .into_iter()
            .filter(|ip| !wire::is_private_address(*ip))
            .map(|ip| ip.to_string())
            .collect();
            if !public.is_empty() {
                let _ = writeln!(
                    out,
                    "warning:   public address(es) {} in the answer{}",
                    public.join(", "),
                    if set.expect_private.is_some() {
                        " (expect_private is set on this route)"
                    } else {
                        ""
                    }
                );
            }
            answer.reply.rcode != wire::rcode::SERVFAIL
        }
        Outcome::Failed => {
            let _ = writeln!(
                out,
                "result:    no usable answer within {} (SERVFAIL): every upstream timed out, failed, or the guard refused the answer",
                humantime::format_duration(set.timeout())
            );
            false
        }
        Outcome::OverBudget => {
            let _ = writeln!(out, "result:    max_qps spent on every upstream");
            false
        }
    };
    Ok((out, ok))
}

/// One finding of `doctor`.
pub struct Finding {
    pub ok: bool,
    pub what: String,
    /// What to do about it, when not ok.
    pub fix: Option<String>,
}

fn good(what: String) -> Finding {
    Finding {
        ok: true,
        what,
        fix: None,
    }
}

fn bad(what: String, fix: impl Into<String>) -> Finding {
    Finding {
        ok: false,
        what,
        fix: Some(fix.into()),
    }
}

/// A question an upstream of this route should answer: the SOA of the route's first
/// zone (what it is for), or of the root for the catch-all.
fn probe_for(route: &Route) -> Query {
    let zone = route.zones.first().cloned().unwrap_or_else(|| vec![0]);
    Query::own(zone, wire::TYPE_SOA)
}

async fn probe_upstream(route: &Route, addr: SocketAddr, per_try: Duration) -> Vec<Finding> {
    let q = probe_for(route);
    let zone = wire::name_to_string(&q.qname);
    let ignored = AtomicU64::new(0);
    let mut out = Vec::new();
    for tcp in [false, true] {
        let proto = if tcp { "tcp" } else { "udp" };
        let started = Instant::now();
        let result = tokio::time::timeout(per_try, async {
            if tcp {
                exchange::tcp(addr, &q, true, &ignored).await
            } else {
                exchange::udp(addr, &q, true, &ignored).await
            }
        })
        .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let what = format!(
            "route {}: upstream {addr} over {proto} ({zone} SOA)",
            route.name
        );
        out.push(match result {
            Ok(Ok(a)) if a.reply.rcode == wire::rcode::SERVFAIL || a.reply.rcode == wire::rcode::REFUSED => bad(
                format!("{what}: answered {} in {ms:.0} ms", wire::rcode::name(a.reply.rcode)),
                format!("the server will not resolve {zone} for this host: check that it serves or may recurse for this zone, and that its ACL admits this host"),
            ),
            Ok(Ok(a)) => good(format!("{what}: {} in {ms:.0} ms", wire::rcode::name(a.reply.rcode))),
            Ok(Err(e)) => bad(
                format!("{what}: {e}"),
                if tcp {
                    "TCP is needed for truncated replies: allow tcp/53 to the upstream (on Azure, some guest-agent versions block TCP to 168.63.129.16 for non-root processes: update WALinuxAgent or run zonefwd as a service user the firewall admits)".to_string()
                } else {
                    "check the address, routing and firewall between this host and the upstream".to_string()
                },
            ),
            Err(_) => bad(
                format!("{what}: no answer within {}", humantime::format_duration(per_try)),
                if addr.ip() == AZURE_DNS {
                    "168.63.129.16 answers only from inside an Azure VNet: run zonefwd there".to_string()
                } else {
                    "the upstream is unreachable or silent: check the address, routing and firewall".to_string()
                },
            ),
        });
    }
    out
}

/// Can this process bind `addr`? Ports below 1024 need root or CAP_NET_BIND_SERVICE.
fn bind_finding(addr: SocketAddr) -> Finding {
    match std::net::UdpSocket::bind(addr) {
        Ok(_) => good(format!("listen {addr}: this process may bind it")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => good(format!(
            "listen {addr}: in use (by a running zonefwd, or another DNS server: systemd-resolved's stub listens on 127.0.0.53:53 only)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bad(
            format!("listen {addr}: permission denied"),
            "ports below 1024 need CAP_NET_BIND_SERVICE: the systemd unit grants it (AmbientCapabilities), the container image sets it on the binary; or run doctor as the service user",
        ),
        Err(e) => bad(format!("listen {addr}: {e}"), "is the address on this host?"),
    }
}

/// The checks that need no network: listen addresses, warnings, and each route's
/// settings against the cloud resolvers' known behaviour.
pub fn static_findings(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for addr in &config.server.listen {
        findings.push(bind_finding(*addr));
    }
    for w in &config.warnings {
        findings.push(bad(format!("check: {w}"), "see the warning"));
    }
    for route in &config.routes {
        let cloud_azure = route.upstreams.iter().any(|u| u.addr.ip() == AZURE_DNS);
        let cloud_aws = route.upstreams.iter().any(|u| u.addr.ip() == AWS_DNS);
        if cloud_azure && route.timeout <= Duration::from_secs(4) {
            findings.push(bad(
                format!("route {}: timeout {} towards 168.63.129.16", route.name, humantime::format_duration(route.timeout)),
                "Azure advises more than 4 s, or private names may resolve to public IPs: timeout = \"5s\"",
            ));
        }
        let limit = if cloud_azure {
            Some((1000, "Azure DNS drops above 1000 queries/s per VM"))
        } else if cloud_aws {
            Some((
                1024,
                "the VPC resolver drops above 1024 packets/s per interface",
            ))
        } else {
            None
        };
        if let Some((limit, why)) = limit {
            match route.max_qps {
                Some(q) if q <= limit => findings.push(good(format!("route {}: max_qps {q} is within the cloud's limit", route.name))),
                Some(q) => findings.push(bad(format!("route {}: max_qps {q}", route.name), format!("{why}: max_qps = {}", limit * 9 / 10))),
                None => findings.push(bad(
                    format!("route {}: no max_qps towards the cloud resolver", route.name),
                    format!("{why}; past it queries are dropped silently. Set max_qps = {} so zonefwd answers from cache or SERVFAIL at once instead", limit * 9 / 10),
                )),
            }
        }
    }
    findings
}

/// `zonefwd doctor`: `static_findings`, then every upstream on UDP and TCP. True when
/// all is well.
pub async fn doctor(config: &Config) -> (String, bool) {
    let mut findings = static_findings(config);
    for route in &config.routes {
        let per_try = route.try_timeout.min(Duration::from_secs(3));
        for u in &route.upstreams {
            findings.extend(probe_upstream(route, u.addr, per_try).await);
        }
    }
    let mut out = String::new();
    let mut all_ok = true;
    for f in &findings {
        all_ok &= f.ok;
        let _ = writeln!(out, "{} {}", if f.ok { "ok  " } else { "FAIL" }, f.what);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "     fix: {fix}");
        }
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    let _ = writeln!(out, "{} checks, {failed} to fix", findings.len());
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadEnv;

    fn findings(text: &str) -> Vec<(bool, String, String)> {
        let c = Config::parse(text, "t.toml", &LoadEnv::default()).unwrap();
        static_findings(&c)
            .into_iter()
            .map(|f| (f.ok, f.what, f.fix.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn cloud_routes_are_held_to_the_clouds_limits() {
        // Parsed only: nothing is sent to these addresses.
        let f = findings(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nname = \"azure\"\nzones = [\"azmk8s.io\"]\nupstreams = [\"168.63.129.16\"]\ntimeout = \"3s\"\n\
             [[route]]\nname = \"aws\"\nzones = [\"amazonaws.com\"]\nupstreams = [\"169.254.169.253\"]\nmax_qps = 5000\n\
             [[route]]\nname = \"ok\"\nzones = [\"windows.net\"]\nupstreams = [\"168.63.129.16:53\"]\nmax_qps = 900\n",
        );
        let find = |s: &str| {
            f.iter()
                .find(|x| x.1.contains(s))
                .unwrap_or_else(|| panic!("{s}: {f:?}"))
        };
        let t = find("route azure: timeout 3s");
        assert!(!t.0 && t.2.contains("more than 4 s"));
        let q = find("route azure: no max_qps");
        assert!(!q.0 && q.2.contains("max_qps = 900"));
        let aws = find("route aws: max_qps 5000");
        assert!(!aws.0 && aws.2.contains("1024"));
        assert!(find("route ok: max_qps 900 is within").0);
        assert!(find("listen 127.0.0.1:0").0);
    }
}
