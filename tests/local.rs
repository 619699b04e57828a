//! `[local]` records, end to end: answered by zonefwd with AA and never forwarded or
//! cached; NODATA for the other address family; other types forwarded; a local CNAME
//! answered with its target resolved through the route that owns it; hosts files
//! with their PTRs; located errors; a reload reads the hosts files again.
mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const RECORDS: &str = r#"records = ["legacy.corp.example. 300 IN A 10.1.2.3", "files.corp.example. 60 IN CNAME acct.blob.core.windows.net.", "mail.corp.example. 300 IN MX 10 mx.corp.example."]"#;

fn addresses(r: &Message) -> Vec<IpAddr> {
    r.answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(IpAddr::V4(ip.0)),
            RData::AAAA(ip) => Some(IpAddr::V6(ip.0)),
            _ => None,
        })
        .collect()
}

/// (name, type, rcode, AA, addresses, forwarded to on-prem)
type Case = (
    &'static str,
    RecordType,
    ResponseCode,
    bool,
    &'static [[u8; 4]],
    bool,
);

const CASES: &[Case] = &[
    (
        "legacy.corp.example.",
        RecordType::A,
        ResponseCode::NoError,
        true,
        &[[10, 1, 2, 3]],
        false,
    ),
    (
        "LEGACY.corp.example.",
        RecordType::A,
        ResponseCode::NoError,
        true,
        &[[10, 1, 2, 3]],
        false,
    ),
    // Only an IPv4 address is pinned: no public IPv6 address may leak.
    (
        "legacy.corp.example.",
        RecordType::AAAA,
        ResponseCode::NoError,
        true,
        &[],
        false,
    ),
    // Other types of a local name go upstream as usual.
    (
        "legacy.corp.example.",
        RecordType::TXT,
        ResponseCode::NoError,
        false,
        &[],
        true,
    ),
    (
        "other.corp.example.",
        RecordType::A,
        ResponseCode::NoError,
        false,
        &[[192, 0, 2, 1]],
        true,
    ),
];

#[tokio::test]
async fn local_records_are_answered_here_with_aa_and_other_types_go_upstream() {
    let onprem = Fake::answering(|q| match q.queries[0].query_type() {
        RecordType::A => reply_a(q, [192, 0, 2, 1], 60),
        _ => reply(q),
    })
    .await;
    let conf = Conf::new().table(&format!("[local]\n{RECORDS}")).route(
        "onprem",
        &["."],
        &[onprem.addr],
        "",
    );
    let z = Zonefwd::start(&conf.toml()).await;
    for &(name, qtype, rcode, aa, addrs, forwarded) in CASES {
        let before = onprem.count();
        let r = exchange(z.udp, &query(name, qtype, Some(1232))).await;
        let want: Vec<IpAddr> = addrs
            .iter()
            .map(|a| IpAddr::V4(Ipv4Addr::from(*a)))
            .collect();
        assert_eq!(r.metadata.response_code, rcode, "{name} {qtype}");
        assert_eq!(r.metadata.authoritative, aa, "{name} {qtype}: AA");
        assert_eq!(addresses(&r), want, "{name} {qtype}");
        assert_eq!(
            onprem.count() > before,
            forwarded,
            "{name} {qtype}: forwarded"
        );
    }
    // Asked again: answered again, never from the cache (the metrics would say).
    let mx = exchange(z.udp, &query("mail.corp.example.", RecordType::MX, None)).await;
    assert!(matches!(&mx.answers[0].data, RData::MX(m) if m.preference == 10));
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_local_cname_is_answered_with_its_target_through_the_route_that_owns_it() {
    let azure = Fake::answering(|q| reply_a(q, [10, 20, 0, 7], 60)).await;
    let onprem = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 60)).await;
    let conf = Conf::new()
        .table(&format!("[local]\n{RECORDS}"))
        .route("azure", &["blob.core.windows.net"], &[azure.addr], "")
        .route("onprem", &["."], &[onprem.addr], "");
    let z = Zonefwd::start(&conf.toml()).await;
    let asked_as = with_spelling(
        &query("files.corp.example.", RecordType::A, None),
        "Files.Corp.Example.",
    );
    for round in ["first, forwarded", "second, the target from the cache"] {
        let raw = raw_udp(z.udp, &asked_as, std::time::Duration::from_secs(5))
            .await
            .expect("answered");
        assert_eq!(
            &raw[12..12 + 20],
            &asked_as[12..12 + 20],
            "{round}: the client's spelling"
        );
        let r = Message::from_vec(&raw).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{round}");
        assert_eq!(
            r.queries[0].name().to_string(),
            "Files.Corp.Example.",
            "{round}: the client's spelling"
        );
        assert!(
            matches!(&r.answers[0].data, RData::CNAME(c) if c.0.to_string() == "acct.blob.core.windows.net."),
            "{round}: {:?}",
            r.answers
        );
        assert_eq!(
            addresses(&r),
            vec![IpAddr::V4(Ipv4Addr::new(10, 20, 0, 7))],
            "{round}"
        );
    }
    assert_eq!(
        asked(&azure, "acct.blob.core.windows.net."),
        1,
        "the target's own answer is cached"
    );
    assert_eq!(onprem.count(), 0);
    z.stop().await.unwrap();
}

#[tokio::test]
async fn hosts_files_answer_names_and_ptrs_and_a_reload_reads_them_again() {
    let onprem = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# pinned\n10.9.8.7  db.corp.example  db  # the database\nfd00::7 v6.corp.example\n",
    )
    .unwrap();
    let file = dir.path().join("z.toml");
    let conf = Conf::new()
        .server("listen = [\"127.0.0.1:0\"]")
        .server("loop_detection = false")
        .table(&format!("[local]\nhosts = [\"{}\"]", hosts.display()))
        .route("onprem", &["."], &[onprem.addr], "");
    std::fs::write(&file, conf.toml()).unwrap();
    let load = || zonefwd::Config::load(&file, &zonefwd::LoadEnv::default()).unwrap();
    let z = Zonefwd::start_config(load()).await;
    let a = exchange(z.udp, &query("db.corp.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&a), vec![IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))]);
    let alias = exchange(z.udp, &query("db.", RecordType::A, None)).await;
    assert_eq!(
        addresses(&alias),
        vec![IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))]
    );
    let ptr = exchange(
        z.udp,
        &query("7.8.9.10.in-addr.arpa.", RecordType::PTR, None),
    )
    .await;
    assert!(
        matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_string() == "db.corp.example."),
        "{:?}",
        ptr.answers
    );
    let v6 = exchange(z.udp, &query("v6.corp.example.", RecordType::AAAA, None)).await;
    assert_eq!(addresses(&v6), vec!["fd00::7".parse::<IpAddr>().unwrap()]);
    assert_eq!(onprem.count(), 0);

    std::fs::write(&hosts, "10.9.8.8 db.corp.example\n").unwrap();
    z.reload_config(load());
    let mut moved = false;
    for _ in 0..500 {
        if addresses(&exchange(z.udp, &query("db.corp.example.", RecordType::A, None)).await)
            == vec![IpAddr::V4(Ipv4Addr::new(10, 9, 8, 8))]
        {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(moved, "the changed hosts file is in force after the reload");
    z.stop().await.unwrap();
}

#[test]
fn bad_local_records_and_hosts_lines_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "10.0.0.1 ok.example\nnot-an-address bad.example\n").unwrap();
    let route = "[[route]]\nname = \"d\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n";
    for (local, starts) in [
        (
            "records = [\"x.example. 300 IN A 10.0.0.1\", \"bad line\"]",
            "t.toml:2:44: local.records[1]: not a zone-file record".to_string(),
        ),
        (
            "records = [\"$INCLUDE /etc/passwd\"]",
            "t.toml:2:12: local.records[0]: one record per line".to_string(),
        ),
        (
            "records = [\"x.example. 300 CH TXT hi\"]",
            "t.toml:2:12: local.records[0]: class CH: local records are class IN".to_string(),
        ),
        (
            &format!("hosts = [\"{}\"]", hosts.display()),
            format!(
                "{}:2:1: \"not-an-address\" is not an IP address",
                hosts.display()
            ),
        ),
    ] {
        let text = format!("[local]\n{local}\n{route}");
        let e = zonefwd::Config::parse(&text, "t.toml", &zonefwd::LoadEnv::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&starts), "{e}");
    }
}
