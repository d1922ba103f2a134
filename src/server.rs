//! Builds the pingora server from a validated [`Config`] and runs it until shutdown.
//!
//! Shutdown: pingora stops accepting on SIGTERM (or after handing its sockets to a new
//! process on SIGQUIT), then the drain watcher waits until no request is in flight, or until
//! `grace_period` has passed, saves the memory store and exits. An idle sidecar stops at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::{AdminApp, SessionApi};
use crate::config::{Config, StoreBackend};
use crate::cookie_abuse::RejectionTracker;
use crate::metrics::Metrics;
use crate::proxy::SessionProxy;
use crate::session::Engine;
use crate::store::Store;

/// Process-level options that are not part of `proxy.yaml`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Take over the listening sockets of a running sidecar (zero-downtime restart).
    pub upgrade: bool,
    /// Unix socket used to hand the listening sockets to a new process.
    pub upgrade_sock: PathBuf,
}

/// Resolves `host:port` once at start.
pub fn resolve_upstream(upstream: &str) -> Result<SocketAddr, String> {
    upstream
        .to_socket_addrs()
        .map_err(|e| format!("upstream: cannot resolve `{upstream}`: {e}"))?
        .next()
        .ok_or_else(|| format!("upstream: `{upstream}` resolves to no address"))
}

/// Runs the sidecar; returns only on a startup error (otherwise the process exits).
pub fn run(config: Config, options: RunOptions) -> Result<(), String> {
    let upstream = resolve_upstream(&config.upstream)?;
    if !options.upgrade {
        // pingora would retry a taken address for half a minute, then lose the listener in a
        // worker thread while the process (and its health endpoints) stayed up: refuse at
        // start instead. An upgrade takes the old process's sockets, so it binds nothing.
        check_addresses_free(&config)?;
    }
    let metrics = Arc::new(Metrics::new());
    let store =
        Store::from_config(&config.store, metrics.clone()).map_err(|e| format!("store: {e}"))?;

    let conf = ServerConf {
        threads: config.threads,
        // One thread per worker: the no-steal runtime (one current-thread tokio runtime per
        // thread) avoids the work-stealing scheduler's cross-thread bookkeeping.
        work_stealing: false,
        // The drain watcher exits as soon as requests are done; this is only the backstop.
        grace_period_seconds: Some(config.grace_period.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: options.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: std::env::temp_dir()
            .join(format!("session-sidecar-{}.pid", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let abuse = Arc::new(RejectionTracker::default());
    let proxy = SessionProxy::new(
        &config,
        upstream,
        store.clone(),
        metrics.clone(),
        abuse.clone(),
    );
    let mut proxy_service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy,
        "session-sidecar",
    );
    proxy_service.add_tcp(&config.listen.to_string());
    if let Some(logic) = proxy_service.app_logic_mut() {
        let mut server_options = HttpServerOptions::default();
        server_options.h2c = true;
        logic.server_options = Some(server_options);
    }
    server.add_service(proxy_service);

    if let Some(admin_addr) = config.admin_listen {
        // Redis connections are driven by the runtime that first uses them: the admin
        // listener gets its own, so probes never put the proxy's Redis traffic on the admin
        // thread. The memory store is one shared map.
        let admin_store = match config.store.backend {
            StoreBackend::Memory { .. } => store.clone(),
            _ => Store::from_config(&config.store, metrics.clone())
                .map_err(|e| format!("store: {e}"))?,
        };
        let sessions = config.admin.token.as_deref().map(SessionApi::new);
        let mut admin = Service::new(
            "session-sidecar admin".to_string(),
            AdminApp::new(
                Engine::new(&config, admin_store, metrics.clone(), abuse),
                metrics.clone(),
                sessions,
            ),
        );
        admin.add_tcp(&admin_addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }

    let finish = Arc::new(Finisher::new(store));
    spawn_drain_watcher(
        &server,
        metrics.in_flight.clone(),
        config.grace_period,
        finish.clone(),
    );

    tracing::info!(listen = %config.listen, upstream = %upstream, admin = ?config.admin_listen, "session-sidecar starting");
    server.run(RunArgs::default());
    finish.finish();
    std::process::exit(0);
}

/// Binds `listen` and `admin_listen` together once and lets them go: an address already in
/// use (by another process, or by the other listener) is a start-up error naming its key.
fn check_addresses_free(config: &Config) -> Result<(), String> {
    let listen = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("listen: {}: {e}", config.listen))?;
    if let Some(admin) = config.admin_listen {
        std::net::TcpListener::bind(admin).map_err(|e| format!("admin_listen: {admin}: {e}"))?;
    }
    drop(listen);
    Ok(())
}

/// Saves what must survive the process exactly once, whichever path ends it.
struct Finisher {
    store: Store,
    once: Once,
}

impl Finisher {
    fn new(store: Store) -> Finisher {
        Finisher {
            store,
            once: Once::new(),
        }
    }

    fn finish(&self) {
        self.once.call_once(|| {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(self.store.close()),
                Err(e) => tracing::error!(error = %e, "cannot run the store's shutdown"),
            }
            tracing::info!("session-sidecar stopped");
        });
    }
}

/// How long nothing must be in flight before a stopping sidecar exits.
const QUIET_PERIOD: Duration = Duration::from_millis(250);

fn spawn_drain_watcher(
    server: &Server,
    in_flight: prometheus::IntGauge,
    grace: Duration,
    finish: Arc<Finisher>,
) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownStarted) => {
                // A connection accepted just before the listener closed may not have sent its
                // request yet: require a short quiet period with nothing in flight.
                let deadline = Instant::now() + grace;
                let mut quiet_since = Instant::now();
                while Instant::now() < deadline {
                    if in_flight.get() > 0 {
                        quiet_since = Instant::now();
                    } else if quiet_since.elapsed() >= QUIET_PERIOD {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let left = in_flight.get();
                if left > 0 {
                    tracing::warn!(
                        requests = left,
                        "grace period over; exiting with requests in flight"
                    );
                } else {
                    tracing::info!("no request in flight; exiting");
                }
                finish.finish();
                std::process::exit(0);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    });
}
