//! Reloading the configuration while serving (SIGHUP in the binary): routes, upstreams
//! and ACL switch for the next query, queries in flight finish on the old ones, and the
//! cache is kept.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn answered_by(r: &Message, last_octet: u8) -> bool {
    r.answers
        .first()
        .is_some_and(|a| a.data == a_record("x.", [192, 0, 2, last_octet], 1).data)
}

/// Asks fresh names until one is answered by the upstream ending in `last_octet`:
/// a reload takes effect asynchronously, within milliseconds.
async fn until_answered_by(z: &Zonefwd, last_octet: u8) {
    for i in 0..500 {
        if answered_by(
            &ask_a(z.udp, &format!("probe{i}.example.")).await,
            last_octet,
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the reload never took effect");
}

#[tokio::test]
async fn a_reload_switches_routes_and_keeps_the_cache() {
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 3600)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 3600)).await;
    let z = Zonefwd::start(&one_route(&[a.addr], "")).await;
    assert!(answered_by(&ask_a(z.udp, "cached.example.").await, 1));

    z.reload(&one_route(&[b.addr], ""));
    until_answered_by(&z, 2).await;
    // Cached before the reload, still served from cache: B never hears of it.
    let r = ask_a(z.udp, "cached.example.").await;
    assert!(answered_by(&r, 1), "the cache survives a reload");
    assert!(!b
        .seen()
        .iter()
        .any(|s| qname_of(&s.msg) == "cached.example."));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn queries_in_flight_finish_on_the_old_configuration() {
    let slow = Fake::answering_after(Duration::from_millis(700), [192, 0, 2, 1], 60).await;
    let other = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 60)).await;
    let z = Zonefwd::start(&one_route(&[slow.addr], "")).await;
    let addr = z.udp;
    let pending = asking_a(addr, "inflight.example.");
    while slow.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    z.reload(&one_route(&[other.addr], ""));
    until_answered_by(&z, 2).await;
    let r = Message::from_vec(&pending.await.unwrap().expect("answered")).unwrap();
    assert!(
        answered_by(&r, 1),
        "answered by the upstream it was sent to"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_reload_can_tighten_the_acl() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    assert_eq!(
        ask_a(z.udp, "before.example.").await.metadata.response_code,
        ResponseCode::NoError
    );
    z.reload(&format!(
        "[acl]\nallow = [\"10.0.0.0/8\"]\n{}",
        one_route(&[up.addr], "")
    ));
    let mut refused = false;
    for i in 0..500 {
        if ask_a(z.udp, &format!("after{i}.example."))
            .await
            .metadata
            .response_code
            == ResponseCode::Refused
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "127.0.0.1 is outside the new acl");
    z.stop().await.unwrap();
}

/// A config with a metrics endpoint and one "." route to `upstreams`.
fn observed(upstreams: &[std::net::SocketAddr], route_keys: &str) -> Conf {
    Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route("default", &["."], upstreams, route_keys)
}

#[tokio::test]
async fn a_health_probe_ends_when_its_upstream_leaves_the_configuration() {
    let dead = Fake::blackhole().await;
    let good = Fake::answering_a().await;
    // One timeout marks `dead` down; its probe then asks every 50 ms.
    let keys =
        "max_fails = 1\nhealth_check = \"50ms\"\ntimeout = \"400ms\"\ntry_timeout = \"100ms\"";
    let z = Zonefwd::start(&observed(&[dead.addr], keys).toml()).await;
    let _ = ask_a(z.udp, "first.example.").await;
    let after_query = dead.count();
    eventually("the probe to ask", || dead.count() > after_query + 1).await;

    z.reload(&observed(&[good.addr], "").toml());
    until_answered_by(&z, 1).await;
    // The probe's next round finds its upstream gone and ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = dead.count();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(dead.count(), settled, "probes after the upstream left");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_health_and_counters_across_a_reload() {
    let dead = Fake::blackhole().await;
    let good = Fake::answering_a().await;
    // Sequential: `dead` first; one timeout marks it down, `good` answers.
    let keys = "max_fails = 1\nhealth_check = \"1h\"\ntry_timeout = \"100ms\"";
    let conf = observed(&[dead.addr, good.addr], keys);
    let z = Zonefwd::start(&conf.toml()).await;
    let up = |u: &Fake| {
        format!(
            "zonefwd_upstream_up{{route=\"default\",upstream=\"{}\"}}",
            u.addr
        )
    };
    let sent = |u: &Fake| {
        format!(
            "zonefwd_upstream_queries_total{{route=\"default\",upstream=\"{}\"}}",
            u.addr
        )
    };
    assert_eq!(
        ask_a(z.udp, "first.example.").await.metadata.response_code,
        ResponseCode::NoError
    );
    let before = scrape(&z).await;
    assert_eq!(metric(&before, &up(&dead)), 0, "{before}");
    assert_eq!(metric(&before, &sent(&good)), 1, "{before}");

    // Something else changes: the ACL. The route and its upstreams stay as they were.
    z.reload(&conf.with_other_acl().toml());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dead_asked = dead.count();
    assert_eq!(
        ask_a(z.udp, "second.example.").await.metadata.response_code,
        ResponseCode::NoError
    );
    assert_eq!(dead.count(), dead_asked, "still marked down: not tried");
    let after = scrape(&z).await;
    assert_eq!(metric(&after, &up(&dead)), 0, "health kept: {after}");
    assert_eq!(metric(&after, &sent(&good)), 2, "counters kept: {after}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn in_flight_limits_are_one_across_a_reload() {
    let slow = Fake::answering_after(Duration::from_millis(1500), [192, 0, 2, 1], 60).await;
    let other = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 60)).await;
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .server("client_max_inflight = 1")
        .server("client_limit_action = \"refuse\"")
        .route("default", &["."], &[slow.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;
    let addr = z.udp;
    let held = asking_a(addr, "held.example.");
    eventually("the held query to reach its upstream", || slow.count() == 1).await;

    // The new configuration routes other.test. elsewhere; another client (127.0.0.2,
    // with its own limit) tells when it is in force.
    z.reload(
        &conf
            .clone()
            .route("other", &["other.test."], &[other.addr], "")
            .toml(),
    );
    let probe = query("x.other.test.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let other_client = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..500 {
        let got = raw_udp_from(other_client, z.udp, &probe, Duration::from_secs(2)).await;
        if got.is_some_and(|b| {
            Message::from_vec(&b).unwrap().metadata.response_code == ResponseCode::NoError
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(other.count(), 1, "the new configuration is in force");

    // The first client's query from before the reload still counts against its cap.
    let second = raw_udp(
        z.udp,
        &query("second.example.", RecordType::A, None)
            .to_vec()
            .unwrap(),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(
        Message::from_vec(&second).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    assert_eq!(
        metric(&scrape(&z).await, "zonefwd_inflight "),
        1,
        "counted once, whatever configuration holds it"
    );
    assert!(held.await.unwrap().is_some(), "the held query is answered");
    z.stop().await.unwrap();
}

/// Descriptors this process has open now.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_query_and_keep_the_cache() {
    // Two valid configurations that differ in routes, ACL and upstreams, swapped 40
    // times while four clients ask without pause: every query is answered NOERROR
    // (none lost, none SERVFAIL because of a reload), and what was cached stays.
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 3600)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 3600)).await;
    let one = Conf::new()
        .route("rest", &["."], &[a.addr], "")
        .table("[acl]\nallow = [\"127.0.0.0/8\"]");
    let two = Conf::new()
        .route(
            "rest",
            &["."],
            &[b.addr, a.addr],
            "policy = \"round_robin\"",
        )
        .route("corp", &["corp.example"], &[a.addr], "")
        .table("[acl]\nallow = [\"127.0.0.1/32\", \"10.0.0.0/8\"]");
    let z = Zonefwd::start_config(one.build()).await;
    assert!(answered_by(&ask_a(z.udp, "warm.example.").await, 1));
    let before = open_descriptors();

    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addr = z.udp;
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..150 {
                    // Half repeated (cache hits after the first), half new.
                    let name = if i % 2 == 0 {
                        format!("hot{}.example.", i % 10)
                    } else {
                        format!("c{c}-{i}.corp.example.")
                    };
                    let q = query(&name, RecordType::A, None).to_vec().unwrap();
                    match raw_udp(addr, &q, Duration::from_secs(5)).await {
                        Some(r) => {
                            let rcode = Message::from_vec(&r).unwrap().metadata.response_code;
                            if rcode != ResponseCode::NoError {
                                failed.push(format!("{name}: {rcode:?}"));
                            }
                        }
                        None => failed.push(format!("{name}: no answer")),
                    }
                }
                failed
            })
        })
        .collect();
    for i in 0..40 {
        z.reload_config(if i % 2 == 0 { two.build() } else { one.build() });
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for c in clients {
        let failed = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "lost or failed across reloads: {failed:?}"
        );
    }
    // Cached before the reloads, still served from cache.
    let asked_before = asked(&a, "warm.example.") + asked(&b, "warm.example.");
    assert!(answered_by(&ask_a(z.udp, "warm.example.").await, 1));
    assert_eq!(
        asked(&a, "warm.example.") + asked(&b, "warm.example."),
        asked_before
    );
    // The replaced upstreams' sockets close with them: descriptors back where they
    // were, give or take the pooled sockets of the upstreams now in use.
    eventually("descriptors to settle", || open_descriptors() <= before + 8).await;
    z.stop().await.unwrap();
}

/// Scrapes until `metric` (a sample's full name) reads `want`: a reload is applied
/// by the run loop, asynchronously.
async fn until_metric(z: &Zonefwd, name: &str, want: u64) {
    for _ in 0..500 {
        if metric(&scrape(z).await, name) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never read {want}:\n{}", scrape(z).await);
}

/// A refused reload and a pending restart are metrics, not only journal lines; the
/// pending restart compares the file with what runs, not with the previous file.
#[tokio::test]
async fn reloads_are_counted_and_a_pending_restart_is_compared_with_what_runs() {
    let up = Fake::answering_a().await;
    let base =
        Conf::new()
            .server("metrics = \"127.0.0.1:0\"")
            .route("default", &["."], &[up.addr], "");
    let z = Zonefwd::start(&base.toml()).await;
    let body = scrape(&z).await;
    assert_eq!(metric(&body, "zonefwd_config_last_reload_successful"), 1);
    assert!(
        metric(
            &body,
            "zonefwd_config_last_reload_success_timestamp_seconds"
        ) > 1_700_000_000
    );
    assert!(
        body.contains(&format!(
            "zonefwd_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    let (applied, refused, pending) = (
        "zonefwd_config_reloads_total{result=\"applied\"}",
        "zonefwd_config_reloads_total{result=\"refused\"}",
        "zonefwd_config_restart_pending",
    );

    z.reload_refused("z.toml:4:14: route[0].upstreams[0]: expected \"IP\"");
    until_metric(&z, refused, 1).await;
    assert_eq!(
        metric(&scrape(&z).await, "zonefwd_config_last_reload_successful"),
        0
    );

    // (the file reloaded, applied so far, restart pending after it)
    let moved = base
        .clone()
        .server("listen = [\"127.0.0.1:0\", \"127.0.0.2:0\"]");
    let steps = [
        (&moved, 1, 1),
        // The same file again: still not what runs.
        (&moved, 2, 1),
        (&base, 3, 0),
    ];
    for (conf, n, restart) in steps {
        z.reload(&conf.toml());
        until_metric(&z, applied, n).await;
        let body = scrape(&z).await;
        assert_eq!(metric(&body, pending), restart, "after reload {n}");
        assert_eq!(metric(&body, "zonefwd_config_last_reload_successful"), 1);
    }
    z.stop().await.unwrap();
}
