//! The fault matrix: a steady stream of client queries through zonefwd while a
//! fault-injecting proxy (tests/common/fault_proxy.rs) sits between zonefwd and its
//! upstream. Each row is one fault on one route shape; each query is tallied as the
//! upstream's answer in time, SERVFAIL, or something worse, and every client socket is
//! held open after its answer to catch a second one.
//!
//! The tests run a small stream with short route timeouts and check the rules that
//! must hold whatever the machine's load (nothing forged or duplicated reaches a
//! client or the cache; which faults cost no query). `fault_matrix_report` (ignored;
//! `bash bench/fault-matrix.sh`) runs the full stream with the default timeouts and
//! prints the README's table.
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::fault_proxy::{Fault, FaultProxy, FORGED_IP};
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use zonefwd::config::UpstreamTransport;

const GENUINE_IP: [u8; 4] = [192, 0, 2, 1];

/// How the route meets the fault.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Its lone upstream is behind the fault: the cloud resolver, one address.
    Lone,
    /// The first of its two upstreams (`sequential`) is behind the fault, the second
    /// is clean: an on-prem pair.
    FirstOfTwo,
}

/// The stream and the route's timers.
#[derive(Clone, Copy)]
struct Scale {
    queries: usize,
    per_second: f64,
    timeout: Duration,
    try_timeout: Duration,
    max_fails: u32,
}

/// Small and quick, for `cargo test`.
const TEST: Scale = Scale {
    queries: 150,
    per_second: 300.0,
    timeout: Duration::from_millis(1500),
    try_timeout: Duration::from_millis(400),
    max_fails: 3,
};

/// The README's table: the default route timers (5 s, 2 s, 3).
const REPORT: Scale = Scale {
    queries: 2000,
    per_second: 200.0,
    timeout: Duration::from_secs(5),
    try_timeout: Duration::from_secs(2),
    max_fails: 3,
};

#[derive(Clone, Copy)]
struct Row {
    label: &'static str,
    fault: Fault,
    shape: Shape,
    transport: UpstreamTransport,
    /// `retransmit_budget = 0`: early retransmission off, for the rows that compare.
    budget_off: bool,
}

/// The faults of the matrix, each on both route shapes. `scale` places the restart
/// in the middle of the stream.
fn matrix(scale: Scale) -> Vec<Row> {
    let stream = Duration::from_secs_f64(scale.queries as f64 / scale.per_second);
    let faults = [
        ("none", Fault::Clean, UpstreamTransport::Udp),
        ("UDP loss 5%", Fault::Loss(0.05), UpstreamTransport::Udp),
        ("UDP loss 30%", Fault::Loss(0.30), UpstreamTransport::Udp),
        ("delay 200 ms ± 50 ms", delay(), UpstreamTransport::Udp),
        (
            "slow tail (10% of names 300-500 ms)",
            Fault::SlowTail { loss: 0.0 },
            UpstreamTransport::Udp,
        ),
        (
            "UDP loss 5% + slow tail",
            Fault::SlowTail { loss: 0.05 },
            UpstreamTransport::Udp,
        ),
        (
            "duplicated replies",
            Fault::Duplicate,
            UpstreamTransport::Udp,
        ),
        (
            "reordered replies (0-50 ms)",
            Fault::Reorder,
            UpstreamTransport::Udp,
        ),
        (
            "replies from a wrong source",
            Fault::WrongSource,
            UpstreamTransport::Udp,
        ),
        (
            "upstream restart (1 s down)",
            restart(stream),
            UpstreamTransport::Udp,
        ),
        (
            "TCP reset every 25th query",
            Fault::TcpReset { every: 25 },
            UpstreamTransport::Tcp,
        ),
        (
            "TCP close mid-reply every 25th",
            Fault::TcpCloseMidReply { every: 25 },
            UpstreamTransport::Tcp,
        ),
        (
            "upstream blackholed",
            Fault::Blackhole,
            UpstreamTransport::Udp,
        ),
    ];
    // Where an upstream is slow, not lossy, early retransmission must not cost more
    // than it saves: these rows run once more with it off.
    let compared = |label: &str| label.starts_with("delay") || label.starts_with("slow tail");
    faults
        .into_iter()
        .flat_map(|(label, fault, transport)| {
            let budget_off: &[bool] = if compared(label) {
                &[false, true]
            } else {
                &[false]
            };
            budget_off.iter().flat_map(move |&budget_off| {
                [Shape::Lone, Shape::FirstOfTwo].map(|shape| Row {
                    label,
                    fault,
                    shape,
                    transport,
                    budget_off,
                })
            })
        })
        .collect()
}

fn delay() -> Fault {
    Fault::Delay {
        base: Duration::from_millis(200),
        jitter: Duration::from_millis(50),
    }
}

fn restart(stream: Duration) -> Fault {
    Fault::Restart {
        at: stream / 2,
        down: Duration::from_secs(1),
    }
}

// ---- one client query ------------------------------------------------------------

/// What one client query got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Got {
    /// The upstream's own answer, within the route's timeout.
    Answer,
    /// The upstream's answer, but after the timeout.
    Late,
    Servfail,
    /// A reply carrying the forged address, or for another ID or question.
    Forged,
    /// Another rcode, or an answer that is neither the upstream's nor a forgery.
    Other,
    /// Nothing.
    Lost,
}

struct Asked {
    sent: Instant,
    got: Got,
    latency: Duration,
    /// Datagrams after the first: duplicates.
    extra: usize,
}

/// One query on its own socket; the socket is held `linger` after the reply to see
/// whether a second one comes.
async fn ask(
    server: SocketAddr,
    name: String,
    timeout: Duration,
    linger: Duration,
) -> (Got, Duration, usize) {
    let mut q = query(&name, RecordType::A, Some(1232));
    q.metadata.id = rand::random();
    let sock = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let started = Instant::now();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let wait = timeout + Duration::from_secs(2);
    let Ok(Ok((n, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await else {
        return (Got::Lost, started.elapsed(), 0);
    };
    let latency = started.elapsed();
    let got = judge(&q, &buf[..n], latency <= timeout);
    let mut extra = 0;
    let until = Instant::now() + linger;
    while let Ok(Ok(_)) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
        extra += 1;
    }
    (got, latency, extra)
}

fn judge(q: &Message, raw: &[u8], in_time: bool) -> Got {
    let Ok(r) = Message::from_vec(raw) else {
        return Got::Other;
    };
    if r.metadata.id != q.metadata.id || r.queries != q.queries {
        return Got::Forged;
    }
    if r.metadata.response_code == ResponseCode::ServFail {
        return Got::Servfail;
    }
    let a: Vec<Ipv4Addr> = r
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    match a.as_slice() {
        [ip] if *ip == Ipv4Addr::from(GENUINE_IP) && in_time => Got::Answer,
        [ip] if *ip == Ipv4Addr::from(GENUINE_IP) => Got::Late,
        ips if ips.contains(&FORGED_IP) => Got::Forged,
        _ => Got::Other,
    }
}

// ---- one row ---------------------------------------------------------------------

/// What one row's stream got, and what the cache held afterwards.
struct Tally {
    asked: Vec<Asked>,
    /// When the proxy started: what a restart's time counts from.
    proxy_started: Instant,
    /// Names whose cached answer, asked again after the stream, was not the upstream's.
    poisoned_cache: usize,
    /// Client queries the faulted upstream received during the stream (the cache
    /// check after it left out).
    faulted_saw: usize,
    /// Client queries both upstreams received during the stream (probes left out).
    upstreams_saw: usize,
    /// The same, for the names of the stream's second half: once the upstream's
    /// answer-time model has caught up.
    second_half_saw: usize,
    /// Tries retransmitted early, past their upstream's measured answer time.
    retransmitted_early: u64,
    forgeries_sent: usize,
    duplicates_sent: usize,
}

impl Tally {
    fn count(&self, got: Got) -> usize {
        self.asked.iter().filter(|a| a.got == got).count()
    }

    fn duplicates(&self) -> usize {
        self.asked.iter().map(|a| a.extra).sum()
    }

    /// Answered queries that took at least `d`.
    fn slower_than(&self, d: Duration) -> usize {
        self.asked
            .iter()
            .filter(|a| a.got == Got::Answer && a.latency >= d)
            .count()
    }

    /// The `p`-th percentile latency of the answered queries.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut l: Vec<Duration> = self
            .asked
            .iter()
            .filter(|a| matches!(a.got, Got::Answer | Got::Late))
            .map(|a| a.latency)
            .collect();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len().max(1)) - 1;
        l.get(i).copied()
    }
}

async fn run_row(row: Row, scale: Scale) -> Tally {
    let upstream = Fake::answering(|q| reply_a(q, GENUINE_IP, 300)).await;
    let second = Fake::answering(|q| reply_a(q, GENUINE_IP, 300)).await;
    let proxy = FaultProxy::start(upstream.addr, row.fault).await;
    let upstreams = match row.shape {
        Shape::Lone => vec![proxy.addr],
        Shape::FirstOfTwo => vec![proxy.addr, second.addr],
    };
    let transport = row.transport.as_str();
    let budget = if row.budget_off {
        "retransmit_budget = 0"
    } else {
        ""
    };
    let route = format!(
        "timeout = \"{}ms\"\ntry_timeout = \"{}ms\"\nmax_fails = {}\ntransport = \"{transport}\"\n{budget}",
        scale.timeout.as_millis(),
        scale.try_timeout.as_millis(),
        scale.max_fails,
    );
    let z = Zonefwd::start_config(
        Conf::new()
            // The whole stream comes from one address: the per-client limit (a defence
            // against one client's flood, DNSBomb) would drop some of it behind a
            // blackholed upstream, which is not what a row measures.
            .server("client_max_inflight = 100000")
            .server("metrics = \"127.0.0.1:0\"")
            .route("fault", &["fault.test"], &upstreams, &route)
            .build(),
    )
    .await;
    let asked = stream(z.udp, scale).await;
    let faulted_saw = proxy.client_queries();
    let mut names = proxy.log.names.lock().unwrap().clone();
    if row.shape == Shape::FirstOfTwo {
        names.extend(second.seen().iter().map(|s| qname_of(&s.msg)));
    }
    let second_half: std::collections::HashSet<String> =
        (scale.queries / 2..scale.queries).map(name_of).collect();
    let upstreams_saw = names.iter().filter(|n| n.as_str() != ".").count();
    let second_half_saw = names.iter().filter(|n| second_half.contains(*n)).count();
    let retransmitted_early = early_retransmits(&z).await;
    let poisoned_cache = poisoned(z.udp, &asked).await;
    z.stop().await.unwrap();
    Tally {
        asked,
        proxy_started: proxy.started,
        poisoned_cache,
        faulted_saw,
        upstreams_saw,
        second_half_saw,
        retransmitted_early,
        forgeries_sent: proxy
            .log
            .forgeries_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        duplicates_sent: proxy
            .log
            .duplicates_sent
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Early retransmissions on the route, from the metrics.
async fn early_retransmits(z: &Zonefwd) -> u64 {
    scrape(z)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("zonefwd_upstream_retransmits_total{") && l.contains("reason=\"late\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn name_of(i: usize) -> String {
    format!("q{i}.fault.test.")
}

/// `scale.queries` queries at `scale.per_second`, each a new name, each on its own
/// socket.
async fn stream(server: SocketAddr, scale: Scale) -> Vec<Asked> {
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / scale.per_second);
    let linger = Duration::from_millis(300);
    let mut tasks = Vec::with_capacity(scale.queries);
    for i in 0..scale.queries {
        tokio::time::sleep_until(start + gap * i as u32).await;
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (got, latency, extra) = ask(server, name_of(i), scale.timeout, linger).await;
            Asked {
                sent,
                got,
                latency,
                extra,
            }
        }));
    }
    let mut asked = Vec::with_capacity(tasks.len());
    for t in tasks {
        asked.push(t.await.unwrap());
    }
    asked
}

/// Asks every name of the stream again: whatever the cache now holds for it must be
/// the upstream's answer (or a SERVFAIL, or the upstream's answer fetched now).
async fn poisoned(server: SocketAddr, asked: &[Asked]) -> usize {
    let mut bad = 0;
    for chunk in (0..asked.len()).collect::<Vec<_>>().chunks(500) {
        let mut tasks = Vec::new();
        for &i in chunk {
            tasks.push(tokio::spawn(ask(
                server,
                name_of(i),
                Duration::from_secs(5),
                Duration::ZERO,
            )));
        }
        for t in tasks {
            let (got, _, _) = t.await.unwrap();
            if !matches!(got, Got::Answer | Got::Servfail) {
                bad += 1;
            }
        }
    }
    bad
}

// ---- the rules ------------------------------------------------------------------

/// The rules every row keeps: every client query gets exactly one reply, and it is
/// never a forgery, neither then nor from the cache afterwards.
fn assert_nothing_forged_or_duplicated(row: &Row, t: &Tally) {
    let what = format!("{} ({:?}, {:?})", row.label, row.shape, row.transport);
    assert_eq!(
        t.count(Got::Forged),
        0,
        "{what}: a forgery reached a client"
    );
    assert_eq!(
        t.count(Got::Other),
        0,
        "{what}: a reply that is neither the answer nor SERVFAIL"
    );
    assert_eq!(
        t.count(Got::Lost),
        0,
        "{what}: a client got no reply at all"
    );
    assert_eq!(t.duplicates(), 0, "{what}: a client got a second reply");
    assert_eq!(t.poisoned_cache, 0, "{what}: the cache held a forgery");
}

fn rows(label: &str, shapes: &[Shape]) -> Vec<Row> {
    let rows: Vec<Row> = matrix(TEST)
        .into_iter()
        .filter(|r| r.label.starts_with(label) && shapes.contains(&r.shape))
        .collect();
    assert!(!rows.is_empty(), "no row is labelled {label}");
    rows
}

/// Runs the rows at the test scale, checks the rules every row keeps, and hands each
/// tally to `check`.
async fn each(rows: Vec<Row>, check: impl Fn(&Row, &Tally)) {
    for row in rows {
        let t = run_row(row, TEST).await;
        assert_nothing_forged_or_duplicated(&row, &t);
        check(&row, &t);
    }
}

fn all_answered(row: &Row, t: &Tally) {
    assert_eq!(
        t.count(Got::Answer),
        t.asked.len(),
        "{} ({:?}): servfail {}, late {}",
        row.label,
        row.shape,
        t.count(Got::Servfail),
        t.count(Got::Late)
    );
}

const BOTH: &[Shape] = &[Shape::Lone, Shape::FirstOfTwo];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_duplicated_reordered_and_forged_replies_cost_no_query() {
    for label in [
        "none",
        "delay",
        "duplicated",
        "reordered",
        "replies from a wrong source",
    ] {
        each(rows(label, BOTH), all_answered).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forgeries_and_duplicates_were_really_sent() {
    // The two rows above would pass with a proxy that never forged or duplicated.
    let forged = run_row(rows("replies from a wrong source", &[Shape::Lone])[0], TEST).await;
    assert!(
        forged.forgeries_sent >= 2 * TEST.queries,
        "{}",
        forged.forgeries_sent
    );
    let doubled = run_row(rows("duplicated", &[Shape::Lone])[0], TEST).await;
    assert!(
        doubled.duplicates_sent >= TEST.queries,
        "{}",
        doubled.duplicates_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_on_one_path_of_two_costs_no_query() {
    each(rows("UDP loss 5%", &[Shape::FirstOfTwo]), all_answered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_loss_gets_servfail_or_the_answer_never_anything_else() {
    each(rows("UDP loss", &[Shape::Lone]), |_, _| {}).await;
    each(rows("UDP loss 30%", &[Shape::FirstOfTwo]), all_answered).await;
}

/// Long enough for the model to have seen the slow names answer (300 to 500 ms in).
const SLOW_TAIL: Scale = Scale {
    queries: 600,
    ..TEST
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_costs_no_query_and_early_retransmission_little_load() {
    // A resolver's uncached names: slow, not lost. Once the upstream's answer times
    // are known (the stream's second half), early retransmission must not add much to
    // what the route sends with it off.
    for shape in BOTH {
        let mut per_query = Vec::new();
        for row in rows("slow tail", &[*shape]) {
            let t = run_row(row, SLOW_TAIL).await;
            assert_nothing_forged_or_duplicated(&row, &t);
            all_answered(&row, &t);
            let half = (t.asked.len() - t.asked.len() / 2) as f64;
            per_query.push((row.budget_off, t.second_half_saw as f64 / half));
        }
        let on = per_query.iter().find(|r| !r.0).unwrap().1;
        let off = per_query.iter().find(|r| r.0).unwrap().1;
        assert!(
            on <= off + 0.05,
            "{shape:?}: {on:.3} upstream queries per query, {off:.3} with early retransmission off"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_resets_and_cuts_mid_reply_cost_no_query() {
    for label in ["TCP reset", "TCP close mid-reply"] {
        each(rows(label, BOTH), all_answered).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restart_costs_only_the_queries_sent_while_it_was_down() {
    each(rows("upstream restart", &[Shape::FirstOfTwo]), |row, t| {
        all_answered(row, t);
        // The closed port is refused at once, so the second upstream is asked at once;
        // only tries already sent when it closed can wait (until it is marked down).
        let waited = t.slower_than(TEST.try_timeout);
        assert!(
            waited <= TEST.max_fails as usize,
            "{waited} queries waited the try timeout"
        );
    })
    .await;
    each(rows("upstream restart", &[Shape::Lone]), |row, t| {
        let Fault::Restart { at, down } = row.fault else {
            unreachable!()
        };
        // A refused port fails a try at once, so only queries sent while the port was
        // closed (and the tries in flight when it closed) can fail.
        let margin = Duration::from_millis(50);
        let (gone, back) = (
            t.proxy_started + at - margin,
            t.proxy_started + at + down + margin * 4,
        );
        for a in t.asked.iter().filter(|a| a.sent < gone || a.sent > back) {
            let when = a.sent - t.proxy_started;
            assert!(
                a.got == Got::Answer,
                "sent {when:?} after the proxy started: {:?}",
                a.got
            );
        }
        assert!(
            t.count(Got::Servfail) > 0,
            "the restart cost nothing: it did not happen"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_upstream_of_two_costs_the_try_timeout_only_max_fails_times() {
    // 20 ms between queries, so that the queries in flight when the upstream is marked
    // down (which fail over then, having waited a little less than try_timeout) stay
    // clear of it under a loaded machine's scheduling delays.
    let scale = Scale {
        queries: 60,
        per_second: 50.0,
        ..TEST
    };
    let row = rows("upstream blackholed", &[Shape::FirstOfTwo])[0];
    let t = run_row(row, scale).await;
    assert_nothing_forged_or_duplicated(&row, &t);
    all_answered(&row, &t);
    let paid = t.slower_than(scale.try_timeout);
    assert_eq!(
        paid, scale.max_fails as usize,
        "queries that waited the whole try timeout; the blackholed upstream saw {} queries",
        t.faulted_saw
    );
    // The ones in flight with them were sent to it too, and failed over early.
    assert!(t.faulted_saw > paid, "{}", t.faulted_saw);
}

// ---- the README's table ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full matrix for the README: bash bench/fault-matrix.sh"]
async fn fault_matrix_report() {
    let s = REPORT;
    println!(
        "{} queries per row at {} per second, each a new name; route timeout {:?}, try_timeout {:?}, max_fails {}.\n",
        s.queries, s.per_second, s.timeout, s.try_timeout, s.max_fails
    );
    println!("| fault | route | answered in time | SERVFAIL | late or lost | p50 | p99 | paid try_timeout | faulted upstream saw | upstream queries per query | retransmitted early | forged or duplicate replies reaching a client or the cache |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // FAULT_ROWS="text|text": only the rows whose fault's label contains one of them.
    let only = std::env::var("FAULT_ROWS").unwrap_or_default();
    let wanted = |r: &Row| only.split('|').any(|w| r.label.contains(w));
    for row in matrix(s).into_iter().filter(wanted) {
        let t = run_row(row, s).await;
        let ms = |d: Option<Duration>| {
            d.map_or("-".into(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1000.0)
            })
        };
        let shape = match row.shape {
            Shape::Lone => "lone upstream",
            Shape::FirstOfTwo => "first of two",
        };
        let bad = t.count(Got::Forged) + t.count(Got::Other) + t.duplicates() + t.poisoned_cache;
        println!(
            "| {} | {shape}{}{} | {:.1}% | {} | {} | {} | {} | {} | {} | {:.3} | {} | {bad} |",
            row.label,
            if row.transport == UpstreamTransport::Tcp {
                ", tcp"
            } else {
                ""
            },
            if row.budget_off {
                ", retransmit_budget = 0"
            } else {
                ""
            },
            100.0 * t.count(Got::Answer) as f64 / t.asked.len() as f64,
            t.count(Got::Servfail),
            t.count(Got::Late) + t.count(Got::Lost),
            ms(t.percentile(0.50)),
            ms(t.percentile(0.99)),
            t.slower_than(s.try_timeout),
            t.faulted_saw,
            t.upstreams_saw as f64 / t.asked.len() as f64,
            t.retransmitted_early,
        );
        if std::env::var("FAULT_SLOW").is_ok() {
            let slow: Vec<String> = t
                .asked
                .iter()
                .filter(|a| a.got == Got::Answer && a.latency >= s.try_timeout)
                .map(|a| format!("{:?}+{:?}", a.sent - t.proxy_started, a.latency))
                .collect();
            eprintln!("slow: {}", slow.join(" "));
        }
    }
}
