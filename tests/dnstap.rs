//! dnstap as tools we did not write see it: fstrm_capture (fstrm-bin, the reference
//! Frame Streams receiver) takes what zonefwd sends over a Unix socket and over TCP,
//! and dnstap-read (BIND's) decodes the capture. Every message type, every address
//! and port, and every message's bytes are checked against what went over the wire; a
//! collector that dies, comes back, stalls or is moved by a reload never holds up DNS.
mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

// ---- the collector: fstrm_capture ------------------------------------------------

/// Where fstrm_capture listens.
enum Listen {
    Unix(PathBuf),
    Tcp(u16),
}

impl Listen {
    fn unix(dir: &Path, name: &str) -> Listen {
        Listen::Unix(dir.join(name))
    }

    /// A TCP port free a moment ago.
    fn tcp() -> Listen {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        Listen::Tcp(l.local_addr().unwrap().port())
    }

    /// As `[dnstap] socket` names it.
    fn socket(&self) -> String {
        match self {
            Listen::Unix(p) => format!("unix:{}", p.display()),
            Listen::Tcp(port) => format!("tcp:127.0.0.1:{port}"),
        }
    }
}

/// fstrm_capture writing what it receives to `file`.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Started, and listening, on `listen`; `None` where fstrm-bin is not installed.
    async fn start(listen: &Listen, file: PathBuf) -> Option<Capture> {
        let bin = debian_tool("fstrm_capture")?;
        let mut cmd = Command::new(bin);
        cmd.args(["-t", "protobuf:dnstap.Dnstap", "-w"]).arg(&file);
        match listen {
            Listen::Unix(p) => {
                let _ = std::fs::remove_file(p);
                cmd.arg("-u").arg(p)
            }
            Listen::Tcp(port) => cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let capture = Capture { child, file };
        let listening = || match listen {
            Listen::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            Listen::Tcp(port) => ss_listening(*port),
        };
        eventually("fstrm_capture listening", listening).await;
        Some(capture)
    }

    /// SIGINT: it closes its file cleanly. Returns what dnstap-read decodes of it.
    fn stop(mut self) -> Decoded {
        signal(&self.child, "INT");
        self.child.wait().unwrap();
        Decoded::read(&self.file)
    }

    /// SIGKILL: the collector dies.
    fn kill(mut self) {
        signal(&self.child, "KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Whether something listens on TCP `port` of 127.0.0.1, read from the kernel's table
/// rather than by connecting (fstrm_capture would take a probe for a sender).
fn ss_listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let want = format!("0100007F:{port:04X}");
    table.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(&want) && l.split_whitespace().nth(3) == Some("0A")
    })
}

// ---- the decoder: dnstap-read ----------------------------------------------------

/// One message as dnstap-read prints it: `-x` gives a summary line and the message's
/// bytes in hex.
#[derive(Debug, Clone)]
struct Tapped {
    /// CQ, CR, FQ or FR.
    kind: String,
    /// The query's initiator and responder.
    initiator: Option<SocketAddr>,
    responder: SocketAddr,
    /// UDP or TCP.
    protocol: String,
    /// The question, as "name/IN/TYPE".
    question: String,
    bytes: Vec<u8>,
}

/// A capture decoded: the messages, and dnstap-read's YAML of it (identity, version,
/// query_zone).
struct Decoded {
    messages: Vec<Tapped>,
    yaml: String,
    /// The capture file itself: `extra` and `policy` are bytes in it that dnstap-read
    /// does not print.
    raw: Vec<u8>,
}

impl Decoded {
    fn read(file: &Path) -> Decoded {
        let bin = debian_tool("dnstap-read").expect("dnstap-read (bind9-dnsutils)");
        let run = |args: &[&str]| {
            let out = Command::new(bin).args(args).arg(file).output().unwrap();
            assert!(
                out.status.success(),
                "dnstap-read {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let hex = run(&["-x"]);
        let lines: Vec<&str> = hex.lines().collect();
        let messages = lines
            .chunks(2)
            .map(|pair| Tapped::parse(pair[0], pair[1]))
            .collect();
        Decoded {
            messages,
            yaml: run(&["-y"]),
            raw: std::fs::read(file).unwrap(),
        }
    }

    fn of(&self, kind: &str, name: &str) -> Vec<&Tapped> {
        let q = format!("{name}/IN/");
        self.messages
            .iter()
            .filter(|m| m.kind == kind && m.question.starts_with(&q))
            .collect()
    }

    fn contains(&self, bytes: &str) -> bool {
        self.raw.windows(bytes.len()).any(|w| w == bytes.as_bytes())
    }
}

impl Tapped {
    /// "04-Dec-2026 23:41:43.397 CQ 127.0.0.1:54491 -> 127.0.0.1:5391 UDP 50b a.example/IN/A"
    /// (a response has "<-"), then the hex line.
    fn parse(summary: &str, hex: &str) -> Tapped {
        let t: Vec<&str> = summary.split_whitespace().collect();
        assert_eq!(t.len(), 9, "a dnstap-read line: {summary}");
        assert!(t[4] == "->" || t[4] == "<-", "{summary}");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        Tapped {
            kind: t[2].to_string(),
            // "?": a forwarded query sent before its connection was up has no
            // query_address yet.
            initiator: t[3].parse().ok(),
            responder: t[5].parse().unwrap_or_else(|_| panic!("{summary}")),
            protocol: t[6].to_string(),
            question: t[8].to_string(),
            bytes,
        }
    }
}

// ---- clients that keep what went over the wire ------------------------------------

/// One client exchange as the client saw it.
#[derive(Debug, Clone)]
struct Asked {
    client: SocketAddr,
    sent: Vec<u8>,
    received: Vec<u8>,
}

async fn ask_udp(server: SocketAddr, from: Ipv4Addr, name: &str) -> Asked {
    let sock = UdpSocket::bind((from, 0)).await.unwrap();
    let sent = query(name, RecordType::A, Some(1232)).to_vec().unwrap();
    sock.send_to(&sent, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Asked {
        client: sock.local_addr().unwrap(),
        sent,
        received: buf[..n].to_vec(),
    }
}

async fn ask_tcp(server: SocketAddr, name: &str) -> Asked {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let sent = query(name, RecordType::A, Some(1232)).to_vec().unwrap();
    stream.write_all(&framed(&sent)).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut received = vec![0u8; usize::from(len)];
    stream.read_exact(&mut received).await.unwrap();
    Asked {
        client: stream.local_addr().unwrap(),
        sent,
        received,
    }
}

/// `n` queries for `name`, `parallel` at a time, each answered: a burst of cache hits
/// that makes far more frames than the queue holds.
async fn burst(server: SocketAddr, name: &str, n: usize, parallel: usize) {
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            let name = name.to_string();
            tokio::spawn(async move {
                let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
                let msg = query(&name, RecordType::A, None).to_vec().unwrap();
                let mut buf = vec![0u8; 4096];
                for _ in 0..n / parallel {
                    sock.send_to(&msg, server).await.unwrap();
                    tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                        .await
                        .expect("every query of the burst answered")
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

// ---- the upstream: answers it keeps, one reply lost --------------------------------

/// A fake upstream that answers "nx." names NXDOMAIN, ignores the first query for a
/// "lost." name, and A records otherwise, keeping every reply's bytes.
async fn upstream() -> (Fake, Arc<Mutex<Vec<Vec<u8>>>>) {
    let replies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&replies);
    let lost = Mutex::new(HashMap::<String, bool>::new());
    let fake = Fake::start(move |q, _| {
        let name = qname_of(q);
        if name.starts_with("lost.") && lost.lock().unwrap().insert(name, true).is_none() {
            return vec![];
        }
        let reply = if qname_of(q).starts_with("nx.") {
            reply_rcode(q, ResponseCode::NXDomain)
        } else {
            reply_a(q, [192, 0, 2, 7], 60)
        };
        let bytes = reply.to_vec().unwrap();
        kept.lock().unwrap().push(bytes.clone());
        vec![Step::Raw(bytes)]
    })
    .await;
    (fake, replies)
}

fn lab_config(socket: &str, upstream: SocketAddr, extra_server: &str) -> String {
    format!(
        "[server]\nidentity = \"replica-a\"\n{extra_server}\n\
         [acl]\nallow = [\"127.0.0.1/32\"]\n\
         [dnstap]\nsocket = \"{socket}\"\n\
         [[route]]\nname = \"lab\"\nzones = [\"example\"]\nupstreams = [\"{upstream}\"]\ntry_timeout = \"300ms\"\n"
    )
}

// ---- the checks ------------------------------------------------------------------

/// The scripted queries, each kind of answer once: forwarded, cached, NXDOMAIN,
/// retransmitted after a lost reply, over TCP, refused by the ACL.
struct Script {
    udp: Vec<Asked>,
    tcp: Asked,
    refused: Asked,
}

async fn run_script(z: &Zonefwd) -> Script {
    let mut udp = Vec::new();
    for name in [
        "fwd.example.",
        "fwd.example.",
        "nx.example.",
        "lost.example.",
    ] {
        udp.push(ask_udp(z.udp, Ipv4Addr::LOCALHOST, name).await);
    }
    let tcp = ask_tcp(z.tcp, "tcp.example.").await;
    let refused = ask_udp(z.udp, Ipv4Addr::new(127, 0, 0, 3), "acl.example.").await;
    assert_eq!(wire_rcode(&refused.received), 5, "REFUSED outside the ACL");
    Script { udp, tcp, refused }
}

fn wire_rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

/// What each name should have produced: (name, CQ, CR, FQ, FR).
const EXPECTED: &[(&str, usize, usize, usize, usize)] = &[
    ("fwd.example", 2, 2, 1, 1),
    ("nx.example", 1, 1, 1, 1),
    ("lost.example", 1, 1, 2, 1),
    ("tcp.example", 1, 1, 1, 1),
    ("acl.example", 1, 1, 0, 0),
];

fn check_capture(
    d: &Decoded,
    z_udp: SocketAddr,
    z_tcp: SocketAddr,
    s: &Script,
    fake: &Fake,
    replies: &[Vec<u8>],
) {
    for &(name, cq, cr, fq, fr) in EXPECTED {
        let counts = [("CQ", cq), ("CR", cr), ("FQ", fq), ("FR", fr)];
        for (kind, want) in counts {
            assert_eq!(
                d.of(kind, name).len(),
                want,
                "{kind} for {name}: {:#?}",
                d.messages
            );
        }
    }
    // Client messages: the client's address and port, zonefwd's listener, and the
    // bytes each way exactly as they crossed the wire.
    let clients = s.udp.iter().map(|a| (a, z_udp, "UDP"));
    let clients = clients.chain([(&s.tcp, z_tcp, "TCP"), (&s.refused, z_udp, "UDP")]);
    for (asked, server, protocol) in clients {
        let mine: Vec<&Tapped> = d
            .messages
            .iter()
            .filter(|m| m.initiator == Some(asked.client))
            .collect();
        assert_eq!(mine.len(), 2, "CQ and CR of {asked:?}: {:#?}", d.messages);
        for m in &mine {
            assert_eq!(
                (m.responder, m.protocol.as_str()),
                (server, protocol),
                "{m:?}"
            );
        }
        assert_eq!(mine[0].kind, "CQ");
        assert_eq!(mine[0].bytes, asked.sent, "CQ bytes are the query as sent");
        assert_eq!(mine[1].kind, "CR");
        assert_eq!(
            mine[1].bytes, asked.received,
            "CR bytes are the reply as received"
        );
    }
    // Forwarder messages: zonefwd's socket and the upstream's, and the bytes as the
    // upstream received and sent them.
    let seen = fake.seen();
    for m in d.messages.iter().filter(|m| m.kind == "FQ") {
        let at_upstream = seen.iter().find(|s| s.raw == m.bytes);
        let at_upstream =
            at_upstream.unwrap_or_else(|| panic!("FQ bytes the upstream never got: {m:?}"));
        assert_eq!(
            m.initiator,
            Some(at_upstream.from),
            "FQ from zonefwd's own socket"
        );
        assert_eq!((m.responder, m.protocol.as_str()), (fake.addr, "UDP"));
    }
    for m in d.messages.iter().filter(|m| m.kind == "FR") {
        assert!(
            replies.contains(&m.bytes),
            "FR bytes the upstream never sent: {m:?}"
        );
        assert_eq!(m.responder, fake.addr);
    }
    // identity, version and the route's zone, as the decoder reads them; the route
    // and the answer kinds, and the retransmission, in `extra`.
    for field in [
        "identity: replica-a",
        "version: zonefwd ",
        "query_zone: example.",
    ] {
        assert!(d.yaml.contains(field), "{field} in:\n{}", d.yaml);
    }
    for extra in [
        "route=lab answer=upstream",
        "route=lab answer=cache",
        "route=- answer=refused-acl",
        "route=lab retransmission=timeout",
    ] {
        assert!(d.contains(extra), "extra {extra:?} in the capture");
    }
}

/// The scripted queries through each transport, captured and decoded by tools we did
/// not write.
#[tokio::test]
async fn every_message_type_reaches_fstrm_capture_and_decodes_with_dnstap_read() {
    let dir = tempfile::tempdir().unwrap();
    for listen in [Listen::unix(dir.path(), "dnstap.sock"), Listen::tcp()] {
        let file = dir.path().join("capture.fstrm");
        let Some(capture) = Capture::start(&listen, file).await else {
            return;
        };
        let (fake, replies) = upstream().await;
        let z = Zonefwd::start(&lab_config(&listen.socket(), fake.addr, "")).await;
        let script = run_script(&z).await;
        let (udp, tcp) = (z.udp, z.tcp);
        // Stopping flushes the queue and ends the stream with STOP.
        z.stop().await.unwrap();
        let decoded = capture.stop();
        let replies = replies.lock().unwrap().clone();
        check_capture(&decoded, udp, tcp, &script, &fake, &replies);
    }
}

async fn dnstap_metric(z: &Zonefwd, name: &str) -> u64 {
    metric(&scrape(z).await, name)
}

/// A collector killed mid-run: DNS goes on, frames past the queue are dropped and
/// counted, and the restarted collector gets frames again.
#[tokio::test]
async fn a_collector_restart_costs_frames_not_answers() {
    let dir = tempfile::tempdir().unwrap();
    let listen = Listen::unix(dir.path(), "dnstap.sock");
    let Some(first) = Capture::start(&listen, dir.path().join("first.fstrm")).await else {
        return;
    };
    let fake = Fake::answering_a().await;
    // No client rate limit: the burst is one client.
    let server = "metrics = \"127.0.0.1:0\"\nclient_qps = 0";
    let z = Zonefwd::start(&lab_config(&listen.socket(), fake.addr, server)).await;
    ask_udp(z.udp, Ipv4Addr::LOCALHOST, "before.example.").await;
    let connected = "zonefwd_dnstap_connected";
    wait_metric(&z, connected, 1).await;

    first.kill();
    wait_metric(&z, connected, 0).await;
    // 8,000 cache hits make 16,000 frames, more than the queue's 10,000.
    burst(z.udp, "burst.example.", 8000, 8).await;
    let dropped = "zonefwd_dnstap_frames_total{result=\"dropped\"}";
    assert!(dnstap_metric(&z, dropped).await > 0, "drops counted");

    let second = Capture::start(&listen, dir.path().join("second.fstrm"))
        .await
        .unwrap();
    wait_metric(&z, connected, 1).await;
    let after = ask_udp(z.udp, Ipv4Addr::LOCALHOST, "after.example.").await;
    z.stop().await.unwrap();
    let decoded = second.stop();
    let cq = decoded.of("CQ", "after.example");
    assert_eq!(cq.len(), 1, "frames flow again after the restart");
    assert_eq!(cq[0].bytes, after.sent);
}

/// Waits (generously: the reconnect backoff grows to seconds) for a metric's value.
async fn wait_metric(z: &Zonefwd, name: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if dnstap_metric(z, name).await == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector that takes the handshake and then never reads: the queue fills, frames
/// are dropped and counted, and every query is still answered.
#[tokio::test]
async fn a_stalled_collector_never_holds_up_a_query() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stalled.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let held = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // READY: escape, length, type 4, then the content type field.
        let mut ready = [0u8; 12];
        conn.read_exact(&mut ready).await.unwrap();
        assert_eq!(&ready[8..12], &[0, 0, 0, 4], "READY first");
        let len = u32::from_be_bytes(ready[4..8].try_into().unwrap()) as usize;
        let mut fields = vec![0u8; len - 4];
        conn.read_exact(&mut fields).await.unwrap();
        assert!(fields.ends_with(b"protobuf:dnstap.Dnstap"));
        // ACCEPT with the same field, and then not another read.
        let mut accept = vec![0, 0, 0, 0];
        accept.extend_from_slice(&(len as u32).to_be_bytes());
        accept.extend_from_slice(&[0, 0, 0, 1]);
        accept.extend_from_slice(&fields);
        conn.write_all(&accept).await.unwrap();
        conn
    });
    let fake = Fake::answering_a().await;
    let server = "metrics = \"127.0.0.1:0\"\nclient_qps = 0";
    let socket = format!("unix:{}", path.display());
    let z = Zonefwd::start(&lab_config(&socket, fake.addr, server)).await;
    wait_metric(&z, "zonefwd_dnstap_connected", 1).await;
    // Well under a second here; a query path that waited for room in the queue, even
    // a few milliseconds a frame, would take half a minute.
    let burst = burst(z.udp, "stall.example.", 8000, 8);
    tokio::time::timeout(Duration::from_secs(15), burst)
        .await
        .expect("the burst is not held up by the stalled collector");
    let dropped = "zonefwd_dnstap_frames_total{result=\"dropped\"}";
    assert!(dnstap_metric(&z, dropped).await > 0, "drops counted");
    z.stop().await.unwrap();
    drop(held);
}

/// A reload that names another collector moves the stream there; the first one's
/// stream ends cleanly (STOP), with what was sent before.
#[tokio::test]
async fn a_reload_moves_dnstap_to_another_collector() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (Listen::unix(dir.path(), "one.sock"), Listen::tcp());
    let Some(first) = Capture::start(&one, dir.path().join("one.fstrm")).await else {
        return;
    };
    let second = Capture::start(&two, dir.path().join("two.fstrm"))
        .await
        .unwrap();
    let fake = Fake::answering_a().await;
    let metrics = "metrics = \"127.0.0.1:0\"";
    let z = Zonefwd::start(&lab_config(&one.socket(), fake.addr, metrics)).await;
    ask_udp(z.udp, Ipv4Addr::LOCALHOST, "one.example.").await;
    z.reload(&lab_config(&two.socket(), fake.addr, metrics));
    wait_metric(&z, "zonefwd_config_reloads_total{result=\"applied\"}", 1).await;
    ask_udp(z.udp, Ipv4Addr::LOCALHOST, "two.example.").await;
    z.stop().await.unwrap();
    let (a, b) = (first.stop(), second.stop());
    assert_eq!(a.of("CQ", "one.example").len(), 1);
    assert_eq!(a.of("CQ", "two.example").len(), 0);
    assert_eq!(b.of("CQ", "two.example").len(), 1);
    assert_eq!(b.of("CQ", "one.example").len(), 0);
}

/// `zonefwd doctor` says whether the collector takes a dnstap stream, and why not.
#[tokio::test]
async fn doctor_checks_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let listen = Listen::unix(dir.path(), "dnstap.sock");
    let file = dir.path().join("z.toml");
    // The upstream is never asked here: doctor's own probes of it fail, which is not
    // what this test reads.
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[dnstap]\nsocket = \"{}\"\n{}",
        listen.socket(),
        one_route(
            &["127.0.0.1:9".parse().unwrap()],
            "try_timeout = \"100ms\"\ntimeout = \"200ms\""
        )
    );
    std::fs::write(&file, toml).unwrap();
    let doctor = || {
        let (_, out, _) = zonefwd_cli(&["doctor", "-c", file.to_str().unwrap()]);
        out.lines()
            .filter(|l| l.contains("dnstap"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let absent = doctor();
    assert!(
        absent.starts_with("FAIL dnstap: the collector at unix:"),
        "{absent}"
    );
    let Some(capture) = Capture::start(&listen, dir.path().join("c.fstrm")).await else {
        return;
    };
    let present = doctor();
    assert!(
        present.starts_with("ok   dnstap: the collector at unix:"),
        "{present}"
    );
    assert!(present.contains("accepts a dnstap stream"), "{present}");
    let decoded = capture.stop();
    assert!(decoded.messages.is_empty(), "doctor's stream is empty");
}

/// What each transport is called in the capture: a DoT client's query and answer
/// DOT, a DoH client's DOH, and the tries to a `tls://` upstream DOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_transports_are_marked_dot_and_doh() {
    use common::certs::{Leaf, Pki};
    let dir = tempfile::tempdir().unwrap();
    let listen = Listen::unix(dir.path(), "dnstap.sock");
    let Some(capture) = Capture::start(&listen, dir.path().join("capture.fstrm")).await else {
        return;
    };
    let pki = Pki::new();
    let pair = pki.leaf("dns", &["dns.test"], Leaf::Good);
    let tls_server = format!(
        "tls_listen = [\"127.0.0.1:0\"]\nhttps_listen = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        pair.cert.display(),
        pair.key.display()
    );
    let (fake, _) = upstream().await;
    let resolver = Zonefwd::start(&format!(
        "[server]\n{tls_server}\n{}",
        one_route(&[fake.addr], "")
    ))
    .await;
    let z = Zonefwd::start(&format!(
        "[server]\n{tls_server}\n[dnstap]\nsocket = \"{}\"\n[[route]]\nname = \"lab\"\nzones = [\".\"]\nupstreams = [\"tls://{}#dns.test\"]\ntls_ca = \"{}\"\n",
        listen.socket(),
        resolver.tls.unwrap(),
        pki.ca_pem.display()
    ))
    .await;
    let mut conn = dot::connect(z.tls.unwrap(), &pki.ca_pem, "dns.test")
        .await
        .unwrap();
    dot::send_all(&mut conn, &[query("dot.example.", RecordType::A, None)]).await;
    assert_eq!(
        dot::read(&mut conn).await.unwrap().metadata.response_code,
        ResponseCode::NoError
    );
    let body = dir.path().join("q.bin");
    std::fs::write(
        &body,
        query("doh.example.", RecordType::A, None).to_vec().unwrap(),
    )
    .unwrap();
    let (https, ca) = (z.https.unwrap(), pki.ca_pem.clone());
    let curl = tokio::task::spawn_blocking(move || {
        Command::new(debian_tool("curl")?)
            .args([
                "-s",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .args(["--resolve", &format!("dns.test:{}:127.0.0.1", https.port())])
            .args([
                "-H",
                "content-type: application/dns-message",
                "--data-binary",
            ])
            .arg(format!("@{}", body.display()))
            .arg(format!("https://dns.test:{}/dns-query", https.port()))
            .output()
            .ok()
    })
    .await
    .unwrap();
    if let Some(out) = curl {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    z.stop().await.unwrap();
    let decoded = capture.stop();
    // BIND 9.18's dnstap-read prints any protocol but TCP as UDP, and dnstap-ldns
    // (0.2.1) cannot print DOT or DOH at all: both predate them in dnstap.proto. So the
    // field is read here, beside dnstap-read's reading of the rest.
    let protocols = socket_protocols(&decoded.raw);
    let of = |kind: i32, name: &str| -> Vec<i32> {
        protocols
            .iter()
            .filter(|(k, qname, _)| *k == kind && qname == name)
            .map(|(_, _, p)| *p)
            .collect()
    };
    let (dot, doh) = (3, 4); // SocketProtocol
    let (cq, cr, fq, fr) = (5, 6, 7, 8); // Message.Type
    assert_eq!(of(cq, "dot.example."), [dot]);
    assert_eq!(of(cr, "dot.example."), [dot]);
    assert_eq!(
        of(fq, "dot.example."),
        [dot],
        "the try to the tls:// upstream"
    );
    assert_eq!(of(fr, "dot.example."), [dot]);
    assert_eq!(of(cq, "doh.example."), [doh]);
    assert_eq!(of(cr, "doh.example."), [doh]);
    assert_eq!(
        decoded.of("CQ", "dot.example").len(),
        1,
        "dnstap-read reads the rest"
    );
}

/// Each message of a Frame Streams capture (RFC-less, fstrm's PROTOCOL): its type,
/// its question's name, and its `socket_protocol`, read with a decoder of just those
/// dnstap.proto fields.
fn socket_protocols(capture: &[u8]) -> Vec<(i32, String, i32)> {
    #[derive(prost::Message)]
    struct Dnstap {
        #[prost(message, optional, tag = "14")]
        message: Option<Message>,
    }
    #[derive(prost::Message)]
    struct Message {
        #[prost(int32, tag = "1")]
        kind: i32,
        #[prost(int32, tag = "3")]
        socket_protocol: i32,
        #[prost(bytes = "vec", tag = "10")]
        query_message: Vec<u8>,
        #[prost(bytes = "vec", tag = "14")]
        response_message: Vec<u8>,
    }
    let mut out = Vec::new();
    let mut at = 0;
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    while at + 4 <= capture.len() {
        let len = be32(capture, at);
        at += 4;
        if len == 0 {
            // A control frame: its own length, then its body.
            let control = be32(capture, at);
            at += 4 + control;
            continue;
        }
        let frame: Dnstap = prost::Message::decode(&capture[at..at + len]).expect("a dnstap frame");
        at += len;
        let m = frame.message.expect("a message");
        let dns = if m.query_message.is_empty() {
            &m.response_message
        } else {
            &m.query_message
        };
        let name = hickory_proto::op::Message::from_vec(dns)
            .map(|d| qname_of(&d))
            .unwrap_or_default();
        out.push((m.kind, name, m.socket_protocol));
    }
    out
}
