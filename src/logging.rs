//! Log setup: `tracing` with text or JSON lines on stderr at `log.level`. pingora's own `log`
//! records are captured too. Nothing logged anywhere in the sidecar carries a session ID, a
//! cookie value or a secret.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(config: &LogConfig) {
    let level = LevelFilter::from_level(config.level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_max_level(level)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
