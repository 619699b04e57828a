//! `transport = "tcp"`: every query of the route over kept, pipelined TCP connections
//! (RFC 7766 sections 6.2.1.1 and 7), and the TC retry of UDP routes on the same ones.
//! The fake upstream records the connection each query came on.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// A zonefwd with one TCP route for "." to `upstreams`, metrics on, and `extra` route
/// keys.
async fn tcp_route(upstreams: &[SocketAddr], extra: &str) -> Zonefwd {
    let conf = Conf::new().server("metrics = \"127.0.0.1:0\"").route(
        "cloud",
        &["."],
        upstreams,
        &format!("transport = \"tcp\"\n{extra}"),
    );
    Zonefwd::start_config(conf.build()).await
}

/// The address a reply for `name` carries, from the fake upstreams below.
fn ip_for(name: &str) -> [u8; 4] {
    [10, 0, 0, name.len() as u8]
}

fn answer_ip(m: &Message) -> Option<[u8; 4]> {
    match m.answers.first()?.data {
        hickory_proto::rr::RData::A(a) => Some(a.0.octets()),
        _ => None,
    }
}

async fn gauge(z: &Zonefwd, name: &str) -> u64 {
    metric(&scrape(z).await, name)
}

#[tokio::test]
async fn every_query_goes_over_one_kept_connection_pipelined() {
    let up = Fake::start(|q, _| {
        let ip = ip_for(&qname_of(q));
        vec![
            Step::Sleep(Duration::from_millis(50)),
            Step::Reply(reply_a(q, ip, 60)),
        ]
    })
    .await;
    let z = tcp_route(&[up.addr], "").await;
    let names: Vec<String> = (0..20).map(|i| format!("n{i:02}.example.")).collect();
    let asks: Vec<_> = names.iter().map(|n| asking_a(z.udp, n)).collect();
    for (name, ask) in names.iter().zip(asks) {
        let r = Message::from_vec(&ask.await.unwrap().expect("answered")).unwrap();
        assert_eq!(answer_ip(&r), Some(ip_for(name)), "{name}");
    }
    assert_eq!(up.udp_count(), 0, "nothing over UDP");
    assert_eq!(up.tcp_count(), 20);
    assert_eq!(
        up.tcp_connections().len(),
        1,
        "20 at once fit one connection"
    );
    // In flight together on one connection, so no two share an ID.
    let mut ids: Vec<u16> = up.seen().iter().map(|s| s.msg.metadata.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(gauge(&z, "zonefwd_upstream_tcp_connections{").await, 1);

    // The next query takes the same connection: it was kept.
    ask_a(z.udp, "later.example.").await;
    assert_eq!(up.tcp_connections().len(), 1);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn replies_out_of_order_reach_their_own_queries() {
    // The first query is answered last.
    let up = Fake::start(|q, _| {
        let name = qname_of(q);
        let delay = if name.starts_with("slow.") { 300 } else { 0 };
        vec![
            Step::Sleep(Duration::from_millis(delay)),
            Step::Reply(reply_a(q, ip_for(&name), 60)),
        ]
    })
    .await;
    let z = tcp_route(&[up.addr], "").await;
    let slow = asking_a(z.udp, "slow.example.");
    eventually("the slow query to reach the upstream", || up.count() == 1).await;
    let quick = ask_a(z.udp, "quick.example.com.").await;
    assert_eq!(answer_ip(&quick), Some(ip_for("quick.example.com.")));
    let slow = Message::from_vec(&slow.await.unwrap().unwrap()).unwrap();
    assert_eq!(answer_ip(&slow), Some(ip_for("slow.example.")));
    assert_eq!(
        up.tcp_connection_of("slow.example."),
        up.tcp_connection_of("quick.example.com."),
        "both on one connection"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_closed_mid_reply_is_replaced_and_its_query_asked_again() {
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&tcp_queries);
    let up = Fake::start(move |q, _| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            vec![Step::CloseMidReply(reply_a(q, [10, 9, 9, 9], 60))]
        } else {
            vec![Step::Reply(reply_a(q, ip_for(&qname_of(q)), 60))]
        }
    })
    .await;
    let z = tcp_route(&[up.addr], "").await;
    let r = ask_a(z.udp, "cut.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_ip(&r), Some(ip_for("cut.example.")));
    assert_eq!(asked(&up, "cut.example."), 2, "asked again once");
    assert_eq!(up.tcp_connections().len(), 2, "on a new connection");
    let text = scrape(&z).await;
    assert_eq!(metric(&text, "zonefwd_upstream_tcp_reconnects_total{"), 1);
    assert_eq!(metric(&text, "zonefwd_upstream_tcp_connections{"), 1);
    assert_eq!(
        metric(&text, "zonefwd_upstream_errors_total{"),
        0,
        "the try did not fail"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_connection_takes_no_new_queries_and_closes_once_given_up() {
    // The upstream never answers "stuck." but answers everything else.
    let up = Fake::start(|q, _| {
        let name = qname_of(q);
        if name.starts_with("stuck.") {
            vec![]
        } else {
            vec![Step::Reply(reply_a(q, ip_for(&name), 60))]
        }
    })
    .await;
    let z = tcp_route(
        &[up.addr],
        "timeout = \"1s\"\ntry_timeout = \"200ms\"\nmax_fails = 0",
    )
    .await;
    let stuck = asking_a(z.udp, "stuck.example.");
    eventually("the stuck query to reach the upstream", || up.count() == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Nothing read on the first connection for try_timeout: the next query goes on
    // another, and is answered.
    let fine = ask_a(z.udp, "fine.example.").await;
    assert_eq!(answer_ip(&fine), Some(ip_for("fine.example.")));
    assert_ne!(
        up.tcp_connection_of("fine.example."),
        up.tcp_connection_of("stuck.example."),
    );
    // The stuck query ends at the route's deadline, with SERVFAIL.
    let stuck = Message::from_vec(&stuck.await.unwrap().unwrap()).unwrap();
    assert_eq!(stuck.metadata.response_code, ResponseCode::ServFail);
    // Then nobody waits on the stalled connection, and it closes; the connection that
    // answered stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gauge(&z, "zonefwd_upstream_tcp_connections{").await > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled connection still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    z.stop().await.unwrap();
}

#[tokio::test]
async fn an_upstream_refusing_connections_fails_over_at_once() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let good = Fake::answering_a().await;
    let z = tcp_route(
        &[refused, good.addr],
        "timeout = \"5s\"\ntry_timeout = \"2s\"",
    )
    .await;
    let (r, took) = timed(ask_a(z.udp, "x.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        took < Duration::from_secs(2),
        "did not wait for try_timeout: {took:?}"
    );
    assert_eq!(good.tcp_count(), 1);
    let text = scrape(&z).await;
    let errors = format!("zonefwd_upstream_errors_total{{route=\"cloud\",upstream=\"{refused}\"}}");
    assert_eq!(metric(&text, &errors), 1, "{text}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn the_tc_retry_of_a_udp_route_uses_the_kept_connection() {
    let up = Fake::truncating().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    for name in ["one.example.", "two.example.", "three.example."] {
        let r = ask(&tcp_client(z.tcp).await, query(name, RecordType::A, None)).await;
        assert_eq!(r.answers.len(), 40, "{name}");
    }
    assert_eq!((up.udp_count(), up.tcp_count()), (3, 3));
    assert_eq!(
        up.tcp_connections().len(),
        1,
        "one connection for the three"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_tcp_route_is_health_checked_over_tcp() {
    // Marked down after one failure, then brought back by a probe over TCP.
    let (up, on) = Fake::answering_while(false, [192, 0, 2, 7], 60).await;
    let z = tcp_route(
        &[up.addr],
        "timeout = \"300ms\"\ntry_timeout = \"300ms\"\nmax_fails = 1\nhealth_check = \"100ms\"",
    )
    .await;
    let r = ask_a(z.udp, "down.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    on.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gauge(&z, "zonefwd_upstream_up{").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never back up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up.seen().iter().all(|s| s.tcp), "probes too went over TCP");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_reply_with_the_right_id_but_another_question_is_dropped() {
    // First a reply under the query's ID for another name, then the real one.
    let up = Fake::start(|q, _| {
        let mut other = query("other.example.", RecordType::A, None);
        other.metadata.id = q.metadata.id;
        vec![
            Step::Reply(reply_a(&other, [10, 6, 6, 6], 60)),
            Step::Reply(reply_a(q, ip_for(&qname_of(q)), 60)),
        ]
    })
    .await;
    let z = tcp_route(&[up.addr], "").await;
    let r = ask_a(z.udp, "mine.example.").await;
    assert_eq!(answer_ip(&r), Some(ip_for("mine.example.")));
    let text = scrape(&z).await;
    assert_eq!(
        metric(&text, "zonefwd_upstream_mismatched_replies_total{"),
        1
    );
    z.stop().await.unwrap();
}
