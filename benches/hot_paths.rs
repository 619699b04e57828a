//! Micro-benchmarks of the per-query hot paths: parse a client query, route it, look
//! it up in the cache and render the cached answer; and, on a miss, walk and normalise
//! the upstream's reply. `cargo bench`; not part of `cargo test`.
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use zonefwd::cache::Cache;
use zonefwd::config::CachePolicy;
use zonefwd::router::Router;
use zonefwd::wire::{self, Ttls};

fn query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    m.extend_from_slice(&wire::name_from_str(name).unwrap());
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    m
}

/// NSD-like reply: two A records and an OPT.
fn reply_to(q: &wire::Query, id: u16) -> Vec<u8> {
    let mut r = wire::build_upstream_query(q, id, false);
    r[2] |= 0x84;
    r[3] |= 0x80;
    r[7] = 2;
    for last in [1u8, 2] {
        r.extend_from_slice(&[
            0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, last,
        ]);
    }
    r
}

fn zones(n: usize) -> Vec<Vec<u8>> {
    let mut z: Vec<Vec<u8>> = (0..n)
        .map(|i| wire::name_from_str(&format!("z{i}.corp{}.example", i % 97)).unwrap())
        .collect();
    z.push(wire::name_from_str("privatelink.blob.core.windows.net").unwrap());
    z.push(vec![0]);
    z
}

fn benches(c: &mut Criterion) {
    let msg = query("acct.privatelink.blob.core.windows.net");
    c.bench_function("parse_query", |b| {
        b.iter(|| wire::parse_query(std::hint::black_box(&msg)).unwrap())
    });

    let q = wire::parse_query(&msg).unwrap();
    let mut group = c.benchmark_group("route");
    for n in [10usize, 1_000, 10_000] {
        let z = zones(n);
        let router = Router::new(z.iter().enumerate().map(|(i, z)| (z.as_slice(), i)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &router, |b, r| {
            b.iter(|| {
                r.route(std::hint::black_box(&q.qname_lower), q.qtype)
                    .unwrap()
            })
        });
    }
    group.finish();

    let reply = reply_to(&q, 0x9999);
    c.bench_function("upstream_reply_walk_and_normalise", |b| {
        b.iter(|| {
            let r = wire::parse_reply(std::hint::black_box(&reply), 0x9999, &q).unwrap();
            wire::normalize(&reply, &r).unwrap()
        })
    });

    let policy = CachePolicy::default();
    let mut group = c.benchmark_group("cache_hit_lookup_and_render");
    for entries in [10_000usize, 100_000, 1_000_000] {
        let cache = Cache::new(entries);
        let now = Instant::now();
        let mut last = None;
        for i in 0..entries {
            let m = query(&format!("h{i}.bench.test"));
            let qi = wire::parse_query(&m).unwrap();
            let raw = reply_to(&qi, 7);
            let p = wire::parse_reply(&raw, 7, &qi).unwrap();
            let n = wire::normalize(&raw, &p).unwrap();
            cache.store_answer(&qi, n, &policy, now).unwrap();
            last = Some(qi);
        }
        let probe = last.unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(entries), &cache, |b, cache| {
            b.iter(
                || match cache.lookup(std::hint::black_box(&probe), &policy, now) {
                    zonefwd::cache::Lookup::Fresh { stored, age, .. } => {
                        wire::render(&stored.reply, &probe, 1232, Ttls::Aged(age))
                    }
                    _ => unreachable!("filled above"),
                },
            )
        });
    }
    group.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);
