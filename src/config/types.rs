//! The validated configuration the server runs on, and its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::acl::Acl;
use crate::clients::ClientLimitConfig;

pub const DEFAULT_PATH: &str = "/etc/zonefwd/zonefwd.toml";
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Queries per pooled upstream socket; see `server.upstream_udp_reuse`.
pub const DEFAULT_UPSTREAM_UDP_REUSE: u32 = 10;
pub(super) const MAX_UPSTREAM_UDP_REUSE: u32 = 1000;
pub(super) const DNS_PORT: u16 = 53;

/// DNS over TLS (RFC 7858 section 3.1) and HTTPS: the ports of an address written
/// without one in `tls://`, `tls_listen` and `https_listen`.
pub const DOT_PORT: u16 = 853;
pub const HTTPS_PORT: u16 = 443;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:53";
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_TCP_MAX_PIPELINED: usize = 64;
pub const DEFAULT_TCP_MAX_QUERIES_PER_CONNECTION: usize = 1000;
pub const DEFAULT_TCP_MAX_LIFETIME: Duration = Duration::from_secs(300);
pub const DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
pub const DEFAULT_MAX_INFLIGHT: usize = 10_000;
/// Per client (IPv4 address or IPv6 /64): well above a host's needs, below what one
/// client would need to crowd out the rest. On-prem DNS servers forwarding for a whole
/// site belong in `client_limit_exempt`.
pub const DEFAULT_CLIENT_QPS: u32 = 2000;
/// Unbound's `wait-limit` default: queries one client may have waiting on upstreams.
pub const DEFAULT_CLIENT_MAX_INFLIGHT: u32 = 1000;
pub const MAX_UDP_THREADS: usize = 64;

/// One UDP thread per CPU this process may use.
pub fn default_udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_UDP_THREADS))
}
/// Above Azure's advice of more than 4 s for forwarding to 168.63.129.16.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_FAILS: u32 = 3;
/// `retransmit_budget`: wasted early retransmissions may reach this share of an
/// upstream's tries.
pub const DEFAULT_RETRANSMIT_BUDGET: f64 = 0.05;
pub const DEFAULT_HEALTH_CHECK: Duration = Duration::from_secs(1);

/// A validated configuration, ready to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: String,
    pub server: Server,
    pub acl: Acl,
    pub routes: Vec<Route>,
    /// Entries in the one response cache all routes share.
    pub cache_max_entries: usize,
    /// `[local]`: records zonefwd answers itself, from the main file, its fragments and
    /// the hosts files, in that order.
    pub local: Vec<LocalRecord>,
    /// `[dnstap]`: where dnstap messages go; none without the table.
    pub dnstap: Option<DnstapConfig>,
    /// Things that are allowed but probably not meant; logged at startup, printed by
    /// `check`, and findings of `doctor`.
    pub warnings: Vec<Warning>,
}

/// `[dnstap]`: the collector's socket, the message types sent, and the share of
/// client queries sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnstapConfig {
    pub socket: DnstapSocket,
    pub client_query: bool,
    pub client_response: bool,
    pub forwarder_query: bool,
    pub forwarder_response: bool,
    /// One client query in this many is sent, with its response (1: every one).
    pub client_sample_rate: u32,
}

/// Where a dnstap collector listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnstapSocket {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for DnstapSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnstapSocket::Unix(p) => write!(f, "unix:{}", p.display()),
            DnstapSocket::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// One `[local]` record: owner and RDATA in wire form (owner lowercased, RDATA names
/// uncompressed) for answering, and the record itself for splicing a CNAME.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRecord {
    pub name: Vec<u8>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
    pub record: hickory_proto::rr::Record,
}

/// A setting that is allowed but probably not meant, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub text: String,
    pub fix: String,
}

impl Warning {
    pub(super) fn new(text: impl Into<String>, fix: impl Into<String>) -> Self {
        Warning {
            text: text.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a route uses the response cache: `[cache]`, overlaid by the route's own
/// `cache = { ... }`, or disabled by `cache = false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub enabled: bool,
    /// Positive TTLs are raised to at least this and cut to at most `max_ttl`.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Cap on a negative answer's TTL, itself min(SOA TTL, SOA MINIMUM) (RFC 2308 5).
    pub negative_max_ttl: Duration,
    /// How long a failure (SERVFAIL, or no answer at all) is remembered; at most 5
    /// minutes (RFC 9520 section 3.2).
    pub servfail_ttl: Duration,
    /// How long past expiry an entry may still be served when upstreams fail (RFC
    /// 8767); zero disables.
    pub serve_stale: Duration,
    /// Refresh an entry that is asked for again in the last tenth of its TTL.
    pub prefetch: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: true,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86400),
            negative_max_ttl: Duration::from_secs(3600),
            servfail_ttl: Duration::from_secs(5),
            serve_stale: Duration::from_secs(86400),
            prefetch: true,
        }
    }
}

pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 100_000;
/// RFC 9520 section 3.2: a resolution failure may be cached for at most 5 minutes.
pub const MAX_SERVFAIL_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Each address is served on UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// RFC 7766 6.2.3: close a TCP connection with nothing in flight after this long.
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    /// Queries one TCP connection may have in flight; reading pauses beyond it.
    pub tcp_max_pipelined: usize,
    /// Queries one TCP connection may send in all; then it is closed once answered
    /// (RFC 9210 section 4; dnsdist's CVE-2025-30193 was the unbounded case).
    pub tcp_max_queries_per_connection: usize,
    /// A TCP connection is closed, once its answers are out, after this long.
    pub tcp_max_lifetime: Duration,
    /// TCP connections one client address may hold at once.
    pub tcp_max_connections_per_client: usize,
    /// Client queries being forwarded at once, all transports; beyond it, SERVFAIL.
    pub max_inflight: usize,
    /// Threads serving UDP, each with its own socket on every listen address.
    pub udp_threads: usize,
    pub log_format: LogFormat,
    pub any_queries: AnyQueries,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; off when `None`.
    pub metrics: Option<SocketAddr>,
    /// One log line per query (client, name, type, route, upstream, rcode, latency,
    /// cache outcome), at info level on the target `zonefwd::query`.
    pub query_log: bool,
    /// Per-client query rate and in-flight cap (`client_*` keys).
    pub client_limits: ClientLimitConfig,
    /// Probe every upstream for forwarding loops (`loopcheck`).
    pub loop_detection: bool,
    /// The replica's name (`identity`): sent as NSID (RFC 5001) to queries that ask
    /// for it and as the TXT answer to CHAOS `id.server.` and `hostname.bind.` (RFC
    /// 4892); `None`: neither.
    pub identity: Option<String>,
    /// The control socket (`control`): a Unix stream socket for `zonefwd ctl`; `None`:
    /// none.
    pub control: Option<PathBuf>,
    /// Queries one upstream UDP socket (one random port) may carry, one at a time,
    /// within `exchange::POOL_MAX_AGE`; 1 is a fresh socket per query.
    pub upstream_udp_reuse: u32,
    /// `tls_listen`, `https_listen` and their certificate (`tls_cert`, `tls_key`).
    pub encrypted: EncryptedListeners,
}

/// What to do with ANY queries (RFC 8482).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyQueries {
    /// Answer with one synthesised HINFO "RFC8482" record; nothing goes upstream.
    Hinfo,
    /// Answer REFUSED.
    Refuse,
    /// Forward like any other query.
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text for a person (and journald).
    Human,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOrder {
    Sequential,
    RoundRobin,
    Random,
}

impl UpstreamOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOrder::Sequential => "sequential",
            UpstreamOrder::RoundRobin => "round_robin",
            UpstreamOrder::Random => "random",
        }
    }
}

/// `transport`: how a route's queries travel to its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamTransport {
    /// UDP, and TCP after a truncated reply (RFC 7766 section 5).
    Udp,
    /// Every query over TCP, pipelined on kept connections (RFC 7766 sections 6.2.1
    /// and 7): for upstreams that drop UDP under load, as 168.63.129.16 does.
    Tcp,
}

impl UpstreamTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamTransport::Udp => "udp",
            UpstreamTransport::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub addr: SocketAddr,
    /// Came from `"system"` (resolv.conf), for display.
    pub from_system: bool,
    /// `tls://`: asked over DNS over TLS (RFC 7858), never in plain text.
    pub tls: Option<UpstreamTls>,
}

/// What a `tls://ADDR#NAME` upstream is asked as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// `#NAME`: sent as SNI, and what its certificate must name; lowercase, without
    /// a final dot.
    pub name: Option<String>,
}

impl UpstreamAddr {
    /// As the file writes it: `10.0.0.1:53`, `tls://10.1.0.4:853#dns.corp.example`.
    pub fn spec(&self) -> String {
        match &self.tls {
            None => self.addr.to_string(),
            Some(UpstreamTls { name: None }) => format!("tls://{}", self.addr),
            Some(UpstreamTls { name: Some(n) }) => format!("tls://{}#{n}", self.addr),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// The file the route is in: the main one, or a fragment (`include`).
    pub source: String,
    /// Lowercase uncompressed wire names.
    pub zones: Vec<Vec<u8>>,
    pub upstreams: Vec<UpstreamAddr>,
    /// `policy`: the order the upstreams are tried in.
    pub order: UpstreamOrder,
    /// Whole-query deadline.
    pub timeout: Duration,
    /// After this long without a reply, the next try starts (the earlier one may still
    /// answer until the deadline).
    pub try_timeout: Duration,
    /// Consecutive failures (timeouts, network errors, malformed replies) after which an
    /// upstream is skipped and probed in the background; 0 disables.
    pub max_fails: u32,
    /// Probe interval for an upstream marked down.
    pub health_check: Duration,
    pub cache: CachePolicy,
    /// Queries per second each upstream of this route may be sent; `None`: no limit.
    pub max_qps: Option<u32>,
    /// `retransmit_budget`: the share of an upstream's tries that wasted early
    /// retransmissions may reach (0.05 for "5%"); 0 turns early retransmission off.
    pub retransmit_budget: f64,
    /// Presets (`presets/catalog.toml`) whose zones this route took.
    pub presets: Vec<String>,
    /// NXDOMAIN from this route is asked again through this route (an index into
    /// `Config::routes`), like Azure's "fallback to internet" on a private zone link.
    pub nxdomain_fallback: Option<usize>,
    /// A/AAAA answers outside private ranges: logged and counted, or refused.
    pub expect_private: Option<ExpectPrivate>,
    /// A CNAME in another route's answer whose target falls under this route's zones
    /// is resolved through this route, and the chain spliced.
    pub claim_cnames: bool,
    /// `transport`: UDP (TCP after truncation), or TCP for every query.
    pub transport: UpstreamTransport,
    /// `ready`: whether `/readyz` fails while every upstream of this route is down.
    pub ready: RouteReadiness,
    /// `tls_ca`, `tls_pins`, `tls_insecure_no_verify`: how its `tls://` upstreams are
    /// checked; `None` when it has none.
    pub tls: Option<crate::tls::client::Trust>,
}

/// `ready`: what one route's outage does to the replica's readiness. Per route, so
/// that one team's dead upstream cannot take every replica out of a load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteReadiness {
    /// `/readyz` is 503 while every upstream of this route is down: for the route the
    /// replicas exist for (the cloud zones), where another replica may still reach it.
    Required,
    /// The route's outage is answered (stale, SERVFAIL) but not reported as unready.
    #[default]
    Ignored,
}

impl RouteReadiness {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReadiness::Required => "required",
            RouteReadiness::Ignored => "ignored",
        }
    }
}

/// `expect_private`: what a public address in an answer from this route means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectPrivate {
    /// Log it and count it; the client gets the answer.
    Warn,
    /// The client gets SERVFAIL instead of a public address.
    Enforce,
}

/// Where the outside world is read from while loading, so tests can point elsewhere.
#[derive(Debug, Clone)]
pub struct LoadEnv {
    pub resolv_conf: PathBuf,
}

impl Default for LoadEnv {
    fn default() -> Self {
        LoadEnv {
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
        }
    }
}

/// The `[server] tcp_*` settings, fixed until a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    pub idle: Duration,
    pub pipelined: usize,
    pub max_queries: usize,
    pub lifetime: Duration,
    pub per_client: usize,
    pub max_connections: usize,
}

impl TcpOptions {
    pub fn of(server: &Server) -> Self {
        TcpOptions {
            idle: server.tcp_idle_timeout,
            pipelined: server.tcp_max_pipelined,
            max_queries: server.tcp_max_queries_per_connection,
            lifetime: server.tcp_max_lifetime,
            per_client: server.tcp_max_connections_per_client,
            max_connections: server.tcp_max_connections,
        }
    }
}

/// The encrypted listeners and the certificate they share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncryptedListeners {
    /// `tls_listen`: DNS over TLS (RFC 7858).
    pub tls: Vec<SocketAddr>,
    /// `https_listen`: DNS over HTTPS (RFC 8484).
    pub https: Vec<SocketAddr>,
    /// `tls_cert` and `tls_key`, loaded; present when either list is.
    pub identity: Option<crate::tls::server::Identity>,
}
