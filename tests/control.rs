//! The control socket (`[server] control`) and its protocol, end to end over a real
//! Unix socket against the in-process server: the day-2 NXDOMAIN flush, the other
//! flushes, `cache`, `status`, `reload` with a located error, an upstream taken out by
//! hand (and kept across a reload), and the bad inputs: malformed JSON, unknown
//! commands, a line over 64 KiB, a silent client, a stale socket file, a peer that
//! is not permitted. `zonefwd ctl` itself is run as a command in tests/cli.rs.
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A server with a control socket in `dir`, routes from `conf`.
async fn start(dir: &tempfile::TempDir, conf: Conf) -> (Zonefwd, PathBuf) {
    let socket = dir.path().join("control.sock");
    let conf = conf.server(&format!("control = \"{}\"", socket.display()));
    (Zonefwd::start(&conf.toml()).await, socket)
}

/// An upstream answering NXDOMAIN until `exists` is set, then an A record: a private
/// endpoint created after a client asked.
async fn endpoint_created_later() -> (Fake, Arc<AtomicBool>) {
    let exists = Arc::new(AtomicBool::new(false));
    let e = Arc::clone(&exists);
    let fake = Fake::start(move |q, _| {
        let reply = if e.load(Ordering::SeqCst) {
            reply_a(q, [10, 20, 0, 7], 300)
        } else {
            let mut r = reply_rcode(q, ResponseCode::NXDomain);
            r.authorities
                .push(soa_record("blob.core.windows.net.", 300, 300));
            r
        };
        vec![Step::Reply(reply)]
    })
    .await;
    (fake, exists)
}

fn rcode(r: &Message) -> ResponseCode {
    r.metadata.response_code
}

#[tokio::test]
async fn a_cached_nxdomain_is_flushed_for_its_zone_and_the_next_query_goes_upstream() {
    let (azure, exists) = endpoint_created_later().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = Conf::new().route("azure", &["blob.core.windows.net."], &[azure.addr], "");
    let (z, socket) = start(&dir, conf).await;
    let name = "acct.privatelink.blob.core.windows.net.";
    assert_eq!(rcode(&ask_a(z.udp, name).await), ResponseCode::NXDomain);
    exists.store(true, Ordering::SeqCst);
    assert_eq!(
        rcode(&ask_a(z.udp, name).await),
        ResponseCode::NXDomain,
        "from the cache"
    );
    assert_eq!(asked(&azure, name), 1);
    let cached = ctl(&socket, json!({"command": "cache", "name": name})).await;
    assert_eq!(cached["entries"][0]["rcode"], "NXDOMAIN", "{cached}");

    let out = ctl(
        &socket,
        json!({"command": "flush", "negative": true, "zone": "blob.core.windows.net"}),
    )
    .await;
    assert_eq!(out, json!({"ok": true, "flushed": 1}));
    let r = ask_a(z.udp, name).await;
    assert_eq!(
        (rcode(&r), r.answers.len()),
        (ResponseCode::NoError, 1),
        "asked upstream again"
    );
    assert_eq!(asked(&azure, name), 2);
    z.stop().await.unwrap();
}

/// (request, entries it flushes of: a.example. A, a.example. AAAA (NODATA),
/// b.example. A, nx.other.test. A (NXDOMAIN), c.other.test. A)
const FLUSHES: &[(&str, usize)] = &[
    (r#"{"command":"flush","name":"a.example.","type":"A"}"#, 1),
    (r#"{"command":"flush","name":"A.Example."}"#, 2),
    (r#"{"command":"flush","zone":"example."}"#, 3),
    (r#"{"command":"flush","zone":"other.test."}"#, 2),
    (r#"{"command":"flush","negative":true}"#, 2),
    (
        r#"{"command":"flush","negative":true,"zone":"example."}"#,
        1,
    ),
    (r#"{"command":"flush","all":true}"#, 5),
];

#[tokio::test]
async fn each_kind_of_flush_removes_what_it_names() {
    let up = Fake::answering(|q| {
        // Negative answers carry their zone's SOA, or they would not be cached
        // (RFC 2308 section 5).
        if qname_of(q).starts_with("nx.") {
            let mut r = reply_rcode(q, ResponseCode::NXDomain);
            r.authorities.push(soa_record("other.test.", 300, 300));
            r
        } else if q.queries[0].query_type() == hickory_proto::rr::RecordType::AAAA {
            let mut r = reply(q);
            r.authorities.push(soa_record("example.", 300, 300));
            r
        } else {
            reply_a(q, [192, 0, 2, 1], 300)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (z, socket) = start(&dir, Conf::new().route("default", &["."], &[up.addr], "")).await;
    for (request, flushed) in FLUSHES {
        ctl(&socket, json!({"command": "flush", "all": true})).await;
        for (name, qtype) in [
            ("a.example.", hickory_proto::rr::RecordType::A),
            ("a.example.", hickory_proto::rr::RecordType::AAAA),
            ("b.example.", hickory_proto::rr::RecordType::A),
            ("nx.other.test.", hickory_proto::rr::RecordType::A),
            ("c.other.test.", hickory_proto::rr::RecordType::A),
        ] {
            exchange(z.udp, &query(name, qtype, None)).await;
        }
        let out = ctl(&socket, serde_json::from_str(request).unwrap()).await;
        assert_eq!(out["flushed"], json!(flushed), "{request}: {out}");
    }
    // NODATA (the AAAA, no answers) counts as negative too.
    ctl(&socket, json!({"command": "flush", "all": true})).await;
    exchange(
        z.udp,
        &query("a.example.", hickory_proto::rr::RecordType::AAAA, None),
    )
    .await;
    let out = ctl(&socket, json!({"command": "flush", "negative": true})).await;
    assert_eq!(out["flushed"], json!(1), "{out}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn status_reports_each_upstream_and_an_upstream_taken_out_by_hand_stays_out_across_a_reload()
{
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 60)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 60)).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = Conf::new().server("metrics = \"127.0.0.1:0\"").route(
        "default",
        &["."],
        &[a.addr, b.addr],
        "",
    );
    let (z, socket) = start(&dir, conf.clone()).await;
    ask_a(z.udp, "one.example.").await;
    let status = ctl(&socket, json!({"command": "status"})).await;
    let first = &status["routes"][0]["upstreams"][0];
    assert_eq!(first["address"], a.addr.to_string(), "{status}");
    assert_eq!(
        (first["up"].clone(), first["queries"].clone()),
        (json!(true), json!(1))
    );
    assert!(
        first["srtt_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{status}"
    );
    assert_eq!(status["cache"]["entries"], json!(1));

    let out = ctl(&socket, json!({"command": "upstream", "route": "default", "upstream": a.addr.to_string(), "state": "down"})).await;
    assert_eq!(out["up"], json!(false), "{out}");
    ask_a(z.udp, "two.example.").await;
    assert_eq!(asked(&a, "two.example."), 0, "out of rotation");
    assert_eq!(asked(&b, "two.example."), 1);
    // A reload that keeps the upstream keeps the mark.
    z.reload(&conf.with_other_acl().toml());
    tokio::time::sleep(Duration::from_millis(100)).await;
    ask_a(z.udp, "three.example.").await;
    assert_eq!(asked(&a, "three.example."), 0, "still out after the reload");
    // Planned work, not a failure: admin_down, and up stays 1 so that no alert on
    // zonefwd_upstream_up pages for it.
    let body = scrape(&z).await;
    let labels = format!("{{route=\"default\",upstream=\"{}\"}}", a.addr);
    assert_eq!(
        metric(&body, &format!("zonefwd_upstream_admin_down{labels}")),
        1
    );
    assert_eq!(metric(&body, &format!("zonefwd_upstream_up{labels}")), 1);
    let status = ctl(&socket, json!({"command": "status"})).await;
    assert_eq!(
        status["routes"][0]["upstreams"][0]["down_by_hand"],
        json!(true)
    );
    assert_eq!(
        status["routes"][0]["upstreams"][0]["state"],
        json!("down_by_hand")
    );
    ctl(&socket, json!({"command": "upstream", "route": "default", "upstream": a.addr.to_string(), "state": "up"})).await;
    ask_a(z.udp, "four.example.").await;
    assert_eq!(asked(&a, "four.example."), 1, "back in rotation");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn reload_through_the_socket_returns_the_located_error_and_keeps_the_running_configuration() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let file = dir.path().join("z.toml");
    let valid = Conf::new()
        .server(&format!("control = \"{}\"", socket.display()))
        .route("default", &["."], &[up.addr], "");
    // The configuration in force comes from the file, as in the binary.
    std::fs::write(
        &file,
        valid
            .clone()
            .server("listen = [\"127.0.0.1:0\"]")
            .server("loop_detection = false")
            .toml(),
    )
    .unwrap();
    let z =
        Zonefwd::start_config(zonefwd::Config::load(&file, &zonefwd::LoadEnv::default()).unwrap())
            .await;
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[[route]]", "[[route]]\ntimeout = \"5 parsecs\"");
    std::fs::write(&file, text).unwrap();
    let out = ctl(&socket, json!({"command": "reload"})).await;
    assert_eq!(out["ok"], json!(false));
    let e = out["error"].as_str().unwrap();
    assert!(
        e.starts_with(&format!("{}:", file.display())) && e.contains("route[0].timeout"),
        "{e}"
    );
    assert_eq!(
        rcode(&ask_a(z.udp, "still.example.").await),
        ResponseCode::NoError,
        "serving on"
    );
    let status = ctl(&socket, json!({"command": "status"})).await;
    assert_eq!(status["last_reload_successful"], json!(false), "{status}");
    std::fs::write(
        &file,
        valid
            .clone()
            .server("listen = [\"127.0.0.1:0\"]")
            .server("loop_detection = false")
            .toml(),
    )
    .unwrap();
    let out = ctl(&socket, json!({"command": "reload"})).await;
    assert_eq!(out["ok"], json!(true), "{out}");
    assert_eq!(out["restart_pending"], json!([]), "{out}");
    // A restart-only key changed: applied for the rest, and the answer says so.
    std::fs::write(
        &file,
        valid
            .server("listen = [\"127.0.0.1:0\", \"127.0.0.2:0\"]")
            .server("loop_detection = false")
            .toml(),
    )
    .unwrap();
    let out = ctl(&socket, json!({"command": "reload"})).await;
    assert_eq!(out["restart_pending"], json!(["server.listen"]), "{out}");
    let status = ctl(&socket, json!({"command": "status"})).await;
    assert_eq!(
        status["restart_pending"],
        json!(["server.listen"]),
        "{status}"
    );
    assert_eq!(status["last_reload_successful"], json!(true), "{status}");
    z.stop().await.unwrap();
}

/// An upstream neither asked nor probed is `unknown`, not `up`.
#[tokio::test]
async fn an_upstream_never_asked_is_unknown() {
    let a = Fake::answering_a().await;
    let b = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = Conf::new().route("default", &["."], &[a.addr, b.addr], "");
    let (z, socket) = start(&dir, conf).await;
    ask_a(z.udp, "one.example.").await;
    let status = ctl(&socket, json!({"command": "status"})).await;
    let states: Vec<&Value> = status["routes"][0]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["state"])
        .collect();
    assert_eq!(states, [&json!("up"), &json!("unknown")], "{status}");
    z.stop().await.unwrap();
}

/// The last upstream in rotation is not taken out by a slip: refused with what would
/// happen, unless forced; forced, the route answers SERVFAIL (or stale) and sends
/// nothing to it.
#[tokio::test]
async fn taking_out_a_routes_last_upstream_needs_force() {
    let only = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = Conf::new().route("cloud", &["."], &[only.addr], "cache = false");
    let (z, socket) = start(&dir, conf).await;
    let down = json!({"command": "upstream", "route": "cloud", "upstream": only.addr.to_string(), "state": "down"});
    let out = ctl(&socket, down.clone()).await;
    assert_eq!(out["ok"], json!(false), "{out}");
    let e = out["error"].as_str().unwrap();
    assert!(
        e.contains("last upstream in rotation") && e.contains("SERVFAIL") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(
        rcode(&ask_a(z.udp, "one.example.").await),
        ResponseCode::NoError
    );
    assert_eq!(asked(&only, "one.example."), 1, "still in rotation");

    let mut forced = down;
    forced["force"] = json!(true);
    let out = ctl(&socket, forced).await;
    assert_eq!(out["ok"], json!(true), "{out}");
    assert_eq!(
        rcode(&ask_a(z.udp, "two.example.").await),
        ResponseCode::ServFail
    );
    assert_eq!(asked(&only, "two.example."), 0, "nothing sent to it");
    z.stop().await.unwrap();
}

/// Drain: /readyz says 503 so the load balancer moves clients away, every query that
/// still arrives is answered, and undrain takes it back.
#[tokio::test]
async fn drain_makes_the_replica_unready_and_keeps_answering() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let conf =
        Conf::new()
            .server("metrics = \"127.0.0.1:0\"")
            .route("default", &["."], &[up.addr], "");
    let (z, socket) = start(&dir, conf).await;
    let m = z.metrics.unwrap();
    assert_eq!(http_get(m, "/readyz").await.0, 200);
    assert_eq!(
        ctl(&socket, json!({"command": "drain"})).await["draining"],
        json!(true)
    );
    let (status, body) = http_get(m, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(
        rcode(&ask_a(z.udp, "during.example.").await),
        ResponseCode::NoError
    );
    let status = ctl(&socket, json!({"command": "status"})).await;
    assert_eq!(
        (status["draining"].clone(), status["ready"].clone()),
        (json!(true), json!(false)),
        "{status}"
    );
    ctl(&socket, json!({"command": "undrain"})).await;
    assert_eq!(http_get(m, "/readyz").await.0, 200);
    z.stop().await.unwrap();
}

/// (what is sent, what the error says)
const BAD: &[(&str, &str)] = &[
    ("not json\n", "bad request"),
    ("{\"command\":\"selfdestruct\"}\n", "bad request: unknown variant `selfdestruct`"),
    ("{\"command\":\"flush\"}\n", "flush takes one of"),
    ("{\"command\":\"flush\",\"name\":\"x..\"}\n", "x.."),
    ("{\"command\":\"upstream\",\"route\":\"default\",\"upstream\":\"nowhere\",\"state\":\"down\"}\n", "not an address"),
];

#[tokio::test]
async fn bad_requests_get_an_error_object_and_serving_goes_on() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let (z, socket) = start(&dir, Conf::new().route("default", &["."], &[up.addr], "")).await;
    for (sent, says) in BAD {
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(sent.as_bytes()).await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        let out: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(out["ok"], json!(false), "{sent}");
        assert!(
            out["error"].as_str().unwrap().contains(says),
            "{sent}: {out}"
        );
    }
    // A line over 64 KiB: an error, then the connection is closed.
    let mut s = UnixStream::connect(&socket).await.unwrap();
    let _ = s.write_all(&vec![b'x'; 70 * 1024]).await;
    let mut rd = BufReader::new(s);
    let mut line = String::new();
    rd.read_line(&mut line).await.unwrap();
    assert!(line.contains("over 64 KiB"), "{line}");
    line.clear();
    assert_eq!(rd.read_line(&mut line).await.unwrap(), 0, "closed");
    // A client that sends nothing is let go after 5 s; DNS is answered meanwhile.
    let silent = UnixStream::connect(&socket).await.unwrap();
    assert_eq!(
        rcode(&ask_a(z.udp, "during.example.").await),
        ResponseCode::NoError
    );
    let mut rd = BufReader::new(silent);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), rd.read_line(&mut line)).await;
    assert!(read.is_ok() && line.contains("idle"), "{line}");
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_another_file_is_not() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // left behind
    let (z, socket) = start(&dir, Conf::new().route("default", &["."], &[up.addr], "")).await;
    assert_eq!(
        ctl(&socket, json!({"command": "status"})).await["ok"],
        json!(true)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    z.stop().await.unwrap();

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "keep me").unwrap();
    let conf = Conf::new()
        .server(&format!("control = \"{}\"", plain.display()))
        .route("default", &["."], &[up.addr], "")
        .build();
    let err = zonefwd::Listeners::for_server(&conf.server)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
}

#[tokio::test]
async fn a_peer_that_is_not_root_the_owner_or_the_group_is_refused_and_counted() {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (true, Some(setpriv)) = (is_root(), setpriv) else {
        eprintln!("skipped: needs root and setpriv to connect as another uid");
        return;
    };
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let conf =
        Conf::new()
            .server("metrics = \"127.0.0.1:0\"")
            .route("default", &["."], &[up.addr], "");
    let (z, socket) = start(&dir, conf).await;
    // Let the kernel admit uid 65534, so the peer-credential check has to refuse it.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let socket_arg = socket.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_zonefwd"),
                "ctl",
                "--socket",
                &socket_arg,
                "status",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    assert_eq!(
        metric(&scrape(&z).await, "zonefwd_control_refused_total"),
        1
    );
    assert_eq!(
        ctl(&socket, json!({"command": "status"})).await["ok"],
        json!(true),
        "root still may"
    );
    z.stop().await.unwrap();
}
