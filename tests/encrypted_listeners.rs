//! The DoT listener (RFC 7858) and the DoH listener (RFC 8484) as clients we did not
//! write use them: kdig (Knot's, `+tls` and `+https`) and curl (HTTP/1.1), plus a
//! small DoT client of ours for what those cannot show (pipelined queries answered
//! out of order, the certificate a connection got across a reload). Same ACL, limits,
//! cache and routes as plain DNS; a bad request gets an HTTP error that says why.
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::certs::{Leaf, Pair, Pki};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// `[server]` lines for DoT and DoH on port 0 with `pair`, and metrics.
fn encrypted(pair: &Pair) -> Conf {
    encrypted_on(pair, "[\"127.0.0.1:0\"]")
}

/// The same, with DoT on `tls_listen`.
fn encrypted_on(pair: &Pair, tls_listen: &str) -> Conf {
    Conf::new()
        .server(&format!("tls_listen = {tls_listen}"))
        .server("https_listen = [\"127.0.0.1:0\"]")
        .server("metrics = \"127.0.0.1:0\"")
        .certificate(pair)
}

/// zonefwd with DoT and DoH listeners presenting a `dns.test` certificate from
/// `pki`, forwarding everything to `fake`.
async fn serving(pki: &Pki, fake: &Fake) -> Zonefwd {
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let conf = encrypted(&pair).route("default", &["."], &[fake.addr], "");
    Zonefwd::start(&conf.toml()).await
}

/// kdig's output for `args` against `server` (None: kdig is not installed here).
fn kdig(server: SocketAddr, args: &[&str]) -> Option<(bool, String)> {
    let kdig = debian_tool("kdig")?;
    let out = Command::new(kdig)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+timeout=5", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success() && !text.contains(";; WARNING"), text))
}

// kdig and curl run as blocking child processes: zonefwd needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_asks_over_dot_several_queries_on_one_connection() {
    let pki = Pki::new();
    let fake = Fake::answering_a().await;
    let z = serving(&pki, &fake).await;
    let ca = format!("+tls-ca={}", pki.ca_pem.display());
    let names = ["a.example", "b.example", "c.example"];
    let mut args = vec!["+tls", &ca, "+tls-hostname=dns.test", "+keepopen"];
    for n in &names {
        args.extend_from_slice(&[*n, "A"]);
    }
    let Some((ok, out)) = kdig(z.tls.unwrap(), &args) else {
        return;
    };
    assert!(ok, "{out}");
    for n in names {
        let answered = out
            .lines()
            .any(|l| l.starts_with(&format!("{n}.")) && l.ends_with("192.0.2.1"));
        assert!(answered, "{n}: {out}");
    }
    assert!(out.contains("(TLS1.3)"), "{out}");
    let m = scrape(&z).await;
    assert_eq!(
        metric(&m, "zonefwd_listener_connections_total{transport=\"tls\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "zonefwd_queries_total{route=\"default\",transport=\"tls\""
        ),
        3
    );
    assert_eq!(
        metric(
            &m,
            "zonefwd_listener_tls_handshakes_total{transport=\"tls\",result=\"full\"}"
        ),
        1
    );
}

#[tokio::test]
async fn pipelined_dot_queries_are_answered_as_they_finish() {
    let pki = Pki::new();
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let fake = Fake::start(|q, _| {
        let slow = qname_of(q).starts_with("slow");
        let wait = Duration::from_millis(if slow { 400 } else { 0 });
        vec![
            Step::Sleep(wait),
            Step::Reply(reply_a(q, [192, 0, 2, 1], 60)),
        ]
    })
    .await;
    let z = Zonefwd::start(
        &encrypted(&pair)
            .route("default", &["."], &[fake.addr], "")
            .toml(),
    )
    .await;
    let mut conn = dot::connect(z.tls.unwrap(), &pki.ca_pem, "dns.test")
        .await
        .unwrap();
    let mut slow = query("slow.example.", RecordType::A, Some(1232));
    slow.metadata.id = 1;
    let mut fast = query("fast.example.", RecordType::A, Some(1232));
    fast.metadata.id = 2;
    dot::send_all(&mut conn, &[slow, fast]).await;
    let first = dot::read(&mut conn).await.unwrap();
    let second = dot::read(&mut conn).await.unwrap();
    assert_eq!(
        (first.metadata.id, second.metadata.id),
        (2, 1),
        "the fast one first (RFC 7766 section 7)"
    );
    assert_eq!(second.metadata.response_code, ResponseCode::NoError);
}

// kdig and curl run as blocking child processes: zonefwd needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_asks_over_doh_with_post_and_get() {
    let pki = Pki::new();
    let fake = Fake::answering_a().await;
    let z = serving(&pki, &fake).await;
    let ca = format!("+tls-ca={}", pki.ca_pem.display());
    for (method, name) in [("POST", "post.example"), ("GET", "get.example")] {
        let get = if method == "GET" {
            "+https-get"
        } else {
            "+nohttps-get"
        };
        let args = [
            "+https=/dns-query",
            get,
            &ca,
            "+tls-hostname=dns.test",
            name,
            "A",
        ];
        let Some((ok, out)) = kdig(z.https.unwrap(), &args) else {
            return;
        };
        assert!(ok && out.contains("192.0.2.1"), "{method}: {out}");
        assert!(
            out.contains(&format!("(HTTP/2-{method})")),
            "{method}: {out}"
        );
    }
    let m = scrape(&z).await;
    assert_eq!(
        metric(
            &m,
            "zonefwd_queries_total{route=\"default\",transport=\"https\""
        ),
        2,
        "{m}"
    );
}

/// curl's status line and headers, and the body's bytes, for a request to `path`.
fn curl(pki: &Pki, addr: SocketAddr, path: &str, extra: &[&str]) -> Option<(String, Vec<u8>)> {
    let curl = debian_tool("curl")?;
    let headers = pki.path("headers.txt");
    let url = format!("https://dns.test:{}{path}", addr.port());
    let out = Command::new(curl)
        .args(["-s", "--http1.1", "--cacert"])
        .arg(&pki.ca_pem)
        .args(["--resolve", &format!("dns.test:{}:127.0.0.1", addr.port())])
        .arg("-D")
        .arg(&headers)
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl runs");
    Some((
        std::fs::read_to_string(&headers).unwrap_or_default(),
        out.stdout,
    ))
}

// kdig and curl run as blocking child processes: zonefwd needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_over_http_1_1_answers_with_the_smallest_ttl_as_max_age_and_refuses_what_is_not_a_query(
) {
    let pki = Pki::new();
    let fake = Fake::answering(|q| {
        let mut r = reply_a(q, [192, 0, 2, 1], 300);
        r.answers.push(a_record(&qname_of(q), [192, 0, 2, 2], 120));
        r
    })
    .await;
    let z = serving(&pki, &fake).await;
    let body = pki.path("query.bin");
    std::fs::write(
        &body,
        query("ttl.example.", RecordType::A, None).to_vec().unwrap(),
    )
    .unwrap();
    let data = format!("@{}", body.display());
    let post = [
        "-H",
        "content-type: application/dns-message",
        "--data-binary",
        data.as_str(),
    ];
    let Some((head, reply)) = curl(&pki, z.https.unwrap(), "/dns-query", &post) else {
        return;
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/dns-message"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: max-age=120"),
        "{head}"
    );
    let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert_eq!(m.answers.len(), 2);
    let cases: [(&str, &[&str], &str); 4] = [
        ("/other", &[], "HTTP/1.1 404"),
        ("/dns-query", &[], "HTTP/1.1 400"),
        ("/dns-query?dns=AAAA", &[], "HTTP/1.1 400"),
        (
            "/dns-query",
            &["--data-binary", "x", "-H", "content-type: text/plain"],
            "HTTP/1.1 415",
        ),
    ];
    for (path, extra, status) in cases {
        let (head, _) = curl(&pki, z.https.unwrap(), path, extra).unwrap();
        assert!(head.starts_with(status), "{path} {extra:?}: {head}");
    }
    assert_eq!(fake.count(), 1, "only the good request went upstream");
}

// kdig and curl run as blocking child processes: zonefwd needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_is_refused_by_the_client_and_the_handshake_counted_as_failed() {
    let pki = Pki::new();
    let fake = Fake::answering_a().await;
    let z = serving(&pki, &fake).await;
    let ca = format!("+tls-ca={}", pki.ca_pem.display());
    let Some((ok, out)) = kdig(
        z.tls.unwrap(),
        &["+tls", &ca, "+tls-hostname=wrong.test", "x.example", "A"],
    ) else {
        return;
    };
    assert!(!ok, "kdig accepted a certificate for another name: {out}");
    // The alert kdig sends reaches zonefwd as it closes: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = scrape(&z).await;
    // GnuTLS closes (close_notify) rather than naming its reason in an alert.
    let closed = "zonefwd_listener_tls_handshakes_total{transport=\"tls\",result=\"closed\"}";
    assert_eq!(metric(&m, closed), 1, "{m}");
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn the_acl_and_the_per_client_connection_limit_hold_on_dot() {
    let pki = Pki::new();
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let conf = encrypted(&pair)
        .server("tcp_max_connections_per_client = 2")
        .route("default", &["."], &[fake.addr], "")
        .table("[acl]\nallow = [\"10.0.0.0/8\"]");
    let z = Zonefwd::start(&conf.toml()).await;
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(
            dot::connect(z.tls.unwrap(), &pki.ca_pem, "dns.test")
                .await
                .unwrap(),
        );
    }
    let third = dot::connect(z.tls.unwrap(), &pki.ca_pem, "dns.test").await;
    assert!(
        third.is_err(),
        "a third connection from one client was served"
    );
    let mut q = query("acl.example.", RecordType::A, None);
    q.metadata.id = 7;
    dot::send_all(&mut conns[0], &[q]).await;
    let r = dot::read(&mut conns[0]).await.unwrap();
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::Refused,
        "127.0.0.1 is outside the ACL"
    );
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_connections_and_open_ones_keep_answering() {
    let pki = Pki::new();
    let first = pki.leaf("first", &["dns.test"], Leaf::Good);
    let second = pki.leaf("second", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let conf_on =
        |pair: &Pair, tls: &str| encrypted_on(pair, tls).route("default", &["."], &[fake.addr], "");
    let conf = |pair: &Pair| conf_on(pair, "[\"127.0.0.1:0\"]");
    let z = Zonefwd::start(&conf(&first).toml()).await;
    let addr = z.tls.unwrap();
    let mut open = dot::connect(addr, &pki.ca_pem, "dns.test").await.unwrap();
    assert_eq!(dot::peer_leaf(&open), dot::leaf_of(&first.cert));
    z.reload(&conf(&second).toml());
    until_served(addr, &pki, &second.cert).await;
    // A new pair is applied by the reload itself; a new DoT address waits for a
    // restart, and says so.
    let pending = "zonefwd_config_restart_pending";
    assert_eq!(metric(&scrape(&z).await, pending), 0);
    z.reload(&conf_on(&second, "[\"127.0.0.1:0\", \"127.0.0.2:0\"]").toml());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&scrape(&z).await, pending) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "a changed tls_listen is not a pending restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection made before the reloads still answers, with its old certificate.
    let mut q = query("still.example.", RecordType::A, None);
    q.metadata.id = 9;
    dot::send_all(&mut open, &[q]).await;
    let r = dot::read(&mut open).await.unwrap();
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (9, ResponseCode::NoError)
    );
    // A pair that does not load is a config error that names the file; what runs stays.
    std::fs::write(&second.key, "not a key").unwrap();
    let err = zonefwd::Config::parse(&conf(&second).toml(), "zonefwd.toml", &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.tls_cert") && err.contains("no private key"),
        "{err}"
    );
    let c = dot::connect(addr, &pki.ca_pem, "dns.test").await.unwrap();
    assert_eq!(dot::peer_leaf(&c), dot::leaf_of(&second.cert));
}

/// Waits (up to 10 s) until a new DoT connection to `addr` gets the leaf in `cert`.
async fn until_served(addr: SocketAddr, pki: &Pki, cert: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = dot::connect(addr, &pki.ca_pem, "dns.test").await.unwrap();
        if dot::peer_leaf(&c) == dot::leaf_of(cert) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} was never served",
            cert.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `from`'s file put in place of `to`'s the way a renewal does (a new file renamed
/// over the old, as a Secret's volume and certbot's symlinks do).
fn replace(from: &std::path::Path, to: &std::path::Path) {
    let fresh = to.with_extension("new");
    std::fs::copy(from, &fresh).unwrap();
    std::fs::rename(&fresh, to).unwrap();
}

/// Where no one sends SIGHUP (cert-manager's Secret mounted in a pod), a pair renewed
/// on disk serves new connections by itself, open ones keep answering; a pair that
/// does not load is refused once, not at every check, and the running one stays.
#[tokio::test]
async fn a_certificate_renewed_on_disk_is_served_without_a_reload() {
    let pki = Pki::new();
    let live = pki.leaf("live", &["dns.test"], Leaf::Good);
    let renewed = pki.leaf("renewed", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let conf = encrypted(&live).route("default", &["."], &[fake.addr], "");
    let options = zonefwd::RunOptions {
        certificate_check: Duration::from_millis(50),
        ..zonefwd::RunOptions::default()
    };
    let z = Zonefwd::start_with(conf.build(), options).await;
    let addr = z.tls.unwrap();
    let mut open = dot::connect(addr, &pki.ca_pem, "dns.test").await.unwrap();
    let original = dot::leaf_of(&live.cert);
    replace(&renewed.key, &live.key);
    replace(&renewed.cert, &live.cert);
    until_served(addr, &pki, &renewed.cert).await;
    until_metric(&z, "zonefwd_config_reloads_total{result=\"applied\"}", 1).await;
    let mut q = query("still.example.", RecordType::A, None);
    q.metadata.id = 5;
    dot::send_all(&mut open, &[q]).await;
    let r = dot::read(&mut open).await.unwrap();
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (5, ResponseCode::NoError)
    );
    assert_eq!(
        dot::peer_leaf(&open),
        original,
        "the open connection kept its pair"
    );

    std::fs::write(pki.path("garbage.pem"), "not a certificate").unwrap();
    replace(&pki.path("garbage.pem"), &live.cert);
    let refused = "zonefwd_config_reloads_total{result=\"refused\"}";
    until_metric(&z, refused, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = scrape(&z).await;
    assert_eq!(metric(&m, refused), 1, "refused at every check: {m}");
    assert_eq!(metric(&m, "zonefwd_config_last_reload_successful"), 0);
    let c = dot::connect(addr, &pki.ca_pem, "dns.test").await.unwrap();
    assert_eq!(dot::peer_leaf(&c), dot::leaf_of(&renewed.cert));
}

/// A certificate whose renewal stopped (5 days left of 90) is called out by `check`
/// and `doctor` with the fix, and by `ctl status`; the metrics give its dates, from
/// which the alert works. A valid one gets a quiet line and its dates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_left_to_expire_is_called_out_by_check_status_and_the_metrics() {
    let pki = Pki::new();
    let fake = Fake::answering_a().await;
    // (the leaf, what check, doctor and ctl status say of it)
    let cases = [
        (Leaf::Good, None),
        (Leaf::Expiring, Some("expires in 5 days")),
    ];
    for (kind, warned) in cases {
        let pair = pki.leaf(&format!("{kind:?}"), &["dns.test"], kind);
        let socket = pki.path(&format!("{kind:?}.sock"));
        let conf = encrypted(&pair)
            .server(&format!("control = \"{}\"", socket.display()))
            .route("default", &["."], &[fake.addr], "");
        let file = pki.path(&format!("{kind:?}.toml"));
        std::fs::write(&file, conf.toml()).unwrap();

        let (code, checked, _) = zonefwd_cli(&["check", "-c", file.to_str().unwrap()]);
        assert_eq!(
            code, 0,
            "a due certificate is a warning, not an error: {checked}"
        );
        let named = format!("cert    {} for dns.test, valid until ", pair.cert.display());
        assert!(checked.contains(&named), "{checked}");
        let (_, doctor, _) = zonefwd_cli(&["doctor", "-c", file.to_str().unwrap()]);
        let status = {
            let z = Zonefwd::start(&conf.toml()).await;
            let m = scrape(&z).await;
            for (name, want) in [
                ("not_after", pair.not_after),
                ("not_before", pair.not_before),
            ] {
                let series = format!("zonefwd_listener_certificate_{name}_timestamp_seconds ");
                assert_eq!(metric(&m, &series), want as u64, "{m}");
            }
            let socket = socket.to_str().unwrap().to_string();
            tokio::task::spawn_blocking(move || {
                zonefwd_cli(&["ctl", "--socket", &socket, "status"])
            })
            .await
            .unwrap()
            .1
        };
        match warned {
            None => {
                assert!(!checked.contains("warning"), "{checked}");
                let fine = format!("ok   tls_cert {}: valid until", pair.cert.display());
                assert!(doctor.contains(&fine), "{doctor}");
                assert!(
                    status.contains(&format!(
                        "certificate {} for dns.test, valid until",
                        pair.cert.display()
                    )),
                    "{status}"
                );
            }
            Some(says) => {
                let warning = format!("warning: tls_cert {} {says}", pair.cert.display());
                assert!(checked.contains(&warning), "{checked}");
                assert!(checked.contains("fix: renew it"), "{checked}");
                let failed = format!("FAIL tls_cert {} {says}", pair.cert.display());
                assert!(doctor.contains(&failed), "{doctor}");
                assert!(
                    status.contains(&format!(
                        "CERTIFICATE: tls_cert {} {says}",
                        pair.cert.display()
                    )),
                    "{status}"
                );
            }
        }
    }
}

#[test]
fn the_jump_subnet_example_loads_once_its_files_exist() {
    let pki = Pki::new();
    let pair = pki.leaf("jump", &["dns.jump.corp.example"], Leaf::Good);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/jump-subnet.toml")).unwrap();
    let text = text
        .replace(
            "/etc/zonefwd/tls/fullchain.pem",
            pair.cert.to_str().unwrap(),
        )
        .replace("/etc/zonefwd/tls/key.pem", pair.key.to_str().unwrap())
        .replace("/etc/zonefwd/corp-ca.pem", pki.ca_pem.to_str().unwrap());
    let c = zonefwd::Config::parse(&text, "jump-subnet.toml", &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = &c.server.encrypted;
    assert_eq!(e.tls, ["10.20.0.4:853".parse().unwrap()]);
    assert_eq!(e.https, ["10.20.0.4:443".parse().unwrap()]);
    assert_eq!(
        e.identity.as_ref().unwrap().names,
        ["dns.jump.corp.example"]
    );
    let corp = c.routes.iter().find(|r| r.name == "corp").unwrap();
    assert!(corp.upstreams.iter().all(|u| u.tls.is_some()), "{corp:?}");
    // As shipped, the files are not there: the error names the certificate's path.
    let e = zonefwd::Config::parse(
        &std::fs::read_to_string(root.join("config/jump-subnet.toml")).unwrap(),
        "jump-subnet.toml",
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("cannot read /etc/zonefwd/tls/fullchain.pem"),
        "{e}"
    );
}
