//! How much does the session cookie cost per request? Signing a new cookie value (new
//! session, regenerate), verifying a valid one (every request with a session, one secret and
//! two secrets during rotation) and rejecting a tampered one (the cost an attacker can impose).
//!
//! Run: `cargo bench --bench cookie`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use session_sidecar::config::CookieConfig;
use session_sidecar::cookie::{split_cookies, CookieCodec, SessionId};

mod support;

fn config(secrets: &[&str]) -> CookieConfig {
    CookieConfig::with_defaults(secrets.iter().map(|s| s.as_bytes().to_vec()).collect())
}

const A: &str = "bench-secret-a-0123456789abcdef0123456789abcdef";
const B: &str = "bench-secret-b-0123456789abcdef0123456789abcdef";

fn cookie(c: &mut Criterion) {
    let codec = CookieCodec::new(&config(&[A]));
    let rotating = CookieCodec::new(&config(&[B, A]));
    let id = SessionId::generate();
    let valid = codec.sign(&id);
    let mut tampered = valid.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };

    let mut group = c.benchmark_group("cookie");
    group.bench_function("sign", |b| b.iter(|| codec.sign(black_box(&id))));
    group.bench_function("verify_valid", |b| {
        b.iter(|| codec.verify(black_box(valid.as_bytes())).is_ok())
    });
    group.bench_function("verify_valid_two_secrets", |b| {
        b.iter(|| rotating.verify(black_box(valid.as_bytes())).is_ok())
    });
    group.bench_function("verify_tampered", |b| {
        b.iter(|| codec.verify(black_box(&tampered)).is_err())
    });
    group.bench_function("set_cookie_header", |b| {
        b.iter(|| codec.set_cookie(black_box(&id)))
    });
    let header =
        format!("_ga=GA1.2.3456; theme=dark; __Host-session={valid}; csrf=abcdef0123456789");
    group.bench_function("split_cookie_header", |b| {
        b.iter(|| split_cookies("__Host-session", [black_box(header.as_bytes())]))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::micro();
    targets = cookie
}
criterion_main!(benches);
