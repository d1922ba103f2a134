//! How much does a new session's identity cost? Generating a 256-bit ID from the per-thread
//! ChaCha20 CSPRNG (new sessions and every regenerate) and deriving its store key digest
//! (hex SHA-256, on every request that carries a session).
//!
//! Run: `cargo bench --bench id`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use session_sidecar::cookie::SessionId;

mod support;

fn id(c: &mut Criterion) {
    let mut group = c.benchmark_group("id");
    group.bench_function("generate", |b| b.iter(SessionId::generate));
    let id = SessionId::generate();
    group.bench_function("store_digest", |b| b.iter(|| black_box(&id).store_digest()));
    group.bench_function("generate_and_digest", |b| {
        b.iter(|| SessionId::generate().store_digest())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::micro();
    targets = id
}
criterion_main!(benches);
