//! /metrics, /healthz and /readyz, end to end: counters move under queries, readiness
//! follows the listeners and, when asked, the upstreams.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn counters_move_under_queries() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server("metrics = \"127.0.0.1:0\"", up.addr).await;
    let m = z.metrics.expect("metrics bound");
    let (status, body) = http_get(m, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics text: {body}");

    ask_a(z.udp, "one.example.").await; // miss, forwarded
    ask_a(z.udp, "one.example.").await; // hit
    let mut resp = reply_a(&query("x.", RecordType::A, None), [1, 2, 3, 4], 1);
    resp.metadata.id = 9;
    raw_udp(z.udp, &resp.to_vec().unwrap(), Duration::from_millis(200)).await; // dropped (QR=1)

    let (_, body) = http_get(m, "/metrics").await;
    let v =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
    assert_eq!(
        v(r#"zonefwd_queries_total{route="default",transport="udp",rcode="NOERROR"}"#),
        2.0
    );
    assert_eq!(
        v(r#"zonefwd_query_duration_seconds_count{route="default"}"#),
        2.0
    );
    // Cumulative buckets: never above the count, +Inf equal to it.
    let bucket = |le: &str| {
        v(&format!(
            r#"zonefwd_query_duration_seconds_bucket{{le="{le}",route="default"}}"#
        ))
    };
    assert_eq!(bucket("+Inf"), 2.0);
    assert!(bucket("10.0") <= 2.0 && bucket("0.0005") <= bucket("10.0"));
    assert_eq!(v("zonefwd_cache_hits_total"), 1.0);
    assert_eq!(v("zonefwd_cache_entries"), 1.0);
    assert_eq!(v("zonefwd_resolutions_total"), 1.0);
    assert_eq!(v("zonefwd_dropped_total"), 1.0);
    let upstream = format!(r#"{{route="default",upstream="{}"}}"#, up.addr);
    assert_eq!(v(&format!("zonefwd_upstream_queries_total{upstream}")), 1.0);
    assert_eq!(v(&format!("zonefwd_upstream_up{upstream}")), 1.0);
    assert_eq!(v("zonefwd_inflight"), 0.0);

    assert_eq!(http_get(m, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(http_get(m, "/readyz").await.0, 200);
    assert_eq!(http_get(m, "/nope").await.0, 404);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn acl_refusals_and_malformed_queries_are_counted() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server(
        "metrics = \"127.0.0.1:0\"\n[acl]\nallow = [\"10.0.0.0/8\"]",
        up.addr,
    )
    .await;
    ask_a(z.udp, "refused.example.").await;
    let mut two = query("x.example.", RecordType::A, None);
    two.queries.push(two.queries[0].clone());
    raw_udp(z.udp, &two.to_vec().unwrap(), Duration::from_secs(5)).await;
    let (_, body) = http_get(z.metrics.unwrap(), "/metrics").await;
    assert_eq!(
        sample(&body, "zonefwd_acl_refused_total"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"zonefwd_queries_total{route="-",transport="udp",rcode="REFUSED"}"#
        ),
        Some(2.0),
        "{body}"
    );
    z.stop().await.unwrap();
}

/// `/readyz` follows the routes marked `ready = "required"` only: one team's route
/// with dead upstreams must not take every replica out of the load balancer.
#[tokio::test]
async fn readiness_follows_only_the_required_routes() {
    let dead = Fake::blackhole().await;
    let cloud = Fake::blackhole().await;
    let timers =
        "timeout = \"300ms\"\ntry_timeout = \"100ms\"\nmax_fails = 1\nhealth_check = \"1h\"";
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route("team", &["apps.corp.example."], &[dead.addr], timers)
        .route(
            "cloud",
            &["privatelink.blob.core.windows.net."],
            &[cloud.addr],
            &format!("{timers}\nready = \"required\""),
        );
    let z = Zonefwd::start(&conf.toml()).await;
    let m = z.metrics.unwrap();
    assert_eq!(
        http_get(m, "/readyz").await.0,
        200,
        "ready before any failure"
    );
    ask_a(z.udp, "web.apps.corp.example.").await;
    let (_, metrics) = http_get(m, "/metrics").await;
    let upstream = format!(r#"{{route="team",upstream="{}"}}"#, dead.addr);
    assert_eq!(
        sample(&metrics, &format!("zonefwd_upstream_up{upstream}")),
        Some(0.0),
        "the team route's upstream is down"
    );
    let (status, body) = http_get(m, "/readyz").await;
    assert_eq!(
        status, 200,
        "an ignored route's outage leaves the replica ready: {body}"
    );

    ask_a(z.udp, "acct.privatelink.blob.core.windows.net.").await;
    let (status, body) = http_get(m, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("every upstream is down on required route(s): cloud"),
        "{body}"
    );
    assert!(
        !body.contains("team"),
        "only required routes are named: {body}"
    );
    assert_eq!(http_get(m, "/healthz").await.0, 200, "alive all the same");
    let (_, metrics) = http_get(m, "/metrics").await;
    let upstream = format!(r#"{{route="cloud",upstream="{}"}}"#, cloud.addr);
    assert!(
        sample(
            &metrics,
            &format!("zonefwd_upstream_timeouts_total{upstream}")
        )
        .unwrap()
            >= 1.0
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn idle_upstream_sockets_are_counted_and_closed_once_too_old() {
    // Slow answers, so queries sent together each open a socket of their own.
    let up = Fake::answering_after(Duration::from_millis(100), [192, 0, 2, 1], 60).await;
    let z = Zonefwd::start_server("metrics = \"127.0.0.1:0\"", up.addr).await;
    let m = z.metrics.unwrap();
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let (udp, name) = (z.udp, format!("burst{i}.example."));
            tokio::spawn(async move { ask_a(udp, &name).await })
        })
        .collect();
    for q in burst {
        assert_eq!(q.await.unwrap().answers.len(), 1);
    }
    let idle = format!(
        r#"zonefwd_upstream_idle_sockets{{route="default",upstream="{}"}}"#,
        up.addr
    );
    let idle_now = || async {
        let (_, body) = http_get(m, "/metrics").await;
        sample(&body, &idle).unwrap_or_else(|| panic!("no {idle} in\n{body}"))
    };
    assert!(
        idle_now().await >= 2.0,
        "the burst's sockets wait for reuse"
    );
    // Nothing more is asked: the sweep, not a query, closes them (2 s of age, swept
    // every second; the deadline is generous for a loaded machine).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while idle_now().await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle sockets still open 20 s after the burst"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_route_with_max_qps_exports_it_per_upstream() {
    let up = Fake::answering_a().await;
    let other = Fake::answering_a().await;
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route("cloud", &["cloud.test."], &[up.addr], "max_qps = 900")
        .route("default", &["."], &[other.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;
    let body = scrape(&z).await;
    let budget = |route: &str, addr| {
        sample(
            &body,
            &format!(r#"zonefwd_upstream_max_qps{{route="{route}",upstream="{addr}"}}"#),
        )
    };
    assert_eq!(budget("cloud", up.addr), Some(900.0), "{body}");
    assert_eq!(budget("default", other.addr), None, "no max_qps, no series");
    z.stop().await.unwrap();
}
