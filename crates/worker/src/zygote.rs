//! The Python zygote (`runtimes/python/zygote.py`): one interpreter per
//! Python runtime that has imported Nimbus's runtime once, from which
//! sandboxed environments are forked instead of each starting its own
//! (SOCK's design). This module starts it and asks it for environments.
//!
//! It builds no sandbox: the caller builds one paused (its stage two waits
//! as PID 1 without a program), and the zygote joins its namespaces for
//! the fork; the caller then attaches the forked process to the sandbox's
//! cgroup. It must never hand the zygote anything of a function:
//! the function arrives later, on the environment's own socket.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags};

/// Joined in this order (the zygote's `NAMESPACES`).
const NAMESPACES: [&str; 6] = ["net", "ipc", "uts", "cgroup", "pid", "mnt"];

pub(crate) struct Zygote {
    /// One request at a time: the answer to a request is the next message.
    socket: std::sync::Mutex<OwnedFd>,
    process: std::sync::Mutex<std::process::Child>,
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = process.kill();
        let _ = process.wait();
    }
}

fn other(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

impl Zygote {
    /// Starts `interpreter` on `script` with a template's environment
    /// (`env`), as root on the host: it joins each sandbox's namespaces to
    /// fork into it, and its children drop the privilege before anything
    /// else runs. What is the same for every environment is said once, in
    /// its first message: the seccomp programs, each a list of `[code, jt,
    /// jf, k]`: those the zygote installs on itself, which its children
    /// inherit, and those each child adds (see
    /// [`nimbus_sandbox::seccomp::split`]).
    pub fn start(interpreter: &str, script: &Path, env: Vec<(String, String)>) -> std::io::Result<Self> {
        let (inherited, own) =
            nimbus_sandbox::seccomp::split(&[nix::libc::SYS_setns]).map_err(|e| other("seccomp", e))?;
        let [inherited, own] = [inherited, own].map(|programs| -> Vec<Vec<serde_json::Value>> {
            programs.iter().map(|p| p.iter().map(|i| serde_json::json!([i.code, i.jt, i.jf, i.k])).collect()).collect()
        });
        let setup = serde_json::json!({"zygote_seccomp": inherited, "seccomp": own}).to_string();
        let (ours, theirs) = nimbus_sandbox::factory::request_pair()?;
        // A process group of its own, which the environments forked from it
        // keep: a terminal's Ctrl-C, sent to the node's group, must not
        // kill the runtimes of invokes the stopping node lets finish. It
        // ends when the node does (its socket closes).
        let process = nimbus_sandbox::own_process_group(&mut std::process::Command::new(interpreter))
            .args(["-I", "-S", "-u"])
            .arg(script)
            .env_clear()
            .envs(env)
            .current_dir("/")
            .stdin(std::process::Stdio::from(theirs))
            .spawn()?;
        // Queued on the socket until the zygote has imported the runtime.
        sendmsg::<()>(ours.as_raw_fd(), &[IoSlice::new(setup.as_bytes())], &[], MsgFlags::empty(), None)
            .map_err(|e| other("setting the zygote up", e))?;
        Ok(Self { socket: std::sync::Mutex::new(ours), process: std::sync::Mutex::new(process) })
    }

    /// Whether it has exited (it is then started again at the next use).
    pub fn exited(&self) -> bool {
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(process.try_wait(), Ok(None))
    }

    /// Forks an environment into the paused sandbox whose PID 1 is
    /// `sandbox` (its host pid), as the sandbox's user `uid` (with the
    /// group of that number), with `stdin` and `log` as its stdio; its
    /// host pid (the sandbox's one child, once the zygote answers). Blocks.
    pub fn fork(&self, sandbox: u32, uid: u32, stdin: OwnedFd, log: OwnedFd) -> std::io::Result<u32> {
        let namespaces = NAMESPACES
            .iter()
            .map(|ns| std::fs::File::open(format!("/proc/{sandbox}/ns/{ns}")))
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<i32> =
            namespaces.iter().map(|f| f.as_raw_fd()).chain([stdin.as_raw_fd(), log.as_raw_fd()]).collect();
        // The request and its answer, under one hold of the socket.
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let rights = [ControlMessage::ScmRights(&fds)];
        let request = format!("fork {uid}");
        sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(request.as_bytes())], &rights, MsgFlags::empty(), None)
            .map_err(|e| other("asking the zygote", e))?;
        let mut answer = [0u8; 4096];
        let n = recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty()).map_err(|e| {
            // A late answer would be taken for the next request's: this
            // zygote is done (the next use starts another).
            let _ = self.process.lock().unwrap_or_else(|e| e.into_inner()).kill();
            other("the zygote's answer", e)
        })?;
        if n == 0 {
            return Err(std::io::Error::other("the zygote exited"));
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&answer[..n]).map_err(|e| other("the zygote's answer", e))?;
        if let Some(e) = answer["error"].as_str() {
            return Err(std::io::Error::other(format!("the zygote: {e}")));
        }
        first_child(sandbox)?.ok_or_else(|| std::io::Error::other("the environment exited at once"))
    }
}

/// The first child of a process (of its main thread), by host pid.
pub(crate) fn first_child(pid: u32) -> std::io::Result<Option<u32>> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    Ok(children.split_whitespace().next().and_then(|p| p.parse().ok()))
}
