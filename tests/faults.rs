//! Fault scenarios with fake upstreams that misbehave over time: an upstream that flaps,
//! one that answers after the deadline, one whose TCP answers arrive out of order.
//! Times are asserted only as generous bounds.
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;

#[tokio::test]
async fn a_flapping_upstream_costs_a_bounded_number_of_slow_answers() {
    // Up for a second, silent for a second, for six seconds; then up for good.
    let start = Instant::now();
    let steady = Arc::new(AtomicBool::new(false));
    let flag = steady.clone();
    let flappy = Fake::start(move |q, _| {
        let up = flag.load(Ordering::SeqCst) || start.elapsed().as_secs().is_multiple_of(2);
        if up {
            vec![Step::Reply(reply_a(q, [192, 0, 2, 10], 1))]
        } else {
            vec![]
        }
    })
    .await;
    let backup = Fake::answering(|q| reply_a(q, [192, 0, 2, 20], 1)).await;
    let max_fails = 2;
    let z = Zonefwd::start(&one_route(
        &[flappy.addr, backup.addr],
        &format!("timeout = \"2s\"\ntry_timeout = \"300ms\"\nmax_fails = {max_fails}\nhealth_check = \"200ms\"\ncache = false"),
    ))
    .await;
    let mut slow = 0;
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let (r, took) = timed(ask_a(z.udp, &format!("f{n}.example."))).await;
        n += 1;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "query {n}");
        worst = worst.max(took);
        if took >= Duration::from_millis(250) {
            slow += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three silent seconds; each costs at most max_fails answers that waited out
    // try_timeout before the backup answered (plus one in flight at each edge). Without
    // health tracking every query of those seconds would be slow (about 25 of them).
    let bound = 3 * (max_fails + 1);
    assert!(
        slow <= bound,
        "{slow} of {n} answers were slow (bound {bound}); worst {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(2),
        "worst answer took {worst:?}"
    );

    // Steady again: back in rotation within a few health-check intervals.
    steady.store(true, Ordering::SeqCst);
    let back = Instant::now();
    loop {
        let r = ask_a(z.udp, &format!("s{n}.example.")).await;
        n += 1;
        if r.answers[0].data == a_record("x.", [192, 0, 2, 10], 1).data {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "not back in rotation after {:?}",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "flapping: {n} queries, {slow} slow (bound {bound}), worst {worst:?}, back in rotation after {:?}",
        back.elapsed()
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_after_the_deadline_is_discarded_not_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = Fake::start(move |q, _| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            // The first answer comes a second after the deadline.
            vec![
                Step::Sleep(Duration::from_millis(1500)),
                Step::Reply(reply_a(q, [6, 6, 6, 6], 3600)),
            ]
        } else {
            vec![Step::Reply(reply_a(q, [192, 0, 2, 2], 60))]
        }
    })
    .await;
    let z = Zonefwd::start(&one_route(
        &[up.addr],
        "timeout = \"500ms\"\ntry_timeout = \"500ms\"\ncache = { servfail_ttl = \"1s\" }",
    ))
    .await;
    let (r, took) = timed(ask_a(z.udp, "late.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took < Duration::from_millis(1400),
        "SERVFAIL after {took:?}"
    );
    // The late answer arrives while we wait; then the failure entry expires.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = ask_a(z.udp, "late.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].data, a_record("x.", [192, 0, 2, 2], 60).data);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_answers_out_of_order_or_for_other_ids_are_skipped() {
    let up = Fake::start(|q, tcp| {
        let mut truncated = reply(q);
        truncated.metadata.truncation = true;
        if !tcp {
            return vec![Step::Reply(truncated)];
        }
        // Over TCP: an answer for another ID (another query's, out of order), one with
        // this ID and a different question (a duplicate ID), then the real one.
        let mut other_id = reply_a(q, [6, 6, 6, 1], 60);
        other_id.metadata.id = q.metadata.id ^ 0x5555;
        let mut other_question = reply_a(q, [6, 6, 6, 2], 60);
        other_question.queries[0].set_name(name("other.example."));
        vec![
            Step::Reply(other_id),
            Step::Reply(other_question),
            Step::Reply(reply_a(q, [192, 0, 2, 7], 60)),
        ]
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let r = ask_a(z.udp, "ooo.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data, a_record("x.", [192, 0, 2, 7], 60).data);
    assert_eq!((up.udp_count(), up.tcp_count()), (1, 1));
    z.stop().await.unwrap();
}
