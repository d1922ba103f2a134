//! The file layer: serde structs that mirror `proxy.yaml` key for key. Every key is optional
//! here (defaults and requirements are the validator's business) and unknown keys are errors.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::{CsrfMode, LogFormat, SameSite, StoreErrorPolicy};

/// The whole file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub upstream_connect_timeout: Option<DurationText>,
    pub upstream_read_timeout: Option<DurationText>,
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
    pub grace_period: Option<DurationText>,
    pub cookie: Option<FileCookie>,
    pub session: Option<FileSession>,
    pub store: Option<FileStore>,
    pub on_store_error: Option<StoreErrorPolicy>,
    pub log: Option<FileLog>,
    pub limits: Option<FileLimits>,
    pub admin: Option<FileAdmin>,
    pub csrf: Option<FileCsrf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileCookie {
    pub name: Option<String>,
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<SameSite>,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub max_age: Option<DurationText>,
    pub secrets: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileSession {
    pub idle_timeout: Option<DurationText>,
    pub absolute_timeout: Option<DurationText>,
    pub max_bytes: Option<usize>,
    pub sign_header: Option<bool>,
    pub header_secret: Option<String>,
    pub user_field: Option<String>,
}

/// `store.kind`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    Redis,
    RedisCluster,
    RedisSentinel,
    Memory,
}

impl StoreKind {
    /// The name written in `store.kind`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis",
            StoreKind::RedisCluster => "redis-cluster",
            StoreKind::RedisSentinel => "redis-sentinel",
            StoreKind::Memory => "memory",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    pub kind: Option<StoreKind>,
    pub url: Option<String>,
    pub nodes: Option<Vec<String>>,
    pub sentinels: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<DurationText>,
    pub max_sessions: Option<usize>,
    pub persist_path: Option<String>,
}

/// `log.level`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> tracing::Level {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub level: Option<LogLevel>,
    pub format: Option<LogFormat>,
    pub access: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_header_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileCsrf {
    pub mode: Option<CsrfMode>,
    pub trusted_origins: Option<Vec<String>>,
    pub exempt_paths: Option<Vec<String>>,
}

/// A duration written as text (`500ms`, `30s`, `30m`, `24h`, `7d`).
pub struct DurationText(pub Duration);

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

/// Seconds in humantime's largest unit, the year (365.25 days).
const SECONDS_PER_YEAR: u128 = 31_557_600;

/// Parses `500ms`, `30s`, `30m`, `24h`, `7d` (and combinations humantime accepts). A value too
/// large for a [`Duration`] is an error, never a panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write a duration such as 500ms, 30s, 30m, 24h or 7d"
        ));
    }
    if !fits_in_seconds(trimmed) {
        return Err(format!("`{trimmed}` is too large"));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("`{trimmed}` is not a duration ({e}); write e.g. 500ms, 30s, 30m, 24h or 7d")
    })
}

/// Whether every duration humantime could read from `text` stays below `u64::MAX` seconds:
/// each number (humantime lets whitespace split its digits) counted as that many years, plus
/// one for a fraction. humantime checks each term but can panic when their sum lands exactly
/// on the limit, so the sum is bounded here first.
fn fits_in_seconds(text: &str) -> bool {
    let mut total: u128 = 0;
    let mut number: Option<u128> = None;
    for c in text.chars().chain(std::iter::once('|')) {
        if let Some(digit) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u128::from(digit)),
            );
        } else if !c.is_whitespace() {
            if let Some(n) = number.take() {
                total = total.saturating_add(n.saturating_add(1).saturating_mul(SECONDS_PER_YEAR));
            }
        }
    }
    total < u128::from(u64::MAX)
}

/// Writes a duration the way `proxy.yaml` does, in its largest whole unit (`500ms`, `60s`,
/// `5m`, `24h`, `365d`).
pub fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 || d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    if secs >= 2 * 86400 && secs % 86400 == 0 {
        format!("{}d", secs / 86400)
    } else if secs >= 3600 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs >= 120 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_humantime_accepts_still_parse() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration(" 2min ").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn overflowing_durations_are_errors_not_panics() {
        for text in [
            "999999999999999999999d",
            "18446744073709551615s",
            // humantime alone panics here: the sum lands on u64::MAX seconds plus 1e9 ns
            "18446744073709551615s 1000ms",
            "18446744073709551614s 1s 1000ms",
            "1 8 4 4 6 7 4 4 0 7 3 7 0 9 5 5 1 6 1 5 s",
        ] {
            let e = parse_duration(text).expect_err(text);
            assert!(e.contains("too large"), "{text}: {e}");
        }
        // far beyond every bound in proxy.yaml, yet representable: parsed here, refused by
        // the key's bound
        assert_eq!(
            parse_duration("500000000000y").unwrap(),
            Duration::from_secs(500_000_000_000 * 31_557_600)
        );
    }

    #[test]
    fn duration_text_uses_the_largest_whole_unit() {
        for (d, text) in [
            (Duration::from_millis(1), "1ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(86400), "24h"),
            (Duration::from_secs(365 * 86400), "365d"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(duration_text(d), text);
            assert_eq!(parse_duration(text).unwrap(), d, "{text} round-trips");
        }
    }
}
