//! Property tests: no input makes the wire code panic, loop, or emit something that is
//! not a well-formed DNS message. Random bytes, and valid messages with bytes flipped,
//! cut or spliced, go through every path a packet from a client or an upstream takes.

use proptest::prelude::*;
use zonefwd::fuzzing::{
    exercise_cache_render, exercise_config, exercise_handler, exercise_query, exercise_reply,
    exercise_reply_bytes,
};
use zonefwd::wire::{self, Query, Ttls};

/// A valid query for `name` with optional EDNS, built by hand so the test does not
/// depend on the code under test.
fn query_bytes(name: &[u8], qtype: u16, edns: bool) -> Vec<u8> {
    let mut m = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    m.extend_from_slice(name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if edns {
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
    }
    m
}

/// A valid reply to `q` with `n` compressed A records and an SOA in authority.
fn reply_bytes(q: &Query, id: u16, n: u8) -> Vec<u8> {
    let mut r = wire::build_upstream_query(q, id, false);
    r[2] |= 0x80;
    r[7] = n;
    r[9] = 1;
    for i in 0..n {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, i]);
    }
    r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
    for v in [1u32, 2, 3, 4, 5] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(3000)
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec("[a-zA-Z0-9-]{1,20}", 0..5).prop_map(|labels| {
        let mut w = Vec::new();
        for l in labels {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutate(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for mu in muts {
        if m.is_empty() {
            break;
        }
        match mu {
            Mutation::Flip(at, x) => {
                let i = at % m.len();
                m[i] ^= x;
            }
            Mutation::Cut(at) => m.truncate(at % (m.len() + 1)),
            Mutation::Insert(at, bytes) => {
                let i = at % (m.len() + 1);
                m.splice(i..i, bytes.iter().copied());
            }
        }
    }
    m
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(a, x)| Mutation::Flip(a, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

proptest! {
    // 3000 cases each in CI; PROPTEST_CASES=100000 for a longer hunt.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_a_query(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise_query(&bytes);
        exercise_handler(&bytes);
    }

    #[test]
    fn mutated_queries(name in name_strategy(), qtype in any::<u16>(), edns in any::<bool>(),
                       muts in prop::collection::vec(mutation(), 1..6)) {
        let bytes = mutate(query_bytes(&name, qtype, edns), &muts);
        exercise_query(&bytes);
        exercise_handler(&bytes);
    }

    #[test]
    fn random_bytes_as_a_reply(name in name_strategy(), tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let q = wire::parse_query(&query_bytes(&name, 1, true)).unwrap();
        // A header that passes the ID/QR checks and the question, then anything.
        let mut r = reply_bytes(&q, 7, 0);
        r.truncate(wire::HEADER_LEN + name.len() + 4);
        r[6] = tail.first().copied().unwrap_or(0);
        r[7] = tail.get(1).copied().unwrap_or(0);
        r[9] = tail.get(2).copied().unwrap_or(0);
        r[11] = tail.get(3).copied().unwrap_or(0);
        r.extend_from_slice(&tail);
        exercise_reply(&r, &q, 7);
        exercise_reply_bytes(&r);
    }

    #[test]
    fn mutated_replies(name in name_strategy(), n in 0u8..30, muts in prop::collection::vec(mutation(), 1..6)) {
        let q = wire::parse_query(&query_bytes(&name, 1, true)).unwrap();
        let r = mutate(reply_bytes(&q, 9, n), &muts);
        exercise_reply(&r, &q, 9);
        exercise_reply_bytes(&r);
    }

    #[test]
    fn cached_replies_for_other_spellings_and_opts(name in name_strategy(), n in 1u8..30,
            spelling in prop::collection::vec(any::<u8>(), 0..8),
            opt in prop::collection::vec(any::<u8>(), 0..40)) {
        let q = wire::parse_query(&query_bytes(&name, 1, true)).unwrap();
        exercise_cache_render(&reply_bytes(&q, 9, n), &spelling, &opt);
    }

    #[test]
    fn config_text_with_bytes_flipped(at in any::<prop::sample::Index>(), with in any::<u8>(),
            cut in any::<prop::sample::Index>()) {
        // The reference file, one byte replaced and the rest cut somewhere.
        let mut text = include_bytes!("../config/reference.toml").to_vec();
        let i = at.index(text.len());
        text[i] = with;
        text.truncate(cut.index(text.len()) + 1);
        if let Ok(t) = std::str::from_utf8(&text) {
            exercise_config(t);
        }
    }
}

/// Every input the fuzzers found a failure with, kept in fuzz/regressions/ (named
/// after its target), passes its target's checks now.
#[test]
fn the_fuzz_regressions_hold() {
    let mut ran = 0;
    for entry in std::fs::read_dir("fuzz/regressions").unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match name.split_once("-crash-").map(|(target, _)| target) {
            Some("cache_render") => {
                // The fuzz target's own framing: a 2-octet length, the reply, 8 octets
                // of spelling, the client's OPT.
                let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
                let (reply, rest) = data[2..].split_at(len);
                let (spelling, opt) = rest.split_at(rest.len().min(8));
                exercise_cache_render(reply, spelling, opt);
            }
            Some("upstream_reply") => exercise_reply_bytes(&data),
            Some("client_query") => exercise_query(&data),
            Some("config_text") => exercise_config(&String::from_utf8_lossy(&data)),
            _ => panic!("{name}: name it TARGET-crash-HASH"),
        }
        ran += 1;
    }
    assert!(ran > 0, "no regression inputs found");
}

/// The configuration files in the repository are valid and pass `exercise_config`'s
/// checks; the fuzz target starts from them (fuzz/corpus/config_text).
#[test]
fn the_shipped_configurations_pass_the_config_invariants() {
    for path in [
        "config/reference.toml",
        "config/zonefwd.toml",
        "config/azure.toml",
    ] {
        let text = std::fs::read_to_string(path).unwrap();
        zonefwd::Config::parse(&text, path, &zonefwd::LoadEnv::default())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        exercise_config(&text);
    }
}

/// Many names in a 64 KiB reply, and deep pointer chains: linear, not quadratic.
#[test]
fn a_64k_reply_with_thousands_of_names_is_walked_and_relayed_fast() {
    let q = wire::parse_query(&query_bytes(&[1, b'x', 0], 1, true)).unwrap();
    let mut r = wire::build_upstream_query(&q, 5, false);
    r[2] |= 0x80;
    let mut count = 0u16;
    // Each record's owner is a new label in front of a pointer to the previous owner:
    // names grow long through chains of pointers.
    let mut prev = 12u16;
    while r.len() < 65_000 && count < 4000 {
        let at = r.len() as u16;
        let label = [3, b'a' + (count % 26) as u8, b'b', b'c'];
        r.extend_from_slice(&label);
        r.extend_from_slice(&(0xc000 | prev).to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        count += 1;
        // Keep names under 255 octets (restart the chain every 50 links), and pointer
        // targets within the 14 bits a pointer has.
        prev = if count.is_multiple_of(50) || at >= 0x4000 {
            12
        } else {
            at
        };
    }
    r[6..8].copy_from_slice(&count.to_be_bytes());
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let p = wire::parse_reply(&r, 5, &q).expect("walks");
        let n = wire::normalize(&r, &p).unwrap();
        let out = wire::render(&n, &q, 65535, Ttls::Aged(1));
        assert!(out.len() >= r.len());
    }
    // Generous: 20 walks of 4000 records take milliseconds; quadratic work would not.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
