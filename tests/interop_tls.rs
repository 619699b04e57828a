//! Encrypted DNS between zonefwd and servers we did not write, each as a real process
//! on loopback: Unbound as the DoT upstream zonefwd forwards to (`tls-service-key`),
//! and Unbound (`forward-tls-upstream`) and Knot Resolver (`policy.TLS_FORWARD`)
//! forwarding to zonefwd's DoT listener. Certificates are made in the test.
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::certs::{Leaf, Pair, Pki};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// `N` distinct ports nothing listens on now (bound together, then let go: the
/// servers below take port numbers, not sockets).
fn spare_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A server process, killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], dir: &Path) -> Server {
    let log =
        std::fs::File::create(dir.join(format!("{}.log", program.rsplit('/').next().unwrap())))
            .unwrap();
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    Server(child)
}

/// Asks `server` over UDP until it answers `name` with NOERROR (it may still be
/// starting), and gives that answer.
async fn answered(server: SocketAddr, name: &str, log: &Path) -> hickory_proto::op::Message {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = query(name, RecordType::A, Some(1232));
        let got = tokio::time::timeout(Duration::from_secs(2), exchange(server, &q)).await;
        if let Ok(m) = got {
            if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
                return m;
            }
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            std::time::Instant::now() < deadline,
            "{server} never answered {name}; its log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Unbound's configuration: no privileges dropped, no chroot, no trust anchors, and
/// allowed to forward to loopback; `extra` is the rest.
fn unbound_conf(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  do-daemonize: no\n  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n{extra}",
        dir = dir.display()
    )
}

// kdig, unbound and kresd run as child processes and zonefwd serves beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zonefwd_forwards_to_unbound_over_tls_and_refuses_it_under_the_wrong_name() {
    let Some(unbound) = debian_tool("unbound") else {
        return;
    };
    let pki = Pki::new();
    let pair = pki.leaf("unbound", &["resolver.test"], Leaf::Good);
    let [dns_port, tls_port] = spare_ports();
    let conf = unbound_conf(
        pki.dir.path(),
        dns_port,
        &format!(
            "  interface: 127.0.0.1@{tls_port}\n  tls-port: {tls_port}\n  tls-service-key: \"{}\"\n  tls-service-pem: \"{}\"\n  local-zone: \"corp.example.\" static\n  local-data: \"db.corp.example. 300 IN A 10.9.8.7\"\n",
            pair.key.display(),
            pair.cert.display()
        ),
    );
    let path = pki.path("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let _u = spawn(
        unbound,
        &["-d", "-c", path.to_str().unwrap()],
        pki.dir.path(),
    );
    let log = pki.path("unbound.log");
    answered(
        SocketAddr::from(([127, 0, 0, 1], dns_port)),
        "db.corp.example.",
        &log,
    )
    .await;
    let route = |name: &str| {
        format!(
            "[[route]]\nname = \"corp\"\nzones = [\"corp.example\"]\nupstreams = [\"tls://127.0.0.1:{tls_port}#{name}\"]\ntls_ca = \"{}\"\nmax_fails = 0\n",
            pki.ca_pem.display()
        )
    };
    let z = Zonefwd::start(&route("resolver.test")).await;
    let r = ask_a(z.udp, "db.corp.example.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].data.to_string(), "10.9.8.7");
    let wrong = Zonefwd::start(&route("other.test")).await;
    let r = ask_a(wrong.udp, "db.corp.example.").await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "a certificate for another name was taken"
    );
}

/// zonefwd with a DoT listener presenting `pair` in front of a fake resolver.
async fn zonefwd_dot(pair: &Pair, fake: &Fake) -> Zonefwd {
    let conf = Conf::new()
        .server("tls_listen = [\"127.0.0.1:0\"]")
        .server("metrics = \"127.0.0.1:0\"")
        .certificate(pair)
        .route("default", &["."], &[fake.addr], "");
    Zonefwd::start(&conf.toml()).await
}

/// zonefwd's metrics, once they show the query came to its DoT listener.
async fn asked_over_tls(z: &Zonefwd) -> String {
    let m = scrape(z).await;
    let over_tls = "zonefwd_queries_total{route=\"default\",transport=\"tls\"";
    assert!(metric(&m, over_tls) >= 1, "{m}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_forwards_to_zonefwd_over_tls() {
    let Some(unbound) = debian_tool("unbound") else {
        return;
    };
    let pki = Pki::new();
    let pair = pki.leaf("zonefwd", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let z = zonefwd_dot(&pair, &fake).await;
    let dot = z.tls.unwrap();
    let [port] = spare_ports();
    let conf = unbound_conf(
        pki.dir.path(),
        port,
        &format!(
            "  tls-cert-bundle: \"{}\"\nforward-zone:\n  name: \"private.example.\"\n  forward-tls-upstream: yes\n  forward-addr: 127.0.0.1@{}#dns.test\n",
            pki.ca_pem.display(),
            dot.port()
        ),
    );
    let path = pki.path("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let _u = spawn(
        unbound,
        &["-d", "-c", path.to_str().unwrap()],
        pki.dir.path(),
    );
    let r = answered(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "aks.private.example.",
        &pki.path("unbound.log"),
    )
    .await;
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.1");
    let m = asked_over_tls(&z).await;
    assert_eq!(
        metric(
            &m,
            "zonefwd_queries_total{route=\"default\",transport=\"udp\""
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_resolver_forwards_to_zonefwd_over_tls() {
    let Some(kresd) = debian_tool("kresd") else {
        return;
    };
    let pki = Pki::new();
    let pair = pki.leaf("zonefwd", &["dns.test"], Leaf::Good);
    let fake = Fake::answering_a().await;
    let z = zonefwd_dot(&pair, &fake).await;
    let dot = z.tls.unwrap();
    let [port] = spare_ports();
    let conf = format!(
        "net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})\nmodules.unload('ta_update')\ntrust_anchors.remove('.')\ncache.size = 10 * MB\npolicy.add(policy.suffix(policy.TLS_FORWARD({{{{'127.0.0.1@{}', hostname = 'dns.test', ca_file = '{}'}}}}), {{ todname('private.example.') }}))\n",
        dot.port(),
        pki.ca_pem.display()
    );
    let path = pki.path("kresd.conf");
    std::fs::write(&path, conf).unwrap();
    let _k = spawn(
        kresd,
        &[
            "-n",
            "-c",
            path.to_str().unwrap(),
            pki.dir.path().to_str().unwrap(),
        ],
        pki.dir.path(),
    );
    let r = answered(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "eks.private.example.",
        &pki.path("kresd.log"),
    )
    .await;
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.1");
    asked_over_tls(&z).await;
}
