//! The process an environment is, as the worker waits for it and kills it:
//! a plain child (`--isolation process`), or a sandbox's stage one, which
//! the sandbox factory cloned as this node's child
//! (`nimbus_sandbox::factory`). It owns reaping: a process dropped before
//! it was waited for is killed and reaped, never left a zombie.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::process::{pidfd_open, pidfd_send_signal, waitid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;

pub(crate) enum Process {
    /// Killed on drop (`kill_on_drop`), and then reaped by tokio.
    Child(tokio::process::Child),
    Stage(Stage),
}

/// A child of this node that tokio did not spawn, known by a pidfd: its
/// pid stays its own until it is reaped here, so a signal cannot reach a
/// process that took its pid over.
pub(crate) struct Stage {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Stage {
    /// `pid` must be a child of this process, not yet reaped.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let raw = rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| std::io::Error::other(format!("bad pid {pid}")))?;
        match pidfd_open(raw, PidfdFlags::NONBLOCK).map_err(std::io::Error::from).and_then(watch) {
            Ok(fd) => Ok(Self { pid, pidfd: Some(fd) }),
            Err(e) => {
                // Not left running, nor a zombie.
                let _ = rustix::process::kill_process(raw, Signal::KILL);
                reap_later(pid);
                Err(e)
            }
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let pidfd = self.pidfd.as_ref().ok_or_else(|| std::io::Error::other("already reaped"))?;
        let status = loop {
            // Readable once the process has exited.
            let waited = match pidfd.readable().await {
                Err(e) => Err(e),
                Ok(mut ready) => {
                    match waitid(WaitId::PidFd(pidfd.get_ref().as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
                    {
                        Ok(Some(status)) => Ok(status),
                        Ok(None) => {
                            ready.clear_ready();
                            continue;
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            };
            match waited {
                Ok(status) => break status,
                // Not to be waited for here again (a drop would try): killed,
                // and the reaper thread takes it over.
                Err(e) => {
                    self.abandon();
                    return Err(e);
                }
            }
        };
        self.pidfd = None;
        // The wait status `waitpid` would have given.
        let raw = match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => (code & 0xff) << 8,
            (None, Some(signal)) => signal | if status.dumped() { 0x80 } else { 0 },
            (None, None) => 0,
        };
        Ok(ExitStatus::from_raw(raw))
    }

    /// Kills it and leaves its reaping to the reaper thread; a no-op once reaped.
    fn abandon(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ = pidfd_send_signal(fd.get_ref(), Signal::KILL);
            reap_later(self.pid);
        }
    }

    fn signal_kill(&self) {
        if let Some(fd) = &self.pidfd {
            let _ = pidfd_send_signal(fd.get_ref(), Signal::KILL);
        }
    }
}

/// Registers a pidfd with the runtime, which tells when it becomes readable.
#[allow(unsafe_code)]
fn watch(pidfd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd` owns the descriptor from here until it is dropped,
    // and nothing closes or replaces it meanwhile (tokio's condition; its
    // safe constructor is deprecated for lacking that promise).
    unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.into())
}

impl Drop for Stage {
    /// Killed, and reaped by a thread rather than a task: a drop may come
    /// while the runtime shuts down, when a task spawned is dropped at once.
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Hands a killed child of this node to the one thread that waits for such
/// children (blocking, one after another: each is already dying).
fn reap_later(pid: u32) {
    static REAPER: std::sync::OnceLock<std::sync::mpsc::Sender<u32>> = std::sync::OnceLock::new();
    let sender = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let spawned = std::thread::Builder::new().name("reaper".into()).spawn(move || {
            for pid in rx {
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the reaper thread: killed sandboxes stay zombies");
        }
        tx
    });
    let _ = sender.send(pid);
}

impl Process {
    pub fn id(&self) -> Option<u32> {
        match self {
            Self::Child(c) => c.id(),
            Self::Stage(s) => s.pidfd.as_ref().map(|_| s.pid),
        }
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Self::Child(c) => c.wait().await,
            Self::Stage(s) => s.wait().await,
        }
    }

    /// Kills it and waits for it to be gone.
    pub async fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Self::Child(c) => c.kill().await,
            Self::Stage(s) => {
                s.signal_kill();
                s.wait().await.map(drop)
            }
        }
    }
}
