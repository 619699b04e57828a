//! The file as written: serde structs that mirror it (unknown keys are errors, values
//! keep their spans) and the parsers for the strings in it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::error::{ConfigError, SourceText};
use super::types::*;
use crate::acl::Cidr;
use crate::clients::OverLimit;
use crate::wire;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) acl: Option<RawAcl>,
    pub(super) cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    pub(super) route: Vec<Spanned<RawRoute>>,
    /// Fragments: paths or glob patterns, relative to this file.
    pub(super) include: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) local: Option<RawLocal>,
    pub(super) dnstap: Option<Spanned<RawDnstap>>,
}

/// `[dnstap]`: where the messages go, which ones, and how many client queries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnstap {
    pub(super) socket: Spanned<String>,
    pub(super) client_query: Option<bool>,
    pub(super) client_response: Option<bool>,
    pub(super) forwarder_query: Option<bool>,
    pub(super) forwarder_response: Option<bool>,
    pub(super) client_sample_rate: Option<Spanned<i64>>,
}

/// `[local]`: zone-file lines and hosts files.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocal {
    pub(super) records: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A fragment (`include`): `[[route]]` tables. The other top-level tables are read
/// only to say where they are, since a fragment may not hold them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFragment {
    #[serde(default)]
    pub(super) route: Vec<Spanned<RawRoute>>,
    pub(super) server: Option<Spanned<toml::Value>>,
    pub(super) acl: Option<Spanned<toml::Value>>,
    pub(super) cache: Option<Spanned<toml::Value>>,
    pub(super) include: Option<Spanned<toml::Value>>,
    pub(super) local: Option<RawLocal>,
    pub(super) dnstap: Option<Spanned<toml::Value>>,
}

/// `[cache]`, and the same keys (but `max_entries`) in a route's `cache = { ... }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) max_entries: Option<Spanned<NonZeroUsize>>,
    pub(super) min_ttl: Option<Spanned<Humane>>,
    pub(super) max_ttl: Option<Spanned<Humane>>,
    pub(super) negative_max_ttl: Option<Spanned<Humane>>,
    pub(super) servfail_ttl: Option<Spanned<Humane>>,
    pub(super) serve_stale: Option<Spanned<Humane>>,
    pub(super) prefetch: Option<bool>,
}

/// A route's `cache`: `false`/`true`, or a table overriding `[cache]`.
pub(super) enum RawRouteCache {
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
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) tcp_idle_timeout: Option<Spanned<Humane>>,
    pub(super) tcp_max_connections: Option<NonZeroUsize>,
    pub(super) tcp_max_pipelined: Option<NonZeroUsize>,
    pub(super) tcp_max_queries_per_connection: Option<NonZeroUsize>,
    pub(super) tcp_max_lifetime: Option<Spanned<Humane>>,
    pub(super) tcp_max_connections_per_client: Option<NonZeroUsize>,
    pub(super) max_inflight: Option<NonZeroUsize>,
    pub(super) udp_threads: Option<Spanned<NonZeroUsize>>,
    pub(super) log_format: Option<LogFormatValue>,
    pub(super) any_queries: Option<AnyQueriesValue>,
    pub(super) query_log: Option<bool>,
    pub(super) metrics: Option<Spanned<String>>,
    /// Removed: read only to say what replaced it (`[[route]] ready`).
    pub(super) ready_requires_upstreams: Option<Spanned<toml::Value>>,
    pub(super) client_qps: Option<u32>,
    pub(super) client_burst: Option<Spanned<u32>>,
    pub(super) client_max_inflight: Option<u32>,
    pub(super) client_limit_action: Option<OverLimitValue>,
    pub(super) client_limit_exempt: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) loop_detection: Option<bool>,
    pub(super) upstream_udp_reuse: Option<Spanned<u32>>,
    pub(super) identity: Option<Spanned<String>>,
    pub(super) control: Option<Spanned<String>>,
    pub(super) tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) https_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) tls_cert: Option<Spanned<String>>,
    pub(super) tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcl {
    pub(super) allow: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) zones: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) presets: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) nxdomain_fallback: Option<Spanned<String>>,
    pub(super) expect_private: Option<ExpectPrivateValue>,
    pub(super) claim_cnames: Option<Spanned<bool>>,
    pub(super) upstreams: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) policy: Option<UpstreamOrderValue>,
    pub(super) timeout: Option<Spanned<Humane>>,
    pub(super) try_timeout: Option<Spanned<Humane>>,
    pub(super) max_fails: Option<u32>,
    pub(super) health_check: Option<Spanned<Humane>>,
    pub(super) cache: Option<Spanned<RawRouteCache>>,
    pub(super) max_qps: Option<std::num::NonZeroU32>,
    pub(super) retransmit_budget: Option<RetransmitBudgetValue>,
    pub(super) transport: Option<UpstreamTransportValue>,
    pub(super) ready: Option<RouteReadinessValue>,
    pub(super) tls_ca: Option<Spanned<String>>,
    pub(super) tls_pins: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) tls_insecure_no_verify: Option<Spanned<bool>>,
}

/// Scalar values that parse from a string with a message saying what was expected;
/// toml puts the value's span on the error, and a value of another type is told what
/// the file should hold (`timeout = 5`: "expected a duration string such as \"5s\"").
/// (Inside arrays toml would point at the array instead, so list elements stay
/// `Spanned<String>` and are parsed in `validate` with `parse_list`.)
macro_rules! string_value {
    ($name:ident, $inner:ty, $expecting:expr, $parse:expr) => {
        pub(super) struct $name(pub(super) $inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        let parse: fn(&str) -> Result<$inner, String> = $parse;
                        parse(s).map($name).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// `retransmit_budget`: a percentage string ("5%", at most "50%"), or `0` (off). A
/// bare number other than 0 is refused, since 5 and 0.05 would each read as the other.
pub(super) struct RetransmitBudgetValue(pub(super) f64);

impl<'de> Deserialize<'de> for RetransmitBudgetValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RetransmitBudgetValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as \"5%\", or 0 to turn early retransmission off")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                let share = s
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .filter(|p| (0.0..=50.0).contains(p))
                    .ok_or_else(|| {
                        E::custom(format!(
                            "expected a percentage from \"0%\" to \"50%\" such as \"5%\", got {s:?}"
                        ))
                    })?;
                Ok(RetransmitBudgetValue(share / 100.0))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
                match n {
                    0 => Ok(RetransmitBudgetValue(0.0)),
                    _ => Err(E::custom(format!(
                        "expected a percentage string such as \"5%\" (or 0 for off), got the number {n}: write retransmit_budget = \"{n}%\""
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected a percentage string such as \"5%\" (or 0 for off), got the number {n}: write retransmit_budget = \"{}%\"",
                    n * 100.0
                )))
            }
        }
        d.deserialize_any(V)
    }
}

string_value!(Humane, Duration, "a duration string such as \"5s\"", |s| {
    humantime::parse_duration(s).map_err(|e| {
        format!("expected a duration like \"250ms\", \"5s\" or \"1h\", got {s:?} ({e})")
    })
});
string_value!(
    LogFormatValue,
    LogFormat,
    "\"human\" or \"json\"",
    |s| match s {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected \"human\" or \"json\", got {s:?}")),
    }
);
string_value!(
    AnyQueriesValue,
    AnyQueries,
    "\"hinfo\", \"refuse\" or \"forward\"",
    |s| match s {
        "hinfo" => Ok(AnyQueries::Hinfo),
        "refuse" => Ok(AnyQueries::Refuse),
        "forward" => Ok(AnyQueries::Forward),
        _ => Err(format!(
            "expected \"hinfo\", \"refuse\" or \"forward\", got {s:?}"
        )),
    }
);
string_value!(
    OverLimitValue,
    OverLimit,
    "\"drop\" or \"refuse\"",
    |s| match s {
        "drop" => Ok(OverLimit::Drop),
        "refuse" => Ok(OverLimit::Refuse),
        _ => Err(format!("expected \"drop\" or \"refuse\", got {s:?}")),
    }
);
string_value!(
    ExpectPrivateValue,
    ExpectPrivate,
    "\"warn\" or \"enforce\"",
    |s| match s {
        "warn" => Ok(ExpectPrivate::Warn),
        "enforce" => Ok(ExpectPrivate::Enforce),
        _ => Err(format!("expected \"warn\" or \"enforce\", got {s:?}")),
    }
);
string_value!(
    UpstreamOrderValue,
    UpstreamOrder,
    "\"sequential\", \"round_robin\" or \"random\"",
    |s| match s {
        "sequential" => Ok(UpstreamOrder::Sequential),
        "round_robin" => Ok(UpstreamOrder::RoundRobin),
        "random" => Ok(UpstreamOrder::Random),
        _ => Err(format!(
            "expected \"sequential\", \"round_robin\" or \"random\", got {s:?}"
        )),
    }
);

string_value!(
    RouteReadinessValue,
    RouteReadiness,
    "\"required\" or \"ignored\"",
    |s| match s {
        "required" => Ok(RouteReadiness::Required),
        "ignored" => Ok(RouteReadiness::Ignored),
        _ => Err(format!("expected \"required\" or \"ignored\", got {s:?}")),
    }
);

string_value!(
    UpstreamTransportValue,
    UpstreamTransport,
    "\"udp\" or \"tcp\"",
    |s| match s {
        "udp" => Ok(UpstreamTransport::Udp),
        "tcp" => Ok(UpstreamTransport::Tcp),
        _ => Err(format!("expected \"udp\" or \"tcp\", got {s:?}")),
    }
);

pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    parse_addr(s).map_err(|e| {
        e.or_expected(format!(
            "expected an address like \"0.0.0.0:53\", \"127.0.0.1\" or \"[::]:53\", got {s:?}"
        ))
    })
}

/// A listen address for a transport whose port is not 53 when unwritten.
pub(super) fn parse_addr_with_port(s: &str, port: u16) -> Result<SocketAddr, String> {
    parse_addr_port(s, port).map_err(|e| {
        e.or_expected(format!(
            "expected an address like \"0.0.0.0:{port}\", \"127.0.0.1\" or \"[::]:{port}\", got {s:?}"
        ))
    })
}

pub(super) fn parse_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::from_str(s).map_err(|e| format!("expected a network like \"10.0.0.0/8\": {e}"))
}

pub(super) fn parse_zone(s: &str) -> Result<Vec<u8>, String> {
    if s.split('.').any(|l| l == "*") {
        return Err(format!(
            "{s:?}: no wildcards; a zone already covers every name below it"
        ));
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let name = rest.split(['/', ':']).next().unwrap_or(rest);
        return Err(format!(
            "{s:?} is a URL ({scheme}://): a zone is a DNS name, such as {name:?}"
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{s:?}: {bad:?} is in no DNS name a zone is made of (letters, digits, '-', '_' and '.')"
        ));
    }
    let mut w = wire::name_from_str(s).map_err(|e| format!("{s:?} is not a zone name: {e}"))?;
    wire::lowercase(&mut w);
    Ok(w)
}

/// An upstream address, or `None` for "system".
pub(super) fn parse_upstream(s: &str) -> Result<Option<(SocketAddr, Option<UpstreamTls>)>, String> {
    if s == "system" {
        return Ok(None);
    }
    let (text, tls, port) = match s.strip_prefix("tls://") {
        Some(rest) => {
            let (addr, name) = match rest.split_once('#') {
                Some((a, n)) => (a, Some(n)),
                None => (rest, None),
            };
            if let Some(n) = name {
                crate::tls::client::server_name(Some(n), std::net::Ipv4Addr::UNSPECIFIED.into())
                    .map_err(|e| format!("{s:?}: {e}"))?;
            }
            let name = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
            (addr, Some(UpstreamTls { name }), DOT_PORT)
        }
        None if s.contains("://") => {
            return Err(format!(
                "{s:?}: the only scheme an upstream takes is tls:// (DNS over TLS); plain DNS is written without one"
            ))
        }
        None => (s, None, DNS_PORT),
    };
    match parse_addr_port(text, port) {
        Ok(a) if a.port() == 0 => Err(format!("{s:?}: port 0 is not a port to send to")),
        Ok(a) if a.ip().is_unspecified() => {
            Err(format!("{s:?}: cannot send to an unspecified address"))
        }
        Ok(a) => Ok(Some((a, tls))),
        Err(e) => Err(e.or_expected(format!(
            "expected \"IP\", \"IP:PORT\", \"[IPv6]:PORT\", \"tls://IP[:PORT]#NAME\" or \"system\", got {s:?}"
        ))),
    }
}

/// Parses each element of a list, locating an error at the element itself.
pub(super) fn parse_list<T>(
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

/// Why a text is not an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddrError {
    NotAnAddress,
    /// An IPv6 address without brackets whose last group could be a port.
    Ambiguous(String),
}

impl AddrError {
    /// The message: the ambiguity's own, or `expected` for any other text.
    pub(crate) fn or_expected(self, expected: String) -> String {
        match self {
            AddrError::NotAnAddress => expected,
            AddrError::Ambiguous(m) => m,
        }
    }
}

/// "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT"; the port defaults to 53. An IPv6
/// address without brackets whose last group reads like a port ("fd00::53:5353",
/// "::1:5562") is refused: it would silently be that address on port 53.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, AddrError> {
    parse_addr_port(s, DNS_PORT)
}

/// `parse_addr` with another port for an address written without one.
pub(super) fn parse_addr_port(s: &str, default: u16) -> Result<SocketAddr, AddrError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    let ip: IpAddr = bracketed
        .unwrap_or(s)
        .parse()
        .map_err(|_| AddrError::NotAnAddress)?;
    if let (None, IpAddr::V6(_)) = (bracketed, ip) {
        if let Some((address, port)) = s.rsplit_once(':') {
            let reads_like_a_port = !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && port.parse::<u16>().is_ok();
            if reads_like_a_port && address.parse::<std::net::Ipv6Addr>().is_ok() {
                return Err(AddrError::Ambiguous(format!(
                    "{s:?} is ambiguous: write \"[{address}]:{port}\" for port {port} of {address}, or \"[{s}]\" for that address on port {default} (an IPv6 address with a port takes brackets)"
                )));
            }
        }
    }
    Ok(SocketAddr::new(ip, default))
}
