//! The scrape: every counter read and encoded through prometheus-client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::counts::{RouteMetrics, Sources};
use crate::listen::accept::ConnectionStats;
use crate::tls::client::Dialer;
use crate::tls::validity::seconds;
use crate::transport::Transport;
use crate::upstream::{Upstream, UpstreamSet};
use crate::wire::rcode;

/// The commit this binary was built from (`build.rs`), or "unknown".
const BUILD_COMMIT: &str = env!("ZONEFWD_COMMIT");

type Encoded = Result<(), std::fmt::Error>;

/// Reads every counter at scrape time.
struct Collect(Sources);

impl std::fmt::Debug for Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collect")
    }
}

/// The registry `/metrics` encodes.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect(sources)));
    registry
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Encoded {
        let s = &self.0;
        let routes = s.metrics.routes_with_unrouted();
        let sets = s.configured.upstream_sets();
        queries(&mut enc, &routes)?;
        latency(&mut enc, &routes)?;
        per_route(&mut enc, &sets)?;
        per_upstream(&mut enc, &sets)?;
        budgets(&mut enc, &sets)?;
        retransmits(&mut enc, &sets)?;
        cache(&mut enc, s)?;
        reloads(&mut enc, s)?;
        dnstap(&mut enc, s)?;
        listeners(&mut enc, s)?;
        certificate(&mut enc, s)?;
        upstream_tls(&mut enc, &sets)?;
        build_info(&mut enc)?;
        server(&mut enc, s)
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Encoded {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Encoded {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    m.encode_gauge(&v)
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// `zonefwd_queries`, by route, transport and rcode (counts of zero left out).
fn queries(enc: &mut DescriptorEncoder, routes: &[(String, Arc<RouteMetrics>)]) -> Encoded {
    let mut fam = enc.encode_descriptor(
        "zonefwd_queries",
        "Client queries answered, by route (- before one was chosen), transport and rcode",
        None,
        MetricType::Counter,
    )?;
    for (route, m) in routes {
        for (t, transport) in Transport::ALL.iter().map(|t| t.as_str()).enumerate() {
            for (rc, n) in m.queries[t].iter().enumerate() {
                let n = load(n);
                if n == 0 {
                    continue;
                }
                let name = rcode::name(rc as u16);
                let labels = [
                    ("route", route.as_str()),
                    ("transport", transport),
                    ("rcode", name.as_str()),
                ];
                fam.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
    }
    Ok(())
}

fn latency(enc: &mut DescriptorEncoder, routes: &[(String, Arc<RouteMetrics>)]) -> Encoded {
    let mut fam = enc.encode_descriptor(
        "zonefwd_query_duration_seconds",
        "Time from receiving a query to having its answer, by route",
        None,
        MetricType::Histogram,
    )?;
    for (route, m) in routes {
        let (sum, count, buckets) = m.latency.snapshot();
        let labels = [("route", route.as_str())];
        fam.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

type RouteValue = fn(&UpstreamSet) -> u64;

const PER_ROUTE: [(&str, &str, RouteValue); 3] = [
    (
        "zonefwd_nxdomain_fallbacks",
        "NXDOMAIN answers asked again through the route's nxdomain_fallback",
        |s| load(&s.nxdomain_fallbacks),
    ),
    (
        "zonefwd_public_answers",
        "Answers with public A/AAAA records for names in private zones, on a route with expect_private",
        |s| s.public_answers(),
    ),
    (
        "zonefwd_cname_claims",
        "CNAME targets from other routes' answers asked through this route (claim_cnames)",
        |s| load(&s.cname_claims),
    ),
];

fn per_route(enc: &mut DescriptorEncoder, sets: &[Arc<UpstreamSet>]) -> Encoded {
    for (name, help, value) in PER_ROUTE {
        let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for set in sets {
            let labels = [("route", set.route.as_str())];
            fam.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value(set), None)?;
        }
    }
    Ok(())
}

type UpstreamValue = fn(&Upstream) -> u64;

const PER_UPSTREAM: [(&str, &str, MetricType, UpstreamValue); 14] = [
    (
        "zonefwd_upstream_queries",
        "Tries sent to an upstream",
        MetricType::Counter,
        |u| load(&u.stats.sent),
    ),
    (
        "zonefwd_upstream_timeouts",
        "Tries that outlived try_timeout or the deadline",
        MetricType::Counter,
        |u| load(&u.stats.timeouts),
    ),
    (
        "zonefwd_upstream_errors",
        "Tries that ended in a network error or a malformed reply",
        MetricType::Counter,
        |u| load(&u.stats.errors),
    ),
    (
        "zonefwd_upstream_mismatched_replies",
        "Replies dropped for a wrong ID or question (forgeries or late answers, RFC 5452)",
        MetricType::Counter,
        |u| load(&u.stats.mismatched),
    ),
    (
        "zonefwd_upstream_over_budget",
        "Tries not sent because max_qps was spent",
        MetricType::Counter,
        |u| load(&u.stats.over_budget),
    ),
    (
        "zonefwd_upstream_up",
        "0 while the upstream is marked down by failures in a row, else 1 (taken out by hand is zonefwd_upstream_admin_down)",
        MetricType::Gauge,
        |u| u64::from(!u.is_marked_down()),
    ),
    (
        "zonefwd_upstream_admin_down",
        "1 while the upstream is taken out of rotation by hand (zonefwd ctl upstream ROUTE ADDR down): planned work, not a failure",
        MetricType::Gauge,
        |u| u64::from(u.manual_down.load(Ordering::Relaxed)),
    ),
    (
        "zonefwd_upstream_in_loop",
        "1 while a loop probe sent to the upstream came back to zonefwd (out of rotation)",
        MetricType::Gauge,
        |u| u64::from(u.looped.load(Ordering::Relaxed)),
    ),
    (
        "zonefwd_upstream_consecutive_failures",
        "Failures in a row",
        MetricType::Gauge,
        |u| u64::from(u.consecutive_failures()),
    ),
    (
        "zonefwd_upstream_idle_sockets",
        "Pooled UDP sockets open between queries (upstream_udp_reuse); closed within 3 s of opening",
        MetricType::Gauge,
        |u| u.udp.idle_len() as u64,
    ),
    (
        "zonefwd_upstream_tcp_connections",
        "Kept TCP connections open to the upstream (transport = \"tcp\", and TCP after truncation)",
        MetricType::Gauge,
        |u| u.tcp.open(),
    ),
    (
        "zonefwd_upstream_retransmits_wasted",
        "Early (late) retransmissions whose doubled try answered as well: the upstream was slow, not lossy; held within retransmit_budget",
        MetricType::Counter,
        |u| load(&u.stats.retransmits_wasted),
    ),
    (
        "zonefwd_upstream_retransmits_held",
        "Late tries not retransmitted early because the route's retransmit_budget was spent",
        MetricType::Counter,
        |u| load(&u.stats.retransmits_held),
    ),
    (
        "zonefwd_upstream_tcp_reconnects",
        "TCP connections opened to replace one that failed, could not connect, or ended with queries waiting",
        MetricType::Counter,
        |u| u.tcp.reconnects(),
    ),
];

fn per_upstream(enc: &mut DescriptorEncoder, sets: &[Arc<UpstreamSet>]) -> Encoded {
    for (name, help, ty, value) in PER_UPSTREAM {
        let mut fam = enc.encode_descriptor(name, help, None, ty)?;
        for set in sets {
            for u in &set.upstreams {
                let addr = u.addr.to_string();
                let labels = [("route", set.route.as_str()), ("upstream", addr.as_str())];
                let mut m = fam.encode_family(&labels)?;
                match ty {
                    MetricType::Counter => {
                        m.encode_counter::<NoLabelSet, _, u64>(&value(u), None)?
                    }
                    _ => m.encode_gauge(&(value(u) as i64))?,
                }
            }
        }
    }
    Ok(())
}

/// `zonefwd_upstream_max_qps`, for the upstreams of routes with `max_qps`: what the
/// alert on nearing the cloud resolver's limit compares the query rate with.
fn budgets(enc: &mut DescriptorEncoder, sets: &[Arc<UpstreamSet>]) -> Encoded {
    let mut fam = enc.encode_descriptor(
        "zonefwd_upstream_max_qps",
        "The route's max_qps: queries per second this upstream may be sent (only for routes that set it)",
        None,
        MetricType::Gauge,
    )?;
    for set in sets {
        for u in &set.upstreams {
            let Some(max) = u.settings.max_qps else {
                continue;
            };
            let addr = u.addr.to_string();
            let labels = [("route", set.route.as_str()), ("upstream", addr.as_str())];
            fam.encode_family(&labels)?.encode_gauge(&i64::from(max))?;
        }
    }
    Ok(())
}

/// Retransmissions per upstream by reason, and how long a try waits before one
/// (`upstream::latency`); the wasted and held-back ones are in `PER_UPSTREAM`.
fn retransmits(enc: &mut DescriptorEncoder, sets: &[Arc<UpstreamSet>]) -> Encoded {
    let mut fam = enc.encode_descriptor(
        "zonefwd_upstream_retransmits",
        "Tries to the upstream doubled by a new try while unanswered: reason late (past its retransmit threshold) or timeout (past try_timeout, or marked down meanwhile)",
        None,
        MetricType::Counter,
    )?;
    for set in sets {
        for u in &set.upstreams {
            let addr = u.addr.to_string();
            for (reason, n) in [
                ("late", &u.stats.retransmits_late),
                ("timeout", &u.stats.retransmits_timeout),
            ] {
                let labels = [
                    ("route", set.route.as_str()),
                    ("upstream", addr.as_str()),
                    ("reason", reason),
                ];
                fam.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
            }
        }
    }
    let mut fam = enc.encode_descriptor(
        "zonefwd_upstream_retransmit_threshold_seconds",
        "How long a try to the upstream waits before it is retransmitted: the 99th percentile of its answer times (at least 10 ms), or try_timeout without a model",
        None,
        MetricType::Gauge,
    )?;
    for set in sets {
        for u in &set.upstreams {
            let addr = u.addr.to_string();
            let labels = [("route", set.route.as_str()), ("upstream", addr.as_str())];
            fam.encode_family(&labels)?
                .encode_gauge(&set.retransmit_wait(u).as_secs_f64())?;
        }
    }
    Ok(())
}

fn cache(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    let c = &s.cache.stats;
    let counters = [
        (
            "zonefwd_cache_hits",
            "Queries answered from fresh cache entries",
            &c.hits,
        ),
        (
            "zonefwd_cache_misses",
            "Cache lookups that found nothing usable",
            &c.misses,
        ),
        ("zonefwd_cache_inserts", "Answers stored", &c.inserts),
        (
            "zonefwd_cache_evictions",
            "Entries evicted to stay within max_entries",
            &c.evictions,
        ),
        (
            "zonefwd_cache_stale_answers",
            "Expired answers served because upstreams failed or were slow (RFC 8767)",
            &c.stale_served,
        ),
        (
            "zonefwd_cache_failures",
            "Failures remembered for servfail_ttl",
            &c.failures,
        ),
        (
            "zonefwd_cache_prefetches",
            "Entries refreshed before they expired",
            &c.prefetches,
        ),
    ];
    for (name, help, value) in counters {
        counter(enc, name, help, load(value))?;
    }
    gauge(
        enc,
        "zonefwd_cache_entries",
        "Entries in the cache",
        s.cache.len() as i64,
    )
}

/// Reloads applied and refused, whether the file in force is what runs, and what
/// waits for a restart: a refused reload is otherwise seen only in the journal, and
/// the broken file fails the next restart.
fn reloads(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    let r = &s.reloads;
    let mut fam = enc.encode_descriptor(
        "zonefwd_config_reloads",
        "Configuration reloads (SIGHUP, zonefwd ctl reload, a renewed tls_cert on disk), by result: applied, or refused for an invalid file or certificate",
        None,
        MetricType::Counter,
    )?;
    for (result, n) in [("applied", &r.applied), ("refused", &r.refused)] {
        fam.encode_family(&[("result", result)])?
            .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
    }
    gauge(
        enc,
        "zonefwd_config_last_reload_successful",
        "1 while the last reload was applied (or none was asked for), 0 after a refused one",
        i64::from(r.last_successful.load(Ordering::Relaxed)),
    )?;
    gauge(
        enc,
        "zonefwd_config_last_reload_success_timestamp_seconds",
        "When the configuration in force was applied (start or reload), in seconds since the epoch",
        load(&r.last_success_unix) as i64,
    )?;
    gauge(
        enc,
        "zonefwd_config_restart_pending",
        "1 while the file in force changes a setting only a restart applies (listen, tls_listen, https_listen, udp_threads, tcp_*, cache.max_entries, log_format, metrics, control)",
        i64::from(!r.restart_pending().is_empty()),
    )
}

/// dnstap frames sent and dropped, and, while `[dnstap]` is configured, whether a
/// collector is connected.
fn dnstap(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    let d = &s.dnstap;
    let mut fam = enc.encode_descriptor(
        "zonefwd_dnstap_frames",
        "dnstap frames, by result: sent to the collector, or dropped (queue full, or lost with a connection)",
        None,
        MetricType::Counter,
    )?;
    for (result, n) in [("sent", &d.sent), ("dropped", &d.dropped)] {
        fam.encode_family(&[("result", result)])?
            .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
    }
    if !d.configured.load(Ordering::Relaxed) {
        return Ok(());
    }
    gauge(
        enc,
        "zonefwd_dnstap_connected",
        "1 while a dnstap collector has accepted the stream, 0 while it is absent or being reconnected",
        i64::from(d.connected.load(Ordering::Relaxed)),
    )
}

/// Stream connections (TCP, DoT, DoH) accepted, refused and open, and the DoT and
/// DoH listeners' handshakes by result.
fn listeners(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    type Count = fn(&ConnectionStats) -> &AtomicU64;
    let families: [(&str, &str, MetricType, Count); 3] = [
        (
            "zonefwd_listener_connections",
            "Client connections accepted, by transport (tcp, tls for DoT, https for DoH)",
            MetricType::Counter,
            |c| &c.accepted,
        ),
        (
            "zonefwd_listener_connections_refused",
            "Client connections closed at once: over tcp_max_connections or the client's tcp_max_connections_per_client",
            MetricType::Counter,
            |c| &c.refused,
        ),
        (
            "zonefwd_listener_connections_open",
            "Client connections open now, by transport",
            MetricType::Gauge,
            |c| &c.open,
        ),
    ];
    for (name, help, ty, count) in families {
        let mut fam = enc.encode_descriptor(name, help, None, ty)?;
        for &kind in &s.stream_kinds {
            let labels = [("transport", kind.as_str())];
            let n = load(count(s.streams.of(kind)));
            match ty {
                MetricType::Gauge => fam.encode_family(&labels)?.encode_gauge(&(n as i64))?,
                _ => fam
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            }
        }
    }
    let encrypted: Vec<Transport> = s
        .stream_kinds
        .iter()
        .copied()
        .filter(|k| *k != Transport::Tcp)
        .collect();
    if encrypted.is_empty() {
        return Ok(());
    }
    let mut fam = enc.encode_descriptor(
        "zonefwd_listener_tls_handshakes",
        "TLS handshakes with clients on the DoT (tls) and DoH (https) listeners, by result: full, resumed, or why it failed",
        None,
        MetricType::Counter,
    )?;
    for kind in encrypted {
        for (result, n) in s.streams.of(kind).handshakes.by_result() {
            let labels = [("transport", kind.as_str()), ("result", result)];
            fam.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }
    Ok(())
}

/// The listeners' certificate validity, while DoT or DoH serves one: the alert on
/// a renewal that stopped reads both (a share of the lifetime left, see
/// `tls::validity`).
fn certificate(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    let Some(validity) = s.configured.certificate() else {
        return Ok(());
    };
    gauge(
        enc,
        "zonefwd_listener_certificate_not_after_timestamp_seconds",
        "When the certificate the DoT and DoH listeners serve expires (the earliest notAfter of its chain), in seconds since the epoch",
        seconds(validity.not_after),
    )?;
    gauge(
        enc,
        "zonefwd_listener_certificate_not_before_timestamp_seconds",
        "When the certificate the DoT and DoH listeners serve became valid (its notBefore), in seconds since the epoch",
        seconds(validity.not_before),
    )
}

/// TLS handshakes with each `tls://` upstream, by result.
fn upstream_tls(enc: &mut DescriptorEncoder, sets: &[Arc<UpstreamSet>]) -> Encoded {
    let tls: Vec<(&str, &Upstream, &Dialer)> = sets
        .iter()
        .flat_map(|set| {
            set.upstreams
                .iter()
                .map(move |u| (set.route.as_str(), &**u))
        })
        .filter_map(|(route, u)| Some((route, u, u.tcp.tls()?)))
        .collect();
    if tls.is_empty() {
        return Ok(());
    }
    let mut fam = enc.encode_descriptor(
        "zonefwd_upstream_tls_handshakes",
        "TLS handshakes with a tls:// upstream, by result: full, resumed, or why it failed (expired, wrong_name, unknown_ca, pin_mismatch, ...)",
        None,
        MetricType::Counter,
    )?;
    for (route, u, dialer) in tls {
        let addr = u.addr.to_string();
        for (result, n) in dialer.handshakes.by_result() {
            let labels = [
                ("route", route),
                ("upstream", addr.as_str()),
                ("result", result),
            ];
            fam.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }
    Ok(())
}

/// `zonefwd_build_info{version,commit}`: which build each replica runs.
fn build_info(enc: &mut DescriptorEncoder) -> Encoded {
    let mut fam = enc.encode_descriptor(
        "zonefwd_build_info",
        "Always 1; the labels say which build runs",
        None,
        MetricType::Gauge,
    )?;
    let labels = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", BUILD_COMMIT),
    ];
    fam.encode_family(&labels)?.encode_gauge(&1i64)
}

fn server(enc: &mut DescriptorEncoder, s: &Sources) -> Encoded {
    let (r, m) = (&s.resolutions, &s.metrics);
    let counters = [
        ("zonefwd_resolutions", "Upstream resolutions started", load(&r.started)),
        (
            "zonefwd_coalesced",
            "Queries that joined an identical one in flight",
            load(&r.coalesced),
        ),
        (
            "zonefwd_acl_refused",
            "Queries refused because the client is outside acl.allow",
            load(&m.acl_refused),
        ),
        (
            "zonefwd_dropped",
            "Messages dropped unanswered: responses (QR=1) and runts",
            load(&m.dropped),
        ),
        (
            "zonefwd_malformed",
            "Queries answered FORMERR, NOTIMP or BADVERS",
            load(&m.malformed),
        ),
        (
            "zonefwd_client_rate_limited",
            "Queries dropped or refused because their client was over server.client_qps",
            load(&m.client_rate_limited),
        ),
        (
            "zonefwd_client_inflight_limited",
            "Queries dropped or refused because their client had server.client_max_inflight waiting",
            load(&m.client_inflight_limited),
        ),
        (
            "zonefwd_control_refused",
            "Control-socket connections refused: not root, the socket's owner or its group",
            load(&m.control_refused),
        ),
        (
            "zonefwd_forwarding_loops",
            "Loop probes that came back to zonefwd through an upstream",
            s.configured.loops_detected(),
        ),
        (
            "zonefwd_cname_chains_broken",
            "claim_cnames chains answered SERVFAIL for a loop, the hop limit or the time limit",
            s.configured.broken_chains(),
        ),
    ];
    for (name, help, value) in counters {
        counter(enc, name, help, value)?;
    }
    gauge(
        enc,
        "zonefwd_inflight",
        "Client queries being forwarded now",
        s.inflight.current() as i64,
    )
}
