//! Every metric of the sidecar, defined in one place and registered in one registry, which
//! the admin listener serves as Prometheus text at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Histogram buckets from 100 µs to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Declares [`StoreOp`] from one list of (variant, label), so a variant cannot be missing
/// from [`StoreOp::ALL`] (which sizes the per-op metric array) or lack a label.
macro_rules! store_ops {
    ($($op:ident => $label:literal,)+) => {
        /// A store operation, as the `op` label of `sidecar_store_duration_seconds` and
        /// `sidecar_store_errors_total` names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum StoreOp {
            $($op,)+
        }

        impl StoreOp {
            /// Every operation, in declaration order (so `op as usize` indexes it).
            pub const ALL: [StoreOp; [$($label),+].len()] = [$(StoreOp::$op),+];

            /// The `op` label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(StoreOp::$op => $label,)+
                }
            }
        }
    };
}

store_ops! {
    Load => "load",
    Create => "create",
    Update => "update",
    Regenerate => "regenerate",
    Destroy => "destroy",
    Ping => "ping",
    IndexAdd => "index_add",
    IndexRemove => "index_remove",
    UserSessions => "user_sessions",
    DestroyMany => "destroy_many",
}

/// The sidecar's metrics. Counters are pre-resolved per label where the label set is fixed,
/// so the request path does no label lookup.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    /// `sidecar_requests_total` per status code 100..=599, resolved on first use.
    requests_by_code: Vec<OnceLock<IntCounter>>,
    pub request_duration: Histogram,
    pub sessions_created: IntCounter,
    pub sessions_regenerated: IntCounter,
    pub sessions_destroyed: IntCounterVec,
    pub loads_hit: IntCounter,
    pub loads_miss: IntCounter,
    pub loads_error: IntCounter,
    pub writes_ok: IntCounter,
    pub writes_error: IntCounter,
    /// `sidecar_session_changes_dropped_total`, by reason (see [`Metrics::changes_dropped`]).
    dropped_store_error: IntCounter,
    dropped_session_ended: IntCounter,
    pub cookies_rejected: IntCounterVec,
    pub set_rejected: IntCounterVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    /// (latency, errors) of each [`StoreOp`], indexed by `op as usize`: resolved once, so a
    /// store operation does no label lookup.
    store_ops: [(Histogram, IntCounter); StoreOp::ALL.len()],
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
        let changes_dropped = counter_vec(
            "sidecar_session_changes_dropped_total",
            "Session changes the app asked for and that were not applied, by reason: \
             store_error (fail_open, the store could not save it), session_ended (the session \
             was destroyed, regenerated or expired while the request was at the app).",
            &["reason"],
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
            "Requests that failed because the app could not be reached, broke off (502) or did not answer in time (504).",
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
        for code in ["200", "431", "499", "502", "503"] {
            requests.with_label_values(&[code]);
        }
        for reason in ["malformed", "bad_signature", "expired"] {
            cookies_rejected.with_label_values(&[reason]);
        }
        for reason in ["malformed", "reserved_key", "too_large"] {
            set_rejected.with_label_values(&[reason]);
        }
        let store_ops = StoreOp::ALL.map(|op| {
            (
                store_duration.with_label_values(&[op.as_str()]),
                store_errors.with_label_values(&[op.as_str()]),
            )
        });
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
            requests_by_code: (100..=599).map(|_| OnceLock::new()).collect(),
            request_duration,
            sessions_created,
            sessions_regenerated,
            sessions_destroyed,
            dropped_store_error: changes_dropped.with_label_values(&["store_error"]),
            dropped_session_ended: changes_dropped.with_label_values(&["session_ended"]),
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

    /// Counts a finished request under the status sent (499: the client went away first).
    pub fn count_request(&self, status: u16) {
        let code =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        match self.requests_by_code.get(usize::from(code.as_u16()) - 100) {
            Some(slot) => slot
                .get_or_init(|| self.requests.with_label_values(&[code.as_str()]))
                .inc(),
            None => self.requests.with_label_values(&[code.as_str()]).inc(),
        }
    }

    /// The counter of changes dropped for `reason`.
    pub fn changes_dropped(&self, reason: crate::session::DropReason) -> &IntCounter {
        match reason {
            crate::session::DropReason::StoreError => &self.dropped_store_error,
            crate::session::DropReason::SessionEnded => &self.dropped_session_ended,
        }
    }

    /// Records one store operation.
    pub fn observe_store(&self, op: StoreOp, elapsed: Duration, ok: bool) {
        let (latency, errors) = &self.store_ops[op as usize];
        latency.observe(elapsed.as_secs_f64());
        if !ok {
            errors.inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ops_are_listed_in_index_order_with_their_labels() {
        for (i, op) in StoreOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
        let labels: Vec<_> = StoreOp::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(
            labels,
            [
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
            ],
            "the op label values are a contract of the dashboards"
        );
    }

    #[test]
    fn every_store_op_is_counted_under_its_label() {
        let metrics = Metrics::new();
        for op in StoreOp::ALL {
            metrics.observe_store(op, Duration::from_millis(1), false);
        }
        let text = String::from_utf8(metrics.render()).unwrap();
        for op in StoreOp::ALL {
            let label = op.as_str();
            assert!(
                text.contains(&format!("sidecar_store_errors_total{{op=\"{label}\"}} 1")),
                "{label}"
            );
            assert!(
                text.contains(&format!(
                    "sidecar_store_duration_seconds_count{{op=\"{label}\"}} 1"
                )),
                "{label}"
            );
        }
    }
}
