//! Out of descriptors: zonefwd keeps answering from its cache, answers what it cannot
//! send with SERVFAIL at once, does not mark a healthy upstream down for its own
//! shortage, and recovers when descriptors free up. Its own test binary, since it
//! lowers the process's descriptor limit.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

async fn ask_on(
    sock: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    name: &str,
    id: u16,
) -> Message {
    let mut q = query(name, RecordType::A, None);
    q.metadata.id = id;
    sock.send_to(&q.to_vec().unwrap(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("an answer, not a stall")
            .unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        if r.metadata.id == id {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_cached_answers_go_on_and_no_upstream_is_blamed() {
    let good = Fake::answering_a().await;
    let silent = Fake::blackhole().await;
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .server("client_qps = 100000000")
        .server("client_max_inflight = 100000")
        // A fresh socket for every query, so that none is served from the pool.
        .server("upstream_udp_reuse = 1")
        .route(
            "silent",
            &["silent.example"],
            &[silent.addr],
            "timeout = \"3s\"\nmax_fails = 0",
        )
        .route(
            "rest",
            &["."],
            &[good.addr],
            "max_fails = 1\nhealth_check = \"1h\"",
        );
    let z = Zonefwd::start_config(conf.build()).await;
    // Every socket the test needs, opened before the limit comes down.
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let load = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = ask_on(&client, z.udp, "cached.example.", 1).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NoError);
    let text_before = scrape(&z).await;

    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, open_descriptors() + 16, hard).unwrap();
    // Queries to the silent route hold a socket each until its deadline: the
    // descriptors run out.
    for i in 0..200u16 {
        let q = query(&format!("q{i}.silent.example."), RecordType::A, None);
        load.send_to(&q.to_vec().unwrap(), z.udp).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cached: answered as ever.
    let hit = ask_on(&client, z.udp, "cached.example.", 2).await;
    assert_eq!(hit.metadata.response_code, ResponseCode::NoError);
    assert_eq!(hit.answers.len(), 1);
    // New names of a working route: answered at once, SERVFAIL while no socket opens.
    let mut servfail = 0;
    for i in 0..10u16 {
        let r = ask_on(&client, z.udp, &format!("new{i}.example."), 100 + i).await;
        match r.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::ServFail => servfail += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        servfail > 0,
        "the descriptors never ran out: the test proves nothing"
    );
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();

    // The upstream did nothing wrong: no failure counted, still in rotation.
    let text = scrape(&z).await;
    let failures = format!(
        "zonefwd_upstream_consecutive_failures{{route=\"rest\",upstream=\"{}\"}}",
        good.addr
    );
    assert_eq!(metric(&text, &failures), 0, "{text}");
    let up = format!(
        "zonefwd_upstream_up{{route=\"rest\",upstream=\"{}\"}}",
        good.addr
    );
    assert_eq!(metric(&text, &up), 1);
    let errors = format!(
        "zonefwd_upstream_errors_total{{route=\"rest\",upstream=\"{}\"}}",
        good.addr
    );
    assert_eq!(metric(&text, &errors), metric(&text_before, &errors));
    // Descriptors back: new names resolve again.
    let after = ask_on(&client, z.udp, "after.example.", 3).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    z.stop().await.unwrap();
}
