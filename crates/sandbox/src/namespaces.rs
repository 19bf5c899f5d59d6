//! Starting a process in its own namespaces with a read-only root, in two
//! stages that each run in a freshly executed, single-threaded process (so
//! no `unsafe` fork tricks are needed):
//!
//! 1. [`stage_one`] unshares the mount, network, IPC and UTS namespaces,
//!    brings loopback up, and reports on its control socket (its stdin) that
//!    its namespaces exist. The parent then binds listeners inside the new
//!    network namespace and moves it into its cgroup, and answers "go".
//!    Stage one unshares the PID and cgroup namespaces and starts stage
//!    two, which becomes PID 1 there.
//! 2. [`stage_two`] builds the root (read-only binds of the host's `/usr`,
//!    a few `/etc` files, the code and runtime; a private `/tmp`; a minimal
//!    `/dev`; a fresh `/proc`), pivots into it, drops every capability,
//!    becomes an unprivileged user with `no_new_privs`, installs the
//!    seccomp filter, and executes the program.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};

/// Everything the two stages need; passed as JSON on the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// An empty directory the new root is built on (a tmpfs is mounted there).
    pub root: PathBuf,
    /// Host directory mounted read-only at `/var/task`.
    pub code: PathBuf,
    /// Host directory mounted read-only at `/var/runtime`.
    pub runtime: PathBuf,
    /// Host directory mounted read-only at `/opt` (the merged layers).
    pub opt: Option<PathBuf>,
    /// Size of the private `/tmp`, in MB.
    pub tmp_mb: u32,
    pub uid: u32,
    pub gid: u32,
    /// Program and arguments, as seen inside the sandbox.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The executable of stage two (this binary).
    pub exe: PathBuf,
}

/// Host paths bound read-only into every sandbox.
const HOST_DIRS: &[&str] = &["/usr"];
/// Merged-/usr symlinks recreated in the new root.
const ROOT_LINKS: &[(&str, &str)] =
    &[("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")];
/// The only files of `/etc` a runtime sees (never shadow, never keys).
const ETC_FILES: &[&str] =
    &["/etc/passwd", "/etc/group", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ld.so.cache", "/etc/localtime"];
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom"];

fn io(e: nix::Error, what: &str) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Stage one; `control` is the socket to the parent. Returns the exit code
/// of stage two.
pub fn stage_one(spec: &Spec, spec_json: &str, mut control: impl Read + Write) -> std::io::Result<i32> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| io(e, "unshare"))?;
    let lo = std::process::Command::new("/usr/sbin/ip").args(["link", "set", "lo", "up"]).status()?;
    if !lo.success() {
        return Err(std::io::Error::other("bringing loopback up failed"));
    }
    control.write_all(b"r")?;
    let mut go = [0u8; 1];
    control.read_exact(&mut go)?;
    // After the parent put us in our cgroup: that cgroup becomes the root
    // the sandbox sees.
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP).map_err(|e| io(e, "unshare pid, cgroup"))?;
    let status = std::process::Command::new(&spec.exe)
        .args(["__sandbox-init", spec_json])
        .stdin(std::process::Stdio::null())
        .status()?;
    // Die the way the runtime died, so the parent sees `signal: killed`
    // for an out-of-memory kill rather than an exit code.
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
        }
    }
    Ok(status.code().unwrap_or(128 + 9))
}

fn bind_ro(src: &Path, dst: &Path) -> std::io::Result<()> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io(e, &format!("bind {}", src.display())))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
        .map_err(|e| io(e, &format!("read-only {}", dst.display())))
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
pub fn stage_two(spec: &Spec) -> std::io::Result<()> {
    let r = &spec.root;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| io(e, "private /"))?;
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
    for f in ETC_FILES.iter().filter(|f| Path::new(f).exists()) {
        let dst = r.join(f.trim_start_matches('/'));
        file_target(&dst)?;
        bind_ro(Path::new(f), &dst)?;
    }
    for (src, dst) in [(&spec.code, "var/task"), (&spec.runtime, "var/runtime")] {
        let dst = r.join(dst);
        std::fs::create_dir_all(&dst)?;
        bind_ro(src, &dst)?;
    }
    std::fs::create_dir_all(r.join("opt"))?;
    if let Some(opt) = &spec.opt {
        bind_ro(opt, &r.join("opt"))?;
    }
    let tmp = r.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={}m,mode=1777", spec.tmp_mb).as_str()),
    )
    .map_err(|e| io(e, "/tmp"))?;
    let dev = r.join("dev");
    std::fs::create_dir_all(&dev)?;
    mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("size=64k,mode=755"))
        .map_err(|e| io(e, "/dev"))?;
    for n in DEV_NODES {
        let dst = dev.join(n);
        file_target(&dst)?;
        mount(Some(&Path::new("/dev").join(n)), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| io(e, &format!("/dev/{n}")))?;
    }
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

    let old = r.join(".old");
    std::fs::create_dir_all(&old)?;
    nix::unistd::pivot_root(r, &old).map_err(|e| io(e, "pivot_root"))?;
    std::env::set_current_dir("/")?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(|e| io(e, "detach old root"))?;
    std::fs::remove_dir("/.old")?;
    // The root itself becomes read-only; /tmp stays writable.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| io(e, "read-only root"))?;
    nix::unistd::sethostname("nimbus").map_err(|e| io(e, "hostname"))?;

    // Every capability goes: the bounding and ambient sets here (dropping
    // from the bounding set needs CAP_SETPCAP, so before the uid change),
    // the rest with the uid change; `no_new_privs` keeps them gone.
    drop_capabilities()?;
    let gid = nix::unistd::Gid::from_raw(spec.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| io(e, "setgroups"))?;
    nix::unistd::setgid(gid).map_err(|e| io(e, "setgid"))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(spec.uid)).map_err(|e| io(e, "setuid"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| io(e, "no_new_privs"))?;
    // After the credential change (which clears it): die with stage one.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| io(e, "pdeathsig"))?;
    crate::seccomp::install().map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;

    let (program, args) = spec.argv.split_first().ok_or_else(|| std::io::Error::other("empty argv"))?;
    let err = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/var/task")
        .exec();
    Err(err)
}
