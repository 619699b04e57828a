//! Test harness: zonefwd in-process on loopback port 0, fake upstreams on loopback that
//! answer per test and record what they receive, and DNS clients from hickory-net.
//! Nothing here sends a packet anywhere but 127.0.0.1.
#![allow(dead_code)]

pub mod certs;
pub mod dot;
pub mod fault_proxy;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zonefwd::{Config, Listeners, LoadEnv};

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ---- zonefwd ------------------------------------------------------------------

pub struct Zonefwd {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The metrics endpoint, when the config asked for one.
    pub metrics: Option<SocketAddr>,
    /// The first DoT and DoH listeners, when the config has them.
    pub tls: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    reloads: tokio::sync::mpsc::UnboundedSender<zonefwd::ReadFile>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Parses `toml` as a config, with two defaults of its own in `[server]`, each taken
/// only when the test does not set that key: `listen` on 127.0.0.1:0, and
/// `loop_detection = false`, so the fake upstreams see only the queries the test makes
/// (tests/loops.rs turns it on).
pub fn config(toml: &str) -> Config {
    let mut doc: toml::Table = toml.parse().unwrap_or_else(|e| panic!("test toml: {e}"));
    let server = doc
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[server] is a table");
    server
        .entry("listen")
        .or_insert_with(|| toml::Value::Array(vec!["127.0.0.1:0".into()]));
    server
        .entry("loop_detection")
        .or_insert(toml::Value::Boolean(false));
    let text = toml::to_string(&doc).expect("a table serializes");
    Config::parse(&text, "test.toml", &LoadEnv::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// A test configuration, built from its parts: `[server]` keys, routes and other
/// tables, in TOML. `config` adds the listen and loop-detection defaults.
#[derive(Default, Clone)]
pub struct Conf {
    server: Vec<String>,
    tables: Vec<String>,
}

impl Conf {
    pub fn new() -> Conf {
        Conf::default()
    }

    /// One `[server]` line, `key = value`.
    pub fn server(mut self, line: &str) -> Conf {
        self.server.push(line.to_string());
        self
    }

    /// `tls_cert` and `tls_key`: the DoT and DoH listeners present `pair`.
    pub fn certificate(self, pair: &certs::Pair) -> Conf {
        self.server(&format!("tls_cert = \"{}\"", pair.cert.display()))
            .server(&format!("tls_key = \"{}\"", pair.key.display()))
    }

    /// A route named `name` for `zones` to `upstreams`, with `extra` route keys.
    pub fn route(
        mut self,
        name: &str,
        zones: &[&str],
        upstreams: &[SocketAddr],
        extra: &str,
    ) -> Conf {
        let zones: Vec<String> = zones.iter().map(|z| format!("\"{z}\"")).collect();
        let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        self.tables.push(format!(
            "[[route]]\nname = \"{name}\"\nzones = [{}]\nupstreams = [{}]\n{extra}\n",
            zones.join(", "),
            ups.join(", ")
        ));
        self
    }

    /// Any other table (`[acl]`, `[cache]`), as TOML.
    pub fn table(mut self, toml: &str) -> Conf {
        self.tables.push(format!("{toml}\n"));
        self
    }

    /// The same configuration with only its ACL changed (to loopback): a reload that
    /// leaves every route and upstream as it was.
    pub fn with_other_acl(&self) -> Conf {
        self.clone().table("[acl]\nallow = [\"127.0.0.0/8\"]")
    }

    pub fn toml(&self) -> String {
        let mut out = String::from("[server]\n");
        for line in &self.server {
            out.push_str(line);
            out.push('\n');
        }
        for t in &self.tables {
            out.push_str(t);
        }
        out
    }

    pub fn build(&self) -> Config {
        config(&self.toml())
    }
}

impl Zonefwd {
    pub async fn start(toml: &str) -> Zonefwd {
        Zonefwd::start_config(config(toml)).await
    }

    /// `[server]` settings (lines of TOML) and one "." route to `upstream`.
    pub async fn start_server(server: &str, upstream: SocketAddr) -> Zonefwd {
        Zonefwd::start(&format!(
            "[server]\n{server}\n{}",
            one_route(&[upstream], "")
        ))
        .await
    }

    pub async fn start_config(config: Config) -> Zonefwd {
        Zonefwd::start_with_clock(config, Arc::new(zonefwd::SystemClock)).await
    }

    /// With a clock the test moves: TTLs, serve-stale windows and budgets follow it.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn zonefwd::Clock>) -> Zonefwd {
        let options = zonefwd::RunOptions {
            clock,
            ..zonefwd::RunOptions::default()
        };
        Zonefwd::start_with(config, options).await
    }

    /// With run options of the test's own (a clock, how often the certificate files
    /// are read again); reloads come from `reload`.
    pub async fn start_with(config: Config, options: zonefwd::RunOptions) -> Zonefwd {
        let listeners = Listeners::for_server(&config.server).expect("bind");
        let (udp, tcp) = listeners.local_addrs()[0];
        let metrics = listeners.metrics_addr();
        let (tls, https) = listeners.encrypted_addrs();
        let (tx, rx) = oneshot::channel();
        let (reloads, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(zonefwd::run_with(
            config,
            listeners,
            async {
                let _ = rx.await;
            },
            zonefwd::RunOptions {
                reloads: Some(reload_rx),
                ..options
            },
        ));
        Zonefwd {
            udp,
            tcp,
            metrics,
            tls: tls.first().copied(),
            https: https.first().copied(),
            reloads,
            stop: Some(tx),
            task,
        }
    }

    /// Hands the server a new configuration, as SIGHUP does after validating the file.
    pub fn reload(&self, toml: &str) {
        self.reload_config(config(toml));
    }

    /// `reload` of a configuration loaded some other way (from files).
    pub fn reload_config(&self, config: Config) {
        self.reloads.send(Ok(config)).expect("server running");
    }

    /// A reload whose file did not validate, as SIGHUP hands it over.
    pub fn reload_refused(&self, why: &str) {
        self.reloads
            .send(Err(why.to_string()))
            .expect("server running");
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("zonefwd did not stop")
            .expect("zonefwd task panicked")
    }
}

// ---- fake upstreams -------------------------------------------------------------

/// What a fake upstream does with one query.
#[derive(Clone)]
pub enum Step {
    /// Encode and send this message.
    Reply(Message),
    /// Send these bytes as they are.
    Raw(Vec<u8>),
    /// Send from another socket (another source port): a forgery.
    FromOtherPort(Vec<u8>),
    Sleep(Duration),
    /// TCP only: send the first half of the framed reply, then close.
    CloseMidReply(Message),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub msg: Message,
    pub raw: Vec<u8>,
    pub from: SocketAddr,
    pub tcp: bool,
    /// When the fake received it.
    pub at: Instant,
}

pub type Responder = Arc<dyn Fn(&Message, bool) -> Vec<Step> + Send + Sync>;

pub struct Fake {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fake {
    /// A fake upstream on 127.0.0.1, UDP and TCP on one port.
    pub async fn start(
        responder: impl Fn(&Message, bool) -> Vec<Step> + Send + Sync + 'static,
    ) -> Fake {
        let responder: Responder = Arc::new(responder);
        let (udp, tcp) = udp_and_tcp_on_one_port(0).await;
        let addr = udp.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let udp = Arc::new(udp);
        let t1 = tokio::spawn(fake_udp(udp, responder.clone(), seen.clone()));
        let t2 = tokio::spawn(fake_tcp(tcp, responder, seen.clone()));
        Fake {
            addr,
            seen,
            tasks: vec![t1, t2],
        }
    }

    /// Answers every query with `f(query)`.
    pub async fn answering(f: impl Fn(&Message) -> Message + Send + Sync + 'static) -> Fake {
        Fake::start(move |q, _| vec![Step::Reply(f(q))]).await
    }

    /// Answers every query with an A record, 192.0.2.1 for 60 s.
    pub async fn answering_a() -> Fake {
        Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 60)).await
    }

    /// Answers every query with an A record `ip` for `ttl` s, each after `delay`: a slow
    /// upstream, so queries stay in flight.
    pub async fn answering_after(delay: Duration, ip: [u8; 4], ttl: u32) -> Fake {
        Fake::start(move |q, _| vec![Step::Sleep(delay), Step::Reply(reply_a(q, ip, ttl))]).await
    }

    /// Answers every query with an A record `ip` for `ttl` s while the returned switch
    /// is on (it starts `on`), and nothing while it is off.
    pub async fn answering_while(on: bool, ip: [u8; 4], ttl: u32) -> (Fake, Arc<AtomicBool>) {
        let switch = Arc::new(AtomicBool::new(on));
        let s = Arc::clone(&switch);
        let fake = Fake::start(move |q, _| {
            if s.load(Ordering::SeqCst) {
                vec![Step::Reply(reply_a(q, ip, ttl))]
            } else {
                vec![]
            }
        })
        .await;
        (fake, switch)
    }

    /// Answers UDP with an empty truncated reply (TC=1) and TCP with `big_reply`: an
    /// upstream whose answers do not fit a datagram.
    pub async fn truncating() -> Fake {
        Fake::start(|q, tcp| {
            if tcp {
                vec![Step::Reply(big_reply(q))]
            } else {
                let mut r = reply(q);
                r.metadata.truncation = true;
                vec![Step::Reply(r)]
            }
        })
        .await
    }

    /// Never answers.
    pub async fn blackhole() -> Fake {
        Fake::start(|_, _| vec![]).await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn udp_count(&self) -> usize {
        self.seen().iter().filter(|s| !s.tcp).count()
    }

    pub fn tcp_count(&self) -> usize {
        self.seen().iter().filter(|s| s.tcp).count()
    }

    /// The TCP connections queries came on (their client ends), in the order each
    /// first carried a query.
    pub fn tcp_connections(&self) -> Vec<SocketAddr> {
        let mut peers: Vec<SocketAddr> = Vec::new();
        for s in self.seen().iter().filter(|s| s.tcp) {
            if !peers.contains(&s.from) {
                peers.push(s.from);
            }
        }
        peers
    }

    /// The connection the query for `name` first came on.
    pub fn tcp_connection_of(&self, name: &str) -> Option<SocketAddr> {
        self.seen()
            .iter()
            .find(|s| s.tcp && qname_of(&s.msg) == name)
            .map(|s| s.from)
    }
}

/// UDP and TCP on one port of 127.0.0.1 (`port` 0: any free one where both are
/// free), waiting for a given port to come free (a restart: the old socket may not be
/// gone yet).
pub async fn udp_and_tcp_on_one_port(port: u16) -> (UdpSocket, TcpListener) {
    loop {
        let udp = match UdpSocket::bind((LOCALHOST, port)).await {
            Ok(udp) => udp,
            Err(e) if port == 0 => panic!("no udp socket on 127.0.0.1: {e}"),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((LOCALHOST, port)).await {
            return (udp, tcp);
        }
    }
}

/// Decodes a query the fake received, records it, and asks the responder what to do.
fn record_and_respond(
    seen: &Mutex<Vec<Seen>>,
    responder: &Responder,
    raw: Vec<u8>,
    from: SocketAddr,
    tcp: bool,
) -> Option<Vec<Step>> {
    let msg = Message::from_vec(&raw).ok()?;
    let steps = responder(&msg, tcp);
    seen.lock().unwrap().push(Seen {
        msg,
        raw,
        from,
        tcp,
        at: Instant::now(),
    });
    Some(steps)
}

async fn fake_udp(sock: Arc<UdpSocket>, responder: Responder, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Some(steps) = record_and_respond(&seen, &responder, buf[..n].to_vec(), from, false)
        else {
            continue;
        };
        let sock = sock.clone();
        tokio::spawn(async move {
            for step in steps {
                match step {
                    Step::Reply(m) => {
                        let _ = sock.send_to(&m.to_vec().unwrap(), from).await;
                    }
                    Step::Raw(b) => {
                        let _ = sock.send_to(&b, from).await;
                    }
                    Step::FromOtherPort(b) => {
                        let other = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
                        let _ = other.send_to(&b, from).await;
                    }
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::CloseMidReply(_) => {}
                }
            }
        });
    }
}

async fn fake_tcp(listener: TcpListener, responder: Responder, seen: Arc<Mutex<Vec<Seen>>>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            return;
        };
        let responder = responder.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let (mut rd, wr) = stream.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            loop {
                let Ok(raw) = read_framed(&mut rd).await else {
                    return;
                };
                let Some(steps) = record_and_respond(&seen, &responder, raw, from, true) else {
                    continue;
                };
                let wr = wr.clone();
                tokio::spawn(async move {
                    for step in steps {
                        let bytes = match step {
                            Step::Reply(m) => m.to_vec().unwrap(),
                            Step::Raw(b) | Step::FromOtherPort(b) => b,
                            Step::Sleep(d) => {
                                tokio::time::sleep(d).await;
                                continue;
                            }
                            Step::CloseMidReply(m) => {
                                let b = framed(&m.to_vec().unwrap());
                                let mut w = wr.lock().await;
                                let _ = w.write_all(&b[..b.len() / 2]).await;
                                let _ = w.shutdown().await;
                                return;
                            }
                        };
                        let _ = wr.lock().await.write_all(&framed(&bytes)).await;
                    }
                });
            }
        });
    }
}

/// TCP framing (RFC 1035 4.2.2), the one the server and its upstream exchange use.
pub use zonefwd::wire::{framed, read_framed};

// ---- messages -------------------------------------------------------------------

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// A response to `q` with its ID and question, RD copied.
pub fn reply(q: &Message) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.queries = q.queries.clone();
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = q.metadata.checking_disabled;
    m
}

pub fn reply_rcode(q: &Message, rcode: ResponseCode) -> Message {
    let mut m = reply(q);
    m.metadata.response_code = rcode;
    m
}

/// A reply carrying one A record for the question's name.
pub fn reply_a(q: &Message, ip: [u8; 4], ttl: u32) -> Message {
    let mut m = reply(q);
    m.answers
        .push(a_record(&q.queries[0].name().to_string(), ip, ttl));
    m
}

pub fn a_record(owner: &str, ip: [u8; 4], ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

pub fn cname_record(owner: &str, target: &str, ttl: u32) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::CNAME(hickory_proto::rr::rdata::CNAME(name(target))),
    )
}

pub fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
    Record::from_rdata(
        name(zone),
        ttl,
        RData::SOA(SOA::new(
            name(&format!("ns1.{zone}")),
            name(&format!("hostmaster.{zone}")),
            2026112201,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

/// A query message with RD set; EDNS with `payload` when given.
pub fn query(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.queries.push(Query::query(name(qname), qtype));
    m.metadata.recursion_desired = true;
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.edns = Some(e);
    }
    m
}

/// `m` encoded, with the question name written in exactly `spelling`'s case (hickory
/// lowercases names when it encodes them).
pub fn with_spelling(m: &Message, spelling: &str) -> Vec<u8> {
    let mut b = m.to_vec().unwrap();
    let w = zonefwd::wire::name_from_str(spelling).unwrap();
    assert!(zonefwd::wire::names_equal(&b[12..12 + w.len()], &w));
    b[12..12 + w.len()].copy_from_slice(&w);
    b
}

pub fn qname_of(m: &Message) -> String {
    m.queries[0].name().to_string()
}

// ---- clients --------------------------------------------------------------------

pub fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(15)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

pub async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(
        addr,
        None,
        Some(Duration::from_secs(15)),
        TokioRuntimeProvider::default(),
    );
    let (client, bg) = Client::<TokioRuntimeProvider>::with_timeout(
        stream.await.expect("tcp connect"),
        sender,
        Duration::from_secs(15),
    );
    tokio::spawn(bg);
    client
}

/// Sends `m` as it is (no EDNS added) and returns the reply.
pub async fn ask(client: &Client<TokioRuntimeProvider>, m: Message) -> Message {
    let mut opts = DnsRequestOptions::default();
    opts.use_edns = m.edns.is_some();
    let mut stream = client.send(DnsRequest::new(m, opts));
    stream
        .next()
        .await
        .expect("a response")
        .expect("no error")
        .into_message()
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .expect("an http response")
        .unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One UDP exchange of `m` (no client retransmission, so upstream counts are exact),
/// parsed.
pub async fn exchange(server: SocketAddr, m: &Message) -> Message {
    let out = raw_udp(server, &m.to_vec().unwrap(), Duration::from_secs(10))
        .await
        .expect("an answer");
    Message::from_vec(&out).unwrap()
}

/// An A query for `name` sent in the background: its answer when it comes, within 10 s.
pub fn asking_a(server: SocketAddr, name: &str) -> JoinHandle<Option<Vec<u8>>> {
    let bytes = query(name, RecordType::A, None).to_vec().unwrap();
    tokio::spawn(async move { raw_udp(server, &bytes, Duration::from_secs(10)).await })
}

/// `exchange` of an A query for `name`.
pub async fn ask_a(server: SocketAddr, name: &str) -> Message {
    exchange(server, &query(name, RecordType::A, None)).await
}

/// A bare UDP exchange: sends bytes, returns the first datagram back within `wait`.
pub async fn raw_udp(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    raw_udp_from(LOCALHOST, server, bytes, wait).await
}

/// `raw_udp` from another loopback address: another client, as far as per-client
/// limits go.
pub async fn raw_udp_from(
    source: Ipv4Addr,
    server: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((source, 0)).await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Elapsed time of `f`.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

/// 40 A records (over 512 octets), or 10 for names starting with "few." (under 512).
pub fn big_reply(q: &Message) -> Message {
    let mut r = reply(q);
    let n = if qname_of(q).starts_with("few.") {
        10
    } else {
        40
    };
    for i in 0..n {
        r.answers.push(a_record(&qname_of(q), [192, 0, 2, i], 60));
    }
    r
}

/// A config route table with one "." route to `upstreams`.
pub fn one_route(upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[route]]\nname = \"default\"\nzones = [\".\"]\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A tool from a Debian package (a checker, a DNS server, a dnstap decoder): CI
/// installs it, so missing there is a failure; elsewhere the test says it skips.
pub fn debian_tool(name: &str) -> Option<&'static str> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return Some(Box::leak(p.into_boxed_str()));
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is missing; .ci/run installs it"
    );
    eprintln!("skipping the {name} check: not installed");
    None
}

/// The zonefwd binary run to completion with `args` (and without $ZONEFWD_CONFIG):
/// exit code, stdout, stderr.
pub fn zonefwd_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zonefwd"))
        .args(args)
        .env_remove("ZONEFWD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- observing ----------------------------------------------------------------

/// The metrics endpoint's exposition text.
pub async fn scrape(z: &Zonefwd) -> String {
    http_get(z.metrics.expect("[server] metrics is set"), "/metrics")
        .await
        .1
}

/// Waits (up to 30 s) until the metric `prefix` reads `want`.
pub async fn until_metric(z: &Zonefwd, prefix: &str, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(z).await;
        if metric(&m, prefix) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{prefix} never became {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of the samples of a metric whose line starts with `prefix`.
pub fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Queries for `name` a fake upstream received.
pub fn asked(f: &Fake, name: &str) -> usize {
    f.seen().iter().filter(|s| qname_of(&s.msg) == name).count()
}

/// This process runs as root (effective uid 0): tests that act as another user need it.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// Waits (up to a generous 10 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a test script of the repository that exits 0 on success and 77, saying why on
/// stderr, where the machine does not allow it (not root, no namespaces): that is
/// printed as SKIPPED with `test`'s name (.ci/run repeats those lines), never passed
/// in silence; any other exit fails the test.
pub fn run_script(test: &str, script: &str, envs: &[(&str, &str)]) {
    let out = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .env("ZONEFWD", env!("CARGO_BIN_EXE_zonefwd"))
        .envs(envs.iter().copied())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => println!("{stdout}"),
        Some(77) => eprintln!("SKIPPED {test}: {}", stderr.trim()),
        code => panic!("{script} exited {code:?}\n{stdout}\n{stderr}"),
    }
}

/// One request line to a control socket and its answer, on a fresh connection.
pub async fn ctl(socket: &std::path::Path, request: serde_json::Value) -> serde_json::Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    s.write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}
