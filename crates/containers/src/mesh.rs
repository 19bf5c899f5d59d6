//! Tasks reaching one another's published ports. A task's network
//! namespace has only its loopback (and the in-task endpoints), so another
//! task's published port is reached from inside it the way the host
//! reaches it: at its `networkBindings` address, `127.0.0.1:<hostPort>`.
//! In every running task a listener on that address relays each connection
//! to the publishing task's `containerPort`, made from inside that task's
//! namespace as the host's listener does (see `sandboxed`). Listeners
//! follow the tasks: added in every task as a port is published, in a new
//! task for every port already published, closed everywhere when the
//! publishing task ends. A port that is not published has no listener
//! anywhere, so tasks reach each other only through published ports.
//!
//! Host ports are unique on the node (the host's listener holds each), so
//! these listeners never collide with one another. A container listening
//! on the same port number of its own loopback would (host ports are
//! ephemeral ones, 32768 and up): the first to bind keeps it, and a relay
//! that cannot bind is skipped with a warning.
//!
//! It binds and relays; which ports are published is the runtime's.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::task::JoinHandle;

/// The node's published ports and the relays that reach them from tasks.
#[derive(Debug, Default)]
pub struct Mesh {
    /// Joins and publications one at a time, so each (task, port) is bound once.
    gate: tokio::sync::Mutex<()>,
    state: std::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each running task's network namespace (the pid of its holder).
    tasks: HashMap<String, u32>,
    /// By host port.
    ports: HashMap<u16, Published>,
    /// The listener each task has for a host port, by (task, host port).
    relays: HashMap<(String, u16), JoinHandle<()>>,
}

#[derive(Debug, Clone)]
struct Published {
    task: String,
    netns: u32,
    container_port: u16,
}

/// Listeners to bind in one task's namespace.
struct Binds {
    task: String,
    netns: u32,
    host_ports: Vec<u16>,
}

impl Mesh {
    /// A task whose namespace exists: it gets a listener for every port
    /// already published.
    pub(crate) async fn join(&self, task: &str, netns: u32) {
        let _one_at_a_time = self.gate.lock().await;
        let host_ports = {
            let mut s = self.lock();
            s.tasks.insert(task.to_string(), netns);
            s.ports.keys().copied().collect()
        };
        self.bind(vec![Binds { task: task.to_string(), netns, host_ports }]).await;
    }

    /// A port `task` published at `host_port`: every task gets a listener for it.
    pub(crate) async fn publish(&self, task: &str, netns: u32, container_port: u16, host_port: u16) {
        let _one_at_a_time = self.gate.lock().await;
        let binds = {
            let mut s = self.lock();
            s.ports.insert(host_port, Published { task: task.to_string(), netns, container_port });
            s.tasks.iter().map(|(t, &n)| Binds { task: t.clone(), netns: n, host_ports: vec![host_port] }).collect()
        };
        self.bind(binds).await;
    }

    /// A task that ended: its listeners close, and so do every task's
    /// listeners for its ports (a connection to them is then refused).
    pub(crate) fn leave(&self, task: &str) {
        let mut s = self.lock();
        s.tasks.remove(task);
        s.ports.retain(|_, p| p.task != task);
        let State { ports, relays, .. } = &mut *s;
        relays.retain(|(t, port), relay| {
            let keep = t != task && ports.contains_key(port);
            if !keep {
                relay.abort();
            }
            keep
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Binds the listeners and starts their relays, unless the task or the
    /// port went away meanwhile.
    async fn bind(&self, binds: Vec<Binds>) {
        if binds.iter().all(|b| b.host_ports.is_empty()) {
            return;
        }
        let bound = match tokio::task::spawn_blocking(move || bind_inside(binds)).await {
            Ok(Ok(bound)) => bound,
            Ok(Err(e)) => return tracing::warn!(error = %e, "binding relays to published ports failed"),
            Err(e) => return tracing::warn!(error = %e, "binding relays to published ports failed"),
        };
        let mut s = self.lock();
        for (task, host_port, listener) in bound {
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
            s.relays.insert((task, host_port), relay);
        }
    }
}

type Bound = (String, u16, std::io::Result<std::net::TcpListener>);

/// Binds `127.0.0.1:<host port>` listeners in each task's network
/// namespace, from a thread of its own that joins them in turn (`setns`
/// changes only the calling thread, which ends right after; the sockets
/// keep their namespace).
fn bind_inside(binds: Vec<Binds>) -> std::io::Result<Vec<Bound>> {
    std::thread::spawn(move || {
        let mut bound = Vec::new();
        for b in binds {
            // A task that ended meanwhile has no namespace left to join.
            let Ok(ns) = std::fs::File::open(format!("/proc/{}/ns/net", b.netns)) else { continue };
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
            for port in b.host_ports {
                let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l));
                bound.push((b.task.clone(), port, listener));
            }
        }
        Ok(bound)
    })
    .join()
    .map_err(|_| std::io::Error::other("binding thread panicked"))?
}
