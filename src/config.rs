//! `proxy.yaml`: the file layer (serde structs that mirror the YAML, unknown keys rejected)
//! and the validated [`Config`] the rest of the sidecar uses.
//!
//! Loading goes text -> YAML tree -> `${VAR}` expansion -> one serde pass per section ->
//! semantic checks. Every problem is collected with its key path (`cookie.secrets[0]: ...`)
//! so an operator sees all of them at once; nothing here panics on user input.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

/// Default cookie name. The `__Host-` prefix makes browsers insist on `Secure`, `Path=/`
/// and no `Domain`, which is what a session cookie wants.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";
/// Default sliding expiry of a session: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default hard limit on a session's life from its creation: 24 hours.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Default limit on the size of the `X-Session` value the app receives, in bytes.
pub const DEFAULT_MAX_BYTES: usize = 4096;
/// Default Redis key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// Default time limit of one store operation.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default bound of the memory store, in sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Default limit on the total size of a request's headers, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16384;
/// Default time a SIGTERM waits for in-flight requests (fits Kubernetes' 30 s).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(25);
/// Default upstream connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default upstream read timeout (time to wait for each read from the app).
pub const DEFAULT_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Minimum length of every secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// One problem in the configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `cookie.secrets[0]`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// Records a problem; only the first problem of each key is kept (a key whose `${VAR}`
    /// failed to expand is not also reported as, say, too short).
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !path.is_empty() && self.0.iter().any(|e| e.path == path) {
            return;
        }
        self.0.push(ConfigError {
            path,
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------------------------

/// The validated configuration. Every field is checked and defaulted.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The app, `host:port`, plain HTTP. Resolved when the sidecar starts.
    pub upstream: String,
    /// Upstream connect timeout. Default 2 s.
    pub upstream_connect_timeout: Duration,
    /// Upstream read timeout. Default 60 s.
    pub upstream_read_timeout: Duration,
    /// Where `/healthz`, `/readyz`, `/metrics` and `/sessions` are served; `None` = nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads. Default: the CPU count.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before exiting. Default 25 s.
    pub grace_period: Duration,
    pub cookie: CookieConfig,
    pub session: SessionConfig,
    pub store: StoreConfig,
    pub on_store_error: StoreErrorPolicy,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    /// Cross-origin protection (SPEC §10). Absent = every default: enforce, nothing trusted,
    /// nothing exempt.
    pub csrf: CsrfConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Absent = a browser-session cookie.
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
    /// Sliding expiry. Default 30 min.
    pub idle_timeout: Duration,
    /// Hard limit from creation. Default 24 h.
    pub absolute_timeout: Duration,
    /// Max size of the `X-Session` value in bytes. Default 4096.
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
    /// Limit of one store operation. Default 500 ms.
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

/// What happens to requests while the store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorPolicy {
    /// Requests with a session cookie get 503; unsaved changes become 503.
    FailClosed,
    /// The app sees `{}`; unsaved changes are dropped and counted.
    FailOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Total request header size; larger gets 431. Default 16384.
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

/// What the cross-origin check does with a request it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsrfMode {
    /// Answer 403; the app never sees the request. The default.
    #[default]
    Enforce,
    /// Count and log, but let the request through (for a first rollout).
    Report,
    /// No check at all.
    Off,
}

/// `csrf:` — refusing forged cross-origin writes (see [`crate::csrf`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrfConfig {
    /// enforce | report | off. Default enforce.
    pub mode: CsrfMode,
    /// Origins allowed to write from another origin, each `scheme://host[:port]` with scheme
    /// http or https, stored normalized (lowercase, default port removed). Default none.
    pub trusted_origins: Vec<String>,
    /// Path prefixes the check leaves alone (e.g. `/webhooks/`), each starting with `/`.
    /// Default none.
    pub exempt_paths: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The file layer
// ---------------------------------------------------------------------------------------------

/// Top level of `proxy.yaml`: each section is kept as YAML and typed on its own, so a
/// mistake in one section does not hide mistakes in the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    listen: Option<Value>,
    upstream: Option<Value>,
    upstream_connect_timeout: Option<Value>,
    upstream_read_timeout: Option<Value>,
    admin_listen: Option<Value>,
    threads: Option<Value>,
    grace_period: Option<Value>,
    cookie: Option<Value>,
    session: Option<Value>,
    store: Option<Value>,
    on_store_error: Option<Value>,
    log: Option<Value>,
    limits: Option<Value>,
    admin: Option<Value>,
    csrf: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCookie {
    name: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<String>,
    path: Option<String>,
    domain: Option<String>,
    max_age: Option<DurationText>,
    secrets: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSession {
    idle_timeout: Option<DurationText>,
    absolute_timeout: Option<DurationText>,
    max_bytes: Option<usize>,
    sign_header: Option<bool>,
    header_secret: Option<String>,
    user_field: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileStore {
    kind: Option<String>,
    url: Option<String>,
    nodes: Option<Vec<String>>,
    sentinels: Option<Vec<String>>,
    master_name: Option<String>,
    db: Option<i64>,
    username: Option<String>,
    password: Option<String>,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
    ca_file: Option<String>,
    key_prefix: Option<String>,
    timeout: Option<DurationText>,
    max_sessions: Option<usize>,
    persist_path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
    format: Option<String>,
    access: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_header_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCsrf {
    mode: Option<String>,
    trusted_origins: Option<Vec<String>>,
    exempt_paths: Option<Vec<String>>,
}

/// A duration written as text (`500ms`, `30s`, `30m`, `24h`, `7d`).
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match Value::deserialize(d)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(serde::de::Error::custom(
                    "expected a duration such as 500ms, 30s, 30m, 24h or 7d",
                ))
            }
        };
        parse_duration(&text)
            .map(DurationText)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `500ms`, `30s`, `30m`, `24h`, `7d` (and combinations humantime accepts).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write a duration such as 500ms, 30s, 30m, 24h or 7d"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("`{trimmed}` is not a duration ({e}); write e.g. 500ms, 30s, 30m, 24h or 7d")
    })
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Reads and validates a file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Validates YAML text; `env` looks up the variables of `${VAR}`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut problems = Problems::default();
        let mut tree: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.add("", format!("not valid YAML: {e}"));
                return Err(ConfigErrors(problems.0));
            }
        };
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        expand_env(&mut tree, String::new(), env, &mut problems);
        let top: FileTop = match serde_path_to_error::deserialize(tree) {
            Ok(t) => t,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                problems.add(path, clean_serde_message(&e.inner().to_string()));
                return Err(ConfigErrors(problems.0));
            }
        };
        let config = validate(top, &mut problems);
        match config {
            Some(c) if problems.0.is_empty() => Ok(c),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

/// serde_yaml appends " at line N column M" which refers to the expanded tree, not the file.
fn clean_serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Replaces `${NAME}` in every string of the tree by the variable's value.
fn expand_env(
    value: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_string(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.add(path, message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => format!("{other:?}"),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                expand_env(item, child, env, problems);
            }
        }
        Value::Tagged(tagged) => expand_env(&mut tagged.value, path, env, problems),
        _ => {}
    }
}

fn expand_string(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (write ${NAME})".to_string())?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`${{{name}}}` is not a valid variable reference"));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Types one section. A key that fails (unknown, or of the wrong type) is reported with its
/// path and removed, and the section is typed again, so one mistake does not hide the next.
fn section<T: DeserializeOwned + Default>(
    name: &str,
    value: Option<Value>,
    problems: &mut Problems,
) -> Option<T> {
    let mut value = match value {
        None | Some(Value::Null) => return Some(T::default()),
        Some(v) => v,
    };
    for _ in 0..32 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    name.to_string()
                } else if inner.starts_with('[') {
                    format!("{name}{inner}")
                } else {
                    format!("{name}.{inner}")
                };
                problems.add(path, clean_serde_message(&e.inner().to_string()));
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        _ => None,
                    })
                    .collect();
                let all_map_keys = segments.len() == e.path().iter().count();
                if segments.is_empty() || !all_map_keys || !remove_key(&mut value, &segments) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the value at a path of mapping keys; false when there is none.
fn remove_key(value: &mut Value, path: &[String]) -> bool {
    let Value::Mapping(map) = value else {
        return false;
    };
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        return map.remove(&key).is_some();
    }
    match map.get_mut(&key) {
        Some(child) => remove_key(child, &path[1..]),
        None => false,
    }
}

fn scalar<T: DeserializeOwned>(
    name: &str,
    value: Option<Value>,
    problems: &mut Problems,
) -> Option<T> {
    let v = value?;
    if v.is_null() {
        return None;
    }
    match serde_yaml::from_value(v) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.add(name, clean_serde_message(&e.to_string()));
            None
        }
    }
}

fn socket_addr(path: &str, text: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(
                path,
                format!("`{text}` is not an address with a port, e.g. 0.0.0.0:8080"),
            );
            None
        }
    }
}

fn host_port(path: &str, text: &str, problems: &mut Problems) -> bool {
    if text.contains("://") {
        problems.add(path, format!("`{text}` must be host:port without a scheme"));
        return false;
    }
    let ok = match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
        }
        None => false,
    };
    if !ok {
        problems.add(
            path,
            format!("`{text}` is not host:port, e.g. 127.0.0.1:3000"),
        );
    }
    ok
}

fn secret(path: &str, text: &str, problems: &mut Problems) -> Vec<u8> {
    if text.len() < MIN_SECRET_BYTES {
        problems.add(
            path,
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                text.len()
            ),
        );
    }
    text.as_bytes().to_vec()
}

fn validate(top: FileTop, p: &mut Problems) -> Option<Config> {
    let listen_text: Option<String> = scalar("listen", top.listen, p);
    let listen = match &listen_text {
        Some(t) => socket_addr("listen", t, p),
        None => {
            p.add("listen", "is required, e.g. \"0.0.0.0:8080\"");
            None
        }
    };
    let upstream: Option<String> = scalar("upstream", top.upstream, p);
    match &upstream {
        Some(u) => {
            host_port("upstream", u, p);
        }
        None => p.add("upstream", "is required, e.g. \"127.0.0.1:3000\""),
    }
    let upstream_connect_timeout =
        scalar::<DurationTextValue>("upstream_connect_timeout", top.upstream_connect_timeout, p)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_UPSTREAM_CONNECT_TIMEOUT);
    let upstream_read_timeout =
        scalar::<DurationTextValue>("upstream_read_timeout", top.upstream_read_timeout, p)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_UPSTREAM_READ_TIMEOUT);
    let admin_text: Option<String> = scalar("admin_listen", top.admin_listen, p);
    let admin_listen = admin_text.and_then(|t| socket_addr("admin_listen", &t, p));
    if let (Some(a), Some(l)) = (admin_listen, listen) {
        if a == l {
            p.add("admin_listen", "must differ from listen");
        }
    }
    let threads: Option<usize> = scalar("threads", top.threads, p);
    let threads = match threads {
        Some(0) => {
            p.add("threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let grace_period = scalar::<DurationTextValue>("grace_period", top.grace_period, p)
        .map(|d| d.0)
        .unwrap_or(DEFAULT_GRACE_PERIOD);

    let cookie = validate_cookie(section("cookie", top.cookie, p), p);
    let session = validate_session(section("session", top.session, p), p);
    let store = validate_store(section("store", top.store, p), p);
    let on_store_error = match scalar::<String>("on_store_error", top.on_store_error, p).as_deref()
    {
        None | Some("fail_closed") => StoreErrorPolicy::FailClosed,
        Some("fail_open") => StoreErrorPolicy::FailOpen,
        Some(other) => {
            p.add(
                "on_store_error",
                format!("`{other}` is not one of fail_closed, fail_open"),
            );
            StoreErrorPolicy::FailClosed
        }
    };
    let log = validate_log(section("log", top.log, p), p);
    let limits = section::<FileLimits>("limits", top.limits, p).map(|l| {
        let max_header_bytes = l.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        if max_header_bytes < 1024 {
            p.add("limits.max_header_bytes", "must be at least 1024");
        }
        LimitsConfig { max_header_bytes }
    });
    let admin = section::<FileAdmin>("admin", top.admin, p).map(|a| {
        if let Some(t) = &a.token {
            if t.len() < 16 {
                p.add("admin.token", "must be at least 16 bytes");
            }
        }
        AdminConfig { token: a.token }
    });
    if admin.as_ref().is_some_and(|a| a.token.is_some()) && admin_listen.is_none() {
        p.add(
            "admin.token",
            "is set but admin_listen is not, so the admin API has nowhere to listen",
        );
    }
    let csrf = validate_csrf(section("csrf", top.csrf, p), p);
    if let (Some(c), Some(s)) = (&cookie, &session) {
        if let Some(max_age) = c.max_age {
            if max_age > s.absolute_timeout {
                p.add(
                    "cookie.max_age",
                    "must not exceed session.absolute_timeout (the session ends first)",
                );
            }
        }
    }

    Some(Config {
        listen: listen?,
        upstream: upstream?,
        upstream_connect_timeout,
        upstream_read_timeout,
        admin_listen,
        threads,
        grace_period,
        cookie: cookie?,
        session: session?,
        store: store?,
        on_store_error,
        log: log?,
        limits: limits?,
        admin: admin?,
        csrf: csrf?,
    })
}

/// A duration as a top-level scalar.
struct DurationTextValue(Duration);

impl<'de> Deserialize<'de> for DurationTextValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DurationText::deserialize(d).map(|t| DurationTextValue(t.0))
    }
}

fn validate_cookie(c: Option<FileCookie>, p: &mut Problems) -> Option<CookieConfig> {
    let c = c?;
    let name = c.name.unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        p.add(
            "cookie.name",
            format!("`{name}` is not a valid cookie name"),
        );
    }
    let secure = c.secure.unwrap_or(true);
    let http_only = c.http_only.unwrap_or(true);
    let same_site = match c.same_site.as_deref() {
        None | Some("lax") => SameSite::Lax,
        Some("strict") => SameSite::Strict,
        Some("none") => SameSite::None,
        Some(other) => {
            p.add(
                "cookie.same_site",
                format!("`{other}` is not one of strict, lax, none"),
            );
            SameSite::Lax
        }
    };
    if same_site == SameSite::None && !secure {
        p.add("cookie.same_site", "none requires cookie.secure: true");
    }
    let path = c.path.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        p.add(
            "cookie.path",
            format!("`{path}` must start with / and contain no `;`"),
        );
    }
    if let Some(d) = &c.domain {
        if d.is_empty()
            || d.bytes()
                .any(|b| b == b';' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            p.add("cookie.domain", format!("`{d}` is not a valid domain"));
        }
    }
    if name.starts_with("__Host-") {
        if !secure {
            p.add("cookie.secure", "a __Host- cookie requires secure: true");
        }
        if c.domain.is_some() {
            p.add("cookie.domain", "a __Host- cookie must not set a domain");
        }
        if path != "/" {
            p.add("cookie.path", "a __Host- cookie requires path: \"/\"");
        }
    }
    if name.starts_with("__Secure-") && !secure {
        p.add("cookie.secure", "a __Secure- cookie requires secure: true");
    }
    let max_age = c.max_age.map(|d| d.0);
    if max_age == Some(Duration::ZERO) {
        p.add("cookie.max_age", "must be greater than zero");
    }
    let secrets = match c.secrets {
        None => {
            p.add(
                "cookie.secrets",
                "is required: at least one secret of 32 bytes or more",
            );
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            p.add("cookie.secrets", "must list at least one secret");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| secret(&format!("cookie.secrets[{i}]"), s, p))
            .collect(),
    };
    Some(CookieConfig {
        name,
        secure,
        http_only,
        same_site,
        path,
        domain: c.domain,
        max_age,
        secrets,
    })
}

fn validate_session(s: Option<FileSession>, p: &mut Problems) -> Option<SessionConfig> {
    let s = s?;
    let idle_timeout = s.idle_timeout.map(|d| d.0).unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let absolute_timeout = s
        .absolute_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_ABSOLUTE_TIMEOUT);
    if idle_timeout < Duration::from_secs(1) {
        p.add("session.idle_timeout", "must be at least 1s");
    }
    if absolute_timeout < Duration::from_secs(1) {
        p.add("session.absolute_timeout", "must be at least 1s");
    }
    let max_bytes = s.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes < 2 {
        p.add("session.max_bytes", "must be at least 2 (the size of `{}`)");
    } else if max_bytes > 1 << 20 {
        p.add("session.max_bytes", "must be at most 1048576");
    }
    let header_secret = match (s.sign_header.unwrap_or(false), s.header_secret) {
        (true, Some(secret_text)) => Some(secret("session.header_secret", &secret_text, p)),
        (true, None) => {
            p.add(
                "session.header_secret",
                "is required when session.sign_header is true",
            );
            None
        }
        (false, _) => None,
    };
    if let Some(f) = &s.user_field {
        if f.is_empty() || f.starts_with("__") {
            p.add(
                "session.user_field",
                "must be a non-empty field name not starting with __",
            );
        }
    }
    Some(SessionConfig {
        idle_timeout,
        absolute_timeout,
        max_bytes,
        header_secret,
        user_field: s.user_field,
    })
}

fn redis_url(path: &str, url: &str, p: &mut Problems) {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        p.add(path, "must start with redis:// or rediss://");
        return;
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        p.add(path, format!("is not a valid Redis URL: {e}"));
    }
}

fn validate_store(s: Option<FileStore>, p: &mut Problems) -> Option<StoreConfig> {
    let s = s?;
    let kind = s.kind.clone().unwrap_or_else(|| "memory".to_string());
    let key_prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if key_prefix.contains(['{', '}']) {
        p.add(
            "store.key_prefix",
            "must not contain `{` or `}` (a hash tag would put every session in one Redis Cluster slot)",
        );
    }
    let timeout = s
        .timeout
        .as_ref()
        .map(|d| d.0)
        .unwrap_or(DEFAULT_STORE_TIMEOUT);
    if timeout < Duration::from_millis(1) {
        p.add("store.timeout", "must be at least 1ms");
    }
    let mut only = |key: &str, present: bool, kinds: &str| {
        if present {
            p.add(
                format!("store.{key}"),
                format!("is only valid with kind {kinds}"),
            );
        }
    };
    let redis_kinds = matches!(kind.as_str(), "redis" | "redis-cluster" | "redis-sentinel");
    only("url", s.url.is_some() && kind != "redis", "redis");
    only(
        "nodes",
        s.nodes.is_some() && kind != "redis-cluster",
        "redis-cluster",
    );
    only(
        "sentinels",
        s.sentinels.is_some() && kind != "redis-sentinel",
        "redis-sentinel",
    );
    only(
        "master_name",
        s.master_name.is_some() && kind != "redis-sentinel",
        "redis-sentinel",
    );
    only(
        "db",
        s.db.is_some() && kind != "redis-sentinel",
        "redis-sentinel",
    );
    only(
        "sentinel_username",
        s.sentinel_username.is_some() && kind != "redis-sentinel",
        "redis-sentinel",
    );
    only(
        "sentinel_password",
        s.sentinel_password.is_some() && kind != "redis-sentinel",
        "redis-sentinel",
    );
    only(
        "username",
        s.username.is_some() && !matches!(kind.as_str(), "redis-cluster" | "redis-sentinel"),
        "redis-cluster or redis-sentinel (for kind redis, put user:password@ in the url)",
    );
    only(
        "password",
        s.password.is_some() && !matches!(kind.as_str(), "redis-cluster" | "redis-sentinel"),
        "redis-cluster or redis-sentinel (for kind redis, put user:password@ in the url)",
    );
    only(
        "ca_file",
        s.ca_file.is_some() && !redis_kinds,
        "redis, redis-cluster or redis-sentinel",
    );
    only(
        "max_sessions",
        s.max_sessions.is_some() && kind != "memory",
        "memory",
    );
    only(
        "persist_path",
        s.persist_path.is_some() && kind != "memory",
        "memory",
    );

    let ca_file = s.ca_file.as_ref().map(PathBuf::from);
    let urls: Vec<&String> = s
        .url
        .iter()
        .chain(s.nodes.iter().flatten())
        .chain(s.sentinels.iter().flatten())
        .collect();
    let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
    if tls > 0 && tls < urls.len() {
        p.add(
            "store",
            "mixes redis:// and rediss:// URLs; use one scheme for every node",
        );
    }
    if ca_file.is_some() && redis_kinds && tls == 0 {
        p.add("store.ca_file", "is only used with rediss:// URLs");
    }
    let auth = RedisAuth {
        username: s.username.clone(),
        password: s.password.clone(),
        ca_file: ca_file.clone(),
    };
    let backend = match kind.as_str() {
        "redis" => {
            let url = match &s.url {
                Some(u) => {
                    redis_url("store.url", u, p);
                    u.clone()
                }
                None => {
                    p.add(
                        "store.url",
                        "is required for kind redis, e.g. redis://127.0.0.1:6379/0",
                    );
                    String::new()
                }
            };
            StoreBackend::Redis { url, ca_file }
        }
        "redis-cluster" => {
            let nodes = s.nodes.clone().unwrap_or_default();
            if nodes.is_empty() {
                p.add(
                    "store.nodes",
                    "is required for kind redis-cluster: at least one seed node",
                );
            }
            for (i, n) in nodes.iter().enumerate() {
                redis_url(&format!("store.nodes[{i}]"), n, p);
            }
            StoreBackend::RedisCluster { nodes, auth }
        }
        "redis-sentinel" => {
            let sentinels = s.sentinels.clone().unwrap_or_default();
            if sentinels.is_empty() {
                p.add(
                    "store.sentinels",
                    "is required for kind redis-sentinel: at least one sentinel",
                );
            }
            for (i, n) in sentinels.iter().enumerate() {
                redis_url(&format!("store.sentinels[{i}]"), n, p);
            }
            let master_name = s.master_name.clone().unwrap_or_default();
            if master_name.is_empty() {
                p.add("store.master_name", "is required for kind redis-sentinel");
            }
            let db = s.db.unwrap_or(0);
            if db < 0 {
                p.add("store.db", "must not be negative");
            }
            StoreBackend::RedisSentinel {
                sentinels,
                master_name,
                db,
                auth,
                sentinel_username: s.sentinel_username.clone(),
                sentinel_password: s.sentinel_password.clone(),
            }
        }
        "memory" => {
            let max_sessions = s.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
            if max_sessions == 0 {
                p.add("store.max_sessions", "must be at least 1");
            }
            StoreBackend::Memory {
                max_sessions,
                persist_path: s.persist_path.clone().map(PathBuf::from),
            }
        }
        other => {
            p.add(
                "store.kind",
                format!("`{other}` is not one of redis, redis-cluster, redis-sentinel, memory"),
            );
            return None;
        }
    };
    Some(StoreConfig {
        key_prefix,
        timeout,
        backend,
    })
}

fn validate_csrf(c: Option<FileCsrf>, p: &mut Problems) -> Option<CsrfConfig> {
    let c = c?;
    let mode = match c.mode.as_deref() {
        None | Some("enforce") => CsrfMode::Enforce,
        Some("report") => CsrfMode::Report,
        Some("off") => CsrfMode::Off,
        Some(other) => {
            p.add(
                "csrf.mode",
                format!("`{other}` is not one of enforce, report, off"),
            );
            CsrfMode::Enforce
        }
    };
    let mut trusted_origins = Vec::new();
    for (i, origin) in c.trusted_origins.unwrap_or_default().iter().enumerate() {
        match crate::csrf::normalize_trusted_origin(origin) {
            Ok(normalized) => trusted_origins.push(normalized),
            Err(message) => p.add(format!("csrf.trusted_origins[{i}]"), message),
        }
    }
    let exempt_paths = c.exempt_paths.unwrap_or_default();
    for (i, path) in exempt_paths.iter().enumerate() {
        if let Err(message) = crate::csrf::check_exempt_path(path) {
            p.add(format!("csrf.exempt_paths[{i}]"), message);
        }
    }
    Some(CsrfConfig {
        mode,
        trusted_origins,
        exempt_paths,
    })
}

fn validate_log(l: Option<FileLog>, p: &mut Problems) -> Option<LogConfig> {
    let l = l?;
    let level = match l.level.as_deref() {
        None | Some("info") => tracing::Level::INFO,
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        Some(other) => {
            p.add(
                "log.level",
                format!("`{other}` is not one of error, warn, info, debug"),
            );
            tracing::Level::INFO
        }
    };
    let format = match l.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add("log.format", format!("`{other}` is not one of text, json"));
            LogFormat::Text
        }
    };
    Some(LogConfig {
        level,
        format,
        access: l.access.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(name: &str) -> Option<String> {
        match name {
            "SESSION_SECRET" => Some(SECRET.to_string()),
            _ => None,
        }
    }

    fn minimal() -> String {
        format!("listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"{SECRET}\"]\n")
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, &env) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(&minimal(), &env).expect("valid");
        assert_eq!(c.cookie.name, DEFAULT_COOKIE_NAME);
        assert!(c.cookie.secure && c.cookie.http_only);
        assert_eq!(c.cookie.same_site, SameSite::Lax);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session.absolute_timeout, Duration::from_secs(86400));
        assert_eq!(c.session.max_bytes, 4096);
        assert_eq!(c.store.timeout, Duration::from_millis(500));
        assert_eq!(c.store.key_prefix, "session:");
        assert!(matches!(
            c.store.backend,
            StoreBackend::Memory {
                max_sessions: 100_000,
                ..
            }
        ));
        assert_eq!(c.on_store_error, StoreErrorPolicy::FailClosed);
        assert_eq!(c.limits.max_header_bytes, 16384);
        assert!(c.admin_listen.is_none());
    }

    #[test]
    fn env_variables_are_expanded_and_unset_ones_named() {
        let text = "listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"${SESSION_SECRET}\", \"${MISSING_ONE}\"]\n";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec!["cookie.secrets[1]: environment variable MISSING_ONE is not set"]
        );
    }

    #[test]
    fn short_secret_is_named_with_its_index() {
        let text = format!("listen: \"127.0.0.1:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"{SECRET}\", \"short\"]\n");
        assert_eq!(
            errors(&text),
            vec!["cookie.secrets[1]: must be at least 32 bytes (got 5)"]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let text = format!("{}session:\n  idle_timeot: 5m\n", minimal());
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("session"), "{errs:?}");
        assert!(errs[0].contains("idle_timeot"), "{errs:?}");
        let errs = errors(&format!("{}bogus: 1\n", minimal()));
        assert!(errs[0].contains("bogus"), "{errs:?}");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let text = "listen: nowhere\ncookie:\n  same_site: sideways\nstore:\n  kind: redis\nlog:\n  level: loud\n";
        let errs = errors(text);
        for key in [
            "listen:",
            "upstream:",
            "cookie.same_site:",
            "cookie.secrets:",
            "store.url:",
            "log.level:",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(key)),
                "missing {key} in {errs:?}"
            );
        }
    }

    #[test]
    fn host_prefix_rules() {
        let text = format!(
            "{}  secure: false\n  domain: example.com\n  path: /app\n",
            minimal()
        );
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with("cookie.secure:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("cookie.domain:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("cookie.path:")),
            "{errs:?}"
        );
    }

    #[test]
    fn same_site_none_requires_secure() {
        let text = format!(
            "{}  name: sid\n  secure: false\n  same_site: none\n",
            minimal()
        );
        assert_eq!(
            errors(&text),
            vec!["cookie.same_site: none requires cookie.secure: true"]
        );
    }

    #[test]
    fn durations_accept_units_and_reject_bare_numbers() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
        let text = format!("{}session:\n  idle_timeout: 30\n", minimal());
        let errs = errors(&text);
        assert!(errs[0].starts_with("session.idle_timeout:"), "{errs:?}");
    }

    #[test]
    fn store_keys_of_other_kinds_are_rejected() {
        let text = format!("{}store:\n  kind: memory\n  url: redis://x\n", minimal());
        assert_eq!(
            errors(&text),
            vec!["store.url: is only valid with kind redis"]
        );
        let text = format!("{}store:\n  kind: redis\n  url: http://x\n", minimal());
        assert_eq!(
            errors(&text),
            vec!["store.url: must start with redis:// or rediss://"]
        );
    }

    #[test]
    fn tls_settings_must_be_consistent() {
        let text = format!(
            "{}store:\n  kind: redis\n  url: redis://x:6379\n  ca_file: /ca.pem\n",
            minimal()
        );
        assert_eq!(
            errors(&text),
            vec!["store.ca_file: is only used with rediss:// URLs"]
        );
        let text = format!(
            "{}store:\n  kind: redis-cluster\n  nodes: [\"rediss://a:1\", \"redis://b:2\"]\n",
            minimal()
        );
        assert_eq!(
            errors(&text),
            vec!["store: mixes redis:// and rediss:// URLs; use one scheme for every node"]
        );
    }

    #[test]
    fn sign_header_requires_a_secret() {
        let text = format!("{}session:\n  sign_header: true\n", minimal());
        assert_eq!(
            errors(&text),
            vec!["session.header_secret: is required when session.sign_header is true"]
        );
    }

    #[test]
    fn invalid_yaml_is_an_error_not_a_panic() {
        assert!(!errors("listen: [unclosed").is_empty());
        assert!(!errors("- just\n- a list\n").is_empty());
        assert!(!errors("\u{0}").is_empty());
    }

    #[test]
    fn csrf_defaults_to_enforce_with_nothing_trusted_or_exempt() {
        let c = Config::parse(&minimal(), &env).unwrap();
        assert_eq!(c.csrf, CsrfConfig::default());
        assert_eq!(c.csrf.mode, CsrfMode::Enforce);
        let c = Config::parse(&format!("{}csrf: {{}}\n", minimal()), &env).unwrap();
        assert_eq!(c.csrf, CsrfConfig::default());
    }

    #[test]
    fn csrf_section_is_read_and_origins_are_normalized() {
        let text = format!(
            "{}csrf:\n  mode: report\n  trusted_origins: [\"HTTPS://Admin.Example.com:443\", \"http://127.0.0.1:3000\"]\n  exempt_paths: [\"/webhooks/\"]\n",
            minimal()
        );
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.csrf.mode, CsrfMode::Report);
        assert_eq!(
            c.csrf.trusted_origins,
            vec!["https://admin.example.com", "http://127.0.0.1:3000"]
        );
        assert_eq!(c.csrf.exempt_paths, vec!["/webhooks/"]);
        let off = format!("{}csrf:\n  mode: off\n", minimal());
        assert_eq!(Config::parse(&off, &env).unwrap().csrf.mode, CsrfMode::Off);
    }

    #[test]
    fn csrf_problems_name_their_key() {
        let text = format!(
            "{}csrf:\n  mode: strict\n  trusted_origins: [\"https://ok.example\", \"https://a.example/\", \"a.example\"]\n  exempt_paths: [\"/ok/\", \"webhooks/\"]\n",
            minimal()
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("csrf.mode: `strict` is not one of enforce, report, off"));
        assert!(errs[1].starts_with("csrf.trusted_origins[1]: "), "{errs:?}");
        assert!(errs[1].contains("trailing /"), "{errs:?}");
        assert!(errs[2].starts_with("csrf.trusted_origins[2]: "), "{errs:?}");
        assert!(errs[3].starts_with("csrf.exempt_paths[1]: "), "{errs:?}");
        let errs = errors(&format!("{}csrf:\n  trusted: []\n", minimal()));
        assert!(
            errs[0].starts_with("csrf") && errs[0].contains("trusted"),
            "{errs:?}"
        );
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = Config::parse(&minimal(), &env).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
