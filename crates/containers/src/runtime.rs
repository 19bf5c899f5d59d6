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

use crate::types::{ContainerDefinition, ContainerOverride, KeyValue};
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
    /// Where its stdout and stderr lines go (`awslogs`); else to a file of
    /// the task's directory.
    pub log: Option<crate::awslogs::LogSink>,
}

/// A task, ready to start: its size (the cgroup's limits) and containers.
#[derive(Clone)]
pub struct TaskLaunch {
    pub task_id: String,
    pub cpu: u32,
    pub memory_mib: u32,
    pub containers: Vec<ContainerLaunch>,
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
    Ok(ContainerLaunch {
        name: def.name.clone(),
        root: image.root.clone(),
        argv,
        env,
        working_dir: def.working_directory.clone().or_else(|| image.working_dir.clone()),
        ports: def.port_mappings.iter().map(|p| p.container_port).collect(),
        log: None,
    })
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
}
