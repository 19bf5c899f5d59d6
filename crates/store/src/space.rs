//! Keeps log lines from taking the data directory's last free space. Lines
//! come from code that nobody reviews (a function or a task printing empty
//! lines stores hundreds of bytes of rows per byte printed, and nothing
//! else bounds them but retention): below a floor of free space they are
//! no longer stored, so that the writes clients were promised (objects,
//! messages, functions) keep the room left. Free space is read at most
//! once a second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// How often free space is read again.
const RECHECK_MS: i64 = 1_000;
/// How often the drop is logged while it lasts.
const WARN_EVERY_MS: i64 = 60_000;

pub(crate) struct LogSpace {
    dir: PathBuf,
    floor: AtomicU64,
    low: AtomicBool,
    checked_ms: AtomicI64,
    warned_ms: AtomicI64,
}

impl LogSpace {
    /// A floor of 1 GiB for the filesystem holding `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            floor: AtomicU64::new(1 << 30),
            low: AtomicBool::new(false),
            checked_ms: AtomicI64::new(i64::MIN),
            warned_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub(crate) fn set_floor(&self, bytes: u64) {
        self.floor.store(bytes, Ordering::Relaxed);
        self.checked_ms.store(i64::MIN, Ordering::Relaxed);
    }

    /// Whether log lines may be stored now; when not, says so in the
    /// node's log (once a minute).
    pub(crate) fn allows(&self, what: &str) -> bool {
        let now = now_ms();
        if now.saturating_sub(self.checked_ms.load(Ordering::Relaxed)) >= RECHECK_MS {
            self.checked_ms.store(now, Ordering::Relaxed);
            let floor = self.floor.load(Ordering::Relaxed);
            self.low.store(free_bytes(&self.dir).is_some_and(|free| free < floor), Ordering::Relaxed);
        }
        let low = self.low.load(Ordering::Relaxed);
        let warned = self.warned_ms.load(Ordering::Relaxed);
        if low && now.saturating_sub(warned) >= WARN_EVERY_MS {
            self.warned_ms.store(now, Ordering::Relaxed);
            tracing::warn!(
                dir = %self.dir.display(),
                floor_mb = self.floor.load(Ordering::Relaxed) >> 20,
                "the data directory's disk is nearly full: {what} are not stored until it has room again"
            );
        }
        !low
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

use nimbus_core::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stop_below_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let space = LogSpace::new(dir.path().to_path_buf());
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert!(space.allows("lines"));
        space.set_floor(u64::MAX);
        assert!(!space.allows("lines"));
        space.set_floor(0);
        assert!(space.allows("lines"));
    }
}
