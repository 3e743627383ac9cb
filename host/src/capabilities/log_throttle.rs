//! A log line that a failing backend would write on every request, written
//! at most once per interval instead, by whichever thread gets there first
//! (no lock), and the clock it reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How often a store's or database's failures are logged (a misconfigured
/// or unreachable one fails every request).
pub(crate) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The origin of the clock readings (ns after it; 0 means "never").
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`ORIGIN`], never 0.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(ORIGIN.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// When a line was last written (ns after [`ORIGIN`]; 0: never).
#[derive(Default)]
pub(crate) struct LogThrottle {
    last: AtomicU64,
}

impl LogThrottle {
    /// Whether a line may be written now ([`FAILURE_LOG_INTERVAL`] after
    /// the last), marking it written if so.
    pub(crate) fn due(&self) -> bool {
        let now = now_ns();
        let last = self.last.load(Ordering::Relaxed);
        let interval = u64::try_from(FAILURE_LOG_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_due_once_per_interval() {
        let throttle = LogThrottle::default();
        assert!(throttle.due());
        assert!(!throttle.due());
        assert!(!throttle.due());
    }
}
