//! The invariants the property tests (tests/wire_props.rs) and the cargo-fuzz targets
//! (fuzz/) check, in one place so both hunt for the same bugs: whatever the bytes, no
//! panic, bounded work, and only well-formed DNS leaves zonefwd. Built only with the
//! `fuzzing` feature (the fuzz crate and the tests enable it), never into a release.

use std::net::SocketAddr;
use std::sync::OnceLock;

use crate::admit::Action;
use crate::config::{Config, LoadEnv};
use crate::handler::{Handler, ServerState};
use crate::life::Lifecycle;
use crate::transport::Transport;
use crate::wire::{self, Query, Ttls};

/// Everything a client query goes through, for any bytes.
pub fn exercise_query(bytes: &[u8]) {
    if !wire::is_answerable_query(bytes) {
        return;
    }
    match wire::parse_query(bytes) {
        Ok(q) => {
            assert!(q.qname.len() <= wire::MAX_NAME_LEN);
            assert_eq!(q.qname.len(), q.qname_lower.len());
            let up = wire::build_upstream_query(&q, 1, true);
            let back = wire::parse_query(&up).expect("our own upstream query parses");
            assert!(wire::names_equal(&back.qname, &q.qname));
            let err = wire::reply_for(&q, wire::rcode::SERVFAIL);
            assert!(err.len() >= wire::HEADER_LEN);
        }
        Err(rej) => {
            let out = rej.reply(bytes);
            assert!(out.len() >= wire::HEADER_LEN);
        }
    }
}

/// Everything an upstream reply goes through, for any bytes; what reaches the client
/// must itself walk clean.
pub fn exercise_reply(bytes: &[u8], q: &Query, id: u16) {
    let Ok(r) = wire::parse_reply(bytes, id, q) else {
        return;
    };
    let Some(n) = wire::normalize(bytes, &r) else {
        return;
    };
    for (limit, ttls) in [
        (512, Ttls::AsStored),
        (1232, Ttls::Aged(30)),
        (65535, Ttls::Fixed(30)),
    ] {
        let out = wire::render(&n, q, limit, ttls);
        assert!(out.len() <= limit.max(512), "{} > {limit}", out.len());
        assert_eq!(wire::id(&out), q.id);
        if out[3] & 0x0f != wire::rcode::SERVFAIL as u8 {
            wire::parse_reply(&out, q.id, q).expect("what zonefwd sends walks clean");
        }
    }
}

/// A client message through the whole synchronous path a listener runs: limits, ACL,
/// checks, routing and the cache. Forwarding is not run (it would send packets); the
/// job is built and dropped.
pub fn exercise_handler(bytes: &[u8]) {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    let h = HANDLER.get_or_init(|| {
        let config = Config::parse(
            "[server]\nloop_detection = false\nclient_qps = 0\n\
             [[route]]\nname = \"cloud\"\nzones = [\"privatelink.blob.core.windows.net\", \"example\"]\nupstreams = [\"127.0.0.1:9\"]\n\
             [[route]]\nname = \"rest\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1:9\"]\ncache = false\n",
            "fuzz.toml",
            &LoadEnv::default(),
        )
        .expect("the fuzz config parses");
        let state = ServerState::new(&config, Lifecycle::default());
        Handler::new(&config, &state, None)
    });
    let client: SocketAddr = "127.0.0.1:5300".parse().expect("an address");
    let server: SocketAddr = "127.0.0.1:53".parse().expect("an address");
    for transport in [Transport::Udp, Transport::Tcp] {
        match h.prepare(bytes, client, server, transport) {
            Action::Reply(out) => {
                assert!(out.len() >= wire::HEADER_LEN);
                assert_eq!(wire::id(&out), wire::id(bytes));
                assert!(out.len() <= wire::MAX_TCP_MESSAGE);
            }
            Action::Drop | Action::Forward(_) => {}
        }
    }
}

/// Any bytes as an upstream's reply to the question they themselves carry (so the
/// fuzzer can reach the paths past the ID and question match).
pub fn exercise_reply_bytes(bytes: &[u8]) {
    if bytes.len() < wire::HEADER_LEN {
        return;
    }
    let Ok(end) = wire::read_name(bytes, wire::HEADER_LEN, None) else {
        return;
    };
    let Some(question) = bytes.get(..end + 4) else {
        return;
    };
    let mut qbytes = question.to_vec();
    qbytes[2] &= 0x7f; // QR off
    qbytes[2] &= !0x78; // opcode QUERY
    qbytes[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let Ok(q) = wire::parse_query(&qbytes) else {
        return;
    };
    exercise_reply(bytes, &q, wire::id(bytes));
}

/// Any text as a configuration file: an error, or a configuration every part of the
/// server can be built from. Never a panic.
pub fn exercise_config(text: &str) {
    let Ok(config) = Config::parse(text, "fuzz.toml", &LoadEnv::default()) else {
        return;
    };
    assert!(
        !config.routes.is_empty(),
        "a valid configuration has a route"
    );
    for r in &config.routes {
        assert!(!r.upstreams.is_empty(), "route {} has no upstream", r.name);
        assert!(
            r.try_timeout <= r.timeout,
            "route {}: try_timeout past timeout",
            r.name
        );
    }
    // Each zone is routed by its own route (a zone belongs to one route).
    let router = crate::router::Router::for_config(&config);
    for (i, r) in config.routes.iter().enumerate() {
        for z in &r.zones {
            let routed = router.route(z, wire::TYPE_A).map(|m| m.route);
            assert_eq!(routed, Some(i), "a zone of route {}", r.name);
        }
    }
    let _ = crate::report::routing_table(&config);
}

/// A cached reply served to another client: the upstream's bytes (as in
/// `exercise_reply_bytes`) are stored, then looked up and rendered for a client whose
/// question spells the name differently (each bit of `spelling` flips a letter's
/// case) and whose OPT record is built from `opt` (payload size, DO bit, options).
/// The hit must carry the client's ID and spelling, fit its limit and walk clean.
pub fn exercise_cache_render(reply: &[u8], spelling: &[u8], opt: &[u8]) {
    let Some(stored_for) = question_of(reply) else {
        return;
    };
    let Ok(r) = wire::parse_reply(reply, wire::id(reply), &stored_for) else {
        return;
    };
    let Some(n) = wire::normalize(reply, &r) else {
        return;
    };
    let cache = crate::cache::Cache::new(16);
    let policy = crate::config::CachePolicy::default();
    let now = std::time::Instant::now();
    if cache.store_answer(&stored_for, n, &policy, now).is_err() {
        return;
    }
    let client = client_query(&stored_for, spelling, opt);
    let Ok(q) = wire::parse_query(&client) else {
        return;
    };
    let age = spelling.first().copied().unwrap_or(0);
    let later = now + std::time::Duration::from_secs(u64::from(age));
    let crate::cache::Lookup::Fresh { stored, age, .. } = cache.lookup(&q, &policy, later) else {
        return;
    };
    for limit in [512, Transport::Udp.limit(&q), Transport::Tcp.limit(&q)] {
        let out = wire::render(&stored.reply, &q, limit, Ttls::Aged(age));
        assert!(out.len() <= limit.max(512), "{} > {limit}", out.len());
        assert_eq!(wire::id(&out), q.id);
        if out[3] & 0x0f == wire::rcode::SERVFAIL as u8 {
            continue;
        }
        let spelled = &out[wire::HEADER_LEN..wire::HEADER_LEN + q.qname.len()];
        assert_eq!(spelled, &q.qname[..], "the client's spelling");
        wire::parse_reply(&out, q.id, &q).expect("a cache hit walks clean");
    }
}

/// The question a reply carries, as the query it would answer.
fn question_of(bytes: &[u8]) -> Option<Query> {
    if bytes.len() < wire::HEADER_LEN {
        return None;
    }
    let end = wire::read_name(bytes, wire::HEADER_LEN, None).ok()?;
    let mut qbytes = bytes.get(..end + 4)?.to_vec();
    qbytes[2] &= 0x7f; // QR off
    qbytes[2] &= !0x78; // opcode QUERY
    qbytes[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    wire::parse_query(&qbytes).ok()
}

/// A client query for `q`'s question, respelled by `spelling`, with an OPT record from
/// `opt` when it has at least three octets: payload size, then DO, then raw options.
fn client_query(q: &Query, spelling: &[u8], opt: &[u8]) -> Vec<u8> {
    let mut name = q.qname.clone();
    let letters = name.iter_mut().filter(|b| b.is_ascii_alphabetic());
    for (bit, b) in letters.enumerate() {
        if spelling
            .get(bit / 8)
            .is_some_and(|s| s >> (bit % 8) & 1 == 1)
        {
            *b ^= 0x20;
        }
    }
    let with_opt = opt.len() >= 3;
    let mut m = vec![
        0xab,
        0xcd,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(with_opt),
    ];
    m.extend_from_slice(&name);
    m.extend_from_slice(&q.qtype.to_be_bytes());
    m.extend_from_slice(&q.qclass.to_be_bytes());
    if with_opt {
        let options = &opt[3..opt.len().min(3 + 512)];
        m.extend_from_slice(&[0, 0, 41, opt[0], opt[1], 0, 0, opt[2] & 0x80, 0]);
        m.extend_from_slice(&(options.len() as u16).to_be_bytes());
        m.extend_from_slice(options);
    }
    m
}
