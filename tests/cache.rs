//! The cache, coalescing and upstream budget, end to end. TTLs follow a `ManualClock`
//! the test moves, so nothing here sleeps to let time pass for the cache.
mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use zonefwd::ManualClock;

async fn start(toml: &str) -> (Zonefwd, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let z = Zonefwd::start_with_clock(config(toml), clock.clone()).await;
    (z, clock)
}

#[tokio::test]
async fn hits_are_served_from_cache_with_ttls_counting_down() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 300)).await;
    let (z, clock) = start(&one_route(&[up.addr], "")).await;
    let first = exchange(z.udp, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(first.answers[0].ttl, 300);

    clock.advance(Duration::from_secs(100));
    let mut again = query("WWW.Example.", RecordType::A, None);
    again.metadata.id = 999;
    let bytes = with_spelling(&again, "WWW.Example.");
    let out = raw_udp(z.udp, &bytes, Duration::from_secs(10))
        .await
        .unwrap();
    let hit = Message::from_vec(&out).unwrap();
    assert_eq!(asked(&up, "www.example."), 1, "the second query is a hit");
    assert_eq!(hit.metadata.id, 999, "the client's ID");
    assert_eq!(qname_of(&hit), "WWW.Example.", "the client's spelling");
    assert_eq!(
        hit.answers[0].ttl, 200,
        "TTL decremented by the entry's age"
    );
    assert_eq!(hit.answers[0].data, first.answers[0].data);
    assert!(hit.metadata.recursion_available);

    // An EDNS client gets its own OPT on a hit, a plain one none.
    let with_edns = exchange(z.udp, &query("www.example.", RecordType::A, Some(1232))).await;
    assert!(with_edns.edns.is_some());
    assert!(hit.edns.is_none());

    // Expired, upstream healthy: asked again (stale data is not served while the
    // upstream answers), and the new TTL starts over.
    clock.advance(Duration::from_secs(250));
    let fresh = exchange(z.udp, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(asked(&up, "www.example."), 2);
    assert_eq!(fresh.answers[0].ttl, 300);
    z.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_identical_queries_make_one_upstream_query() {
    let up = Fake::answering_after(Duration::from_millis(500), [192, 0, 2, 5], 60).await;
    // The upstream takes 500 ms: every one of the 500 arrives while the first is in
    // flight, so only coalescing can merge them.
    let (z, _clock) = start(&one_route(&[up.addr], "")).await;
    let mut tasks = Vec::new();
    for i in 0..500u16 {
        let addr = z.udp;
        tasks.push(tokio::spawn(async move {
            let mut q = query("popular.example.", RecordType::A, None);
            q.metadata.id = i;
            let out = raw_udp(addr, &q.to_vec().unwrap(), Duration::from_secs(15))
                .await
                .expect("an answer");
            let r = Message::from_vec(&out).unwrap();
            (r.metadata.id == i, r.answers.len())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            (true, 1),
            "each waiter gets the answer under its own ID"
        );
    }
    assert_eq!(
        up.count(),
        1,
        "one upstream query for 500 identical questions"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_finished_resolution_leaves_the_in_flight_map() {
    // Without the cache, only the in-flight map could answer a repeat: an entry left
    // behind (answered, or failed) would hand later queries its old result.
    let (up, answering) = Fake::answering_while(false, [192, 0, 2, 8], 60).await;
    let (z, _clock) = start(&one_route(
        &[up.addr],
        "cache = false\ntimeout = \"300ms\"\ntry_timeout = \"300ms\"",
    ))
    .await;
    let failed = ask_a(z.udp, "again.example.").await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    answering.store(true, Ordering::SeqCst);
    for n in 1..=3 {
        let r = ask_a(z.udp, "again.example.").await;
        assert_eq!(r.answers.len(), 1, "answer {n}");
        assert_eq!(
            asked(&up, "again.example."),
            1 + n,
            "each asked upstream anew"
        );
    }
    z.stop().await.unwrap();
}

#[tokio::test]
async fn stale_answers_only_after_upstream_failure_and_within_the_window() {
    let (up, alive) = Fake::answering_while(true, [192, 0, 2, 7], 10).await;
    let (z, clock) = start(&one_route(
        &[up.addr],
        "timeout = \"1s\"\ntry_timeout = \"500ms\"\nmax_fails = 0\n[cache]\nserve_stale = \"1h\"",
    ))
    .await;
    exchange(z.udp, &query("kube.example.", RecordType::A, None)).await;

    // Expired and the upstream is gone: the stale answer, with TTL 30.
    alive.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    let (r, took) = timed(exchange(
        z.udp,
        &query("kube.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].ttl, 30, "RFC 8767: stale answers carry TTL 30");
    assert!(took < Duration::from_secs(3), "stale answer took {took:?}");
    assert!(
        asked(&up, "kube.example.") >= 2,
        "the upstream was tried first"
    );

    // The failure is remembered (servfail_ttl 5s): stale again without asking.
    let before = asked(&up, "kube.example.");
    let r = exchange(z.udp, &query("kube.example.", RecordType::A, None)).await;
    assert_eq!(r.answers[0].ttl, 30);
    assert_eq!(asked(&up, "kube.example."), before);

    // Past serve_stale (1h after expiry): SERVFAIL, not a day-old address.
    clock.advance(Duration::from_secs(3600));
    let r = exchange(z.udp, &query("kube.example.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_upstream_gets_the_stale_answer_out_after_the_client_timer() {
    let slow = Arc::new(AtomicBool::new(false));
    let s = slow.clone();
    let up = Fake::start(move |q, _| {
        let delay = if s.load(Ordering::SeqCst) { 4000 } else { 0 };
        vec![
            Step::Sleep(Duration::from_millis(delay)),
            Step::Reply(reply_a(q, [192, 0, 2, 8], 10)),
        ]
    })
    .await;
    let (z, clock) = start(&one_route(
        &[up.addr],
        "timeout = \"8s\"\ntry_timeout = \"8s\"",
    ))
    .await;
    exchange(z.udp, &query("slowpoke.example.", RecordType::A, None)).await;
    slow.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    let (r, took) = timed(exchange(
        z.udp,
        &query("slowpoke.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.answers[0].ttl, 30, "stale while the refresh goes on");
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // The refresh completes in the background and lands in the cache.
    eventually("the refresh", || asked(&up, "slowpoke.example.") == 2).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = exchange(z.udp, &query("slowpoke.example.", RecordType::A, None)).await;
    assert_eq!(r.answers[0].ttl, 10, "fresh again after the slow refresh");
    assert_eq!(asked(&up, "slowpoke.example."), 2);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn with_every_upstream_down_the_stale_answer_goes_out_at_once() {
    // RFC 8767 section 5: the 1.8 s client response timer is for an upstream that may
    // still answer; once the route's only upstream is marked down, a stale answer
    // goes out at once. A BIND forwarding here gives up on a silent forwarder before
    // 1.8 s, so waiting cost its clients a SERVFAIL.
    let (up, on) = Fake::answering_while(true, [192, 0, 2, 9], 10).await;
    let (z, clock) = start(&one_route(
        &[up.addr],
        // A deadline past the 1.8 s timer, so that the resolution cannot end first.
        "timeout = \"3s\"\ntry_timeout = \"1s\"\nmax_fails = 1\nhealth_check = \"1h\"",
    ))
    .await;
    exchange(z.udp, &query("kept.example.", RecordType::A, None)).await;
    on.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    let r = exchange(z.udp, &query("new.example.", RecordType::A, None)).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "and the upstream is marked down"
    );
    let (r, took) = timed(exchange(
        z.udp,
        &query("kept.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.answers[0].ttl, 30, "the stale answer");
    assert!(
        took < Duration::from_millis(1000),
        "waited {took:?} for an upstream known to be down"
    );
    // The refresh still goes to the upstream, in the background.
    eventually("the refresh", || asked(&up, "kept.example.") >= 2).await;
    z.stop().await.unwrap();
}

#[tokio::test]
async fn servfail_is_cached_for_servfail_ttl_only() {
    let up = Fake::answering(|q| reply_rcode(q, ResponseCode::ServFail)).await;
    let (z, clock) = start(&one_route(&[up.addr], "[cache]\nservfail_ttl = \"5s\"")).await;
    for _ in 0..3 {
        let r = exchange(z.udp, &query("broken.example.", RecordType::A, None)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    }
    let once = asked(&up, "broken.example.");
    assert!(
        once <= 2,
        "one resolution (an upstream tried at most twice): {once}"
    );
    clock.advance(Duration::from_secs(6));
    exchange(z.udp, &query("broken.example.", RecordType::A, None)).await;
    assert!(
        asked(&up, "broken.example.") > once,
        "asked again after servfail_ttl"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn negative_answers_are_cached_by_their_soa_with_route_overrides() {
    let up = Fake::answering(|q| {
        let mut r = reply_rcode(q, ResponseCode::NXDomain);
        r.authorities.push(soa_record("example.", 3600, 300));
        r
    })
    .await;
    let (z, clock) = start(&format!(
        "[[route]]\nname = \"private\"\nzones = [\"privatelink.example\"]\nupstreams = [\"{0}\"]\ncache = {{ negative_max_ttl = \"10s\" }}\n{1}",
        up.addr,
        one_route(&[up.addr], "")
    ))
    .await;
    // The "." route: min(SOA TTL, MINIMUM) = 300.
    let r = exchange(z.udp, &query("nx.example.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        r.authorities[0].ttl, 300,
        "the SOA says how long the name is absent"
    );
    // The private route: capped at 10 s.
    let r = exchange(
        z.udp,
        &query("new-endpoint.privatelink.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.authorities[0].ttl, 10);
    clock.advance(Duration::from_secs(11));
    exchange(z.udp, &query("nx.example.", RecordType::A, None)).await;
    exchange(
        z.udp,
        &query("new-endpoint.privatelink.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(asked(&up, "nx.example."), 1, "still cached");
    assert_eq!(
        asked(&up, "new-endpoint.privatelink.example."),
        2,
        "expired after 10 s"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn popular_entries_are_prefetched_before_they_expire() {
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let up = Fake::answering(move |q| reply_a(q, [192, 0, 2, v.load(Ordering::SeqCst) as u8], 100))
        .await;
    let (z, clock) = start(&one_route(&[up.addr], "")).await;
    exchange(z.udp, &query("hot.example.", RecordType::A, None)).await;
    version.store(2, Ordering::SeqCst);
    exchange(z.udp, &query("hot.example.", RecordType::A, None)).await; // a hit
    clock.advance(Duration::from_secs(91));
    let r = exchange(z.udp, &query("hot.example.", RecordType::A, None)).await; // a hit in the last tenth
    assert_eq!(
        r.answers[0].ttl, 9,
        "served from cache while the refresh runs"
    );
    eventually("the prefetch", || asked(&up, "hot.example.") == 2).await;
    // The old entry stays fresh for 9 more seconds; poll until the refresh replaced it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = exchange(z.udp, &query("hot.example.", RecordType::A, None)).await;
        if r.answers[0].data == a_record("x.", [192, 0, 2, 2], 1).data {
            assert_eq!(
                r.answers[0].ttl, 100,
                "the refreshed entry starts a new TTL"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prefetched answer never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock.advance(Duration::from_secs(20)); // the old entry would have expired now
    let r = exchange(z.udp, &query("hot.example.", RecordType::A, None)).await;
    assert_eq!(
        r.answers[0].data,
        a_record("x.", [192, 0, 2, 2], 1).data,
        "the prefetched answer"
    );
    assert_eq!(asked(&up, "hot.example."), 2, "no miss after expiry");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn the_cache_key_separates_do_cd_qtype_and_truncated_replies_are_not_cached() {
    let up = Fake::start(|q, tcp| {
        if qname_of(q) == "tc.example." && !tcp {
            let mut r = reply(q);
            r.metadata.truncation = true;
            return vec![Step::Reply(r)];
        }
        if qname_of(q) == "tc.example." {
            return vec![Step::CloseMidReply(reply(q))]; // TCP breaks off
        }
        vec![Step::Reply(reply_a(q, [192, 0, 2, 9], 60))]
    })
    .await;
    let (z, _clock) = start(&one_route(&[up.addr], "timeout = \"1s\"")).await;
    exchange(z.udp, &query("k.example.", RecordType::A, None)).await;
    exchange(z.udp, &query("k.example.", RecordType::A, None)).await;
    assert_eq!(asked(&up, "k.example."), 1);
    let mut with_do = query("k.example.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_dnssec_ok(true);
    with_do.edns = Some(e);
    exchange(z.udp, &with_do).await;
    assert_eq!(asked(&up, "k.example."), 2, "DO=1 is another question");
    let mut cd = query("k.example.", RecordType::A, None);
    cd.metadata.checking_disabled = true;
    exchange(z.udp, &cd).await;
    assert_eq!(asked(&up, "k.example."), 3, "CD=1 is another question");
    exchange(z.udp, &query("k.example.", RecordType::AAAA, None)).await;
    assert_eq!(asked(&up, "k.example."), 4, "AAAA is another question");

    let r = exchange(z.udp, &query("tc.example.", RecordType::A, None)).await;
    assert!(r.metadata.truncation);
    let n = asked(&up, "tc.example.");
    exchange(z.udp, &query("tc.example.", RecordType::A, None)).await;
    assert!(
        asked(&up, "tc.example.") > n,
        "a truncated reply is never served from cache"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn max_qps_caps_upstream_queries_and_falls_back_to_stale() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 10], 5)).await;
    let (z, clock) = start(&one_route(&[up.addr], "max_qps = 3")).await;
    // The clock stands still, so the bucket holds 3 tokens and never refills.
    let mut servfails = 0;
    for i in 0..10 {
        let (r, took) = timed(exchange(
            z.udp,
            &query(&format!("b{i}.example."), RecordType::A, None),
        ))
        .await;
        if r.metadata.response_code == ResponseCode::ServFail {
            servfails += 1;
            assert!(
                took < Duration::from_secs(1),
                "over budget is answered at once, not queued: {took:?}"
            );
        }
    }
    assert_eq!(up.count(), 3);
    assert_eq!(servfails, 7);
    // Six seconds on, b0 (TTL 5) has expired and the bucket is full again: spend it
    // on new names, then b0 is over budget and served stale.
    clock.advance(Duration::from_secs(6));
    for i in 10..13 {
        let r = exchange(
            z.udp,
            &query(&format!("b{i}.example."), RecordType::A, None),
        )
        .await;
        assert_eq!(r.answers.len(), 1);
    }
    assert_eq!(up.count(), 6);
    let r = exchange(z.udp, &query("b0.example.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].ttl, 30, "over budget: the stale answer");
    assert_eq!(up.count(), 6, "nothing sent over budget");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn when_overloaded_a_stale_answer_beats_servfail() {
    let up = Fake::start(|q, _| {
        let delay = if qname_of(q) == "busy.example." {
            1500
        } else {
            0
        };
        vec![
            Step::Sleep(Duration::from_millis(delay)),
            Step::Reply(reply_a(q, [192, 0, 2, 11], 5)),
        ]
    })
    .await;
    let (z, clock) = start(&format!(
        "[server]\nmax_inflight = 1\n{}",
        one_route(&[up.addr], "")
    ))
    .await;
    exchange(z.udp, &query("known.example.", RecordType::A, None)).await;
    clock.advance(Duration::from_secs(10)); // known.example. has expired
    let addr = z.udp;
    let busy = asking_a(addr, "busy.example.");
    eventually("the slow query to hold the only slot", || {
        asked(&up, "busy.example.") == 1
    })
    .await;
    let r = exchange(z.udp, &query("known.example.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].ttl, 30, "the stale answer, not SERVFAIL");
    let r = exchange(z.udp, &query("unknown.example.", RecordType::A, None)).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "nothing stale to give"
    );
    assert!(busy.await.unwrap().is_some());
    z.stop().await.unwrap();
}
