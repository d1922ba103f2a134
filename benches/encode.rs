//! How much does building the `X-Session` header cost for sessions of 1, 10 and 50 small
//! fields, when the stored values are already canonical JSON text (what the sidecar itself
//! stores, so they can be spliced without a parse)? And how much more when a value was
//! written into the store by someone else and must be re-encoded?
//!
//! Run: `cargo bench --bench encode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_sidecar::protocol::encode_session;

mod support;

/// `n` small fields whose values cycle through the JSON types an app typically stores,
/// plus the sidecar's own `__created` metadata field (skipped by the encoder).
fn session(n: usize) -> Vec<(String, String)> {
    let mut fields = vec![("__created".to_string(), "1767225600000".to_string())];
    for i in 0..n {
        let value = match i % 5 {
            0 => format!("{}", 1000 + i),
            1 => format!("\"user-{i}@example.com\""),
            2 => "true".to_string(),
            3 => format!("[{i},{},\"x\"]", i + 1),
            _ => format!("{{\"k\":\"v{i}\",\"n\":{i}}}"),
        };
        fields.push((format!("field_{i}"), value));
    }
    fields
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_session");
    for n in [1usize, 10, 50] {
        let fields = session(n);
        let bytes = encode_session(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("canonical", n), &fields, |b, fields| {
            b.iter(|| {
                encode_session(
                    black_box(fields)
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
            })
        });
    }
    // Ten fields written by another process with spaces and non-ASCII: the slow path.
    let foreign: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                format!("field_{i}"),
                format!("{{ \"name\" : \"caf\u{e9} {i}\" }}"),
            )
        })
        .collect();
    group.bench_with_input(BenchmarkId::new("foreign", 10), &foreign, |b, fields| {
        b.iter(|| {
            encode_session(
                black_box(fields)
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::micro();
    targets = encode
}
criterion_main!(benches);
