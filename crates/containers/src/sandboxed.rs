//! Tasks in `nimbus-sandbox` ([`SandboxRuntime`]): every container is a
//! sandbox of its own (mount, PID, IPC and UTS namespaces; the image's root
//! with a writable layer, or read-only, and a private `/tmp`; root or its
//! `user` in its own user namespace, which is the unprivileged sandbox user
//! on the host; its `ulimits`; the sandbox's seccomp
//! filter, which allows servers to `bind` and `listen`), one network
//! namespace for the task (made and held by a node thread, see
//! `NetworkHolder`) that they all join, and one cgroup of the task's size
//! holding them all. Health-check probes run inside their container (its
//! namespaces, as `docker exec`), in the task's cgroup.
//! What the task is served inside its network namespace (metadata and
//! credentials) is bound there before its first container runs. Each
//! published port gets a listener on the host's loopback whose connections
//! are made from inside the task's network namespace (a short-lived thread
//! `setns`es and connects), so the host needs no veth, bridge or NAT; other
//! tasks reach it at the task's private address, on the node's task
//! network (`Mesh`). A container's stdout and stderr come to the node
//! through pipes, for `output.log` in its directory (its first 64 MiB) or,
//! with `awslogs`, the node's log driver.
//!
//! It starts and signals processes; the lifecycle is the engine's.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nimbus_sandbox::cgroup::{Cgroup, Layout, Limits};
use nimbus_sandbox::namespaces::{Exec, Launch, Slots, Spec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mesh::Mesh;
use crate::runtime::{ContainerExit, ContainerLaunch, ProbeRun, RunningTask, StopSignal, TaskLaunch, TaskRuntime};

/// What a container without a log driver may write to its `output.log`.
/// The rest is read and dropped (Fargate keeps none of it), so that the
/// container never waits on its output and cannot fill the node's disk.
const OUTPUT_MAX: u64 = 64 << 20;

/// A container's `output.log`, and how much more it may take.
struct Capped {
    file: std::fs::File,
    left: u64,
}

/// Copies one of a container's pipes into its `output.log` until the pipe closes.
async fn keep(mut pipe: impl tokio::io::AsyncRead + Unpin, out: Arc<std::sync::Mutex<Capped>>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 << 10];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        if out.left == 0 {
            continue;
        }
        let kept = n.min(usize::try_from(out.left).unwrap_or(usize::MAX));
        out.left -= kept as u64;
        let mut text = buf[..kept].to_vec();
        if out.left == 0 {
            text.extend_from_slice(format!("\n[Nimbus] output past {} MiB is not kept\n", OUTPUT_MAX >> 20).as_bytes());
        }
        // Page-cache writes of a few KB; a failing disk loses the output, not the task.
        let _ = out.file.write_all(&text);
    }
}

/// Size of each container's private `/tmp`, and of its writable root's
/// layer (Fargate's 20 GiB ephemeral storage is disk; these are memory,
/// charged to the task, so they are kept small).
const TMP_MB: u32 = 512;

/// What the node's sandboxes are made with (the worker's settings).
#[derive(Debug, Clone)]
pub struct SandboxRuntime {
    /// This binary, which runs the sandbox stages.
    pub exe: PathBuf,
    /// Where tasks' roots and slots are made.
    pub dir: PathBuf,
    pub cgroups: Option<Layout>,
    pub cgroup_group: String,
    /// The host users tasks run as: one per task, which all its containers
    /// share (they share volumes and a network, as a Fargate task's do).
    pub users: nimbus_sandbox::users::Users,
    /// The node's published ports, reached from every task.
    pub mesh: Arc<Mesh>,
}

struct Started {
    pid: u32,
    child: tokio::process::Child,
}

#[async_trait::async_trait]
impl TaskRuntime for SandboxRuntime {
    async fn start(&self, task: TaskLaunch) -> Result<Box<dyn RunningTask>, String> {
        let dir = self.dir.join(&task.task_id);
        let user = self.users.take().ok_or("every sandbox user id of this node is in use (see --sandbox-uids)")?;
        let cgroup = match &self.cgroups {
            Some(layout) => {
                let limits = Limits {
                    memory_bytes: u64::from(task.memory_mib) << 20,
                    cpu_millis: Some((u64::from(task.cpu) * 1000 / 1024).max(1)),
                    pids: 1024,
                };
                Some(Arc::new(
                    Cgroup::create(layout, &self.cgroup_group, &format!("task-{}", task.task_id), limits)
                        .map_err(|e| format!("creating the task's cgroup: {e}"))?,
                ))
            }
            None => None,
        };
        let mut running = RunningSandbox {
            task_id: task.task_id.clone(),
            dir,
            slots: Vec::new(),
            cgroup,
            pids: Vec::new(),
            hard_kills: Vec::new(),
            exits: mpsc::unbounded_channel(),
            left: 0,
            endpoints: Vec::new(),
            proxies: Vec::new(),
            runtime: self.clone(),
            launches: Vec::new(),
            network: NetworkHolder::new().await.map_err(|e| format!("making the task's network: {e}"))?,
            address: task.address,
            _roots: task.containers.iter().map(|c| c.root.clone()).collect(),
            user,
        };
        if !task.volumes.is_empty() {
            let made = make_volumes(&running.dir, &task.volumes, task.memory_mib, running.user.id());
            made.map_err(|e| format!("making the task's volumes: {e}"))?;
        }
        // Both are a few runs of `ip` in the new namespace: side by side.
        let tid = running.network.tid;
        let serving = async {
            match &task.inside {
                Some(inside) => inside.start(tid).await.map_err(|e| format!("serving inside the task: {e}")),
                None => Ok(Vec::new()),
            }
        };
        let joining = async {
            let Some(address) = task.address else { return Ok(()) };
            let joined = self.mesh.join(&task.task_id, tid, address).await;
            joined.map_err(|e| format!("attaching the task to the task network: {e}"))
        };
        let (served, ()) = tokio::try_join!(serving, joining)?;
        running.proxies.extend(served);
        for c in task.containers {
            running.add(c).await?;
        }
        Ok(Box::new(running))
    }
}

impl RunningSandbox {
    /// Starts a container in the task's network namespace and publishes
    /// its ports.
    async fn add(&mut self, c: ContainerLaunch) -> Result<Vec<(u16, SocketAddr)>, String> {
        let dir = self.dir.join(&c.name);
        let started =
            self.runtime.start_container(&dir, &c, self.user.id(), self.network.tid, self.cgroup.as_deref()).await;
        let (Started { pid, child }, slots) = match started {
            Ok(started) => started,
            Err((e, slots)) => {
                self.slots.push(slots);
                return Err(e);
            }
        };
        self.slots.push(slots);
        self.pids.push((c.name.clone(), pid));
        self.left += 1;
        let (name, tx) = (c.name.clone(), self.exits.0.clone());
        let (hard_kill, killed) = tokio::sync::oneshot::channel();
        self.hard_kills.push(hard_kill);
        tokio::spawn(async move {
            let mut child = child;
            let status = tokio::select! {
                status = child.wait() => status,
                Ok(()) = killed => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let _ = tx.send((name, status.ok()));
        });
        let mut published = Vec::new();
        for &port in &c.ports {
            let target = SocketAddr::from((self.address.unwrap_or(std::net::Ipv4Addr::LOCALHOST), port));
            let (at, proxy) =
                publish(self.network.tid, target).await.map_err(|e| format!("publishing port {port}: {e}"))?;
            published.push((port, at));
            self.proxies.push(proxy);
            self.runtime.mesh.publish(&self.task_id, self.network.tid, port).await;
        }
        self.endpoints.extend(published.iter().copied());
        self.launches.push(c);
        Ok(published)
    }
}

impl SandboxRuntime {
    /// Starts a container's sandbox in `dir`, in the network namespace held
    /// by `network_of`; the slots it made are handed back even on failure,
    /// for the caller to remove.
    async fn start_container(
        &self,
        dir: &Path,
        c: &ContainerLaunch,
        uid: u32,
        network_of: u32,
        cgroup: Option<&Cgroup>,
    ) -> Result<(Started, Slots), (String, Slots)> {
        let root = dir.join("root");
        let slots = Slots::under(&dir.join("slots"));
        let made = std::fs::create_dir_all(&root)
            .and_then(|()| slots.create())
            .and_then(|()| slots.fill(c.root.path(), None, TMP_MB));
        if let Err(e) = made {
            return Err((format!("preparing container {}: {e}", c.name), slots));
        }
        match self.spawn_sandbox(dir, slots.clone(), c, uid, network_of, cgroup).await {
            Ok(started) => Ok((started, slots)),
            Err(e) => Err((e, slots)),
        }
    }

    /// Spawns the sandbox of container `c` on the root `start_container` made in `dir`.
    async fn spawn_sandbox(
        &self,
        dir: &Path,
        slots: Slots,
        c: &ContainerLaunch,
        uid: u32,
        network_of: u32,
        cgroup: Option<&Cgroup>,
    ) -> Result<Started, String> {
        let spec = Spec {
            root: dir.join("root"),
            runtime: c.root.path().to_path_buf(),
            slots,
            shared: Vec::new(),
            links: Vec::new(),
            uid,
            gid: uid,
            image: Some(c.root.path().to_path_buf()),
            argv: Vec::new(),
            env: Vec::new(),
            parent: std::process::id(),
            network_of: Some(network_of),
            inside_ids: c.ids,
            writable_mb: c.writable_root.then_some(TMP_MB),
            rlimits: c.rlimits.clone(),
            pause: false,
            volumes: c
                .mounts
                .iter()
                // A container's directory is in its task's, beside the volumes.
                .map(|m| (volumes_dir(dir.parent().unwrap_or(dir)).join(&m.volume), m.path.clone().into(), m.read_only))
                .collect(),
        };
        let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
        let kept = match c.log {
            Some(_) => None,
            None => Some(std::fs::File::create(dir.join("output.log")).map_err(|e| e.to_string())?),
        };
        // A process group of its own, as the functions' sandboxes have: a
        // terminal's Ctrl-C signals the node's whole group, and a task must
        // run until the node has stopped (its parent death signal ends it then).
        // The command is dropped as soon as it has spawned: it holds the
        // sandbox's end of the control socket, whose closing says the
        // container's program was executed.
        let mut child = {
            let mut command = tokio::process::Command::new(&self.exe);
            nimbus_sandbox::own_process_group(command.as_std_mut());
            command
                .arg("__sandbox")
                .env_clear()
                .env(nimbus_sandbox::namespaces::SPEC_VARIABLE, &json)
                .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        }
        .map_err(|e| format!("starting container {}: {e}", c.name))?;
        if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
            match (c.log.clone(), kept) {
                (Some(sink), _) => drop(tokio::spawn(sink.forward(out, err))),
                (None, Some(file)) => {
                    let file = Arc::new(std::sync::Mutex::new(Capped { file, left: OUTPUT_MAX }));
                    tokio::spawn(keep(out, file.clone()));
                    tokio::spawn(keep(err, file));
                }
                (None, None) => {}
            }
        }
        let pid = child.id().ok_or("the sandbox exited at once")?;
        let (program, args) = c.argv.split_first().ok_or("empty command")?;
        let launch = Launch {
            programs: vec![program.clone()],
            args: args.to_vec(),
            env: c.env.clone(),
            cwd: Some(c.working_dir.clone().unwrap_or_else(|| "/".into())),
        };
        let line = serde_json::to_string(&launch).map_err(|e| e.to_string())? + "\n";
        let cgroup_attach = cgroup.map(|cg| cg.attach(pid));
        if let Some(Err(e)) = cgroup_attach {
            return Err(format!("attaching container {} to the task's cgroup: {e}", c.name));
        }
        // Stage one says its namespaces exist ("r"); "g" lets it go on, and
        // the launch line tells stage two what to execute. The socket then
        // closes when the program is executed, after the reason if it was
        // not: the container runs only once it is.
        let mut control = ours;
        let failed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            control.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            let mut ready = [0u8; 1];
            control.read_exact(&mut ready)?;
            // A stage two that failed before reading the launch line (a
            // volume it could not mount) exits with it unread: writing it
            // may meet a closed socket (EPIPE), and reading a reset, each
            // after the reason it wrote, which is what the task reports.
            let closed = |e: &std::io::Error| {
                matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
            };
            let sent = control.write_all(b"g").and_then(|()| control.write_all(line.as_bytes()));
            if sent.as_ref().is_err_and(|e| !closed(e)) {
                return sent.map(|()| Vec::new());
            }
            let mut failed = Vec::new();
            match (control.read_to_end(&mut failed), sent) {
                (_, Err(e)) | (Err(e), _) if failed.is_empty() => Err(e),
                (Err(e), _) if !closed(&e) => Err(e),
                _ => Ok(failed),
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting container {}: {e}", c.name))?;
        if !failed.is_empty() {
            return Err(format!(
                "ResourceInitializationError: failed to create new container runtime task: failed to create shim task: \
                 OCI runtime create failed: runc create failed: unable to start container process: {}: unknown",
                String::from_utf8_lossy(&failed)
            ));
        }
        Ok(Started { pid, child })
    }
}

/// A listener on the host's loopback for a port of the task: each
/// connection is made from inside the task's network namespace.
async fn publish(netns_pid: u32, target: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    Ok((at, relay(listener, netns_pid, target)))
}

/// Serves `listener`: each connection is relayed to `target` (the task's
/// own address and a container port) in the network namespace of
/// `netns_pid`. Not to its loopback: what a task serves there alone is
/// its own (a database trusting local connections), on Fargate too.
pub(crate) fn relay(listener: tokio::net::TcpListener, netns_pid: u32, target: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut outside, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(Ok(inside)) = tokio::task::spawn_blocking(move || connect_inside(netns_pid, target)).await
                else {
                    return;
                };
                let Ok(mut inside) = tokio::net::TcpStream::from_std(inside) else { return };
                let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
            });
        }
    })
}

/// Connects to `target` in the network namespace of `pid`.
fn connect_inside(pid: u32, target: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    crate::mesh::inside_task(pid, || {
        // Bounded: a listener that never accepts must not hold a blocking thread for minutes of SYN retries.
        let stream = std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(5))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
}

type Exit = (String, Option<std::process::ExitStatus>);

struct RunningSandbox {
    task_id: String,
    dir: PathBuf,
    slots: Vec<Slots>,
    cgroup: Option<Arc<Cgroup>>,
    /// Stage one of each running container.
    pids: Vec<(String, u32)>,
    /// Kills a container's stage one through its waiting task (which holds
    /// the process, so that no signal reaches a pid taken over).
    hard_kills: Vec<tokio::sync::oneshot::Sender<()>>,
    exits: (mpsc::UnboundedSender<Exit>, mpsc::UnboundedReceiver<Exit>),
    left: usize,
    endpoints: Vec<(u16, SocketAddr)>,
    proxies: Vec<JoinHandle<()>>,
    /// What the task's containers are started with.
    runtime: SandboxRuntime,
    launches: Vec<ContainerLaunch>,
    network: NetworkHolder,
    /// The task's private address (its `eth0`), where its published ports
    /// are dialled; a task without one has only its loopback.
    address: Option<std::net::Ipv4Addr>,
    /// The containers' image roots, held while the task lives.
    _roots: Vec<nimbus_images::Root>,
    /// The host user the task's containers run as, its own while it lives.
    user: nimbus_sandbox::users::User,
}

/// The task's network namespace, made and held by a thread of the node
/// that waits for the task to end (what a pause container is elsewhere):
/// containers join it through the thread's id, and it outlives any of
/// them, so a container that exits at once (an init container) takes
/// neither the network nor the published ports with it.
struct NetworkHolder {
    tid: u32,
    _release: std::sync::mpsc::Sender<()>,
}

impl NetworkHolder {
    async fn new() -> std::io::Result<Self> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let made = (|| -> std::io::Result<u32> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
                // A child forked by this thread is in its network namespace.
                crate::mesh::ip("link set lo up\n")?;
                let me = std::fs::read_link("/proc/thread-self")?;
                me.file_name()
                    .and_then(|n| n.to_str()?.parse().ok())
                    .ok_or_else(|| std::io::Error::other("no thread id"))
            })();
            let ok = made.is_ok();
            let _ = ready_tx.send(made);
            if ok {
                // Ends when the task drops its sender.
                let _ = held.recv();
            }
        });
        let tid = ready.await.map_err(|_| std::io::Error::other("the network thread ended"))??;
        Ok(Self { tid, _release: release })
    }
}

#[async_trait::async_trait]
impl RunningTask for RunningSandbox {
    async fn next_exit(&mut self) -> Option<ContainerExit> {
        if self.left == 0 {
            return None;
        }
        let (name, status) = self.exits.1.recv().await?;
        self.left -= 1;
        self.pids.retain(|(n, _)| *n != name);
        let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        let exit_code = match (status.and_then(|s| s.code()), signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 137,
        };
        let oom = exit_code == 137 && self.cgroup.as_deref().is_some_and(Cgroup::oom_killed);
        Some(ContainerExit { name, exit_code, oom })
    }

    fn signal(&mut self, signal: StopSignal) {
        match signal {
            // Stage one waits on the container's PID 1, which is its child.
            StopSignal::Term => {
                for (_, pid) in &self.pids {
                    for child in children(*pid) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(child),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                }
            }
            // The containers' processes first: each stage one, spared, reaps
            // its container's PID 1 and dies as it did. Killed first, it
            // would leave PID 1 a zombie for the host's init (the node itself
            // when it is a container's PID 1, which never reaps it). A stage
            // one still there a second later is killed.
            StopSignal::Kill => {
                let stages: Vec<u32> = self.pids.iter().map(|(_, pid)| *pid).collect();
                for child in stages.iter().flat_map(|pid| children(*pid)) {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
                }
                if let Some(cg) = &self.cgroup {
                    cg.kill_all_but(&stages);
                }
                let hard_kills = std::mem::take(&mut self.hard_kills);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    for kill in hard_kills {
                        let _ = kill.send(());
                    }
                });
            }
        }
    }

    fn endpoints(&self) -> Vec<(u16, SocketAddr)> {
        self.endpoints.clone()
    }

    async fn start_container(&mut self, container: ContainerLaunch) -> Result<Vec<(u16, SocketAddr)>, String> {
        self.add(container).await
    }

    /// A probe runs inside the container, as `docker exec` runs AWS's:
    /// in its namespaces (its files, processes, network and user), with
    /// its environment and working directory, in the task's cgroup.
    fn probe(&self, container: &str, argv: Vec<String>) -> ProbeRun {
        let launch = self.launches.iter().find(|c| c.name == container);
        let init = self
            .pids
            .iter()
            .find(|(n, _)| n == container)
            .and_then(|(_, pid)| u32::try_from(*children(*pid).first()?).ok());
        let (Some(launch), Some(target)) = (launch, init) else {
            return Box::pin(async { Err("the container is not running".to_string()) });
        };
        let cwd = launch.working_dir.clone().unwrap_or_else(|| "/".into());
        let exec = Exec { target, argv, env: launch.env.clone(), cwd, ids: launch.ids };
        let (exe, cgroup) = (self.runtime.exe.clone(), self.cgroup.clone());
        Box::pin(async move {
            let json = serde_json::to_string(&exec).map_err(|e| e.to_string())?;
            let mut child = tokio::process::Command::new(&exe)
                .args(["__sandbox-exec", json.as_str()])
                .env_clear()
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting the probe: {e}"))?;
            // A probe that times out (this future dropped) takes its
            // command with it, not only the process that waits for it.
            let mut command = ProbeCommand(child.id());
            if let (Some(cg), Some(pid)) = (&cgroup, command.0) {
                cg.attach(pid).map_err(|e| format!("attaching the probe to the task's cgroup: {e}"))?;
            }
            let mut go = child.stdin.take().ok_or("no stdin")?;
            tokio::io::AsyncWriteExt::write_all(&mut go, b"g").await.map_err(|e| e.to_string())?;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            command.0 = None;
            Ok(status.code().unwrap_or(137))
        })
    }
}

/// The process a probe runs its command from, until it was waited for.
struct ProbeCommand(Option<u32>);

impl Drop for ProbeCommand {
    fn drop(&mut self) {
        for child in self.0.map(children).unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A process's children (the container's PID 1 is stage one's only one).
fn children(pid: u32) -> Vec<i32> {
    let listed = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    listed.split_whitespace().filter_map(|c| c.parse().ok()).collect()
}

/// Where a task's volumes are, in its directory.
fn volumes_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("volumes")
}

/// Makes a task's volumes: a directory each, owned by the task's user, on
/// one tmpfs of half the task's memory. A volume is scratch space that
/// lives as long as the task (Fargate's is its ephemeral storage, on disk):
/// in memory, what its containers write is charged to the task's cgroup,
/// and cannot fill the node's disk. The tmpfs goes with the task's
/// directory (`remove_unmounted`).
fn make_volumes(task_dir: &Path, names: &[String], memory_mib: u32, uid: u32) -> std::io::Result<()> {
    let dir = volumes_dir(task_dir);
    std::fs::create_dir_all(&dir)?;
    // Half the task's memory: a write past it is ENOSPC, not the memory
    // limit's OOM kill of whichever container holds the most.
    let options = format!("size={}m,mode=755", (memory_mib / 2).max(1));
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(std::io::Error::from)?;
    for name in names {
        let volume = dir.join(name);
        std::fs::create_dir(&volume)?;
        std::os::unix::fs::chown(&volume, Some(uid), Some(uid))?;
    }
    Ok(())
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.runtime.mesh.leave(&self.task_id);
        for p in &self.proxies {
            p.abort();
        }
        for s in &self.slots {
            s.remove();
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
            let _ = cg.remove();
        }
        nimbus_sandbox::namespaces::remove_unmounted(&self.dir);
    }
}
