//! What running a task takes from the node, as two traits the engine drives
//! ([`TaskRuntime`], [`RunningTask`]), and how a container's command line
//! and environment are made from its image and definition ([`plan`]), as
//! Docker and Fargate make them.
//!
//! The engine owns the lifecycle (which exit stops the task, when SIGTERM
//! becomes SIGKILL); a runtime only starts processes in the task's network
//! namespace and cgroup, signals them and reports their exits.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::types::{ContainerDefinition, ContainerOverride, KeyValue, PortMapping};
use crate::PulledImage;

/// One container, ready to start.
#[derive(Debug, Clone)]
pub struct ContainerLaunch {
    pub name: String,
    /// The image's flattened root.
    pub root: nimbus_images::Root,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub ports: Vec<u16>,
    /// Who the program runs as inside (uid, gid): the definition's `user`,
    /// else the image's `USER`, else root.
    pub ids: (u32, u32),
    /// A writable layer over the image's root (unless `readonlyRootFilesystem`).
    pub writable_root: bool,
    /// `ulimits`: (name, soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
    /// Where its stdout and stderr lines go (`awslogs`); else to a file of
    /// the task's directory.
    pub log: Option<crate::awslogs::LogSink>,
    /// The task's volumes it mounts (its `mountPoints` and `volumesFrom`).
    pub mounts: Vec<crate::volumes::Mount>,
}

/// A task, ready to start: its size (the cgroup's limits) and containers.
#[derive(Clone)]
pub struct TaskLaunch {
    pub task_id: String,
    pub cpu: u32,
    pub memory_mib: u32,
    pub containers: Vec<ContainerLaunch>,
    /// The names of its volumes: scratch space its containers share.
    pub volumes: Vec<String>,
    /// Its private address on the node's task network (`None`: loopback only).
    pub address: Option<std::net::Ipv4Addr>,
    /// What is served inside the task's network namespace before its
    /// first container runs (metadata and credentials).
    pub inside: Option<Arc<dyn InsideTask>>,
}

/// Serves something inside a task's network namespace.
#[async_trait::async_trait]
pub trait InsideTask: Send + Sync {
    /// Binds in the network namespace of process `netns_pid` and serves
    /// until the returned tasks are aborted.
    async fn start(&self, netns_pid: u32) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>>;
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    pub name: String,
    pub exit_code: i32,
    /// Killed by the task's memory limit.
    pub oom: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// Starts tasks: a network namespace shared by the task's containers, a
/// cgroup of the task's size, and each container a sandboxed process.
#[async_trait::async_trait]
pub trait TaskRuntime: Send + Sync {
    /// Starts every container, or none (the error is the reason reported
    /// after `CannotStartContainerError: `).
    async fn start(&self, task: TaskLaunch) -> Result<Box<dyn RunningTask>, String>;
}

/// A started task.
#[async_trait::async_trait]
pub trait RunningTask: Send {
    /// The next container to exit; `None` once all have.
    async fn next_exit(&mut self) -> Option<ContainerExit>;
    /// Signals every container still running.
    fn signal(&mut self, signal: StopSignal);
    /// Where each published container port is reached from the host.
    fn endpoints(&self) -> Vec<(u16, SocketAddr)>;
    /// Starts one more container in the task (one whose `dependsOn`
    /// conditions were met after the task started); its published ports.
    async fn start_container(&mut self, container: ContainerLaunch) -> Result<Vec<(u16, SocketAddr)>, String>;
    /// Runs a health-check command for a container, in the task's network
    /// namespace and under the sandbox's rules; its exit code. The future
    /// stands alone so that probes run beside the task's driver.
    fn probe(&self, container: &str, argv: Vec<String>) -> ProbeRun {
        let _ = (container, argv);
        Box::pin(async { Err("this runtime cannot run health checks".to_string()) })
    }
}

/// A running health-check command (see [`RunningTask::probe`]).
pub type ProbeRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i32, String>> + Send>>;

/// Environment every container gets, as on Fargate.
fn platform_env(region: &str) -> [(String, String); 3] {
    [
        ("AWS_REGION".into(), region.into()),
        ("AWS_DEFAULT_REGION".into(), region.into()),
        ("AWS_EXECUTION_ENV".into(), "AWS_ECS_FARGATE".into()),
    ]
}

/// A container's launch from its image, definition and override. Docker's
/// rules: a definition's `entryPoint` replaces the image's ENTRYPOINT and
/// drops its CMD; `command` (the override's first) replaces CMD. The
/// environment is the image's, then the definition's, then the override's,
/// then the platform's.
pub fn plan(
    image: &PulledImage,
    def: &ContainerDefinition,
    over: Option<&ContainerOverride>,
    region: &str,
) -> Result<ContainerLaunch, String> {
    let entry = if def.entry_point.is_empty() { image.entrypoint.clone() } else { def.entry_point.clone() };
    let command = match over.and_then(|o| o.command.clone()) {
        Some(c) => c,
        None if !def.command.is_empty() => def.command.clone(),
        None if def.entry_point.is_empty() => image.cmd.clone(),
        None => Vec::new(),
    };
    let argv: Vec<String> = entry.into_iter().chain(command).collect();
    if argv.is_empty() {
        return Err(format!("container {}: no command specified (the image has no ENTRYPOINT or CMD)", def.name));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k.to_string(), v.to_string());
    }
    let pairs = |list: &[KeyValue]| -> Vec<(String, String)> {
        list.iter().filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default()))).collect()
    };
    let overrides = over.and_then(|o| o.environment.as_deref()).map(pairs).unwrap_or_default();
    for (k, v) in pairs(&def.environment).into_iter().chain(overrides).chain(platform_env(region)) {
        set(k, v);
    }
    let user = def.user.as_ref().or(image.user.as_ref()).filter(|u| !u.is_empty());
    let ids = match user {
        Some(user) => user_ids(image.root.path(), user)?,
        None => (0, 0),
    };
    let rlimits =
        def.ulimits.iter().flatten().filter_map(|u| {
            Some((u["name"].as_str()?.to_string(), u["softLimit"].as_u64()?, u["hardLimit"].as_u64()?))
        });
    Ok(ContainerLaunch {
        name: def.name.clone(),
        root: image.root.clone(),
        argv,
        env,
        working_dir: def.working_directory.clone().or_else(|| image.working_dir.clone()),
        ports: def.port_mappings.iter().flat_map(PortMapping::ports).collect(),
        ids,
        writable_root: def.readonly_root_filesystem != Some(true),
        rlimits: rlimits.collect(),
        log: None,
        mounts: Vec::new(),
    })
}

/// Docker's reading of a `user`: `uid`, `name`, `uid:gid`, `name:group`
/// and the mixed forms, names from the image's `/etc/passwd` and
/// `/etc/group`. A user without a group gets its passwd entry's, else 0.
fn user_ids(root: &std::path::Path, user: &str) -> Result<(u32, u32), String> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = image_file(root, "etc/passwd");
    let entry = passwd.iter().find(|f| f.len() >= 4 && (f[0] == name || f[2] == name));
    let uid = match (name.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(f)) => f[2].parse().map_err(|_| format!("unable to find user {name}: invalid passwd entry"))?,
        (Err(_), None) => return Err(format!("unable to find user {name}: no matching entries in passwd file")),
    };
    let gid = match group {
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => image_file(root, "etc/group")
                .iter()
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
        },
    };
    Ok((uid, gid))
}

/// The lines of a colon-separated file of an image's root, split: its
/// first MiB (the image is untrusted; a huge file must not fill the
/// node's memory); none if it is missing or leads out of the root (the
/// image's symbolic links are not followed to the host's files).
fn image_file(root: &std::path::Path, path: &str) -> Vec<Vec<String>> {
    use std::io::Read;
    let inside = std::fs::canonicalize(root.join(path))
        .ok()
        .filter(|p| std::fs::canonicalize(root).is_ok_and(|r| p.starts_with(r)) && p.is_file());
    let mut text = String::new();
    if let Some(file) = inside.and_then(|p| std::fs::File::open(p).ok()) {
        let _ = file.take(1 << 20).read_to_string(&mut text);
    }
    text.lines().map(|l| l.split(':').map(str::to_string).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> PulledImage {
        PulledImage {
            root: nimbus_images::Root::unmanaged("/roots/abc".into()),
            digest: "sha256:abc".into(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: Some("/app".into()),
            user: None,
        }
    }

    fn definition(extra: serde_json::Value) -> ContainerDefinition {
        let mut v = serde_json::json!({"name": "web", "image": "x"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_lines_follow_dockers_rules() {
        let img = image();
        let argv = |d: &ContainerDefinition, o: Option<&ContainerOverride>| plan(&img, d, o, "r").unwrap().argv;
        assert_eq!(argv(&definition(serde_json::json!({})), None), ["/bin/sh", "-c", "echo hi"]);
        let d = definition(serde_json::json!({"command": ["echo bye"]}));
        assert_eq!(argv(&d, None), ["/bin/sh", "-c", "echo bye"]);
        let o = ContainerOverride {
            name: Some("web".into()),
            command: Some(vec!["echo over".into()]),
            environment: None,
            cpu: None,
            memory: None,
            memory_reservation: None,
        };
        assert_eq!(argv(&d, Some(&o)), ["/bin/sh", "-c", "echo over"]);
        let d = definition(serde_json::json!({"entryPoint": ["/bin/server"]}));
        assert_eq!(argv(&d, None), ["/bin/server"], "a new entry point drops the image's CMD");
        let bare = PulledImage { entrypoint: vec![], cmd: vec![], ..image() };
        assert!(plan(&bare, &definition(serde_json::json!({})), None, "r").is_err());
    }

    #[test]
    fn environments_merge_image_definition_override_platform() {
        let d = definition(serde_json::json!({
            "environment": [{"name": "MODE", "value": "def"}, {"name": "AWS_REGION", "value": "mine"}],
            "workingDirectory": "/srv"
        }));
        let o = ContainerOverride {
            name: Some("web".into()),
            command: None,
            environment: Some(vec![KeyValue::new("EXTRA", "1")]),
            cpu: None,
            memory: None,
            memory_reservation: None,
        };
        let l = plan(&image(), &d, Some(&o), "eu-west-1").unwrap();
        let get = |k: &str| l.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("MODE"), Some("def"));
        assert_eq!(get("EXTRA"), Some("1"));
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(get("AWS_DEFAULT_REGION"), Some("eu-west-1"));
        assert_eq!(l.working_dir.as_deref(), Some("/srv"));
    }

    #[test]
    fn users_are_read_as_docker_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(user_ids(&root, "app"), Ok((1000, 1001)));
        assert_eq!(user_ids(&root, "1000"), Ok((1000, 1001)), "a known uid gets its entry's group");
        assert_eq!(user_ids(&root, "4242"), Ok((4242, 0)), "an unknown uid gets group 0");
        assert_eq!(user_ids(&root, "app:staff"), Ok((1000, 50)));
        assert_eq!(user_ids(&root, "7:8"), Ok((7, 8)));
        assert_eq!(
            user_ids(&root, "nosuch"),
            Err("unable to find user nosuch: no matching entries in passwd file".into())
        );
        assert_eq!(
            user_ids(&root, "app:nosuch"),
            Err("unable to find group nosuch: no matching entries in group file".into())
        );
        // A passwd that links out of the image is not read.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/passwd")).unwrap();
        assert!(user_ids(&root, "root").is_err(), "the host's passwd is not the image's");
    }
}
