//! The sandbox factory: one single-threaded execution of this binary
//! (`nimbus __sandbox-factory`) per node, which starts every sandbox's
//! stage one by cloning itself, so that the node does not execute its
//! 175 MB binary once per sandbox (≈ 2.5 ms of CPU and 650 page faults,
//! the loader relocating its data, whose pages each sandbox then kept as
//! its own). The clone is made with `CLONE_PARENT`: stage one is the
//! node's child, which waits for it, kills it and sees its exit status as
//! it did when it spawned it.
//!
//! The factory lives in a mount namespace of its own, a copy of the host's
//! with only what a sandbox's root is built from (none of the worker's
//! mounts, nor the host's others), that receives none made later: what each
//! sandbox's namespace is copied from, at a cost that grows neither with
//! the environments nor with the host's table (see [`HostMounts`]).
//!
//! This module owns both ends of a request: the spec as JSON with stage
//! one's stdin, stdout and stderr as descriptors, answered with its pid.
//! The factory runs nothing of a function: a request's descriptors are
//! closed once its stage one is cloned, and stage one does the rest
//! (see [`crate::namespaces`]).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType,
};

use crate::namespaces::{stage_one, FromFactory, HostMounts, Spec};

/// The hidden command that runs the factory; its argument is the node's pid.
pub const COMMAND: &str = "__sandbox-factory";

/// The variable the factory finds the directory whose mounts it leaves out
/// in (see [`serve`]): not on its command line, which a paused sandbox's
/// PID 1, a fork of it, shows its function.
pub const WORKER_VARIABLE: &str = "NIMBUS_FACTORY_WORKER";

/// The node's end: asks the running factory for stage ones, and starts
/// another when it has died.
#[derive(Debug)]
pub struct Factory {
    /// The socket to the running factory and its pid; `None` while one is
    /// started again. Held for a request and its answer.
    running: Mutex<Option<(OwnedFd, u32)>>,
    /// Told when a factory runs again.
    restarted: std::sync::Condvar,
}

/// How long a request waits for a factory that is being started again.
const RESTART_WAIT: Duration = Duration::from_secs(5);

fn other(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

impl Factory {
    /// Starts the factory of `exe` (this binary) on a thread kept for the
    /// node's life, and returns once it runs. Its sandboxes see nothing
    /// mounted at or below `worker` but the trees they are given.
    pub fn start(exe: &Path, worker: &Path) -> std::io::Result<Arc<Self>> {
        let factory = Arc::new(Self { running: Mutex::new(None), restarted: std::sync::Condvar::new() });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (exe, worker, weak) = (exe.to_path_buf(), worker.to_path_buf(), Arc::downgrade(&factory));
        std::thread::Builder::new()
            .name("sandbox-factory".into())
            .spawn(move || keep(&exe, &worker, weak, ready_tx))
            .map_err(|e| other("starting the sandbox factory's thread", e))?;
        ready_rx.recv().map_err(|e| other("starting the sandbox factory", e))??;
        Ok(factory)
    }

    /// Starts stage one of a sandbox for `spec` with `stdio` as its stdin,
    /// stdout and stderr; its pid, a child of this process. Blocks for the
    /// factory's clone (a fraction of a millisecond), and up to
    /// [`RESTART_WAIT`] while a factory that died is started again.
    pub fn spawn(&self, spec: &Spec, stdio: [OwnedFd; 3]) -> std::io::Result<u32> {
        let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
        let fds: Vec<RawFd> = stdio.iter().map(AsRawFd::as_raw_fd).collect();
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (mut running, _) = self
            .restarted
            .wait_timeout_while(running, RESTART_WAIT, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        let (socket, pid) =
            running.as_ref().ok_or_else(|| std::io::Error::other("the sandbox factory is not running"))?;
        let mut answer = [0u8; 4096];
        let mut ask = || -> std::io::Result<usize> {
            let rights = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(&json)], &rights, MsgFlags::empty(), None)
                .map_err(|e| other("asking the sandbox factory", e))?;
            match recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty())
                .map_err(|e| other("the sandbox factory's answer", e))?
            {
                0 => Err(std::io::Error::other("the sandbox factory exited")),
                n => Ok(n),
            }
        };
        let n = match ask() {
            Ok(n) => n,
            Err(e) => {
                // A late answer would be taken for the next request's: this
                // factory is done, and its keeper starts another.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::SIGKILL);
                *running = None;
                return Err(e);
            }
        };
        let answer = String::from_utf8_lossy(&answer[..n]);
        match answer.split_once(' ') {
            Some(("ok", pid)) => pid.parse().map_err(|e| other("the sandbox factory's answer", e)),
            Some((_, reason)) => Err(std::io::Error::other(reason.to_string())),
            None => Err(std::io::Error::other(format!("the sandbox factory's answer: {answer}"))),
        }
    }
}

/// Runs the factory, again whenever it exits, for as long as `factory`
/// lives. On a thread of its own because the kernel sends a parent's death
/// signal when the *thread* that spawned a process exits: the factory, and
/// every stage one it clones (whose parent is this thread, by
/// `CLONE_PARENT`), must die with the node and only with it.
fn keep(exe: &Path, worker: &Path, factory: Weak<Factory>, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
    let mut ready = Some(ready);
    loop {
        match run(exe, worker) {
            Ok((mut child, socket)) => {
                let Some(f) = factory.upgrade() else { return };
                *f.running.lock().unwrap_or_else(|e| e.into_inner()) = Some((socket, child.id()));
                f.restarted.notify_all();
                drop(f);
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                // A factory ends when the node drops its socket, or when killed.
                let started = std::time::Instant::now();
                let status = child.wait();
                let Some(f) = factory.upgrade() else { return };
                f.running.lock().unwrap_or_else(|e| e.into_inner()).take();
                tracing::warn!(?status, "the sandbox factory exited; starting another");
                // At once, unless it keeps dying as soon as it starts.
                if started.elapsed() > Duration::from_secs(1) {
                    continue;
                }
            }
            Err(e) => match ready.take() {
                Some(r) => {
                    let _ = r.send(Err(e));
                    return;
                }
                None => tracing::warn!(error = %e, "cannot start the sandbox factory again"),
            },
        }
        // Not in a tight loop if it cannot run at all.
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A `SOCK_SEQPACKET` pair for requests answered one at a time by a helper
/// process (this factory, the Python zygote): the first end is the node's,
/// whose reads give up after 10 s, so that a wedged helper fails a cold
/// start rather than hangs it; the second is the helper's.
pub fn request_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| other("a request socket", e))?;
    nix::sys::socket::setsockopt(
        &ours,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(10, 0),
    )
    .map_err(|e| other("a request socket", e))?;
    Ok((ours, theirs))
}

/// Starts the factory process: its stdin is the socket it is asked on.
/// It leads a process group of its own, which every sandbox it clones
/// joins: a terminal's Ctrl-C signals the node's whole group, and would
/// kill the runtimes of in-flight invokes that the node, stopping
/// gracefully, lets finish. It still dies with the node (its parent death
/// signal), and so does every stage one (theirs).
fn run(exe: &Path, worker: &Path) -> std::io::Result<(std::process::Child, OwnedFd)> {
    let (ours, theirs) = request_pair()?;
    let child = crate::own_process_group(&mut std::process::Command::new(exe))
        .args([COMMAND, &std::process::id().to_string()])
        .env_clear()
        .env(WORKER_VARIABLE, worker)
        .current_dir("/")
        .stdin(std::process::Stdio::from(theirs))
        .spawn()
        .map_err(|e| other(&format!("starting {} {COMMAND}", exe.display()), e))?;
    Ok((child, ours))
}

/// The factory's loop (this process must have started no thread): one
/// request at a time on its stdin, until the node closes it. First it
/// leaves the host's mount namespace for its own, without the mounts at
/// or below `worker` (those of a node killed before this one started it,
/// or of this node if it starts the factory again).
pub fn serve(node: u32, worker: &Path) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| other("pdeathsig", e))?;
    if i32::try_from(node).ok() != Some(nix::unistd::getppid().as_raw()) {
        return Err(std::io::Error::other("the node that started this factory is gone"));
    }
    let data = worker.parent().unwrap_or(worker);
    let host = HostMounts::leave(data, worker)?;
    // The sandbox's seccomp policy but what the stages call themselves: its
    // clones inherit it compiled, and each stage two adds the rest (as root,
    // without `no_new_privs`: the factory stays root to build sandboxes).
    let (inherited, own) = crate::seccomp::split(crate::seccomp::STAGES).map_err(|e| other("seccomp", e))?;
    crate::seccomp::install_programs(&inherited).map_err(|e| other("seccomp", e))?;
    let factory = FromFactory { host: &host, filters: &own };
    // A spec is a few kilobytes (the largest part, an environment, is at most 4 KB).
    let mut request = vec![0u8; 1 << 20];
    // Each clone gets its own copy of this memory, and only the pages it touches.
    let mut stack = vec![0u8; 8 << 20];
    loop {
        let mut iov = [IoSliceMut::new(&mut request)];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let msg = recvmsg::<()>(0, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| other("reading a request", e))?;
        let (bytes, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs().map_err(|e| other("reading a request", e))? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(owned));
            }
        }
        if bytes == 0 {
            return Ok(());
        }
        let answer = match (truncated, <[OwnedFd; 3]>::try_from(fds)) {
            (true, _) => "error the request is too long".to_string(),
            (false, Err(_)) => "error a request carries three descriptors".to_string(),
            (false, Ok(stdio)) => match serde_json::from_slice::<Spec>(&request[..bytes]) {
                Ok(spec) => match clone_stage_one(&spec, &stdio, &factory, &mut stack) {
                    Ok(pid) => format!("ok {pid}"),
                    Err(e) => format!("error cloning stage one: {e}"),
                },
                Err(e) => format!("error the spec: {e}"),
            },
        };
        send(0, answer.as_bytes(), MsgFlags::empty()).map_err(|e| other("answering", e))?;
    }
}

/// A descriptor just received (SCM_RIGHTS makes a new one in this process).
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in this process for this message;
    // nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Clones this process as stage one, a child of the node (`CLONE_PARENT`).
#[allow(unsafe_code)]
fn clone_stage_one(spec: &Spec, stdio: &[OwnedFd; 3], factory: &FromFactory, stack: &mut [u8]) -> std::io::Result<u32> {
    let child = Box::new(|| stage_one_in_clone(spec, stdio, factory));
    // SAFETY: the factory has started no thread, so its clone, a copy of
    // it (no `CLONE_VM`: with its own copy of `stack` and of what the
    // closure borrows), may do anything a process may. The clone never
    // returns to this code: it exits with the closure's value.
    let pid = unsafe { nix::sched::clone(child, stack, nix::sched::CloneFlags::CLONE_PARENT, Some(libc::SIGCHLD)) }
        .map_err(|e| other("clone", e))?;
    Ok(pid.as_raw() as u32)
}

/// Stage one, in the clone: its stdio are the request's (the factory's
/// socket, its stdin, is replaced, so a sandbox holds nothing of it).
fn stage_one_in_clone(spec: &Spec, stdio: &[OwnedFd; 3], factory: &FromFactory) -> isize {
    let dup = (|| -> std::io::Result<std::fs::File> {
        let [stdin, stdout, stderr] = stdio;
        nix::unistd::dup2_stdin(stdin).map_err(|e| other("stdin", e))?;
        nix::unistd::dup2_stdout(stdout).map_err(|e| other("stdout", e))?;
        nix::unistd::dup2_stderr(stderr).map_err(|e| other("stderr", e))?;
        for fd in stdio {
            nix::unistd::close(fd.as_raw_fd()).map_err(|e| other("close", e))?;
        }
        Ok(std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?))
    })();
    match dup.and_then(|control| stage_one(spec, control, Some(factory))) {
        Ok(code) => code as isize,
        Err(e) => {
            eprintln!("nimbus sandbox (stage one): {e}");
            127
        }
    }
}
