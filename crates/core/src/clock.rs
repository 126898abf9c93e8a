//! Time, injected: everything that depends on "now" takes a [`Clock`], so tests can move time by
//! hand instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// A shared clock handle, as stored by long-lived components.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(any(test, feature = "testing"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "testing"))]
mod manual {
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    /// A clock that moves only when told to.
    #[derive(Debug)]
    pub struct ManualClock {
        now: Mutex<SystemTime>,
    }

    impl ManualClock {
        pub fn new(start: SystemTime) -> Self {
            Self {
                now: Mutex::new(start),
            }
        }

        /// Moves the clock forward by `by`. A step past the largest time the platform can
        /// represent leaves the clock where it is, rather than panicking as `SystemTime + Duration`
        /// would (tests pass `Duration::MAX` as "forever").
        pub fn advance(&self, by: Duration) {
            let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(later) = now.checked_add(by) {
                *now = later;
            }
        }

        /// Sets the clock to `to` (which may be in the past).
        pub fn set(&self, to: SystemTime) {
            *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
        }
    }

    impl super::Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.now.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// A time for an error message: whole seconds since the Unix epoch, which every log reader can
/// turn into a date (a `SystemTime`'s `Debug` prints its internals).
pub(crate) fn unix_time(at: &SystemTime) -> String {
    match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => format!("Unix time {}", since.as_secs()),
        Err(_) => "a time before 1970".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn error_messages_give_times_as_unix_seconds() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_796_526_245_900);
        assert_eq!(unix_time(&at), "Unix time 1796526245");
        let before = std::time::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_time(&before), "a time before 1970");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), start + Duration::from_secs(30));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn manual_clock_can_be_set_back() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = ManualClock::new(start);
        clock.set(SystemTime::UNIX_EPOCH);
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn manual_clock_does_not_panic_on_overflow() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = ManualClock::new(start);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::ZERO);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn manual_clock_is_shared_through_the_trait_object() {
        let start = SystemTime::UNIX_EPOCH;
        let manual = Arc::new(ManualClock::new(start));
        let shared: SharedClock = manual.clone();
        manual.advance(Duration::from_secs(5));
        assert_eq!(shared.now(), start + Duration::from_secs(5));
    }

    #[test]
    fn system_clock_is_after_the_epoch() {
        let shared: SharedClock = Arc::new(SystemClock);
        assert!(shared.now() > SystemTime::UNIX_EPOCH);
    }
}
