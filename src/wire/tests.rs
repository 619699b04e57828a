use super::fields::{count, push_opt, push_question};
use super::*;

/// The path a forwarded reply takes: normalize, then render with TTLs as stored.
fn relay(msg: &[u8], r: &Reply, q: &Query, limit: usize) -> Vec<u8> {
    match normalize(msg, r) {
        Some(n) => render(&n, q, limit, Ttls::AsStored),
        None => reply_for(q, rcode::SERVFAIL),
    }
}

/// Number of labels in an uncompressed wire name, the root not counted.
fn label_count(name: &[u8]) -> usize {
    label_offsets(name).count()
}

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        v.extend_from_slice(&c.to_be_bytes());
    }
    v
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut v = header(0x1234, FLAG_RD, [1, 0, 0, 0]);
    push_question(&mut v, &name_from_str(name).unwrap(), qtype, CLASS_IN);
    v
}

#[test]
fn lowercase_folds_labels_and_keeps_every_length() {
    // Every label length a name can have (1-63), in upper case.
    let labels: Vec<String> = (1..=63).map(|n| "AZ".repeat(32)[..n].to_string()).collect();
    for chunk in labels.chunks(3) {
        let mut w = name_from_str(&chunk.join(".")).unwrap();
        lowercase(&mut w);
        assert_eq!(w, name_from_str(&chunk.join(".").to_lowercase()).unwrap());
    }
    let q = parse_query(&query("WwW.ExAmPlE.", 1)).unwrap();
    assert_eq!(q.qname_lower, name_from_str("www.example.").unwrap());
    assert_eq!(q.qname, name_from_str("WwW.ExAmPlE.").unwrap());
}

#[test]
fn names_round_trip_and_validate() {
    let w = name_from_str("Www.Example.COM.").unwrap();
    assert_eq!(name_to_string(&w), "Www.Example.COM.");
    assert_eq!(name_from_str("."), Ok(vec![0]));
    assert_eq!(name_to_string(&[0]), ".");
    assert_eq!(name_from_str("a..b"), Err(NameError::EmptyLabel));
    assert_eq!(name_from_str(&"a".repeat(64)), Err(NameError::LabelTooLong));
    let long = vec!["abcdefghi"; 26].join(".");
    assert_eq!(name_from_str(&long), Err(NameError::NameTooLong));
    assert_eq!(name_from_str("a b"), Err(NameError::BadChar(' ')));
    assert_eq!(name_to_string(&[3, b'a', b'.', 0xff, 0]), "a\\.\\255.");
    assert_eq!(label_count(&w), 3);
}

#[test]
fn pointer_loops_and_forward_pointers_are_errors() {
    let mut m = header(1, 0, [1, 0, 0, 0]);
    // Label "a" then a pointer back to that label: a loop.
    m.extend_from_slice(&[1, b'a', 0xc0, 12]);
    assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
    // Pointer to itself.
    let mut m = header(1, 0, [1, 0, 0, 0]);
    m.extend_from_slice(&[0xc0, 12]);
    assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
    // Pointer into the header.
    let mut m = header(1, 0, [1, 0, 0, 0]);
    m.extend_from_slice(&[0xc0, 2]);
    assert_eq!(read_name(&m, 12, None), Err(WireError::BadPointer));
    // A valid backwards pointer.
    let mut m = header(1, 0, [1, 0, 0, 0]);
    m.extend_from_slice(&[1, b'b', 0, 1, b'a', 0xc0, 12]);
    let mut out = Vec::new();
    assert_eq!(read_name(&m, 15, Some(&mut out)), Ok(19));
    assert_eq!(out, vec![1, b'a', 1, b'b', 0]);
    // Label type 0x40 is reserved.
    let mut m = header(1, 0, [1, 0, 0, 0]);
    m.extend_from_slice(&[0x41, 0]);
    assert_eq!(read_name(&m, 12, None), Err(WireError::BadLabelType));
}

#[test]
fn names_may_not_alias_ttl_octets() {
    // An owner name that points at the last octet of an earlier TTL (0x00, which
    // reads as the root) would change meaning when zonefwd rewrites that TTL.
    let q = parse_query(&query("a", 1)).unwrap();
    let mut r = header(1, FLAG_QR, [1, 2, 0, 0]);
    push_question(&mut r, &q.qname, 1, 1);
    let first = r.len();
    answer_a(&mut r, 256); // TTL octets 00 00 01 00
    let ttl_last = first + 2 + 4 + 3;
    r.extend_from_slice(&[
        0xc0,
        ttl_last as u8,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        9,
        0,
        4,
        1,
        2,
        3,
        4,
    ]);
    assert_eq!(
        parse_reply(&r, 1, &q),
        Err(ReplyError::Malformed(WireError::BadPointer))
    );
    // The same pointer aimed at the question name is ordinary compression.
    let n = r.len();
    r[n - 15] = 12;
    assert!(parse_reply(&r, 1, &q).is_ok());
}

#[test]
fn names_read_through_pointers_end_before_the_name_that_points() {
    // The pointer goes backwards, to a length octet (9) at the end of an earlier
    // record, but the label it starts runs on into the pointing record itself,
    // over its TTL.
    let q = parse_query(&query("a", 1)).unwrap();
    let mut r = header(1, FLAG_QR, [1, 2, 0, 0]);
    push_question(&mut r, &q.qname, 1, 1);
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 9]);
    let nine = r.len() - 1;
    r.extend_from_slice(&[0xc0, nine as u8, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 1, 2, 3, 4]);
    assert_eq!(
        parse_reply(&r, 1, &q),
        Err(ReplyError::Malformed(WireError::BadPointer))
    );
}

#[test]
fn long_names_are_rejected_even_through_pointers() {
    // 5 labels of 63 = 320 octets.
    let mut m = header(1, 0, [1, 0, 0, 0]);
    for _ in 0..5 {
        m.push(63);
        m.extend_from_slice(&[b'x'; 63]);
    }
    m.push(0);
    assert_eq!(read_name(&m, 12, None), Err(WireError::NameTooLong));
}

#[test]
fn query_checks() {
    let q = parse_query(&query("Example.com", 1)).unwrap();
    assert_eq!(q.qname_lower, name_from_str("example.com").unwrap());
    assert_eq!(q.edns, None);

    let mut two = header(1, 0, [2, 0, 0, 0]);
    push_question(&mut two, &[0], 1, 1);
    push_question(&mut two, &[0], 1, 1);
    assert_eq!(parse_query(&two).unwrap_err().rcode, rcode::FORMERR);

    let mut trailing = query("a", 1);
    trailing.push(0);
    assert_eq!(parse_query(&trailing).unwrap_err().rcode, rcode::FORMERR);

    let mut notify = query("a", 6);
    notify[2] |= 0x20; // opcode 4 (NOTIFY)
    let r = parse_query(&notify).unwrap_err();
    assert_eq!(r.rcode, rcode::NOTIMP);
    assert!(r.question.is_some());

    let mut two_opt = query("a", 1);
    two_opt[11] = 2;
    push_opt(&mut two_opt, 1232, 0, false);
    push_opt(&mut two_opt, 1232, 0, false);
    assert_eq!(
        parse_query(&two_opt).unwrap_err().reason,
        "more than one opt record"
    );

    let mut v1 = query("a", 1);
    v1[11] = 1;
    push_opt(&mut v1, 1232, 0, false);
    let n = v1.len();
    v1[n - 5] = 1; // version 1
    let r = parse_query(&v1).unwrap_err();
    assert_eq!(r.rcode, rcode::BADVERS);
    let reply = error_reply(1, 0, None, r.edns.as_ref(), r.rcode);
    // Header rcode 0, OPT extended rcode 1: 16 = BADVERS.
    assert_eq!(flags(&reply) & RCODE_MASK, 0);
    assert_eq!(reply[reply.len() - 6], 1);

    let mut opt_in_answer = query("a", 1);
    opt_in_answer[7] = 1;
    push_opt(&mut opt_in_answer, 1232, 0, false);
    assert_eq!(
        parse_query(&opt_in_answer).unwrap_err().rcode,
        rcode::FORMERR
    );

    let mut bad_option = query("a", 1);
    bad_option[11] = 1;
    bad_option.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 9]);
    assert_eq!(
        parse_query(&bad_option).unwrap_err().reason,
        "malformed edns options"
    );
}

#[test]
fn upstream_query_carries_question_bits_and_own_opt() {
    let mut m = header(7, FLAG_RD | FLAG_CD | FLAG_AA, [1, 0, 0, 1]);
    push_question(&mut m, &name_from_str("a.B").unwrap(), 28, 1);
    push_opt(&mut m, 4096, 0, true);
    let q = parse_query(&m).unwrap();
    let up = build_upstream_query(&q, 0xbeef, true);
    assert_eq!(id(&up), 0xbeef);
    assert_eq!(flags(&up), FLAG_RD | FLAG_CD);
    let parsed = parse_query(&up).unwrap();
    assert_eq!(parsed.qname, q.qname);
    assert_eq!(
        parsed.edns,
        Some(Edns {
            payload: 1232,
            version: 0,
            dnssec_ok: true,
            nsid: false
        })
    );
    let plain = build_upstream_query(&q, 1, false);
    assert_eq!(parse_query(&plain).unwrap().edns, None);
}

fn answer_a(out: &mut Vec<u8>, ttl: u32) {
    out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
}

#[test]
fn reply_match_and_relay() {
    let q = parse_query(&query("WwW.example.com", 1)).unwrap();
    let mut r = header(99, FLAG_QR | FLAG_RD | FLAG_AA, [1, 1, 0, 1]);
    push_question(&mut r, &name_from_str("www.example.com").unwrap(), 1, 1);
    answer_a(&mut r, 300);
    push_opt(&mut r, 1232, 0, false);
    assert_eq!(parse_reply(&r, 98, &q), Err(ReplyError::Mismatch));
    let parsed = parse_reply(&r, 99, &q).unwrap();
    assert_eq!(parsed.rcode, rcode::NOERROR);
    assert!(parsed.opt_is_last);
    let out = relay(&r, &parsed, &q, 512);
    assert_eq!(id(&out), q.id);
    assert_eq!(flags(&out), FLAG_QR | FLAG_RD | FLAG_AA | FLAG_RA);
    assert_eq!(count(&out, 3), 0, "client sent no OPT, so none comes back");
    assert_eq!(&out[12..12 + q.qname.len()], &q.qname[..]);
    assert_eq!(out.len(), r.len() - 11);

    // A question for another name is not ours.
    let other = parse_query(&query("mail.example.com", 1)).unwrap();
    assert_eq!(parse_reply(&r, 99, &other), Err(ReplyError::Mismatch));
}

#[test]
fn relay_truncates_for_small_clients() {
    let q = parse_query(&query("big.example", 16)).unwrap();
    let mut r = header(5, FLAG_QR, [1, 3, 0, 0]);
    push_question(&mut r, &q.qname, 16, 1);
    for _ in 0..3 {
        r.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 200]);
        r.extend_from_slice(&[199; 200]);
    }
    let p = parse_reply(&r, 5, &q).unwrap();
    let out = relay(&r, &p, &q, 512);
    assert!(flags(&out) & FLAG_TC != 0);
    assert_eq!(count(&out, 1), 0);
    assert_eq!(out.len(), p.question_end);
    // Over TCP it fits whole.
    let full = relay(&r, &p, &q, MAX_TCP_MESSAGE);
    assert_eq!(full.len(), r.len());
}

#[test]
fn malformed_replies_are_rejected() {
    let q = parse_query(&query("a.example", 1)).unwrap();
    let mut r = header(5, FLAG_QR, [1, 2, 0, 0]);
    push_question(&mut r, &q.qname, 1, 1);
    answer_a(&mut r, 1);
    assert!(matches!(
        parse_reply(&r, 5, &q),
        Err(ReplyError::Malformed(WireError::Truncated(_)))
    ));
    let mut r = header(5, FLAG_QR, [1, 1, 0, 0]);
    push_question(&mut r, &q.qname, 1, 1);
    push_opt(&mut r, 1232, 0, false);
    assert_eq!(
        parse_reply(&r, 5, &q),
        Err(ReplyError::Malformed(WireError::MisplacedOpt))
    );
}

#[test]
fn opt_in_the_middle_is_reencoded() {
    let mut m = header(3, 0, [1, 0, 0, 1]);
    push_question(&mut m, &name_from_str("x.example").unwrap(), 1, 1);
    push_opt(&mut m, 1232, 0, true);
    let q = parse_query(&m).unwrap();
    let mut r = header(9, FLAG_QR, [1, 0, 0, 2]);
    push_question(&mut r, &q.qname, 1, 1);
    push_opt(&mut r, 1232, 0, false);
    answer_a(&mut r, 30);
    let p = parse_reply(&r, 9, &q).unwrap();
    assert!(!p.opt_is_last);
    let out = relay(&r, &p, &q, 1232);
    let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
    assert_eq!(msg.additionals.len(), 1);
    assert!(msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    assert_eq!(msg.metadata.id, 3);
}

#[test]
fn walk_finds_ttls_and_the_negative_soa() {
    let q = parse_query(&query("nx.example", 1)).unwrap();
    let mut r = header(8, FLAG_QR | 3, [1, 1, 1, 1]);
    push_question(&mut r, &q.qname, 1, 1);
    answer_a(&mut r, 77);
    // SOA in authority: owner = question name (pointer), TTL 900, MINIMUM 60.
    r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
    r.extend_from_slice(&900u32.to_be_bytes());
    let mut rdata = vec![0, 0]; // mname ".", rname "."
    for v in [1u32, 2, 3, 4, 60] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(&rdata);
    push_opt(&mut r, 1232, 0, false);
    let p = parse_reply(&r, 8, &q).unwrap();
    assert_eq!(p.soa, Some((900, 60)));
    assert_eq!(p.ttl_offsets.len(), 2, "OPT's flags are not a TTL");
    let n = normalize(&r, &p).unwrap();
    assert_eq!(n.ttl_at(n.ttl_offsets[0]), 77);
    assert_eq!(n.ttl_at(n.ttl_offsets[1]), 900);
    let aged = render(&n, &q, 512, Ttls::Aged(100));
    let back = parse_reply(&aged, q.id, &q).unwrap();
    let t = |o: u16| u32::from_be_bytes(aged[o as usize..o as usize + 4].try_into().unwrap());
    assert_eq!(
        (t(back.ttl_offsets[0]), t(back.ttl_offsets[1])),
        (0, 800),
        "never below 0"
    );
    let stale = render(&n, &q, 512, Ttls::Fixed(30));
    assert!(back
        .ttl_offsets
        .iter()
        .all(|&o| u32::from_be_bytes(stale[o as usize..o as usize + 4].try_into().unwrap()) == 30));
}

#[test]
fn extended_rcode_without_client_edns_becomes_servfail() {
    let q = parse_query(&query("a", 1)).unwrap();
    let mut r = header(4, FLAG_QR, [1, 0, 0, 1]);
    push_question(&mut r, &q.qname, 1, 1);
    push_opt(&mut r, 1232, 1, false);
    let p = parse_reply(&r, 4, &q).unwrap();
    assert_eq!(p.rcode, 16);
    let out = relay(&r, &p, &q, 512);
    assert_eq!(flags(&out) & RCODE_MASK, rcode::SERVFAIL);
}

/// A SOA in the authority section, owner the question's name: TTL and MINIMUM given.
fn authority_soa(out: &mut Vec<u8>, ttl: u32, minimum: u32) {
    out.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdata_len: u16 = 2 + 2 + 5 * 4;
    out.extend_from_slice(&rdata_len.to_be_bytes());
    out.extend_from_slice(&[0xc0, 12, 0xc0, 12]); // MNAME, RNAME
    for v in [1u32, 3600, 600, 86400, minimum] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[test]
fn freshness_is_the_smallest_ttl_and_no_more_than_a_negative_answers_minimum() {
    let name = name_from_str("www.example.com").unwrap();
    let reply = |answers: &[u32], soa: Option<(u32, u32)>, opt: bool| {
        let counts = [
            1,
            answers.len() as u16,
            u16::from(soa.is_some()),
            u16::from(opt),
        ];
        let mut r = header(1, FLAG_QR | FLAG_RD, counts);
        push_question(&mut r, &name, 1, 1);
        for &ttl in answers {
            answer_a(&mut r, ttl);
        }
        if let Some((ttl, min)) = soa {
            authority_soa(&mut r, ttl, min);
        }
        if opt {
            push_opt(&mut r, 1232, 0, false);
        }
        r
    };
    let cases: [(&str, Vec<u8>, Option<u32>); 5] = [
        ("answers", reply(&[300, 120, 600], None, true), Some(120)),
        (
            "the OPT's flags are not a TTL",
            reply(&[300], None, true),
            Some(300),
        ),
        (
            "negative: the SOA's MINIMUM",
            reply(&[], Some((3600, 60)), true),
            Some(60),
        ),
        (
            "negative: the SOA's TTL",
            reply(&[], Some((30, 900)), false),
            Some(30),
        ),
        ("no record: nothing to keep", reply(&[], None, true), None),
    ];
    for (what, msg, want) in cases {
        assert_eq!(freshness(&msg), want, "{what}");
    }
    assert_eq!(freshness(&[0u8; 5]), None, "a runt");
}
