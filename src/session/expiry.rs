//! Session expiry in one place: the sliding idle timeout, the absolute limit from creation,
//! when a read refreshes the TTL, and which stored timestamps are believable. All clock
//! arithmetic saturates: no stored value and no valid config can overflow it.

use std::time::Duration;

/// How far in the future a stored timestamp may lie (other sidecars' clocks may run
/// ahead of ours) before the metadata is treated as corrupt.
pub const MAX_CLOCK_SKEW_MS: u64 = 24 * 3600 * 1000;

/// The expiry rules of `session.idle_timeout` and `session.absolute_timeout`, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    idle_ms: u64,
    absolute_ms: u64,
}

impl Expiry {
    pub fn new(idle: Duration, absolute: Duration) -> Expiry {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Expiry {
            idle_ms: ms(idle).max(1),
            absolute_ms: ms(absolute).max(1),
        }
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }

    /// The hard end of a session created at `created_ms`.
    pub fn deadline(&self, created_ms: u64) -> u64 {
        created_ms.saturating_add(self.absolute_ms)
    }

    /// The TTL a session created at `created_ms` gets when written or refreshed at `now`:
    /// the idle timeout, capped at the absolute limit. `None` once the limit has passed.
    pub fn ttl(&self, created_ms: u64, now: u64) -> Option<Duration> {
        let end = self.deadline(created_ms);
        (now < end).then(|| Duration::from_millis(self.idle_ms.min(end - now)))
    }

    /// True when a session last refreshed at `touched_ms` should be refreshed again: at most
    /// once per quarter of the idle timeout.
    pub fn touch_due(&self, touched_ms: u64, now: u64) -> bool {
        now.saturating_sub(touched_ms) >= self.idle_ms / 4
    }

    /// When a session expires if nothing refreshes it.
    pub fn expires_at(&self, created_ms: u64, touched_ms: u64) -> u64 {
        touched_ms
            .saturating_add(self.idle_ms)
            .min(self.deadline(created_ms))
    }

    /// True when stored metadata can be real: not later than `now` plus the clock skew
    /// other sidecars may have, and last refreshed no earlier than created.
    pub fn plausible(&self, created_ms: u64, touched_ms: u64, now: u64) -> bool {
        let latest = now.saturating_add(MAX_CLOCK_SKEW_MS);
        created_ms <= latest && touched_ms <= latest && touched_ms >= created_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn expiry() -> Expiry {
        Expiry::new(Duration::from_secs(30 * 60), Duration::from_secs(24 * 3600))
    }

    #[test]
    fn ttl_is_the_idle_timeout_capped_at_the_absolute_limit() {
        let e = expiry();
        let created = 1_000_000;
        assert_eq!(e.ttl(created, created), Some(Duration::from_secs(30 * 60)));
        let near_end = e.deadline(created) - 5 * MIN;
        assert_eq!(e.ttl(created, near_end), Some(Duration::from_secs(5 * 60)));
        assert_eq!(e.ttl(created, e.deadline(created)), None);
        assert_eq!(e.ttl(created, u64::MAX), None);
    }

    #[test]
    fn a_refresh_is_due_after_a_quarter_of_the_idle_timeout() {
        let e = expiry();
        assert!(!e.touch_due(0, 7 * MIN));
        assert!(e.touch_due(0, 7 * MIN + 30_000));
        // A touch from the future (another sidecar's clock) is not due and does not wrap.
        assert!(!e.touch_due(10 * MIN, 0));
    }

    #[test]
    fn arithmetic_saturates_on_absurd_metadata() {
        let e = expiry();
        assert_eq!(e.deadline(u64::MAX), u64::MAX);
        assert_eq!(e.expires_at(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(e.ttl(u64::MAX, 5), Some(Duration::from_secs(30 * 60)));
        let huge = Expiry::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.deadline(1), u64::MAX);
    }

    #[test]
    fn metadata_from_the_far_future_or_backwards_is_implausible() {
        let e = expiry();
        let now = 1_700_000_000_000;
        assert!(e.plausible(now - MIN, now, now));
        assert!(e.plausible(now + MIN, now + MIN, now));
        assert!(!e.plausible(u64::MAX, u64::MAX, now));
        assert!(!e.plausible(now, u64::MAX, now));
        assert!(!e.plausible(now, now - MIN, now));
    }
}
