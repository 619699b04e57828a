//! Messages that are not well-formed queries: each gets its rcode, or no answer at
//! all, and none of them is forwarded (RFC 1035 4.1, RFC 6891 6.1, RFC 8906).
mod common;

use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

/// What a client hears back.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// No answer at all: responses and runts are dropped (no reflection, no loops).
    Nothing,
    /// An answer with this rcode (the OPT's extended bits included), and the client's
    /// ID and opcode echoed.
    Rcode(u16),
}

use Heard::{Nothing, Rcode};

// The rcodes by name (RFC 1035 4.1.1, RFC 6891 9).
const FORMERR: u16 = 1;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

struct Case {
    what: &'static str,
    /// The message, made from a good query for x.example. A.
    msg: fn(&[u8]) -> Vec<u8>,
    heard: Heard,
}

/// The good query's header and question name, then `rest`.
fn question_of(good: &[u8], name: &[u8]) -> Vec<u8> {
    let mut m = good[..12].to_vec();
    m.extend_from_slice(name);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

const OPT: [u8; 11] = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0];

const CASES: &[Case] = &[
    Case {
        what: "a response (QR=1)",
        msg: |good| {
            let mut m = good.to_vec();
            m[2] |= 0x80;
            m
        },
        heard: Nothing,
    },
    Case {
        what: "shorter than a header",
        msg: |_| vec![1, 2, 3, 4, 5],
        heard: Nothing,
    },
    Case {
        what: "two questions",
        msg: |good| {
            let mut m = good.to_vec();
            m[5] = 2;
            m.extend_from_slice(&good[12..]);
            m
        },
        heard: Rcode(FORMERR),
    },
    Case {
        what: "trailing garbage",
        msg: |good| [good, b"junk"].concat(),
        heard: Rcode(FORMERR),
    },
    Case {
        what: "a label that runs past the end",
        msg: |good| good[..15].to_vec(),
        heard: Rcode(FORMERR),
    },
    Case {
        what: "a compression pointer loop in the question",
        msg: |good| {
            let mut m = good[..12].to_vec();
            m.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
            m
        },
        heard: Rcode(FORMERR),
    },
    Case {
        what: "no question at all",
        msg: |good| {
            let mut m = good[..12].to_vec();
            m[4..6].copy_from_slice(&[0, 0]);
            m
        },
        heard: Rcode(FORMERR),
    },
    Case {
        what: "two OPT records (RFC 6891 6.1.1)",
        msg: |good| {
            let mut m = good.to_vec();
            m[11] = 2;
            m.extend_from_slice(&OPT);
            m.extend_from_slice(&OPT);
            m
        },
        heard: Rcode(FORMERR),
    },
    Case {
        // Its length octet reads as a reserved label type.
        what: "a label longer than 63 octets",
        msg: |good| question_of(good, &[[64].as_slice(), &[b'a'; 64], &[0]].concat()),
        heard: Rcode(FORMERR),
    },
    Case {
        what: "a name longer than 255 octets (five labels of 63)",
        msg: |good| {
            let label = [[63].as_slice(), &[b'a'; 63]].concat();
            question_of(good, &[label.repeat(5), vec![0]].concat())
        },
        heard: Rcode(FORMERR),
    },
    Case {
        what: "NOTIFY, opcode 4 (RFC 8906 3.1.3)",
        msg: |good| {
            let mut m = good.to_vec();
            m[2] = (m[2] & 0x87) | (4 << 3);
            m
        },
        heard: Rcode(NOTIMP),
    },
    Case {
        what: "AXFR through a forwarder",
        msg: |good| {
            let mut m = good.to_vec();
            let at = m.len() - 4;
            m[at..at + 2].copy_from_slice(&252u16.to_be_bytes());
            m
        },
        heard: Rcode(REFUSED),
    },
    Case {
        what: "an EDNS version above 0 (RFC 6891 6.1.3)",
        msg: |good| {
            let mut m = good.to_vec();
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 1, 0, 0, 0, 0]);
            m
        },
        heard: Rcode(BADVERS),
    },
];

/// What a client hears back for `msg`, checking the header echo of any answer.
async fn heard(server: std::net::SocketAddr, msg: &[u8]) -> Heard {
    let Some(out) = raw_udp(server, msg, Duration::from_millis(400)).await else {
        return Nothing;
    };
    assert_eq!(out[..2], msg[..2], "the client's ID echoed");
    assert_eq!(
        (out[2] >> 3) & 0x0f,
        (msg[2] >> 3) & 0x0f,
        "the client's opcode echoed"
    );
    let extended = hickory_proto::op::Message::from_vec(&out)
        .map(|m| u16::from(m.metadata.response_code))
        .unwrap_or(u16::from(out[3] & 0x0f));
    Rcode(extended)
}

#[tokio::test]
async fn malformed_and_non_query_messages_get_their_rcode_or_nothing() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let good = query("x.example.", RecordType::A, None).to_vec().unwrap();
    for case in CASES {
        let msg = (case.msg)(&good);
        assert_eq!(heard(z.udp, &msg).await, case.heard, "{}", case.what);
    }
    assert_eq!(up.count(), 0, "nothing malformed was forwarded");
    // And the server still serves.
    let r = ask(
        &udp_client(z.udp),
        query("still.example.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    z.stop().await.unwrap();
}

/// The good query with `n` EDNS options of an unknown code.
fn with_options(good: &[u8], n: u16) -> Vec<u8> {
    let mut m = good.to_vec();
    m[11] = 1;
    let options: Vec<u8> = (0..n)
        .flat_map(|i| [0xfd, 0xe9, 0, 2, (i >> 8) as u8, i as u8])
        .collect();
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    m.extend_from_slice(&(options.len() as u16).to_be_bytes());
    m.extend_from_slice(&options);
    m
}

#[tokio::test]
async fn hundreds_of_unknown_edns_options_are_answered_and_stay_with_the_client() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let good = query("x.example.", RecordType::A, None).to_vec().unwrap();
    // RFC 6891 6.1.2: unknown options are ignored; in bounded time, and none forwarded.
    let (out, took) = timed(raw_udp(
        z.udp,
        &with_options(&good, 600),
        Duration::from_secs(5),
    ))
    .await;
    assert_eq!(out.expect("answered")[3] & 0x0f, 0);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let fwd = up.seen().pop().expect("forwarded");
    let opt_len = fwd
        .msg
        .edns
        .as_ref()
        .map_or(0, |e| e.options().as_ref().len());
    assert_eq!(opt_len, 0, "the client's options stay with the client");
    assert!(
        fwd.raw.len() < 100,
        "{} octets went upstream",
        fwd.raw.len()
    );
    z.stop().await.unwrap();
}

#[tokio::test]
async fn a_query_longer_than_a_udp_read_is_formerr() {
    let up = Fake::answering_a().await;
    let z = Zonefwd::start(&one_route(&[up.addr], "")).await;
    let good = query("x.example.", RecordType::A, None).to_vec().unwrap();
    // Thousands of options (18 KB): more than a UDP query may be (4 KB read), so the
    // read is cut and the rest does not parse.
    let (out, took) = timed(raw_udp(
        z.udp,
        &with_options(&good, 3000),
        Duration::from_secs(5),
    ))
    .await;
    assert_eq!(out.expect("answered")[3] & 0x0f, 1);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(up.count(), 0, "nothing forwarded");
    z.stop().await.unwrap();
}
