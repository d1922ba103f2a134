//! `Config::parse` on arbitrary text: an answer (a config or a list of problems, each naming
//! a key), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_sidecar::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| match name {
        "SESSION_SECRET" => Some("fuzz-secret-0123456789abcdef-0123456789".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    if let Err(errors) = Config::parse(&text, &env) {
        assert!(!errors.0.is_empty(), "an error without a problem");
        for e in &errors.0 {
            let _ = e.to_string();
        }
    }
});
