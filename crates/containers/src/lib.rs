//! ECS with the Fargate launch type, on this node's own capacity: clusters
//! (a `default` one made on first use), task definitions with Fargate's
//! rules (`rules`) and bind-mount volumes (`volumes`), tasks and the lifecycle AWS reports for them
//! (`engine`), container health checks (`health`) and dependencies
//! (`dependencies`), services and their scheduler (`services`), and the
//! node's CPU and memory that tasks are placed against. Tasks' images come
//! through the [`TaskImages`] trait, which the binary implements over the
//! registry. Around running tasks: what they reach inside their network
//! namespace (`metadata`, and other tasks' published ports through
//! `mesh`), the `awslogs` driver, their metering and the retention of
//! stopped tasks.
//!
//! This crate owns ECS's rules and state. It must not speak HTTP (the
//! front end is `nimbus-api`'s `ecs` module; the in-task endpoints are the
//! one exception) nor store anything but through `nimbus_store::EcsMeta`
//! and `nimbus_store::TaskUsageMeta`.

mod awslogs;
mod dependencies;
mod engine;
pub mod health;
mod mesh;
mod metadata;
mod metering;
mod retention;
pub mod rules;
pub mod runtime;
mod sandboxed;
mod services;
pub mod types;
pub mod volumes;

use std::net::SocketAddr;
use std::sync::Arc;

pub use engine::{
    Capacity, DescribedTasks, Ecs, ListTaskDefinitions, ListTasks, Page, RegisterTaskDefinition, RunTask,
    RunTaskOutcome,
};
pub use mesh::Mesh;
pub use sandboxed::SandboxRuntime;
pub use services::{CreateService, DeploymentConfiguration, Service, ServiceRecord, UpdateService};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ECS's `ClientException`: the request names something that does not
    /// exist or breaks a rule of the task definition.
    #[error("{0}")]
    Client(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("Cluster not found.")]
    ClusterNotFound,
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices,
    #[error("The specified resource could not be found.")]
    ResourceNotFound,
    #[error("Service not found.")]
    ServiceNotFound,
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    #[error("store: {0}")]
    Store(String),
}

impl From<nimbus_store::Error> for Error {
    fn from(e: nimbus_store::Error) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Store(e.to_string())
    }
}

/// A pulled image: its flattened root and what its configuration says.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Held while a task runs on it.
    pub root: nimbus_images::Root,
    /// The manifest digest (`sha256:…`), reported as the container's `imageDigest`.
    pub digest: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// The image's `USER`, if it has one.
    pub user: Option<String>,
}

/// Why an image could not be pulled; the text follows
/// `CannotPullContainerError: ` in what the task reports.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PullError(pub String);

/// Where tasks' images come from (the binary wires the registry and the
/// image unpacker behind it).
#[async_trait::async_trait]
pub trait TaskImages: Send + Sync {
    async fn pull(&self, image: &str) -> Result<PulledImage, PullError>;
}

/// Session credentials a task's containers get from the credentials
/// endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Epoch seconds.
    pub expiration: i64,
}

/// Mints credentials that the node's API accepts, for `subject` (the
/// task's role ARN, else the task's ARN).
pub trait TaskCredentials: Send + Sync {
    fn issue(&self, subject: &str) -> SessionKeys;
}

/// What the node gives running tasks beyond their containers: credentials
/// and the API to call with them, the log store of the `awslogs` driver,
/// where metered tasks are recorded, and the clock stopped tasks expire by.
#[derive(Clone)]
pub struct Platform {
    pub credentials: Arc<dyn TaskCredentials>,
    /// The node's API, forwarded into each task's network namespace.
    pub api: SocketAddr,
    /// Connections all sandboxes together may hold to the node's API (the
    /// functions' too): part of the listener's.
    pub api_connections: Arc<tokio::sync::Semaphore>,
    pub logs: Arc<nimbus_logs::Logs>,
    pub usage: Arc<dyn nimbus_store::TaskUsageMeta>,
    pub clock: nimbus_core::clock::Clock,
}
