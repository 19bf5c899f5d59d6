//! Paces the invocations of an environment with less than a whole CPU to
//! its share. The kernel enforces the share per CFS period, and the
//! shortest period that holds its 1 ms minimum quota is 13.9 ms at 128 MB:
//! back-to-back short invocations use the quota up in a dozen invocations,
//! and the next waits out the rest of the period (p99 ≈ 11 ms for a no-op).
//! The pacer holds an invocation before it starts for as long as the
//! environment has used more CPU than its share allows (a token bucket
//! filled at the share and holding one quota), so the same throughput
//! comes as many short waits instead of a few long ones.
//!
//! The kernel's quota stays the limit: the pacer only keeps a runtime that
//! idles between short invocations from reaching it. It reads the CPU
//! clock of the environment's runtime process (one system call, no file):
//! CPU used by the runtime's own children is not paced, and meets the
//! kernel's limit as before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

/// An environment's pacer; see the module's documentation.
pub(crate) struct Pacer {
    clock: ClockId,
    bucket: Mutex<Bucket>,
}

impl Pacer {
    /// A pacer for the runtime process `pid` held to `cpu_millis`
    /// thousandths of a CPU, starting with a full bucket of `burst` of CPU;
    /// `None` for a share of a whole CPU or more (enforced over the
    /// kernel's 100 ms period, which short invocations do not use up), or
    /// when the process is gone.
    pub(crate) fn new(pid: u32, cpu_millis: u64, burst: Duration) -> Option<Self> {
        if !Self::paces(cpu_millis) {
            return None;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
        let clock = ClockId::pid_cpu_clock_id(pid).ok()?;
        let used = cpu_nanos(clock)?;
        let bucket = Bucket::new(cpu_millis, burst, Instant::now(), used);
        Some(Self { clock, bucket: Mutex::new(bucket) })
    }

    /// Whether a share is paced: under a whole CPU.
    pub(crate) fn paces(cpu_millis: u64) -> bool {
        cpu_millis < 1000
    }

    /// How long the next invocation must wait, if at all.
    pub(crate) fn delay(&self) -> Option<Duration> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).delay(Instant::now())
    }

    /// Counts what the runtime used since the last count (an invocation,
    /// and whatever it did while idle).
    pub(crate) fn charge(&self) {
        if let Some(used) = cpu_nanos(self.clock) {
            self.bucket.lock().unwrap_or_else(|e| e.into_inner()).charge(used);
        }
    }
}

fn cpu_nanos(clock: ClockId) -> Option<u64> {
    let t = clock_gettime(clock).ok()?;
    Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec()).ok()?)
}

/// The token bucket, in nanoseconds of CPU; time and CPU are given, so
/// that it is tested without either.
#[derive(Debug)]
struct Bucket {
    /// Nanoseconds of CPU earned per nanosecond of time.
    share: f64,
    capacity: f64,
    /// Negative while the environment is in debt.
    tokens: f64,
    filled_at: Instant,
    /// The runtime's CPU clock at the last charge.
    used: u64,
}

impl Bucket {
    fn new(cpu_millis: u64, burst: Duration, now: Instant, used: u64) -> Self {
        let capacity = burst.as_nanos() as f64;
        Self { share: cpu_millis as f64 / 1000.0, capacity, tokens: capacity, filled_at: now, used }
    }

    fn delay(&mut self, now: Instant) -> Option<Duration> {
        let earned = now.saturating_duration_since(self.filled_at).as_nanos() as f64 * self.share;
        self.tokens = (self.tokens + earned).min(self.capacity);
        self.filled_at = now;
        (self.tokens < 0.0).then(|| Duration::from_nanos((-self.tokens / self.share).ceil() as u64))
    }

    fn charge(&mut self, used: u64) {
        self.tokens -= used.saturating_sub(self.used) as f64;
        self.used = self.used.max(used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn within_its_share_an_environment_never_waits() {
        let t0 = Instant::now();
        // 72 thousandths (128 MB): 72 µs of CPU every millisecond.
        let mut b = Bucket::new(72, MS, t0, 0);
        for i in 1..=1000u32 {
            assert_eq!(b.delay(t0 + MS * i), None, "invocation {i}");
            b.charge(u64::from(i) * 72_000);
        }
    }

    #[test]
    fn the_burst_is_spent_first_then_each_invocation_waits_for_what_it_used() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, MS, t0, 5_000_000);
        // A full bucket: 1 ms of CPU with no wait, in ten 100 µs invocations.
        for i in 1..=10 {
            assert_eq!(b.delay(t0), None);
            b.charge(5_000_000 + i * 100_000);
        }
        assert_eq!(b.delay(t0), None, "an empty bucket is not a debt");
        b.charge(6_100_000);
        // 100 µs over, earned back at a tenth of a CPU: 1 ms.
        assert_eq!(b.delay(t0), Some(MS));
        assert_eq!(b.delay(t0 + MS / 2), Some(MS / 2));
        assert_eq!(b.delay(t0 + MS), None);
    }

    #[test]
    fn idle_time_refills_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(500, MS, t0, 0);
        assert_eq!(b.delay(t0 + Duration::from_secs(60)), None);
        b.charge(3_000_000);
        // 2 ms over the single burst, at half a CPU.
        assert_eq!(b.delay(t0 + Duration::from_secs(60)), Some(4 * MS));
    }

    #[test]
    fn a_clock_that_goes_back_charges_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, MS, t0, 1_000);
        b.charge(500);
        assert_eq!(b.delay(t0), None);
        b.charge(1_000);
        assert_eq!(b.tokens, 1_000_000.0);
    }
}
