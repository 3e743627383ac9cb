//! The clocks a guest reads (`wasi:clocks`), both at a coarse step
//! (`clock_resolution`, 1 ms by default): a guest cannot time a cache hit
//! or a branch, the timer defence Cloudflare Workers relies on against
//! Spectre-style side channels. Values only move forward in whole steps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The wall clock, rounded down to a whole step since the Unix epoch.
pub(crate) struct CoarseWallClock {
    step: Duration,
}

impl CoarseWallClock {
    pub(crate) fn new(step: Duration) -> Self {
        CoarseWallClock {
            step: step.max(Duration::from_nanos(1)),
        }
    }
}

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        self.step
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let step = self.step.as_nanos();
        let floored = now.as_nanos() / step * step;
        Duration::from_nanos(u64::try_from(floored).unwrap_or(u64::MAX))
    }
}

/// The monotonic clock in nanoseconds since the request's instance began,
/// rounded down to a whole step.
pub(crate) struct CoarseMonotonicClock {
    origin: Instant,
    step: u64,
}

impl CoarseMonotonicClock {
    pub(crate) fn new(step: Duration) -> Self {
        CoarseMonotonicClock {
            origin: Instant::now(),
            step: u64::try_from(step.as_nanos()).unwrap_or(u64::MAX).max(1),
        }
    }
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        self.step
    }

    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        elapsed / self.step * self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_in_whole_steps() {
        let step = Duration::from_millis(1);
        let wall = CoarseWallClock::new(step);
        let monotonic = CoarseMonotonicClock::new(step);
        let until = Instant::now() + Duration::from_millis(5);
        let (mut wall_values, mut mono_values) = (Vec::new(), Vec::new());
        while Instant::now() < until {
            wall_values.push(wall.now());
            mono_values.push(monotonic.now());
        }
        assert!(wall_values.iter().all(|v| v.as_nanos() % 1_000_000 == 0));
        assert!(mono_values.iter().all(|v| v % 1_000_000 == 0));
        assert!(mono_values.windows(2).all(|w| w[0] <= w[1]));
        assert!(mono_values.last() > mono_values.first(), "time moves");
        assert_eq!(
            (wall.resolution(), monotonic.resolution()),
            (step, 1_000_000)
        );
    }
}
