//! Control groups for one environment: memory (no swap), CPU share and a
//! pids limit, on cgroup v1 (separate controller hierarchies, as on hybrid
//! hosts, whose v2 tree holds no controllers) or the unified v2 hierarchy.

use std::io;
use std::path::{Path, PathBuf};

/// Which hierarchy the host mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One directory per controller: `<root>/memory`, `<root>/cpu`, `<root>/pids`.
    V1 { root: PathBuf },
    /// One unified tree at `root`.
    V2 { root: PathBuf },
}

impl Layout {
    /// Detects the layout under a cgroup mount point (normally `/sys/fs/cgroup`).
    /// A unified tree that holds the memory controller wins; otherwise v1
    /// controller directories are used.
    pub fn detect(mount: &Path) -> io::Result<Self> {
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            return Ok(Self::V2 { root: mount.to_path_buf() });
        }
        if CONTROLLERS.iter().all(|c| mount.join(c).is_dir()) {
            return Ok(Self::V1 { root: mount.to_path_buf() });
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "no usable cgroup hierarchy under {}: need v2 with the memory controller, or v1 memory, cpu and pids",
                mount.display()
            ),
        ))
    }
}

/// Limits of one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Thousandths of a CPU (1000 = one CPU); `None`: no CPU limit (the
    /// kernel's default, nothing written).
    pub cpu_millis: Option<u64>,
    pub pids: u64,
}

impl Limits {
    /// A function's limits: its memory, and its CPU share by AWS's rule.
    pub fn for_memory_mb(memory_mb: u64) -> Self {
        Self { memory_bytes: memory_mb << 20, cpu_millis: Some(cpu_share(memory_mb)), pids: 1024 }
    }
}

/// What all of one node's environments may hold together (its group's
/// limits, above every environment's own), so that no number of them
/// takes what the host and the node itself need: process ids above all,
/// since the host's are few (`pid_max` is 32,768 on small machines, and 32
/// environments of 1,024 threads would hold them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    pub memory_bytes: u64,
    pub pids: u64,
}

impl Ceiling {
    /// The host's memory and process ids (its `pid_max` or `threads-max`,
    /// whichever is less), less a reserve for the node and the rest of the
    /// host: an eighth of each, at least 1 GiB and 4,096 ids, at most half.
    pub fn of_host() -> io::Result<Self> {
        let number = |path: &str| -> io::Result<u64> {
            let text = std::fs::read_to_string(path)?;
            text.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb << 10)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo"))?;
        let ids = number("/proc/sys/kernel/pid_max")?.min(number("/proc/sys/kernel/threads-max")?);
        let less_reserve = |total: u64, least: u64| total - (total / 8).max(least).min(total / 2);
        Ok(Self { memory_bytes: less_reserve(memory, 1 << 30), pids: less_reserve(ids, 4096) })
    }

    /// Sets the ceiling on a node's group (made if it is missing), under
    /// which [`Cgroup::create`] makes each environment's cgroup.
    pub fn apply(&self, layout: &Layout, group: &str) -> io::Result<()> {
        let (memory, pids) = (self.memory_bytes.to_string(), self.pids.to_string());
        match layout {
            Layout::V1 { root } => {
                for (controller, file, value) in
                    [("memory", "memory.limit_in_bytes", &memory), ("pids", "pids.max", &pids)]
                {
                    let dir = root.join(controller).join(group);
                    std::fs::create_dir_all(&dir)?;
                    write(&dir, file, value)?;
                }
            }
            Layout::V2 { root } => {
                let dir = root.join(group);
                std::fs::create_dir_all(&dir)?;
                enable_controllers(root, V2_CONTROLLERS)?;
                write(&dir, "memory.max", &memory)?;
                write(&dir, "pids.max", &pids)?;
            }
        }
        Ok(())
    }
}

/// AWS's rule: CPU is proportional to memory, one vCPU at 1,769 MB; in
/// thousandths of a CPU.
pub fn cpu_share(memory_mb: u64) -> u64 {
    (memory_mb * 1000 / 1769).max(1)
}

/// The kernel's default CFS period, kept for a share of a whole CPU or
/// more: a shorter one costs every invoke CPU (the bandwidth timer and its
/// throttling checks fire ten times as often; measured in BENCHMARKS.md).
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota.
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// The (quota, period) in µs that enforce a share. A function that has
/// used its share waits for the next period, so a fraction `s` of a CPU is
/// enforced over `s` × 100 ms (a 128 MB function, 7% of a CPU as on AWS,
/// could wait 93 ms of the default period), but never over less than makes
/// the kernel's minimum quota: the wait is at most a quarter of 100 ms.
pub fn cpu_bandwidth(cpu_millis: u64) -> (u64, u64) {
    let cpu_millis = cpu_millis.max(1);
    let by_share = CPU_PERIOD_US * cpu_millis.min(1000) / 1000;
    let period = by_share.max((CPU_QUOTA_MIN_US * 1000).div_ceil(cpu_millis));
    ((period * cpu_millis / 1000).max(CPU_QUOTA_MIN_US), period)
}

/// A cgroup made for one environment; removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    /// The environment's directory in each hierarchy it uses.
    dirs: Vec<PathBuf>,
    /// The peak memory file, opened at its first read and read again in
    /// place: one `pread` an invoke rather than a path walk, open and close.
    peak: std::sync::Mutex<Option<std::fs::File>>,
}

/// The directories of a node's group, one per hierarchy it uses.
fn group_dirs(layout: &Layout, group: &str) -> Vec<PathBuf> {
    match layout {
        Layout::V1 { root } => CONTROLLERS.iter().map(|c| root.join(c).join(group)).collect(),
        Layout::V2 { root } => vec![root.join(group)],
    }
}

/// The v1 controllers an environment uses, in the order `Cgroup::dirs` keeps them.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// The same, as v2 enables them for a cgroup's children.
const V2_CONTROLLERS: &str = "+memory +cpu +pids";

/// Where a v2 root's own processes go when they must leave it (see
/// [`enable_controllers`]).
const PROCESSES_LEAF: &str = "nimbus-processes";

/// Enables `controllers` for the children of `root`, a v2 cgroup. The
/// kernel refuses that (EBUSY) in a cgroup that holds processes, but for
/// the host's root: the case of a node whose `/sys/fs/cgroup` is its
/// container's cgroup namespace (Docker or Podman on a pure v2 host), whose
/// root holds the node itself. Its processes then move to a leaf of their
/// own first, as container engines nested in containers do.
fn enable_controllers(root: &Path, controllers: &str) -> io::Result<()> {
    match write(root, "cgroup.subtree_control", controllers) {
        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
            let leaf = root.join(PROCESSES_LEAF);
            std::fs::create_dir_all(&leaf)?;
            tracing::info!(from = %root.display(), to = %leaf.display(), "moving the processes of the cgroup namespace's root to a leaf, so that its children can have limits");
            // A process forked meanwhile lands in the root: moved next round.
            for _ in 0..100 {
                let procs = std::fs::read_to_string(root.join("cgroup.procs"))?;
                if procs.trim().is_empty() {
                    break;
                }
                for pid in procs.split_whitespace() {
                    match std::fs::write(leaf.join("cgroup.procs"), pid) {
                        // Exited since it was listed.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        r => r.map_err(|e| {
                            io::Error::new(e.kind(), format!("moving process {pid} to {}: {e}", leaf.display()))
                        })?,
                    }
                }
            }
            write(root, "cgroup.subtree_control", controllers)
        }
        r => r,
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}/{file}: {e}", dir.display())))
}

fn read_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

impl Cgroup {
    /// Creates `<group>/<name>` in every hierarchy and applies the limits.
    /// `group` holds all environments of one node.
    pub fn create(layout: &Layout, group: &str, name: &str, limits: Limits) -> io::Result<Self> {
        for n in [group, name] {
            if n.is_empty() || n.contains('/') || n.starts_with('.') {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad cgroup name {n:?}")));
            }
        }
        let dirs: Vec<PathBuf> = match layout {
            Layout::V1 { .. } => group_dirs(layout, group).into_iter().map(|d| d.join(name)).collect(),
            Layout::V2 { root } => {
                let parent = root.join(group);
                std::fs::create_dir_all(&parent)?;
                // Children can only use controllers their parents delegate.
                enable_controllers(root, V2_CONTROLLERS)?;
                write(&parent, "cgroup.subtree_control", V2_CONTROLLERS)?;
                vec![parent.join(name)]
            }
        };
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        let cg = Self { layout: layout.clone(), dirs, peak: Default::default() };
        cg.limit_memory(limits.memory_bytes)?;
        if let Some(cpu_millis) = limits.cpu_millis {
            cg.limit_cpu(cpu_millis)?;
        }
        write(cg.controller_dir(2), "pids.max", &limits.pids.to_string())?;
        // v2: an out-of-memory kill takes the whole environment, as a v1 kill of its only process does.
        let memory = cg.controller_dir(0);
        if matches!(layout, Layout::V2 { .. }) && memory.join("memory.oom.group").exists() {
            write(memory, "memory.oom.group", "1")?;
        }
        Ok(cg)
    }

    /// The directory of controller `i` of [`CONTROLLERS`] (v2 has one for all).
    fn controller_dir(&self, i: usize) -> &Path {
        self.dirs.get(i).unwrap_or(&self.dirs[0])
    }

    /// Sets the memory limit, with no swap.
    pub fn limit_memory(&self, bytes: u64) -> io::Result<()> {
        let dir = self.controller_dir(0);
        let value = bytes.to_string();
        match self.layout {
            Layout::V1 { .. } => {
                // Memory+swap equal to memory means no swap; absent when swap accounting is off.
                let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                // v1 refuses a memory limit above memory+swap, so the order depends on the direction.
                let current: u64 = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                if memsw && bytes > current {
                    write(dir, "memory.memsw.limit_in_bytes", &value)?;
                }
                write(dir, "memory.limit_in_bytes", &value)?;
                if memsw && bytes <= current {
                    write(dir, "memory.memsw.limit_in_bytes", &value)?;
                }
                Ok(())
            }
            Layout::V2 { .. } => {
                write(dir, "memory.max", &value)?;
                // Absent when swap accounting is off (then there is no swap to limit).
                if dir.join("memory.swap.max").exists() {
                    write(dir, "memory.swap.max", "0")?;
                }
                Ok(())
            }
        }
    }

    /// Sets the CPU share in thousandths of a CPU. A quota left unused in
    /// one period may be used in the next (the burst, where the kernel
    /// has it), so a short invoke after idling does not wait at all.
    ///
    /// Each write of these files walks every CPU cgroup of the host in the
    /// kernel (44 µs here with ten, 89 µs with a thousand), so a value
    /// already in place is not written again.
    pub fn limit_cpu(&self, cpu_millis: u64) -> io::Result<()> {
        let (quota, period) = cpu_bandwidth(cpu_millis);
        let dir = self.controller_dir(1);
        let burst = match self.layout {
            Layout::V1 { .. } => "cpu.cfs_burst_us",
            Layout::V2 { .. } => "cpu.max.burst",
        };
        let current = |file: &str| std::fs::read_to_string(dir.join(file)).ok().map(|v| v.trim().to_string());
        // Absent where the kernel has no burst.
        let burst_now = current(burst);
        // The kernel refuses a quota below the burst (a cgroup limited
        // before, for a larger share).
        if burst_now.as_deref().and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 0) {
            write(dir, burst, "0")?;
        }
        match self.layout {
            Layout::V1 { .. } => {
                if current("cpu.cfs_period_us") != Some(period.to_string()) {
                    write(dir, "cpu.cfs_period_us", &period.to_string())?;
                }
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            Layout::V2 { .. } => write(dir, "cpu.max", &format!("{quota} {period}"))?,
        }
        if burst_now.is_some() {
            write(dir, burst, &quota.to_string())?;
        }
        Ok(())
    }

    /// Removes the CPU limit (the kernel's default, no quota).
    pub fn lift_cpu_limit(&self) -> io::Result<()> {
        let dir = self.controller_dir(1);
        match self.layout {
            Layout::V1 { .. } => write(dir, "cpu.cfs_quota_us", "-1"),
            // The period stays as it is.
            Layout::V2 { .. } => write(dir, "cpu.max", "max"),
        }
    }

    /// Removes the empty cgroups a previous run of the same node left in
    /// `group` (a crash leaves them behind); busy ones are kept.
    pub fn remove_leftovers(layout: &Layout, group: &str) -> usize {
        let parents = group_dirs(layout, group);
        let mut removed = 0;
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(&parent) else { continue };
            for e in entries.flatten() {
                if e.path().is_dir() && std::fs::remove_dir(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes a node's group entirely (its environments must be gone).
    pub fn remove_group(layout: &Layout, group: &str) {
        Self::remove_leftovers(layout, group);
        let parents = group_dirs(layout, group);
        for p in parents {
            let _ = std::fs::remove_dir(p);
        }
    }

    /// Moves a process (and so its future children) into the cgroup.
    pub fn attach(&self, pid: u32) -> io::Result<()> {
        for d in &self.dirs {
            write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// The most memory the cgroup has used, for `Max Memory Used`.
    pub fn peak_memory_bytes(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        if peak.is_none() {
            let names: &[&str] = match self.layout {
                Layout::V1 { .. } => &["memory.max_usage_in_bytes"],
                // memory.peak needs Linux 5.19; older kernels only have the current figure.
                Layout::V2 { .. } => &["memory.peak", "memory.current"],
            };
            *peak = names.iter().find_map(|f| std::fs::File::open(self.memory_dir().join(f)).ok());
        }
        let mut buf = [0u8; 32];
        // A cgroup file read from offset 0 is made afresh.
        let read = peak.as_ref().and_then(|f| f.read_at(&mut buf, 0).ok());
        read.and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()).unwrap_or(0)
    }

    /// The memory the cgroup uses now.
    pub fn memory_bytes(&self) -> u64 {
        let file = match self.layout {
            Layout::V1 { .. } => "memory.usage_in_bytes",
            Layout::V2 { .. } => "memory.current",
        };
        let text = std::fs::read_to_string(self.memory_dir().join(file)).unwrap_or_default();
        text.trim().parse().unwrap_or(0)
    }

    /// Whether the kernel has killed a process here for lack of memory.
    pub fn oom_killed(&self) -> bool {
        let file = match self.layout {
            Layout::V1 { .. } => "memory.oom_control",
            Layout::V2 { .. } => "memory.events",
        };
        read_field(&self.memory_dir().join(file), "oom_kill ").is_some_and(|n| n > 0)
    }

    /// Sends SIGKILL to every process in the cgroup. A sandbox's stages can
    /// outlive the one process its owner holds (a stage two killed before
    /// it set its parent-death signal), but never leave its cgroup.
    pub fn kill_all(&self) {
        self.kill_all_but(&[]);
    }

    /// Kills every process in the cgroup but those of `spared`.
    pub fn kill_all_but(&self, spared: &[u32]) {
        let procs = std::fs::read_to_string(self.controller_dir(2).join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()).filter(|p| !spared.contains(p)) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Removes the cgroup; its processes must have exited.
    pub fn remove(&self) -> io::Result<()> {
        self.peak.lock().unwrap_or_else(|e| e.into_inner()).take();
        for d in &self.dirs {
            match std::fs::remove_dir(d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(t.path().join(c)).unwrap();
        }
        t
    }

    #[test]
    fn shares_are_enforced_over_short_periods() {
        assert_eq!(cpu_bandwidth(1000), (100_000, 100_000));
        assert_eq!(cpu_bandwidth(5788), (578_800, 100_000));
        assert_eq!(cpu_bandwidth(500), (25_000, 50_000));
        assert_eq!(cpu_bandwidth(72), (1_000, 13_889));
        assert_eq!(cpu_bandwidth(1), (1_000, 1_000_000));
    }

    #[test]
    fn a_nodes_ceiling_is_its_groups_limits_and_leaves_the_host_a_reserve() {
        let ceiling = Ceiling { memory_bytes: 3 << 30, pids: 28_672 };
        let v1 = fake_v1();
        ceiling.apply(&Layout::V1 { root: v1.path().to_path_buf() }, "nimbus-x").unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(v1.path().join("memory/nimbus-x/memory.limit_in_bytes")), (3u64 << 30).to_string());
        assert_eq!(read(v1.path().join("pids/nimbus-x/pids.max")), "28672");
        let v2 = tempfile::tempdir().unwrap();
        ceiling.apply(&Layout::V2 { root: v2.path().to_path_buf() }, "nimbus-x").unwrap();
        assert_eq!(read(v2.path().join("nimbus-x/memory.max")), (3u64 << 30).to_string());
        assert_eq!(read(v2.path().join("nimbus-x/pids.max")), "28672");
        assert_eq!(read(v2.path().join("cgroup.subtree_control")), "+memory +cpu +pids");

        let host = Ceiling::of_host().unwrap();
        let pid_max: u64 = read("/proc/sys/kernel/pid_max".into()).trim().parse().unwrap();
        assert!(host.pids < pid_max && host.pids + 4096 <= pid_max, "{host:?}");
        assert!(host.memory_bytes > 0);
    }

    /// A real v2 hierarchy (this host's hybrid one holds hugetlb only; a
    /// pure v2 host's, all): a cgroup holding a process cannot delegate a
    /// controller until the process has moved to a leaf.
    #[test]
    fn a_v2_root_holding_processes_moves_them_to_a_leaf_to_delegate() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (fields, after) = l.split_once(" - ")?;
                (after.split_whitespace().next() == Some("cgroup2")).then(|| fields.split_whitespace().nth(4))?
            })
            .map(PathBuf::from)
            .expect("a cgroup2 mount");
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
        let controller = controllers.split_whitespace().next().expect("a controller in the v2 hierarchy");
        let enable = format!("+{controller}");
        // The host's root may delegate it (it holds processes, but the kernel exempts the root).
        write(&mount, "cgroup.subtree_control", &enable).unwrap();
        struct Removed(PathBuf, std::process::Child);
        impl Drop for Removed {
            fn drop(&mut self) {
                let _ = self.1.kill();
                let _ = self.1.wait();
                let _ = std::fs::remove_dir(self.0.join(PROCESSES_LEAF));
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let root = mount.join(format!("nimbus-test-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        let held = Removed(root.clone(), std::process::Command::new("sleep").arg("60").spawn().unwrap());
        let pid = held.1.id().to_string();
        std::fs::write(root.join("cgroup.procs"), &pid).unwrap();
        // The kernel's rule this relies on.
        let busy = std::fs::write(root.join("cgroup.subtree_control"), &enable).unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::ResourceBusy, "{busy}");

        enable_controllers(&root, &enable).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(root.join("cgroup.subtree_control")).trim(), controller);
        assert_eq!(read(root.join("cgroup.procs")), "");
        assert_eq!(read(root.join(PROCESSES_LEAF).join("cgroup.procs")).trim(), pid);
        // Enabled already: the next environment's call is a plain write.
        enable_controllers(&root, &enable).unwrap();
        drop(held);
        assert!(!root.exists());
    }

    #[test]
    fn cpu_follows_memory_as_on_aws() {
        assert_eq!(Limits::for_memory_mb(1769).cpu_millis, Some(1000));
        assert_eq!(Limits::for_memory_mb(10_240).cpu_millis, Some(5788));
        assert_eq!(Limits::for_memory_mb(128).memory_bytes, 128 << 20);
    }

    #[test]
    fn detects_each_layout_and_refuses_neither() {
        let v1 = fake_v1();
        assert_eq!(Layout::detect(v1.path()).unwrap(), Layout::V1 { root: v1.path().to_path_buf() });
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        assert_eq!(Layout::detect(v2.path()).unwrap(), Layout::V2 { root: v2.path().to_path_buf() });
        // A v2 tree without memory (the hybrid host's /sys/fs/cgroup/unified) is not enough.
        let hybrid = tempfile::tempdir().unwrap();
        std::fs::write(hybrid.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        assert!(Layout::detect(hybrid.path()).is_err());
    }

    #[test]
    fn v1_writes_limits_in_each_controller() {
        let t = fake_v1();
        std::fs::create_dir_all(t.path().join("memory/nimbus/env1")).unwrap();
        std::fs::write(t.path().join("memory/nimbus/env1/memory.memsw.limit_in_bytes"), "").unwrap();
        let cg =
            Cgroup::create(&Layout::detect(t.path()).unwrap(), "nimbus", "env1", Limits::for_memory_mb(1769)).unwrap();
        let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(read("memory/nimbus/env1/memory.limit_in_bytes"), (1769u64 << 20).to_string());
        assert_eq!(read("memory/nimbus/env1/memory.memsw.limit_in_bytes"), (1769u64 << 20).to_string());
        assert_eq!(read("cpu/nimbus/env1/cpu.cfs_quota_us"), "100000");
        assert_eq!(read("cpu/nimbus/env1/cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids/nimbus/env1/pids.max"), "1024");
        cg.attach(42).unwrap();
        assert_eq!(read("pids/nimbus/env1/cgroup.procs"), "42");
        std::fs::write(
            t.path().join("memory/nimbus/env1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        std::fs::write(t.path().join("memory/nimbus/env1/memory.max_usage_in_bytes"), "4096\n").unwrap();
        assert_eq!(cg.peak_memory_bytes(), 4096);
        // A leftover of a dead node is empty (cgroupfs files vanish with the
        // processes); in this fake tree only that one can go.
        std::fs::create_dir_all(t.path().join("pids/nimbus/stale")).unwrap();
        assert_eq!(Cgroup::remove_leftovers(&Layout::detect(t.path()).unwrap(), "nimbus"), 1);
        assert!(!t.path().join("pids/nimbus/stale").exists() && t.path().join("memory/nimbus/env1").exists());
    }

    #[test]
    fn v2_delegates_controllers_and_writes_limits() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        // The kernel makes the interface files; the fake tree makes those the code must only write when present.
        std::fs::create_dir_all(t.path().join("nimbus/env2")).unwrap();
        for f in ["memory.swap.max", "memory.oom.group", "cpu.max.burst"] {
            std::fs::write(t.path().join("nimbus/env2").join(f), "").unwrap();
        }
        let cg =
            Cgroup::create(&Layout::detect(t.path()).unwrap(), "nimbus", "env2", Limits::for_memory_mb(128)).unwrap();
        let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("nimbus/env2/memory.oom.group"), "1");
        assert_eq!(read("nimbus/env2/memory.max"), (128u64 << 20).to_string());
        assert_eq!(read("nimbus/env2/memory.swap.max"), "0");
        assert_eq!(read("nimbus/env2/cpu.max"), "1000 13889");
        assert_eq!(read("nimbus/env2/cpu.max.burst"), "1000");
        assert!(!cg.oom_killed());
        std::fs::write(t.path().join("nimbus/env2/memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
            .unwrap();
        assert!(cg.oom_killed());
        assert!(Cgroup::create(&Layout::detect(t.path()).unwrap(), "nimbus", "../escape", Limits::for_memory_mb(128))
            .is_err());
        // Without swap accounting the file is absent and nothing is written.
        Cgroup::create(&Layout::detect(t.path()).unwrap(), "nimbus", "env3", Limits::for_memory_mb(128)).unwrap();
        assert!(!t.path().join("nimbus/env3/memory.swap.max").exists());
        // No CPU limit: the kernel's default stays, nothing is written.
        let unlimited = Limits { cpu_millis: None, ..Limits::for_memory_mb(128) };
        Cgroup::create(&Layout::detect(t.path()).unwrap(), "nimbus", "env4", unlimited).unwrap();
        assert!(!t.path().join("nimbus/env4/cpu.max").exists());
    }
}
