//! The host users sandboxes run as: one per sandbox, drawn from a range of
//! ids reserved for this node, so that what the kernel counts per user
//! (processes and threads against `RLIMIT_NPROC`, inotify instances and
//! watches, epoll watches, pending signals, message queue bytes, user
//! namespaces) is counted per sandbox, and no function can use up another's
//! share. It must never hand one id to two sandboxes alive at once.
//!
//! An id comes back when its sandbox is dropped, and is handed out again
//! only after every id never handed out, then in the order they came back:
//! a sandbox's last processes have long been reaped by then, even one
//! whose cgroup could not be removed.
//!
//! Nodes of one host do not share ids: unless told a range, a node claims
//! one of [`SLOTS`] ranges (from one its data directory picks) by a lock
//! file it holds while it runs.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

/// Where claimed ranges start: above the ranges systemd gives to host
/// users, dynamic users and `systemd-nspawn`'s containers (which end at
/// `0x6FFF_FFFF`).
const SLOTS_FROM: u32 = 0x7000_0000;
/// Ranges a node may claim, of [`SLOT`] ids each (up to `0x70FF_FFFF`).
pub const SLOTS: u32 = 256;
const SLOT: u32 = 1 << 16;

/// Gives out ids of a range, each to one holder at a time.
#[derive(Debug, Clone)]
pub struct Users {
    pool: Arc<Mutex<Pool>>,
}

#[derive(Debug)]
struct Pool {
    first: u32,
    count: u64,
    /// How many ids were ever handed out fresh.
    fresh: u64,
    returned: VecDeque<u32>,
    /// The lock on a claimed range, held while the pool lives.
    _claim: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// One sandbox's user: its uid, with a group of the same number. The id
/// goes back to the pool when this is dropped.
#[derive(Debug)]
pub struct User {
    id: u32,
    pool: Arc<Mutex<Pool>>,
}

impl User {
    /// The uid, and the gid of the user's own group.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for User {
    fn drop(&mut self) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).returned.push_back(self.id);
    }
}

impl Users {
    /// A pool over `range`, refusing root's id, the overflow id (65534,
    /// `nobody`, which files of unmapped owners show as) and `u32::MAX`
    /// (`-1`, "no change" to the kernel).
    pub fn new(range: RangeInclusive<u32>) -> Result<Self, String> {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return Err(format!("the sandbox user range {first}-{last} is empty"));
        }
        if range.contains(&0) || range.contains(&65534) || range.contains(&u32::MAX) {
            return Err(format!("the sandbox user range {first}-{last} holds 0, 65534 or 4294967295"));
        }
        let count = u64::from(last - first) + 1;
        let pool = Pool { first, count, fresh: 0, returned: VecDeque::new(), _claim: None };
        Ok(Self { pool: Arc::new(Mutex::new(pool)) })
    }

    /// Claims the first range no other node of the host holds, trying
    /// from slot `from` on: a lock file per range under `locks`, held
    /// while the pool lives.
    pub fn claim(locks: &std::path::Path, from: u32) -> Result<Self, String> {
        use nix::fcntl::{Flock, FlockArg};
        std::fs::create_dir_all(locks).map_err(|e| format!("creating {}: {e}", locks.display()))?;
        for slot in (0..SLOTS).map(|i| (from + i) % SLOTS) {
            let path = locks.join(format!("{slot}.lock"));
            let file = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let first = SLOTS_FROM + slot * SLOT;
                let users = Self::new(first..=first + (SLOT - 1))?;
                users.pool.lock().unwrap_or_else(|e| e.into_inner())._claim = Some(lock);
                return Ok(users);
            }
        }
        Err(format!("every sandbox user range under {} is held by another node", locks.display()))
    }

    /// The ids this pool gives out.
    pub fn range(&self) -> RangeInclusive<u32> {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.first..=pool.first + (pool.count - 1) as u32
    }

    /// An id no other holder has; `None` when every id of the range is held.
    pub fn take(&self) -> Option<User> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let id = if pool.fresh < pool.count {
            pool.fresh += 1;
            pool.first + (pool.fresh - 1) as u32
        } else {
            pool.returned.pop_front()?
        };
        Some(User { id, pool: self.pool.clone() })
    }
}

/// Reads `FIRST-LAST` (a command line's range of ids).
pub fn parse_range(text: &str) -> Result<RangeInclusive<u32>, String> {
    let (first, last) = text.split_once('-').ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let id = |s: &str| s.trim().parse::<u32>().map_err(|e| format!("{s:?} in {text:?}: {e}"));
    Ok(id(first)?..=id(last)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_held_by_one_at_a_time_and_reused_last() {
        let users = Users::new(1000..=1003).unwrap();
        let held: Vec<User> = (0..4).map(|_| users.take().unwrap()).collect();
        let mut ids: Vec<u32> = held.iter().map(User::id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1000, 1001, 1002, 1003]);
        assert!(users.take().is_none(), "every id is held");
        let mut held = held.into_iter();
        let (a, b) = (held.next().unwrap(), held.next().unwrap());
        let (a_id, b_id) = (a.id(), b.id());
        drop(b);
        drop(a);
        // Again in the order they came back.
        let again = [users.take().unwrap(), users.take().unwrap()];
        assert_eq!(again.map(|u| u.id()), [b_id, a_id]);
    }

    #[test]
    fn fresh_ids_come_before_returned_ones() {
        let users = Users::new(1000..=1009).unwrap();
        let first = users.take().unwrap().id();
        let next = users.take().unwrap().id();
        assert_ne!(first, next, "the returned id waits until every fresh one is out");
    }

    #[test]
    fn nodes_of_one_host_claim_ranges_of_their_own() {
        let locks = tempfile::tempdir().unwrap();
        let a = Users::claim(locks.path(), 7).unwrap();
        let b = Users::claim(locks.path(), 7).unwrap();
        assert_eq!(a.range(), 0x7007_0000..=0x7007_FFFF);
        assert_eq!(b.range(), 0x7008_0000..=0x7008_FFFF, "the next free one");
        drop(a);
        assert_eq!(Users::claim(locks.path(), 7).unwrap().range(), 0x7007_0000..=0x7007_FFFF, "free again");
        let last = Users::claim(locks.path(), SLOTS - 1).unwrap();
        assert_eq!(*last.range().end(), 0x70FF_FFFF);
    }

    #[test]
    fn ranges_holding_special_ids_are_refused() {
        for range in [0..=10, 65530..=65540, u32::MAX - 1..=u32::MAX] {
            assert!(Users::new(range).is_err());
        }
        assert!(Users::new(parse_range("5-4").unwrap()).is_err());
        assert_eq!(parse_range("100-200").unwrap(), 100..=200);
        assert!(parse_range("100").is_err());
    }
}
