//! Cloud know-how: zone presets on a route, NXDOMAIN fallback, and the private-answer
//! guard. Fake upstreams play Azure DNS (168.63.129.16) and on-prem DNS.
mod common;

use common::*;
use hickory_proto::op::ResponseCode;

async fn scrape(z: &Zonefwd) -> String {
    http_get(z.metrics.unwrap(), "/metrics").await.1
}

#[tokio::test]
async fn a_preset_routes_every_private_link_zone_to_the_cloud_route() {
    let azure = Fake::answering(|q| reply_a(q, [10, 20, 0, 4], 60)).await;
    let onprem = Fake::answering(|q| reply_a(q, [10, 1, 1, 1], 60)).await;
    let z = Zonefwd::start(&format!(
        "[[route]]\nname = \"azure\"\npresets = [\"azure\"]\nupstreams = [\"{}\"]\n\
         [[route]]\nname = \"onprem\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n",
        azure.addr, onprem.addr
    ))
    .await;
    for name in [
        "acct.blob.core.windows.net.",
        "acct.privatelink.blob.core.windows.net.",
        "myaks-1a2b.privatelink.westeurope.azmk8s.io.",
        "kv1.vault.azure.net.",
        "db1.database.windows.net.",
        "reg.westeurope.data.privatelink.azurecr.io.",
    ] {
        let r = ask_a(z.udp, name).await;
        assert_eq!(
            r.answers[0].data,
            a_record("x.", [10, 20, 0, 4], 60).data,
            "{name}"
        );
    }
    let r = ask_a(z.udp, "intranet.corp.example.").await;
    assert_eq!(r.answers[0].data, a_record("x.", [10, 1, 1, 1], 60).data);
    assert_eq!((azure.count(), onprem.count()), (6, 1));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn nxdomain_from_a_private_route_falls_back_to_the_named_route() {
    // The private zone lacks another tenant's account: NXDOMAIN; public DNS has it.
    let azure = Fake::answering(|q| {
        if qname_of(q).starts_with("mine.") {
            reply_a(q, [10, 20, 0, 5], 60)
        } else {
            let mut r = reply_rcode(q, ResponseCode::NXDomain);
            r.authorities
                .push(soa_record("privatelink.blob.core.windows.net.", 60, 10));
            r
        }
    })
    .await;
    let public = Fake::answering(|q| reply_a(q, [52, 239, 1, 2], 60)).await;
    let z = Zonefwd::start(&format!(
        "[server]\nmetrics = \"127.0.0.1:0\"\n\
         [[route]]\nname = \"azure\"\nzones = [\"blob.core.windows.net\"]\nupstreams = [\"{}\"]\nnxdomain_fallback = \"public\"\n\
         [[route]]\nname = \"public\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n",
        azure.addr, public.addr
    ))
    .await;
    let r = ask_a(z.udp, "mine.blob.core.windows.net.").await;
    assert_eq!(r.answers[0].data, a_record("x.", [10, 20, 0, 5], 60).data);
    assert_eq!(public.count(), 0, "an answer is not retried");

    let r = ask_a(z.udp, "partner.blob.core.windows.net.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].data, a_record("x.", [52, 239, 1, 2], 60).data);
    assert_eq!(public.count(), 1);
    // The final answer is what is cached: no second trip anywhere.
    let again = ask_a(z.udp, "partner.blob.core.windows.net.").await;
    assert_eq!(
        again.answers[0].data,
        a_record("x.", [52, 239, 1, 2], 60).data
    );
    assert_eq!((azure.count(), public.count()), (2, 1));
    assert!(scrape(&z)
        .await
        .contains("zonefwd_nxdomain_fallbacks_total{route=\"azure\"} 1"));

    // With the fallback failing too, the NXDOMAIN stands.
    drop(public);
    let r = ask_a(z.udp, "gone.blob.core.windows.net.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn expect_private_warns_or_enforces_on_public_addresses() {
    // A private-link name that comes back public: the zone is not linked to the VNet.
    let azure = Fake::answering(|q| {
        if qname_of(q).starts_with("private.") {
            reply_a(q, [10, 20, 0, 6], 60)
        } else {
            reply_a(q, [20, 60, 1, 1], 60)
        }
    })
    .await;
    let route = |mode: &str| {
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n[[route]]\nname = \"azure\"\nzones = [\"blob.core.windows.net\"]\nupstreams = [\"{}\"]\nexpect_private = \"{mode}\"\ncache = false\n",
            azure.addr
        )
    };
    let z = Zonefwd::start(&route("warn")).await;
    let r = ask_a(z.udp, "private.blob.core.windows.net.").await;
    assert_eq!(r.answers[0].data, a_record("x.", [10, 20, 0, 6], 60).data);
    let r = ask_a(z.udp, "leaky.blob.core.windows.net.").await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "warn answers"
    );
    assert_eq!(r.answers[0].data, a_record("x.", [20, 60, 1, 1], 60).data);
    assert!(scrape(&z)
        .await
        .contains("zonefwd_public_answers_total{route=\"azure\"} 1"));
    z.stop().await.unwrap();

    let z = Zonefwd::start(&route("enforce")).await;
    let r = ask_a(z.udp, "private.blob.core.windows.net.").await;
    assert_eq!(r.answers[0].data, a_record("x.", [10, 20, 0, 6], 60).data);
    let r = ask_a(z.udp, "leaky.blob.core.windows.net.").await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "enforce refuses it"
    );
    assert!(r.answers.is_empty());
    assert!(scrape(&z)
        .await
        .contains("zonefwd_public_answers_total{route=\"azure\"} 1"));
    z.stop().await.unwrap();
}
