//! Starting a process in its own namespaces with a read-only root, in two
//! stages of a single-threaded process (the node is multi-threaded and
//! cannot fork safely; stage one can, and forks stage two rather than
//! executing this large binary a second time). Stage one is a clone of the
//! sandbox factory ([`crate::factory`]) for a function, a fresh execution
//! (`__sandbox`) for an ECS container:
//!
//! 1. [`stage_one`] cuts the mount trees the sandbox takes from the host
//!    (its slots and shared directories: [`Trees`]), unshares the mount,
//!    IPC and UTS namespaces, builds the root in the new mount namespace
//!    (read-only binds of the host's `/usr`, a few `/etc` files and the
//!    runtime; the trees: code, layers, a private `/tmp`; a minimal
//!    `/dev`), unshares the network namespace, brings loopback up, and
//!    reports on its control socket (its stdin) that its namespaces exist.
//!    The parent then binds listeners inside the new network namespace and
//!    moves it into its cgroup, and answers "go". Stage one unshares the
//!    PID and cgroup namespaces and forks stage two, which becomes PID 1
//!    there.
//! 2. [`stage_two`] mounts a fresh `/proc` in the root, pivots into it,
//!    drops every capability, becomes the sandbox's own unprivileged user
//!    ([`crate::users`]) with `no_new_privs`, installs the seccomp filter,
//!    sets AWS's resource limits, and executes the program.
//!
//! For a container image, the root is instead the image's flattened
//! root (read-only; `nimbus-images` made its mount points; an ECS container
//! may have a writable layer over it, on a tmpfs), with the same fresh
//! `/proc`, minimal `/dev` and private `/tmp` slot; the function runs in a
//! user namespace of its own as root there (or as the container's `user`),
//! which is the sandbox's unprivileged user on the host.
//!
//! A command is run inside a running image sandbox (a container's health
//! check, as `docker exec`) by [`exec_in`], a third fresh execution that
//! joins the sandbox's namespaces and keeps its rules.
//!
//! The root is Amazon Linux's where it shows: `/bin/sh` is bash (Debian's
//! is dash, and shell bootstraps written for Lambda use bash features), and
//! a process may open 1,024 files.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};

/// The variable stage one finds its [`Spec`] in, as JSON: not on its
/// command line, which every process that sees it may read (a paused
/// sandbox's PID 1 is a fork of stage one), where a process's environment
/// only its owner may, and stage two's is not readable even by its
/// sandbox's user once it has changed identity.
pub const SPEC_VARIABLE: &str = "NIMBUS_SANDBOX_SPEC";

/// Everything the two stages need; passed as JSON in [`SPEC_VARIABLE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// An empty directory the new root is built on (a tmpfs is mounted
    /// there, in the sandbox's mount namespace only: one directory may
    /// serve every sandbox).
    pub root: PathBuf,
    /// Host directory mounted read-only at `/var/runtime`.
    pub runtime: PathBuf,
    /// Shared host mount points the sandbox sees at `/var/task`, `/opt` and
    /// `/tmp`: what the worker mounts on them later (a function's code, its
    /// layers, a `/tmp` of its size) appears inside, so a sandbox can be made
    /// before anyone knows which function it will run. See [`Slots`].
    pub slots: Slots,
    /// Shared host mount points bound read-only at these paths inside, with
    /// whatever is mounted on them later (a runtime's SDK, installed while
    /// sandboxes already run): `(host, inside)`.
    #[serde(default)]
    pub shared: Vec<(PathBuf, PathBuf)>,
    /// Symbolic links made in the host's root: `(inside, target)` (a Node.js
    /// runtime's `/node_modules`, its SDK). Not for an image's root.
    #[serde(default)]
    pub links: Vec<(PathBuf, PathBuf)>,
    pub uid: u32,
    pub gid: u32,
    /// A container image's flattened root: the sandbox's root instead of
    /// the host's `/usr` (and `runtime`, `shared` and the task and opt
    /// slots are not used).
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Program and arguments, as seen inside the sandbox. Empty: read them
    /// (with the environment) from stdin, one JSON [`Launch`] line, just
    /// before executing.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The process that starts stage one (the node); stage one dies with it.
    pub parent: u32,
    /// Join this process's network namespace instead of making one: the
    /// containers of an ECS task share one, as on Fargate.
    #[serde(default)]
    pub network_of: Option<u32>,
    /// An image's program runs as this uid and gid inside its user
    /// namespace (a task container's `user`), mapped to `uid`/`gid` on the
    /// host; root's by default.
    #[serde(default)]
    pub inside_ids: (u32, u32),
    /// A writable layer of this many MB over an image's root (a tmpfs, so
    /// memory charged to the sandbox's cgroup, and gone with it); `None`:
    /// the root is read-only.
    #[serde(default)]
    pub writable_mb: Option<u32>,
    /// Resource limits the program starts with, by `setrlimit` name
    /// without its prefix (`nofile`, `nproc`, …): `(name, soft, hard)`.
    #[serde(default)]
    pub rlimits: Vec<(String, u64, u64)>,
    /// Run no program: once built, stage two says `p` on its stdin and
    /// waits as PID 1 while a process forked elsewhere joins its
    /// namespaces (an environment from the zygote: PID 3, adopted after
    /// PID 2 that forked it exited), then exits as that process does.
    /// Empty `argv` and `env`.
    #[serde(default)]
    pub pause: bool,
    /// An image sandbox's volumes (an ECS task's bind mounts): host
    /// directories mounted at these paths inside, after the pivot, so that
    /// the paths resolve in the image's root and never on the host's:
    /// `(host, inside, read_only)`. A missing mount point is made (in a
    /// read-only root too, which is then an overlay made read-only after).
    #[serde(default)]
    pub volumes: Vec<(PathBuf, PathBuf, bool)>,
}

/// What a sandbox waiting on its stdin is told to execute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// Candidates in order; the first that exists is executed (AWS runs
    /// `/var/task/bootstrap`, else `/opt/bootstrap`).
    pub programs: Vec<String>,
    /// Arguments after the program (a runtime started through an exec
    /// wrapper: the interpreter and its own arguments).
    #[serde(default)]
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The working directory (default `/var/task`); an image's `WORKDIR`.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// The three mount points a sandbox's function-specific parts arrive on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slots {
    pub task: PathBuf,
    pub opt: PathBuf,
    pub tmp: PathBuf,
}

impl Slots {
    pub fn under(dir: &Path) -> Self {
        Self { task: dir.join("task"), opt: dir.join("opt"), tmp: dir.join("tmp") }
    }

    fn all(&self) -> [&PathBuf; 3] {
        [&self.task, &self.opt, &self.tmp]
    }

    /// Makes each slot a shared mount point (in the caller's namespace, the host's).
    pub fn create(&self) -> std::io::Result<()> {
        self.all().into_iter().try_for_each(|slot| shared_mount_point(slot))
    }

    /// Mounts a function's parts: its code and layers (read-only mounts
    /// made by [`read_only_self`]) and a fresh `/tmp` of `tmp_mb`.
    pub fn fill(&self, code: &Path, opt: Option<&Path>, tmp_mb: u32) -> std::io::Result<()> {
        let bind = |src: &Path, dst: &Path| {
            mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| io(e, &format!("bind {}", src.display())))
        };
        bind(code, &self.task)?;
        if let Some(opt) = opt {
            bind(opt, &self.opt)?;
        }
        mount(
            Some("tmpfs"),
            &self.tmp,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={tmp_mb}m,mode=1777").as_str()),
        )
        .map_err(|e| io(e, "/tmp"))
    }

    /// Unmounts everything on and of the slots, and removes their directory.
    pub fn remove(&self) {
        for slot in self.all() {
            while umount2(slot.as_path(), MntFlags::MNT_DETACH).is_ok() {}
            let _ = std::fs::remove_dir(slot);
        }
        if let Some(parent) = self.task.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Makes `dir` (created if needed) a shared mount point of itself: what is
/// mounted on it later propagates into the sandboxes that bound it.
pub fn shared_mount_point(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| io(e, &format!("slot {}", dir.display())))?;
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
        .map_err(|e| io(e, &format!("sharing {}", dir.display())))
}

/// Mounts a private tmpfs on `dir` (created if needed), for directories
/// made and removed for every sandbox (its slots): on this machine's ext4
/// five directories cost 190 µs of CPU to make and as much to remove, on
/// a tmpfs 30. Holds no file, so its size is nominal.
pub fn scratch_tmpfs(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("size=1m,mode=755"))
        .map_err(|e| io(e, &format!("tmpfs on {}", dir.display())))?;
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| io(e, &format!("private {}", dir.display())))
}

/// Remounts a bind read-only, nosuid and nodev (the mount, not its
/// filesystem: other binds of it keep their own flags).
const READ_ONLY: MsFlags = MsFlags::MS_BIND
    .union(MsFlags::MS_REMOUNT)
    .union(MsFlags::MS_RDONLY)
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// Makes `dir` a read-only, nosuid, nodev mount of itself (once), so that
/// binds of it, and their propagated copies, are read-only too.
pub fn read_only_self(dir: &Path) -> std::io::Result<()> {
    read_only_bind(dir, dir)
}

/// Mounts `src` read-only (nosuid, nodev) at `dst`, so that binds of `dst`,
/// and their propagated copies, are read-only too.
pub fn read_only_bind(src: &Path, dst: &Path) -> std::io::Result<()> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| io(e, &format!("bind {}", src.display())))?;
    mount(None::<&str>, dst, None::<&str>, READ_ONLY, None::<&str>)
        .map_err(|e| io(e, &format!("read-only {}", dst.display())))
}

/// Publishes `src` on the shared mount point `slot` (see
/// [`shared_mount_point`]) read-only, through `via`, a private directory
/// beside it: the sandboxes that bound the slot see `src` from now on.
pub fn publish_read_only(src: &Path, via: &Path, slot: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(via)?;
    read_only_bind(src, via)?;
    mount(Some(via), slot, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| io(e, &format!("publishing {}", src.display())))
}

/// The host's mount namespace, seen from a process that lives in a small
/// one of its own (the sandbox factory: a sandbox's namespace is a copy of
/// the one its stage one is in, and the host's grows with every
/// environment's slots, so that each copy would cost more than the last).
/// Its clones visit the host's to cut their sandbox's [`Trees`].
#[derive(Debug)]
pub struct HostMounts {
    host: std::fs::File,
    own: std::fs::File,
}

impl HostMounts {
    /// Moves this process into a private copy of the host's mount
    /// namespace that receives nothing the host mounts later, and holds
    /// only what a sandbox's root is built from: the mounts on the way to
    /// and at or below [`HOST_DIRS`], `/etc`, `/dev`, `/proc` and `data`
    /// (absolute: images and runtimes), but none at or below `clear` (the
    /// worker's: slots and code, which its sandboxes take as trees). This
    /// process must have no thread.
    ///
    /// Every sandbox's mount namespace starts as a copy of this one and
    /// detaches it at its pivot, so each mount here costs every cold start
    /// twice: a host's others (a container engine's, a crashed node's
    /// slots) are not copied.
    pub fn leave(data: &Path, clear: &Path) -> std::io::Result<Self> {
        if !data.is_absolute() {
            return Err(std::io::Error::other(format!("the data directory {} is not absolute", data.display())));
        }
        let host = std::fs::File::open("/proc/self/ns/mnt")?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| io(e, "unshare mount namespace"))?;
        // Private before anything is unmounted: a copy of a shared mount is
        // a peer of the host's, and its unmount would propagate there.
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| io(e, "private /"))?;
        let keep: Vec<&Path> =
            HOST_DIRS.iter().chain(&["/etc", "/dev", "/proc"]).map(Path::new).chain([data]).collect();
        unmount_all_but(&keep, clear);
        Ok(Self { host, own: std::fs::File::open("/proc/self/ns/mnt")? })
    }

    /// Runs `f` in the host's mount namespace, then returns to our own.
    fn visit<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        use nix::sched::setns;
        setns(&self.host, CloneFlags::CLONE_NEWNS).map_err(|e| io(e, "join the host's mount namespace"))?;
        let done = f();
        setns(&self.own, CloneFlags::CLONE_NEWNS).map_err(|e| io(e, "return to the factory's mount namespace"))?;
        done
    }

    /// Closes this process's copies of the descriptors: in a clone of the
    /// factory (which keeps its own), so that no sandbox holds the host's
    /// namespace. The clone never drops `self`.
    fn close_copies(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        for fd in [&self.host, &self.own] {
            nix::unistd::close(fd.as_raw_fd()).map_err(|e| io(e, "close"))?;
        }
        Ok(())
    }
}

/// Mount trees a sandbox takes from the host's namespace, each cut
/// (`open_tree`) from one of its shared mount points with what is mounted
/// on it already, and attached inside at a path under the root (with
/// whether it is made read-only): the runtime's shared directories and the
/// slots. What the host mounts on those points later propagates in.
struct Trees {
    early: Vec<Tree>,
    /// An image's volumes ([`Spec::volumes`]), attached by stage two after the pivot.
    volumes: Vec<Tree>,
}

/// A cut mount tree, where it goes inside, and whether it is made read-only.
type Tree = (std::os::fd::OwnedFd, PathBuf, bool);

#[allow(unsafe_code)]
impl Trees {
    /// Cuts the trees `spec` needs, from the namespace this process is in.
    /// An image's root takes only its `/tmp`.
    fn open(spec: &Spec) -> std::io::Result<Self> {
        let mut wanted: Vec<(&Path, &Path, bool)> = Vec::new();
        if spec.image.is_none() {
            wanted.extend(spec.shared.iter().map(|(host, inside)| (host.as_path(), inside.as_path(), true)));
            wanted.push((&spec.slots.task, Path::new("var/task"), false));
            wanted.push((&spec.slots.opt, Path::new("opt"), false));
        }
        wanted.push((&spec.slots.tmp, Path::new("tmp"), false));
        let volumes: Vec<(&Path, &Path, bool)> = match spec.image {
            Some(_) => spec.volumes.iter().map(|(host, inside, ro)| (host.as_path(), inside.as_path(), *ro)).collect(),
            None => Vec::new(),
        };
        let cut = |host: &Path| -> std::io::Result<std::os::fd::OwnedFd> {
            let path = c_path(host)?;
            let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
            // SAFETY: a system call that reads the path, a valid C string
            // that outlives it, and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
            match fd {
                -1 => Err(std::io::Error::other(format!(
                    "cutting the mount tree at {}: {}",
                    host.display(),
                    std::io::Error::last_os_error()
                ))),
                // SAFETY: the kernel just installed this descriptor for us.
                fd => Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) }),
            }
        };
        let early = wanted
            .into_iter()
            .map(|(host, inside, read_only)| {
                Ok((cut(host)?, inside.strip_prefix("/").unwrap_or(inside).to_path_buf(), read_only))
            })
            .collect::<std::io::Result<_>>()?;
        let volumes = volumes
            .into_iter()
            .map(|(host, inside, read_only)| Ok((cut(host)?, inside.to_path_buf(), read_only)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { early, volumes })
    }

    /// Attaches each tree but the volumes under `root`, in order (a later
    /// one may cover an earlier one's path), as a slave of its mount point
    /// in the host.
    fn attach(&self, root: &Path) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        for (tree, inside, read_only) in &self.early {
            let dst = root.join(inside);
            let shown = Path::new("/").join(inside);
            std::fs::create_dir_all(&dst)
                .map_err(|e| std::io::Error::other(format!("making the mount point {}: {e}", shown.display())))?;
            let path = c_path(&dst)?;
            // SAFETY: a system call that reads the two paths (an empty C
            // string and a valid one, both outliving it) and the descriptor.
            let moved = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                )
            };
            if moved == -1 {
                let e = std::io::Error::last_os_error();
                return Err(std::io::Error::other(format!("attaching {}: {e}", shown.display())));
            }
            if *read_only {
                mount(None::<&str>, &dst, None::<&str>, READ_ONLY, None::<&str>)
                    .map_err(|e| io(e, &format!("read-only {}", shown.display())))?;
            }
            mount(None::<&str>, &dst, None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .map_err(|e| io(e, &format!("slave {}", shown.display())))?;
        }
        Ok(())
    }
}

/// Attaches a volume's tree at `inside`, resolved in this process's root
/// (the image's, after the pivot) and never through a magic link: a prefix
/// at a time with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, each
/// missing directory made in the one resolved before it. Resolved by name,
/// as root with every capability, a path could leave the root through
/// `/proc/self/fd` (a descriptor this stage holds leads to the host's
/// `/proc`) or an image's link to it, and make directories on the host.
#[allow(unsafe_code)]
fn attach_volume(tree: &std::os::fd::OwnedFd, inside: &Path, read_only: bool) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Component;
    // Not in the libc crate's Linux list for this target.
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let in_root = |path: &Path| -> std::io::Result<OwnedFd> {
        let c = c_path(path)?;
        // SAFETY: `open_how` is plain integers, for which zero is valid.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let root = c"/";
        // SAFETY: opens "/" and then `path` under it; both C strings and `how` outlive the calls.
        let dir = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dir < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    let mut so_far = PathBuf::from(".");
    let mut dir = in_root(&so_far)?;
    for component in inside.components() {
        match component {
            Component::Normal(name) => {
                so_far.push(name);
                dir = match in_root(&so_far) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        match nix::sys::stat::mkdirat(&dir, name, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
                            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                            Err(e) => return Err(io(e, "making the mount point")),
                        }
                        in_root(&so_far)?
                    }
                    Err(e) => return Err(e),
                };
            }
            Component::ParentDir => {
                so_far.push("..");
                dir = in_root(&so_far)?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    // The tree's own attributes, before it is attached: read-only if asked,
    // and a slave, as the other trees are.
    // SAFETY: `mount_attr` is plain integers, for which zero is valid.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    attr.propagation = libc::MS_SLAVE;
    // SAFETY: reads `attr`, which outlives the call, and the descriptor.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two descriptors and two empty C strings that outlive the call.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if moved == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// The mount points of this process's namespace, as `mountinfo` lists them.
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape_mount_point).collect()
}

/// A mount point as `mountinfo` writes it, with space, tab, newline and
/// backslash as three octal digits after a backslash.
fn unescape_mount_point(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Unmounts every mount at or below `dir` in this namespace (what a killed
/// node left behind), deepest first.
pub fn unmount_under(dir: &Path) -> usize {
    let mut points: Vec<PathBuf> = mount_points().into_iter().filter(|p| p.starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.iter().filter(|p| umount2(p.as_path(), MntFlags::MNT_DETACH).is_ok()).count()
}

/// Removes `dir` and what is in it once nothing is mounted at or below it:
/// removing through a mount left there (a slot bound to an image's root)
/// would delete what it shows. Left in place, and said, if one stays.
pub fn remove_unmounted(dir: &Path) {
    unmount_under(dir);
    if mount_points().iter().any(|p| p.starts_with(dir)) {
        tracing::warn!(dir = %dir.display(), "a mount under it could not be removed; leaving the directory");
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Detaches every mount of this namespace but those on the way to, at or
/// below one of `keep` and not at or below `clear`, each with what is
/// mounted under it (and what is stacked under it on the same point).
fn unmount_all_but(keep: &[&Path], clear: &Path) {
    let wanted = |p: &Path| !p.starts_with(clear) && keep.iter().any(|k| k.starts_with(p) || p.starts_with(k));
    let mut points = mount_points();
    // By components, so that a mount's descendants follow it.
    points.sort();
    points.dedup();
    let mut detached: Option<&Path> = None;
    for p in &points {
        if wanted(p) || detached.is_some_and(|d| p.starts_with(d)) {
            continue;
        }
        // Until the point is no mount's root (EINVAL): never its parent.
        while umount2(p.as_path(), MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_ok() {}
        detached = Some(p);
    }
}

/// Host paths bound read-only into every sandbox.
pub const HOST_DIRS: &[&str] = &["/usr"];
/// Merged-/usr symlinks recreated in the new root.
const ROOT_LINKS: &[(&str, &str)] =
    &[("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")];
/// The only files of the host's `/etc` a runtime sees (never shadow, never
/// keys); its `passwd` and `group` are written for it (see [`users`]).
const ETC_FILES: &[&str] = &["/etc/hosts", "/etc/nsswitch.conf", "/etc/ld.so.cache", "/etc/localtime"];
/// The name of a sandbox's user, as AWS's execution environments call theirs.
pub const SANDBOX_USER: &str = "sbx_user1051";
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Open files per process, as on AWS (`ulimit -n` is 1024 there).
const OPEN_FILES: u64 = 1024;

fn io(e: nix::Error, what: &str) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// What a clone of the sandbox factory has from it (see [`crate::factory`]).
pub struct FromFactory<'a> {
    /// The host's mount namespace, where the sandbox's trees are cut.
    pub host: &'a HostMounts,
    /// The seccomp filters stage two adds to those the factory runs under
    /// (see [`crate::seccomp::split`]).
    pub filters: &'a [crate::seccomp::BpfProgram],
}

/// Stage one; `control` is the socket to the parent. Returns the exit code
/// of stage two.
pub fn stage_one(spec: &Spec, mut control: impl Read + Write, factory: Option<&FromFactory>) -> std::io::Result<i32> {
    // A node killed with SIGKILL cannot retire its sandboxes: they die with
    // it. The kernel signals when the *thread* that is our parent exits: the
    // factory's keeper thread (a clone of the factory has the factory's
    // parent), or for an ECS container one of the runtime's worker threads,
    // which live as long as the node. A parent already gone before the link
    // was made is seen as a changed parent pid.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    if i32::try_from(spec.parent).ok() != Some(nix::unistd::getppid().as_raw()) {
        return Err(std::io::Error::other("the node that started this sandbox is gone"));
    }
    let trees = match factory.map(|f| f.host) {
        Some(host) => {
            let trees = host.visit(|| Trees::open(spec));
            host.close_copies()?;
            trees?
        }
        None => Trees::open(spec)?,
    };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| io(e, "unshare"))?;
    // Before the parent hears that the namespaces exist: only then does it
    // mount anything on the slots, and a tree not yet attached would miss it.
    build_root(spec, &trees)?;
    match spec.network_of {
        Some(pid) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| io(e, "join network namespace"))?;
        }
        None => {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io(e, "unshare net"))?;
            loopback_up()?;
        }
    }
    control.write_all(b"r")?;
    let mut go = [0u8; 1];
    control.read_exact(&mut go)?;
    // After the parent put us in our cgroup: that cgroup becomes the root
    // the sandbox sees.
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP).map_err(|e| io(e, "unshare pid, cgroup"))?;
    // Stage two (and the runtime) keep the control socket as stdin: a
    // sandbox made ahead learns its function there. This stage lets go of
    // it, so that the parent sees it close when stage two executes the
    // program (see [`stage_two`]).
    let stage_two = fork_stage_two(spec, factory.map(|f| f.filters), &trees.volumes)?;
    drop(trees);
    drop(control);
    nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?).map_err(|e| io(e, "stdin"))?;
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(stage_two, None).map_err(|e| io(e, "wait"))? {
            // A paused sandbox's joined process died of this signal.
            WaitStatus::Exited(_, code) if spec.pause && code > 128 => {
                if let Ok(sig) = nix::sys::signal::Signal::try_from(code - 128) {
                    die_of(sig);
                }
                return Ok(code);
            }
            WaitStatus::Exited(_, code) => return Ok(code),
            // Die the way the runtime died, so the parent sees `signal:
            // killed` for an out-of-memory kill rather than an exit code.
            WaitStatus::Signaled(_, sig, _) => {
                die_of(sig);
                return Ok(128 + sig as i32);
            }
            _ => continue,
        }
    }
}

/// Stage one dies of the signal its sandbox died of, as host root: never
/// with a core dump (the host's core handler would run for it, outside the
/// sandbox's cgroup, on a signal the function chose), and only of a signal
/// that ends a process (a stop would leave it stopped, its parent waiting).
fn die_of(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::Signal::{SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH};
    if matches!(sig, SIGCHLD | SIGCONT | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGURG | SIGWINCH) {
        return;
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
}

/// Forks stage two, which becomes PID 1 of the PID namespace just
/// unshared, and never returns in the child: it executes the program or
/// exits 127 with the reason on stderr.
#[allow(unsafe_code)]
fn fork_stage_two(
    spec: &Spec,
    filters: Option<&[crate::seccomp::BpfProgram]>,
    volumes: &[Tree],
) -> std::io::Result<nix::unistd::Pid> {
    // SAFETY: stage one is a single-threaded process (a clone of the
    // factory or a fresh execution) that has started no thread (it makes
    // system calls only), so the child may do anything a process may.
    match unsafe { nix::unistd::fork() }.map_err(|e| io(e, "fork"))? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let err = stage_two(spec, filters, volumes);
            eprintln!("nimbus sandbox (stage two): {err}");
            std::process::exit(127)
        }
    }
}

/// Brings the loopback interface of this network namespace up, as `ip link
/// set lo up` does, without a process to fork and execute.
#[allow(unsafe_code)]
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io(e, "loopback socket"))?;
    // SAFETY: `ifreq` is plain data, zeroes are a valid value, and the
    // interface name fits with its terminating zero.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both requests read and write only the `ifreq` passed, which
    // outlives the calls; the socket is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::other(format!("loopback flags: {}", std::io::Error::last_os_error())));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::other(format!("loopback up: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

/// A read-only bind that receives nothing from the host afterwards.
fn bind_ro(src: &Path, dst: &Path) -> std::io::Result<()> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io(e, &format!("bind {}", src.display())))?;
    mount(None::<&str>, dst, None::<&str>, READ_ONLY, None::<&str>)
        .map_err(|e| io(e, &format!("read-only {}", dst.display())))?;
    mount(None::<&str>, dst, None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| io(e, &format!("private {}", dst.display())))
}

fn drop_capabilities() -> std::io::Result<()> {
    for set in [caps::CapSet::Bounding, caps::CapSet::Ambient, caps::CapSet::Inheritable] {
        caps::clear(None, set).map_err(|e| std::io::Error::other(format!("dropping capabilities: {e}")))?;
    }
    Ok(())
}

fn file_target(path: &Path) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::File::create(path).map(drop)
}

/// Stage two: PID 1 of the new PID namespace. Only returns on error.
///
/// A sandbox made ahead (told its program on stdin) reports how its start
/// ended on that socket: it closes when the program is executed (a
/// close-on-exec copy is the last one left), after the error's text if
/// anything failed before.
/// `filters`: the seccomp filters it adds to those it inherited (a clone of
/// the factory's); without, it installs the whole policy.
fn stage_two(spec: &Spec, filters: Option<&[crate::seccomp::BpfProgram]>, volumes: &[Tree]) -> std::io::Error {
    use std::os::fd::AsFd;
    let report = match spec.argv.is_empty() {
        true => match std::io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => return e,
        },
        false => None,
    };
    let Err(err) = build_and_exec(spec, filters, volumes);
    if let Some(report) = report {
        let _ = std::fs::File::from(report).write_all(err.to_string().as_bytes());
    }
    err
}

fn build_and_exec(
    spec: &Spec,
    filters: Option<&[crate::seccomp::BpfProgram]>,
    volumes: &[Tree],
) -> std::io::Result<std::convert::Infallible> {
    // Die with stage one from the start: a node killed while this stage
    // still builds the root must not leave it to run the program.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    let parent = Parent::open(spec.parent)?;
    enter_root(spec, volumes)?;
    nix::unistd::sethostname("nimbus").map_err(|e| io(e, "hostname"))?;

    // Every capability goes: the bounding and ambient sets here (dropping
    // from the bounding set needs CAP_SETPCAP, so before the uid change),
    // the rest with the uid change; `no_new_privs` keeps them gone.
    drop_capabilities()?;
    let gid = nix::unistd::Gid::from_raw(spec.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| io(e, "setgroups"))?;
    nix::unistd::setgid(gid).map_err(|e| io(e, "setgid"))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(spec.uid)).map_err(|e| io(e, "setuid"))?;
    if spec.image.is_some() {
        image_user(spec)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| io(e, "no_new_privs"))?;
    // The credential changes cleared it: set again, then make sure stage
    // one did not die in between (its signal would have been missed).
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    if !parent.alive() {
        return Err(std::io::Error::other("stage one is gone"));
    }
    drop(parent);
    match filters {
        Some(filters) => crate::seccomp::install_programs(filters),
        None => crate::seccomp::install(),
    }
    .map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES)
        .map_err(|e| io(e, "open files limit"))?;
    for (name, soft, hard) in &spec.rlimits {
        let resource = rlimit(name).ok_or_else(|| std::io::Error::other(format!("unknown ulimit {name}")))?;
        nix::sys::resource::setrlimit(resource, *soft, *hard).map_err(|e| io(e, &format!("ulimit {name}")))?;
    }

    if spec.pause {
        return Err(pause());
    }
    let (argv, env, cwd) = if spec.argv.is_empty() {
        // Made ahead: wait for the function, then run its bootstrap.
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
        let launch: Launch = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        // An image's entrypoint may be a bare name, looked up on its PATH.
        let program = match launch.programs.as_slice() {
            [one] => one.clone(),
            _ => launch.programs.into_iter().find(|p| Path::new(p).is_file()).unwrap_or_default(),
        };
        // The function's code gets no channel to the worker.
        nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?).map_err(|e| io(e, "stdin"))?;
        (std::iter::once(program).chain(launch.args).collect(), launch.env, launch.cwd)
    } else {
        (spec.argv.clone(), spec.env.clone(), None)
    };
    let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty argv"))?;
    // An image's root may have no /var/task.
    let cwd = cwd.unwrap_or_else(|| if spec.image.is_some() { "/" } else { "/var/task" }.into());
    let err = std::process::Command::new(program).args(args).env_clear().envs(env).current_dir(cwd).exec();
    // As runc words it (what AWS reports after CannotStartContainerError).
    Err(match err.kind() {
        std::io::ErrorKind::NotFound if !program.contains('/') => {
            std::io::Error::other(format!("exec: \"{program}\": executable file not found in $PATH"))
        }
        std::io::ErrorKind::NotFound => {
            std::io::Error::other(format!("exec: \"{program}\": stat {program}: no such file or directory"))
        }
        _ => std::io::Error::other(format!("exec: \"{program}\": {err}")),
    })
}

/// A paused stage two (see [`Spec::pause`]): reports that the sandbox is
/// built, hands its stdin over, and reaps what is reparented to it (the
/// joined process, then its orphans) until PID 3 exits, whose status it
/// exits with (a signal as 128 + its number: PID 1 cannot raise one on
/// itself; stage one turns it back). Only returns on error.
fn pause() -> std::io::Error {
    const JOINED: i32 = 3;
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use std::os::fd::AsFd;
    let paused = (|| -> std::io::Result<std::convert::Infallible> {
        let mut sigchld = SigSet::empty();
        sigchld.add(Signal::SIGCHLD);
        sigchld.thread_block().map_err(|e| io(e, "blocking SIGCHLD"))?;
        std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?).write_all(b"p")?;
        nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?).map_err(|e| io(e, "stdin"))?;
        loop {
            sigchld.wait().map_err(|e| io(e, "waiting for SIGCHLD"))?;
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == JOINED => std::process::exit(code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == JOINED => {
                        std::process::exit(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(e) => return Err(io(e, "reaping")),
                }
            }
        }
    })();
    let Err(e) = paused;
    e
}

/// A command to run inside a running image sandbox (see [`exec_in`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exec {
    /// The sandbox's PID 1, as the host numbers it.
    pub target: u32,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Who it runs as in the sandbox's user namespace: the sandbox
    /// program's own (`Spec::inside_ids`).
    #[serde(default)]
    pub ids: (u32, u32),
}

/// Runs a command inside a running image sandbox, as `docker exec` does:
/// in all of its namespaces (so with its files, processes, network and
/// user: the program's own in its user namespace), under the same rules (no
/// capabilities, `no_new_privs`, the seccomp filter, the open files
/// limit). Waits for a byte on stdin first, while the parent moves this
/// process into the sandbox's cgroup. The command's exit code.
pub fn exec_in(exec: &Exec) -> std::io::Result<i32> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    std::io::stdin().read_exact(&mut [0u8; 1])?;
    let ns = |kind: &str| std::fs::File::open(format!("/proc/{}/ns/{kind}", exec.target));
    // All opened before any is joined: the host's `/proc` goes with its
    // mount namespace. The user namespace is the sandbox's own, joined
    // last: the others belong to the host's, where this process is root.
    let others = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let others = others.map(|(kind, flag)| ns(kind).map(|f| (kind, f, flag)));
    let user = ns("user")?;
    nix::unistd::setgroups(&[]).map_err(|e| io(e, "setgroups"))?;
    for joined in others {
        let (kind, file, flag) = joined?;
        nix::sched::setns(file, flag).map_err(|e| io(e, &format!("join {kind} namespace")))?;
    }
    nix::sched::setns(user, CloneFlags::CLONE_NEWUSER).map_err(|e| io(e, "join user namespace"))?;
    let (gid, uid) = (nix::unistd::Gid::from_raw(exec.ids.1), nix::unistd::Uid::from_raw(exec.ids.0));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| io(e, "setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| io(e, "setresuid"))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    drop_capabilities()?;
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| std::io::Error::other(format!("dropping capabilities: {e}")))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| io(e, "no_new_privs"))?;
    crate::seccomp::install().map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES)
        .map_err(|e| io(e, "open files limit"))?;
    let (program, args) = exec.argv.split_first().ok_or_else(|| std::io::Error::other("empty argv"))?;
    // A child: joining a PID namespace places only the children in it.
    let status = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(exec.env.iter().cloned())
        .current_dir(&exec.cwd)
        .stdin(std::process::Stdio::null())
        .status()?;
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    Ok(status.code().or(signal.map(|s| 128 + s)).unwrap_or(1))
}

/// Stage one as stage two sees it through the host's `/proc` (still
/// mounted when stage two starts): in the new PID namespace `getppid()` is
/// 0, dead parent or not. The open directory stays bound to that process
/// through the pivot, and a reused pid cannot pass for it.
struct Parent(std::fs::File);

impl Parent {
    /// Stage one, which must still be the child of `node`.
    fn open(node: u32) -> std::io::Result<Self> {
        let gone = || std::io::Error::other("the node that started this sandbox is gone");
        let ppid =
            |stat: &str| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        let stage_one: u32 = ppid(&std::fs::read_to_string("/proc/self/stat")?).ok_or_else(gone)?;
        let parent = Self(std::fs::File::open(format!("/proc/{stage_one}"))?);
        match parent.stat() {
            Some(stat) if ppid(&stat) == Some(node) => Ok(parent),
            _ => Err(gone()),
        }
    }

    fn stat(&self) -> Option<String> {
        let fd =
            nix::fcntl::openat(&self.0, "stat", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).ok()?;
        std::io::read_to_string(std::fs::File::from(fd)).ok()
    }

    /// Not exited: neither reaped nor a zombie.
    fn alive(&self) -> bool {
        let state =
            |stat: &str| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
        self.stat().and_then(|s| state(&s)).is_some_and(|s| s != "Z" && s != "X")
    }
}

/// Mounts the image's root on `spec.root`: read-only, or with a writable
/// layer over it (the image store made its mount points).
fn image_root(spec: &Spec, image: &Path) -> std::io::Result<()> {
    match spec.writable_mb {
        None if spec.volumes.is_empty() => bind_ro(image, &spec.root),
        // Room for the volumes' mount points; `enter_root` makes it read-only.
        None => writable_root(spec, image, 1),
        Some(mb) => writable_root(spec, image, mb),
    }
}

/// An image's root with a writable layer over it, as Docker's: an overlay
/// whose upper layer is on a tmpfs of `mb` MB, mounted on the root's
/// directory first (the overlay then covers it). The layer's top belongs
/// to the sandbox's user, who is root inside (`image_user`).
fn writable_root(spec: &Spec, image: &Path, mb: u32) -> std::io::Result<()> {
    let r = &spec.root;
    let lower = image.to_str().filter(|p| !p.contains([',', ':', '\\'])).ok_or_else(|| {
        std::io::Error::other(format!("an image root at {} cannot be an overlay's lower layer", image.display()))
    })?;
    let size = format!("size={mb}m,mode=755");
    mount(Some("tmpfs"), r, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(size.as_str()))
        .map_err(|e| io(e, "writable layer tmpfs"))?;
    let (upper, work) = (r.join("upper"), r.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    std::os::unix::fs::chown(&upper, Some(spec.uid), Some(spec.gid))?;
    let options = format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display());
    mount(Some("overlay"), r, Some("overlay"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
        .map_err(|e| io(e, "writable root overlay"))
}

/// The `setrlimit` resource an ECS/Docker ulimit name stands for.
fn rlimit(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// After the switch to the sandbox's user: a user namespace in which that
/// user is root, or the image's user (`inside_ids`; the image's files and
/// `USER`-less entrypoints expect root), with no capability that survives
/// the exec.
fn image_user(spec: &Spec) -> std::io::Result<()> {
    // The uid change made /proc/self root's; the maps below are written as us.
    nix::sys::prctl::set_dumpable(true).map_err(|e| io(e, "dumpable"))?;
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| io(e, "unshare user"))?;
    let (uid, gid) = spec.inside_ids;
    std::fs::write("/proc/self/uid_map", format!("{uid} {} 1", spec.uid))?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {} 1", spec.gid))?;
    // Full capabilities in the new namespace until here: root's exec would
    // keep the bounding set's, so it is emptied too.
    drop_capabilities()?;
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| std::io::Error::other(format!("dropping capabilities: {e}")))?;
    }
    Ok(())
}

/// Builds the host's root as the zip runtimes see it on `spec.root`: a
/// tmpfs with read-only binds of `/usr`, a few `/etc` files and the runtime.
fn host_root(spec: &Spec) -> std::io::Result<()> {
    let r = &spec.root;
    mount(Some("tmpfs"), r, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("size=1m,mode=755"))
        .map_err(|e| io(e, "root tmpfs"))?;
    for d in HOST_DIRS {
        let dst = r.join(d.trim_start_matches('/'));
        std::fs::create_dir_all(&dst)?;
        bind_ro(Path::new(d), &dst)?;
    }
    for (link, target) in ROOT_LINKS {
        std::os::unix::fs::symlink(target, r.join(link))?;
    }
    for (link, target) in &spec.links {
        std::os::unix::fs::symlink(target, r.join(link.strip_prefix("/").unwrap_or(link)))?;
    }
    // Amazon Linux's `/bin/sh` is bash; where the host's is another shell
    // (Debian's dash), bash takes its place inside.
    if let Ok(sh) = std::fs::canonicalize("/usr/bin/sh") {
        let bash = Path::new("/usr/bin/bash");
        if sh.file_name().is_some_and(|n| n != "bash") && bash.is_file() && sh.starts_with("/usr") {
            bind_ro(bash, &r.join(sh.strip_prefix("/").unwrap_or(&sh)))?;
        }
    }
    for f in ETC_FILES.iter().filter(|f| Path::new(f).exists()) {
        let dst = r.join(f.trim_start_matches('/'));
        file_target(&dst)?;
        bind_ro(Path::new(f), &dst)?;
    }
    users(spec, &r.join("etc"))?;
    let runtime = r.join("var/runtime");
    std::fs::create_dir_all(&runtime)?;
    bind_ro(&spec.runtime, &runtime)
}

/// The sandbox's `/etc/passwd` and `/etc/group`: root, its own user (each
/// sandbox has its own uid, which the host's files do not name, and
/// `getpwuid` must find it: Node's `os.userInfo()`, Python's `getpass`) and
/// `nobody`; none of the host's users.
fn users(spec: &Spec, etc: &Path) -> std::io::Result<()> {
    let (uid, gid, user) = (spec.uid, spec.gid, SANDBOX_USER);
    std::fs::create_dir_all(etc)?;
    std::fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{uid}:{gid}::/tmp:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
        ),
    )?;
    std::fs::write(etc.join("group"), format!("root:x:0:\n{user}:x:{gid}:\nnobody:x:65534:\n"))
}

/// Builds the sandbox's root under `spec.root` in stage one's new mount
/// namespace, but for `/proc` (see [`enter_root`]): the image's or the
/// host's, then the trees, then `/dev`.
fn build_root(spec: &Spec, trees: &Trees) -> std::io::Result<()> {
    // Nothing mounted in here reaches the namespace it was copied from.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| io(e, "slave /"))?;
    match &spec.image {
        Some(image) => image_root(spec, image)?,
        None => host_root(spec)?,
    }
    trees.attach(&spec.root)?;
    dev(&spec.root)
}

/// Stage two, PID 1 of the sandbox's PID namespace: mounts that
/// namespace's `/proc` in the root and pivots into it.
fn enter_root(spec: &Spec, volumes: &[Tree]) -> std::io::Result<()> {
    let r = &spec.root;
    let proc_dir = r.join("proc");
    std::fs::create_dir_all(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| io(e, "/proc"))?;
    if spec.image.is_some() {
        // The root is read-only, so no directory for the old one: it is
        // stacked under the new one and detached.
        std::env::set_current_dir(r)?;
        nix::unistd::pivot_root(".", ".").map_err(|e| io(e, "pivot_root"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| io(e, "detach old root"))?;
        std::env::set_current_dir("/")?;
        for (tree, inside, read_only) in volumes {
            attach_volume(tree, inside, *read_only)
                .map_err(|e| std::io::Error::other(format!("mounting a volume at {}: {e}", inside.display())))?;
        }
        if spec.writable_mb.is_none() && !volumes.is_empty() {
            mount(None::<&str>, "/", None::<&str>, READ_ONLY, None::<&str>).map_err(|e| io(e, "read-only root"))?;
        }
        return Ok(());
    }
    let old = r.join(".old");
    std::fs::create_dir_all(&old)?;
    nix::unistd::pivot_root(r, &old).map_err(|e| io(e, "pivot_root"))?;
    std::env::set_current_dir("/")?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(|e| io(e, "detach old root"))?;
    std::fs::remove_dir("/.old")?;
    // The root itself becomes read-only; /tmp stays writable.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| io(e, "read-only root"))
}

/// A minimal `/dev` under `r`: a few host nodes on a tmpfs.
fn dev(r: &Path) -> std::io::Result<()> {
    let dev = r.join("dev");
    std::fs::create_dir_all(&dev)?;
    mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("size=64k,mode=755"))
        .map_err(|e| io(e, "/dev"))?;
    for n in DEV_NODES {
        let dst = dev.join(n);
        file_target(&dst)?;
        mount(Some(&Path::new("/dev").join(n)), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| io(e, &format!("/dev/{n}")))?;
        mount(None::<&str>, &dst, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| io(e, &format!("private /dev/{n}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes() {
        assert_eq!(unescape_mount_point("/srv/a\\040b\\011c"), PathBuf::from("/srv/a b\tc"));
        assert_eq!(unescape_mount_point("/srv/back\\134slash\\012"), PathBuf::from("/srv/back\\slash\n"));
        // Not an escape: left as it is.
        assert_eq!(unescape_mount_point("/srv/x\\09y\\"), PathBuf::from("/srv/x\\09y\\"));
    }
}
