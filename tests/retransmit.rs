//! Early retransmission: a try late by its upstream's measure is retransmitted before
//! `try_timeout`, within `retransmit_budget`, and without counting as a failure.
//!
//! The upstream's model needs answers first, so each test warms it with `WARM`
//! quickly answered names, then switches the fake upstream to the behaviour under
//! test. Routes use a `try_timeout` of seconds against a threshold of about 10 ms
//! (the floor, on loopback), so "early" and "at try_timeout" are far apart whatever
//! the machine's load: the tests bound times only by `try_timeout` itself.
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RData;

const IP: [u8; 4] = [192, 0, 2, 1];

/// Answers the model needs before it sets a threshold (`latency::MIN_SAMPLES`, 10),
/// and some.
const WARM: usize = 40;

/// What the fake upstream does with the queries for one name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Behaviour {
    /// Answers every query at once.
    Answer = 0,
    /// Drops the first query for each name (a lost datagram), answers the others.
    DropFirst = 1,
    /// Answers the first query for each name after `LATE`, drops the others: the late
    /// try is the one that answers.
    LateFirst = 2,
    /// Answers every query after `SLOW`: slow, not lossy.
    Slow = 3,
    /// Answers nothing.
    Silent = 4,
    /// Answers over TCP only: every datagram lost.
    TcpOnly = 5,
}

const LATE: Duration = Duration::from_millis(300);
const SLOW: Duration = Duration::from_millis(100);

/// A fake upstream whose behaviour the test switches.
struct Switchable {
    fake: Fake,
    behaviour: Arc<AtomicU8>,
}

impl Switchable {
    async fn start() -> Switchable {
        let behaviour = Arc::new(AtomicU8::new(Behaviour::Answer as u8));
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let b = Arc::clone(&behaviour);
        let fake = Fake::start(move |q, tcp| {
            let nth = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(qname_of(q)).or_default();
                *n += 1;
                *n
            };
            let answer = Step::Reply(reply_a(q, IP, 60));
            match b.load(Ordering::SeqCst) {
                0 => vec![answer],
                1 if nth == 1 => vec![],
                1 => vec![answer],
                2 if nth == 1 => vec![Step::Sleep(LATE), answer],
                2 => vec![],
                3 => vec![Step::Sleep(SLOW), answer],
                5 if tcp => vec![answer],
                _ => vec![],
            }
        })
        .await;
        Switchable { fake, behaviour }
    }

    fn set(&self, b: Behaviour) {
        self.behaviour.store(b as u8, Ordering::SeqCst);
    }
}

/// A zonefwd with metrics and one route `r` for `test.` to `upstreams`, with `extra`
/// route keys.
async fn zonefwd(upstreams: &[SocketAddr], extra: &str) -> Zonefwd {
    Zonefwd::start_config(
        Conf::new()
            .server("metrics = \"127.0.0.1:0\"")
            .route("r", &["test."], upstreams, extra)
            .build(),
    )
    .await
}

/// Asks `n` new names one after another, all answered.
async fn warm(z: &Zonefwd, n: usize) {
    for i in 0..n {
        let (r, _) = ask_timed(z, &format!("warm{i}.test.")).await;
        assert_eq!(r, Some(IP), "warm-up query {i}");
    }
}

/// Asks for `name`: the A record, if one came, and how long it took.
async fn ask_timed(z: &Zonefwd, name: &str) -> (Option<[u8; 4]>, Duration) {
    let (reply, took) = timed(ask_a(z.udp, name)).await;
    let ip = match reply.metadata.response_code {
        ResponseCode::NoError => reply.answers.iter().find_map(|rr| match &rr.data {
            RData::A(a) => Some(a.0.octets()),
            _ => None,
        }),
        _ => None,
    };
    (ip, took)
}

/// The route's retransmission counters for `upstream`, from the metrics.
#[derive(Debug, Default, PartialEq)]
struct Retransmits {
    late: u64,
    timeout: u64,
    wasted: u64,
    held: u64,
}

async fn retransmits(z: &Zonefwd, upstream: SocketAddr) -> Retransmits {
    let text = scrape(z).await;
    let labels = format!("{{route=\"r\",upstream=\"{upstream}\"");
    let get = |name: &str, more: &str| metric(&text, &format!("{name}{labels}{more}}}"));
    Retransmits {
        late: get("zonefwd_upstream_retransmits_total", ",reason=\"late\""),
        timeout: get("zonefwd_upstream_retransmits_total", ",reason=\"timeout\""),
        wasted: get("zonefwd_upstream_retransmits_wasted_total", ""),
        held: get("zonefwd_upstream_retransmits_held_total", ""),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_datagram_is_retransmitted_early_only_with_a_model_and_a_budget() {
    let try_timeout = Duration::from_secs(1);
    // (case, answers measured first, route keys, retransmitted early)
    let cases = [
        ("a warm model", WARM, "", true),
        ("too few samples", 5, "", false),
        (
            "retransmit_budget = 0",
            WARM,
            "retransmit_budget = 0",
            false,
        ),
    ];
    for (case, warmed, keys, early) in cases {
        let up = Switchable::start().await;
        let z = zonefwd(
            &[up.fake.addr],
            &format!("try_timeout = \"1s\"\ntimeout = \"4s\"\n{keys}"),
        )
        .await;
        warm(&z, warmed).await;
        up.set(Behaviour::DropFirst);
        for i in 0..3 {
            let name = format!("lost{i}.test.");
            let (ip, took) = ask_timed(&z, &name).await;
            assert_eq!(ip, Some(IP), "{case}: {name}");
            assert_eq!(asked(&up.fake, &name), 2, "{case}: {name}");
            assert_eq!(took < try_timeout, early, "{case}: {name} took {took:?}");
        }
        let r = retransmits(&z, up.fake.addr).await;
        let (late, timeout) = if early { (3, 0) } else { (0, 3) };
        assert_eq!((r.late, r.timeout), (late, timeout), "{case}: {r:?}");
        z.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_udp_try_is_lost_the_last_goes_over_tcp() {
    let up = Switchable::start().await;
    let z = zonefwd(&[up.fake.addr], "try_timeout = \"2s\"\ntimeout = \"5s\"").await;
    warm(&z, WARM).await;
    up.set(Behaviour::TcpOnly);
    let (ip, took) = ask_timed(&z, "lossy.test.").await;
    assert_eq!(ip, Some(IP));
    // Three datagrams lost within milliseconds, then TCP: well before try_timeout.
    assert!(took < Duration::from_secs(2), "{took:?}");
    let seen = up.fake.seen();
    let over = |tcp: bool| {
        let lossy = |s: &&Seen| s.tcp == tcp && qname_of(&s.msg) == "lossy.test.";
        seen.iter().filter(lossy).count()
    };
    assert_eq!((over(false), over(true)), (3, 1));
    z.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_try_stays_open_and_its_answer_wins_over_its_retransmission() {
    let up = Switchable::start().await;
    let z = zonefwd(&[up.fake.addr], "try_timeout = \"3s\"").await;
    warm(&z, WARM).await;
    up.set(Behaviour::LateFirst);
    let name = "late.test.";
    let (ip, took) = ask_timed(&z, name).await;
    // Every retransmission went unanswered: the answer is the late first try's.
    assert_eq!(ip, Some(IP));
    assert!(took >= LATE && took < Duration::from_secs(3), "{took:?}");
    // A lone upstream's three UDP tries and the last one over TCP: each late by the
    // same measure, each retransmitted.
    assert_eq!(asked(&up.fake, name), 4);
    let r = retransmits(&z, up.fake.addr).await;
    // Wasted: the first, whose doubled try answered. The others never answer.
    assert_eq!((r.late, r.wasted), (3, 1), "{r:?}");
    z.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasted_retransmissions_stay_within_the_budget_and_are_not_failures() {
    let up = Switchable::start().await;
    // max_fails 2: were a late try a failure, two would take the lone upstream out.
    let z = zonefwd(&[up.fake.addr], "try_timeout = \"3s\"\nmax_fails = 2").await;
    warm(&z, WARM).await;
    // Slow, not lossy: every retransmission is wasted until the model has seen the
    // new answer times, and the budget (5% of the tries) holds the rest back.
    up.set(Behaviour::Slow);
    let asked_slow = 20;
    for i in 0..asked_slow {
        let (ip, _) = ask_timed(&z, &format!("slow{i}.test.")).await;
        assert_eq!(ip, Some(IP), "slow{i}");
    }
    let r = retransmits(&z, up.fake.addr).await;
    let tries = (WARM + asked_slow) as f64 + r.late as f64;
    assert!(r.late >= 1, "no early retransmission at all: {r:?}");
    assert!(r.held >= 1, "the budget never held one back: {r:?}");
    assert!(
        (r.wasted as f64) <= 0.05 * tries + 1.0,
        "{} wasted of {tries} tries: {r:?}",
        r.wasted
    );
    let text = scrape(&z).await;
    let up_metric = format!(
        "zonefwd_upstream_up{{route=\"r\",upstream=\"{}\"}}",
        up.fake.addr
    );
    assert_eq!(metric(&text, &up_metric), 1, "the upstream was marked down");
    assert_eq!(
        metric(&text, "zonefwd_upstream_timeouts_total"),
        0,
        "a late try counted as timed out"
    );
    z.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doubled_try_that_never_answers_still_counts_towards_max_fails() {
    // The first of two upstreams goes silent after its model is made: each query is
    // retransmitted early to the second and answered there, and its first try, left
    // behind when the query ended, still times out and marks the first one down.
    let (first, second) = (Switchable::start().await, Fake::answering_a().await);
    let z = zonefwd(
        &[first.fake.addr, second.addr],
        "try_timeout = \"1s\"\nmax_fails = 3",
    )
    .await;
    warm(&z, WARM).await;
    first.set(Behaviour::Silent);
    for i in 0..5 {
        let name = format!("dark{i}.test.");
        let (ip, took) = ask_timed(&z, &name).await;
        assert_eq!(ip, Some(IP), "{name}");
        assert!(took < Duration::from_secs(1), "{name} waited {took:?}");
    }
    let metrics = z.metrics.unwrap();
    let up_metric = format!(
        "zonefwd_upstream_up{{route=\"r\",upstream=\"{}\"}}",
        first.fake.addr
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(metrics, "/metrics").await.1;
        if metric(&text, &up_metric) == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked down:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    z.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_threshold_in_effect_is_try_timeout_until_the_model_has_its_samples() {
    let up = Switchable::start().await;
    let z = zonefwd(&[up.fake.addr], "try_timeout = \"2s\"").await;
    let threshold = || async {
        let text = scrape(&z).await;
        let line = format!(
            "zonefwd_upstream_retransmit_threshold_seconds{{route=\"r\",upstream=\"{}\"}} ",
            up.fake.addr
        );
        let value = text.lines().find_map(|l| l.strip_prefix(line.as_str()));
        value
            .unwrap_or_else(|| panic!("no threshold:\n{text}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(threshold().await, 2.0);
    warm(&z, WARM).await;
    // On loopback the answers take well under a millisecond: the floor, 10 ms.
    let t = threshold().await;
    assert!((0.010..0.1).contains(&t), "{t}");
    z.stop().await.unwrap();
}
