//! Makes cookie brute forcing visible: counts rejected session cookies per client address and
//! logs a throttled warning naming the address (never the cookie).
//!
//! The first rejection from an address is reported at once; after that at most one warning per
//! address per [`WARN_INTERVAL`], carrying the number of rejections since the previous warning.
//! IPv6 clients are grouped by their /64 network, the unit an attacker usually controls.
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are tracked; when the table is full,
//! entries whose last warning is older than the interval are dropped, and if that frees
//! nothing the table starts over (at worst some addresses are reported again early).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning per address per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on the number of addresses tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// A warning that is due: `count` rejections from `client` since the previous warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub client: String,
    pub count: u64,
}

struct Entry {
    last_warn: Instant,
    pending: u64,
}

/// Per-address counter of rejected cookies with throttled reporting.
pub struct RejectionTracker {
    interval: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Default for RejectionTracker {
    fn default() -> Self {
        RejectionTracker::new(WARN_INTERVAL, MAX_TRACKED)
    }
}

impl RejectionTracker {
    pub fn new(interval: Duration, capacity: usize) -> RejectionTracker {
        RejectionTracker {
            interval,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Records one rejected cookie from `client` and logs a warning when one is due.
    pub fn rejected(&self, client: Option<IpAddr>) {
        let Some(client) = client else {
            return;
        };
        if let Some(warning) = self.record(client, Instant::now()) {
            tracing::warn!(
                client = %warning.client,
                rejected = warning.count,
                "rejected session cookies from this client address (possible brute forcing)"
            );
        }
    }

    /// Records one rejection at `now`; returns the warning to log, if one is due.
    pub fn record(&self, client: IpAddr, now: Instant) -> Option<Warning> {
        let key = group(client);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&key) {
            entry.pending += 1;
            if now.saturating_duration_since(entry.last_warn) < self.interval {
                return None;
            }
            let count = entry.pending;
            entry.pending = 0;
            entry.last_warn = now;
            return Some(Warning {
                client: describe(key),
                count,
            });
        }
        if entries.len() >= self.capacity {
            let interval = self.interval;
            entries.retain(|_, e| now.saturating_duration_since(e.last_warn) < interval);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                last_warn: now,
                pending: 0,
            },
        );
        Some(Warning {
            client: describe(key),
            count: 1,
        })
    }

    /// Number of addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The unit an address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn describe(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_rejection_warns_then_at_most_once_per_interval_with_the_count() {
        let t = RejectionTracker::new(Duration::from_secs(60), 100);
        let start = Instant::now();
        let a = ip("192.0.2.7");
        assert_eq!(
            t.record(a, start),
            Some(Warning {
                client: "192.0.2.7".into(),
                count: 1
            })
        );
        for i in 1..=5 {
            assert_eq!(t.record(a, start + Duration::from_secs(i)), None);
        }
        let w = t.record(a, start + Duration::from_secs(61)).unwrap();
        assert_eq!(w.count, 6, "five held back plus this one");
        assert_eq!(t.record(a, start + Duration::from_secs(62)), None);
    }

    #[test]
    fn addresses_are_counted_separately_and_ipv6_by_network() {
        let t = RejectionTracker::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        assert!(t.record(ip("192.0.2.1"), now).is_some());
        assert!(t.record(ip("192.0.2.2"), now).is_some());
        let w = t.record(ip("2001:db8:1:2:aaaa::1"), now).unwrap();
        assert_eq!(w.client, "2001:db8:1:2::/64");
        assert_eq!(t.record(ip("2001:db8:1:2:bbbb::9"), now), None, "same /64");
        assert_eq!(
            t.record(ip("::ffff:192.0.2.1"), now),
            None,
            "mapped IPv4 is the IPv4"
        );
        assert_eq!(t.tracked(), 3);
    }

    #[test]
    fn memory_stays_bounded() {
        let t = RejectionTracker::new(Duration::from_secs(60), 50);
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.record(IpAddr::V4(i.into()), now);
            assert!(t.tracked() <= 50);
        }
        // Stale entries are pruned before the table is cleared.
        let t = RejectionTracker::new(Duration::from_secs(60), 2);
        t.record(ip("192.0.2.1"), now);
        t.record(ip("192.0.2.2"), now + Duration::from_secs(59));
        t.record(ip("192.0.2.3"), now + Duration::from_secs(61));
        assert_eq!(t.tracked(), 2);
        assert_eq!(
            t.record(ip("192.0.2.2"), now + Duration::from_secs(62)),
            None,
            "the recent entry survived"
        );
    }
}
