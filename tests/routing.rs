//! Routing end to end: a real DNS client (hickory-net) -> zonefwd (in-process) -> fake
//! upstreams on loopback. Which route a name takes (longest suffix, label boundaries,
//! case, DS at a zone apex), what has no route, and the order upstreams are tried in.
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

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
