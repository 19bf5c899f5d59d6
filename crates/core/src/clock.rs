//! The node's clock for what happens at a time of day or after days: a
//! test can run it faster than real time.

use std::time::Duration;

use chrono::Utc;

/// Milliseconds since the Unix epoch by the system's clock: the real time
/// that records, messages, leases and log lines are stamped with (the
/// [`Clock`] is for what a test may run faster).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time that schedules and object lifecycle rules go by. Real time, unless a test asks for it to run faster: from
/// `epoch_ms` on, `scale` times as fast as real time (a fixed epoch keeps
/// it continuous across restarts of the node).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ms: i64,
    scale: i64,
}

impl Clock {
    pub fn real() -> Self {
        Self { epoch_ms: 0, scale: 1 }
    }

    pub fn scaled(epoch_ms: i64, scale: u32) -> Self {
        Self { epoch_ms, scale: i64::from(scale.max(1)) }
    }

    pub fn now_ms(&self) -> i64 {
        self.epoch_ms + (Utc::now().timestamp_millis() - self.epoch_ms) * self.scale
    }

    /// Clock time once `real` time has passed.
    pub fn after(&self, real: Duration) -> i64 {
        self.now_ms() + real.as_millis() as i64 * self.scale
    }

    /// Real time until clock time `t` (rounded up, so the timer never
    /// wakes just before it).
    pub fn until(&self, t: i64) -> Duration {
        Duration::from_millis(((t - self.now_ms()).max(0) as u64).div_ceil(self.scale as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster_from_its_epoch() {
        let epoch = Utc::now().timestamp_millis() - 1000;
        let c = Clock::scaled(epoch, 60);
        let ahead = c.now_ms() - epoch;
        assert!((60_000..70_000).contains(&ahead), "{ahead}");
        assert!(c.until(c.now_ms() + 60_000) <= Duration::from_millis(1000));
        let real = Clock::real();
        assert!((real.now_ms() - Utc::now().timestamp_millis()).abs() < 1000);
    }
}
