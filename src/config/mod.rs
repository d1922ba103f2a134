//! `proxy.yaml` -> one validated [`Config`], the only configuration the rest of the sidecar sees.
//!
//! Three layers, one file each: `load` turns the text into a YAML tree, expands `${VAR}` and
//! types it into the `file` structs that mirror the YAML (unknown keys rejected); `validate`
//! checks and defaults them into [`Config`]. Every problem is collected with its key path
//! (`cookie.secrets[0]: ...`) so an operator sees all of them at once; nothing here panics on
//! user input. `--check` and a normal start run the same code, so a file that passes `--check`
//! starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod file;
mod load;
mod validate;

#[cfg(test)]
mod tests;

pub use file::parse_duration;
pub use load::{ConfigError, ConfigErrors};

/// Default cookie name. The `__Host-` prefix makes browsers insist on `Secure`, `Path=/`
/// and no `Domain`, which is what a session cookie wants.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";
/// Default `session.idle_timeout`, the sliding expiry of a session: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default `session.absolute_timeout`, the hard limit on a session's life from its creation:
/// 24 hours.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Default `session.max_bytes`, the limit on the size of the `X-Session` value the app
/// receives: 4096 bytes.
pub const DEFAULT_MAX_BYTES: usize = 4096;
/// Default `store.key_prefix`, the prefix of every store key: `session:`.
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// Default `store.timeout`, the time limit of one store operation: 500 milliseconds.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `store.max_sessions`, the bound of the memory store: 100000 sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Default `limits.max_header_bytes`, the limit on the total size of a request's headers:
/// 16384 bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16384;
/// Default `grace_period`, the time a SIGTERM waits for in-flight requests: 25 seconds (fits
/// Kubernetes' 30 s `terminationGracePeriodSeconds`).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(25);
/// Default `upstream_connect_timeout`: 2 seconds.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `upstream_read_timeout`, the time to wait for each read from the app: 60 seconds.
pub const DEFAULT_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Minimum length of every secret (`cookie.secrets[*]`, `session.header_secret`), in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

// Upper bounds of the durations: no valid config can overflow a clock (SPEC §4), and each
// bound is far above any sensible value.

/// Upper bound of `store.timeout`: 60 seconds. Bulk operations wait four of them.
pub const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of `upstream_connect_timeout`: 5 minutes.
pub const MAX_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Upper bound of `upstream_read_timeout`: 24 hours.
pub const MAX_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Upper bound of `grace_period`: 1 hour.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);
/// Upper bound of `threads`: each is an OS thread with its own runtime.
pub const MAX_THREADS: usize = 1024;
/// Upper bound of `session.idle_timeout` and `session.absolute_timeout`: 365 days.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(365 * 86400);
/// Upper bound of `cookie.max_age`: 400 days, the cap browsers apply to cookie lifetimes.
pub const MAX_COOKIE_MAX_AGE: Duration = Duration::from_secs(400 * 86400);

/// The validated configuration. Every field is checked and defaulted.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The app, `host:port`, plain HTTP. Resolved when the sidecar starts.
    pub upstream: String,
    /// Upstream connect timeout. Default 2 s; from 1 ms to 5 min.
    pub upstream_connect_timeout: Duration,
    /// Upstream read timeout, per read. Default 60 s; from 1 ms to 24 h.
    pub upstream_read_timeout: Duration,
    /// Where `/healthz`, `/readyz`, `/metrics` and `/sessions` are served; `None` = nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads, 1 to [`MAX_THREADS`]. Default: the CPU count.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before exiting. Default 25 s; at most
    /// 1 h (0 = exit at once).
    pub grace_period: Duration,
    pub cookie: CookieConfig,
    pub session: SessionConfig,
    pub store: StoreConfig,
    /// Default fail_closed.
    pub on_store_error: StoreErrorPolicy,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    /// Cross-origin protection (SPEC §10). Default: enforced, nothing trusted or exempt.
    pub csrf: CsrfConfig,
}

/// The cookie's `SameSite` attribute, written `strict`, `lax` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Clone)]
pub struct CookieConfig {
    /// Default `__Host-session`.
    pub name: String,
    /// Default true.
    pub secure: bool,
    /// Default true.
    pub http_only: bool,
    /// Default lax.
    pub same_site: SameSite,
    /// Default `/`.
    pub path: String,
    pub domain: Option<String>,
    /// Absent = a browser-session cookie. From 1 s to 400 d, and not past
    /// `session.absolute_timeout`.
    pub max_age: Option<Duration>,
    /// The first signs, all verify. Each at least 32 bytes.
    pub secrets: Vec<Vec<u8>>,
}

impl CookieConfig {
    /// A cookie with every documented default (`__Host-session`, `Secure`, `HttpOnly`,
    /// `SameSite=Lax`, `Path=/`, no domain, browser-session lifetime) and these secrets.
    pub fn with_defaults(secrets: Vec<Vec<u8>>) -> CookieConfig {
        CookieConfig {
            name: DEFAULT_COOKIE_NAME.to_string(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_string(),
            domain: None,
            max_age: None,
            secrets,
        }
    }
}

impl fmt::Debug for CookieConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieConfig")
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("path", &self.path)
            .field("domain", &self.domain)
            .field("max_age", &self.max_age)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .finish()
    }
}

#[derive(Clone)]
pub struct SessionConfig {
    /// Sliding expiry. Default 30 min; from 1 s to 365 d.
    pub idle_timeout: Duration,
    /// Hard limit from creation. Default 24 h; from 1 s to 365 d.
    pub absolute_timeout: Duration,
    /// Max size of the `X-Session` value in bytes. Default 4096; from 2 to 1048576.
    pub max_bytes: usize,
    /// Secret for `X-Session-Signature`; `Some` when `sign_header` is true.
    pub header_secret: Option<Vec<u8>>,
    /// The session field naming its user, for "log out everywhere". Default none.
    pub user_field: Option<String>,
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("max_bytes", &self.max_bytes)
            .field("sign_header", &self.header_secret.is_some())
            .field("user_field", &self.user_field)
            .finish()
    }
}

/// Where sessions live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Prefix of every store key. Default `session:`.
    pub key_prefix: String,
    /// Limit of one store operation. Default 500 ms; from 1 ms to 60 s.
    pub timeout: Duration,
    pub backend: StoreBackend,
}

/// Connection settings shared by every Redis kind.
#[derive(Clone, Default)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of CAs to trust for `rediss://`; default: system roots.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Clone)]
pub enum StoreBackend {
    Redis {
        url: String,
        ca_file: Option<PathBuf>,
    },
    RedisCluster {
        nodes: Vec<String>,
        auth: RedisAuth,
    },
    RedisSentinel {
        sentinels: Vec<String>,
        master_name: String,
        db: i64,
        auth: RedisAuth,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
    },
    Memory {
        /// Exact bound; the session closest to expiry is evicted first. Default 100000.
        max_sessions: usize,
        /// File the sessions are saved to at shutdown and read from at start.
        persist_path: Option<PathBuf>,
    },
}

impl fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreBackend::Redis { ca_file, .. } => f
                .debug_struct("Redis")
                .field("url", &"redacted")
                .field("ca_file", ca_file)
                .finish(),
            StoreBackend::RedisCluster { nodes, auth } => f
                .debug_struct("RedisCluster")
                .field("nodes", &nodes.len())
                .field("auth", auth)
                .finish(),
            StoreBackend::RedisSentinel {
                master_name, db, ..
            } => f
                .debug_struct("RedisSentinel")
                .field("master_name", master_name)
                .field("db", db)
                .finish(),
            StoreBackend::Memory {
                max_sessions,
                persist_path,
            } => f
                .debug_struct("Memory")
                .field("max_sessions", max_sessions)
                .field("persist_path", persist_path)
                .finish(),
        }
    }
}

/// What happens to requests while the store is unreachable (`on_store_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorPolicy {
    /// Requests with a session cookie get 503; unsaved changes become 503.
    FailClosed,
    /// The app sees `{}`; unsaved changes are dropped and counted.
    FailOpen,
}

/// `log.format`, written `text` or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// error | warn | info | debug. Default info.
    pub level: tracing::Level,
    /// Default text.
    pub format: LogFormat,
    /// One line per request. Default false.
    pub access: bool,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Total request header size in bytes; larger gets 431. Default 16384; at least 1024.
    pub max_header_bytes: usize,
}

#[derive(Clone, Default)]
pub struct AdminConfig {
    /// Bearer token of the admin session API; `None` = the API is off.
    pub token: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "redacted"))
            .finish()
    }
}

/// What the sidecar does with a forged cross-origin write (`csrf.mode`, SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CsrfMode {
    /// Refuse it with 403, count and log it. The default.
    #[default]
    Enforce,
    /// Count and log it, and let it through.
    Report,
    /// No cross-origin check at all.
    Off,
}

/// The `csrf` section: cross-origin protection for unsafe methods (SPEC §10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrfConfig {
    /// Default enforce.
    pub mode: CsrfMode,
    /// Origins allowed to write from another origin, normalized as browsers send `Origin`:
    /// `scheme://host[:port]`, scheme and host lowercase, no default port. Default none.
    pub trusted_origins: Vec<String>,
    /// Path prefixes the check leaves alone, each starting with `/`. Default none.
    pub exempt_paths: Vec<String>,
}
