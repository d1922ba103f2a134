//! What does handling the app's `X-Session-Set` cost? Parsing a typical header (a few fields
//! of mixed types, one delete), several headers applied in order, rejecting an invalid one,
//! and merging the resulting change into a 10-field session (what the store write and the
//! `max_bytes` check work from).
//!
//! Run: `cargo bench --bench session_set`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use session_sidecar::protocol::{parse_sets, Change};

mod support;

const TYPICAL: &[u8] =
    br#"{"user":"alice","roles":["admin","dev"],"cart":{"items":3,"total":42.5},"visits":17,"flash":null}"#;
const ONE_FIELD: &[u8] = br#"{"visits":18}"#;
const SECOND: &[u8] = br#"{"theme":"dark","visits":19}"#;
const RESERVED: &[u8] = br#"{"user":"mallory","__created":0}"#;

fn ten_fields() -> Vec<(String, String)> {
    (0..10)
        .map(|i| (format!("field_{i}"), format!("\"value-{i}\"")))
        .chain([("user".to_string(), "\"bob\"".to_string())])
        .take(10)
        .collect()
}

fn session_set(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_set");
    group.bench_function("parse_one_field", |b| {
        b.iter(|| parse_sets([black_box(ONE_FIELD)]).unwrap())
    });
    group.bench_function("parse_typical", |b| {
        b.iter(|| parse_sets([black_box(TYPICAL)]).unwrap())
    });
    group.bench_function("parse_two_headers", |b| {
        b.iter(|| parse_sets([black_box(TYPICAL), black_box(SECOND)]).unwrap())
    });
    group.bench_function("reject_reserved", |b| {
        b.iter(|| parse_sets([black_box(RESERVED)]).is_err())
    });

    let current = ten_fields();
    let change: Change = parse_sets([TYPICAL]).unwrap();
    group.bench_function("merge_into_10_fields", |b| {
        b.iter(|| black_box(&change).merged(black_box(&current)))
    });
    group.bench_function("parse_and_merge_10_fields", |b| {
        b.iter(|| {
            parse_sets([black_box(TYPICAL)])
                .unwrap()
                .merged(black_box(&current))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::micro();
    targets = session_set
}
criterion_main!(benches);
