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
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

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

fn arg_or_env(n: usize, env: &str) -> Option<String> {
    std::env::args().nth(n).or_else(|| std::env::var(env).ok())
}

fn main() {
    let listen = arg_or_env(1, "LEAN_LISTEN").expect("LISTEN (arg 1 or LEAN_LISTEN)");
    let upstream = arg_or_env(2, "LEAN_UPSTREAM").expect("UPSTREAM (arg 2 or LEAN_UPSTREAM)");
    let threads = arg_or_env(3, "LEAN_THREADS").map_or(1, |t| t.parse().unwrap());

    let tmp = std::env::temp_dir();
    let id = std::process::id();
    let conf = ServerConf {
        threads,
        work_stealing: false,
        // SIGTERM stops it at once (benchmark scripts stop it that way).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: tmp
            .join(format!("bare-proxy-{id}.sock"))
            .to_string_lossy()
            .into_owned(),
        pid_file: tmp
            .join(format!("bare-proxy-{id}.pid"))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

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
