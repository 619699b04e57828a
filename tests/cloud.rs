//! Cloud know-how: zone presets on a route, NXDOMAIN fallback, and the private-answer
//! guard. Fake upstreams play Azure DNS (168.63.129.16) and on-prem DNS.
mod common;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn a_preset_routes_every_private_link_zone_to_the_cloud_route() {
    let azure = Fake::answering(|q| reply_a(q, [10, 20, 0, 4], 60)).await;
    let onprem = Fake::answering(|q| reply_a(q, [10, 1, 1, 1], 60)).await;
    let conf = Conf::new()
        .table(&format!(
            "[[route]]\nname = \"azure\"\npresets = [\"azure\"]\nupstreams = [\"{}\"]",
            azure.addr
        ))
        .route("onprem", &["."], &[onprem.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;
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
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route(
            "azure",
            &["blob.core.windows.net"],
            &[azure.addr],
            "nxdomain_fallback = \"public\"",
        )
        .route("public", &["."], &[public.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;
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

/// The fake cloud resolver of the guard's cases: a private endpoint (CNAME into
/// privatelink, private address), one whose private zone is not linked (CNAME into
/// privatelink, public address), an account without a private endpoint (public),
/// and a privatelink name asked directly that comes back public.
async fn cloud_resolver() -> Fake {
    Fake::answering(|q| {
        let n = qname_of(q);
        let mut r = reply(q);
        let label = n.split('.').next().unwrap_or_default().to_string();
        let private = format!("{label}.privatelink.blob.core.windows.net.");
        match label.as_str() {
            _ if n.contains(".privatelink.") => r.answers.push(a_record(&n, [20, 60, 1, 3], 60)),
            "endpoint" => {
                r.answers.push(cname_record(&n, &private, 60));
                r.answers.push(a_record(&private, [10, 20, 0, 6], 60));
            }
            "unlinked" => {
                r.answers.push(cname_record(&n, &private, 60));
                r.answers.push(a_record(&private, [20, 60, 1, 2], 60));
            }
            _ => r.answers.push(a_record(&n, [20, 60, 1, 1], 60)),
        }
        r
    })
    .await
}

/// `expect_private` on the azure preset counts public addresses for names in private
/// zones only: the preset's forwarded public zones hold every account without a
/// private endpoint, and those are public by design.
#[tokio::test]
async fn expect_private_counts_public_addresses_of_private_names_only() {
    let azure = cloud_resolver().await;
    // (name, a public address for a private name, the rcode under enforce)
    let cases = [
        (
            "endpoint.blob.core.windows.net.",
            false,
            ResponseCode::NoError,
        ),
        (
            "public.blob.core.windows.net.",
            false,
            ResponseCode::NoError,
        ),
        (
            "unlinked.blob.core.windows.net.",
            true,
            ResponseCode::ServFail,
        ),
        (
            "acct.privatelink.blob.core.windows.net.",
            true,
            ResponseCode::ServFail,
        ),
    ];
    let counted = cases.iter().filter(|c| c.1).count() as u64;
    for mode in ["warn", "enforce"] {
        let conf = Conf::new().server("metrics = \"127.0.0.1:0\"").table(&format!(
            "[[route]]\nname = \"azure\"\npresets = [\"azure\"]\nupstreams = [\"{}\"]\nexpect_private = \"{mode}\"\ncache = false",
            azure.addr
        ));
        let z = Zonefwd::start(&conf.toml()).await;
        for (name, _, enforced) in cases {
            let r = ask_a(z.udp, name).await;
            let want = if mode == "warn" {
                ResponseCode::NoError
            } else {
                enforced
            };
            assert_eq!(r.metadata.response_code, want, "{mode} {name}");
            assert_eq!(
                r.answers.is_empty(),
                want == ResponseCode::ServFail,
                "{mode} {name}"
            );
        }
        let body = scrape(&z).await;
        assert_eq!(
            metric(&body, "zonefwd_public_answers_total{route=\"azure\"}"),
            counted,
            "{mode}: only the private names count\n{body}"
        );
        z.stop().await.unwrap();
    }
}

/// A route whose zones are all private (listed by hand, not a public forward zone)
/// counts every public address.
#[tokio::test]
async fn expect_private_on_private_zones_counts_every_public_address() {
    let corp = Fake::answering(|q| reply_a(q, [20, 60, 1, 9], 60)).await;
    let conf = Conf::new().server("metrics = \"127.0.0.1:0\"").route(
        "corp",
        &["corp.internal"],
        &[corp.addr],
        "expect_private = \"enforce\"\ncache = false",
    );
    let z = Zonefwd::start(&conf.toml()).await;
    let r = ask_a(z.udp, "app.corp.internal.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        metric(
            &scrape(&z).await,
            "zonefwd_public_answers_total{route=\"corp\"}"
        ),
        1
    );
    z.stop().await.unwrap();
}

/// What on-prem DNS says about a name with a private endpoint when it resolves it on
/// the internet: the public chain through the privatelink name to a public address.
fn public_chain(q: &Message, head: &[(&str, &str)], ttl: u32) -> Message {
    let mut r = reply(q);
    for (owner, target) in head {
        r.answers.push(cname_record(owner, target, ttl));
    }
    let (_, last) = head.last().unwrap();
    let store = "blob.bl5prdstr11a.store.core.windows.net.";
    r.answers.push(cname_record(last, store, 40));
    r.answers.push(a_record(store, [20, 60, 1, 1], 40));
    r
}

#[tokio::test]
async fn a_public_cname_into_a_claimed_zone_is_spliced_with_the_private_answer() {
    let onprem = Fake::answering(|q| match qname_of(q).as_str() {
        "files.corp.example." => public_chain(
            q,
            &[
                ("files.corp.example.", "acct.blob.core.windows.net."),
                (
                    "acct.blob.core.windows.net.",
                    "acct.privatelink.blob.core.windows.net.",
                ),
            ],
            100,
        ),
        "gone.blob.core.windows.net." | "broken.blob.core.windows.net." => {
            let n = qname_of(q);
            let label = n.split('.').next().unwrap().to_string();
            public_chain(
                q,
                &[(
                    n.as_str(),
                    &format!("{label}.privatelink.blob.core.windows.net."),
                )],
                100,
            )
        }
        n if n.ends_with(".blob.core.windows.net.") => {
            public_chain(q, &[(n, "acct.privatelink.blob.core.windows.net.")], 100)
        }
        _ => reply_a(q, [10, 1, 1, 1], 60),
    })
    .await;
    // Azure DNS, with the private zone linked.
    let azure = Fake::answering(|q| match qname_of(q).as_str() {
        "acct.privatelink.blob.core.windows.net." => reply_a(q, [10, 20, 0, 7], 300),
        "broken.privatelink.blob.core.windows.net." => reply_rcode(q, ResponseCode::ServFail),
        _ => {
            let mut r = reply_rcode(q, ResponseCode::NXDomain);
            r.authorities
                .push(soa_record("privatelink.blob.core.windows.net.", 300, 30));
            r
        }
    })
    .await;
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route(
            "azure",
            &["privatelink.blob.core.windows.net"],
            &[azure.addr],
            "claim_cnames = true",
        )
        .route("onprem", &["."], &[onprem.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;

    let r = ask_a(z.udp, "acct.blob.core.windows.net.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.authoritative && !r.metadata.authentic_data);
    // The public CNAME, then Azure's private answer; the public tail is gone, and every
    // TTL is the chain's minimum (100 from the CNAME, not 40 from the cut tail).
    assert_eq!(
        r.answers,
        vec![
            cname_record(
                "acct.blob.core.windows.net.",
                "acct.privatelink.blob.core.windows.net.",
                100
            ),
            a_record(
                "acct.privatelink.blob.core.windows.net.",
                [10, 20, 0, 7],
                100
            ),
        ]
    );
    let asked = azure.seen();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        qname_of(&asked[0].msg),
        "acct.privatelink.blob.core.windows.net."
    );
    assert_eq!(asked[0].msg.queries[0].query_type(), RecordType::A);

    // From the cache: spliced as before, nothing sent anywhere.
    let again = ask_a(z.udp, "acct.blob.core.windows.net.").await;
    assert_eq!(again.answers.len(), 2);
    assert_eq!(
        again.answers[1].data,
        a_record("x.", [10, 20, 0, 7], 1).data
    );
    assert!(again.answers.iter().all(|r| r.ttl <= 100));
    assert_eq!((onprem.count(), azure.count()), (1, 1));

    // A custom domain two CNAMEs away from the claimed zone.
    let r = ask_a(z.udp, "files.corp.example.").await;
    let owners: Vec<String> = r.answers.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(
        owners,
        [
            "files.corp.example.",
            "acct.blob.core.windows.net.",
            "acct.privatelink.blob.core.windows.net."
        ]
    );
    assert_eq!(r.answers[2].data, a_record("x.", [10, 20, 0, 7], 1).data);

    // The claimed name does not exist in the private zone: NXDOMAIN for the last name
    // of the chain (RFC 6604), with the CNAME that led there and Azure's SOA.
    let r = ask_a(z.udp, "gone.blob.core.windows.net.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.authorities.len(), 1);
    assert!(r.authorities[0].ttl <= 100);

    // Azure fails: SERVFAIL, never the public address the claim exists to avoid.
    let r = ask_a(z.udp, "broken.blob.core.windows.net.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(r.answers.is_empty());

    // Names without CNAMEs are relayed untouched.
    let r = ask_a(z.udp, "intranet.corp.example.").await;
    assert_eq!(
        r.answers,
        vec![a_record("intranet.corp.example.", [10, 1, 1, 1], 60)]
    );

    let m = scrape(&z).await;
    assert!(
        m.contains("zonefwd_cname_claims_total{route=\"azure\"} 4"),
        "{m}"
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn claimed_chains_that_loop_between_routes_end_in_servfail() {
    // a.one.example (route one) -> b.two.example (route two) -> a.one.example: each
    // route claims the other's target, so only the loop check stops the bouncing.
    let onprem = Fake::answering(|q| {
        let mut r = reply(q);
        r.answers
            .push(cname_record(&qname_of(q), "a.one.example.", 300));
        r
    })
    .await;
    let one = Fake::answering(|q| {
        let mut r = reply(q);
        r.answers
            .push(cname_record(&qname_of(q), "b.two.example.", 300));
        r
    })
    .await;
    let two = Fake::answering(|q| {
        let mut r = reply(q);
        r.answers
            .push(cname_record(&qname_of(q), "a.one.example.", 300));
        r
    })
    .await;
    let z = Zonefwd::start(
        &Conf::new()
            .server("metrics = \"127.0.0.1:0\"")
            .route("one", &["one.example"], &[one.addr], "claim_cnames = true")
            .route("two", &["two.example"], &[two.addr], "claim_cnames = true")
            .route("onprem", &["."], &[onprem.addr], "")
            .toml(),
    )
    .await;
    let (r, took) = timed(ask_a(z.udp, "start.corp.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // One lookup per route, then the loop is seen: no bouncing until a deadline.
    assert_eq!((onprem.count(), one.count(), two.count()), (1, 1, 1));
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");
    // A client asking a claimed name directly gets that route's answer relayed: the
    // CNAME into route two is claimed, and two's answer leads back to the question.
    let r = ask_a(z.udp, "a.one.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let m = scrape(&z).await;
    assert!(m.contains("zonefwd_cname_chains_broken_total 2"), "{m}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_claimed_chain_stops_at_the_hop_limit() {
    // n0.one.example -> n1.two.example -> n2.one.example -> ...: never a loop, never an
    // end; every link is claimed by the other route.
    let next = |q: &Message, zone: &str| {
        let n = qname_of(q);
        let k: u32 = n[1..n.find('.').unwrap()].parse().unwrap();
        let mut r = reply(q);
        r.answers
            .push(cname_record(&n, &format!("n{}.{zone}.", k + 1), 300));
        r
    };
    let one = Fake::answering(move |q| next(q, "two.example")).await;
    let two = Fake::answering(move |q| next(q, "one.example")).await;
    let conf = Conf::new()
        .route("one", &["one.example"], &[one.addr], "claim_cnames = true")
        .route("two", &["two.example"], &[two.addr], "claim_cnames = true");
    let z = Zonefwd::start(&conf.toml()).await;
    let r = ask_a(z.udp, "n0.one.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // The client's own lookup, then MAX_HOPS claimed ones.
    assert_eq!(one.count() + two.count(), 1 + zonefwd::MAX_HOPS);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn claimed_lookups_share_one_time_limit() {
    // Each link answers after 600 ms, within its route's 1 s timeout; the claimed
    // lookups together get the longest route timeout (1 s), so the second one is cut.
    let slow_next = |zone: &'static str| {
        move |q: &Message, _tcp: bool| {
            let n = qname_of(q);
            let k: u32 = n[1..n.find('.').unwrap()].parse().unwrap();
            let mut r = reply(q);
            r.answers
                .push(cname_record(&n, &format!("n{}.{zone}.", k + 1), 300));
            vec![
                Step::Sleep(std::time::Duration::from_millis(600)),
                Step::Reply(r),
            ]
        }
    };
    let one = Fake::start(slow_next("two.example")).await;
    let two = Fake::start(slow_next("one.example")).await;
    let keys = "claim_cnames = true\ntimeout = \"1s\"";
    let conf = Conf::new()
        .server("metrics = \"127.0.0.1:0\"")
        .route("one", &["one.example"], &[one.addr], keys)
        .route("two", &["two.example"], &[two.addr], keys);
    let z = Zonefwd::start(&conf.toml()).await;
    let (r, took) = timed(ask_a(z.udp, "n0.one.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // 0.6 s for the client's own lookup, then 1 s for the claimed ones.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(scrape(&z)
        .await
        .contains("zonefwd_cname_chains_broken_total 1"));
    z.stop().await.unwrap();
}
