//! Abuse limits: RFC 9210 limits on client TCP connections (queries per connection,
//! connection lifetime, connections per client), per-client query rate and in-flight
//! caps, and RFC 8482 ANY.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads framed answers until the server closes: their IDs.
async fn answers_until_close(s: &mut TcpStream) -> Vec<u16> {
    let mut ids = Vec::new();
    loop {
        let buf = match tokio::time::timeout(Duration::from_secs(10), read_framed(s))
            .await
            .expect("closed or answered in time")
        {
            Ok(b) => b,
            Err(_) => return ids, // EOF
        };
        ids.push(Message::from_vec(&buf).unwrap().metadata.id);
    }
}

fn framed_query(name: &str, id: u16) -> Vec<u8> {
    let mut q = query(name, RecordType::A, None);
    q.metadata.id = id;
    framed(&q.to_vec().unwrap())
}

#[tokio::test]
async fn a_connection_carries_at_most_tcp_max_queries_per_connection() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server("tcp_max_queries_per_connection = 3", up.addr).await;
    let mut s = TcpStream::connect(z.tcp).await.unwrap();
    for id in 1..=5u16 {
        s.write_all(&framed_query(&format!("q{id}.example."), id))
            .await
            .unwrap();
    }
    let mut ids = answers_until_close(&mut s).await;
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3], "three answered, then closed");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_is_closed_at_tcp_max_lifetime_even_when_busy() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server(
        "tcp_max_lifetime = \"500ms\"\ntcp_idle_timeout = \"30s\"",
        up.addr,
    )
    .await;
    let mut s = TcpStream::connect(z.tcp).await.unwrap();
    let (answered, took) = timed(async {
        // Keep it busy: a query every 100 ms; the lifetime still ends it.
        let mut n = 0;
        for id in 1..=50u16 {
            if s.write_all(&framed_query("busy.example.", id))
                .await
                .is_err()
            {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), read_framed(&mut s))
                .await
                .unwrap()
            {
                Ok(_) => n += 1,
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    })
    .await;
    assert!((2..50).contains(&answered), "answered {answered}");
    assert!(
        took < Duration::from_secs(5),
        "the idle timeout (30 s) did not decide: {took:?}"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn one_client_holds_at_most_tcp_max_connections_per_client() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server("tcp_max_connections_per_client = 2", up.addr).await;
    let mut held = Vec::new();
    for id in 1..=2u16 {
        let mut s = TcpStream::connect(z.tcp).await.unwrap();
        s.write_all(&framed_query("held.example.", id))
            .await
            .unwrap();
        read_framed(&mut s).await.unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(z.tcp).await.unwrap();
    let _ = third.write_all(&framed_query("third.example.", 3)).await;
    assert!(
        answers_until_close(&mut third).await.is_empty(),
        "the third connection is closed unanswered"
    );
    // A slot comes back when a held connection closes.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(z.tcp).await.unwrap();
        s.write_all(&framed_query("again.example.", 4))
            .await
            .unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), s.read_u16()).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot can be used");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn any_queries_get_the_rfc8482_answer_and_never_reach_an_upstream() {
    use hickory_proto::rr::RData;
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let r = exchange(z.udp, &query("big.example.", RecordType::ANY, Some(1232))).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].ttl, 3789);
    match &r.answers[0].data {
        RData::HINFO(h) => assert_eq!((&h.cpu[..], &h.os[..]), (&b"RFC8482"[..], &b""[..])),
        other => panic!("expected HINFO, got {other:?}"),
    }
    assert!(r.edns.is_some(), "an EDNS client gets its OPT");
    assert_eq!(up.count(), 0);
    z.stop().await.unwrap();

    let z = Zonefwd::start_server("any_queries = \"refuse\"", up.addr).await;
    let r = exchange(z.udp, &query("big.example.", RecordType::ANY, None)).await;
    assert_eq!(
        r.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    z.stop().await.unwrap();

    let z = Zonefwd::start_server("any_queries = \"forward\"", up.addr).await;
    exchange(z.udp, &query("big.example.", RecordType::ANY, None)).await;
    assert_eq!(up.count(), 1, "forwarded when the operator says so");
    z.stop().await.unwrap();
}

/// Sends `n` distinct A queries from `from` over UDP at once; returns the rcodes of the
/// answers that came back within `wait` (dropped queries are simply missing).
async fn burst_from(
    from: std::net::IpAddr,
    server: std::net::SocketAddr,
    n: u16,
    wait: Duration,
) -> Vec<hickory_proto::op::ResponseCode> {
    let sock = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
    for id in 0..n {
        let mut q = query(&format!("r{id}.example."), RecordType::A, None);
        q.metadata.id = id;
        sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((len, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        out.push(
            Message::from_vec(&buf[..len])
                .unwrap()
                .metadata
                .response_code,
        );
        if out.len() == usize::from(n) {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_client_over_client_qps_is_refused_or_dropped_and_others_are_not() {
    use hickory_proto::op::ResponseCode;
    let up = Fake::answering_a().await;
    let z = Zonefwd::start_server("metrics = \"127.0.0.1:0\"\nclient_qps = 2\nclient_burst = 10\nclient_limit_action = \"refuse\"", up.addr).await;
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (codes, took) = timed(burst_from(one, z.udp, 40, Duration::from_secs(5))).await;
    assert_eq!(codes.len(), 40, "refuse answers every query");
    let ok = codes
        .iter()
        .filter(|c| **c == ResponseCode::NoError)
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == ResponseCode::Refused)
        .count();
    // The burst, plus what 2 qps refilled while the test ran.
    let refill = (took.as_secs_f64() * 2.0).ceil() as usize + 1;
    assert!(
        (10..=10 + refill).contains(&ok),
        "{ok} answered in {took:?}"
    );
    assert_eq!(ok + refused, 40);
    assert_eq!(up.count(), ok, "refused queries never went upstream");
    // Another client has a bucket of its own.
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let codes = burst_from(two, z.udp, 5, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ResponseCode::NoError; 5]);
    let (_, text) = http_get(z.metrics.unwrap(), "/metrics").await;
    assert!(
        text.contains(&format!("zonefwd_client_rate_limited_total {refused}")),
        "{text}"
    );
    z.stop().await.unwrap();

    // The default action drops: the excess gets no answer at all.
    let z = Zonefwd::start_server("client_qps = 1\nclient_burst = 5", up.addr).await;
    let codes = burst_from(one, z.udp, 30, Duration::from_millis(1500)).await;
    assert!((5..=8).contains(&codes.len()), "{} answered", codes.len());
    assert!(codes.iter().all(|c| *c == ResponseCode::NoError));
    z.stop().await.unwrap();

    // Exempt networks are not limited.
    let z = Zonefwd::start_server(
        "client_qps = 1\nclient_burst = 1\nclient_limit_exempt = [\"127.0.0.0/8\"]",
        up.addr,
    )
    .await;
    let codes = burst_from(one, z.udp, 30, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ResponseCode::NoError; 30]);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_may_have_only_client_max_inflight_queries_waiting_upstream() {
    use hickory_proto::op::ResponseCode;
    // DNSBomb: a slow upstream, and a client sending many distinct names.
    let up = Fake::answering_after(Duration::from_millis(1500), [192, 0, 2, 1], 60).await;
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .server("client_max_inflight = 3")
        .server("client_limit_action = \"refuse\"")
        .route(
            "default",
            &["."],
            &[up.addr],
            "timeout = \"5s\"\ntry_timeout = \"4s\"",
        );
    let z = Zonefwd::start(&conf.toml()).await;
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let codes = burst_from(one, z.udp, 10, Duration::from_secs(5)).await;
    let ok = codes
        .iter()
        .filter(|c| **c == ResponseCode::NoError)
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == ResponseCode::Refused)
        .count();
    assert_eq!((ok, refused), (3, 7), "{codes:?}");
    assert_eq!(up.count(), 3, "only three queries reached the upstream");
    // Another client is not held back by the first one's pile.
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let codes = burst_from(two, z.udp, 3, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ResponseCode::NoError; 3]);
    // Slots come back once answered: the first client may forward again.
    let codes = burst_from(one, z.udp, 2, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ResponseCode::NoError; 2]);
    let (_, text) = http_get(z.metrics.unwrap(), "/metrics").await;
    assert!(
        text.contains("zonefwd_client_inflight_limited_total 7"),
        "{text}"
    );
    z.stop().await.unwrap();
}
