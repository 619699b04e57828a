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
    let pending = tokio::spawn(async move {
        raw_udp(
            addr,
            &query("inflight.example.", RecordType::A, None)
                .to_vec()
                .unwrap(),
            Duration::from_secs(10),
        )
        .await
    });
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
