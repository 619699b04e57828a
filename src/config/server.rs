//! Validation of `[server]`: listeners, TCP bounds, limits and switches.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Problems, SourceText};
use super::raw::*;
use super::types::*;
use crate::acl::Acl;
use crate::clients::{ClientLimitConfig, OverLimit};

/// `[server]`, each key in error recorded in `problems` and replaced by its default.
pub(super) fn validate_server(
    raw: RawServer,
    src: &SourceText<'_>,
    problems: &mut Problems,
) -> Server {
    let qps = raw.client_qps.unwrap_or(DEFAULT_CLIENT_QPS);
    let client_limits = problems.or(
        validate_client_limits(&raw, qps, src),
        ClientLimitConfig {
            qps,
            burst: qps.max(1),
            max_inflight: DEFAULT_CLIENT_MAX_INFLIGHT,
            action: OverLimit::Drop,
            exempt: Acl::new(Vec::new()),
        },
    );
    let identity = problems.or(validate_identity(raw.identity, src), None);
    let control = match raw.control {
        Some(c) if c.get_ref().is_empty() => {
            problems.push(src.locate(
                c.span(),
                "server.control",
                "empty: omit control for no control socket",
            ));
            None
        }
        c => c.map(|c| std::path::PathBuf::from(c.into_inner())),
    };
    if let Some(old) = &raw.ready_requires_upstreams {
        problems.push(src.locate(
            old.span(),
            "server.ready_requires_upstreams",
            "removed: readiness is per route now; set ready = \"required\" on the [[route]] whose outage should take this replica out of its load balancer (the cloud route), and leave the others out",
        ));
    }
    let listen = problems.or(
        validate_listen(raw.listen, src),
        vec![DEFAULT_LISTEN.parse().expect("valid default")],
    );
    let mut duration =
        |v, key: &str, default| problems.or(positive(v, src, key), None).unwrap_or(default);
    let tcp_idle_timeout = duration(
        raw.tcp_idle_timeout,
        "server.tcp_idle_timeout",
        DEFAULT_TCP_IDLE_TIMEOUT,
    );
    let tcp_max_lifetime = duration(
        raw.tcp_max_lifetime,
        "server.tcp_max_lifetime",
        DEFAULT_TCP_MAX_LIFETIME,
    );
    let udp_threads = udp_threads(raw.udp_threads, src, problems);
    let metrics = raw.metrics.and_then(|m| {
        parse_listen(m.get_ref())
            .map_err(|e| problems.push(src.locate(m.span(), "server.metrics", e)))
            .ok()
    });
    let upstream_udp_reuse = upstream_udp_reuse(raw.upstream_udp_reuse, src, problems);
    let encrypted = super::tls::listeners(
        super::tls::RawListeners {
            tls_listen: raw.tls_listen,
            https_listen: raw.https_listen,
            tls_cert: raw.tls_cert,
            tls_key: raw.tls_key,
        },
        &listen,
        src,
        problems,
    );
    Server {
        listen,
        tcp_idle_timeout,
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
        tcp_max_lifetime,
        tcp_max_connections_per_client: raw
            .tcp_max_connections_per_client
            .map_or(DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT, NonZeroUsize::get),
        udp_threads,
        log_format: raw.log_format.map_or(LogFormat::Human, |f| f.0),
        any_queries: raw.any_queries.map_or(AnyQueries::Hinfo, |a| a.0),
        query_log: raw.query_log.unwrap_or(false),
        metrics,
        loop_detection: raw.loop_detection.unwrap_or(true),
        upstream_udp_reuse,
        client_limits,
        identity,
        control,
        encrypted,
    }
}

/// `udp_threads`: at most `MAX_UDP_THREADS`; one per CPU when unset or in error.
fn udp_threads(
    raw: Option<Spanned<NonZeroUsize>>,
    src: &SourceText<'_>,
    problems: &mut Problems,
) -> usize {
    match raw {
        None => default_udp_threads(),
        Some(t) if t.get_ref().get() > MAX_UDP_THREADS => {
            problems.push(src.locate(
                t.span(),
                "server.udp_threads",
                format!("at most {MAX_UDP_THREADS}"),
            ));
            default_udp_threads()
        }
        Some(t) => t.into_inner().get(),
    }
}

/// `upstream_udp_reuse`: 1 to `MAX_UPSTREAM_UDP_REUSE`; the default when unset or in
/// error.
fn upstream_udp_reuse(
    raw: Option<Spanned<u32>>,
    src: &SourceText<'_>,
    problems: &mut Problems,
) -> u32 {
    match raw {
        None => DEFAULT_UPSTREAM_UDP_REUSE,
        Some(r) if !(1..=MAX_UPSTREAM_UDP_REUSE).contains(r.get_ref()) => {
            problems.push(src.locate(
                r.span(),
                "server.upstream_udp_reuse",
                format!("must be 1 (a fresh socket per query) to {MAX_UPSTREAM_UDP_REUSE}"),
            ));
            DEFAULT_UPSTREAM_UDP_REUSE
        }
        Some(r) => r.into_inner(),
    }
}

pub(super) fn positive(
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

/// `listen`: addresses to serve, each once.
fn validate_listen(
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    src: &SourceText<'_>,
) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
    match listen {
        None => Ok(vec![DEFAULT_LISTEN.parse().expect("valid default")]),
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
            Ok(out)
        }
    }
}

/// `client_qps`, `client_burst`, `client_max_inflight`, `client_limit_action` and
/// `client_limit_exempt`.
fn validate_client_limits(
    raw: &RawServer,
    qps: u32,
    src: &SourceText<'_>,
) -> Result<ClientLimitConfig, ConfigError> {
    Ok(ClientLimitConfig {
        qps,
        burst: match &raw.client_burst {
            // One second's worth, but at least one query.
            None => qps.max(1),
            Some(b) if *b.get_ref() == 0 => {
                return Err(src.error(
                    b.span(),
                    "server.client_burst",
                    "must be at least 1 (set client_qps = 0 to turn the rate limit off)",
                ));
            }
            Some(b) => *b.get_ref(),
        },
        max_inflight: raw
            .client_max_inflight
            .unwrap_or(DEFAULT_CLIENT_MAX_INFLIGHT),
        action: raw
            .client_limit_action
            .as_ref()
            .map_or(OverLimit::Drop, |a| a.0),
        exempt: Acl::new(match &raw.client_limit_exempt {
            None => Vec::new(),
            Some(l) => parse_list(
                l.get_ref().clone(),
                src,
                "server.client_limit_exempt",
                parse_cidr,
            )?
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
        }),
    })
}

/// The value `identity = "@hostname"` stands for: the host's name (a pod's name on
/// Kubernetes).
const HOSTNAME: &str = "@hostname";

/// The host's name (a pod's name on Kubernetes), or why it cannot be read.
pub(crate) fn host_name() -> Result<String, String> {
    nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name: {e}"))?
        .into_string()
        .map_err(|_| "the host name is not UTF-8".to_string())
}

/// `identity`: a name of at most 255 octets (one TXT string), or the host's name.
fn validate_identity(
    raw: Option<Spanned<String>>,
    src: &SourceText<'_>,
) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let span = raw.span();
    let key = "server.identity";
    let name = match raw.into_inner() {
        h if h == HOSTNAME => host_name().map_err(|e| src.error(span.clone(), key, e))?,
        name => name,
    };
    if name.is_empty() {
        return Err(src.error(span, key, "empty: omit identity to send none"));
    }
    if name.len() > 255 {
        return Err(src.error(
            span,
            key,
            format!(
                "{} octets: at most 255 (it is answered as one TXT string)",
                name.len()
            ),
        ));
    }
    Ok(Some(name))
}
