//! The binary as an operator uses it: check, explain, run with signals, and the
//! example configs shipped in config/.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use zonefwd::config::{Config, LoadEnv};

const BIN: &str = env!("CARGO_BIN_EXE_zonefwd");

fn zonefwd(args: &[&str]) -> (i32, String, String) {
    zonefwd_cli(args)
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let env = LoadEnv {
        resolv_conf: resolv,
    };
    let mut n = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).unwrap() {
        let path = entry.unwrap().path();
        // It names a certificate, key and CA the operator provides:
        // tests/encrypted_listeners.rs loads it with ones made there.
        if path.ends_with("jump-subnet.toml") {
            continue;
        }
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path, &env).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} configs");
    // The runnable default listens where the README's dig example asks.
    let c = Config::load(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/zonefwd.toml")),
        &env,
    )
    .unwrap();
    let listen = c.server.listen[0];
    assert_eq!(c.server.listen.len(), 1);
    assert_ne!(
        listen.port(),
        5353,
        "the mDNS port: avahi holds it on many hosts"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "dig @{} -p {} example.com A",
            listen.ip(),
            listen.port()
        )),
        "the Quick start's dig asks where config/zonefwd.toml listens ({listen})"
    );
}

#[test]
fn check_prints_the_routing_table() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/reference.toml");
    let (code, out, err) = zonefwd(&["check", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("privatelink.japaneast.azmk8s.io."))
        .expect(&out);
    assert!(
        line.contains("azure-private") && line.contains("168.63.129.16:53"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(".  ") && l.contains("10.1.0.4:53, 10.1.0.5:53")),
        "{out}"
    );
}

#[test]
fn check_reports_errors_with_location_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[server]\nlisten = [\"127.0.0.1:53\"]\nlistn = 1\n").unwrap();
    let (code, out, err) = zonefwd(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains(&format!(
            "{}:3:1: server.listn: unknown key `listn`: did you mean `listen`?",
            p.display()
        )),
        "{err}"
    );
    assert!(err.contains("3 | listn = 1"), "{err}");

    let (code, _, err) = zonefwd(&["check", "-c", "/nonexistent/z.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/z.toml: cannot read the config file"),
        "{err}"
    );
}

#[test]
fn explain_shows_route_and_order_without_sending() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/reference.toml");
    let (code, out, _) = zonefwd(&[
        "explain",
        "-c",
        cfg,
        "MyAKS-1a2b.privatelink.japaneast.azmk8s.io",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("route      azure-private"), "{out}");
    assert!(
        out.contains("zone       privatelink.japaneast.azmk8s.io."),
        "{out}"
    );
    assert!(out.contains("1. 168.63.129.16:53"), "{out}");
    assert!(out.contains("nothing was sent"), "{out}");

    let (code, out, _) = zonefwd(&[
        "explain",
        "-c",
        cfg,
        "privatelink.japaneast.azmk8s.io",
        "ds",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("route      on-prem"), "{out}");
    assert!(out.contains("DS lives in the parent zone"), "{out}");

    let (code, out, _) = zonefwd(&["explain", "-c", cfg, "www.example.com", "TYPE65"]);
    assert_eq!(code, 0);
    assert!(out.contains("www.example.com. HTTPS"), "{out}");
    assert!(out.contains("1. 10.1.0.4:53  2. 10.1.0.5:53"), "{out}");

    let (code, _, err) = zonefwd(&["explain", "-c", cfg, "x.example", "BOGUS"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a record type"), "{err}");
}

#[test]
fn explain_without_a_route_exits_1_and_config_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.toml");
    std::fs::write(
        &p,
        "[[route]]\nname = \"corp\"\nzones = [\"corp.example\"]\nupstreams = [\"192.0.2.1\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["explain", "www.example.org"])
        .env("ZONEFWD_CONFIG", &p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("zonefwd answers REFUSED"));
}

/// A child process that cannot outlive a failing test (it would hold the test's
/// output pipes open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The binary serving a config file, with its log lines readable as they come.
struct Running {
    child: KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
    udp: std::net::SocketAddr,
}

impl Running {
    fn start(config: &Path) -> Running {
        Running::start_with(config, &[])
    }

    fn start_with(config: &Path, envs: &[(&str, &str)]) -> Running {
        let mut child = KillOnDrop(
            Command::new(BIN)
                .args(["run", "-c", config.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .envs(envs.iter().copied())
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut r = Running {
            child,
            lines,
            log: Vec::new(),
            udp: "0.0.0.0:0".parse().unwrap(),
        };
        // The startup lines name the bound addresses: read the UDP one.
        let line = r.wait_for("listening on udp");
        // `addr=127.0.0.1:5353` in text logs, `"addr":"127.0.0.1:5353"` in JSON.
        r.udp = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .find_map(|w| {
                w.strip_prefix("addr=")
                    .or_else(|| w.strip_prefix("\"addr\":"))
            })
            .map(|a| a.trim_matches('"'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        r
    }

    /// Waits for a log line containing `what` and returns it.
    fn wait_for(&mut self, what: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("no log line with {what:?} in:\n{}", self.log.join("\n"))
                });
            self.log.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn ask(&self, name: &str) -> Message {
        ask_a(self.udp, name).await
    }
}

/// Writes `z.toml` in `dir`: listening on 127.0.0.1:0, `server_extra` under [server],
/// then `routes`.
fn write_config(dir: &tempfile::TempDir, server_extra: &str, routes: &str) -> std::path::PathBuf {
    let p = dir.path().join("z.toml");
    std::fs::write(
        &p,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{server_extra}{routes}"),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn run_serves_logs_its_listeners_and_stops_on_sigterm() {
    let up = Fake::answering(|q| reply_a(q, [192, 0, 2, 99], 42)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(&dir, "", &one_route(&[up.addr], ""));
    let mut z = Running::start(&p);
    assert_eq!(z.ask("bin.example.").await.answers[0].ttl, 42);

    z.signal("-TERM");
    let started = Instant::now();
    let code = loop {
        if let Some(s) = z.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    z.wait_for("SIGTERM received");
    z.wait_for("stopped");
    let log = z.log.join("\n");
    assert!(log.contains("listening on tcp"), "{log}");
    assert!(log.contains("route=default"), "{log}");
}

#[tokio::test]
async fn sighup_reloads_a_valid_file_and_keeps_serving_through_an_invalid_one() {
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 0)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.toml");
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\n";
    std::fs::write(&p, format!("{server}{}", one_route(&[a.addr], ""))).unwrap();
    let mut z = Running::start(&p);
    assert_eq!(
        z.ask("one.example.").await.answers[0].data,
        a_record("x.", [192, 0, 2, 1], 0).data
    );

    // A valid new file: the next queries go to B.
    std::fs::write(&p, format!("{server}{}", one_route(&[b.addr], ""))).unwrap();
    z.signal("-HUP");
    z.wait_for("configuration reloaded");
    assert_eq!(
        z.ask("two.example.").await.answers[0].data,
        a_record("x.", [192, 0, 2, 2], 0).data
    );

    // An invalid file: the error names the place; B keeps answering.
    std::fs::write(
        &p,
        format!("{server}[[route]]\nname = \"x\"\nzones = [\".\"]\nupstreams = [\"nowhere\"]\n"),
    )
    .unwrap();
    z.signal("-HUP");
    let err = z.wait_for("reload refused");
    assert!(
        err.contains(&format!("{}:6:14: route[0].upstreams[0]", p.display())),
        "{err}"
    );
    assert_eq!(
        z.ask("three.example.").await.answers[0].data,
        a_record("x.", [192, 0, 2, 2], 0).data
    );

    // A listen change is applied to the rest but says it needs a restart.
    std::fs::write(
        &p,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\n{}",
            one_route(&[a.addr], "")
        ),
    )
    .unwrap();
    z.signal("-HUP");
    let warn = z.wait_for("only after a restart");
    assert!(warn.contains("server.listen"), "{warn}");
    assert_eq!(
        z.ask("four.example.").await.answers[0].data,
        a_record("x.", [192, 0, 2, 1], 0).data
    );
}

#[tokio::test]
async fn tells_systemd_ready_reloading_stopping_and_pings_the_watchdog() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(&dir, "", &one_route(&[up.addr], ""));
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let z = Running::start_with(
        &p,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 1 routes on 127.0.0.1:0"),
        "{ready}"
    );
    // Pings at half the interval while the serving loops beat.
    let mut pings = 0;
    while pings < 3 {
        let m = next();
        assert_eq!(m, "WATCHDOG=1");
        pings += 1;
    }
    z.signal("-HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.starts_with("READY=1")) {
        let m = next();
        if m != "WATCHDOG=1" {
            seen.push(m);
        }
    }
    assert!(
        seen[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{seen:?}"
    );
    z.signal("-TERM");
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
}

/// The binary with JSON logs and the query log on, forwarding everything to `upstream`.
fn logging_queries_as_json(dir: &tempfile::TempDir, upstream: std::net::SocketAddr) -> Running {
    let p = write_config(
        dir,
        "log_format = \"json\"\nquery_log = true\n",
        &one_route(&[upstream], ""),
    );
    Running::start(&p)
}

#[tokio::test]
async fn json_logs_and_the_query_log() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let mut z = logging_queries_as_json(&dir, up.addr);
    z.ask("logged.example.").await;
    let miss = z.wait_for("\"outcome\":\"upstream\"");
    z.ask("logged.example.").await;
    let hit = z.wait_for("\"outcome\":\"cache\"");
    for line in [&miss, &hit] {
        assert!(line.contains("\"target\":\"zonefwd::query\""), "{line}");
        assert!(line.contains("\"name\":\"logged.example.\""), "{line}");
        assert!(line.contains("\"qtype\":\"A\""), "{line}");
        assert!(line.contains("\"rcode\":\"NOERROR\""), "{line}");
        assert!(line.contains("\"route\":\"default\""), "{line}");
    }
    assert!(
        miss.contains(&format!("\"upstream\":\"{}\"", up.addr)),
        "{miss}"
    );
    assert!(
        z.log.iter().all(|l| l.starts_with('{') && l.ends_with('}')),
        "every line is a JSON object: {:?}",
        z.log
    );
}

#[tokio::test]
async fn the_query_log_says_when_an_answer_came_from_a_retransmission() {
    // The upstream loses the first query for one name; once the forwarder has measured
    // its answer times (10 answers), that query is retransmitted early.
    let lost = "lost.example.";
    let first_seen = std::sync::Mutex::new(false);
    let up = Fake::start(move |q, _| {
        let mut seen = first_seen.lock().unwrap();
        if qname_of(q) == lost && !*seen {
            *seen = true;
            return vec![];
        }
        vec![Step::Reply(reply_a(q, [192, 0, 2, 1], 60))]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut z = logging_queries_as_json(&dir, up.addr);
    for i in 0..40 {
        z.ask(&format!("warm{i}.example.")).await;
    }
    let first = z.wait_for("\"name\":\"warm0.example.\"");
    assert!(first.contains("\"retransmission\":\"-\""), "{first}");
    z.ask(lost).await;
    let line = z.wait_for("\"name\":\"lost.example.\"");
    assert!(line.contains("\"retransmission\":\"late\""), "{line}");
    assert!(line.contains("\"outcome\":\"upstream\""), "{line}");
}

#[tokio::test]
async fn an_idle_zonefwd_holds_a_few_mib_of_memory_of_its_own() {
    // Started by hand, without the systemd unit's environment: the allocator's lazy
    // arena commit is compiled in (.cargo/config.toml). Eager, on a host with
    // transparent huge pages, an idle zonefwd held 12 MiB of anonymous memory, not 1.
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(&dir, "", &one_route(&[up.addr], ""));
    let z = Running::start(&p);
    z.ask("warm.example.").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", z.child.0.id())).unwrap();
    let anon_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        anon_kib < 6 * 1024,
        "{anon_kib} KiB of anonymous memory, idle"
    );
}

#[tokio::test]
async fn healthcheck_answers_0_while_serving_and_fails_when_not() {
    // Upstream unreachable on purpose: the healthcheck must not depend on it.
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        "",
        "[[route]]\nname = \"default\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1:9\"]\n",
    );
    let z = Running::start(&p);
    // The healthcheck reads the same kind of file, naming the port actually bound, and
    // a wildcard address, which it reaches through loopback.
    let probe = dir.path().join("probe.toml");
    let write_probe = |addr: String| {
        std::fs::write(&probe, format!("[server]\nlisten = [\"{addr}\"]\n[[route]]\nname = \"d\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1:9\"]\n")).unwrap();
    };
    write_probe(format!("0.0.0.0:{}", z.udp.port()));
    let (code, out, err) = zonefwd(&["healthcheck", "-c", probe.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("zonefwd answers on 127.0.0.1:{}", z.udp.port())),
        "{out}"
    );
    drop(z);
    let (code, _, err) = zonefwd(&[
        "healthcheck",
        "-c",
        probe.to_str().unwrap(),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(code, 1, "unhealthy is 1: Docker reserves 2");
    assert!(err.contains("healthcheck: no answer from"), "{err}");
    let (code, _, err) = zonefwd(&["healthcheck", "-c", "/nonexistent/zonefwd.toml"]);
    assert_eq!(code, 1, "no configuration is unhealthy too: {err}");
}

#[tokio::test]
async fn the_binary_answers_id_server_with_the_host_name() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        "identity = \"@hostname\"\nloop_detection = false\n",
        &one_route(&[up.addr], ""),
    );
    let z = Running::start(&p);
    let mut q = query("id.server.", hickory_proto::rr::RecordType::TXT, None);
    q.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    let r = exchange(z.udp, &q).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    match &r.answers.first().expect("an answer").data {
        hickory_proto::rr::RData::TXT(t) => assert_eq!(&*t.txt_data[0], host.trim().as_bytes()),
        other => panic!("not TXT: {other:?}"),
    }
    assert_eq!(up.count(), 0, "answered by zonefwd itself");
}

#[tokio::test]
async fn ctl_talks_to_the_running_binary_and_exits_0_1_or_2() {
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let p = write_config(
        &dir,
        &format!(
            "control = \"{}\"\nloop_detection = false\n",
            socket.display()
        ),
        &one_route(&[up.addr], ""),
    );
    let z = Running::start(&p);
    z.ask("cached.example.").await;
    let config = p.to_str().unwrap();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "-c", config];
        all.extend_from_slice(args);
        zonefwd(&all)
    };
    let (code, out, err) = ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("  {}  up  failures 0  queries 1", up.addr)),
        "{out}"
    );
    assert_eq!(
        ctl(&["flush", "cached.example.", "A"]),
        (0, "flushed 1 entries\n".into(), String::new())
    );
    let (code, out, _) = ctl(&["--json", "cache", "cached.example."]);
    assert_eq!(code, 0);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["entries"], serde_json::json!([]), "flushed");
    let (code, _, err) = ctl(&["upstream", "default", "192.0.2.99", "down"]);
    assert_eq!(code, 1, "the server said no: {err}");
    let (code, _, err) = ctl(&["flush"]);
    assert_eq!(code, 2, "a bad command line: {err}");
    assert!(err.contains("usage: zonefwd ctl"), "{err}");
    let (code, _, err) = zonefwd(&[
        "ctl",
        "--socket",
        dir.path().join("none").to_str().unwrap(),
        "status",
    ]);
    assert_eq!(code, 2, "no connection: {err}");

    // An invalid file: ctl still finds the socket the file names, and the server's
    // located error comes back with exit 1 (the running configuration stays).
    let valid = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        valid.replace("[[route]]", "[[route]]\ntimeout = \"5 parsecs\""),
    )
    .unwrap();
    let (code, _, err) = ctl(&["reload"]);
    assert_eq!(code, 1, "the server refused the file: {err}");
    assert!(
        err.contains(&format!("{}:", p.display())) && err.contains("route[0].timeout"),
        "{err}"
    );
    let (code, out, _) = ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("THE LAST RELOAD WAS REFUSED"), "{out}");
    // A restart-only key changed: applied for the rest, the pending key named.
    std::fs::write(
        &p,
        valid.replace(
            "loop_detection = false",
            "loop_detection = false\ntcp_idle_timeout = \"7s\"",
        ),
    )
    .unwrap();
    let (code, out, err) = ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RESTART PENDING: server.tcp_*"), "{out}");
    drop(z);
}

/// The unit's ExecReload, run as systemd runs it (the unit's environment names the
/// control socket): it exits non-zero when the server refuses the file, so that
/// `systemctl reload` fails instead of reporting success.
#[tokio::test]
async fn the_units_exec_reload_fails_when_the_reload_is_refused() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/zonefwd.service"
    ))
    .unwrap();
    let exec_reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("the unit has an ExecReload");
    let argv: Vec<&str> = exec_reload.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/zonefwd", "{exec_reload}");
    let up = Fake::answering_a().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let p = write_config(&dir, "loop_detection = false\n", &one_route(&[up.addr], ""));
    let mut z = Running::start_with(&p, &[("ZONEFWD_CONTROL", socket.to_str().unwrap())]);
    z.wait_for("serving the control socket");
    let systemctl_reload = || {
        let out = Command::new(BIN)
            .args(&argv[1..])
            .env("ZONEFWD_CONTROL", &socket)
            .env_remove("ZONEFWD_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = systemctl_reload();
    assert_eq!(code, Some(0), "{err}");
    let valid = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        valid.replace("[[route]]", "[[route]]\ntimeout = \"5 parsecs\""),
    )
    .unwrap();
    let (code, err) = systemctl_reload();
    assert_eq!(code, Some(1), "a refused reload fails: {err}");
    assert!(err.contains("route[0].timeout"), "{err}");
}

#[test]
fn explain_says_local_record_for_a_pinned_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        "[local]\nrecords = [\"legacy.corp.example. 300 IN A 10.1.2.3\"]\n",
        &one_route(&["192.0.2.1:53".parse().unwrap()], ""),
    );
    let (code, out, err) = zonefwd(&["explain", "-c", p.to_str().unwrap(), "legacy.corp.example"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("answer     local record: legacy.corp.example. 300 IN A 10.1.2.3"),
        "{out}"
    );
    let (code, out, _) = zonefwd(&[
        "explain",
        "-c",
        p.to_str().unwrap(),
        "legacy.corp.example",
        "AAAA",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("NODATA from local records"), "{out}");
}
