//! How tasks reach one another: the node's task network. Each task's
//! network namespace has its loopback (and the in-task endpoints) and an
//! `eth0` with its private address (what `attachments` and
//! `networkInterfaces` report), one end of a veth pair whose other end is
//! in the task network: a namespace of the node's own with no link to the
//! host's (the host reaches tasks at their `networkBindings`, see
//! `sandboxed`). There, every task's address is local, and each published
//! port is a listener at `<address>:<container port>` that relays each
//! connection into the publishing task, connecting from inside its
//! namespace as the host's listener does. So another task reaches a
//! published port at the task's private address and container port, as in
//! a VPC; a port that is not published has no listener and refuses, and so
//! does the address of a task that ended (it stays local there until it is
//! given out again). The task network's policy routing sends what it
//! originates to task addresses out through their veths (its local table,
//! which has the same addresses, would otherwise take them), so replies
//! get back. Tasks have no capabilities in their namespaces, so they
//! cannot change their addresses or routes, and the task network forwards
//! nothing: tasks reach each other only through published ports, and
//! nothing beyond the node.
//!
//! It links, binds and relays; which ports are published is the runtime's,
//! and which address a task has is the engine's (it reports them).

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::task::JoinHandle;

/// The node's task network: tasks' private addresses are in it.
pub const NETWORK: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 0);
pub const PREFIX: u8 = 16;

/// The node's task network and the relays to published ports in it.
#[derive(Debug, Default)]
pub struct Mesh {
    /// Each running task on the task network, by id.
    tasks: std::sync::Mutex<HashMap<String, Member>>,
    /// The task network's namespace, made when the first task joins.
    switch: tokio::sync::OnceCell<Arc<std::fs::File>>,
}

#[derive(Debug)]
struct Member {
    address: Ipv4Addr,
    /// One per published port.
    relays: Vec<JoinHandle<()>>,
}

impl Mesh {
    /// Links the namespace of `netns` (a task's, by the pid of its holder)
    /// to the task network, its `eth0` with `address`.
    pub(crate) async fn join(&self, task: &str, netns: u32, address: Ipv4Addr) -> std::io::Result<()> {
        let switch = self.switch().await?;
        let name = veth_name(task);
        tokio::task::spawn_blocking(move || attach(&switch, netns, &name, address))
            .await
            .map_err(std::io::Error::other)??;
        self.lock().insert(task.to_string(), Member { address, relays: Vec::new() });
        Ok(())
    }

    /// A port `task` published: a listener at its address relays to it.
    pub(crate) async fn publish(&self, task: &str, netns: u32, container_port: u16) {
        let (Some(address), Some(switch)) = (self.lock().get(task).map(|m| m.address), self.switch.get().cloned())
        else {
            return;
        };
        let at = SocketAddr::from((address, container_port));
        let listener = match listen_in(switch, at).await {
            Ok(l) => l,
            Err(e) => {
                return tracing::warn!(task, %at, error = %e, "no listener for a published port on the task network")
            }
        };
        // Unless the task ended meanwhile (the listener then closes).
        if let Some(member) = self.lock().get_mut(task) {
            member.relays.push(crate::sandboxed::relay(listener, netns, at));
        }
    }

    /// A task that ended: its listeners close, so connections to its
    /// address are refused. Its veth goes with its namespace.
    pub(crate) fn leave(&self, task: &str) {
        if let Some(member) = self.lock().remove(task) {
            member.relays.iter().for_each(JoinHandle::abort);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn switch(&self) -> std::io::Result<Arc<std::fs::File>> {
        let made = self.switch.get_or_try_init(|| async {
            let ns = tokio::task::spawn_blocking(make_switch).await.map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>(Arc::new(ns))
        });
        made.await.cloned()
    }
}

/// A listener at `at` in network namespace `ns`, for tokio.
async fn listen_in(ns: Arc<std::fs::File>, at: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let l = tokio::task::spawn_blocking(move || inside(&*ns, || listen(at))).await.map_err(std::io::Error::other)??;
    tokio::net::TcpListener::from_std(l)
}

/// A non-blocking listener at `at`, in the calling thread's network namespace.
pub(crate) fn listen(at: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(at)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs `f` on a thread of its own in network namespace `ns` (`setns`
/// changes only the calling thread, which ends right after; sockets keep
/// the namespace they were made in, and children forked from the thread
/// start in it).
pub(crate) fn inside<T: Send>(
    ns: impl AsFd + Send,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("a thread in a task's network namespace panicked"))?
    })
}

/// [`inside`] the network namespace of process `pid` (a task's holder).
pub(crate) fn inside_task<T: Send>(pid: u32, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    inside(std::fs::File::open(format!("/proc/{pid}/ns/net"))?, f)
}

/// Runs iproute2 commands, one per line, in the calling thread's network
/// namespace.
pub(crate) fn ip(batch: &str) -> std::io::Result<()> {
    let mut child = std::process::Command::new("/usr/sbin/ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(batch.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(std::io::Error::other(format!("ip {:?}: {}", batch.trim(), said.trim())));
    }
    Ok(())
}

/// Makes the task network's namespace: its loopback up, locally made
/// packets to task addresses routed by the main table (the veth routes)
/// before the local table (where the addresses are, for what arrives from
/// tasks), and no forwarding.
fn make_switch() -> std::io::Result<std::fs::File> {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
        ip(&format!(
            "link set lo up\n\
             rule add iif lo to {NETWORK}/{PREFIX} lookup main pref 10\n\
             rule add lookup local pref 20\n\
             rule del pref 0\n"
        ))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0")?;
        std::fs::File::open("/proc/thread-self/ns/net")
    })
    .join()
    .map_err(|_| std::io::Error::other("making the task network panicked"))?
}

/// Links the namespace of `netns` to the task network: a veth pair, `eth0`
/// inside with `address`, the other end (`name`) routing to it.
fn attach(switch: &std::fs::File, netns: u32, name: &str, address: Ipv4Addr) -> std::io::Result<()> {
    let mac = mac_address(address);
    inside(switch, || {
        ip(&format!(
            "link add {name} type veth peer name eth0 address {mac} netns {netns}\n\
             link set {name} up\n\
             addr replace {address}/32 dev lo\n\
             route replace {address}/32 dev {name}\n"
        ))
    })?;
    inside_task(netns, || ip(&format!("addr add {address}/{PREFIX} dev eth0\nlink set eth0 up\n")))
}

/// The MAC address a task's `eth0` gets: locally administered, from its address.
pub fn mac_address(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The task network's end of a task's veth pair (15 characters at most).
fn veth_name(task: &str) -> String {
    format!("nt{}", task.chars().take(13).collect::<String>())
}
