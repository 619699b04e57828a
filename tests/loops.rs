//! Forwarding loops: two zonefwd instances that forward to each other, and a route
//! whose upstream sends queries back to this zonefwd (an on-prem server that
//! conditional-forwards the zone here).
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use tokio::net::UdpSocket;

/// An "on-prem DNS server" that forwards every UDP query to `to` and relays the
/// answer: what a conditional forwarder pointing at zonefwd does. Counts queries.
async fn relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((len, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            n.fetch_add(1, Ordering::SeqCst);
            let query = buf[..len].to_vec();
            let sock = sock.clone();
            tokio::spawn(async move {
                let out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                out.send_to(&query, to).await.unwrap();
                let mut b = vec![0u8; 65535];
                if let Ok(Ok((l, _))) =
                    tokio::time::timeout(Duration::from_secs(5), out.recv_from(&mut b)).await
                {
                    let _ = sock.send_to(&b[..l], from).await;
                }
            });
        }
    });
    (addr, count)
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(extra: &str, upstreams: &[SocketAddr]) -> String {
    format!(
        "[server]\nmetrics = \"127.0.0.1:0\"\n{extra}\n{}",
        one_route(upstreams, "timeout = \"1s\"\ntry_timeout = \"300ms\"")
    )
}

#[tokio::test]
async fn a_route_whose_upstream_forwards_back_is_found_and_taken_out() {
    let good = Fake::answering_a().await;
    // zonefwd -> on-prem relay -> zonefwd: the relay's address is only known once
    // it runs, so zonefwd starts on the good upstream and reloads into the loop.
    let z = Zonefwd::start(&config("loop_detection = true", &[good.addr])).await;
    let (onprem, relayed) = relay(z.udp).await;
    z.reload(&config("loop_detection = true", &[onprem, good.addr]));
    until("the loop is reported", async || {
        let t = scrape(&z).await;
        metric(&t, "zonefwd_forwarding_loops_total") >= 1
            && t.contains(&format!(
                "zonefwd_upstream_in_loop{{route=\"default\",upstream=\"{onprem}\"}} 1"
            ))
    })
    .await;
    // The looping upstream is out of rotation: queries go to the good one, at once.
    let before = relayed.load(Ordering::SeqCst);
    let (r, took) = timed(ask_a(z.udp, "after.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(
        relayed.load(Ordering::SeqCst),
        before,
        "nothing sent into the loop"
    );
    let t = scrape(&z).await;
    assert!(
        t.contains(&format!(
            "zonefwd_upstream_in_loop{{route=\"default\",upstream=\"{}\"}} 0",
            good.addr
        )),
        "{t}"
    );

    // With the loop as the only upstream, queries fail fast instead of circling.
    z.reload(&config("loop_detection = true", &[onprem]));
    until("the loop is reported again", async || {
        scrape(&z).await.contains(&format!(
            "zonefwd_upstream_in_loop{{route=\"default\",upstream=\"{onprem}\"}} 1"
        ))
    })
    .await;
    let before = relayed.load(Ordering::SeqCst);
    let (r, took) = timed(ask_a(z.udp, "lonely.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(relayed.load(Ordering::SeqCst), before);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn two_instances_forwarding_to_each_other_find_the_loop() {
    let nowhere = Fake::blackhole().await;
    let a = Zonefwd::start(&config("loop_detection = true", &[nowhere.addr])).await;
    let b = Zonefwd::start(&config("loop_detection = true", &[a.udp])).await;
    a.reload(&config("loop_detection = true", &[b.udp]));
    // Whichever probe goes round first finds it: B's (B -> A -> B) if A has reloaded
    // by then, else A's (A -> B -> A). The finder stops forwarding into the loop, so
    // the other's probe never comes back: one side reports it.
    until("one side reports the loop", async || {
        metric(&scrape(&a).await, "zonefwd_forwarding_loops_total")
            + metric(&scrape(&b).await, "zonefwd_forwarding_loops_total")
            >= 1
    })
    .await;
    // Either way a query fails at once instead of circling.
    let (r, took) = timed(ask_a(a.udp, "loop.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_millis(900), "{took:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn without_probes_a_loop_still_costs_a_handful_of_packets() {
    // Loop detection off: coalescing alone breaks the circle, because the query that
    // comes round joins its own resolution in flight.
    let nowhere = Fake::blackhole().await;
    let a = Zonefwd::start(&config("loop_detection = false", &[nowhere.addr])).await;
    let b = Zonefwd::start(&config("loop_detection = false", &[a.udp])).await;
    a.reload(&config("loop_detection = false", &[b.udp]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (r, took) = timed(ask_a(a.udp, "loop.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Let every hop's deadline pass, then count what was sent in all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = metric(&scrape(&a).await, "zonefwd_upstream_queries_total")
        + metric(&scrape(&b).await, "zonefwd_upstream_queries_total");
    // Each instance tries its lone upstream at most three times per resolution (two
    // retries, RFC 9520 section 3.2; the bound was 8 with two tries), then remembers
    // the failure for servfail_ttl: a bounded handful, not a circle.
    assert!(sent <= 12, "{sent} upstream queries for one client query");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
