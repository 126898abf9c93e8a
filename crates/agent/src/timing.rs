//! When to renew and how long to wait before retrying, both jittered so that many agents (and the
//! many SVIDs of one agent) do not hit the server at the same instant.

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// Renewal happens at this fraction of an SVID's lifetime…
const RENEW_FRACTION: f64 = 0.5;
/// …give or take this share of it (DESIGN.md §5: 1/2 lifetime ±10%).
const RENEW_JITTER: f64 = 0.1;

/// A uniformly random number in `[0, 1)`.
pub(crate) fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    // The system RNG does not fail on Linux; if it ever did, no jitter is a safe fallback.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits make every f64 in [0, 1) with that spacing equally likely.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// When an SVID valid from `not_before` to `not_after` should be renewed: at half its lifetime,
/// ±10% of that half, with `r` in `[0, 1)` choosing where.
pub(crate) fn renew_at_with(not_before: SystemTime, not_after: SystemTime, r: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let fraction = RENEW_FRACTION * (1.0 - RENEW_JITTER + 2.0 * RENEW_JITTER * r.clamp(0.0, 1.0));
    not_before + lifetime.mul_f64(fraction)
}

/// [`renew_at_with`] with a random `r`.
pub(crate) fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    renew_at_with(not_before, not_after, random_fraction())
}

/// When an SVID received at `received` should be renewed: like [`renew_at`], with its lifetime
/// counted from when it was issued (`received`, or `NotBefore` if that is later), not from its
/// `NotBefore`. The server backdates `NotBefore` (10 s, for clock skew); counting from it would put
/// the renewal of a 10-second SVID at the moment it arrives, and the agent would renew it again at
/// once, over and over.
pub(crate) fn renew_at_received(
    not_before: SystemTime,
    not_after: SystemTime,
    received: SystemTime,
) -> SystemTime {
    renew_at(not_before.max(received), not_after)
}

/// Exponential backoff with "equal jitter": the n-th delay is uniformly random in
/// `[d/2, d]` where `d = min(max, initial · 2ⁿ)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .checked_mul(1u32 << self.attempt.min(20))
            .map_or(self.max, |d| d.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        ceiling / 2 + (ceiling / 2).mul_f64(random_fraction())
    }

    /// After a success the next failure waits the initial delay again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_within_ten_percent_of_half_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(3600);
        assert_eq!(
            renew_at_with(start, end, 0.0),
            start + Duration::from_secs(1620)
        );
        assert_eq!(
            renew_at_with(start, end, 0.5),
            start + Duration::from_secs(1800)
        );
        assert_eq!(
            renew_at_with(start, end, 1.0),
            start + Duration::from_secs(1980)
        );
        for _ in 0..1000 {
            let at = renew_at(start, end);
            assert!(
                at >= start + Duration::from_secs(1620) && at <= start + Duration::from_secs(1980)
            );
        }
        // A certificate whose end is before its start renews at once.
        assert_eq!(renew_at_with(end, start, 0.5), end);
    }

    #[test]
    fn renewal_counts_the_lifetime_from_receipt_not_from_a_backdated_not_before() {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // A 10-second SVID backdated by 10 s: half of what is left after receipt.
        let (not_before, not_after) = (
            received - Duration::from_secs(10),
            received + Duration::from_secs(10),
        );
        for _ in 0..1000 {
            let at = renew_at_received(not_before, not_after, received);
            assert!(
                at >= received + Duration::from_millis(4500)
                    && at <= received + Duration::from_millis(5500),
                "{at:?}"
            );
        }
        // A NotBefore after receipt (the server's clock ahead) counts from NotBefore.
        let late = received + Duration::from_secs(4);
        let at = renew_at_received(late, late + Duration::from_secs(100), received);
        assert!(at >= late + Duration::from_secs(45));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let bounds = [1, 2, 4, 8, 8, 8];
        for ceiling in bounds {
            let d = backoff.next_delay();
            let ceiling = Duration::from_secs(ceiling);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
        }
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(8));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn random_fraction_is_in_range() {
        for _ in 0..1000 {
            let r = random_fraction();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
