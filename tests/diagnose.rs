//! `zonefwd query` and `zonefwd doctor`, the real binary against fake upstreams on
//! loopback: a dead upstream, one that refuses TCP, a CNAME into a private zone, a
//! public answer on a route that expects private ones.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{RData, Record};

/// `zonefwd_cli` off the runtime's threads (the fakes answer on them): exit code and
/// stdout followed by stderr.
async fn run(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = zonefwd_cli(&args);
        (code, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// `zonefwd CMD -c CFG ARGS...`.
async fn cli(cmd: &str, cfg: &str, args: &[&str]) -> (i32, String) {
    let mut v = vec![cmd.to_string(), "-c".to_string(), cfg.to_string()];
    v.extend(args.iter().map(|a| a.to_string()));
    run(v).await
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("z.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Answers over UDP only: its port has no TCP listener, so TCP is refused.
async fn udp_only() -> SocketAddr {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if let Ok(q) = Message::from_vec(&buf[..n]) {
                let _ = sock.send_to(&reply(&q).to_vec().unwrap(), from).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_shows_route_upstream_rcode_answer_cname_hops_and_guard_warnings() {
    let azure = Fake::answering(|q| {
        let n = qname_of(q);
        let mut r = reply(q);
        if n.starts_with("acct.") {
            let target = "acct.privatelink.blob.core.windows.net.";
            r.answers.push(Record::from_rdata(
                name(&n),
                60,
                RData::CNAME(CNAME(name(target))),
            ));
            r.answers.push(a_record(target, [10, 20, 1, 7], 10));
        } else if n.starts_with("leaky.") {
            // A private endpoint's name answered from the public zone.
            let target = "leaky.privatelink.blob.core.windows.net.";
            r.answers.push(cname_record(&n, target, 60));
            r.answers.push(a_record(target, [20, 60, 1, 1], 60));
        } else {
            // An account without a private endpoint: public, as it should be.
            r.answers.push(a_record(&n, [20, 60, 1, 2], 60));
        }
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "[[route]]\nname = \"azure\"\nzones = [\"blob.core.windows.net\"]\nupstreams = [\"{}\"]\nexpect_private = \"warn\"\n",
            azure.addr
        ),
    );
    let (code, out) = cli("query", &cfg, &["acct.blob.core.windows.net"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route:     azure"), "{out}");
    assert!(out.contains(&format!("upstream:  {}", azure.addr)), "{out}");
    assert!(out.contains("rcode:     NOERROR"), "{out}");
    assert!(out.contains("10.20.1.7"), "{out}");
    assert!(out.contains("cnames:    1 hop(s)"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let (code, out) = cli("query", &cfg, &["leaky.blob.core.windows.net", "A"]).await;
    assert_eq!(code, 0, "warn answers: {out}");
    assert!(
        out.contains("warning:   public address(es) 20.60.1.1 for a name in a private zone"),
        "{out}"
    );
    let (code, out) = cli("query", &cfg, &["public.blob.core.windows.net", "A"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("warning"),
        "a public name without a private endpoint: {out}"
    );

    let (code, out) = cli("query", &cfg, &["www.example.org"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no route matches"), "{out}");
}

/// `query`'s exit code and rcode line: 0 for an answer (NOERROR, NXDOMAIN), 1 for
/// SERVFAIL and REFUSED; a failure says what each upstream did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_exits_by_rcode_and_names_each_upstreams_error() {
    use hickory_proto::op::ResponseCode;
    let answering = Fake::answering(|q| match qname_of(q).as_str() {
        "gone.example." => reply_rcode(q, ResponseCode::NXDomain),
        "closed.example." => reply_rcode(q, ResponseCode::Refused),
        _ => reply_a(q, [192, 0, 2, 1], 60),
    })
    .await;
    // A port nobody listens on: the kernel refuses.
    let refused = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "[[route]]\nname = \"dead\"\nzones = [\"dead.example\"]\nupstreams = [\"{refused}\"]\ntimeout = \"1s\"\ntry_timeout = \"300ms\"\n\
             [[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n",
            answering.addr
        ),
    );
    // (name, exit code, what the output says)
    let cases = [
        ("www.example", 0, "rcode:     NOERROR"),
        ("gone.example", 0, "rcode:     NXDOMAIN"),
        ("closed.example", 1, "rcode:     REFUSED"),
        ("x.dead.example", 1, "(SERVFAIL)"),
    ];
    for (name, want, says) in cases {
        let (code, out) = cli("query", &cfg, &[name]).await;
        assert_eq!(code, want, "{name}: {out}");
        assert!(out.contains(says), "{name}: {out}");
    }
    let (_, out) = cli("query", &cfg, &["x.dead.example"]).await;
    assert!(
        out.contains(&format!("tried:     {refused} over udp:")) && out.contains("refused"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_dead_and_a_tcp_refusing_upstream_with_fixes() {
    let good = Fake::answering(reply).await;
    let dead = Fake::blackhole().await;
    let no_tcp = udp_only().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\
             [[route]]\nname = \"cloud\"\nzones = [\"corp.example\"]\nupstreams = [\"{}\", \"{}\"]\ntry_timeout = \"500ms\"\n\
             [[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n",
            good.addr, dead.addr, no_tcp
        ),
    );
    let (code, out) = run(vec!["doctor".into(), "-c".into(), cfg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok   listen 127.0.0.1:0"), "{out}");
    assert!(
        out.contains(&format!(
            "ok   route cloud: upstream {} over udp",
            good.addr
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ok   route cloud: upstream {} over tcp",
            good.addr
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "FAIL route cloud: upstream {} over udp (corp.example. SOA): no answer within 500ms",
            dead.addr
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok   route rest: upstream {no_tcp} over udp")),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL route rest: upstream {no_tcp} over tcp")),
        "{out}"
    );
    assert!(
        out.contains("fix: TCP is needed for truncated replies"),
        "{out}"
    );
    assert!(out.contains("to fix"), "{out}");
    // The dead upstream got the probes; nothing else was asked.
    assert!(dead.count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_configuration() {
    // The checks of cloud routes (timeout, max_qps) are unit tests in src/diagnose.rs:
    // here a route to 168.63.129.16 would send probes off the machine.
    let good = Fake::answering(reply).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"{}\"]\n", good.addr),
    );
    let (code, out) = run(vec!["doctor".into(), "-c".into(), cfg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 to fix"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_explain_show_a_claimed_cname() {
    let onprem = Fake::answering(|q| {
        let mut r = reply(q);
        let target = "acct.privatelink.blob.core.windows.net.";
        r.answers.push(cname_record(&qname_of(q), target, 300));
        r.answers.push(a_record(target, [20, 60, 1, 1], 300));
        r
    })
    .await;
    let azure = Fake::answering(|q| reply_a(q, [10, 20, 1, 8], 30)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "[[route]]\nname = \"azure\"\nzones = [\"privatelink.blob.core.windows.net\"]\nupstreams = [\"{}\"]\nclaim_cnames = true\n\
             [[route]]\nname = \"onprem\"\nzones = [\".\"]\nupstreams = [\"{}\"]\nnxdomain_fallback = \"azure\"\n",
            azure.addr, onprem.addr
        ),
    );
    let (code, out) = cli("query", &cfg, &["acct.blob.core.windows.net"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route:     onprem"), "{out}");
    assert!(
        out.contains(&format!(
            "claimed:   acct.privatelink.blob.core.windows.net. asked through route azure ({})",
            azure.addr
        )),
        "{out}"
    );
    assert!(out.contains("10.20.1.8"), "{out}");
    assert!(!out.contains("20.60.1.1"), "the public tail is cut: {out}");

    let (code, out) = cli("explain", &cfg, &["acct.privatelink.blob.core.windows.net"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("claims     CNAMEs in other routes' answers"),
        "{out}"
    );
    let (_, out) = cli("explain", &cfg, &["www.example.org"]).await;
    assert!(
        out.contains("fallback   an NXDOMAIN from this route is asked again through route azure"),
        "{out}"
    );
}

/// The owner of the loopback TCP socket bound to `local`, from /proc/net/tcp, where
/// each socket is listed with its address (hex, the kernel's byte order) and uid.
fn tcp_socket_owner(local: SocketAddr) -> Option<u32> {
    let std::net::IpAddr::V4(ip) = local.ip() else {
        return None;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        local.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&want.as_str()))
        .and_then(|f| f.get(7)?.parse().ok())
}

/// An upstream that answers UDP from anyone and TCP only from root: the rule some
/// Azure guest-agent versions put in front of 168.63.129.16 (Azure/WALinuxAgent#1673).
/// A connection from another uid is closed unanswered.
async fn tcp_for_root_only() -> SocketAddr {
    let (listener, udp) = loop {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        if let Ok(u) = tokio::net::UdpSocket::bind(l.local_addr().unwrap()).await {
            break (l, u);
        }
    };
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Ok(q) = Message::from_vec(&buf[..n]) {
                let _ = udp.send_to(&reply(&q).to_vec().unwrap(), from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            if tcp_socket_owner(peer) != Some(0) {
                continue; // dropped: closed unanswered
            }
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Ok(raw) = read_framed(&mut stream).await {
                    let Ok(q) = Message::from_vec(&raw) else {
                        return;
                    };
                    let r = reply(&q).to_vec().unwrap();
                    if stream.write_all(&framed(&r)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_tcp_as_the_service_user() {
    if !is_root() {
        eprintln!("skipped: needs root to check as another user");
        return;
    }
    let root_only = tcp_for_root_only().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nname = \"cloud\"\nzones = [\".\"]\nupstreams = [\"{root_only}\"]\ntransport = \"tcp\"\ntry_timeout = \"1s\"\n"
        ),
    );
    // As root, doctor checks TCP as "nobody", as the service would connect: refused.
    let (code, out) = cli("doctor", &cfg, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("ok   route cloud: upstream {root_only} over udp")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "FAIL route cloud: upstream {root_only} over tcp as user nobody (uid 65534)"
        )),
        "{out}"
    );
    assert!(
        out.contains("every query of this route goes over TCP"),
        "{out}"
    );
    assert!(out.contains("WALinuxAgent#1673"), "{out}");
    // Checked as root, the same upstream passes: the user made the difference.
    let (code, out) = cli("doctor", &cfg, &["--as-user", "root"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok   route cloud: upstream {root_only} over tcp (. SOA)"
        )),
        "{out}"
    );
}
