//! What is relayed: the upstream's reply bytes as received (ID, question spelling,
//! RA and OPT rewritten), negative answers with their SOA, fresh upstream IDs, EDNS
//! as hop-by-hop, truncation for small clients, TC and oversize retried over TCP,
//! servers without EDNS, malformed replies.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{RData, Record, RecordType};

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

/// CD is the client's own (RFC 4035 section 3.2.2), relayed or from the cache, even
/// from an upstream that clears it, as an authoritative server may.
#[tokio::test]
async fn the_cd_bit_is_copied_from_each_query() {
    let up = Fake::answering(|q| {
        let mut r = reply_a(q, [192, 0, 2, 1], 300);
        r.metadata.checking_disabled = false;
        r
    })
    .await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let c = udp_client(z.udp);
    // (client's CD, what it is served from); CD is part of the cache key.
    let cases = [
        (true, "relayed"),
        (false, "relayed"),
        (true, "cache"),
        (false, "cache"),
    ];
    for (cd, from) in cases {
        let mut q = query("cd.example.", RecordType::A, Some(1232));
        q.metadata.checking_disabled = cd;
        let r = ask(&c, q).await;
        assert_eq!(r.metadata.checking_disabled, cd, "CD={cd}, {from}");
        assert!(r.metadata.recursion_desired, "RD copied too, {from}");
    }
    assert_eq!(
        up.count(),
        2,
        "one upstream query per CD value; the rest cached"
    );
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
    let up = Fake::truncating().await;
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
