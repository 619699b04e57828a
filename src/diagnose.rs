//! `zonefwd query` and `zonefwd doctor`: live checks of a configuration, from the host
//! zonefwd runs on, the way zonefwd itself would send the queries.

use std::fmt::Write;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::claims::Claims;
use crate::config::DnstapSocket;
use crate::config::{
    is_resolved_stub, is_self, read_resolv_conf, Config, Route, UpstreamAddr, UpstreamTransport,
};
use crate::dnstap;
use crate::life::Lifecycle;
use crate::listen::holder::{self, Holder};
use crate::outcome::Outcome;
use crate::presets::{AWS_VPC_RESOLVER, AZURE_DNS};
use crate::router::Router;
use crate::tls::client::Dialer;
use crate::tls::server::Identity;
use crate::upstream::{random_id, udp_exchange_once, Exchanged, Previous, TryError, UpstreamSet};
use crate::wire::{self, Query, ReplyError};

/// `zonefwd query NAME TYPE`: resolves now through the route `explain` would pick,
/// with its upstreams, fallback and guard, and prints what came back. Exit status:
/// true when an answer (any rcode but SERVFAIL) came back.
pub async fn query(config: &Config, name: &str, qtype: u16) -> Result<(String, bool), String> {
    let qname = wire::name_from_str(name).map_err(|e| format!("{name:?}: {e}"))?;
    let q = Query::own(qname, qtype);
    let router = Arc::new(Router::for_config(config));
    let Some(m) = router.route(&q.qname_lower, qtype) else {
        return Ok((
            format!(
                "{name}: no route matches and there is no \".\" route: zonefwd answers REFUSED\n"
            ),
            false,
        ));
    };
    let life = Lifecycle::default();
    let sets = UpstreamSet::for_config(config, &life, &mut Previous::default(), None);
    let set = &sets[m.route];
    let route = &config.routes[m.route];
    let started = Instant::now();
    let outcome = set.resolve(&q).await;
    let guarded = set.public_answers() > 0;
    // The same follow-up the server makes: CNAMEs into a claiming route's zones.
    let outcome = match outcome {
        Outcome::Answered { answer, by } => {
            let upstream = by.upstream();
            match (
                wire::normalize(&answer.bytes, &answer.reply),
                Claims::for_config(config, &router, &sets),
            ) {
                (None, _) => Err("the reply cannot be relayed".to_string()),
                (Some(n), None) => Ok((n, upstream, vec![])),
                (Some(n), Some(claims)) => match claims.chase(&q, set, n).await {
                    Ok(c) => Ok((c.reply, upstream, c.hops)),
                    Err(e) => Err(format!("claim_cnames: {e}")),
                },
            }
        }
        Outcome::Failed if guarded => Err(
            "SERVFAIL: expect_private = \"enforce\" refused a public address for a name in a private zone (is the private DNS zone linked to this network?)".to_string(),
        ),
        Outcome::Failed => Err(format!(
            "no usable answer within {} (SERVFAIL)",
            humantime::format_duration(set.timeout())
        )),
        Outcome::OverBudget => Err("max_qps spent on every upstream (SERVFAIL)".to_string()),
    };
    let rtt = started.elapsed();
    life.shutdown.cancel();
    let mut out = String::new();
    let _ = writeln!(out, "route:     {}", set.route);
    let ok = match outcome {
        Ok((answer, upstream, hops)) => {
            let _ = writeln!(out, "upstream:  {upstream}");
            let _ = writeln!(out, "time:      {:.1} ms", rtt.as_secs_f64() * 1000.0);
            for h in &hops {
                let _ = writeln!(
                    out,
                    "claimed:   {} asked through route {} ({}): claim_cnames",
                    h.name, h.route, h.upstream
                );
            }
            let msg = Message::from_vec(&answer.bytes)
                .map_err(|e| format!("cannot decode the reply: {e}"))?;
            let _ = writeln!(out, "rcode:     {}", wire::rcode::name(answer.rcode));
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
            if guarded {
                let public: Vec<String> =
                    wire::public_addresses(&answer.bytes, answer.question_end, answer.answers)
                        .iter()
                        .map(|ip| ip.to_string())
                        .collect();
                let _ = writeln!(
                    out,
                    "warning:   public address(es) {} for a name in a private zone (expect_private = \"warn\"): is the private DNS zone linked to this network?",
                    public.join(", "),
                );
            }
            is_definitive(answer.rcode)
        }
        Err(why) => {
            let _ = writeln!(out, "result:    {why}");
            if !guarded {
                for line in ask_each_upstream(route, &q).await {
                    let _ = writeln!(out, "tried:     {line}");
                }
            }
            false
        }
    };
    Ok((out, ok))
}

/// NOERROR and NXDOMAIN are answers (`query` exits 0); SERVFAIL, REFUSED and the
/// other error rcodes are not (exit 1).
fn is_definitive(rcode: u16) -> bool {
    rcode == wire::rcode::NOERROR || rcode == wire::rcode::NXDOMAIN
}

/// After a failed resolution, each upstream of the route asked the question once more
/// over the route's transport, to say why: "Connection refused", silence, an rcode.
async fn ask_each_upstream(route: &Route, q: &Query) -> Vec<String> {
    let tcp = route.transport == UpstreamTransport::Tcp;
    let proto = route.transport.as_str();
    let mut lines = Vec::new();
    for u in &route.upstreams {
        let how = Over::of(route, u, tcp);
        let what = match probe_query(u.addr, q, &how, route.try_timeout).await {
            ProbeResult::Answered { rcode, ms } => {
                format!("{} in {ms:.0} ms", wire::rcode::name(rcode))
            }
            ProbeResult::Failed(e) => e,
            ProbeResult::Silent => format!(
                "no answer within {}",
                humantime::format_duration(route.try_timeout)
            ),
        };
        let proto = if u.tls.is_some() { "tls" } else { proto };
        lines.push(format!("{} over {proto}: {what}", u.spec()));
    }
    lines
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

/// Whether the dnstap collector takes a stream (checked as the user running doctor).
async fn dnstap_finding(socket: &DnstapSocket) -> Finding {
    match dnstap::check_collector(socket).await {
        Ok(()) => good(format!("dnstap: the collector at {socket} accepts a dnstap stream")),
        Err(e) => bad(
            format!("dnstap: the collector at {socket}: {e}"),
            "start the collector there (Vector's dnstap source, dnstap-receiver, fstrm_capture), or correct [dnstap] socket; a Unix socket must be writable by the service's user (the unit's DynamicUser: SupplementaryGroups= with the socket's group). DNS is answered meanwhile; frames queue, then drop",
        ),
    }
}

/// A question an upstream of this route should answer: the SOA of the route's first
/// zone (what it is for), or of the root for the catch-all.
fn probe_for(route: &Route) -> Query {
    let zone = route.zones.first().cloned().unwrap_or_else(|| vec![0]);
    Query::own(zone, wire::TYPE_SOA)
}

/// The user the service runs as, for the TCP checks: when `doctor` runs as root they
/// run in a child process with this user's IDs, since a firewall may admit TCP to the
/// cloud resolver from root only (Azure/WALinuxAgent#1673).
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// This binary, which the child runs (`zonefwd probe-tcp`).
    pub exe: PathBuf,
}

/// How one probe came out: the rcode, or why there is none.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ProbeResult {
    Answered { rcode: u16, ms: f64 },
    Failed(String),
    Silent,
}

/// How a probe travels: a `tls://` upstream only ever over TLS.
pub enum Over {
    Udp,
    Tcp,
    Tls(Box<Dialer>),
}

impl Over {
    /// For upstream `u` of `route`: TLS for a `tls://` one, else `tcp` or UDP.
    fn of(route: &Route, u: &UpstreamAddr, tcp: bool) -> Over {
        match (&u.tls, &route.tls) {
            (Some(t), Some(trust)) => {
                Over::Tls(Box::new(Dialer::new(t.name.as_deref(), u.addr.ip(), trust)))
            }
            _ if tcp => Over::Tcp,
            _ => Over::Udp,
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Over::Udp => "udp",
            Over::Tcp => "tcp",
            Over::Tls(_) => "tls",
        }
    }
}

/// One probe of `addr` for `zone`'s SOA, over TCP or UDP, within `per_try`.
pub async fn probe(addr: SocketAddr, zone: &str, tcp: bool, per_try: Duration) -> ProbeResult {
    let Ok(qname) = wire::name_from_str(zone) else {
        return ProbeResult::Failed(format!("{zone:?} is not a name"));
    };
    let how = if tcp { Over::Tcp } else { Over::Udp };
    probe_query(addr, &Query::own(qname, wire::TYPE_SOA), &how, per_try).await
}

/// `q` sent once to `addr` as `how` says, within `per_try`.
async fn probe_query(addr: SocketAddr, q: &Query, how: &Over, per_try: Duration) -> ProbeResult {
    let started = Instant::now();
    let result = tokio::time::timeout(per_try, async {
        match how {
            Over::Udp => udp_exchange_once(addr, q).await,
            Over::Tcp => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                stream_exchange_once(stream, addr, q).await
            }
            Over::Tls(dialer) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let tls = dialer
                    .handshake(stream, &addr.to_string())
                    .await
                    .map_err(TryError::Tls)?;
                stream_exchange_once(tls, addr, q).await
            }
        }
    })
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(a)) => ProbeResult::Answered {
            rcode: a.reply.rcode,
            ms,
        },
        Ok(Err(e)) => ProbeResult::Failed(e.to_string()),
        Err(_) => ProbeResult::Silent,
    }
}

/// One exchange on a connection of its own (TCP, or TLS over it): `doctor` checks
/// that a new connection can be made, where the server asks over kept connections.
/// Replies that do not match are skipped.
async fn stream_exchange_once<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    server: SocketAddr,
    q: &Query,
) -> Result<Exchanged, TryError> {
    let id = random_id();
    stream
        .write_all(&wire::framed(&wire::build_upstream_query(q, id, true)))
        .await?;
    stream.flush().await?;
    loop {
        let buf = match wire::read_framed(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(TryError::Closed),
            Err(e) => return Err(e.into()),
        };
        match wire::parse_reply(&buf, id, q) {
            Ok(reply) => return Ok(Exchanged { bytes: buf, reply }),
            Err(ReplyError::Mismatch) => {
                tracing::debug!(%server, "ignoring a tcp message that does not match the query");
            }
            Err(ReplyError::Malformed(e)) => return Err(TryError::Malformed(e)),
        }
    }
}

/// `probe` over TCP in a child process running as `user`.
async fn probe_as(
    user: &ServiceUser,
    addr: SocketAddr,
    zone: &str,
    per_try: Duration,
) -> ProbeResult {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(&user.exe);
    child
        .args(["probe-tcp", &addr.to_string(), zone, "--timeout"])
        .arg(humantime::format_duration(per_try).to_string())
        // std drops the supplementary groups too when root sets a uid.
        .uid(user.uid)
        .gid(user.gid);
    let ran = tokio::task::spawn_blocking(move || child.output()).await;
    match ran {
        Ok(Ok(out)) => serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            ProbeResult::Failed(format!(
                "the check as user {} did not run: {}",
                user.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }),
        Ok(Err(e)) => ProbeResult::Failed(format!(
            "could not run the check as user {}: {e}",
            user.name
        )),
        Err(e) => ProbeResult::Failed(e.to_string()),
    }
}

async fn probe_upstream(
    route: &Route,
    addr: SocketAddr,
    per_try: Duration,
    user: Option<&ServiceUser>,
) -> Vec<Finding> {
    let zone = wire::name_to_string(&probe_for(route).qname);
    let mut out = Vec::new();
    for tcp in [false, true] {
        let (result, as_user) = match user {
            Some(u) if tcp => (
                probe_as(u, addr, &zone, per_try).await,
                format!(" as user {} (uid {})", u.name, u.uid),
            ),
            _ => (probe(addr, &zone, tcp, per_try).await, String::new()),
        };
        let proto = if tcp { "tcp" } else { "udp" };
        let what = format!(
            "route {}: upstream {addr} over {proto}{as_user} ({zone} SOA)",
            route.name
        );
        out.push(match result {
            ProbeResult::Answered { rcode, ms } if rcode == wire::rcode::SERVFAIL || rcode == wire::rcode::REFUSED => bad(
                format!("{what}: answered {} in {ms:.0} ms", wire::rcode::name(rcode)),
                format!("the server will not resolve {zone} for this host: check that it serves or may recurse for this zone, and that its ACL admits this host"),
            ),
            ProbeResult::Answered { rcode, ms } => good(format!("{what}: {} in {ms:.0} ms", wire::rcode::name(rcode))),
            ProbeResult::Failed(e) => bad(format!("{what}: {e}"), network_fix(route, tcp)),
            ProbeResult::Silent => bad(
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

/// A `tls://` upstream: a handshake that checks its certificate as the route does,
/// and a query over it; never asked in plain text.
async fn probe_tls_upstream(route: &Route, u: &UpstreamAddr, per_try: Duration) -> Finding {
    let zone = wire::name_to_string(&probe_for(route).qname);
    let how = Over::of(route, u, true);
    let what = format!(
        "route {}: upstream {} over {} ({zone} SOA)",
        route.name,
        u.spec(),
        how.as_str()
    );
    // A handshake and a query: give the handshake its own time too.
    let within = per_try + crate::tls::client::HANDSHAKE_TIMEOUT;
    match probe_query(u.addr, &probe_for(route), &how, within).await {
        ProbeResult::Answered { rcode, ms } => good(format!("{what}: {} in {ms:.0} ms", wire::rcode::name(rcode))),
        ProbeResult::Failed(e) => {
            let fix = match &how {
                Over::Tls(d) => d.last_failure().map(|f| f.failure.fix()),
                _ => None,
            };
            bad(format!("{what}: {e}"), fix.unwrap_or("check the address, routing and firewall between this host and the upstream's port (853 for DNS over TLS)"))
        }
        ProbeResult::Silent => bad(
            format!("{what}: no answer within {}", humantime::format_duration(within)),
            "the upstream is unreachable or silent on this port: check the address, port (853 for DNS over TLS), routing and firewall",
        ),
    }
}

/// What to do about an upstream this host cannot reach over `tcp` or UDP.
fn network_fix(route: &Route, tcp: bool) -> String {
    const AGENT: &str = "on Azure, some guest-agent versions admit TCP to 168.63.129.16 from root only (WALinuxAgent#1673): update the agent";
    match (tcp, route.transport) {
        (false, _) => "check the address, routing and firewall between this host and the upstream".to_string(),
        (true, UpstreamTransport::Tcp) => format!("every query of this route goes over TCP (transport = \"tcp\"), so none will be answered: allow tcp/53 to the upstream for the service's user ({AGENT}), or set transport = \"udp\""),
        (true, UpstreamTransport::Udp) => format!("TCP is needed for truncated replies: allow tcp/53 to the upstream for the service's user ({AGENT}, or run zonefwd as a user the firewall admits)"),
    }
}

/// Can this process bind `addr`? Ports below 1024 need root or CAP_NET_BIND_SERVICE.
fn bind_finding(addr: SocketAddr) -> Finding {
    match std::net::UdpSocket::bind(addr) {
        Ok(_) => good(format!("listen {addr}: this process may bind it")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => in_use_finding(addr),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bad(
            format!("listen {addr}: permission denied"),
            "ports below 1024 need CAP_NET_BIND_SERVICE: the systemd unit grants it (AmbientCapabilities), the container image sets it on the binary; or run doctor as the service user",
        ),
        Err(e) => bad(format!("listen {addr}: {e}"), "is the address on this host?"),
    }
}

/// `addr` is in use: fine when a zonefwd holds it (the service, running), a failure
/// naming the program and the fix when another one does.
fn in_use_finding(addr: SocketAddr) -> Finding {
    let holders = holder::holders(addr);
    let others: Vec<&Holder> = holders
        .iter()
        .filter(|h| h.process.as_ref().is_none_or(|(_, c)| c != "zonefwd"))
        .collect();
    if !holders.is_empty() && others.is_empty() {
        let pids: Vec<String> = holders
            .iter()
            .filter_map(|h| h.process.as_ref().map(|(pid, _)| pid.to_string()))
            .collect();
        return good(format!(
            "listen {addr}: held by a running zonefwd (pid {})",
            pids.join(", ")
        ));
    }
    let named: Vec<String> = others.iter().map(|h| h.to_string()).collect();
    bad(
        format!(
            "listen {addr}: in use by {}",
            if named.is_empty() {
                "another program".to_string()
            } else {
                named.join(", ")
            }
        ),
        holder::fix(addr, &holders),
    )
}

/// Where `doctor` reads how this host resolves names.
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub resolv_conf: PathBuf,
    /// systemd-resolved's own upstreams, when resolv.conf points at its stub.
    pub resolved_upstreams: PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        HostFiles {
            resolv_conf: PathBuf::from(crate::config::DEFAULT_RESOLV_CONF),
            resolved_upstreams: PathBuf::from("/run/systemd/resolve/resolv.conf"),
        }
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    let v: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    v.join(", ")
}

/// resolv.conf and loops: what `"system"` means on this host, and whether it leads
/// back to zonefwd. The loader already refuses `"system"` naming a listen address;
/// this follows systemd-resolved's stub one step further, where the common bastion
/// setup (resolved forwarding to zonefwd on 127.0.0.1) closes the loop.
fn resolv_findings(config: &Config, files: &HostFiles) -> Vec<Finding> {
    let system: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| r.upstreams.iter().any(|u| u.from_system))
        .map(|r| r.name.as_str())
        .collect();
    let path = files.resolv_conf.display();
    let ns = match read_resolv_conf(&files.resolv_conf) {
        Ok((ns, _)) => ns,
        Err(e) if system.is_empty() => {
            return vec![good(format!("{path}: {e}; no route uses \"system\""))];
        }
        Err(e) => {
            return vec![bad(
                format!("{path}: {e}"),
                format!(
                    "route(s) {} use \"system\": name their upstreams instead",
                    system.join(", ")
                ),
            )]
        }
    };
    let is_zonefwd = |a: &SocketAddr| config.server.listen.iter().any(|l| is_self(*l, *a));
    let mut out = Vec::new();
    let own: Vec<SocketAddr> = ns.iter().copied().filter(is_zonefwd).collect();
    if !own.is_empty() {
        out.push(good(format!(
            "{path}: this host resolves through zonefwd ({})",
            list(&own)
        )));
    }
    let stub = ns.iter().any(|a| is_resolved_stub(a.ip()));
    if system.is_empty() {
        out.push(good(format!(
            "{path}: nameservers {}; no route uses \"system\"",
            list(&ns)
        )));
        return out;
    }
    let routes = system.join(", ");
    if !stub {
        out.push(good(format!(
            "route(s) {routes}: \"system\" = {} from {path}",
            list(&ns)
        )));
        return out;
    }
    let resolved = files.resolved_upstreams.display();
    out.push(match read_resolv_conf(&files.resolved_upstreams) {
        Ok((up, _)) if up.iter().any(is_zonefwd) => bad(
            format!("route(s) {routes}: \"system\" is systemd-resolved's stub, which forwards to {} ({resolved}): zonefwd's own listen address, a forwarding loop", list(&up)),
            "name the real DNS servers as the route's upstreams instead of \"system\" (resolvectl status shows them)",
        ),
        Ok((up, _)) => good(format!(
            "route(s) {routes}: \"system\" is systemd-resolved's stub, which forwards to {} ({resolved})",
            list(&up)
        )),
        Err(e) => good(format!(
            "route(s) {routes}: \"system\" is systemd-resolved's stub; its upstreams are unknown ({e}); loop detection will catch a loop at run time"
        )),
    });
    out
}

/// The listeners' certificate: valid and not due, or what to do.
fn certificate_finding(id: &Identity, now: SystemTime) -> Finding {
    match id.expiry_problem(now) {
        None => good(format!("{}: {}", id.label(), id.validity)),
        Some((text, fix)) => bad(text, fix),
    }
}

/// The checks that need no network: listen addresses, warnings, resolv.conf, and
/// each route's settings against the cloud resolvers' known behaviour.
pub fn static_findings(config: &Config, files: &HostFiles) -> Vec<Finding> {
    let mut findings = Vec::new();
    for addr in &config.server.listen {
        findings.push(bind_finding(*addr));
    }
    // The configuration's own warnings (the Azure timeout among them) are findings
    // with their fixes; the checks below are only those the loader does not make.
    for w in &config.warnings {
        findings.push(bad(format!("check: {}", w.text), w.fix.clone()));
    }
    findings.extend(resolv_findings(config, files));
    if let Some(id) = &config.server.encrypted.identity {
        findings.push(certificate_finding(id, SystemTime::now()));
    }
    for route in &config.routes {
        let cloud_azure = route.upstreams.iter().any(|u| u.addr.ip() == AZURE_DNS);
        let cloud_aws = route
            .upstreams
            .iter()
            .any(|u| u.addr.ip() == AWS_VPC_RESOLVER);
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

/// `zonefwd doctor`: `static_findings`, then every upstream on UDP and TCP, the TCP
/// checks as `user` when given. True when all is well.
pub async fn doctor(config: &Config, user: Option<&ServiceUser>) -> (String, bool) {
    let mut findings = static_findings(config, &HostFiles::default());
    for route in &config.routes {
        let per_try = route.try_timeout.min(Duration::from_secs(3));
        for u in &route.upstreams {
            if u.tls.is_some() {
                findings.push(probe_tls_upstream(route, u, per_try).await);
            } else {
                findings.extend(probe_upstream(route, u.addr, per_try, user).await);
            }
        }
    }
    if let Some(d) = &config.dnstap {
        findings.push(dnstap_finding(&d.socket).await);
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
        static_findings(&c, &HostFiles::default())
            .into_iter()
            .map(|f| (f.ok, f.what, f.fix.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn resolv_conf_through_systemd_resolved_back_to_zonefwd_is_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        let resolved = dir.path().join("resolved.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
        let env = LoadEnv {
            resolv_conf: resolv.clone(),
        };
        let files = HostFiles {
            resolv_conf: resolv.clone(),
            resolved_upstreams: resolved.clone(),
        };
        let text = "[server]\nlisten = [\"0.0.0.0:53\"]\n[acl]\nallow = [\"10.0.0.0/8\"]\n[[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"system\"]\n";
        let c = Config::parse(text, "t.toml", &env).unwrap();
        let run = |files: &HostFiles| -> Vec<(bool, String, String)> {
            resolv_findings(&c, files)
                .into_iter()
                .map(|f| (f.ok, f.what, f.fix.unwrap_or_default()))
                .collect()
        };

        // resolved forwards to zonefwd (127.0.0.1:53, under 0.0.0.0:53): a loop.
        std::fs::write(&resolved, "nameserver 127.0.0.1\n").unwrap();
        let f = run(&files);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(!f[0].0 && f[0].1.contains("forwarding loop"), "{f:?}");
        assert!(f[0].2.contains("resolvectl status"), "{f:?}");

        // resolved forwards to on-prem DNS: fine, and said.
        std::fs::write(&resolved, "nameserver 10.0.0.2\nnameserver 10.0.0.3\n").unwrap();
        let f = run(&files);
        assert!(
            f[0].0 && f[0].1.contains("forwards to 10.0.0.2, 10.0.0.3"),
            "{f:?}"
        );

        // resolved's file unreadable: not a failure, but said.
        std::fs::remove_file(&resolved).unwrap();
        let f = run(&files);
        assert!(f[0].0 && f[0].1.contains("upstreams are unknown"), "{f:?}");

        // This host resolving through zonefwd, with no route on "system": fine.
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        let text = text.replace("[\"system\"]", "[\"10.0.0.2\"]");
        let c = Config::parse(&text, "t.toml", &env).unwrap();
        let f: Vec<Finding> = resolv_findings(&c, &files);
        assert!(f.iter().all(|f| f.ok));
        assert!(f[0]
            .what
            .contains("this host resolves through zonefwd (127.0.0.1)"));
        assert!(f[1].what.contains("no route uses \"system\""));
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
        let t = find("timeout 3s to 168.63.129.16");
        assert!(!t.0 && t.2.contains("timeout = \"5s\""));
        // Said once: the loader's warning is the finding, doctor does not repeat it.
        assert_eq!(
            f.iter().filter(|x| x.1.contains("timeout")).count(),
            1,
            "{f:?}"
        );
        let q = find("route azure: no max_qps");
        assert!(!q.0 && q.2.contains("max_qps = 900"));
        let aws = find("route aws: max_qps 5000");
        assert!(!aws.0 && aws.2.contains("1024"));
        assert!(find("route ok: max_qps 900 is within").0);
        assert!(find("listen 127.0.0.1:0").0);
    }
}
