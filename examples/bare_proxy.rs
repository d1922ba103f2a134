//! Measurement baseline for `benches/results/lean-hot-path.md`: a bare pingora `ProxyHttp`
//! that only sets `X-Session: {}` upstream, with the sidecar's runtime settings (one
//! current-thread runtime per thread, `work_stealing: false`, mimalloc, h2c allowed). What is
//! left of an anonymous sidecar request without session code; compare with `lean_floor`.
//!
//! ```text
//! cargo run --release --example bare_proxy -- LISTEN UPSTREAM [THREADS]
//! ```
#![forbid(unsafe_code)]

use async_trait::async_trait;
use mimalloc::MiMalloc;
use pingora::apps::HttpServerOptions;
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

#[path = "support/floor.rs"]
mod floor;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        req.insert_header("X-Session", "{}")
    }
}

fn main() {
    let floor::Args {
        listen,
        upstream,
        threads,
    } = floor::Args::read();
    let mut server = floor::server("bare-proxy", threads);

    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(&listen);
    if let Some(logic) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        logic.server_options = Some(options);
    }
    server.add_service(service);
    server.run_forever();
}
