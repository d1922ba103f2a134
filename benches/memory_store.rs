//! Question: how much memory does the embedded store need for 100 000 sessions of 5 small
//! fields? Target: under 150 MiB RSS for the whole process.
//!
//! Fills a `MemoryStore` through its `SessionStore` API the way the proxy does (hashed keys,
//! canonical JSON values), then reads the process's resident set size from `/proc`.
//! Run: `cargo bench --bench memory_store` (set `SESSIONS` to change the count).

use std::time::{Duration, Instant};

use session_sidecar::cookie::SessionId;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::{now_ms, SessionStore};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let sessions: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss_mib();
    let store = MemoryStore::open(sessions, None);
    let start = Instant::now();
    runtime.block_on(async {
        for i in 0..sessions {
            let key = format!("session:{}", SessionId::generate().store_digest());
            let fields = vec![
                ("user_id".to_string(), (10_000 + i).to_string()),
                ("name".to_string(), "\"Alice Example\"".to_string()),
                ("role".to_string(), "\"member\"".to_string()),
                ("cart".to_string(), "[3,7,11]".to_string()),
                ("csrf".to_string(), "\"q8Zr2mB1xT0aL5kN\"".to_string()),
            ];
            store
                .create(&key, &fields, now_ms(), Duration::from_secs(1800))
                .await
                .expect("memory store never fails");
        }
    });
    let filled = start.elapsed();
    let after = rss_mib();
    println!("memory_store: {sessions} sessions of 5 fields");
    println!(
        "  fill time        {filled:?} ({:.0} ns/session)",
        filled.as_nanos() as f64 / sessions as f64
    );
    println!("  RSS before       {before:.1} MiB");
    println!("  RSS after        {after:.1} MiB (target < 150 MiB)");
    println!(
        "  per session      {:.0} bytes",
        (after - before) * 1024.0 * 1024.0 / sessions as f64
    );
    assert_eq!(store.len(), sessions);
}
