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
    for transport in [Transport::Udp, Transport::Tcp] {
        match h.prepare(bytes, client, transport) {
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
