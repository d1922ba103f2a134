//! Every metric of the sidecar, defined in one place and registered in one registry, which
//! the admin listener serves as Prometheus text at `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Histogram buckets from 100 µs to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `op` label values of the store metrics.
pub const STORE_OPS: &[&str] = &[
    "load",
    "create",
    "update",
    "regenerate",
    "destroy",
    "ping",
    "index_add",
    "index_remove",
    "user_sessions",
    "destroy_many",
];

/// The sidecar's metrics. Counters are pre-resolved per label where the label set is fixed,
/// so the request path does no label lookup.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    pub sessions_created: IntCounter,
    pub sessions_regenerated: IntCounter,
    pub sessions_destroyed: IntCounterVec,
    pub loads_hit: IntCounter,
    pub loads_miss: IntCounter,
    pub loads_error: IntCounter,
    pub writes_ok: IntCounter,
    pub writes_error: IntCounter,
    pub writes_dropped: IntCounter,
    pub cookies_rejected: IntCounterVec,
    pub set_rejected: IntCounterVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    /// (op, latency, errors) resolved once per `STORE_OPS` entry: no label lookup per call.
    store_ops: Vec<(&'static str, Histogram, IntCounter)>,
    pub upstream_errors: IntCounter,
    pub client_headers_stripped: IntCounter,
    /// `sidecar_cross_origin_rejected_total{reason="sec_fetch_site"}`.
    pub cross_origin_rejected_sec_fetch_site: IntCounter,
    /// `sidecar_cross_origin_rejected_total{reason="origin"}`.
    pub cross_origin_rejected_origin: IntCounter,
    pub admin_requests: IntCounterVec,
    pub in_flight: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter_vec(
            "sidecar_requests_total",
            "Requests answered, by HTTP status code.",
            &["code"],
        );
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sidecar_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let sessions_created = counter("sidecar_sessions_created_total", "Sessions created.");
        let sessions_regenerated = counter(
            "sidecar_sessions_regenerated_total",
            "Sessions given a new ID.",
        );
        let sessions_destroyed = counter_vec(
            "sidecar_sessions_destroyed_total",
            "Sessions destroyed, by who asked (app, destroy_all, admin).",
            &["reason"],
        );
        let loads = counter_vec(
            "sidecar_session_loads_total",
            "Session loads for requests with a valid cookie, by result (hit, miss, error).",
            &["result"],
        );
        let writes = counter_vec(
            "sidecar_session_writes_total",
            "Session writes, by result (ok, error).",
            &["result"],
        );
        let writes_dropped = counter(
            "sidecar_session_changes_dropped_total",
            "Session changes dropped under fail_open because the store was unavailable.",
        );
        let cookies_rejected = counter_vec(
            "sidecar_cookies_rejected_total",
            "Session cookies not accepted, by reason (malformed, bad_signature, expired).",
            &["reason"],
        );
        let set_rejected = counter_vec(
            "sidecar_session_set_rejected_total",
            "Responses whose X-Session-Set was rejected, by reason (malformed, reserved_key, too_large).",
            &["reason"],
        );
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "sidecar_store_duration_seconds",
                "Store operation latency, by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_duration.clone()))
            .expect("unique metric");
        let store_errors = counter_vec(
            "sidecar_store_errors_total",
            "Store operations that failed or timed out, by operation.",
            &["op"],
        );
        let upstream_errors = counter(
            "sidecar_upstream_errors_total",
            "Requests that failed because the app could not be reached or broke off.",
        );
        let client_headers_stripped = counter(
            "sidecar_client_session_headers_stripped_total",
            "Client-supplied X-Session* headers removed before reaching the app.",
        );
        let cross_origin_rejected = counter_vec(
            "sidecar_cross_origin_rejected_total",
            "Unsafe requests from another origin refused by the CSRF check (or, in report mode, that would have been), by reason (sec_fetch_site, origin).",
            &["reason"],
        );
        let admin_requests = counter_vec(
            "sidecar_admin_requests_total",
            "Admin listener requests, by endpoint and status code.",
            &["endpoint", "code"],
        );
        let in_flight = IntGauge::new(
            "sidecar_requests_in_flight",
            "Requests being served right now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");

        // Series the sidecar itself answers with exist from the start, so dashboards and
        // alerts see zero rather than nothing.
        for code in ["200", "431", "502", "503"] {
            requests.with_label_values(&[code]);
        }
        for reason in ["malformed", "bad_signature", "expired"] {
            cookies_rejected.with_label_values(&[reason]);
        }
        for reason in ["malformed", "reserved_key", "too_large"] {
            set_rejected.with_label_values(&[reason]);
        }
        let store_ops = STORE_OPS
            .iter()
            .map(|op| {
                (
                    *op,
                    store_duration.with_label_values(&[op]),
                    store_errors.with_label_values(&[op]),
                )
            })
            .collect();
        for reason in ["app", "destroy_all", "admin"] {
            sessions_destroyed.with_label_values(&[reason]);
        }
        Metrics {
            loads_hit: loads.with_label_values(&["hit"]),
            loads_miss: loads.with_label_values(&["miss"]),
            loads_error: loads.with_label_values(&["error"]),
            writes_ok: writes.with_label_values(&["ok"]),
            writes_error: writes.with_label_values(&["error"]),
            registry,
            requests,
            request_duration,
            sessions_created,
            sessions_regenerated,
            sessions_destroyed,
            writes_dropped,
            cookies_rejected,
            set_rejected,
            store_duration,
            store_errors,
            store_ops,
            upstream_errors,
            client_headers_stripped,
            cross_origin_rejected_sec_fetch_site: cross_origin_rejected
                .with_label_values(&[crate::csrf::Reason::SecFetchSite.label()]),
            cross_origin_rejected_origin: cross_origin_rejected
                .with_label_values(&[crate::csrf::Reason::Origin.label()]),
            admin_requests,
            in_flight,
        }
    }

    /// Records one store operation.
    pub fn observe_store(&self, op: &str, elapsed: Duration, ok: bool) {
        match self.store_ops.iter().find(|(name, _, _)| *name == op) {
            Some((_, latency, errors)) => {
                latency.observe(elapsed.as_secs_f64());
                if !ok {
                    errors.inc();
                }
            }
            None => {
                self.store_duration
                    .with_label_values(&[op])
                    .observe(elapsed.as_secs_f64());
                if !ok {
                    self.store_errors.with_label_values(&[op]).inc();
                }
            }
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
