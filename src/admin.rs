//! The admin listener: `/healthz` (the process serves), `/readyz` (the store answers within
//! `store.timeout`) and `/metrics` (Prometheus text). Never served on the client listener.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::store::Store;

pub struct AdminApp {
    store: Store,
    metrics: Arc<Metrics>,
}

impl AdminApp {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> AdminApp {
        AdminApp { store, metrics }
    }

    async fn route(&self, method: &http::Method, path: &str) -> (&'static str, StatusCode, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/healthz" | "/readyz" | "/metrics" if method != http::Method::GET && method != http::Method::HEAD => {
                ("other", StatusCode::METHOD_NOT_ALLOWED, TEXT, b"method not allowed\n".to_vec())
            }
            "/healthz" => ("healthz", StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => match self.store.ping().await {
                Ok(()) => ("readyz", StatusCode::OK, TEXT, b"ready\n".to_vec()),
                Err(e) => (
                    "readyz",
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("store not ready: {e}\n").into_bytes(),
                ),
            },
            "/metrics" => (
                "metrics",
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            _ => ("other", StatusCode::NOT_FOUND, TEXT, b"not found\n".to_vec()),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let (endpoint, status, content_type, body) = self.route(&method, &path).await;
        self.metrics
            .admin_requests
            .with_label_values(&[endpoint, status.as_str()])
            .inc();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body)
            .expect("static response parts are valid")
    }
}
