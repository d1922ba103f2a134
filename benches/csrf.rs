//! What does the cross-origin check cost per request? The check as the proxy runs it
//! (`Guard::refuses` on the parsed request head) for a safe GET (the common case: one method
//! comparison), for unsafe POSTs a browser sends from the site itself (`Sec-Fetch-Site:
//! same-origin`; an older browser's `Origin` matched against `Host`; a trusted origin from
//! another site), and for a forged POST that is refused (counted, its log line throttled).
//!
//! Run: `cargo bench --bench csrf`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use session_sidecar::config::CsrfConfig;
use session_sidecar::csrf::Guard;
use session_sidecar::metrics::Metrics;

mod support;

fn request(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method(method)
        .uri("/account/email?next=%2F");
    for (name, value) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("cookie", "__Host-session=abc.def; theme=dark"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ]
    .iter()
    .chain(headers)
    {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn csrf(c: &mut Criterion) {
    let metrics = Metrics::new();
    let config = CsrfConfig {
        trusted_origins: vec![
            "https://admin.example.com".into(),
            "https://partner.example.net".into(),
            "http://localhost:3000".into(),
        ],
        exempt_paths: vec!["/webhooks/".into()],
        ..CsrfConfig::default()
    };
    let guard = Guard::new(&config, &metrics);

    let get = request("GET", &[("sec-fetch-site", "cross-site")]);
    let same_origin = request(
        "POST",
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app.example.com"),
        ],
    );
    let old_browser = request("POST", &[("origin", "https://app.example.com")]);
    let trusted = request(
        "POST",
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:3000"),
        ],
    );
    let forged = request(
        "POST",
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
    );
    assert!(!guard.refuses(&get) && !guard.refuses(&same_origin));
    assert!(!guard.refuses(&old_browser) && !guard.refuses(&trusted));
    assert!(guard.refuses(&forged));

    let mut group = c.benchmark_group("csrf");
    group.bench_function("get", |b| b.iter(|| guard.refuses(black_box(&get))));
    group.bench_function("post_same_origin", |b| {
        b.iter(|| guard.refuses(black_box(&same_origin)))
    });
    group.bench_function("post_origin_matches_host", |b| {
        b.iter(|| guard.refuses(black_box(&old_browser)))
    });
    group.bench_function("post_trusted_origin", |b| {
        b.iter(|| guard.refuses(black_box(&trusted)))
    });
    group.bench_function("post_refused", |b| {
        b.iter(|| guard.refuses(black_box(&forged)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::micro();
    targets = csrf
}
criterion_main!(benches);
