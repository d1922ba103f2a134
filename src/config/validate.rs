//! File structs -> the validated [`Config`]: defaults filled in, every value checked, every
//! problem recorded under its key path. Returns `None` only when a section could not be read
//! at all (its problem is already recorded).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::file::StoreKind::{Memory, Redis, RedisCluster, RedisSentinel};
use super::file::{
    duration_text, FileAdmin, FileConfig, FileCookie, FileCsrf, FileLimits, FileLog, FileSession,
    FileStore, StoreKind,
};
use super::load::Problems;
use super::*;

/// Builds the validated configuration; `None` when a required value is missing or unusable.
pub(super) fn validate(f: FileConfig, p: &mut Problems) -> Option<Config> {
    let listen = match &f.listen {
        Some(t) => socket_addr("listen", t, p),
        None => {
            p.add("listen", "is required, e.g. \"0.0.0.0:8080\"");
            None
        }
    };
    match &f.upstream {
        Some(u) => {
            host_port("upstream", u, p);
        }
        None => p.add("upstream", "is required, e.g. \"127.0.0.1:3000\""),
    }
    let upstream_connect_timeout = bounded(
        "upstream_connect_timeout",
        f.upstream_connect_timeout
            .map_or(DEFAULT_UPSTREAM_CONNECT_TIMEOUT, |d| d.0),
        Duration::from_millis(1)..=MAX_UPSTREAM_CONNECT_TIMEOUT,
        p,
    );
    let upstream_read_timeout = bounded(
        "upstream_read_timeout",
        f.upstream_read_timeout
            .map_or(DEFAULT_UPSTREAM_READ_TIMEOUT, |d| d.0),
        Duration::from_millis(1)..=MAX_UPSTREAM_READ_TIMEOUT,
        p,
    );
    let admin_listen = f
        .admin_listen
        .as_ref()
        .and_then(|t| socket_addr("admin_listen", t, p));
    if let (Some(a), Some(l)) = (admin_listen, listen) {
        if a == l {
            p.add("admin_listen", "must differ from listen");
        }
    }
    let threads = match f.threads {
        Some(0) => {
            p.add("threads", "must be at least 1");
            1
        }
        Some(n) if n > MAX_THREADS => {
            p.add("threads", format!("must be at most {MAX_THREADS}"));
            MAX_THREADS
        }
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let grace_period = bounded(
        "grace_period",
        f.grace_period.map_or(DEFAULT_GRACE_PERIOD, |d| d.0),
        Duration::ZERO..=MAX_GRACE_PERIOD,
        p,
    );

    let cookie = validate_cookie(f.cookie.unwrap_or_default(), p);
    let session = validate_session(f.session.unwrap_or_default(), p);
    let store = validate_store(f.store.unwrap_or_default(), p);
    let log = validate_log(f.log.unwrap_or_default());
    let limits = validate_limits(f.limits.unwrap_or_default(), p);
    let admin = validate_admin(f.admin.unwrap_or_default(), p);
    let csrf = validate_csrf(f.csrf.unwrap_or_default(), p);
    if admin.token.is_some() && admin_listen.is_none() {
        p.add(
            "admin.token",
            "is set but admin_listen is not, so the admin API has nowhere to listen",
        );
    }
    if let Some(max_age) = cookie.max_age {
        if max_age > session.absolute_timeout {
            p.add(
                "cookie.max_age",
                "must not exceed session.absolute_timeout (the session ends first)",
            );
        }
    }

    Some(Config {
        listen: listen?,
        upstream: f.upstream?,
        upstream_connect_timeout,
        upstream_read_timeout,
        admin_listen,
        threads,
        grace_period,
        cookie,
        session,
        store: store?,
        on_store_error: f.on_store_error.unwrap_or(StoreErrorPolicy::FailClosed),
        log,
        limits,
        admin,
        csrf,
    })
}

/// A duration key's value, checked against the key's range.
fn bounded(
    key: &str,
    d: Duration,
    range: std::ops::RangeInclusive<Duration>,
    p: &mut Problems,
) -> Duration {
    if d < *range.start() {
        p.add(
            key,
            format!("must be at least {}", duration_text(*range.start())),
        );
    } else if d > *range.end() {
        p.add(
            key,
            format!("must be at most {}", duration_text(*range.end())),
        );
    }
    d
}

fn socket_addr(path: &str, text: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                path,
                format!("`{text}` is not an address with a port, e.g. 0.0.0.0:8080"),
            );
            None
        }
    }
}

fn host_port(path: &str, text: &str, p: &mut Problems) -> bool {
    if text.contains("://") {
        p.add(path, format!("`{text}` must be host:port without a scheme"));
        return false;
    }
    let ok = match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
        }
        None => false,
    };
    if !ok {
        p.add(
            path,
            format!("`{text}` is not host:port, e.g. 127.0.0.1:3000"),
        );
    }
    ok
}

fn secret(path: &str, text: &str, p: &mut Problems) -> Vec<u8> {
    if text.len() < MIN_SECRET_BYTES {
        p.add(
            path,
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                text.len()
            ),
        );
    }
    text.as_bytes().to_vec()
}

fn validate_cookie(c: FileCookie, p: &mut Problems) -> CookieConfig {
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
    let same_site = c.same_site.unwrap_or(SameSite::Lax);
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
    // Max-Age is sent in whole seconds: below 1 s it would expire the cookie at once.
    let max_age = c.max_age.map(|d| {
        bounded(
            "cookie.max_age",
            d.0,
            Duration::from_secs(1)..=MAX_COOKIE_MAX_AGE,
            p,
        )
    });
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
    CookieConfig {
        name,
        secure,
        http_only,
        same_site,
        path,
        domain: c.domain,
        max_age,
        secrets,
    }
}

fn validate_session(s: FileSession, p: &mut Problems) -> SessionConfig {
    let idle_timeout = bounded(
        "session.idle_timeout",
        s.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
        Duration::from_secs(1)..=MAX_SESSION_TIMEOUT,
        p,
    );
    let absolute_timeout = bounded(
        "session.absolute_timeout",
        s.absolute_timeout.map_or(DEFAULT_ABSOLUTE_TIMEOUT, |d| d.0),
        Duration::from_secs(1)..=MAX_SESSION_TIMEOUT,
        p,
    );
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
    SessionConfig {
        idle_timeout,
        absolute_timeout,
        max_bytes,
        header_secret,
        user_field: s.user_field,
    }
}

/// A `store` key that only some kinds use.
struct KindSpecificKey {
    key: &'static str,
    is_set: fn(&FileStore) -> bool,
    kinds: &'static [StoreKind],
    /// Appended to the message, starting with a space.
    hint: &'static str,
}

/// Every `store` key that belongs to some kinds only, and the kinds it belongs to. The keys
/// not listed (`kind`, `key_prefix`, `timeout`) apply to every kind.
const KIND_SPECIFIC_KEYS: &[KindSpecificKey] = &[
    KindSpecificKey {
        key: "url",
        is_set: |s| s.url.is_some(),
        kinds: &[Redis],
        hint: "",
    },
    KindSpecificKey {
        key: "nodes",
        is_set: |s| s.nodes.is_some(),
        kinds: &[RedisCluster],
        hint: "",
    },
    KindSpecificKey {
        key: "sentinels",
        is_set: |s| s.sentinels.is_some(),
        kinds: &[RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "master_name",
        is_set: |s| s.master_name.is_some(),
        kinds: &[RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "db",
        is_set: |s| s.db.is_some(),
        kinds: &[RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "sentinel_username",
        is_set: |s| s.sentinel_username.is_some(),
        kinds: &[RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "sentinel_password",
        is_set: |s| s.sentinel_password.is_some(),
        kinds: &[RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "username",
        is_set: |s| s.username.is_some(),
        kinds: &[RedisCluster, RedisSentinel],
        hint: " (for kind redis, put user:password@ in the url)",
    },
    KindSpecificKey {
        key: "password",
        is_set: |s| s.password.is_some(),
        kinds: &[RedisCluster, RedisSentinel],
        hint: " (for kind redis, put user:password@ in the url)",
    },
    KindSpecificKey {
        key: "ca_file",
        is_set: |s| s.ca_file.is_some(),
        kinds: &[Redis, RedisCluster, RedisSentinel],
        hint: "",
    },
    KindSpecificKey {
        key: "max_sessions",
        is_set: |s| s.max_sessions.is_some(),
        kinds: &[Memory],
        hint: "",
    },
    KindSpecificKey {
        key: "persist_path",
        is_set: |s| s.persist_path.is_some(),
        kinds: &[Memory],
        hint: "",
    },
];

/// `redis, redis-cluster or redis-sentinel`.
fn kind_list(kinds: &[StoreKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn validate_store(s: FileStore, p: &mut Problems) -> Option<StoreConfig> {
    if p.reported("store.kind") {
        // Which keys belong is unknown: checking them against the default kind would only
        // add noise.
        return None;
    }
    let kind = s.kind.unwrap_or(Memory);
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
    let timeout = bounded(
        "store.timeout",
        s.timeout.as_ref().map_or(DEFAULT_STORE_TIMEOUT, |d| d.0),
        Duration::from_millis(1)..=MAX_STORE_TIMEOUT,
        p,
    );
    for rule in KIND_SPECIFIC_KEYS {
        if (rule.is_set)(&s) && !rule.kinds.contains(&kind) {
            p.add(
                format!("store.{}", rule.key),
                format!(
                    "is only valid with kind {}{}",
                    kind_list(rule.kinds),
                    rule.hint
                ),
            );
        }
    }

    let redis_kinds = kind != Memory;
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
    let backend = match kind {
        Redis => {
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
        RedisCluster => {
            let nodes = s.nodes.unwrap_or_default();
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
        RedisSentinel => {
            let sentinels = s.sentinels.unwrap_or_default();
            if sentinels.is_empty() {
                p.add(
                    "store.sentinels",
                    "is required for kind redis-sentinel: at least one sentinel",
                );
            }
            for (i, n) in sentinels.iter().enumerate() {
                redis_url(&format!("store.sentinels[{i}]"), n, p);
            }
            let master_name = s.master_name.unwrap_or_default();
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
                sentinel_username: s.sentinel_username,
                sentinel_password: s.sentinel_password,
            }
        }
        Memory => {
            let max_sessions = s.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
            if max_sessions == 0 {
                p.add("store.max_sessions", "must be at least 1");
            }
            let persist_path = s.persist_path.map(PathBuf::from);
            if let Some(path) = &persist_path {
                if let Err(message) = check_persist_path(path) {
                    p.add("store.persist_path", message);
                }
            }
            StoreBackend::Memory {
                max_sessions,
                persist_path,
            }
        }
    };
    Some(StoreConfig {
        key_prefix,
        timeout,
        backend,
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

fn validate_log(l: FileLog) -> LogConfig {
    LogConfig {
        level: l.level.map_or(tracing::Level::INFO, Into::into),
        format: l.format.unwrap_or(LogFormat::Text),
        access: l.access.unwrap_or(false),
    }
}

fn validate_limits(l: FileLimits, p: &mut Problems) -> LimitsConfig {
    let max_header_bytes = l.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
    if max_header_bytes < 1024 {
        p.add("limits.max_header_bytes", "must be at least 1024");
    }
    LimitsConfig { max_header_bytes }
}

fn validate_admin(a: FileAdmin, p: &mut Problems) -> AdminConfig {
    if let Some(t) = &a.token {
        if t.len() < 16 {
            p.add("admin.token", "must be at least 16 bytes");
        }
    }
    AdminConfig { token: a.token }
}

fn validate_csrf(c: FileCsrf, p: &mut Problems) -> CsrfConfig {
    let mut trusted_origins = Vec::new();
    for (i, text) in c.trusted_origins.unwrap_or_default().iter().enumerate() {
        match normalize_origin(text) {
            Ok(origin) => trusted_origins.push(origin),
            Err(message) => p.add(format!("csrf.trusted_origins[{i}]"), message),
        }
    }
    let exempt_paths = c.exempt_paths.unwrap_or_default();
    for (i, path) in exempt_paths.iter().enumerate() {
        if let Err(message) = check_exempt_path(path) {
            p.add(format!("csrf.exempt_paths[{i}]"), message);
        }
    }
    CsrfConfig {
        mode: c.mode.unwrap_or_default(),
        trusted_origins,
        exempt_paths,
    }
}

/// An origin exactly as a browser serializes it in `Origin`: `http` or `https`, `://`, the
/// host, an optional port; scheme and host lowercase, the scheme's default port left out.
/// Anything more (path, query, fragment, userinfo, wildcard) or less is an error.
fn normalize_origin(text: &str) -> Result<String, String> {
    let shape = "must be an origin: http:// or https://, a host and an optional port, nothing else";
    if text.contains('*') {
        return Err(format!(
            "`{text}` has a wildcard; list each trusted origin on its own"
        ));
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("`{text}` {shape}"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("`{text}` must use http:// or https://")),
    };
    for (c, what) in [
        ('@', "user info"),
        ('/', "a path (not even a trailing /)"),
        ('\\', "a path (not even a trailing /)"),
        ('?', "a query"),
        ('#', "a fragment"),
    ] {
        if rest.contains(c) {
            return Err(format!("`{text}` must not have {what}; {shape}"));
        }
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return Err(format!("`{text}` has an unclosed [ in its IPv6 address"));
        };
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("`{text}` has an invalid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("`{text}` {shape}"))?,
            ),
        };
        (format!("[{}]", ipv6_text(ip)), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        (normalize_host(text, host)?, port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            match digits.parse::<u16>() {
                Ok(n) if valid && n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "`{text}` has an invalid port (write 1 to 65535, or none)"
                    ))
                }
            }
        }
    };
    Ok(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A domain name (letters, digits, `-`, `_`, dot-separated labels) or an IPv4 address in
/// dotted-decimal, lowercased.
fn normalize_host(text: &str, host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    if !host.is_ascii() {
        return Err(format!(
            "`{text}`: write an internationalized host name in its ASCII (xn--) form"
        ));
    }
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(&host).split('.').collect();
    let valid = labels.iter().all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid {
        return Err(format!("`{text}` has an invalid host"));
    }
    // Browsers read a host whose last label is a number as an IPv4 address and send it in
    // dotted-decimal; accept only that form so the comparison stays byte for byte.
    let numeric = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"));
    if numeric && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "`{text}` has an invalid IPv4 address; write four decimal numbers such as 10.0.0.1"
        ));
    }
    Ok(host)
}

/// An IPv6 address as the URL standard serializes it: lowercase hex without leading zeros,
/// the first longest run of two or more zero pieces as `::`, never dotted IPv4.
fn ipv6_text(ip: Ipv6Addr) -> String {
    let pieces = ip.segments();
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < pieces.len() {
        if pieces[i] == 0 {
            let start = i;
            while i < pieces.len() && pieces[i] == 0 {
                i += 1;
            }
            let len = i - start;
            if len >= 2 && best.is_none_or(|(_, l)| len > l) {
                best = Some((start, len));
            }
        } else {
            i += 1;
        }
    }
    let hex = |ps: &[u16]| {
        ps.iter()
            .map(|p| format!("{p:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    match best {
        Some((start, len)) => format!("{}::{}", hex(&pieces[..start]), hex(&pieces[start + len..])),
        None => hex(&pieces),
    }
}

/// The memory store's file is written at shutdown: its directory must exist then, so it is
/// checked now (a file that cannot be written would lose every session at the first stop).
fn check_persist_path(path: &std::path::Path) -> Result<(), String> {
    let shown = path.display();
    if path.file_name().is_none() {
        return Err(format!("`{shown}` must name a file"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "`{shown}`: the directory `{}` does not exist",
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("`{shown}` is a directory; name a file"));
    }
    Ok(())
}

/// An exempt path is a prefix of request paths: it starts with `/`, and has no query,
/// fragment, wildcard, whitespace or control character, nor anything that makes a request
/// path never exempt (none of which could ever match).
fn check_exempt_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with /"));
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "`{path}` must be a path only, without a query or fragment"
        ));
    }
    if path.contains('*') {
        return Err(format!(
            "`{path}` is a prefix, not a pattern: leave out the *"
        ));
    }
    if !crate::csrf::is_clean_path(path.as_bytes()) {
        return Err(format!(
            "`{path}` could never match: a path with a `.` or `..` segment, `;`, `\\`, or an \
             encoded `.`, `/`, `\\`, `;` or `%` is never exempt"
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{path}` must not contain whitespace or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_for_byte_comparison() {
        for (text, origin) in [
            ("https://admin.example.com", "https://admin.example.com"),
            ("HTTPS://Admin.Example.COM", "https://admin.example.com"),
            ("https://example.com:443", "https://example.com"),
            ("http://example.com:80", "http://example.com"),
            ("http://example.com:443", "http://example.com:443"),
            ("https://example.com:8443", "https://example.com:8443"),
            ("https://example.com:08443", "https://example.com:8443"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
            ("https://[::1]", "https://[::1]"),
            (
                "https://[2001:DB8:0:0:0:0:0:1]:443",
                "https://[2001:db8::1]",
            ),
            ("http://[::ffff:1.2.3.4]:81", "http://[::ffff:102:304]:81"),
            ("http://[1:0:0:2:0:0:0:3]", "http://[1:0:0:2::3]"),
            (
                "https://xn--bcher-kva.example",
                "https://xn--bcher-kva.example",
            ),
        ] {
            assert_eq!(normalize_origin(text).as_deref(), Ok(origin), "{text}");
        }
    }

    #[test]
    fn anything_but_an_origin_is_refused_with_the_reason() {
        for (text, reason) in [
            ("https://example.com/", "path"),
            ("https://example.com/app", "path"),
            ("https://example.com?x=1", "query"),
            ("https://example.com#top", "fragment"),
            ("https://user:pw@example.com", "user info"),
            ("https://*.example.com", "wildcard"),
            ("*", "wildcard"),
            ("example.com", "must be an origin"),
            ("null", "must be an origin"),
            ("", "must be an origin"),
            ("ftp://example.com", "http:// or https://"),
            ("https://", "no host"),
            ("https://:443", "no host"),
            ("https://example.com:", "invalid port"),
            ("https://example.com:0", "invalid port"),
            ("https://example.com:65536", "invalid port"),
            ("https://example.com:+1", "invalid port"),
            ("https://example.com:80:80", "invalid port"),
            ("https://exa mple.com", "invalid host"),
            ("https://example..com", "invalid host"),
            ("https://bücher.example", "xn--"),
            ("https://127.1", "IPv4"),
            ("https://0x7f.0.0.1", "IPv4"),
            ("https://[::1", "unclosed"),
            ("https://[::g]", "IPv6"),
            ("https://[::1]x", "must be an origin"),
        ] {
            let e = normalize_origin(text).expect_err(text);
            assert!(e.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn exempt_paths_are_prefixes_starting_with_a_slash() {
        for ok in ["/", "/webhooks/", "/api/v1/callback"] {
            assert_eq!(check_exempt_path(ok), Ok(()), "{ok}");
        }
        for (bad, reason) in [
            ("webhooks/", "must start with /"),
            ("", "must start with /"),
            ("https://x/webhooks", "must start with /"),
            ("/hooks?x=1", "query"),
            ("/hooks#x", "fragment"),
            ("/hooks/*", "not a pattern"),
            ("/hooks /x", "whitespace"),
            ("/hooks/../admin", "could never match"),
            ("/hooks;v=1", "could never match"),
            ("/hooks%2fx", "could never match"),
        ] {
            let e = check_exempt_path(bad).expect_err(bad);
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn kind_lists_read_as_a_sentence() {
        assert_eq!(kind_list(&[Redis]), "redis");
        assert_eq!(
            kind_list(&[RedisCluster, RedisSentinel]),
            "redis-cluster or redis-sentinel"
        );
        assert_eq!(
            kind_list(&[Redis, RedisCluster, RedisSentinel]),
            "redis, redis-cluster or redis-sentinel"
        );
    }
}
