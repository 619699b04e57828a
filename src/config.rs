//! The configuration file: typed TOML, defaults, and validation whose every error names
//! the file, line, column and key.
//!
//! Two layers: `Raw*` structs mirror the file (unknown keys are errors, values keep
//! their spans), then `validate` turns them into the runtime `Config` and performs the
//! cross-field checks, still able to point at the offending text.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::acl::{Acl, Cidr};
use crate::clients::{ClientLimitConfig, OverLimit};
use crate::wire;

pub const DEFAULT_PATH: &str = "/etc/zonefwd/zonefwd.toml";
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Queries per pooled upstream socket; see `server.upstream_udp_reuse`.
pub const DEFAULT_UPSTREAM_UDP_REUSE: u32 = 10;
const MAX_UPSTREAM_UDP_REUSE: u32 = 1000;
const DNS_PORT: u16 = 53;

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
    /// Things that are allowed but probably not meant; logged at startup, printed by
    /// `check`, and findings of `doctor`.
    pub warnings: Vec<Warning>,
}

/// A setting that is allowed but probably not meant, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub text: String,
    pub fix: String,
}

impl Warning {
    fn new(text: impl Into<String>, fix: impl Into<String>) -> Self {
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
    /// `/readyz` also fails while any route has every upstream marked down.
    pub ready_requires_upstreams: bool,
    /// One log line per query (client, name, type, route, upstream, rcode, latency,
    /// cache outcome), at info level on the target `zonefwd::query`.
    pub query_log: bool,
    /// Per-client query rate and in-flight cap (`client_*` keys).
    pub client_limits: ClientLimitConfig,
    /// Probe every upstream for forwarding loops (`loopcheck`).
    pub loop_detection: bool,
    /// Queries one upstream UDP socket (one random port) may carry, one at a time,
    /// within `exchange::POOL_MAX_AGE`; 1 is a fresh socket per query.
    pub upstream_udp_reuse: u32,
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
pub enum Policy {
    Sequential,
    RoundRobin,
    Random,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Sequential => "sequential",
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub addr: SocketAddr,
    /// Came from `"system"` (resolv.conf), for display.
    pub from_system: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Lowercase uncompressed wire names.
    pub zones: Vec<Vec<u8>>,
    pub upstreams: Vec<UpstreamAddr>,
    pub policy: Policy,
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Located>),
}

/// An error at a place in the file.
#[derive(Debug)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    /// The offending line of the file and the width of the marked part.
    pub excerpt: Option<(String, usize)>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some((text, width)) = &self.excerpt {
            let gutter = self.line.to_string();
            write!(
                f,
                "\n{pad} |\n{gutter} | {text}\n{pad} | {indent}{marks}",
                pad = " ".repeat(gutter.len()),
                indent = " ".repeat(self.column - 1),
                marks = "^".repeat((*width).max(1)),
            )?;
        }
        Ok(())
    }
}

struct SourceText<'a> {
    file: &'a str,
    text: &'a str,
}

impl SourceText<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let column = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..span.end.clamp(start, line_end)]
            .chars()
            .count();
        ConfigError::Invalid(Box::new(Located {
            file: self.file.to_string(),
            line: self.text[..start].matches('\n').count() + 1,
            column,
            key: key.to_string(),
            message: message.into(),
            excerpt: Some((line_text.to_string(), width)),
        }))
    }
}

// ---- the file as written -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    acl: Option<RawAcl>,
    cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

/// `[cache]`, and the same keys (but `max_entries`) in a route's `cache = { ... }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_entries: Option<Spanned<NonZeroUsize>>,
    min_ttl: Option<Spanned<Humane>>,
    max_ttl: Option<Spanned<Humane>>,
    negative_max_ttl: Option<Spanned<Humane>>,
    servfail_ttl: Option<Spanned<Humane>>,
    serve_stale: Option<Spanned<Humane>>,
    prefetch: Option<bool>,
}

/// A route's `cache`: `false`/`true`, or a table overriding `[cache]`.
enum RawRouteCache {
    Switch(bool),
    Overrides(RawCache),
}

impl<'de> Deserialize<'de> for RawRouteCache {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRouteCache;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a table of cache settings such as { negative_max_ttl = \"10s\" }")
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawRouteCache, E> {
                Ok(RawRouteCache::Switch(b))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawRouteCache, A::Error> {
                RawCache::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRouteCache::Overrides)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    tcp_idle_timeout: Option<Spanned<Humane>>,
    tcp_max_connections: Option<NonZeroUsize>,
    tcp_max_pipelined: Option<NonZeroUsize>,
    tcp_max_queries_per_connection: Option<NonZeroUsize>,
    tcp_max_lifetime: Option<Spanned<Humane>>,
    tcp_max_connections_per_client: Option<NonZeroUsize>,
    max_inflight: Option<NonZeroUsize>,
    udp_threads: Option<Spanned<NonZeroUsize>>,
    log_format: Option<LogFormatValue>,
    any_queries: Option<AnyQueriesValue>,
    query_log: Option<bool>,
    metrics: Option<Spanned<String>>,
    ready_requires_upstreams: Option<bool>,
    client_qps: Option<u32>,
    client_burst: Option<Spanned<u32>>,
    client_max_inflight: Option<u32>,
    client_limit_action: Option<OverLimitValue>,
    client_limit_exempt: Option<Spanned<Vec<Spanned<String>>>>,
    loop_detection: Option<bool>,
    upstream_udp_reuse: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    allow: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    zones: Option<Spanned<Vec<Spanned<String>>>>,
    presets: Option<Spanned<Vec<Spanned<String>>>>,
    nxdomain_fallback: Option<Spanned<String>>,
    expect_private: Option<ExpectPrivateValue>,
    claim_cnames: Option<Spanned<bool>>,
    upstreams: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    policy: Option<PolicyValue>,
    timeout: Option<Spanned<Humane>>,
    try_timeout: Option<Spanned<Humane>>,
    max_fails: Option<u32>,
    health_check: Option<Spanned<Humane>>,
    cache: Option<Spanned<RawRouteCache>>,
    max_qps: Option<std::num::NonZeroU32>,
}

/// Scalar values that parse from a string with a message saying what was expected;
/// toml puts the value's span on the error. (Inside arrays toml would point at the
/// array instead, so list elements stay `Spanned<String>` and are parsed in `validate`
/// with `parse_list`.)
macro_rules! string_value {
    ($name:ident, $inner:ty, $parse:expr) => {
        struct $name($inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let parse: fn(&str) -> Result<$inner, String> = $parse;
                parse(&s).map($name).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_value!(Humane, Duration, |s| {
    humantime::parse_duration(s).map_err(|e| {
        format!("expected a duration like \"250ms\", \"5s\" or \"1h\", got {s:?} ({e})")
    })
});
string_value!(LogFormatValue, LogFormat, |s| match s {
    "human" => Ok(LogFormat::Human),
    "json" => Ok(LogFormat::Json),
    _ => Err(format!("expected \"human\" or \"json\", got {s:?}")),
});
string_value!(AnyQueriesValue, AnyQueries, |s| match s {
    "hinfo" => Ok(AnyQueries::Hinfo),
    "refuse" => Ok(AnyQueries::Refuse),
    "forward" => Ok(AnyQueries::Forward),
    _ => Err(format!(
        "expected \"hinfo\", \"refuse\" or \"forward\", got {s:?}"
    )),
});
string_value!(OverLimitValue, OverLimit, |s| match s {
    "drop" => Ok(OverLimit::Drop),
    "refuse" => Ok(OverLimit::Refuse),
    _ => Err(format!("expected \"drop\" or \"refuse\", got {s:?}")),
});
string_value!(ExpectPrivateValue, ExpectPrivate, |s| match s {
    "warn" => Ok(ExpectPrivate::Warn),
    "enforce" => Ok(ExpectPrivate::Enforce),
    _ => Err(format!("expected \"warn\" or \"enforce\", got {s:?}")),
});
string_value!(PolicyValue, Policy, |s| match s {
    "sequential" => Ok(Policy::Sequential),
    "round_robin" => Ok(Policy::RoundRobin),
    "random" => Ok(Policy::Random),
    _ => Err(format!(
        "expected \"sequential\", \"round_robin\" or \"random\", got {s:?}"
    )),
});

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s).ok_or_else(|| {
        format!("expected an address like \"0.0.0.0:53\", \"127.0.0.1\" or \"[::]:53\", got {s:?}")
    })
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::from_str(s).map_err(|e| format!("expected a network like \"10.0.0.0/8\": {e}"))
}

fn parse_zone(s: &str) -> Result<Vec<u8>, String> {
    if s.split('.').any(|l| l == "*") {
        return Err(format!(
            "{s:?}: no wildcards; a zone already covers every name below it"
        ));
    }
    let mut w = wire::name_from_str(s).map_err(|e| format!("{s:?} is not a zone name: {e}"))?;
    wire::lowercase(&mut w);
    Ok(w)
}

/// An upstream address, or `None` for "system".
fn parse_upstream(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "system" {
        return Ok(None);
    }
    match parse_addr(s) {
        Some(a) if a.port() == 0 => Err(format!("{s:?}: port 0 is not a port to send to")),
        Some(a) if a.ip().is_unspecified() => {
            Err(format!("{s:?}: cannot send to an unspecified address"))
        }
        Some(a) => Ok(Some(a)),
        None => Err(format!(
            "expected \"IP\", \"IP:PORT\", \"[IPv6]:PORT\" or \"system\", got {s:?}"
        )),
    }
}

/// Parses each element of a list, locating an error at the element itself.
fn parse_list<T>(
    list: Vec<Spanned<String>>,
    src: &SourceText<'_>,
    key: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<(T, Range<usize>)>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let span = s.span();
            parse(s.get_ref())
                .map(|v| (v, span.clone()))
                .map_err(|m| src.error(span, &format!("{key}[{i}]"), m))
        })
        .collect()
}

/// "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT"; the port defaults to 53.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
}

// ---- loading ------------------------------------------------------------------

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &LoadEnv) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Config::parse(&text, &display, env)
    }

    /// Validates `text`; `file` is only used in messages.
    pub fn parse(text: &str, file: &str, env: &LoadEnv) -> Result<Config, ConfigError> {
        let src = SourceText { file, text };
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| src.error(e.span().unwrap_or(0..0), "", e.message().to_string()))?;
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = key_path(e.path());
            let inner = e.into_inner();
            src.error(
                inner.span().unwrap_or(0..0),
                &key,
                inner.message().to_string(),
            )
        })?;
        validate(raw, &src, env)
    }
}

/// `route[1].timeout`, without the markers `Spanned` adds to the path.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn validate(raw: RawFile, src: &SourceText<'_>, env: &LoadEnv) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let server = validate_server(raw.server, src)?;

    let acl = match raw.acl {
        None => Acl::default_private(),
        Some(a) => {
            if a.allow.get_ref().is_empty() {
                return Err(src.error(
                    a.allow.span(),
                    "acl.allow",
                    "an empty list would refuse every client; omit [acl] for the private-range default",
                ));
            }
            let allow: Vec<Cidr> = parse_list(a.allow.into_inner(), src, "acl.allow", parse_cidr)?
                .into_iter()
                .map(|(c, _)| c)
                .collect();
            if allow.iter().any(Cidr::is_everything) {
                warnings.push(Warning::new(
                    "acl.allow admits every address: zonefwd answers anyone who can reach a listen address (an open resolver unless a firewall says otherwise)",
                    "list the networks of your clients and on-prem DNS servers in acl.allow",
                ));
            }
            Acl::new(allow)
        }
    };

    let (cache_max_entries, global_cache) = match raw.cache {
        None => (DEFAULT_CACHE_MAX_ENTRIES, CachePolicy::default()),
        Some(c) => {
            let c = c.into_inner();
            let max = c
                .max_entries
                .as_ref()
                .map_or(DEFAULT_CACHE_MAX_ENTRIES, |m| m.get_ref().get());
            (max, cache_policy(CachePolicy::default(), c, src, "cache")?)
        }
    };

    if raw.route.is_empty() {
        return Err(src.error(
            0..0,
            "route",
            "no [[route]] tables: add at least one, e.g. zones = [\".\"] with your DNS servers",
        ));
    }

    let mut routes = Vec::with_capacity(raw.route.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    // zone -> (route name, line) for duplicate messages.
    let mut zone_owner: HashMap<Vec<u8>, (String, usize)> = HashMap::new();
    let mut resolv: Option<Vec<SocketAddr>> = None;
    // (route index, target name, key) resolved once every route is known.
    let mut fallbacks: Vec<(usize, Spanned<String>, String)> = Vec::new();

    for (i, spanned) in raw.route.into_iter().enumerate() {
        let route_span = spanned.span();
        let r = spanned.into_inner();
        let key = |k: &str| format!("route[{i}].{k}");

        let name_span = r.name.span();
        let name = r.name.into_inner();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(src.error(
                name_span,
                &key("name"),
                format!("{name:?}: use letters, digits, '-', '_' and '.' (it appears in logs and metrics)"),
            ));
        }
        if names.insert(name.clone(), i).is_some() {
            return Err(src.error(
                name_span,
                &key("name"),
                format!("route name {name:?} is used twice"),
            ));
        }

        // (zone, where it came from, which key) from `zones` and `presets`.
        let mut listed: Vec<(Vec<u8>, Range<usize>, String)> = Vec::new();
        match &r.zones {
            None if r.presets.is_none() => {
                return Err(src.error(
                    route_span.clone(),
                    &key("zones"),
                    "missing field `zones`: a route needs zones (\".\" for everything) or presets",
                ));
            }
            Some(z) if z.get_ref().is_empty() && r.presets.is_none() => {
                return Err(src.error(
                    z.span(),
                    &key("zones"),
                    "empty list: a route needs at least one zone (\".\" for everything)",
                ));
            }
            _ => {}
        }
        if let Some(z) = r.zones {
            for (zone, span) in parse_list(z.into_inner(), src, &key("zones"), parse_zone)? {
                listed.push((zone, span, key("zones")));
            }
        }
        let mut presets = Vec::new();
        if let Some(p) = r.presets {
            if p.get_ref().is_empty() {
                return Err(src.error(p.span(), &key("presets"), "empty list"));
            }
            for (j, name) in p.into_inner().into_iter().enumerate() {
                let span = name.span();
                let Some(preset) = crate::presets::find(name.get_ref()) else {
                    return Err(src.error(
                        span,
                        &format!("{}[{j}]", key("presets")),
                        format!(
                            "no preset {:?}; presets: {} (zonefwd presets lists them)",
                            name.get_ref(),
                            crate::presets::names().join(", ")
                        ),
                    ));
                };
                for zone in preset.wire_zones() {
                    listed.push((zone, span.clone(), format!("{}[{j}]", key("presets"))));
                }
                presets.push(preset.name.clone());
            }
        }
        let mut zones = Vec::new();
        for (zone, span, k) in listed {
            if zones.contains(&zone) {
                // Listed by hand and by a preset, or by two presets: once is enough.
                continue;
            }
            let line = src.text[..span.start].matches('\n').count() + 1;
            if let Some((other, other_line)) = zone_owner.get(&zone) {
                return Err(src.error(
                    span,
                    &k,
                    format!(
                        "zone {} is already routed by route {other:?} (line {other_line}); a zone belongs to one route",
                        wire::name_to_string(&zone)
                    ),
                ));
            }
            zone_owner.insert(zone.clone(), (name.clone(), line));
            zones.push(zone);
        }

        if r.upstreams.get_ref().is_empty() {
            return Err(src.error(
                r.upstreams.span(),
                &key("upstreams"),
                "empty list: a route needs at least one upstream",
            ));
        }
        let mut upstreams: Vec<UpstreamAddr> = Vec::new();
        for (spec, span) in parse_list(
            r.upstreams.into_inner(),
            src,
            &key("upstreams"),
            parse_upstream,
        )? {
            let added: Vec<UpstreamAddr> = match spec {
                Some(addr) => vec![UpstreamAddr {
                    addr,
                    from_system: false,
                }],
                None => {
                    if resolv.is_none() {
                        let (found, skipped) = read_resolv_conf(&env.resolv_conf)
                            .map_err(|m| src.error(span.clone(), &key("upstreams"), m))?;
                        for entry in skipped {
                            warnings.push(Warning::new(
                                format!(
                                    "{}: skipping nameserver {entry}, which zonefwd cannot use",
                                    env.resolv_conf.display()
                                ),
                                "name the upstreams in the route instead of \"system\"",
                            ));
                        }
                        resolv = Some(found);
                    }
                    let list = resolv.clone().unwrap_or_default();
                    if let Some((ns, l)) = list.iter().find_map(|ns| {
                        server
                            .listen
                            .iter()
                            .find(|l| is_self(**l, *ns))
                            .map(|l| (ns, l))
                    }) {
                        return Err(src.error(
                            span,
                            &key("upstreams"),
                            format!(
                                "\"system\" resolves to {ns} from {}, which is zonefwd's own listen address {l}: queries would loop; name the real DNS servers instead",
                                env.resolv_conf.display()
                            ),
                        ));
                    }
                    list.into_iter()
                        .map(|addr| UpstreamAddr {
                            addr,
                            from_system: true,
                        })
                        .collect()
                }
            };
            for a in added {
                if upstreams.iter().any(|u| u.addr == a.addr) {
                    return Err(src.error(
                        span,
                        &key("upstreams"),
                        format!("upstream {} is listed twice", a.addr),
                    ));
                }
                if server.listen.iter().any(|l| is_self(*l, a.addr)) {
                    return Err(src.error(
                        span,
                        &key("upstreams"),
                        format!(
                            "upstream {} is zonefwd's own listen address: queries would loop",
                            a.addr
                        ),
                    ));
                }
                upstreams.push(a);
            }
        }

        let claim_cnames = match r.claim_cnames {
            Some(c) if *c.get_ref() && zones.iter().any(|z| z == &[0]) => {
                return Err(src.error(
                    c.span(),
                    &key("claim_cnames"),
                    "this route routes \".\", so it would claim every CNAME target: list the zones to claim on a route of their own",
                ));
            }
            Some(c) => c.into_inner(),
            None => false,
        };
        let timeout = positive(r.timeout, src, &key("timeout"))?.unwrap_or(DEFAULT_TIMEOUT);
        let try_span = r.try_timeout.as_ref().map(|t| t.span());
        let try_timeout = positive(r.try_timeout, src, &key("try_timeout"))?
            .unwrap_or(DEFAULT_TRY_TIMEOUT.min(timeout));
        if try_timeout > timeout {
            return Err(src.error(
                try_span.unwrap_or(0..0),
                &key("try_timeout"),
                format!(
                    "{} is longer than the route's timeout of {}: a try cannot outlast the whole query",
                    humantime::format_duration(try_timeout),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        let health_check =
            positive(r.health_check, src, &key("health_check"))?.unwrap_or(DEFAULT_HEALTH_CHECK);
        if upstreams
            .iter()
            .any(|u| u.addr.ip() == IpAddr::from([168, 63, 129, 16]))
            && timeout <= Duration::from_secs(4)
        {
            warnings.push(Warning::new(
                format!(
                    "route {name:?}: timeout {} to 168.63.129.16 is at most 4s; Azure advises more, or private names may resolve to public addresses",
                    humantime::format_duration(timeout)
                ),
                "timeout = \"5s\" on the route",
            ));
        }
        let cache = match r.cache.map(Spanned::into_inner) {
            None | Some(RawRouteCache::Switch(true)) => global_cache,
            Some(RawRouteCache::Switch(false)) => CachePolicy {
                enabled: false,
                ..global_cache
            },
            Some(RawRouteCache::Overrides(o)) => {
                if let Some(m) = &o.max_entries {
                    return Err(src.error(
                        m.span(),
                        &key("cache.max_entries"),
                        "the cache is shared by all routes: set max_entries in [cache]",
                    ));
                }
                cache_policy(global_cache, o, src, &key("cache"))?
            }
        };
        routes.push(Route {
            name,
            zones,
            upstreams,
            policy: r.policy.map_or(Policy::Sequential, |p| p.0),
            timeout,
            try_timeout,
            max_fails: r.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
            health_check,
            cache,
            max_qps: r.max_qps.map(|q| q.get()),
            presets,
            nxdomain_fallback: None,
            expect_private: r.expect_private.map(|e| e.0),
            claim_cnames,
        });
        if let Some(f) = r.nxdomain_fallback {
            fallbacks.push((i, f, key("nxdomain_fallback")));
        }
    }

    let sources: HashSet<usize> = fallbacks.iter().map(|f| f.0).collect();
    for (i, target, k) in fallbacks {
        let Some(j) = routes.iter().position(|r| &r.name == target.get_ref()) else {
            return Err(src.error(
                target.span(),
                &k,
                format!("no route named {:?}", target.get_ref()),
            ));
        };
        if j == i {
            return Err(src.error(target.span(), &k, "a route cannot fall back to itself"));
        }
        if sources.contains(&j) {
            return Err(src.error(
                target.span(),
                &k,
                format!(
                    "route {:?} has a fallback of its own: one step only",
                    routes[j].name
                ),
            ));
        }
        routes[i].nxdomain_fallback = Some(j);
    }

    if let Some(m) = server.metrics.filter(|m| !m.ip().is_loopback()) {
        warnings.push(Warning::new(
            format!(
                "server.metrics listens on {m}, beyond this host: the metrics and health endpoints have no authentication; firewall them or use a loopback address"
            ),
            "server.metrics = \"127.0.0.1:9153\", or a firewall rule that admits only the scraper",
        ));
    }
    for l in &server.listen {
        if !l.ip().is_loopback() && acl.entries().iter().any(Cidr::is_everything) {
            warnings.push(Warning::new(
                format!("listening on {l} with an acl that admits everyone"),
                "restrict acl.allow, or listen on an address only clients reach",
            ));
        }
    }

    Ok(Config {
        source: src.file.to_string(),
        server,
        acl,
        routes,
        cache_max_entries,
        warnings,
    })
}

/// `base` with the settings `raw` gives; `key` is where they are ("cache" or
/// "route[i].cache") for messages.
fn cache_policy(
    base: CachePolicy,
    raw: RawCache,
    src: &SourceText<'_>,
    key: &str,
) -> Result<CachePolicy, ConfigError> {
    let dur =
        |v: Option<Spanned<Humane>>, default: Duration| v.map_or(default, |d| d.into_inner().0);
    let max_span = raw.max_ttl.as_ref().map(|m| m.span());
    let servfail_span = raw.servfail_ttl.as_ref().map(|m| m.span());
    let p = CachePolicy {
        enabled: base.enabled,
        min_ttl: dur(raw.min_ttl, base.min_ttl),
        max_ttl: dur(raw.max_ttl, base.max_ttl),
        negative_max_ttl: dur(raw.negative_max_ttl, base.negative_max_ttl),
        servfail_ttl: dur(raw.servfail_ttl, base.servfail_ttl),
        serve_stale: dur(raw.serve_stale, base.serve_stale),
        prefetch: raw.prefetch.unwrap_or(base.prefetch),
    };
    if p.max_ttl < p.min_ttl {
        return Err(src.error(
            max_span.unwrap_or(0..0),
            &format!("{key}.max_ttl"),
            format!(
                "{} is below min_ttl ({})",
                humantime::format_duration(p.max_ttl),
                humantime::format_duration(p.min_ttl)
            ),
        ));
    }
    if p.servfail_ttl > MAX_SERVFAIL_TTL {
        return Err(src.error(
            servfail_span.unwrap_or(0..0),
            &format!("{key}.servfail_ttl"),
            "at most 5m: a failure must not be remembered longer (RFC 9520 3.2)",
        ));
    }
    Ok(p)
}

fn validate_server(raw: RawServer, src: &SourceText<'_>) -> Result<Server, ConfigError> {
    let qps = raw.client_qps.unwrap_or(DEFAULT_CLIENT_QPS);
    let listen = match raw.listen {
        None => vec![DEFAULT_LISTEN.parse().expect("valid default")],
        Some(l) => {
            if l.get_ref().is_empty() {
                return Err(src.error(
                    l.span(),
                    "server.listen",
                    "empty list: zonefwd needs an address to listen on",
                ));
            }
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for (addr, span) in parse_list(l.into_inner(), src, "server.listen", parse_listen)? {
                if !seen.insert(addr) {
                    return Err(src.error(
                        span,
                        "server.listen",
                        format!("{addr} is listed twice"),
                    ));
                }
                out.push(addr);
            }
            out
        }
    };
    Ok(Server {
        listen,
        tcp_idle_timeout: positive(raw.tcp_idle_timeout, src, "server.tcp_idle_timeout")?
            .unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT),
        tcp_max_connections: raw
            .tcp_max_connections
            .map_or(DEFAULT_TCP_MAX_CONNECTIONS, NonZeroUsize::get),
        tcp_max_pipelined: raw
            .tcp_max_pipelined
            .map_or(DEFAULT_TCP_MAX_PIPELINED, NonZeroUsize::get),
        max_inflight: raw
            .max_inflight
            .map_or(DEFAULT_MAX_INFLIGHT, NonZeroUsize::get),
        tcp_max_queries_per_connection: raw
            .tcp_max_queries_per_connection
            .map_or(DEFAULT_TCP_MAX_QUERIES_PER_CONNECTION, NonZeroUsize::get),
        tcp_max_lifetime: positive(raw.tcp_max_lifetime, src, "server.tcp_max_lifetime")?
            .unwrap_or(DEFAULT_TCP_MAX_LIFETIME),
        tcp_max_connections_per_client: raw
            .tcp_max_connections_per_client
            .map_or(DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT, NonZeroUsize::get),
        udp_threads: match raw.udp_threads {
            None => default_udp_threads(),
            Some(t) if t.get_ref().get() > MAX_UDP_THREADS => {
                return Err(src.error(
                    t.span(),
                    "server.udp_threads",
                    format!("at most {MAX_UDP_THREADS}"),
                ));
            }
            Some(t) => t.into_inner().get(),
        },
        log_format: raw.log_format.map_or(LogFormat::Human, |f| f.0),
        any_queries: raw.any_queries.map_or(AnyQueries::Hinfo, |a| a.0),
        query_log: raw.query_log.unwrap_or(false),
        metrics: match raw.metrics {
            None => None,
            Some(m) => Some(
                parse_listen(m.get_ref()).map_err(|e| src.error(m.span(), "server.metrics", e))?,
            ),
        },
        ready_requires_upstreams: raw.ready_requires_upstreams.unwrap_or(false),
        loop_detection: raw.loop_detection.unwrap_or(true),
        upstream_udp_reuse: match raw.upstream_udp_reuse {
            None => DEFAULT_UPSTREAM_UDP_REUSE,
            Some(r) if !(1..=MAX_UPSTREAM_UDP_REUSE).contains(r.get_ref()) => {
                return Err(src.error(
                    r.span(),
                    "server.upstream_udp_reuse",
                    format!("must be 1 (a fresh socket per query) to {MAX_UPSTREAM_UDP_REUSE}"),
                ));
            }
            Some(r) => r.into_inner(),
        },
        client_limits: ClientLimitConfig {
            qps,
            burst: match raw.client_burst {
                // One second's worth, but at least one query.
                None => qps.max(1),
                Some(b) if *b.get_ref() == 0 => {
                    return Err(src.error(
                        b.span(),
                        "server.client_burst",
                        "must be at least 1 (set client_qps = 0 to turn the rate limit off)",
                    ));
                }
                Some(b) => b.into_inner(),
            },
            max_inflight: raw
                .client_max_inflight
                .unwrap_or(DEFAULT_CLIENT_MAX_INFLIGHT),
            action: raw.client_limit_action.map_or(OverLimit::Drop, |a| a.0),
            exempt: Acl::new(match raw.client_limit_exempt {
                None => Vec::new(),
                Some(l) => parse_list(
                    l.into_inner(),
                    src,
                    "server.client_limit_exempt",
                    parse_cidr,
                )?
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            }),
        },
    })
}

fn positive(
    v: Option<Spanned<Humane>>,
    src: &SourceText<'_>,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) if s.get_ref().0.is_zero() => {
            Err(src.error(s.span(), key, "must be longer than zero"))
        }
        Some(s) => Ok(Some(s.into_inner().0)),
    }
}

/// Would sending to `upstream` reach this listener? The same address, or a wildcard
/// listener on the same port and a loopback upstream (other than systemd-resolved's
/// stub addresses, which hold their own more specific sockets).
pub(crate) fn is_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    if listen.port() != upstream.port() {
        return false;
    }
    if listen.ip() == upstream.ip() {
        return true;
    }
    listen.ip().is_unspecified()
        && listen.is_ipv4() == upstream.is_ipv4()
        && upstream.ip().is_loopback()
        && !is_resolved_stub(upstream.ip())
}

/// systemd-resolved's stub listeners: loopback addresses that are not zonefwd even
/// when it listens on 0.0.0.0.
pub(crate) fn is_resolved_stub(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 53]) || ip == IpAddr::from([127, 0, 0, 54])
}

/// The nameservers of a resolv.conf, port 53. Link-local IPv6 entries need a numeric
/// zone index (`fe80::1%2`); interface names are not resolved here.
/// The nameservers of a resolv.conf, and the entries skipped.
pub fn read_resolv_conf(path: &Path) -> Result<(Vec<SocketAddr>, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("\"system\" needs {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(ns) = words.next() else { continue };
        let addr = match ns.split_once('%') {
            None => ns
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, DNS_PORT)),
            Some((ip, zone)) => match (ip.parse::<Ipv6Addr>(), zone.parse::<u32>()) {
                (Ok(ip), Ok(zone)) => {
                    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, zone)))
                }
                _ => None,
            },
        };
        match addr {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => {}
            None => skipped.push(ns.to_string()),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "\"system\": {} lists no usable nameserver",
            path.display()
        ));
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> LoadEnv {
        LoadEnv {
            resolv_conf: PathBuf::from("/nonexistent/resolv.conf"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(
            "[[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n",
            "t.toml",
            &env(),
        )
        .unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.acl, Acl::default_private());
        let r = &c.routes[0];
        assert_eq!(r.upstreams[0].addr, "192.0.2.1:53".parse().unwrap());
        assert_eq!(
            (r.timeout, r.try_timeout),
            (DEFAULT_TIMEOUT, DEFAULT_TRY_TIMEOUT)
        );
        assert_eq!(r.zones, vec![vec![0]]);
        assert_eq!(r.policy, Policy::Sequential);
    }

    #[test]
    fn short_timeout_caps_the_default_try_timeout() {
        let c = Config::parse("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"[2001:db8::1]:5300\"]\ntimeout = \"500ms\"\n", "t.toml", &env()).unwrap();
        assert_eq!(c.routes[0].try_timeout, Duration::from_millis(500));
        assert_eq!(
            c.routes[0].upstreams[0].addr,
            "[2001:db8::1]:5300".parse().unwrap()
        );
    }

    #[test]
    fn error_display_points_at_the_text() {
        let e = Config::parse("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"5 parsecs\"\n", "z.toml", &env()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("z.toml:5:11: route[0].timeout: expected a duration"),
            "{s}"
        );
        assert!(
            s.contains("5 | timeout = \"5 parsecs\"\n  |           ^^^^^^^^^^^"),
            "{s}"
        );
    }

    #[test]
    fn resolv_conf_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%2\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver ::1\n").unwrap();
        let (got, skipped) = read_resolv_conf(&p).unwrap();
        assert_eq!(skipped, vec!["fe80::1%eth0".to_string()]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "192.0.2.53:53".parse().unwrap());
        assert!(matches!(got[1], SocketAddr::V6(a) if a.scope_id() == 2));
        std::fs::write(&p, "search x\n").unwrap();
        assert!(read_resolv_conf(&p)
            .unwrap_err()
            .contains("no usable nameserver"));
    }

    #[test]
    fn self_detection() {
        let l: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert!(is_self(l, "127.0.0.1:53".parse().unwrap()));
        assert!(!is_self(l, "127.0.0.53:53".parse().unwrap()));
        assert!(!is_self(l, "127.0.0.1:5353".parse().unwrap()));
        assert!(is_self(
            "10.0.0.4:53".parse().unwrap(),
            "10.0.0.4:53".parse().unwrap()
        ));
        assert!(!is_self(
            "[::]:53".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap()
        ));
    }
}
