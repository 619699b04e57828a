//! End-to-end forwarding: a real DNS client (hickory-net) -> zonefwd (in-process) ->
//! fake upstreams on loopback that record what they receive.
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{RData, Record, RecordType};

const CLOUD_ZONES: &str = r#"zones = ["privatelink.japaneast.azmk8s.io", "blob.core.windows.net"]"#;

async fn split_setup(with_root: bool) -> (Fake, Fake, Zonefwd) {
    let cloud = Fake::answering(|q| reply_a(q, [10, 9, 9, 9], 60)).await;
    let onprem = Fake::answering(|q| reply_a(q, [10, 1, 1, 1], 60)).await;
    // No cache: these tests count what reaches each upstream.
    let mut toml = format!(
        "[[route]]\nname = \"azure-private\"\n{CLOUD_ZONES}\nupstreams = [\"{}\"]\ncache = false\n",
        cloud.addr
    );
    if with_root {
        toml.push_str(&format!(
            "[[route]]\nname = \"on-prem\"\nzones = [\".\"]\nupstreams = [\"{}\"]\ncache = false\n",
            onprem.addr
        ));
    }
    let z = Zonefwd::start(&toml).await;
    (cloud, onprem, z)
}

#[tokio::test]
async fn routes_by_longest_suffix_on_label_boundaries_and_case() {
    let (cloud, onprem, z) = split_setup(true).await;
    let cases = [
        ("myaks-1a2b.privatelink.japaneast.azmk8s.io.", true),
        ("MyAKS-1A2B.PrivateLink.JapanEast.AZMK8S.io.", true),
        ("privatelink.japaneast.azmk8s.io.", true),
        ("acct.blob.core.windows.net.", true),
        ("notprivatelink.japaneast.azmk8s.io.", false),
        ("japaneast.azmk8s.io.", false),
        ("acctblob.core.windows.net.", false),
        ("www.example.com.", false),
    ];
    for (qname, to_cloud) in cases {
        let (before_c, before_o) = (cloud.count(), onprem.count());
        let bytes = with_spelling(&query(qname, RecordType::A, None), qname);
        let out = raw_udp(z.udp, &bytes, Duration::from_secs(10))
            .await
            .expect("an answer");
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{qname}");
        // The client gets its own spelling of the name back (RFC 1035 7.3).
        assert_eq!(qname_of(&r), qname, "question spelling for {qname}");
        let want = if to_cloud {
            [10, 9, 9, 9]
        } else {
            [10, 1, 1, 1]
        };
        assert_eq!(r.answers[0].data, a_record("x.", want, 1).data, "{qname}");
        assert_eq!(cloud.count() - before_c, usize::from(to_cloud), "{qname}");
        assert_eq!(onprem.count() - before_o, usize::from(!to_cloud), "{qname}");
    }
    // The upstream is asked in the client's spelling too.
    assert!(cloud
        .seen()
        .iter()
        .any(|s| qname_of(&s.msg) == "MyAKS-1A2B.PrivateLink.JapanEast.AZMK8S.io."));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn ds_for_a_zone_apex_goes_where_the_parent_goes() {
    let (cloud, onprem, z) = split_setup(true).await;
    let c = udp_client(z.udp);
    ask(
        &c,
        query("privatelink.japaneast.azmk8s.io.", RecordType::DS, None),
    )
    .await;
    assert_eq!(
        (cloud.count(), onprem.count()),
        (0, 1),
        "apex DS goes to the parent's route"
    );
    ask(
        &c,
        query("sub.privatelink.japaneast.azmk8s.io.", RecordType::DS, None),
    )
    .await;
    assert_eq!(
        (cloud.count(), onprem.count()),
        (1, 1),
        "DS below the apex stays in the zone"
    );
    ask(
        &c,
        query("privatelink.japaneast.azmk8s.io.", RecordType::SOA, None),
    )
    .await;
    assert_eq!(
        (cloud.count(), onprem.count()),
        (2, 1),
        "other types at the apex stay in the zone"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn no_matching_route_and_no_root_route_is_refused() {
    let (cloud, onprem, z) = split_setup(false).await;
    for client in [udp_client(z.udp), tcp_client(z.tcp).await] {
        let r = ask(&client, query("www.example.com.", RecordType::A, None)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(qname_of(&r), "www.example.com.");
    }
    assert_eq!(cloud.count() + onprem.count(), 0);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn negative_answers_keep_their_soa_and_flags() {
    let up = Fake::answering(|q| {
        let name = qname_of(q);
        let mut r = reply(q);
        r.metadata.authoritative = true;
        if name.starts_with("nx.") {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        r.authorities.push(soa_record("example.com.", 3600, 300));
        r
    })
    .await;
    // Relay only: with the cache on, the SOA's TTL would be the RFC 2308 negative TTL
    // (tests/cache.rs checks that).
    let z = Zonefwd::start(&one_route(&[up.addr], "cache = false")).await;
    let c = udp_client(z.udp);

    let nx = ask(&c, query("nx.example.com.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative, "AA is relayed");
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nx.authorities[0].ttl, 3600);

    let nodata = ask(&c, query("host.example.com.", RecordType::AAAA, None)).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn reply_bytes_are_relayed_as_received() {
    // An unknown record type, DNSSEC-ish AD flag and several sections: a forwarder that
    // re-resolves or re-encodes from a typed model tends to lose some of this.
    let up = Fake::answering(|q| {
        let mut r = reply(q);
        r.metadata.authentic_data = true;
        r.answers.push(a_record(&qname_of(q), [192, 0, 2, 1], 30));
        r.answers.push(a_record(&qname_of(q), [192, 0, 2, 2], 31));
        r.answers.push(Record::from_rdata(
            name(&qname_of(q)),
            40,
            RData::Unknown {
                code: RecordType::Unknown(65280),
                rdata: NULL::with(vec![0xde, 0xad, 0xbe, 0xef]),
            },
        ));
        r.authorities.push(soa_record("example.net.", 60, 60));
        r.additionals
            .push(a_record("ns1.example.net.", [192, 0, 2, 53], 50));
        r
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let c = udp_client(z.udp);
    let mut q = query("Mixed.Example.NET.", RecordType::A, Some(1232));
    q.metadata.checking_disabled = true;
    let r = ask(&c, q).await;
    assert!(r.metadata.authentic_data);
    assert!(r.metadata.checking_disabled);
    let expect = {
        let probe = query("Mixed.Example.NET.", RecordType::A, None);
        let mut e = reply(&probe);
        e.answers
            .push(a_record("Mixed.Example.NET.", [192, 0, 2, 1], 30));
        e
    };
    assert_eq!(r.answers[0], expect.answers[0]);
    assert_eq!(r.answers.len(), 3);
    assert_eq!(r.answers[1].ttl, 31, "record order and TTLs are kept");
    match &r.answers[2].data {
        RData::Unknown { code, rdata } => {
            assert_eq!(*code, RecordType::Unknown(65280));
            assert_eq!(rdata.anything, vec![0xde, 0xad, 0xbe, 0xef]);
        }
        other => panic!("unknown type not relayed: {other:?}"),
    }
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.additionals.len(), 1);
    // What the upstream was asked: the client's question and CD bit, a fresh ID,
    // zonefwd's own OPT.
    let seen = &up.seen()[0].msg;
    assert!(seen.metadata.checking_disabled && seen.metadata.recursion_desired);
    assert_eq!(seen.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_ids_are_fresh() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 1)).await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let mut client_ids = Vec::new();
    for i in 0..16u16 {
        let mut q = query(&format!("n{i}.example."), RecordType::A, None);
        q.metadata.id = 4242;
        let out = raw_udp(z.udp, &q.to_vec().unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            Message::from_vec(&out).unwrap().metadata.id,
            4242,
            "client gets its own id back"
        );
        client_ids.push(4242);
    }
    let upstream_ids: Vec<u16> = up.seen().iter().map(|s| s.msg.metadata.id).collect();
    assert_eq!(upstream_ids.len(), 16);
    assert!(
        upstream_ids.iter().filter(|&&id| id == 4242).count() <= 1,
        "client id reused upstream: {upstream_ids:?}"
    );
    let distinct: std::collections::HashSet<_> = upstream_ids.iter().collect();
    assert!(
        distinct.len() >= 14,
        "upstream ids barely vary: {upstream_ids:?}"
    );
    // One query after another: a pooled socket carries at most upstream_udp_reuse (10)
    // of them, then a new socket and port (tests/spoofing.rs measures the spread).
    let mut per_port: std::collections::HashMap<u16, usize> = Default::default();
    for s in up.seen() {
        *per_port.entry(s.from.port()).or_default() += 1;
    }
    assert!(
        per_port.len() >= 2 && per_port.values().all(|&n| n <= 10),
        "queries per source port: {per_port:?}"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn refused_from_the_last_upstream_is_relayed() {
    let a = Fake::answering(|q| reply_rcode(q, ResponseCode::ServFail)).await;
    let b = Fake::answering(|q| reply_rcode(q, ResponseCode::Refused)).await;
    let z = Zonefwd::start(&one_route(&[a.addr, b.addr], "")).await;
    let (r, took) = timed(ask(
        &udp_client(z.udp),
        query("x.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // SERVFAIL and REFUSED move on at once: no waiting for a timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(a.count() >= 1 && b.count() >= 1);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn edns_is_hop_by_hop() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 5)).await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let c = udp_client(z.udp);

    // No EDNS from the client: none back, but zonefwd still uses its own upstream.
    let r = ask(&c, query("a.example.", RecordType::A, None)).await;
    assert!(r.edns.is_none());
    let sent = &up.seen()[0].msg;
    let e = sent
        .edns
        .as_ref()
        .expect("zonefwd adds its own OPT upstream");
    assert_eq!(e.max_payload(), 1232);
    assert!(!e.flags().dnssec_ok);

    // EDNS with DO from the client: DO goes upstream; the client's payload does not.
    let mut q = query("b.example.", RecordType::A, Some(4096));
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    let r = ask(&c, q).await;
    let back = r.edns.expect("an OPT for an EDNS client");
    assert_eq!(back.max_payload(), 1232);
    assert!(back.flags().dnssec_ok);
    let sent = &up.seen()[1].msg;
    assert!(sent.edns.as_ref().unwrap().flags().dnssec_ok);
    assert_eq!(sent.edns.as_ref().unwrap().max_payload(), 1232);

    // EDNS version 1: BADVERS, not forwarded (RFC 6891 6.1.3).
    let mut q = query("c.example.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_version(1);
    q.edns = Some(e);
    let out = raw_udp(z.udp, &q.to_vec().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let r = Message::from_vec(&out).unwrap();
    // 16 is BADVERS here; hickory names the shared code BADSIG.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
    assert_eq!(up.count(), 2);
    z.stop().await.unwrap();
}

/// 40 A records (over 512 octets), or 10 for names starting with "few." (under 512).
fn big_reply(q: &Message) -> Message {
    let mut r = reply(q);
    let n = if qname_of(q).starts_with("few.") {
        10
    } else {
        40
    };
    for i in 0..n {
        r.answers.push(a_record(&qname_of(q), [192, 0, 2, i], 60));
    }
    r
}

#[tokio::test]
async fn replies_too_big_for_the_client_are_truncated() {
    let up = Fake::answering(big_reply).await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    // 40 A records with a long name: well over 512 octets.
    let qn = "a-rather-long-name-for-forty-addresses.example.";
    let out = raw_udp(
        z.udp,
        &query(qn, RecordType::A, None).to_vec().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(out.len() <= 512);
    let r = Message::from_vec(&out).unwrap();
    assert!(r.metadata.truncation, "TC=1 when it does not fit");
    assert!(r.answers.is_empty());
    assert_eq!(qname_of(&r), qn);

    // With EDNS 4096 the client may take up to zonefwd's cap of 1232: it fits.
    let out = raw_udp(
        z.udp,
        &query(qn, RecordType::A, Some(4096)).to_vec().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let r = Message::from_vec(&out).unwrap();
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);

    // A payload below 512 counts as 512 (RFC 6891 6.2.5).
    let mut small = query("few.example.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_max_payload(100);
    small.edns = Some(e);
    let mut bytes = small.to_vec().unwrap();
    // The OPT record is last: its CLASS field (payload) sits 8 octets from the end.
    let at = bytes.len() - 8;
    bytes[at..at + 2].copy_from_slice(&100u16.to_be_bytes());
    let out = raw_udp(z.udp, &bytes, Duration::from_secs(5))
        .await
        .unwrap();
    let r = Message::from_vec(&out).unwrap();
    assert!(out.len() > 100 && out.len() <= 512);
    assert!(
        !r.metadata.truncation && r.answers.len() == 10,
        "{} octets fit in 512",
        out.len()
    );

    // Over TCP, the whole answer.
    let r = ask(&tcp_client(z.tcp).await, query(qn, RecordType::A, None)).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn truncated_upstream_reply_is_retried_over_tcp() {
    let up = Fake::start(|q, tcp| {
        if tcp {
            vec![Step::Reply(big_reply(q))]
        } else {
            let mut r = reply(q);
            r.metadata.truncation = true;
            vec![Step::Reply(r)]
        }
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let r = ask(
        &tcp_client(z.tcp).await,
        query("big.example.", RecordType::A, None),
    )
    .await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
    assert_eq!((up.udp_count(), up.tcp_count()), (1, 1));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_without_edns_gets_a_plain_retry() {
    // A server from before EDNS answers FORMERR without an OPT (RFC 6891 section 7).
    let up = Fake::answering(|q| {
        if q.edns.is_some() {
            reply_rcode(q, ResponseCode::FormErr)
        } else {
            reply_a(q, [192, 0, 2, 9], 9)
        }
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let r = ask(
        &udp_client(z.udp),
        query("old.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(up.count(), 2);
    z.stop().await.unwrap();
}

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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let len = tokio::time::timeout(Duration::from_secs(10), s.read_u16())
            .await
            .unwrap()
            .unwrap();
        let mut buf = vec![0; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
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
async fn malformed_upstream_reply_becomes_servfail() {
    let up = Fake::start(|q, _| {
        let mut bytes = reply_a(q, [192, 0, 2, 1], 1).to_vec().unwrap();
        bytes.truncate(bytes.len() - 3); // the A record's data runs past the end
        vec![Step::Raw(bytes)]
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "timeout = \"2s\"")).await;
    let (r, took) = timed(ask(
        &udp_client(z.udp),
        query("m.example.", RecordType::A, None),
    ))
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_secs(3));
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
async fn malformed_and_non_query_messages() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 1)).await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let wait = Duration::from_millis(400);
    let rcode = |b: &[u8]| b[3] & 0x0f;

    // A response (QR=1) is never answered: no reflection, no loops.
    let mut resp = reply_a(&query("x.example.", RecordType::A, None), [1, 2, 3, 4], 1);
    resp.metadata.id = 7;
    assert_eq!(raw_udp(z.udp, &resp.to_vec().unwrap(), wait).await, None);
    // Shorter than a header: dropped.
    assert_eq!(raw_udp(z.udp, &[1, 2, 3, 4, 5], wait).await, None);

    let good = query("x.example.", RecordType::A, None).to_vec().unwrap();
    // Two questions: FORMERR.
    let mut two = query("x.example.", RecordType::A, None);
    two.queries.push(two.queries[0].clone());
    let out = raw_udp(z.udp, &two.to_vec().unwrap(), wait).await.unwrap();
    assert_eq!(rcode(&out), 1);
    // Trailing garbage: FORMERR.
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert_eq!(rcode(&raw_udp(z.udp, &trailing, wait).await.unwrap()), 1);
    // A label that runs past the end: FORMERR, header echoed.
    let mut cut = good.clone();
    cut.truncate(15);
    let out = raw_udp(z.udp, &cut, wait).await.unwrap();
    assert_eq!((rcode(&out), out[0..2].to_vec()), (1, good[0..2].to_vec()));
    // A pointer loop in the question: FORMERR, in bounded time.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode(&raw_udp(z.udp, &looped, wait).await.unwrap()), 1);
    // No question at all: FORMERR.
    let mut none = good.clone();
    none[4..6].copy_from_slice(&[0, 0]);
    none.truncate(12);
    assert_eq!(rcode(&raw_udp(z.udp, &none, wait).await.unwrap()), 1);
    // Two OPT records: FORMERR (RFC 6891 6.1.1).
    let opt = [0u8, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0];
    let mut two_opts = good.clone();
    two_opts[11] = 2; // ARCOUNT
    two_opts.extend_from_slice(&opt);
    two_opts.extend_from_slice(&opt);
    assert_eq!(rcode(&raw_udp(z.udp, &two_opts, wait).await.unwrap()), 1);
    // A label longer than 63 octets (its length byte reads as a reserved label
    // type): FORMERR.
    let mut long_label = good[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&raw_udp(z.udp, &long_label, wait).await.unwrap()), 1);
    // A name longer than 255 octets (five labels of 63): FORMERR.
    let mut long_name = good[..12].to_vec();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&raw_udp(z.udp, &long_name, wait).await.unwrap()), 1);
    // Hundreds of EDNS options of unknown codes (RFC 6891 6.1.2 says to ignore them):
    // answered, in bounded time, and not one of them is forwarded.
    let with_options = |n: u16| {
        let mut m = good.clone();
        m[11] = 1;
        let options: Vec<u8> = (0..n)
            .flat_map(|i| [0xfd, 0xe9, 0, 2, (i >> 8) as u8, i as u8])
            .collect();
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        m.extend_from_slice(&(options.len() as u16).to_be_bytes());
        m.extend_from_slice(&options);
        m
    };
    let (out, took) = timed(raw_udp(z.udp, &with_options(600), Duration::from_secs(5))).await;
    assert_eq!(rcode(&out.expect("answered")), 0);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let fwd = up.seen().pop().expect("forwarded");
    let opt_len = fwd
        .msg
        .edns
        .as_ref()
        .map_or(0, |e| e.options().as_ref().len());
    assert_eq!(opt_len, 0, "the client's options stay with the client");
    assert!(
        fwd.raw.len() < 100,
        "{} octets went upstream",
        fwd.raw.len()
    );
    // Thousands (18 KB): more than a UDP query may be (4 KB read), so the read is cut
    // and the rest does not parse: FORMERR, nothing forwarded.
    let (out, took) = timed(raw_udp(z.udp, &with_options(3000), Duration::from_secs(5))).await;
    assert_eq!(rcode(&out.expect("answered")), 1);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let forwarded = up.count();

    // NOTIFY (opcode 4): NOTIMP (RFC 8906 3.1.3).
    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let out = raw_udp(z.udp, &notify, wait).await.unwrap();
    assert_eq!(rcode(&out), 4);
    assert_eq!((out[2] >> 3) & 0x0f, 4, "opcode echoed");
    // AXFR through a forwarder: REFUSED.
    let axfr = query("example.", RecordType::AXFR, None).to_vec().unwrap();
    assert_eq!(rcode(&raw_udp(z.udp, &axfr, wait).await.unwrap()), 5);

    assert_eq!(up.count(), forwarded, "nothing malformed was forwarded");
    assert_eq!(forwarded, 1);
    // And the server still serves.
    let r = ask(
        &udp_client(z.udp),
        query("still.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
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
async fn round_robin_spreads_and_sequential_prefers_the_first() {
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 1)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 1)).await;
    let z = Zonefwd::start(&one_route(&[a.addr, b.addr], "policy = \"round_robin\"")).await;
    let c = udp_client(z.udp);
    for i in 0..10 {
        ask(&c, query(&format!("rr{i}.example."), RecordType::A, None)).await;
    }
    assert_eq!((a.count(), b.count()), (5, 5));
    z.stop().await.unwrap();

    let z = Zonefwd::start(&one_route(&[a.addr, b.addr], "policy = \"sequential\"")).await;
    let c = udp_client(z.udp);
    for i in 0..4 {
        ask(&c, query(&format!("seq{i}.example."), RecordType::A, None)).await;
    }
    assert_eq!((a.count(), b.count()), (9, 5));
    z.stop().await.unwrap();
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
    let first = tokio::spawn(async move {
        raw_udp(
            addr,
            &query("first.example.", RecordType::A, None)
                .to_vec()
                .unwrap(),
            Duration::from_secs(10),
        )
        .await
    });
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
    let z = Zonefwd::start(&format!("[server]\nlisten = [\"[::1]:0\"]\n[[route]]\nname = \"v6\"\nzones = [\".\"]\nupstreams = [\"{up}\"]\n")).await;
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
    assert_eq!((cut.udp_count(), cut.tcp_count()), (1, 1));
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
async fn a_udp_reply_larger_than_zonefwd_takes_is_fetched_again_over_tcp() {
    // An upstream that ignores the advertised payload size (1232) and sends ~6 KB
    // over UDP: more than the 4096-octet receive buffer, so it may have been cut.
    let up = Fake::answering(|q| {
        let mut r = reply(q);
        for i in 0..300u16 {
            r.answers
                .push(a_record(&qname_of(q), [10, 0, (i >> 8) as u8, i as u8], 60));
        }
        r
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let r = ask(
        &tcp_client(z.tcp).await,
        query("huge.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 300, "the whole RRset, fetched over TCP");
    assert_eq!((up.udp_count(), up.tcp_count()), (1, 1));
    z.stop().await.unwrap();
}
