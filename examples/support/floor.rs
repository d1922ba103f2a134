//! What the measurement prototypes (`examples/lean_floor.rs`, `examples/bare_proxy.rs`)
//! share: their command line and the pingora server they run in, set up as the sidecar's
//! (`work_stealing: false`), so that only the request path differs between them.

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

/// `LISTEN UPSTREAM [THREADS]`, or `LEAN_LISTEN`, `LEAN_UPSTREAM`, `LEAN_THREADS`.
pub struct Args {
    pub listen: String,
    pub upstream: String,
    pub threads: usize,
}

fn arg_or_env(n: usize, env: &str) -> Option<String> {
    std::env::args().nth(n).or_else(|| std::env::var(env).ok())
}

impl Args {
    pub fn read() -> Args {
        Args {
            listen: arg_or_env(1, "LEAN_LISTEN").expect("LISTEN (arg 1 or LEAN_LISTEN)"),
            upstream: arg_or_env(2, "LEAN_UPSTREAM").expect("UPSTREAM (arg 2 or LEAN_UPSTREAM)"),
            threads: arg_or_env(3, "LEAN_THREADS").map_or(1, |t| t.parse().unwrap()),
        }
    }
}

/// A bootstrapped pingora server with `threads` no-steal workers, stopped at once by SIGTERM
/// (the benchmark scripts stop it that way); `name` names its socket and pid files.
pub fn server(name: &str, threads: usize) -> Server {
    let tmp = std::env::temp_dir();
    let id = std::process::id();
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: tmp
            .join(format!("{name}-{id}.sock"))
            .to_string_lossy()
            .into_owned(),
        pid_file: tmp
            .join(format!("{name}-{id}.pid"))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server
}
