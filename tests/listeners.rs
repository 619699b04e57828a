//! The listeners: TCP pipelining, idle and connection limits, the ACL on UDP and TCP,
//! the in-flight cap, IPv6, many clients at once, and a graceful stop.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const CLOUD_ZONES: &str = r#"zones = ["privatelink.japaneast.azmk8s.io", "blob.core.windows.net"]"#;

#[tokio::test]
async fn tcp_pipelined_queries_are_answered_out_of_order() {
    let up = Fake::start(|q, _| {
        let delay = if qname_of(q).starts_with("slow.") {
            800
        } else {
            0
        };
        vec![
            Step::Sleep(Duration::from_millis(delay)),
            Step::Reply(reply_a(q, [192, 0, 2, 1], 1)),
        ]
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(z.tcp).await.unwrap();
    let mut burst = Vec::new();
    for (id, n) in [
        (1u16, "slow.example."),
        (2, "fast1.example."),
        (3, "fast2.example."),
    ] {
        let mut q = query(n, RecordType::A, None);
        q.metadata.id = id;
        burst.extend(framed(&q.to_vec().unwrap()));
    }
    // One byte at a time: the length prefix and message may arrive split (RFC 7766 8).
    for b in burst {
        s.write_all(&[b]).await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let buf = tokio::time::timeout(Duration::from_secs(10), read_framed(&mut s))
            .await
            .unwrap()
            .unwrap();
        order.push(Message::from_vec(&buf).unwrap().metadata.id);
    }
    assert_eq!(
        order.last(),
        Some(&1),
        "the slow answer comes last: {order:?}"
    );
    assert_eq!(
        up.count(),
        3,
        "all three were forwarded before the first came back"
    );
    z.stop().await.unwrap();
}

/// The next answer on a client TCP connection.
async fn tcp_answer(s: &mut tokio::net::TcpStream) -> Message {
    let buf = tokio::time::timeout(Duration::from_secs(10), read_framed(s))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn a_tcp_message_split_around_an_answer_is_read_whole() {
    // The first query is forwarded and answered while the second is half sent: the
    // half already read must survive the answer going out.
    let up = Fake::start(|q, _| {
        vec![
            Step::Sleep(Duration::from_millis(100)),
            Step::Reply(reply_a(q, [192, 0, 2, 9], 1)),
        ]
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(z.tcp).await.unwrap();
    let mut first = query("first.example.", RecordType::A, None);
    first.metadata.id = 1;
    s.write_all(&framed(&first.to_vec().unwrap()))
        .await
        .unwrap();
    let mut second = query("second.example.", RecordType::A, None);
    second.metadata.id = 2;
    let second = framed(&second.to_vec().unwrap());
    let (head, tail) = second.split_at(second.len() / 2);
    s.write_all(head).await.unwrap();
    assert_eq!(tcp_answer(&mut s).await.metadata.id, 1);
    s.write_all(tail).await.unwrap();
    let r = tcp_answer(&mut s).await;
    assert_eq!(r.metadata.id, 2);
    assert_eq!(qname_of(&r), "second.example.");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_idle_connections_are_closed() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 1)).await;
    let z = Zonefwd::start_server("tcp_idle_timeout = \"300ms\"", up.addr).await;
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(z.tcp).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed well before 10s")
        .unwrap();
    assert_eq!(n, 0, "EOF from the server");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn clients_outside_the_acl_are_refused_on_udp_and_tcp() {
    // Every route, and a name already in the cache: the ACL comes before all of them.
    let cloud = Fake::answering(|q| reply_a(q, [10, 9, 9, 9], 60)).await;
    let onprem = Fake::answering(|q| reply_a(q, [10, 1, 1, 1], 60)).await;
    let routes = format!(
        "[[route]]\nname = \"cloud\"\n{CLOUD_ZONES}\nupstreams = [\"{}\"]\n[[route]]\nname = \"onprem\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n",
        cloud.addr, onprem.addr
    );
    let z = Zonefwd::start(&routes).await;
    let warm = ask_a(z.udp, "www.example.").await;
    assert_eq!(warm.metadata.response_code, ResponseCode::NoError);
    let asked = (cloud.count(), onprem.count());
    assert_eq!(asked, (0, 1));
    z.reload(&format!(
        "[acl]\nallow = [\"10.0.0.0/8\", \"::1/128\"]\n{routes}"
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in [
        "www.example.",
        "aks1.privatelink.japaneast.azmk8s.io.",
        "acct.blob.core.windows.net.",
        "uncached.example.",
    ] {
        for client in [udp_client(z.udp), tcp_client(z.tcp).await] {
            let r = ask(&client, query(name, RecordType::A, None)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(r.answers.is_empty());
        }
    }
    assert_eq!((cloud.count(), onprem.count()), asked);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_queries_in_flight() {
    let up = Fake::answering_after(Duration::from_millis(500), [192, 0, 2, 5], 1).await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let addr = z.udp;
    let pending = tokio::spawn(async move {
        ask(
            &udp_client(addr),
            query("slow.example.", RecordType::A, None),
        )
        .await
    });
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    z.stop().await.unwrap();
    let r = pending.await.unwrap();
    assert_eq!(
        r.answers.len(),
        1,
        "the query in flight was answered before exit"
    );
}

#[tokio::test]
async fn many_concurrent_clients_all_get_answers() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = Fake::answering(move |q| {
        h.fetch_add(1, Ordering::SeqCst);
        reply_a(q, [192, 0, 2, 1], 1)
    })
    .await;
    // More UDP threads than cores: four sockets share the port (SO_REUSEPORT).
    let z = Zonefwd::start_server("udp_threads = 4", up.addr).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addr = z.udp;
        tasks.push(tokio::spawn(async move {
            let q = query(&format!("c{i}.example."), RecordType::A, None);
            let out = raw_udp(addr, &q.to_vec().unwrap(), Duration::from_secs(10))
                .await
                .expect("an answer");
            Message::from_vec(&out).unwrap().answers.len()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 200);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_connections_beyond_the_limit_are_closed() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 1)).await;
    let z = Zonefwd::start_server("tcp_max_connections = 2", up.addr).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let held1 = tcp_client(z.tcp).await;
    let held2 = tcp_client(z.tcp).await;
    // Both count against the limit once they have been answered once.
    ask(&held1, query("one.example.", RecordType::A, None)).await;
    ask(&held2, query("two.example.", RecordType::A, None)).await;
    let mut third = tokio::net::TcpStream::connect(z.tcp).await.unwrap();
    let _ = third
        .write_all(&framed(
            &query("three.example.", RecordType::A, None)
                .to_vec()
                .unwrap(),
        ))
        .await;
    let mut buf = [0u8; 2];
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(n, Ok(0) | Err(_)), "third connection got {n:?}");
    assert_eq!(
        up.seen()
            .iter()
            .filter(|s| qname_of(&s.msg) == "three.example.")
            .count(),
        0
    );
    // The held ones still work.
    ask(&held1, query("again.example.", RecordType::A, None)).await;
    z.stop().await.unwrap();
}

#[tokio::test]
async fn beyond_max_inflight_new_queries_get_servfail_at_once() {
    let up = Fake::answering_after(Duration::from_millis(800), [192, 0, 2, 1], 1).await;
    let z = Zonefwd::start_server("max_inflight = 1", up.addr).await;
    let addr = z.udp;
    let first = asking_a(addr, "first.example.");
    while up.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (out, took) = timed(raw_udp(
        z.udp,
        &query("second.example.", RecordType::A, None)
            .to_vec()
            .unwrap(),
        Duration::from_secs(10),
    ))
    .await;
    let r = Message::from_vec(&out.unwrap()).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took < Duration::from_millis(500),
        "overload answer took {took:?}"
    );
    let first = Message::from_vec(&first.await.unwrap().unwrap()).unwrap();
    assert_eq!(first.answers.len(), 1);
    assert_eq!(up.count(), 1);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn ipv6_listener_and_upstream() {
    // A v6 fake upstream on ::1, zonefwd listening on [::1]:0.
    let sock = match tokio::net::UdpSocket::bind("[::1]:0").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
    };
    let up = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let _ = sock
                .send_to(&reply_a(&q, [192, 0, 2, 6], 6).to_vec().unwrap(), from)
                .await;
        }
    });
    let conf = Conf::new()
        .server("listen = [\"[::1]:0\"]")
        .route("v6", &["."], &[up], "");
    let z = Zonefwd::start(&conf.toml()).await;
    assert!(z.udp.is_ipv6());
    let r = ask(
        &udp_client(z.udp),
        query("six.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    let r = ask(
        &tcp_client(z.tcp).await,
        query("six.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    z.stop().await.unwrap();
}
