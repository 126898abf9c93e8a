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

        /// Moves the clock forward by `by`.
        pub fn advance(&self, by: Duration) {
            let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
            *now += by;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
