//! How tasks reach one another: the node's task network and the relays to
//! published ports. A task's network namespace has its loopback (and the
//! in-task endpoints) and an `eth0` with its private address, so another
//! task's published port is reached from inside it two ways:
//!
//! - at its private address and container port (what `attachments` and
//!   `networkInterfaces` report), as in a VPC. Every task's `eth0` is one
//!   end of a veth pair whose other end is in the node's task network, a
//!   namespace of its own with no link to the host's (the host reaches
//!   tasks at their `networkBindings`). There, every task's address is
//!   local, and a listener at `<address>:<container port>` for each
//!   published port relays to it; a port that is not published has none
//!   and refuses. The task network's policy routing sends what it
//!   originates to task addresses out through their veths (its local
//!   table would otherwise take them), so replies get back;
//! - at its `networkBindings` address, `127.0.0.1:<hostPort>`, as from the
//!   host: in every running task a listener on that address relays to it.
//!   A container listening on the same port number of its own loopback
//!   would collide with it (host ports are ephemeral ones, 32768 and up):
//!   the first to bind keeps it, and a relay that cannot bind is skipped
//!   with a warning.
//!
//! Relays connect from inside the publishing task's namespace, as the
//! host's listener does (see `sandboxed`), and follow the tasks: added as
//! a port is published or a task joins, closed when the publisher ends (a
//! connection is then refused). Tasks have no capabilities in their
//! namespaces, so they cannot change their addresses or routes, and the
//! task network forwards nothing: tasks reach each other only through
//! published ports, and nothing beyond the node.
//!
//! It binds and relays; which ports are published is the runtime's, and
//! which address a task has is the engine's (it reports them).

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;

use tokio::task::JoinHandle;

/// The node's task network: tasks' private addresses are in it.
pub const NETWORK: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 0);
pub const PREFIX: u8 = 16;

/// The node's published ports and the relays that reach them from tasks.
#[derive(Debug, Default)]
pub struct Mesh {
    /// Joins and publications one at a time, so each (task, port) is bound once.
    gate: tokio::sync::Mutex<()>,
    state: std::sync::Mutex<State>,
    /// The task network's namespace, made when the first task joins.
    switch: tokio::sync::OnceCell<std::sync::Arc<std::fs::File>>,
}

#[derive(Debug, Default)]
struct State {
    /// Each running task.
    tasks: HashMap<String, Member>,
    /// By host port.
    ports: HashMap<u16, Published>,
    /// The listener each task has for a host port, by (task, host port).
    relays: HashMap<(String, u16), JoinHandle<()>>,
    /// The listeners at each task's private address, in the task network.
    addressed: HashMap<String, Vec<JoinHandle<()>>>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    /// Its network namespace (the pid of its holder).
    netns: u32,
    address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
struct Published {
    task: String,
    netns: u32,
    container_port: u16,
}

/// Listeners to bind in one namespace, each for a host port.
struct Binds {
    task: String,
    netns: Namespace,
    at: Vec<(u16, SocketAddr)>,
}

#[derive(Clone)]
enum Namespace {
    /// A task's, by the pid of its holder.
    Task(u32),
    Switch(std::sync::Arc<std::fs::File>),
}

impl Mesh {
    /// A task whose namespace exists: its `eth0` gets `address` on the
    /// task network, and it gets a listener for every port already
    /// published.
    pub(crate) async fn join(&self, task: &str, netns: u32, address: Option<Ipv4Addr>) -> std::io::Result<()> {
        if let Some(address) = address {
            let switch = self.switch().await?;
            let name = veth_name(task);
            tokio::task::spawn_blocking(move || attach(&switch, netns, &name, address))
                .await
                .map_err(std::io::Error::other)??;
        }
        let _one_at_a_time = self.gate.lock().await;
        let at = {
            let mut s = self.lock();
            s.tasks.insert(task.to_string(), Member { netns, address });
            s.ports.keys().map(|&p| (p, SocketAddr::from((Ipv4Addr::LOCALHOST, p)))).collect()
        };
        self.bind(vec![Binds { task: task.to_string(), netns: Namespace::Task(netns), at }]).await;
        Ok(())
    }

    /// A port `task` published at `host_port`: every task gets a listener
    /// for it, and so does its private address.
    pub(crate) async fn publish(&self, task: &str, netns: u32, container_port: u16, host_port: u16) {
        let _one_at_a_time = self.gate.lock().await;
        let (mut binds, address) = {
            let mut s = self.lock();
            s.ports.insert(host_port, Published { task: task.to_string(), netns, container_port });
            let binds: Vec<Binds> = s
                .tasks
                .iter()
                .map(|(t, m)| Binds {
                    task: t.clone(),
                    netns: Namespace::Task(m.netns),
                    at: vec![(host_port, SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))],
                })
                .collect();
            (binds, s.tasks.get(task).and_then(|m| m.address))
        };
        if let (Some(address), Some(switch)) = (address, self.switch.get()) {
            binds.push(Binds {
                task: task.to_string(),
                netns: Namespace::Switch(switch.clone()),
                at: vec![(host_port, SocketAddr::from((address, container_port)))],
            });
        }
        self.bind(binds).await;
    }

    /// A task that ended: its listeners close, and so do every task's
    /// listeners for its ports (a connection to them is then refused). Its
    /// veth goes with its namespace; its address stays the task network's
    /// own (until given to another task), so connections to it are refused
    /// too rather than left unanswered.
    pub(crate) fn leave(&self, task: &str) {
        let mut s = self.lock();
        s.tasks.remove(task);
        s.ports.retain(|_, p| p.task != task);
        let State { ports, relays, addressed, .. } = &mut *s;
        relays.retain(|(t, port), relay| {
            let keep = t != task && ports.contains_key(port);
            if !keep {
                relay.abort();
            }
            keep
        });
        addressed.remove(task).into_iter().flatten().for_each(|r| r.abort());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn switch(&self) -> std::io::Result<std::sync::Arc<std::fs::File>> {
        let made = self.switch.get_or_try_init(|| async {
            let ns = tokio::task::spawn_blocking(make_switch).await.map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>(std::sync::Arc::new(ns))
        });
        made.await.cloned()
    }

    /// Binds the listeners and starts their relays, unless the task or the
    /// port went away meanwhile.
    async fn bind(&self, binds: Vec<Binds>) {
        if binds.iter().all(|b| b.at.is_empty()) {
            return;
        }
        let bound = match tokio::task::spawn_blocking(move || bind_inside(binds)).await {
            Ok(bound) => bound,
            Err(e) => return tracing::warn!(error = %e, "binding relays to published ports failed"),
        };
        let mut s = self.lock();
        for (task, switch, host_port, listener) in bound {
            let listener = match listener.and_then(tokio::net::TcpListener::from_std) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(task, host_port, error = %e, "no relay to a published port in this task");
                    continue;
                }
            };
            let Some(to) = s.ports.get(&host_port).filter(|_| s.tasks.contains_key(&task)).cloned() else {
                continue;
            };
            let relay = crate::sandboxed::relay(listener, to.netns, to.container_port);
            if switch {
                s.addressed.entry(task).or_default().push(relay);
            } else {
                s.relays.insert((task, host_port), relay);
            }
        }
    }
}

/// (task, in the task network, host port, listener)
type Bound = (String, bool, u16, std::io::Result<std::net::TcpListener>);

/// Binds the listeners in their namespaces; one that is gone (its task
/// ended meanwhile) is skipped.
fn bind_inside(binds: Vec<Binds>) -> Vec<Bound> {
    let mut bound = Vec::new();
    for b in binds {
        let (ns, switch) = match b.netns {
            Namespace::Task(pid) => match std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                Ok(ns) => (std::sync::Arc::new(ns), false),
                Err(_) => continue,
            },
            Namespace::Switch(ns) => (ns, true),
        };
        let listeners = inside(&*ns, || Ok(b.at.iter().map(|&(_, at)| listen(at)).collect()));
        let Ok(listeners): std::io::Result<Vec<_>> = listeners else { continue };
        for ((host_port, _), listener) in b.at.iter().zip(listeners) {
            bound.push((b.task.clone(), switch, *host_port, listener));
        }
    }
    bound
}

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
    let task = std::fs::File::open(format!("/proc/{netns}/ns/net"))?;
    inside(task, || ip(&format!("addr add {address}/{PREFIX} dev eth0\nlink set eth0 up\n")))
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
