//! [`Throttle`]: lets a log line through at most once per interval and counts the ones held
//! back, so that attacker-driven events (cross-origin refusals in [`crate::csrf`], rejected
//! cookies in [`crate::cookie_abuse`]) cannot flood the log. Lock-free: one atomic
//! compare-and-swap decides which caller logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a log line through at most once per interval and counts the ones held back.
pub struct Throttle {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` from which the next line may be logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            start: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged at `now`, `n` lines having been held back since
    /// the previous one; `None` (and one more held back) otherwise.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let start = t.start;
        assert_eq!(t.admit(start), Some(0));
        for i in 1..=5 {
            assert_eq!(t.admit(start + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(t.admit(start + Duration::from_millis(1000)), Some(5));
        assert_eq!(t.admit(start + Duration::from_millis(1500)), None);
        assert_eq!(t.admit(start + Duration::from_secs(10)), Some(1));
    }
}
