//! Makes cookie brute forcing visible: counts rejected session cookies per client address and
//! logs a throttled warning naming the address (never the cookie).
//!
//! A warning for an address is due at its first rejection, then at most once per
//! [`WARN_INTERVAL`], carrying the number of rejections since the previous warning. IPv6
//! clients are grouped by their /64 network, the unit an attacker usually controls. Whatever
//! the number of addresses, at most one warning is logged per [`LOG_INTERVAL`] overall, with
//! the number of rejections held back since the previous line (`suppressed`: each rejection
//! that found its address's warning due but the line budget spent counts once, so a noisy
//! address counts about its request rate); an address whose warning was held back stays due,
//! so it is named at one of its next rejections. Memory is bounded: at most [`MAX_TRACKED`]
//! addresses are tracked; when the table is full, entries not warned about within the
//! interval are dropped (with their pending counts: past that many addresses, the per-second
//! line and its `suppressed` total are what remains), and if that frees nothing the table
//! starts over (at worst some addresses are reported again early).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::throttle::Throttle;

/// At most one warning per address per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning line per this interval, all addresses together.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on the number of addresses tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// A warning to log: `count` rejections from `client` since its previous warning, and
/// `suppressed` rejections (of any address) whose due warning was held back since the
/// previous line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub client: String,
    pub count: u64,
    pub suppressed: u64,
}

struct Entry {
    /// `None` until a warning about this address was logged.
    last_warn: Option<Instant>,
    pending: u64,
}

/// Per-address counter of rejected cookies with throttled reporting.
pub struct RejectionTracker {
    interval: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    log: Throttle,
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
            log: Throttle::new(LOG_INTERVAL),
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
                suppressed = warning.suppressed,
                "rejected session cookies from this client address (possible brute forcing)"
            );
        }
    }

    /// Records one rejection at `now`; returns the warning to log, if one is due for the
    /// address and the overall limit lets it through.
    pub fn record(&self, client: IpAddr, now: Instant) -> Option<Warning> {
        let key = group(client);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            let interval = self.interval;
            entries.retain(|_, e| {
                e.last_warn
                    .is_some_and(|at| now.saturating_duration_since(at) < interval)
            });
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        let entry = entries.entry(key).or_insert(Entry {
            last_warn: None,
            pending: 0,
        });
        entry.pending += 1;
        let due = entry
            .last_warn
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
        if !due {
            return None;
        }
        let suppressed = self.log.admit(now)?;
        entry.last_warn = Some(now);
        Some(Warning {
            client: describe(key),
            count: std::mem::take(&mut entry.pending),
            suppressed,
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
                count: 1,
                suppressed: 0,
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
        let start = Instant::now();
        // A second apart, so that the overall limit lets each warning through.
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(t.record(ip("192.0.2.1"), at(0)).is_some());
        assert!(t.record(ip("192.0.2.2"), at(1)).is_some());
        let w = t.record(ip("2001:db8:1:2:aaaa::1"), at(2)).unwrap();
        assert_eq!(w.client, "2001:db8:1:2::/64");
        assert_eq!(
            t.record(ip("2001:db8:1:2:bbbb::9"), at(3)),
            None,
            "same /64"
        );
        assert_eq!(
            t.record(ip("::ffff:192.0.2.1"), at(4)),
            None,
            "mapped IPv4 is the IPv4"
        );
        assert_eq!(t.tracked(), 3);
    }

    #[test]
    fn many_addresses_get_one_warning_line_per_second_with_the_number_held_back() {
        let t = RejectionTracker::new(WARN_INTERVAL, MAX_TRACKED);
        let start = Instant::now();
        // 50,000 addresses, half IPv4 and half in distinct IPv6 /64s, one rejection each
        // within 0.9 s: the table fills and starts over several times.
        let mut warnings = Vec::new();
        for i in 0..50_000u32 {
            let client = if i % 2 == 0 {
                IpAddr::V4(i.into())
            } else {
                let [a, b, c, d] = i.to_be_bytes();
                let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, hi, lo, 0, 0, 0, 1))
            };
            let at = start + Duration::from_micros(u64::from(i) * 18);
            warnings.extend(t.record(client, at));
        }
        assert_eq!(warnings.len(), 1, "one line in the first second");
        assert_eq!(warnings[0].suppressed, 0);
        let w = t
            .record(ip("198.51.100.1"), start + LOG_INTERVAL)
            .expect("the next second has its line");
        assert_eq!(w.suppressed, 49_999, "the line counts the ones held back");
        assert_eq!(t.record(ip("198.51.100.2"), start + LOG_INTERVAL), None);
        assert!(t.tracked() <= MAX_TRACKED);
    }

    #[test]
    fn an_address_held_back_by_the_overall_limit_is_named_at_a_later_rejection() {
        let t = RejectionTracker::new(Duration::from_secs(60), 100);
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        assert!(t.record(ip("192.0.2.1"), ms(0)).is_some());
        assert_eq!(t.record(ip("192.0.2.2"), ms(100)), None);
        assert_eq!(t.record(ip("192.0.2.2"), ms(500)), None);
        assert_eq!(
            t.record(ip("192.0.2.2"), ms(1000)),
            Some(Warning {
                client: "192.0.2.2".into(),
                count: 3,
                suppressed: 2,
            })
        );
        assert_eq!(
            t.record(ip("192.0.2.2"), ms(2500)),
            None,
            "per address: 60 s"
        );
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
