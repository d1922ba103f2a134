//! [`Backend`]: the app behind the sidecar, a real hyper HTTP/1.1 server on a free loopback
//! port. It answers every request with JSON describing what it received (so tests see exactly
//! what the sidecar forwarded) and with whatever headers the request asked for.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::poll::poll_until_async;

/// The app behind the sidecar. Every response body is JSON describing the request:
/// `{"path", "method", "x_session" (parsed), "x_session_raw", "x_session_count", "cookie",
/// "headers": [[name, value], ...]}`. A request header `x-reply-<name>: <value>` makes the
/// response carry `<name>: <value>` (repeatable); `x-reply-status` sets the status.
pub struct Backend {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(listener, hits.clone()));
        Backend {
            port,
            hits,
            task: Some(task),
        }
    }

    /// Requests the app has received so far.
    pub fn hit_count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits (5 s at most) until the app has received a request after `before` hits: the
    /// moment a slow request is at the app, however slow the machine, so a test can end its
    /// session or kill its store while it is in flight.
    pub async fn wait_for_request_after(&self, before: usize) {
        let arrived = super::poll::eventually(Duration::from_secs(5), || async {
            self.hit_count() > before
        })
        .await;
        assert!(arrived, "the request reached the app");
    }

    /// Stops accepting and drops the listener (connections in the pool break later).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        let port = self.port;
        let listener = poll_until_async(Duration::from_secs(5), Duration::from_millis(50), || {
            tokio::net::TcpListener::bind(("127.0.0.1", port))
        })
        .await
        .unwrap_or_else(|e| panic!("cannot rebind backend port: {e}"));
        self.task = Some(tokio::spawn(serve(listener, self.hits.clone())));
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, hits: Arc<AtomicUsize>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = hits.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| {
                let hits = hits.clone();
                async move { Ok::<_, Infallible>(answer(req, &hits).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(req: Request<hyper::body::Incoming>, hits: &AtomicUsize) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let x_session: Vec<String> = parts
        .headers
        .get_all("x-session")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let cookie: Vec<String> = parts
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let info = json!({
        "path": parts.uri.path(),
        "method": parts.method.as_str(),
        "x_session": x_session.first().and_then(|v| serde_json::from_str::<Value>(v).ok()),
        "x_session_raw": x_session.first(),
        "x_session_count": x_session.len(),
        "cookie": cookie,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut resp = Response::builder();
    let mut status = 200u16;
    if let Some(ms) = parts
        .headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    for (name, value) in parts.headers.iter() {
        if let Some(reply) = name.as_str().strip_prefix("x-reply-") {
            if reply == "status" {
                status = value.to_str().unwrap().parse().unwrap();
            } else {
                resp = resp.header(reply, value.clone());
            }
        }
    }
    resp.status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(info.to_string())))
        .unwrap()
}
