//! What the criterion benches share.

use std::time::Duration;

use criterion::Criterion;

/// Criterion settings for micro benchmarks of sub-microsecond to microsecond functions:
/// 50 samples after 0.5 s of warm-up, 2 s of measurement (stable to a few percent here).
pub fn micro() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}
