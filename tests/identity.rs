//! Replica identity (`[server] identity`): which replica behind a load balancer
//! answered. NSID in the OPT of replies to queries that ask for it (RFC 5001), and
//! CHAOS TXT answers for id.server. and hostname.bind. (RFC 4892). CHAOS queries are
//! never forwarded: the client would learn the upstream's identity instead.
mod common;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, RData, RecordType};

/// An A query for `name` with EDNS, asking for NSID when `nsid`.
fn a_query(name: &str, nsid: bool) -> Message {
    let mut m = query(name, RecordType::A, None);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if nsid {
        e.options_mut()
            .insert(EdnsOption::NSID(NSIDPayload::new(Vec::new()).unwrap()));
    }
    m.edns = Some(e);
    m
}

/// The NSID in a reply's OPT, if any.
fn nsid_of(r: &Message) -> Option<Vec<u8>> {
    match r.edns.as_ref()?.option(EdnsCode::NSID)? {
        EdnsOption::NSID(payload) => Some(payload.as_ref().to_vec()),
        _ => None,
    }
}

fn with_identity(identity: Option<&str>, upstream: std::net::SocketAddr) -> Conf {
    let conf = Conf::new()
        .route("cloud", &["cloud.test."], &[upstream], "")
        .route("default", &["."], &[upstream], "");
    match identity {
        Some(i) => conf.server(&format!("identity = \"{i}\"")),
        None => conf,
    }
}

#[tokio::test]
async fn nsid_names_the_replica_on_every_kind_of_answer_that_asks_for_it() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&with_identity(Some("replica-a"), up.addr).toml()).await;
    let forwarded = exchange(z.udp, &a_query("x.cloud.test.", true)).await;
    let cached = exchange(z.udp, &a_query("x.cloud.test.", true)).await;
    let mut axfr = a_query("cloud.test.", true);
    axfr.queries[0].set_query_type(RecordType::AXFR);
    let refused = exchange(z.udp, &axfr).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    for (what, r) in [
        ("forwarded", &forwarded),
        ("cached", &cached),
        ("refused", &refused),
    ] {
        assert_eq!(nsid_of(r).as_deref(), Some(&b"replica-a"[..]), "{what}");
    }
    // Not asked for: not sent.
    assert_eq!(
        nsid_of(&exchange(z.udp, &a_query("y.cloud.test.", false)).await),
        None
    );
    assert_eq!(up.count(), 2, "two forwarded, one from cache, AXFR refused");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn without_an_identity_no_nsid_is_sent() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&with_identity(None, up.addr).toml()).await;
    let r = exchange(z.udp, &a_query("x.cloud.test.", true)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(nsid_of(&r), None);
    z.stop().await.unwrap();
}

struct Chaos {
    name: &'static str,
    identity: Option<&'static str>,
    /// The TXT string answered, or `None` for REFUSED.
    answer: Option<&'static str>,
}

const CHAOS: &[Chaos] = &[
    Chaos {
        name: "id.server.",
        identity: Some("replica-a"),
        answer: Some("replica-a"),
    },
    Chaos {
        name: "ID.Server.",
        identity: Some("replica-a"),
        answer: Some("replica-a"),
    },
    Chaos {
        name: "hostname.bind.",
        identity: Some("replica-a"),
        answer: Some("replica-a"),
    },
    Chaos {
        name: "version.bind.",
        identity: Some("replica-a"),
        answer: None,
    },
    Chaos {
        name: "version.server.",
        identity: Some("replica-a"),
        answer: None,
    },
    Chaos {
        name: "anything.else.",
        identity: Some("replica-a"),
        answer: None,
    },
    Chaos {
        name: "id.server.",
        identity: None,
        answer: None,
    },
    Chaos {
        name: "hostname.bind.",
        identity: None,
        answer: None,
    },
];

#[tokio::test]
async fn chaos_queries_are_answered_here_and_never_forwarded() {
    let up = Fake::answering_a().await;
    for identity in [Some("replica-a"), None] {
        let z = Zonefwd::start(&with_identity(identity, up.addr).toml()).await;
        for case in CHAOS.iter().filter(|c| c.identity == identity) {
            let mut q = query(case.name, RecordType::TXT, None);
            q.queries[0].set_query_class(DNSClass::CH);
            let r = exchange(z.udp, &q).await;
            let txt = r.answers.first().map(|a| match &a.data {
                RData::TXT(t) => String::from_utf8(t.txt_data[0].to_vec()).unwrap(),
                other => panic!("{}: not TXT: {other:?}", case.name),
            });
            match case.answer {
                Some(want) => {
                    assert_eq!(
                        r.metadata.response_code,
                        ResponseCode::NoError,
                        "{}",
                        case.name
                    );
                    assert_eq!(txt.as_deref(), Some(want), "{}", case.name);
                    assert_eq!(r.answers[0].dns_class, DNSClass::CH, "{}", case.name);
                }
                None => {
                    assert_eq!(
                        r.metadata.response_code,
                        ResponseCode::Refused,
                        "{} ({identity:?})",
                        case.name
                    );
                    assert_eq!(txt, None, "{}", case.name);
                }
            }
        }
        z.stop().await.unwrap();
    }
    assert_eq!(up.count(), 0, "no CHAOS query reached an upstream");
}

#[test]
fn identity_is_checked_and_at_hostname_is_the_host_name() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let c = Conf::new()
        .server("identity = \"@hostname\"")
        .route("default", &["."], &["127.0.0.1:5399".parse().unwrap()], "")
        .build();
    assert_eq!(c.server.identity.as_deref(), Some(host.trim()));
    for (value, error) in [
        ("\"\"", "server.identity: empty"),
        (
            &format!("\"{}\"", "a".repeat(256)),
            "server.identity: 256 octets: at most 255",
        ),
    ] {
        let text = format!(
            "[server]\nidentity = {value}\n[[route]]\nname = \"d\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n"
        );
        let e = zonefwd::Config::parse(&text, "t.toml", &zonefwd::LoadEnv::default()).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("t.toml:2:12: {error}")),
            "{e}"
        );
    }
}
