//! DNS over TLS to upstreams (RFC 7858): zonefwd asks a `tls://` upstream over kept,
//! resumed TLS connections, checks its certificate (the route's CA, its name, its
//! pins), and when the check or the handshake fails says why and never asks it in
//! plain text. The upstream here is another zonefwd's DoT listener in front of a fake
//! resolver; tests/interop_tls.rs puts Unbound and kdig on either side.
mod common;

use std::time::Duration;

use common::certs::{Leaf, Pair, Pki};
use common::*;
use hickory_proto::op::ResponseCode;
use serde_json::{json, Value};

/// A DoT server presenting `pair`, answering every query from `fake`, closing
/// connections idle for 300 ms.
async fn dot_server(pair: &Pair, fake: &Fake) -> Zonefwd {
    let conf = Conf::new()
        .server("tls_listen = [\"127.0.0.1:0\"]")
        .server("tcp_idle_timeout = \"300ms\"")
        .server("metrics = \"127.0.0.1:0\"")
        .certificate(pair)
        .route("default", &["."], &[fake.addr], "");
    Zonefwd::start(&conf.toml()).await
}

/// A forwarder with a control socket whose one route asks `upstream` (a `tls://`
/// spec) with the route keys `trust`.
async fn forwarder(dir: &Pki, upstream: &str, trust: &str) -> (Zonefwd, std::path::PathBuf) {
    let socket = dir.path("control.sock");
    let toml = format!(
        "[server]\ncontrol = \"{}\"\n[[route]]\nname = \"default\"\nzones = [\".\"]\nupstreams = [\"{upstream}\"]\nmax_fails = 0\n{trust}\n",
        socket.display()
    );
    (Zonefwd::start(&toml).await, socket)
}

fn tls_status(status: &Value) -> Value {
    status["routes"][0]["upstreams"][0]["tls"].clone()
}

#[tokio::test]
async fn a_tls_upstream_is_asked_over_one_kept_connection_and_resumes_its_session() {
    let pki = Pki::new();
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let dot = dot_server(&pair, &fake).await;
    let spec = format!("tls://{}#dns.test", dot.tls.unwrap());
    let trust = format!("tls_ca = \"{}\"", pki.ca_pem.display());
    let (fwd, socket) = forwarder(&pki, &spec, &trust).await;
    for i in 0..5 {
        let r = ask_a(fwd.udp, &format!("n{i}.example.")).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    }
    let status = ctl(&socket, json!({"command": "status"})).await;
    let tls = tls_status(&status);
    assert_eq!(tls["name"], "dns.test");
    assert_eq!(tls["handshakes"], json!({"full": 1}), "{tls}");
    assert!(tls["last_failure"].is_null());
    // The DoT server saw the five queries as DoT, none in plain text.
    let seen = scrape(&dot).await;
    assert_eq!(
        metric(
            &seen,
            "zonefwd_queries_total{route=\"default\",transport=\"tls\",rcode=\"NOERROR\"}"
        ),
        5
    );
    assert_eq!(
        metric(
            &seen,
            "zonefwd_listener_connections_total{transport=\"tls\"}"
        ),
        1
    );
    // The server closes the idle connection; the next query's connection resumes
    // the session (RFC 8446 section 2.2) instead of a full handshake.
    tokio::time::sleep(Duration::from_millis(800)).await;
    ask_a(fwd.udp, "after.example.").await;
    let status = ctl(&socket, json!({"command": "status"})).await;
    assert_eq!(
        tls_status(&status)["handshakes"],
        json!({"full": 1, "resumed": 1}),
        "{status}"
    );
}

#[tokio::test]
async fn a_certificate_that_fails_its_check_fails_the_upstream_with_its_reason_and_nothing_goes_in_plain_text(
) {
    let pki = Pki::new();
    let good = pki.leaf("good", &["dns.test"], Leaf::Good);
    let other = pki.leaf("other", &["dns.test"], Leaf::Good);
    let ca = format!("tls_ca = \"{}\"", pki.ca_pem.display());
    let pinned_other = format!("{ca}\ntls_pins = [\"{}\"]", other.pin);
    let cases: [(&str, Pair, &str, &str); 4] = [
        (
            "expired",
            pki.leaf("expired", &["dns.test"], Leaf::Expired),
            "#dns.test",
            &ca,
        ),
        (
            "wrong_name",
            pki.leaf("wrong", &["elsewhere.test"], Leaf::Good),
            "#dns.test",
            &ca,
        ),
        (
            "unknown_ca",
            pki.leaf("stranger", &["dns.test"], Leaf::UnknownCa),
            "#dns.test",
            &ca,
        ),
        ("pin_mismatch", good, "#dns.test", &pinned_other),
    ];
    for (reason, pair, name, trust) in cases {
        let fake = Fake::answering_a().await;
        let dot = dot_server(&pair, &fake).await;
        let spec = format!("tls://{}{name}", dot.tls.unwrap());
        let (fwd, socket) = forwarder(&pki, &spec, trust).await;
        let r = ask_a(fwd.udp, "private.example.").await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{reason}");
        let tls = tls_status(&ctl(&socket, json!({"command": "status"})).await);
        assert_eq!(tls["last_failure"]["reason"], reason, "{tls}");
        assert!(tls["handshakes"][reason].as_u64().unwrap() >= 1, "{tls}");
        assert!(tls["handshakes"].get("full").is_none(), "{reason}: {tls}");
        assert_eq!(fake.count(), 0, "{reason}: the query reached the resolver");
        let seen = scrape(&dot).await;
        assert_eq!(
            metric(&seen, "zonefwd_queries_total"),
            0,
            "{reason}: asked in plain text"
        );
        fwd.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_upstream_without_a_name_is_asked_when_its_key_matches_a_pin() {
    let pki = Pki::new();
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let dot = dot_server(&pair, &fake).await;
    let spec = format!("tls://{}", dot.tls.unwrap());
    let trust = format!("tls_pins = [\"{}\"]", pair.pin);
    let (fwd, _) = forwarder(&pki, &spec, &trust).await;
    let r = ask_a(fwd.udp, "pinned.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(fake.count(), 1);
}

// The doctor runs as a child process while the DoT server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_a_tls_upstream_over_tls_and_names_a_bad_certificate_with_its_fix() {
    let pki = Pki::new();
    let good = pki.leaf("good", &["dns.test"], Leaf::Good);
    let expired = pki.leaf("expired", &["dns.test"], Leaf::Expired);
    let fake = Fake::answering(reply).await;
    let (ok_server, expired_server) = (
        dot_server(&good, &fake).await,
        dot_server(&expired, &fake).await,
    );
    let route = |name: &str, dot: &Zonefwd| {
        format!(
            "[[route]]\nname = \"{name}\"\nzones = [\"{name}.example\"]\nupstreams = [\"tls://{}#dns.test\"]\ntls_ca = \"{}\"\n",
            dot.tls.unwrap(),
            pki.ca_pem.display()
        )
    };
    let cfg = pki.path("doctor.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{}{}",
        route("good", &ok_server),
        route("stale", &expired_server)
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || zonefwd_cli(&["doctor", "-c", &cfg]))
            .await
            .unwrap();
    let out = out + &err;
    assert_eq!(code, 1, "{out}");
    let good_line = format!(
        "ok   route good: upstream tls://{}#dns.test over tls (good.example. SOA): NOERROR",
        ok_server.tls.unwrap()
    );
    assert!(out.contains(&good_line), "{out}");
    let bad_line = format!("FAIL route stale: upstream tls://{}#dns.test over tls (stale.example. SOA): tls handshake failed: the certificate has expired", expired_server.tls.unwrap());
    assert!(out.contains(&bad_line), "{out}");
    assert!(out.contains("renew it on the upstream"), "{out}");
    assert!(
        !out.contains("over udp") && !out.contains("over tcp"),
        "a tls:// upstream was probed in plain text: {out}"
    );
}
