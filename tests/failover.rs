//! When upstreams fail: timeouts, failover within the deadline, a late answer that
//! still wins, marking down and probing back, forged replies, connections cut
//! mid-reply, and SERVFAIL answers that are not failures of the server.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn fails_over_on_timeout_and_answers_before_the_deadline() {
    let dead = Fake::blackhole().await;
    let live = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 1)).await;
    let z = Zonefwd::start(&one_route(
        &[dead.addr, live.addr],
        "timeout = \"3s\"\ntry_timeout = \"200ms\"",
    ))
    .await;
    let (r, took) = timed(ask(
        &udp_client(z.udp),
        query("f.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.answers.len(), 1);
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    assert_eq!((dead.count(), live.count()), (1, 1));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn all_upstreams_down_gives_servfail_by_the_deadline() {
    let a = Fake::blackhole().await;
    let b = Fake::blackhole().await;
    let z = Zonefwd::start(&one_route(
        &[a.addr, b.addr],
        "timeout = \"1s\"\ntry_timeout = \"200ms\"",
    ))
    .await;
    // A raw UDP exchange (no client retransmissions) and a TCP client.
    let q = query("down.example.", RecordType::A, None);
    let (out, took) = timed(raw_udp(
        z.udp,
        &q.to_vec().unwrap(),
        Duration::from_secs(10),
    ))
    .await;
    assert_eq!(
        Message::from_vec(&out.unwrap())
            .unwrap()
            .metadata
            .response_code,
        ResponseCode::ServFail
    );
    assert!(
        took >= Duration::from_millis(900),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "deadline not kept: {took:?}");
    let (r, took) = timed(ask(&tcp_client(z.tcp).await, q)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_secs(4), "deadline not kept: {took:?}");
    // Each upstream asked at most twice per query (health probes aside).
    let asked = |f: &Fake| {
        f.seen()
            .iter()
            .filter(|s| qname_of(&s.msg) == "down.example.")
            .count()
    };
    assert!(
        asked(&a) <= 4 && asked(&b) <= 4,
        "{} {}",
        asked(&a),
        asked(&b)
    );
    assert!(
        asked(&a) >= 2 && asked(&b) >= 2,
        "both tried for both queries"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_late_answer_from_an_earlier_try_still_wins() {
    // The only upstream answers after 700 ms; tries every 200 ms must not discard it.
    let slow = Fake::answering_after(Duration::from_millis(700), [192, 0, 2, 3], 1).await;
    let z = Zonefwd::start(&one_route(
        &[slow.addr],
        "timeout = \"3s\"\ntry_timeout = \"200ms\"",
    ))
    .await;
    let r = ask(
        &udp_client(z.udp),
        query("late.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_down_upstream_is_skipped_then_probed_back() {
    let (flappy, alive) = Fake::answering_while(false, [192, 0, 2, 10], 1).await;
    let backup = Fake::answering(|q| reply_a(q, [192, 0, 2, 20], 1)).await;
    let z = Zonefwd::start(&one_route(
        &[flappy.addr, backup.addr],
        "timeout = \"2s\"\ntry_timeout = \"100ms\"\nmax_fails = 1\nhealth_check = \"100ms\"",
    ))
    .await;
    let c = udp_client(z.udp);
    let first = ask(&c, query("h1.example.", RecordType::A, None)).await;
    assert_eq!(
        first.answers[0].data,
        a_record("x.", [192, 0, 2, 20], 1).data
    );
    // Marked down: the next query goes straight to the backup, not to the dead one.
    let asked = |f: &Fake, n: &str| f.seen().iter().filter(|s| qname_of(&s.msg) == n).count();
    let (_, took) = timed(ask(&c, query("h2.example.", RecordType::A, None))).await;
    assert_eq!(
        asked(&flappy, "h2.example."),
        0,
        "a down upstream is skipped"
    );
    assert!(took < Duration::from_millis(1500));
    // It comes back: the probe (". NS") sees it and it is first in line again.
    alive.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&c, query("h3.example.", RecordType::A, None)).await;
        if r.answers[0].data == a_record("x.", [192, 0, 2, 10], 1).data {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        flappy
            .seen()
            .iter()
            .any(|s| qname_of(&s.msg) == "." && s.msg.queries[0].query_type() == RecordType::NS),
        "probed with . NS"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn when_every_upstream_is_down_they_are_tried_anyway() {
    let answers = Arc::new(AtomicBool::new(false));
    let flag = answers.clone();
    let up = Fake::start(move |q, _| {
        if flag.load(Ordering::SeqCst) && qname_of(q) != "." {
            vec![Step::Reply(reply_a(q, [192, 0, 2, 30], 1))]
        } else {
            vec![]
        }
    })
    .await;
    let z = Zonefwd::start(&one_route(
        &[up.addr],
        "timeout = \"600ms\"\ntry_timeout = \"100ms\"\nmax_fails = 1\nhealth_check = \"1h\"",
    ))
    .await;
    let c = udp_client(z.udp);
    let r = ask(&c, query("d1.example.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    answers.store(true, Ordering::SeqCst);
    let r = ask(&c, query("d2.example.", RecordType::A, None)).await;
    assert_eq!(
        r.answers.len(),
        1,
        "the only upstream is down but still asked"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn forged_replies_are_ignored_and_the_real_one_wins() {
    let up = Fake::start(|q, _| {
        let mut wrong_id = reply_a(q, [6, 6, 6, 1], 1);
        wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
        let mut wrong_q = reply_a(q, [6, 6, 6, 2], 1);
        wrong_q.queries[0].set_name(name("evil.example."));
        let mut wrong_type = reply_a(q, [6, 6, 6, 4], 1);
        wrong_type.queries[0].set_query_type(RecordType::AAAA);
        let other_port = reply_a(q, [6, 6, 6, 3], 1);
        vec![
            Step::Reply(wrong_id),
            Step::Reply(wrong_q),
            Step::Reply(wrong_type),
            Step::FromOtherPort(other_port.to_vec().unwrap()),
            Step::Sleep(Duration::from_millis(100)),
            Step::Reply(reply_a(q, [192, 0, 2, 44], 1)),
        ]
    })
    .await;
    let z = Zonefwd::start_server("metrics = \"127.0.0.1:0\"", up.addr).await;
    let r = ask(
        &udp_client(z.udp),
        query("bank.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data, a_record("x.", [192, 0, 2, 44], 1).data);
    assert_eq!(up.count(), 1, "one try: forgeries do not end it");
    // Only the real answer was cached.
    let again = ask_a(z.udp, "bank.example.").await;
    assert_eq!(
        again.answers[0].data,
        a_record("x.", [192, 0, 2, 44], 1).data
    );
    assert_eq!(up.count(), 1);
    // The three that came from the upstream's own address and port are counted; the
    // one from another port never reached zonefwd (its socket is connected).
    let (_, text) = http_get(z.metrics.unwrap(), "/metrics").await;
    let line = format!(
        "zonefwd_upstream_mismatched_replies_total{{route=\"default\",upstream=\"{}\"}} 3",
        up.addr
    );
    assert!(text.contains(&line), "{line} missing from\n{text}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_cut_off_mid_reply_after_truncation_fails_over() {
    // The first upstream truncates over UDP, then closes TCP halfway through the
    // reply (as a guest-agent firewall or a crashing server might).
    let cut = Fake::start(|q, tcp| {
        if tcp {
            vec![Step::CloseMidReply(big_reply(q))]
        } else {
            let mut r = reply(q);
            r.metadata.truncation = true;
            vec![Step::Reply(r)]
        }
    })
    .await;
    let good = Fake::answering(big_reply).await;
    let z = Zonefwd::start(&one_route(&[cut.addr, good.addr], "")).await;
    let r = ask(
        &tcp_client(z.tcp).await,
        query("cut.example.", RecordType::A, None),
    )
    .await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
    // Asked again on a new connection after each cut (twice, with backoff), then the
    // next upstream.
    assert_eq!((cut.udp_count(), cut.tcp_count()), (1, 3));
    assert_eq!(good.count(), 1);
    z.stop().await.unwrap();

    // Alone, it leaves the client the truncated reply: TC=1 says to retry elsewhere,
    // which is more than a SERVFAIL would say.
    let z = Zonefwd::start(&one_route(&[cut.addr], "timeout = \"2s\"")).await;
    let out = raw_udp(
        z.udp,
        &query("cut2.example.", RecordType::A, None)
            .to_vec()
            .unwrap(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let r = Message::from_vec(&out).unwrap();
    assert!(r.metadata.truncation);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn an_upstream_that_answers_servfail_is_not_marked_down() {
    // SERVFAIL is an answer about one name, not a sign the server is gone: with B
    // blackholed, each query ends at the deadline, and A must stay in rotation.
    let a = Fake::answering(|q| reply_rcode(q, ResponseCode::ServFail)).await;
    let b = Fake::blackhole().await;
    let z = Zonefwd::start(&one_route(
        &[a.addr, b.addr],
        "timeout = \"500ms\"\ntry_timeout = \"100ms\"\nmax_fails = 1\nhealth_check = \"1h\"",
    ))
    .await;
    // Raw single-shot UDP: a client retransmission would start a second job whose
    // SERVFAIL resets A's count and hide a miscount.
    for i in 0..3 {
        let q = query(&format!("sf{i}.example."), RecordType::A, None);
        let out = raw_udp(z.udp, &q.to_vec().unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            Message::from_vec(&out).unwrap().metadata.response_code,
            ResponseCode::ServFail
        );
    }
    let asked_a = |n: &str| a.seen().iter().filter(|s| qname_of(&s.msg) == n).count();
    let asked_b = |n: &str| b.seen().iter().filter(|s| qname_of(&s.msg) == n).count();
    assert!(asked_a("sf2.example.") >= 1, "A was wrongly marked down");
    // B failed and is skipped once marked down (max_fails = 1).
    assert_eq!(asked_b("sf2.example."), 0, "B should be marked down");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn failures_of_tries_sent_before_the_upstreams_last_answer_are_not_in_a_row() {
    // Four queries go to A while it is away; it comes back and answers a fifth before
    // their tries time out. Those four timeouts say nothing of A as it is now: A stays
    // first in line (without the rule it was marked down by them, and under a steady
    // stream flapped down and up between its own answers).
    let (a, back) = Fake::answering_while(false, [192, 0, 2, 10], 60).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 20], 60)).await;
    let z = Zonefwd::start(&one_route(
        &[a.addr, b.addr],
        "timeout = \"3s\"\ntry_timeout = \"1s\"\nmax_fails = 3\nhealth_check = \"1h\"",
    ))
    .await;
    let lost: Vec<_> = (0..4)
        .map(|i| asking_a(z.udp, &format!("away{i}.example.")))
        .collect();
    eventually("the four queries at A", || a.count() == 4).await;
    back.store(true, Ordering::SeqCst);
    let r = ask_a(z.udp, "back.example.").await;
    assert_eq!(r.answers[0].data, a_record("x.", [192, 0, 2, 10], 60).data);
    for q in lost {
        let r = Message::from_vec(&q.await.unwrap().expect("answered by B")).unwrap();
        assert_eq!(r.answers[0].data, a_record("x.", [192, 0, 2, 20], 60).data);
    }
    let r = ask_a(z.udp, "after.example.").await;
    assert_eq!(
        r.answers[0].data,
        a_record("x.", [192, 0, 2, 10], 60).data,
        "A was marked down by failures older than its last answer"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_lone_upstream_gets_a_third_try_when_the_first_two_went_unanswered() {
    // RFC 9520 section 3.2: at most two retries. A lone cloud resolver losing two
    // datagrams in a row answers the third; one that answered SERVFAIL is not asked a
    // third time (tests/cache.rs servfail_is_cached_for_servfail_ttl_only).
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = seen.clone();
    let up = Fake::start(move |q, _| {
        if n.fetch_add(1, Ordering::SeqCst) < 2 {
            vec![]
        } else {
            vec![Step::Reply(reply_a(q, [192, 0, 2, 3], 60))]
        }
    })
    .await;
    let z = Zonefwd::start(&one_route(
        &[up.addr],
        "timeout = \"3s\"\ntry_timeout = \"300ms\"\nmax_fails = 0",
    ))
    .await;
    let r = ask_a(z.udp, "third.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(asked(&up, "third.example."), 3);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_port_nobody_listens_on_fails_over_at_once() {
    // The kernel answers a datagram to a closed port with ICMP port unreachable; on a
    // connected socket that is ECONNREFUSED at the next receive. An upstream being
    // restarted looks like this: the next upstream is asked now, not after
    // try_timeout.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let good = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(
        &[closed, good.addr],
        "timeout = \"20s\"\ntry_timeout = \"10s\"",
    ))
    .await;
    let (r, took) = timed(ask_a(z.udp, "refused.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        took < Duration::from_secs(5),
        "waited {took:?}: the refusal went unseen"
    );
    z.stop().await.unwrap();
}
