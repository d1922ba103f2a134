//! Measurement prototype of lever 2 (`benches/results/lean-hot-path.md`): the floor of a lean
//! HTTP/1 path built from pingora-core's own parts, without `ProxyHttp`. Not a product path.
//!
//! A pingora `HttpServerApp` that, per request, sequentially: reads the request header from
//! the downstream HTTP/1 session, sets `X-Session: {}` (what the sidecar sends upstream for
//! anonymous traffic), takes an upstream HTTP/1 session from pingora-core's
//! `connectors::http::v1::Connector` (its keep-alive pool), writes the request header, copies
//! the request body if any, reads the response header, writes it downstream, streams the
//! response body, returns the upstream connection to the pool and hands the downstream
//! connection back to pingora for keep-alive. One current-thread runtime per thread
//! (`work_stealing: false`), mimalloc as in the sidecar.
//!
//! What it deliberately does not do: h2c (no preface peek), upgrades (WebSocket, CONNECT),
//! `Expect: 100-continue` and other 1xx responses, trailers, pipelining, request-smuggling
//! checks (`framing::check_request`, `sanitize_h1_upstream_request`), hop-by-hop header
//! handling, retries, timeouts beyond pingora's defaults, error pages (an upstream failure just
//! closes the downstream connection), metrics, logging, and sessions (no cookie, no store).
//!
//! ```text
//! cargo run --release --example lean_floor -- LISTEN UPSTREAM [THREADS]
//! # or LEAN_LISTEN, LEAN_UPSTREAM, LEAN_THREADS in the environment; THREADS defaults to 1
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mimalloc::MiMalloc;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

#[path = "support/floor.rs"]
mod floor;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// How long an idle upstream connection stays in the pool.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

struct LeanFloor {
    connector: Connector,
    peer: HttpPeer,
}

impl LeanFloor {
    /// One request; `None` when the downstream connection must not be reused.
    async fn proxy(&self, down: &mut ServerSession) -> Option<()> {
        let mut req = Box::new(down.req_header().clone());
        req.insert_header("X-Session", "{}").ok()?;

        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await.ok()?;
        up.write_request_header(req).await.ok()?;
        while let Some(chunk) = down.read_request_body().await.ok()? {
            up.write_body(&chunk).await.ok()?;
        }
        up.finish_body().await.ok()?;

        up.read_response().await.ok()?;
        down.write_response_header_ref(up.resp_header()?)
            .await
            .ok()?;
        while let Some(chunk) = up.read_body_bytes().await.ok()? {
            down.write_response_body(chunk, false).await.ok()?;
        }
        self.connector
            .release_http_session(up, &self.peer, Some(UPSTREAM_IDLE))
            .await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for LeanFloor {
    async fn process_new_http(
        self: &Arc<Self>,
        mut down: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(down, ServerSession::H1(_)) || !down.read_request().await.ok()? {
            return None;
        }
        if *shutdown.borrow() {
            down.set_keepalive(None);
        }
        self.proxy(&mut down).await?;
        let settings = HttpPersistentSettings::for_session(&down);
        let reusable = down.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

fn main() {
    let floor::Args {
        listen,
        upstream,
        threads,
    } = floor::Args::read();
    let mut server = floor::server("lean-floor", threads);

    let app = LeanFloor {
        connector: Connector::new(None),
        peer: HttpPeer::new(upstream.as_str(), false, String::new()),
    };
    let mut service = Service::new("lean_floor".to_string(), app);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
