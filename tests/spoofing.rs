//! RFC 5452 section 9 in numbers: the IDs and source ports of 20,000 upstream queries.
//!
//! A spoofer who cannot see the traffic must guess both; the test measures how much
//! there is to guess. Thresholds are chi-square bounds far in the tail (a uniform
//! source fails them with odds of about one in a billion), so they do not flake, yet a
//! counter, a fixed port or a weak generator fails them at once.
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const QUERIES: usize = 20_000;
const WINDOW: usize = 200;
/// The ID every client query carries: upstream IDs must not echo it.
const CLIENT_ID: u16 = 0x4242;

fn chi_square(counts: &[u32], samples: usize) -> f64 {
    let expected = samples as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (f64::from(c) - expected).powi(2) / expected)
        .sum()
}

fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The upstream queries zonefwd sends for `QUERIES` client queries, `WINDOW` at a time,
/// with `server` keys added; and the windows in which a client query had to be sent
/// again (so not all of that window's queries were in flight together).
async fn upstream_queries(server: &str, delay: Duration) -> (Vec<Seen>, HashSet<usize>) {
    let up = Fake::start(move |q, _| {
        vec![
            Step::Sleep(delay),
            Step::Reply(reply_a(q, [192, 0, 2, 1], 60)),
        ]
    })
    .await;
    let z = Zonefwd::start(&format!(
        "[server]\nclient_qps = 0\n{server}\n{}",
        one_route(&[up.addr], "cache = false")
    ))
    .await;
    let mut resent = HashSet::new();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 2048];
    for start in (0..QUERIES).step_by(WINDOW) {
        // A window of queries at once; whatever the loopback dropped under the burst
        // (a busy CI machine) is sent again, as a stub resolver would.
        let mut pending: HashSet<usize> = (start..start + WINDOW).collect();
        for round in 0..10 {
            for &i in &pending {
                let mut q = query(&format!("n{i}.example."), RecordType::A, None);
                q.metadata.id = CLIENT_ID;
                sock.send_to(&q.to_vec().unwrap(), z.udp).await.unwrap();
            }
            while !pending.is_empty() {
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
                else {
                    break;
                };
                let r = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(r.metadata.id, CLIENT_ID, "the client gets its own ID back");
                let name = qname_of(&r);
                let i: usize = name[1..name.find('.').unwrap()].parse().unwrap();
                pending.remove(&i);
            }
            if pending.is_empty() {
                break;
            }
            resent.insert(start / WINDOW);
            assert!(
                round < 9,
                "{} of the window at {start} never answered",
                pending.len()
            );
        }
    }
    z.stop().await.unwrap();
    (up.seen(), resent)
}

/// IDs: every bit a fair coin, both bytes uniform, the client's ID not echoed.
fn check_ids(seen: &[Seen]) -> String {
    // One upstream query per client query, plus one for any query sent again.
    assert!(
        (QUERIES..QUERIES + QUERIES / 5).contains(&seen.len()),
        "{} upstream queries",
        seen.len()
    );

    let ids: Vec<u16> = seen.iter().map(|s| s.msg.metadata.id).collect();
    for bit in 0..16 {
        let ones = ids.iter().filter(|&&id| id >> bit & 1 == 1).count();
        let share = ones as f64 / ids.len() as f64;
        // sd = 0.0035; 0.03 is more than eight of them.
        assert!(
            (0.47..=0.53).contains(&share),
            "id bit {bit} set in {share:.3}"
        );
    }
    let mut hi = [0u32; 256];
    let mut lo = [0u32; 256];
    for &id in &ids {
        hi[usize::from(id >> 8)] += 1;
        lo[usize::from(id & 0xff)] += 1;
    }
    let (chi_hi, chi_lo) = (chi_square(&hi, ids.len()), chi_square(&lo, ids.len()));
    // 255 degrees of freedom: mean 255, sd 22.6; 420 is seven sd out.
    assert!(
        chi_hi < 420.0 && chi_lo < 420.0,
        "id bytes: chi2 {chi_hi:.0} / {chi_lo:.0}"
    );
    let echoed = ids.iter().filter(|&&id| id == CLIENT_ID).count();
    // Chance alone gives 20000/65536 = 0.3.
    assert!(
        echoed <= 4,
        "{echoed} upstream queries reused the client's ID"
    );
    let distinct_ids = ids.iter().collect::<HashSet<_>>().len();
    // Uniform over 2^16: 65536 * (1 - e^(-20000/65536)) = 17,266 expected.
    assert!(distinct_ids > 16_500, "{distinct_ids} distinct IDs");
    format!(
        "{distinct_ids} distinct IDs (chi2 hi/lo byte {chi_hi:.0}/{chi_lo:.0} on 255 df), client ID echoed {echoed}x"
    )
}

/// Ports: `ports` (one per socket) spread uniformly over the whole ephemeral range.
fn check_ports(ports: &[u16]) -> String {
    let (low, high) = ephemeral_range();
    let span = usize::from(high - low) + 1;
    assert!(
        ports.iter().all(|&p| (low..=high).contains(&p)),
        "a port outside {low}-{high}"
    );
    let distinct_ports = ports.iter().collect::<HashSet<_>>().len();
    let expected_distinct = span as f64 * (1.0 - (-(ports.len() as f64) / span as f64).exp());
    assert!(
        distinct_ports as f64 > expected_distinct * 0.9,
        "{distinct_ports} distinct ports, {expected_distinct:.0} expected from a uniform choice"
    );
    let mut buckets = [0u32; 64];
    for &p in ports {
        buckets[usize::from(p - low) * 64 / span] += 1;
    }
    let chi_ports = chi_square(&buckets, ports.len());
    // 63 degrees of freedom: mean 63, sd 11.2; 150 is nearly eight sd out.
    assert!(
        chi_ports < 150.0,
        "ports over 64 buckets: chi2 {chi_ports:.0}"
    );
    let (pmin, pmax) = (ports.iter().min().unwrap(), ports.iter().max().unwrap());
    format!(
        "{distinct_ports} distinct ports of {span} in {low}-{high} (expected {expected_distinct:.0}), \
         seen {pmin}-{pmax}, chi2 {chi_ports:.0} on 63 df"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_socket_per_query_ids_and_ports_are_unpredictable() {
    let (seen, _) = upstream_queries("upstream_udp_reuse = 1", Duration::ZERO).await;
    let ids = check_ids(&seen);
    let ports: Vec<u16> = seen.iter().map(|s| s.from.port()).collect();
    let ports = check_ports(&ports);
    eprintln!("spread of {QUERIES} upstream queries, a socket each: {ids}; {ports}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pooled_sockets_queries_in_flight_never_share_a_port() {
    // The default: a socket carries up to 10 queries, one at a time. The upstream
    // holds each answer 50 ms, so a window's 200 queries are all in flight together.
    let (seen, _) = upstream_queries("", Duration::from_millis(50)).await;
    let ids = check_ids(&seen);
    // The upstream holds each answer 50 ms, so a query on a port arriving less than
    // 50 ms after the one before it means both were in flight at once: two open
    // sockets cannot share a port, so it would be one socket with two queries. This
    // holds however slowly the machine runs.
    let mut by_port: std::collections::HashMap<u16, Vec<std::time::Instant>> = Default::default();
    for s in &seen {
        by_port.entry(s.from.port()).or_default().push(s.at);
    }
    for (port, mut arrivals) in by_port {
        arrivals.sort();
        for pair in arrivals.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(50),
                "port {port}: two queries in flight at once ({gap:?} apart)"
            );
        }
    }
    // One port per socket: a port is counted again each time it starts a new run of
    // 10 queries (a socket's most).
    let mut uses: std::collections::HashMap<u16, usize> = Default::default();
    let mut sockets = Vec::new();
    for s in &seen {
        let n = uses.entry(s.from.port()).or_default();
        if (*n).is_multiple_of(10) {
            sockets.push(s.from.port());
        }
        *n += 1;
    }
    assert!(
        sockets.len() >= QUERIES / 10,
        "{} sockets for {QUERIES} queries: more than 10 queries per port",
        sockets.len()
    );
    let ports = check_ports(&sockets);
    eprintln!(
        "spread of {QUERIES} upstream queries, pooled sockets: {ids}; {} sockets: {ports}",
        sockets.len()
    );
}
