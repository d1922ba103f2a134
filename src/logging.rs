//! Log setup: `tracing` with text or JSON lines on stderr at `log.level`. pingora's own `log`
//! records are captured too. Nothing logged anywhere in the sidecar carries a session ID, a
//! cookie value or a secret.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogConfig, LogFormat};

/// The most pingora's own records are let through, whatever `log.level` says: at debug level
/// pingora logs request and response headers (cookies, `X-Session` values) and, on a parse
/// error, the raw request bytes.
pub const PINGORA_MAX_LEVEL: LevelFilter = LevelFilter::INFO;

/// The filter: `log.level` for the sidecar's own records, at most [`PINGORA_MAX_LEVEL`] for
/// pingora's (targets `pingora`, `pingora_core`, `pingora_proxy`, ...).
pub fn filter(config: &LogConfig) -> Targets {
    let level = LevelFilter::from_level(config.level);
    Targets::new()
        .with_default(level)
        .with_target("pingora", level.min(PINGORA_MAX_LEVEL))
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(config: &LogConfig) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter(config));
    let _ = match config.format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn pingora_records_stop_at_info_whatever_the_level() {
        let debug = LogConfig {
            level: Level::DEBUG,
            format: LogFormat::Text,
            access: false,
        };
        let f = filter(&debug);
        assert!(f.would_enable("session_sidecar::proxy", &Level::DEBUG));
        assert!(f.would_enable("pingora_proxy::proxy_h1", &Level::INFO));
        assert!(!f.would_enable("pingora_proxy::proxy_h1", &Level::DEBUG));
        assert!(!f.would_enable("pingora_core::protocols::http::v1::server", &Level::DEBUG));
        let warn = LogConfig {
            level: Level::WARN,
            ..debug
        };
        assert!(!filter(&warn).would_enable("pingora_core::server", &Level::INFO));
        assert!(filter(&warn).would_enable("pingora_core::server", &Level::WARN));
    }
}
