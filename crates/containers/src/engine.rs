//! The ECS engine: every cluster, task definition and task in memory,
//! written through to the store before a change is answered, and one tokio
//! task per starting task that walks it through the lifecycle AWS reports
//! (`PROVISIONING → PENDING → ACTIVATING → … → STOPPED`, `version` + 1 and
//! a durable write per step). The driver also runs its containers' health
//! probes (`health`) and starts those whose `dependsOn` conditions it sees
//! met (`dependencies`).
//!
//! Restart safety: a task that had not stopped when the node went down is
//! reported `STOPPED` at the next start (stop code `TerminationNotice`,
//! with a reason saying so); tasks are not re-adopted. A service's
//! scheduler (`services`) then starts new ones.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::Account;
use nimbus_store::{EcsMeta, EcsWrite};
use serde::Deserialize;
use tokio::sync::{Mutex, Notify};

use crate::dependencies::{self, readiness, Readiness};
use crate::health::{self, task_health, Probe};
use crate::rules;
use crate::runtime::{self, ContainerExit, ContainerLaunch, RunningTask, StopSignal, TaskLaunch, TaskRuntime};
use crate::services::{put_service, ServiceRecord};
use crate::types::{
    Attachment, Cluster, Container, ContainerDefinition, Failure, KeyValue, Tag, Task, TaskDefinition,
    TaskDefinitionRecord, TaskOverride, TaskRecord,
};
use crate::{awslogs, mesh, metadata, volumes, Error, Platform, TaskImages};

/// What the node offers tasks: CPU units (1024 per core) and MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cpu: u32,
    pub memory_mib: u32,
}

/// The lifecycle in order; a task only ever moves forward in it.
const STATUSES: [&str; 8] =
    ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"];

fn rank(status: &str) -> usize {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

const DEFAULT_CLUSTER: &str = "default";
const RUN_TASK_MAX: u32 = 10;
/// Fargate's default `stopTimeout`, in seconds.
const DEFAULT_STOP_TIMEOUT_S: u32 = 30;

/// RegisterTaskDefinition's input, in ECS's field names.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterTaskDefinition {
    pub family: String,
    pub container_definitions: Vec<ContainerDefinition>,
    pub network_mode: Option<String>,
    #[serde(default)]
    pub requires_compatibilities: Vec<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub ephemeral_storage: Option<serde_json::Value>,
    pub runtime_platform: Option<serde_json::Value>,
    #[serde(default)]
    pub volumes: Vec<serde_json::Value>,
    #[serde(default)]
    pub placement_constraints: Vec<serde_json::Value>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Refused when set (see `rules::check_task_modes`), so never stored.
    pub ipc_mode: Option<String>,
    pub pid_mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsVpcConfiguration {
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    pub assign_public_ip: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    pub awsvpc_configuration: Option<AwsVpcConfiguration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderItem {
    pub capacity_provider: String,
}

/// RunTask's input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    pub cluster: Option<String>,
    pub task_definition: String,
    pub count: Option<u32>,
    pub launch_type: Option<String>,
    #[serde(default)]
    pub capacity_provider_strategy: Vec<CapacityProviderItem>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub overrides: Option<TaskOverride>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// `TASK_DEFINITION` adds the definition's tags to the task's;
    /// `SERVICE` is for a service's tasks only.
    pub propagate_tags: Option<String>,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunTaskOutcome {
    pub tasks: Vec<Task>,
    pub failures: Vec<Failure>,
}

/// ListTasks' filters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasks {
    pub cluster: Option<String>,
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub service_name: Option<String>,
    pub desired_status: Option<String>,
    pub launch_type: Option<String>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

/// ListTaskDefinitions' filters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitions {
    pub family_prefix: Option<String>,
    pub status: Option<String>,
    pub sort: Option<String>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

/// One page of a listing; the token is the key of the page's last item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub next_token: Option<String>,
}

/// Pages a listing of `(sort key, item)` in key order (descending with
/// `descending`). The token is the page's last key, encoded: the next page
/// starts after it whether or not its item is still there, so items removed
/// between pages (tasks stopping, a deregistration loop) move nothing.
pub(crate) fn page(
    items: Vec<(String, String)>,
    descending: bool,
    max: Option<u32>,
    token: Option<&str>,
) -> Result<Page, Error> {
    use base64::Engine as _;
    let max = match max {
        None => 100,
        Some(n @ 1..=100) => n as usize,
        Some(_) => return Err(Error::InvalidParameter("maxResults must be between 1 and 100.".into())),
    };
    let codec = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let after = token
        .map(|t| codec.decode(t).ok().and_then(|key| String::from_utf8(key).ok()))
        .map(|key| key.ok_or_else(|| Error::InvalidParameter("Invalid nextToken.".into())))
        .transpose()?;
    let (page, next) = nimbus_core::paging::after_key(items, |(key, _)| key.clone(), after.as_deref(), descending, max);
    Ok(Page { items: page.into_iter().map(|(_, item)| item).collect(), next_token: next.map(|k| codec.encode(k)) })
}

#[derive(Debug, Clone)]
pub struct DescribedTasks {
    pub tasks: Vec<(Task, Vec<Tag>)>,
    pub failures: Vec<Failure>,
}

#[derive(Default)]
pub(crate) struct State {
    /// By name.
    pub(crate) clusters: BTreeMap<String, Cluster>,
    /// Revisions in order: revision `n` is at `n - 1` (revisions are never
    /// removed, so numbers are never reused).
    families: BTreeMap<String, Vec<TaskDefinitionRecord>>,
    /// By task id.
    pub(crate) tasks: BTreeMap<String, TaskRecord>,
    /// By service ARN (`services`).
    pub(crate) services: BTreeMap<String, ServiceRecord>,
    /// The task network's host number given out last (addresses go round,
    /// so one is not given again while its last task's namespace may
    /// still be going away).
    last_address: u32,
}

pub(crate) struct Inner {
    pub(crate) account: Account,
    pub(crate) store: Arc<dyn EcsMeta>,
    images: Arc<dyn TaskImages>,
    /// `None`: tasks whose images are pulled end with CannotStartContainerError.
    runtime: Option<Arc<dyn TaskRuntime>>,
    capacity: Capacity,
    pub(crate) state: Mutex<State>,
    /// Per running (or starting) task: the wake-up StopTask gives its driver.
    stops: Mutex<HashMap<String, Arc<Notify>>>,
    /// What running tasks get from the node; without it tasks only run.
    platform: std::sync::OnceLock<Platform>,
    /// Woken when a task stops (the retention of stopped tasks).
    stopped: Notify,
    /// Wakes the service scheduler: a task changed status or health, or a
    /// service changed.
    pub(crate) scheduler: Arc<Notify>,
    /// Set when the node stops: services start no task any more.
    pub(crate) node_stopping: std::sync::atomic::AtomicBool,
}

/// The ECS engine. Cheap to clone.
#[derive(Clone)]
pub struct Ecs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now() -> f64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

fn put_task(r: &TaskRecord) -> Result<EcsWrite, Error> {
    Ok(EcsWrite::PutTask { arn: r.task.task_arn.clone(), doc: serde_json::to_string(r)? })
}

fn put_cluster(c: &Cluster) -> Result<EcsWrite, Error> {
    Ok(EcsWrite::PutCluster { arn: c.cluster_arn.clone(), doc: serde_json::to_string(c)? })
}

fn put_definition(r: &TaskDefinitionRecord) -> Result<EcsWrite, Error> {
    Ok(EcsWrite::PutTaskDefinition {
        family: r.definition.family.clone(),
        revision: r.definition.revision,
        doc: serde_json::to_string(r)?,
    })
}

/// The last `/`-separated part of an ARN, or the value itself.
pub(crate) fn after_slash(value: &str) -> &str {
    value.rsplit('/').next().unwrap_or(value)
}

impl Ecs {
    /// Loads the stored state; tasks a stopped node left unfinished are
    /// reported stopped (see the module's docs), and the service scheduler
    /// starts (it brings services back to their desired counts).
    pub async fn open(
        account: Account,
        store: Arc<dyn EcsMeta>,
        images: Arc<dyn TaskImages>,
        runtime: Option<Arc<dyn TaskRuntime>>,
        capacity: Capacity,
        node_last_alive: Option<f64>,
    ) -> Result<Self, Error> {
        let docs = store.ecs_load().await?;
        let mut state = State::default();
        for doc in &docs.clusters {
            let c: Cluster = serde_json::from_str(doc)?;
            state.clusters.insert(c.cluster_name.clone(), c);
        }
        for doc in &docs.task_definitions {
            let r: TaskDefinitionRecord = serde_json::from_str(doc)?;
            state.families.entry(r.definition.family.clone()).or_default().push(r);
        }
        let mut writes = Vec::new();
        for doc in &docs.tasks {
            let mut r: TaskRecord = serde_json::from_str(doc)?;
            if !r.is_stopped() {
                stop_at_restart(&mut r, node_last_alive);
                writes.push(put_task(&r)?);
            }
            state.tasks.insert(after_slash(&r.task.task_arn).to_string(), r);
        }
        for doc in &docs.services {
            let mut r: ServiceRecord = serde_json::from_str(doc)?;
            r.forget_tasks();
            state.services.insert(r.service.service_arn.clone(), r);
        }
        if !writes.is_empty() {
            tracing::warn!(tasks = writes.len(), "tasks that ran through a restart are reported STOPPED");
            store.ecs_apply(&writes).await?;
        }
        let inner = Inner {
            account,
            store,
            images,
            runtime,
            capacity,
            state: Mutex::new(state),
            stops: Mutex::default(),
            platform: std::sync::OnceLock::new(),
            stopped: Notify::new(),
            scheduler: Arc::default(),
            node_stopping: Default::default(),
        };
        let ecs = Self { inner: Arc::new(inner) };
        crate::services::spawn_scheduler(&ecs);
        Ok(ecs)
    }

    /// Gives tasks started from now on the node's endpoints, `awslogs` and
    /// metering (once; a second call is ignored).
    pub fn set_platform(&self, platform: Platform) {
        let _ = self.inner.platform.set(platform);
    }

    pub(crate) fn platform(&self) -> Option<&Platform> {
        self.inner.platform.get()
    }

    /// A task and what its definition says of its containers and role.
    pub(crate) async fn snapshot(&self, id: &str) -> Option<(TaskRecord, (Vec<ContainerDefinition>, Option<String>))> {
        let state = self.inner.state.lock().await;
        let record = state.tasks.get(id)?;
        let d = &self.find_definition(&state, &record.task.task_definition_arn)?.definition;
        Some((record.clone(), (d.container_definitions.clone(), d.task_role_arn.clone())))
    }

    /// The role task `id`'s containers were given (its override, else its
    /// definition's), for whoever asks whom its credentials name.
    pub async fn task_role(&self, id: &str) -> Option<String> {
        let (record, (_, role)) = self.snapshot(id).await?;
        record.task.overrides.task_role_arn.or(role)
    }

    /// Every stopped task, the next time one expires after `now_ms` having
    /// deleted those stopped `keep_ms` ago or longer.
    pub(crate) async fn expire_stopped(
        &self,
        now_ms: i64,
        keep_ms: i64,
    ) -> Result<(Vec<TaskRecord>, Option<i64>), Error> {
        let mut state = self.inner.state.lock().await;
        let expiry =
            |r: &TaskRecord| r.task.stopped_at.filter(|_| r.is_stopped()).map(|at| (at * 1000.0) as i64 + keep_ms);
        let due: Vec<String> = state
            .tasks
            .iter()
            .filter(|(_, r)| expiry(r).is_some_and(|t| t <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        let writes: Vec<EcsWrite> =
            due.iter().map(|id| EcsWrite::DeleteTask { arn: state.tasks[id].task.task_arn.clone() }).collect();
        if !writes.is_empty() {
            self.inner.store.ecs_apply(&writes).await?;
            tracing::debug!(tasks = writes.len(), "stopped tasks expired");
        }
        for id in &due {
            state.tasks.remove(id);
        }
        let stopped: Vec<TaskRecord> = state.tasks.values().filter(|r| r.is_stopped()).cloned().collect();
        let next = stopped.iter().filter_map(expiry).min();
        Ok((stopped, next))
    }

    /// Resolves when a task has stopped since the returned future was made.
    pub(crate) fn task_stopped(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.stopped.notified()
    }

    pub(crate) fn arn(&self, resource: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{resource}", self.inner.account.region, self.inner.account.id)
    }

    // ---- clusters ----

    pub async fn create_cluster(
        &self,
        name: Option<&str>,
        tags: Vec<Tag>,
        settings: &[serde_json::Value],
    ) -> Result<Cluster, Error> {
        let name = name.unwrap_or(DEFAULT_CLUSTER);
        rules::check_cluster_name(name)?;
        rules::check_cluster_settings(settings)?;
        let mut state = self.inner.state.lock().await;
        if let Some(c) = state.clusters.get(name) {
            return Ok(self.counted(&state, c));
        }
        let mut cluster = self.new_cluster(name, tags);
        merge_settings(&mut cluster.settings, settings);
        self.inner.store.ecs_apply(&[put_cluster(&cluster)?]).await?;
        state.clusters.insert(name.to_string(), cluster.clone());
        Ok(cluster)
    }

    fn new_cluster(&self, name: &str, tags: Vec<Tag>) -> Cluster {
        Cluster {
            cluster_arn: self.arn(&format!("cluster/{name}")),
            cluster_name: name.to_string(),
            status: "ACTIVE".into(),
            tags,
            settings: vec![serde_json::json!({"name": "containerInsights", "value": "disabled"})],
            registered_container_instances_count: 0,
            running_tasks_count: 0,
            pending_tasks_count: 0,
            active_services_count: 0,
        }
    }

    /// Changes a cluster's settings (`containerInsights`, which is recorded
    /// and reported: this node makes no Container Insights metrics).
    pub async fn update_cluster_settings(
        &self,
        reference: Option<&str>,
        settings: &[serde_json::Value],
    ) -> Result<Cluster, Error> {
        rules::check_cluster_settings(settings)?;
        let mut state = self.inner.state.lock().await;
        // An update does not make the default cluster, as a task would.
        let name = self.named_cluster(reference)?;
        let mut cluster = state.clusters.get(&name).ok_or(Error::ClusterNotFound)?.clone();
        merge_settings(&mut cluster.settings, settings);
        self.inner.store.ecs_apply(&[put_cluster(&cluster)?]).await?;
        state.clusters.insert(name, cluster.clone());
        Ok(self.counted(&state, &cluster))
    }

    /// The cluster's name for a name or ARN; `default` is made on first use.
    pub(crate) async fn cluster_name(&self, state: &mut State, reference: Option<&str>) -> Result<String, Error> {
        let name = self.named_cluster(reference)?;
        if state.clusters.contains_key(&name) {
            return Ok(name.to_string());
        }
        if name != DEFAULT_CLUSTER {
            return Err(Error::ClusterNotFound);
        }
        let cluster = self.new_cluster(&name, Vec::new());
        self.inner.store.ecs_apply(&[put_cluster(&cluster)?]).await?;
        state.clusters.insert(name.clone(), cluster);
        Ok(name)
    }

    /// The cluster name a name or ARN gives (`default` when none is given).
    fn named_cluster(&self, reference: Option<&str>) -> Result<String, Error> {
        Ok(match reference {
            None => DEFAULT_CLUSTER,
            Some(r) if r.starts_with("arn:") => r.strip_prefix(&self.arn("cluster/")).ok_or(Error::ClusterNotFound)?,
            Some(r) => r,
        }
        .to_string())
    }

    /// The cluster with its task counts filled in.
    fn counted(&self, state: &State, c: &Cluster) -> Cluster {
        let mut c = c.clone();
        let tasks = state.tasks.values().filter(|t| t.task.cluster_arn == c.cluster_arn && !t.is_stopped());
        let (running, pending): (Vec<_>, Vec<_>) = tasks.partition(|t| t.task.last_status == "RUNNING");
        c.running_tasks_count = running.len() as u32;
        c.pending_tasks_count = pending.len() as u32;
        c.active_services_count = state
            .services
            .values()
            .filter(|s| s.service.cluster_arn == c.cluster_arn && s.service.status == "ACTIVE")
            .count() as u32;
        c
    }

    pub async fn describe_clusters(&self, references: &[String]) -> Result<(Vec<Cluster>, Vec<Failure>), Error> {
        let mut state = self.inner.state.lock().await;
        let references = if references.is_empty() { vec![DEFAULT_CLUSTER.to_string()] } else { references.to_vec() };
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        for r in &references {
            match self.cluster_name(&mut state, Some(r)).await {
                Ok(name) => found.push(self.counted(&state, &state.clusters[&name])),
                Err(Error::ClusterNotFound) => {
                    let arn = if r.starts_with("arn:") { r.clone() } else { self.arn(&format!("cluster/{r}")) };
                    failures.push(Failure::missing(&arn));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((found, failures))
    }

    pub async fn list_clusters(&self, max: Option<u32>, token: Option<&str>) -> Result<Page, Error> {
        let state = self.inner.state.lock().await;
        let clusters = state.clusters.values().map(|c| (c.cluster_name.clone(), c.cluster_arn.clone())).collect();
        page(clusters, false, max, token)
    }

    pub async fn delete_cluster(&self, reference: &str) -> Result<Cluster, Error> {
        let mut state = self.inner.state.lock().await;
        let name = self.cluster_name(&mut state, Some(reference)).await?;
        let cluster = self.counted(&state, &state.clusters[&name]);
        if state
            .services
            .values()
            .any(|s| s.service.cluster_arn == cluster.cluster_arn && s.service.status != "INACTIVE")
        {
            return Err(Error::ClusterContainsServices);
        }
        if cluster.running_tasks_count + cluster.pending_tasks_count > 0 {
            return Err(Error::ClusterContainsTasks);
        }
        self.inner.store.ecs_apply(&[EcsWrite::DeleteCluster { arn: cluster.cluster_arn.clone() }]).await?;
        state.clusters.remove(&name);
        Ok(Cluster { status: "INACTIVE".into(), ..cluster })
    }

    // ---- task definitions ----

    pub async fn register_task_definition(&self, input: RegisterTaskDefinition) -> Result<TaskDefinitionRecord, Error> {
        let definition = self.checked_definition(input.clone())?;
        let mut state = self.inner.state.lock().await;
        let revisions = state.families.entry(input.family.clone()).or_default();
        let revision = revisions.len() as u32 + 1;
        let definition = TaskDefinition {
            revision,
            task_definition_arn: self.arn(&format!("task-definition/{}:{revision}", input.family)),
            ..definition
        };
        let record = TaskDefinitionRecord { definition, tags: input.tags };
        self.inner.store.ecs_apply(&[put_definition(&record)?]).await?;
        revisions.push(record.clone());
        Ok(record)
    }

    /// The definition a registration makes, before it has a revision.
    fn checked_definition(&self, input: RegisterTaskDefinition) -> Result<TaskDefinition, Error> {
        rules::check_name("Family", &input.family)?;
        if input.container_definitions.is_empty() {
            return Err(Error::Client("Container list cannot be empty.".into()));
        }
        let fargate = input.requires_compatibilities.iter().any(|c| c == "FARGATE");
        if let Some(c) = input.requires_compatibilities.iter().find(|c| c.as_str() != "FARGATE") {
            return Err(Error::Client(format!(
                "Compatibility '{c}' needs container instances, which Nimbus offers only in cluster mode (not yet available); use FARGATE."
            )));
        }
        rules::check_fargate_network(input.network_mode.as_deref(), fargate)?;
        rules::check_task_modes(input.ipc_mode.as_deref(), input.pid_mode.as_deref())?;
        let mut names = Vec::new();
        for c in &input.container_definitions {
            rules::check_container(c)?;
            if let Some(check) = &c.health_check {
                health::parse(check).map_err(Error::Client)?;
            }
            if names.contains(&c.name.as_str()) {
                return Err(Error::Client(format!("Duplicate container name '{}' in the task definition.", c.name)));
            }
            names.push(&c.name);
        }
        dependencies::check(&input.container_definitions).map_err(Error::Client)?;
        if !input.container_definitions.iter().any(|c| c.essential) {
            return Err(Error::Client("A task definition must have at least one essential container.".into()));
        }
        rules::check_ports(&input.container_definitions)?;
        volumes::check(&input.volumes, &input.container_definitions)?;
        let cpu = match input.cpu.as_deref() {
            Some(v) => rules::normalise_cpu(v)?,
            None => return Err(Error::Client("Fargate requires that 'cpu' be defined at the task level.".into())),
        };
        let memory = match input.memory.as_deref() {
            Some(v) => rules::normalise_memory(v)?,
            None => return Err(Error::Client("Fargate requires that 'memory' be defined at the task level.".into())),
        };
        rules::check_fargate_size(cpu, memory)?;
        // Summed wide: three containers near u32::MAX each must not wrap to a small total.
        let containers_memory: u64 =
            input.container_definitions.iter().map(|c| u64::from(c.memory.or(c.memory_reservation).unwrap_or(0))).sum();
        if containers_memory > u64::from(memory) {
            return Err(Error::Client(format!(
                "The sum of the containers' memory ({containers_memory} MiB) exceeds the task's memory ({memory} MiB)."
            )));
        }
        if let Some(size) = input.ephemeral_storage.as_ref().and_then(|e| e.get("sizeInGiB")).and_then(|v| v.as_i64()) {
            if !(21..=200).contains(&size) {
                return Err(Error::Client(format!(
                    "The ephemeral storage size must be between 21 and 200 GiB; got {size}."
                )));
            }
        }
        let mut requires = input.requires_compatibilities;
        requires.dedup();
        Ok(TaskDefinition {
            task_definition_arn: String::new(),
            family: input.family,
            revision: 0,
            status: "ACTIVE".into(),
            container_definitions: input.container_definitions,
            network_mode: "awsvpc".into(),
            requires_compatibilities: requires,
            compatibilities: vec!["EC2".into(), "FARGATE".into()],
            cpu: cpu.to_string(),
            memory: memory.to_string(),
            task_role_arn: input.task_role_arn,
            execution_role_arn: input.execution_role_arn,
            ephemeral_storage: input.ephemeral_storage,
            runtime_platform: input.runtime_platform,
            volumes: input.volumes,
            placement_constraints: input.placement_constraints,
            requires_attributes: Vec::new(),
            registered_at: now(),
            deregistered_at: None,
            delete_requested_at: None,
        })
    }

    /// `family` (its latest ACTIVE revision), `family:revision` or an ARN.
    pub(crate) fn find_definition<'s>(&self, state: &'s State, reference: &str) -> Option<&'s TaskDefinitionRecord> {
        let short = reference.strip_prefix(&self.arn("task-definition/")).unwrap_or(reference);
        let (family, revision) = match short.split_once(':') {
            Some((f, r)) => (f, Some(r.parse::<u32>().ok()?)),
            None => (short, None),
        };
        let revisions = state.families.get(family)?;
        match revision {
            Some(n) => revisions.get((n as usize).checked_sub(1)?),
            None => revisions.iter().rev().find(|r| r.definition.status == "ACTIVE"),
        }
    }

    pub async fn describe_task_definition(&self, reference: &str) -> Result<TaskDefinitionRecord, Error> {
        let state = self.inner.state.lock().await;
        self.find_definition(&state, reference)
            .cloned()
            .ok_or_else(|| Error::Client("Unable to describe task definition.".into()))
    }

    pub async fn list_task_definitions(&self, q: &ListTaskDefinitions) -> Result<Page, Error> {
        let state = self.inner.state.lock().await;
        let status = q.status.as_deref().unwrap_or("ACTIVE");
        // Family, then revision: keyed so that revision 10 sorts after 9.
        let mut arns: Vec<(String, String)> = state
            .families
            .iter()
            .filter(|(f, _)| q.family_prefix.as_deref().is_none_or(|p| p == f.as_str()))
            .flat_map(|(_, revs)| revs.iter())
            .filter(|r| r.definition.status == status)
            .map(|r| {
                let d = &r.definition;
                (format!("{}\n{:010}", d.family, d.revision), d.task_definition_arn.clone())
            })
            .collect();
        let descending = q.sort.as_deref() == Some("DESC");
        if descending {
            arns.reverse();
        }
        page(arns, descending, q.max_results, q.next_token.as_deref())
    }

    pub async fn list_task_definition_families(
        &self,
        prefix: Option<&str>,
        status: Option<&str>,
        max: Option<u32>,
        token: Option<&str>,
    ) -> Result<Page, Error> {
        let state = self.inner.state.lock().await;
        let families = state
            .families
            .iter()
            .filter(|(f, _)| prefix.is_none_or(|p| f.starts_with(p)))
            .filter(|(_, revs)| {
                let active = revs.iter().any(|r| r.definition.status == "ACTIVE");
                match status.unwrap_or("ACTIVE") {
                    "ACTIVE" => active,
                    "INACTIVE" => !active,
                    _ => true,
                }
            })
            .map(|(f, _)| (f.clone(), f.clone()))
            .collect();
        page(families, false, max, token)
    }

    pub async fn deregister_task_definition(&self, reference: &str) -> Result<TaskDefinition, Error> {
        let mut state = self.inner.state.lock().await;
        if !reference.contains(':') {
            return Err(Error::Client(
                "Invalid revision number. A revision is required: family:revision or the full ARN.".into(),
            ));
        }
        let mut record = self
            .find_definition(&state, reference)
            .cloned()
            .ok_or_else(|| Error::Client("The specified task definition does not exist.".into()))?;
        if record.definition.status == "ACTIVE" {
            record.definition.status = "INACTIVE".into();
            record.definition.deregistered_at = Some(now());
            self.inner.store.ecs_apply(&[put_definition(&record)?]).await?;
            self.replace_definition(&mut state, &record);
        }
        Ok(record.definition)
    }

    fn replace_definition(&self, state: &mut State, record: &TaskDefinitionRecord) {
        let d = &record.definition;
        if let Some(slot) = state.families.get_mut(&d.family).and_then(|revs| revs.get_mut(d.revision as usize - 1)) {
            *slot = record.clone();
        }
    }

    /// Marks INACTIVE revisions `DELETE_IN_PROGRESS` (kept, so that their
    /// numbers are never reused); others are failures, as on AWS.
    pub async fn delete_task_definitions(
        &self,
        references: &[String],
    ) -> Result<(Vec<TaskDefinition>, Vec<Failure>), Error> {
        let mut state = self.inner.state.lock().await;
        let (mut deleted, mut failures, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let mut records = Vec::new();
        for r in references {
            let failure = |reason: &str| Failure { arn: Some(r.clone()), reason: reason.into(), detail: None };
            match self.find_definition(&state, r).filter(|_| r.contains(':')) {
                None => failures.push(failure("The specified task definition does not exist.")),
                Some(rec) if rec.definition.status == "ACTIVE" => {
                    failures.push(failure("The specified task definition must be INACTIVE before it can be deleted."))
                }
                Some(rec) => {
                    let mut rec = rec.clone();
                    if rec.definition.status == "INACTIVE" {
                        rec.definition.status = "DELETE_IN_PROGRESS".into();
                        rec.definition.delete_requested_at = Some(now());
                        writes.push(put_definition(&rec)?);
                    }
                    deleted.push(rec.definition.clone());
                    records.push(rec);
                }
            }
        }
        self.inner.store.ecs_apply(&writes).await?;
        for rec in &records {
            self.replace_definition(&mut state, rec);
        }
        Ok((deleted, failures))
    }

    // ---- tasks ----

    pub async fn run_task(&self, input: RunTask) -> Result<RunTaskOutcome, Error> {
        self.start_tasks(input, false).await
    }

    /// RunTask; for a service's scheduler (`for_service`), also of an
    /// INACTIVE revision: as on AWS, a service on a deregistered task
    /// definition still scales and replaces its tasks.
    pub(crate) async fn start_tasks(&self, mut input: RunTask, for_service: bool) -> Result<RunTaskOutcome, Error> {
        if input.propagate_tags.as_deref() == Some("SERVICE") && !for_service {
            return Err(Error::InvalidParameter(
                "The SERVICE option for propagateTags is only valid for tasks started by a service.".into(),
            ));
        }
        let mut state = self.inner.state.lock().await;
        let cluster = self.cluster_name(&mut state, input.cluster.as_deref()).await?;
        let cluster_arn = state.clusters[&cluster].cluster_arn.clone();
        check_launch(&input)?;
        let count = input.count.unwrap_or(1);
        if !(1..=RUN_TASK_MAX).contains(&count) {
            return Err(Error::InvalidParameter(format!("count must be between 1 and {RUN_TASK_MAX}; got {count}.")));
        }
        let record = self
            .find_definition(&state, &input.task_definition)
            .cloned()
            .ok_or_else(|| Error::InvalidParameter("TaskDefinition not found.".into()))?;
        if input.propagate_tags.as_deref() == Some("TASK_DEFINITION") {
            // The request's own tags win over the definition's of the same key.
            let own: Vec<String> = input.tags.iter().map(|t| t.key.clone()).collect();
            input.tags.extend(record.tags.iter().filter(|t| !own.contains(&t.key)).cloned());
            check_tags(&input.tags)?;
        }
        let definition = record.definition;
        if definition.status != "ACTIVE" && !for_service {
            return Err(Error::InvalidParameter("TaskDefinition is inactive.".into()));
        }
        let subnet = check_network(input.network_configuration.as_ref())?;
        let overrides = input.overrides.clone().unwrap_or_default();
        let (cpu, memory) = task_size(&definition, &overrides)?;
        if let Some(token) = input.client_token.as_deref() {
            let earlier: Vec<Task> = state
                .tasks
                .values()
                .filter(|t| t.client_token.as_deref() == Some(token) && t.task.cluster_arn == cluster_arn)
                .map(|t| t.task.clone())
                .collect();
            if !earlier.is_empty() {
                return Ok(RunTaskOutcome { tasks: earlier, failures: Vec::new() });
            }
        }
        let (mut used_cpu, mut used_memory) = state
            .tasks
            .values()
            .filter(|t| !t.is_stopped())
            .fold((0u64, 0u64), |(c, m), t| (c + u64::from(t.cpu), m + u64::from(t.memory_mib)));
        let (mut records, mut failures) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let reason = if used_cpu + u64::from(cpu) > u64::from(self.inner.capacity.cpu) {
                "RESOURCE:CPU"
            } else if used_memory + u64::from(memory) > u64::from(self.inner.capacity.memory_mib) {
                "RESOURCE:MEMORY"
            } else {
                used_cpu += u64::from(cpu);
                used_memory += u64::from(memory);
                records.push(self.new_task(
                    &cluster,
                    &cluster_arn,
                    &definition,
                    &input,
                    &overrides,
                    subnet.as_str(),
                    (cpu, memory),
                ));
                continue;
            };
            failures.push(Failure { arn: None, reason: reason.into(), detail: None });
        }
        let writes = records.iter().map(put_task).collect::<Result<Vec<_>, _>>()?;
        self.inner.store.ecs_apply(&writes).await?;
        let mut tasks = Vec::new();
        for r in records {
            let id = after_slash(&r.task.task_arn).to_string();
            tasks.push(r.task.clone());
            state.tasks.insert(id.clone(), r);
            let engine = self.clone();
            tokio::spawn(async move { engine.start(&id).await });
        }
        Ok(RunTaskOutcome { tasks, failures })
    }

    #[allow(clippy::too_many_arguments)]
    fn new_task(
        &self,
        cluster: &str,
        cluster_arn: &str,
        definition: &TaskDefinition,
        input: &RunTask,
        overrides: &TaskOverride,
        subnet: &str,
        (cpu, memory): (u32, u32),
    ) -> TaskRecord {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let task_arn = self.arn(&format!("task/{cluster}/{id}"));
        let attachment_id = uuid::Uuid::new_v4().to_string();
        let containers = definition
            .container_definitions
            .iter()
            .map(|c| {
                let o = overrides.container_overrides.iter().find(|o| o.name.as_deref() == Some(&c.name));
                Container {
                    container_arn: self.arn(&format!("container/{cluster}/{id}/{}", uuid::Uuid::new_v4())),
                    task_arn: task_arn.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_digest: None,
                    last_status: "PENDING".into(),
                    exit_code: None,
                    reason: None,
                    network_bindings: Vec::new(),
                    network_interfaces: vec![serde_json::json!({"attachmentId": attachment_id})],
                    health_status: "UNKNOWN".into(),
                    cpu: o.and_then(|o| o.cpu).unwrap_or(c.cpu).to_string(),
                    memory: o.and_then(|o| o.memory).or(c.memory).map(|m| m.to_string()),
                    memory_reservation: o
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation)
                        .map(|m| m.to_string()),
                }
            })
            .collect();
        let eni = format!("eni-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]);
        let task = Task {
            task_arn,
            cluster_arn: cluster_arn.to_string(),
            task_definition_arn: definition.task_definition_arn.clone(),
            last_status: "PROVISIONING".into(),
            desired_status: "RUNNING".into(),
            launch_type: "FARGATE".into(),
            platform_version: "1.4.0".into(),
            platform_family: "Linux".into(),
            availability_zone: format!("{}a", self.inner.account.region),
            cpu: cpu.to_string(),
            memory: memory.to_string(),
            version: 1,
            group: input.group.clone().unwrap_or_else(|| format!("family:{}", definition.family)),
            started_by: input.started_by.clone(),
            overrides: overrides.clone(),
            containers,
            attachments: vec![Attachment {
                id: attachment_id,
                kind: "ElasticNetworkInterface".into(),
                status: "PRECREATED".into(),
                details: vec![KeyValue::new("subnetId", subnet), KeyValue::new("networkInterfaceId", &eni)],
            }],
            health_status: "UNKNOWN".into(),
            ephemeral_storage: definition
                .ephemeral_storage
                .clone()
                .unwrap_or_else(|| serde_json::json!({"sizeInGiB": 20})),
            connectivity: None,
            created_at: now(),
            pull_started_at: None,
            pull_stopped_at: None,
            connectivity_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
        };
        TaskRecord { task, tags: input.tags.clone(), client_token: input.client_token.clone(), cpu, memory_mib: memory }
    }

    /// Moves a task forward to `status` (never back), applies `change`,
    /// and stores it; false if the task was already there or past it.
    async fn advance(&self, id: &str, status: &str, change: impl FnOnce(&mut TaskRecord)) -> bool {
        self.advance_with(id, status, |r, _| change(r)).await
    }

    /// [`Self::advance`], with the change given the node's state.
    async fn advance_with(&self, id: &str, status: &str, change: impl FnOnce(&mut TaskRecord, &mut State)) -> bool {
        let mut state = self.inner.state.lock().await;
        let Some(record) = state.tasks.get(id) else { return false };
        if rank(&record.task.last_status) >= rank(status) {
            return false;
        }
        let mut record = record.clone();
        record.task.last_status = status.to_string();
        record.task.version += 1;
        change(&mut record, &mut state);
        self.keep_task(&mut state, id, record, "a task's status").await
    }

    /// Writes a task's record through to the store, then keeps it and
    /// wakes the service scheduler; a failed write is logged and changes
    /// nothing.
    async fn keep_task(&self, state: &mut State, id: &str, record: TaskRecord, what: &str) -> bool {
        let stored = match put_task(&record) {
            Ok(w) => self.inner.store.ecs_apply(&[w]).await.map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::error!(task = id, error = %e, "storing {what} failed");
            return false;
        }
        state.tasks.insert(id.to_string(), record);
        self.inner.scheduler.notify_one();
        true
    }

    /// Walks a new task through provisioning and the image pull.
    async fn start(&self, id: &str) {
        let set_attachment =
            |r: &mut TaskRecord, s: &str| r.task.attachments.iter_mut().for_each(|a| a.status = s.into());
        // Its network interface is attached: it gets its private address.
        let mut address = None;
        self.advance_with(id, "PENDING", |r, state| {
            set_attachment(r, "ATTACHING");
            address = free_address(state);
            if let Some(a) = address {
                set_address(r, a);
            }
        })
        .await;
        let started = self
            .advance(id, "ACTIVATING", |r| {
                set_attachment(r, "ATTACHED");
                r.task.connectivity = Some("CONNECTED".into());
                r.task.connectivity_at = Some(now());
                r.task.pull_started_at = Some(now());
            })
            .await;
        if !started {
            return self.finish(id).await;
        }
        let Some((definitions, volumes, overrides)) = self.definition_of(id).await else { return };
        let mut pulled = Vec::new();
        for def in &definitions {
            match self.inner.images.pull(&def.image).await {
                Ok(image) => pulled.push(image),
                Err(e) => {
                    let reason = format!(
                        "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {}: {e}",
                        def.image
                    );
                    return self.fail_start(id, &reason).await;
                }
            }
        }
        {
            let mut state = self.inner.state.lock().await;
            if let Some(r) = state.tasks.get_mut(id) {
                r.task.pull_stopped_at = Some(now());
                for (c, image) in r.task.containers.iter_mut().zip(&pulled) {
                    c.image_digest = Some(image.digest.clone());
                }
            }
        }
        let Some(runtime) = self.inner.runtime.clone() else {
            return self.fail_start(id, "CannotStartContainerError: this Nimbus node has no container runtime").await;
        };
        if self.desired_stopped(id).await {
            return self.fail_start(id, "Task stopped before its containers started").await;
        }
        let (mut first, mut waiting) = (Vec::new(), Vec::new());
        for (def, image) in definitions.iter().zip(&pulled) {
            let over = overrides.container_overrides.iter().find(|o| o.name.as_deref() == Some(&def.name));
            let planned = runtime::plan(image, def, over, &self.inner.account.region)
                .map(|c| ContainerLaunch { mounts: volumes::mounts(def, &definitions), ..c });
            match planned {
                Ok(c) if dependencies::starts_at_once(def) => first.push((def, c)),
                Ok(c) => waiting.push((def.clone(), c)),
                Err(e) => return self.fail_start(id, &format!("CannotStartContainerError: {e}")).await,
            }
        }
        let (cpu, memory_mib, arns) = {
            let state = self.inner.state.lock().await;
            state.tasks.get(id).map_or((0, 0, HashMap::new()), |r| {
                let arns = r.task.containers.iter().map(|c| (c.name.clone(), c.container_arn.clone())).collect();
                (r.cpu, r.memory_mib, arns)
            })
        };
        let inside = match self.platform() {
            Some(p) => {
                let launches =
                    first.iter_mut().map(|(d, c)| (&**d, c)).chain(waiting.iter_mut().map(|(d, c)| (&*d, c)));
                match self.inside_task(id, p, launches, &arns).await {
                    Ok(inside) => Some(inside),
                    Err(reason) => return self.fail_start(id, &reason).await,
                }
            }
            None => None,
        };
        let order = dependencies::start_order(&first.iter().map(|(d, _)| *d).collect::<Vec<_>>());
        let containers = order.into_iter().map(|i| first[i].1.clone()).collect();
        let launch = TaskLaunch { task_id: id.to_string(), cpu, memory_mib, containers, volumes, address, inside };
        let running = match runtime.start(launch).await {
            Ok(running) => running,
            Err(e) => return self.fail_start(id, &format!("CannotStartContainerError: {e}")).await,
        };
        self.run(id, running, &definitions, waiting).await;
    }

    /// What the platform adds to a task's containers: the endpoints'
    /// environment and their `awslogs` streams (a missing group fails the
    /// start, as on AWS), and the endpoints themselves.
    async fn inside_task(
        &self,
        id: &str,
        platform: &Platform,
        launches: impl Iterator<Item = (&ContainerDefinition, &mut runtime::ContainerLaunch)>,
        arns: &HashMap<String, String>,
    ) -> Result<Arc<dyn runtime::InsideTask>, String> {
        let token = metadata::new_token();
        for (def, c) in launches {
            let arn = arns.get(&def.name).map(String::as_str).unwrap_or_default();
            for (k, v) in metadata::env(after_slash(arn), &token) {
                c.env.retain(|(name, _)| *name != k);
                c.env.push((k, v));
            }
            if let Some(o) = awslogs::options(def).map_err(|e| format!("CannotStartContainerError: {e}"))? {
                c.log = Some(awslogs::LogSink::prepare(platform.logs.clone(), &o, &def.name, id).await?);
            }
        }
        Ok(Arc::new(metadata::Endpoint {
            ecs: self.clone(),
            task_id: id.to_string(),
            token,
            platform: platform.clone(),
        }))
    }

    /// The container definitions, volume names and overrides a task runs.
    async fn definition_of(&self, id: &str) -> Option<(Vec<ContainerDefinition>, Vec<String>, TaskOverride)> {
        let state = self.inner.state.lock().await;
        let task = &state.tasks.get(id)?.task;
        let d = &self.find_definition(&state, &task.task_definition_arn)?.definition;
        let volumes = d.volumes.iter().filter_map(|v| Some(v["name"].as_str()?.to_string())).collect();
        Some((d.container_definitions.clone(), volumes, task.overrides.clone()))
    }

    async fn desired_stopped(&self, id: &str) -> bool {
        let state = self.inner.state.lock().await;
        state.tasks.get(id).is_none_or(|r| r.task.desired_status == "STOPPED")
    }

    /// Drives a started task until every container has exited: the first
    /// essential exit or a StopTask sends SIGTERM to the rest, and SIGKILL
    /// follows after the longest `stopTimeout` of those still running.
    /// Containers `waiting` on dependencies start as their conditions are
    /// met; health probes run beside the driver until the task stops.
    async fn run(
        &self,
        id: &str,
        mut running: Box<dyn RunningTask>,
        definitions: &[ContainerDefinition],
        mut waiting: Vec<(ContainerDefinition, ContainerLaunch)>,
    ) {
        let bindings = binding_values(&running.endpoints());
        let wake = self.stop_signal(id).await;
        let waits: Vec<String> = waiting.iter().map(|(d, _)| d.name.clone()).collect();
        self.advance(id, "RUNNING", |r| {
            r.task.started_at = Some(now());
            for c in r.task.containers.iter_mut().filter(|c| !waits.contains(&c.name)) {
                c.last_status = "RUNNING".into();
                c.network_bindings =
                    bindings.iter().filter(|b| container_has_port(definitions, &c.name, b)).cloned().collect();
            }
        })
        .await;
        // SIGTERM is sent once, then SIGKILL once at the deadline: the
        // largest stopTimeout of the containers still running then.
        let mut alive: Vec<&ContainerDefinition> = definitions.iter().filter(|d| !waits.contains(&d.name)).collect();
        let mut started: Vec<String> = alive.iter().map(|d| d.name.clone()).collect();
        let (mut exits, mut health) = (HashMap::new(), HashMap::new());
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut killed = false;
        let stop = |running: &mut Box<dyn RunningTask>,
                    kill_at: &mut Option<tokio::time::Instant>,
                    alive: &[&ContainerDefinition]| {
            if kill_at.is_none() {
                let grace = alive.iter().map(|d| d.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT_S)).max().unwrap_or(0);
                running.signal(StopSignal::Term);
                *kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(grace.into()));
            }
        };
        if self.desired_stopped(id).await {
            stop(&mut running, &mut kill_at, &alive);
        }
        let mut probes = Probe::for_task(&alive, tokio::time::Instant::now());
        let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
        loop {
            let deadline = async {
                match kill_at.filter(|_| !killed) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let probe_due = async {
                match Probe::next_due(&probes).filter(|_| kill_at.is_none()) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut changed = false;
            tokio::select! {
                () = probe_due => {
                    let now = tokio::time::Instant::now();
                    for p in probes.iter_mut() {
                        if !p.take_if_due(now) {
                            continue;
                        }
                        let run = tokio::time::timeout(p.check.timeout, running.probe(&p.container, p.check.argv.clone()));
                        let (tx, name) = (probe_tx.clone(), p.container.clone());
                        tokio::spawn(async move { let _ = tx.send((name, matches!(run.await, Ok(Ok(0))))); });
                    }
                }
                Some((name, passed)) = probe_rx.recv() => {
                    let Some(p) = probes.iter_mut().find(|p| p.container == name) else { continue };
                    if let Some(status) = p.record(passed, tokio::time::Instant::now()) {
                        self.set_health(id, &name, status, definitions).await;
                        health.insert(name, status);
                        changed = true;
                    }
                }
                exit = running.next_exit() => {
                    let Some(exit) = exit else { break };
                    alive.retain(|d| d.name != exit.name);
                    probes.retain(|p| p.container != exit.name);
                    let essential = definitions.iter().any(|d| d.name == exit.name && d.essential);
                    self.container_exited(id, &exit, essential).await;
                    exits.insert(exit.name.clone(), exit.exit_code);
                    changed = true;
                    if essential {
                        stop(&mut running, &mut kill_at, &alive);
                    }
                }
                () = wake.notified() => stop(&mut running, &mut kill_at, &alive),
                () = deadline => {
                    running.signal(StopSignal::Kill);
                    killed = true;
                }
            }
            if kill_at.is_some() {
                waiting.clear();
            }
            // Waiting containers whose conditions are now met start; one
            // whose condition can no longer be met fails the task.
            while changed && !waiting.is_empty() {
                changed = false;
                let at = waiting
                    .iter()
                    .map(|(d, _)| readiness(d, &started, &exits, &health))
                    .enumerate()
                    .find(|(_, r)| *r != Readiness::Waiting);
                let Some((i, ready)) = at else { break };
                let (def, launch) = waiting.remove(i);
                let failed = match ready {
                    Readiness::Never(why) => Some(why),
                    _ => match running.start_container(launch).await {
                        Ok(endpoints) => {
                            self.container_started(id, &def.name, &binding_values(&endpoints), definitions).await;
                            if let Some(d) = definitions.iter().find(|d| d.name == def.name) {
                                alive.push(d);
                                probes.extend(Probe::for_task(&[d], tokio::time::Instant::now()));
                            }
                            started.push(def.name.clone());
                            changed = true;
                            None
                        }
                        Err(e) => Some(e),
                    },
                };
                if let Some(why) = failed {
                    let reason = format!("CannotStartContainerError: {why}");
                    if let Err(e) = self.stop_as(id, "TaskFailedToStart", &reason).await {
                        tracing::error!(task = id, error = %e, "stopping a task failed");
                    }
                    waiting.clear();
                    stop(&mut running, &mut kill_at, &alive);
                }
            }
        }
        // Its ports close before it is reported STOPPED.
        drop(running);
        self.finish(id).await;
    }

    /// Marks a container that started after the task did RUNNING.
    async fn container_started(
        &self,
        id: &str,
        name: &str,
        bindings: &[serde_json::Value],
        definitions: &[ContainerDefinition],
    ) {
        let mut state = self.inner.state.lock().await;
        let Some(record) = state.tasks.get(id) else { return };
        let mut record = record.clone();
        record.task.version += 1;
        if let Some(c) = record.task.containers.iter_mut().find(|c| c.name == name) {
            c.last_status = "RUNNING".into();
            c.network_bindings =
                bindings.iter().filter(|b| container_has_port(definitions, name, b)).cloned().collect();
        }
        self.keep_task(&mut state, id, record, "a container's start").await;
    }

    /// Records a container's health and the task's that follows from it.
    async fn set_health(&self, id: &str, container: &str, status: &str, definitions: &[ContainerDefinition]) {
        let mut state = self.inner.state.lock().await;
        let Some(record) = state.tasks.get(id) else { return };
        let mut record = record.clone();
        record.task.version += 1;
        if let Some(c) = record.task.containers.iter_mut().find(|c| c.name == container) {
            c.health_status = status.to_string();
        }
        let checked =
            |c: &&Container| definitions.iter().any(|d| d.name == c.name && d.essential && d.health_check.is_some());
        record.task.health_status =
            task_health(record.task.containers.iter().filter(checked).map(|c| c.health_status.as_str())).to_string();
        self.keep_task(&mut state, id, record, "a container's health").await;
    }

    /// The wake-up StopTask gives a running task's driver.
    async fn stop_signal(&self, id: &str) -> Arc<Notify> {
        self.inner.stops.lock().await.entry(id.to_string()).or_default().clone()
    }

    /// Records a container's exit; the first essential one stops the task.
    async fn container_exited(&self, id: &str, exit: &ContainerExit, essential: bool) {
        let mut state = self.inner.state.lock().await;
        let Some(record) = state.tasks.get(id) else { return };
        let mut record = record.clone();
        record.task.version += 1;
        if let Some(c) = record.task.containers.iter_mut().find(|c| c.name == exit.name) {
            c.last_status = "STOPPED".into();
            c.exit_code = Some(exit.exit_code);
            if exit.oom {
                c.reason = Some("OutOfMemoryError: Container killed due to memory usage".into());
            }
        }
        if essential && record.task.stop_code.is_none() {
            record.task.desired_status = "STOPPED".into();
            record.task.stop_code = Some("EssentialContainerExited".into());
            record.task.stopped_reason = Some("Essential container in task exited".into());
        }
        self.keep_task(&mut state, id, record, "a container's exit").await;
    }

    /// Ends a task that could not start, as AWS reports it.
    async fn fail_start(&self, id: &str, reason: &str) {
        {
            let mut state = self.inner.state.lock().await;
            if let Some(r) = state.tasks.get_mut(id) {
                r.task.pull_stopped_at.get_or_insert(now());
                for c in r.task.containers.iter_mut() {
                    c.reason = Some(reason.to_string());
                }
                if r.task.stop_code.is_none() {
                    r.task.stop_code = Some("TaskFailedToStart".into());
                    r.task.stopped_reason = Some(reason.to_string());
                }
            }
        }
        self.finish(id).await;
    }

    /// STOPPING → DEPROVISIONING → STOPPED; a no-op if another caller is
    /// already finishing the task.
    async fn finish(&self, id: &str) {
        self.inner.stops.lock().await.remove(id);
        let claimed = self
            .advance(id, "STOPPING", |r| {
                r.task.desired_status = "STOPPED".into();
                r.task.stopping_at = Some(now());
                r.task.attachments.iter_mut().for_each(|a| a.status = "DETACHING".into());
            })
            .await;
        if !claimed {
            return;
        }
        self.advance(id, "DEPROVISIONING", |r| {
            r.task.execution_stopped_at = Some(now());
            r.task.containers.iter_mut().for_each(|c| c.last_status = "STOPPED".into());
            r.task.attachments.iter_mut().for_each(|a| a.status = "DETACHED".into());
        })
        .await;
        self.advance(id, "STOPPED", |r| {
            r.task.stopped_at = Some(now());
            r.task.attachments.iter_mut().for_each(|a| a.status = "DELETED".into());
        })
        .await;
        self.meter(id).await;
        self.inner.stopped.notify_waiters();
    }

    /// Records a stopped task's bill (see `metering`).
    async fn meter(&self, id: &str) {
        let Some(platform) = self.platform() else { return };
        let bill = self.inner.state.lock().await.tasks.get(id).and_then(crate::metering::bill);
        if let Some(bill) = bill {
            if let Err(e) = platform.usage.put_task_usage(&[bill]).await {
                tracing::error!(task = id, error = %e, "recording a task's usage failed");
            }
        }
    }

    /// The task's id if it is in the cluster.
    fn task_id<'a>(&self, state: &State, cluster_arn: &str, reference: &'a str) -> Option<&'a str> {
        let id = after_slash(reference);
        state.tasks.get(id).filter(|r| r.task.cluster_arn == cluster_arn).map(|_| id)
    }

    pub async fn describe_tasks(&self, cluster: Option<&str>, references: &[String]) -> Result<DescribedTasks, Error> {
        let mut state = self.inner.state.lock().await;
        let name = self.cluster_name(&mut state, cluster).await?;
        let cluster_arn = state.clusters[&name].cluster_arn.clone();
        let (mut tasks, mut failures) = (Vec::new(), Vec::new());
        for r in references {
            match self.task_id(&state, &cluster_arn, r) {
                Some(id) => {
                    let rec = &state.tasks[id];
                    tasks.push((rec.task.clone(), rec.tags.clone()));
                }
                None => {
                    let arn = if r.starts_with("arn:") { r.clone() } else { self.arn(&format!("task/{name}/{r}")) };
                    failures.push(Failure::missing(&arn));
                }
            }
        }
        Ok(DescribedTasks { tasks, failures })
    }

    pub async fn list_tasks(&self, q: &ListTasks) -> Result<Page, Error> {
        // AWS's rules for the filters: `startedBy` alone, a page of 1 to 100.
        if q.started_by.is_some() && (q.family.is_some() || q.service_name.is_some()) {
            return Err(Error::InvalidParameter(
                "When you specify startedBy as the filter, it must be the only filter that you use.".into(),
            ));
        }
        let mut state = self.inner.state.lock().await;
        let name = self.cluster_name(&mut state, q.cluster.as_deref()).await?;
        let cluster_arn = state.clusters[&name].cluster_arn.clone();
        if let Some(service) = &q.service_name {
            let arn = self.arn(&format!("service/{name}/{}", after_slash(service)));
            if !state.services.contains_key(&arn) {
                return Err(Error::ServiceNotFound);
            }
        }
        let desired = q.desired_status.as_deref().unwrap_or("RUNNING");
        let family_arn = q.family.as_deref().map(|f| self.arn(&format!("task-definition/{f}:")));
        let service_group = q.service_name.as_deref().map(|s| format!("service:{s}"));
        let tasks: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|r| r.task.cluster_arn == cluster_arn && r.task.desired_status == desired)
            .filter(|r| family_arn.as_deref().is_none_or(|f| r.task.task_definition_arn.starts_with(f)))
            .filter(|r| q.started_by.is_none() || r.task.started_by == q.started_by)
            .filter(|r| service_group.as_deref().is_none_or(|g| r.task.group == g))
            .filter(|r| q.launch_type.as_deref().is_none_or(|l| r.task.launch_type == l))
            .collect();
        // By creation: the key's fixed-width seconds sort as the times do.
        let mut arns: Vec<(String, String)> = tasks
            .into_iter()
            .map(|r| (format!("{:020.6}\n{}", r.task.created_at, r.task.task_arn), r.task.task_arn.clone()))
            .collect();
        arns.sort();
        page(arns, false, q.max_results, q.next_token.as_deref())
    }

    /// Asks a task to stop (`UserInitiated`); a stopped task is answered as
    /// it is.
    pub async fn stop_task(&self, cluster: Option<&str>, reference: &str, reason: Option<&str>) -> Result<Task, Error> {
        let id = {
            let mut state = self.inner.state.lock().await;
            let name = self.cluster_name(&mut state, cluster).await?;
            let cluster_arn = state.clusters[&name].cluster_arn.clone();
            self.task_id(&state, &cluster_arn, reference)
                .ok_or_else(|| Error::InvalidParameter("The referenced task was not found.".into()))?
                .to_string()
        };
        self.stop_as(&id, "UserInitiated", reason.unwrap_or("Task stopped by user")).await
    }

    /// Sets a task's desired status to STOPPED with `code` and `reason`
    /// (unless it is already stopping) and wakes its driver.
    pub(crate) async fn stop_as(&self, id: &str, code: &str, reason: &str) -> Result<Task, Error> {
        let task = {
            let mut state = self.inner.state.lock().await;
            let record = state
                .tasks
                .get(id)
                .ok_or_else(|| Error::InvalidParameter("The referenced task was not found.".into()))?;
            if record.task.desired_status == "STOPPED" {
                return Ok(record.task.clone());
            }
            let mut record = record.clone();
            record.task.desired_status = "STOPPED".into();
            record.task.version += 1;
            record.task.stop_code = Some(code.into());
            record.task.stopped_reason = Some(reason.into());
            self.inner.store.ecs_apply(&[put_task(&record)?]).await?;
            state.tasks.insert(id.to_string(), record.clone());
            record.task
        };
        // The task's driver stops it: a running task at once, a starting
        // one when its images are pulled.
        self.stop_signal(id).await.notify_one();
        self.inner.scheduler.notify_one();
        Ok(task)
    }

    /// Stops every task as StopTask does (SIGTERM, then SIGKILL after its
    /// `stopTimeout`), for the node's graceful stop, and returns once each
    /// is STOPPED; services start none in their place.
    pub async fn stop_all(&self) {
        self.inner.node_stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let running: Vec<String> = {
            let state = self.inner.state.lock().await;
            state.tasks.iter().filter(|(_, r)| !r.is_stopped()).map(|(id, _)| id.clone()).collect()
        };
        for id in &running {
            let _ = self.stop_as(id, "TerminationNotice", "Task stopped because the Nimbus node stopped").await;
        }
        loop {
            let stopped = self.inner.stopped.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            let left = {
                let state = self.inner.state.lock().await;
                running.iter().filter(|id| state.tasks.get(*id).is_some_and(|r| !r.is_stopped())).count()
            };
            if left == 0 {
                return;
            }
            tracing::info!(tasks = left, "waiting for tasks to stop");
            stopped.await;
        }
    }

    // ---- tags ----

    pub async fn tag_resource(&self, arn: &str, tags: Vec<Tag>) -> Result<(), Error> {
        check_tags(&tags)?;
        self.update_tags(arn, |existing| {
            for t in tags {
                existing.retain(|e| e.key != t.key);
                existing.push(t);
            }
        })
        .await
        .map(|_| ())
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), Error> {
        self.update_tags(arn, |existing| existing.retain(|t| !keys.contains(&t.key))).await.map(|_| ())
    }

    pub async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, Error> {
        self.update_tags(arn, |_| {}).await
    }

    /// Applies `change` to a resource's tags, stores the resource if they
    /// changed, and answers them.
    async fn update_tags(&self, arn: &str, change: impl FnOnce(&mut Vec<Tag>)) -> Result<Vec<Tag>, Error> {
        let mut state = self.inner.state.lock().await;
        let resource = arn
            .strip_prefix(&self.arn(""))
            .ok_or_else(|| Error::InvalidParameter(format!("The ARN '{arn}' is not a valid ECS resource ARN.")))?;
        let (kind, rest) = resource.split_once('/').unwrap_or((resource, ""));
        match kind {
            "cluster" => {
                let mut c = state.clusters.get(rest).ok_or(Error::ClusterNotFound)?.clone();
                change(&mut c.tags);
                if c.tags != state.clusters[rest].tags {
                    self.inner.store.ecs_apply(&[put_cluster(&c)?]).await?;
                }
                let tags = c.tags.clone();
                state.clusters.insert(rest.to_string(), c);
                Ok(tags)
            }
            "task-definition" => {
                let found = self.find_definition(&state, arn).filter(|_| rest.contains(':'));
                let mut d = found.ok_or(Error::ResourceNotFound)?.clone();
                let before = d.tags.clone();
                change(&mut d.tags);
                if d.tags != before {
                    self.inner.store.ecs_apply(&[put_definition(&d)?]).await?;
                    self.replace_definition(&mut state, &d);
                }
                Ok(d.tags)
            }
            "task" => {
                let id = after_slash(rest);
                let mut r = state.tasks.get(id).ok_or(Error::ResourceNotFound)?.clone();
                change(&mut r.tags);
                if r.tags != state.tasks[id].tags {
                    self.inner.store.ecs_apply(&[put_task(&r)?]).await?;
                }
                let tags = r.tags.clone();
                state.tasks.insert(id.to_string(), r);
                Ok(tags)
            }
            "service" => {
                let mut r = state.services.get(arn).ok_or(Error::ServiceNotFound)?.clone();
                change(&mut r.tags);
                if r.tags != state.services[arn].tags {
                    self.inner.store.ecs_apply(&[put_service(&r)?]).await?;
                }
                let tags = r.tags.clone();
                state.services.insert(arn.to_string(), r);
                Ok(tags)
            }
            _ => Err(Error::InvalidParameter(format!("The ARN '{arn}' is not a taggable ECS resource."))),
        }
    }
}

/// Published ports as ECS's `networkBindings` entries.
fn binding_values(endpoints: &[(u16, std::net::SocketAddr)]) -> Vec<serde_json::Value> {
    endpoints
        .iter()
        .map(|(port, at)| {
            serde_json::json!({"bindIP": at.ip().to_string(), "containerPort": port, "hostPort": at.port(), "protocol": "tcp"})
        })
        .collect()
}

/// The next address of the node's task network that no task holds, after
/// the one given out last; `None` if every one is held. As in an AWS
/// subnet, its first four addresses and its last are not given out.
fn free_address(state: &mut State) -> Option<Ipv4Addr> {
    let hosts = (1u32 << (32 - mesh::PREFIX)) - 1;
    let held: std::collections::HashSet<Ipv4Addr> = state
        .tasks
        .values()
        .filter(|r| r.task.last_status != "STOPPED")
        .filter_map(|r| private_address(&r.task))
        .collect();
    let base = u32::from(mesh::NETWORK);
    let next = (1..hosts)
        .map(|step| (state.last_address + step) % hosts)
        .filter(|&n| n >= 4)
        .find(|&n| !held.contains(&Ipv4Addr::from(base + n)))?;
    state.last_address = next;
    Some(Ipv4Addr::from(base + next))
}

/// The task's private address, once its interface is attached.
pub(crate) fn private_address(task: &Task) -> Option<Ipv4Addr> {
    let detail =
        task.attachments.iter().flat_map(|a| &a.details).find(|d| d.name.as_deref() == Some("privateIPv4Address"));
    detail?.value.as_deref()?.parse().ok()
}

/// Reports `address` as AWS does: in the interface's attachment details
/// and in each container's `networkInterfaces`.
fn set_address(r: &mut TaskRecord, address: Ipv4Addr) {
    let Some(eni) = r.task.attachments.first_mut() else { return };
    eni.details.push(KeyValue::new("macAddress", &mesh::mac_address(address)));
    eni.details.push(KeyValue::new("privateIPv4Address", &address.to_string()));
    let interface = serde_json::json!({"attachmentId": eni.id, "privateIpv4Address": address.to_string()});
    r.task.containers.iter_mut().for_each(|c| c.network_interfaces = vec![interface.clone()]);
}

/// Whether a network binding is one of this container's ports.
fn container_has_port(definitions: &[ContainerDefinition], name: &str, binding: &serde_json::Value) -> bool {
    let Some(port) = binding["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()) else { return false };
    definitions.iter().any(|d| d.name == name && d.port_mappings.iter().any(|p| p.ports().contains(&port)))
}

/// A task that had not stopped when the node went down, stopped when the
/// node was last known alive (not at this start: the time between is not
/// the task's, nor billed), or at its own last step if that came after.
fn stop_at_restart(r: &mut TaskRecord, node_last_alive: Option<f64>) {
    let t = &mut r.task;
    let steps = [Some(t.created_at), t.pull_stopped_at, t.started_at, t.stopping_at];
    let last_step = steps.into_iter().flatten().fold(0.0, f64::max);
    let at = node_last_alive.unwrap_or_else(now).max(last_step);
    t.last_status = "STOPPED".into();
    t.desired_status = "STOPPED".into();
    t.version += 1;
    t.stopping_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    t.stopped_at = Some(at);
    if t.stop_code.is_none() {
        t.stop_code = Some("TerminationNotice".into());
        t.stopped_reason =
            Some("Task stopped because the Nimbus node restarted; tasks are not re-adopted after a restart".into());
    }
    t.containers.iter_mut().for_each(|c| c.last_status = "STOPPED".into());
    t.attachments.iter_mut().for_each(|a| a.status = "DELETED".into());
}

fn check_launch(input: &RunTask) -> Result<(), Error> {
    match input.launch_type.as_deref() {
        None | Some("FARGATE") => {}
        Some(other) => {
            return Err(Error::InvalidParameter(format!(
                "launchType {other} needs container instances registered to the cluster, which Nimbus offers only in cluster mode (not yet available); use FARGATE."
            )))
        }
    }
    if input.launch_type.is_some() && !input.capacity_provider_strategy.is_empty() {
        return Err(Error::InvalidParameter(
            "Specifying both a launchType and capacityProviderStrategy is not supported.".into(),
        ));
    }
    if let Some(p) = input.capacity_provider_strategy.iter().find(|p| p.capacity_provider != "FARGATE") {
        return Err(Error::InvalidParameter(format!(
            "Capacity provider '{}' is not available: this node offers FARGATE only.",
            p.capacity_provider
        )));
    }
    Ok(())
}

/// The awsvpc configuration a Fargate task needs; its first subnet.
pub(crate) fn check_network(network: Option<&NetworkConfiguration>) -> Result<String, Error> {
    let vpc = network.and_then(|n| n.awsvpc_configuration.as_ref()).ok_or_else(|| {
        Error::InvalidParameter("Network Configuration must be provided when networkMode 'awsvpc' is specified.".into())
    })?;
    let subnet = vpc.subnets.first().ok_or_else(|| Error::InvalidParameter("subnets can not be empty.".into()))?;
    if vpc.assign_public_ip.as_deref() == Some("ENABLED") {
        return Err(Error::InvalidParameter(
            "assignPublicIp ENABLED is not supported by this node: tasks have no network access beyond the node. Use DISABLED.".into(),
        ));
    }
    Ok(subnet.clone())
}

/// The task's size after overrides, checked against Fargate's table and
/// the definition's containers.
fn task_size(d: &TaskDefinition, o: &TaskOverride) -> Result<(u32, u32), Error> {
    for c in &o.container_overrides {
        let name =
            c.name.as_deref().ok_or_else(|| Error::InvalidParameter("Container override name is required.".into()))?;
        if !d.container_definitions.iter().any(|cd| cd.name == name) {
            return Err(Error::InvalidParameter(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        }
        rules::check_override_environment(c.environment.as_deref().unwrap_or_default())?;
    }
    let invalid = |e: Error| Error::InvalidParameter(e.to_string());
    let cpu = match o.cpu.as_deref() {
        Some(v) => rules::normalise_cpu(v).map_err(invalid)?,
        None => d.cpu.parse().unwrap_or(0),
    };
    let memory = match o.memory.as_deref() {
        Some(v) => rules::normalise_memory(v).map_err(invalid)?,
        None => d.memory.parse().unwrap_or(0),
    };
    rules::check_fargate_size(cpu, memory)?;
    Ok((cpu, memory))
}

/// Puts each of `new` in `settings` in place of the one of its name.
fn merge_settings(settings: &mut Vec<serde_json::Value>, new: &[serde_json::Value]) {
    for n in new {
        settings.retain(|s| s["name"] != n["name"]);
        settings.push(n.clone());
    }
}

fn check_tags(tags: &[Tag]) -> Result<(), Error> {
    match tags.iter().find(|t| t.key.to_ascii_lowercase().starts_with("aws:")) {
        Some(t) => Err(Error::InvalidParameter(format!("Tag keys starting with 'aws:' are reserved: '{}'.", t.key))),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use nimbus_store::SqliteMetadata;

    use super::*;
    use crate::{PullError, PulledImage};

    /// Images that never pull.
    pub(crate) struct NoImages;

    #[async_trait::async_trait]
    impl TaskImages for NoImages {
        async fn pull(&self, image: &str) -> Result<PulledImage, PullError> {
            Err(PullError(format!("{image}: not found")))
        }
    }

    /// Images that always pull.
    struct Images;

    #[async_trait::async_trait]
    impl TaskImages for Images {
        async fn pull(&self, image: &str) -> Result<PulledImage, PullError> {
            Ok(PulledImage {
                root: nimbus_images::Root::unmanaged("/nonexistent".into()),
                digest: format!("sha256:digest-of-{image}"),
                entrypoint: vec!["/bin/server".into()],
                cmd: vec![],
                env: vec![],
                working_dir: None,
                user: None,
            })
        }
    }

    /// Containers that exit when the test says, on SIGTERM (those listed
    /// in `term`), or on SIGKILL; every signal is recorded.
    struct FakeRuntime {
        term: Vec<&'static str>,
        exits: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ContainerExit>>>,
        signals: Arc<std::sync::Mutex<Vec<StopSignal>>>,
    }

    struct FakeTask {
        running: Vec<String>,
        term: Vec<&'static str>,
        tx: tokio::sync::mpsc::UnboundedSender<ContainerExit>,
        rx: tokio::sync::mpsc::UnboundedReceiver<ContainerExit>,
        signals: Arc<std::sync::Mutex<Vec<StopSignal>>>,
    }

    #[async_trait::async_trait]
    impl TaskRuntime for FakeRuntime {
        async fn start(&self, task: TaskLaunch) -> Result<Box<dyn RunningTask>, String> {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            *self.exits.lock().unwrap() = Some(tx.clone());
            let running = task.containers.iter().map(|c| c.name.clone()).collect();
            Ok(Box::new(FakeTask { running, term: self.term.clone(), tx, rx, signals: self.signals.clone() }))
        }
    }

    #[async_trait::async_trait]
    impl RunningTask for FakeTask {
        async fn next_exit(&mut self) -> Option<ContainerExit> {
            if self.running.is_empty() {
                return None;
            }
            let exit = self.rx.recv().await?;
            self.running.retain(|n| *n != exit.name);
            Some(exit)
        }

        fn signal(&mut self, signal: StopSignal) {
            self.signals.lock().unwrap().push(signal);
            for name in &self.running {
                let (code, exits) = match signal {
                    StopSignal::Term => (143, self.term.contains(&name.as_str())),
                    StopSignal::Kill => (137, true),
                };
                if exits {
                    self.tx.send(ContainerExit { name: name.clone(), exit_code: code, oom: false }).unwrap();
                }
            }
        }

        fn endpoints(&self) -> Vec<(u16, std::net::SocketAddr)> {
            vec![(8080, "127.0.0.1:41000".parse().unwrap())]
        }

        async fn start_container(&mut self, c: ContainerLaunch) -> Result<Vec<(u16, std::net::SocketAddr)>, String> {
            self.running.push(c.name);
            Ok(Vec::new())
        }
    }

    async fn running_engine(dir: &std::path::Path, runtime: Arc<FakeRuntime>) -> Ecs {
        let store = Arc::new(SqliteMetadata::open(&dir.join("m.db")).await.unwrap());
        let account = Account { id: "000000000000".into(), region: "us-east-1".into() };
        let capacity = Capacity { cpu: 2048, memory_mib: 4096 };
        Ecs::open(account, store, Arc::new(Images), Some(runtime), capacity, None).await.unwrap()
    }

    fn fake(term: Vec<&'static str>) -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime { term, exits: std::sync::Mutex::new(None), signals: Arc::default() })
    }

    async fn two_containers(ecs: &Ecs, stop_timeout: u32) -> String {
        let mut d = definition("pair", "256", "512");
        let sidecar =
            serde_json::json!({"name": "sidecar", "image": "x", "essential": false, "stopTimeout": stop_timeout});
        d.container_definitions.push(serde_json::from_value(sidecar).unwrap());
        d.container_definitions[0].stop_timeout = Some(stop_timeout);
        ecs.register_task_definition(d).await.unwrap();
        let task = ecs.run_task(run("pair", 1)).await.unwrap().tasks.remove(0);
        reached(ecs, &task.task_arn, "RUNNING").await;
        task.task_arn
    }

    #[test]
    fn addresses_go_round_past_the_reserved_ones() {
        let mut state = State::default();
        assert_eq!(free_address(&mut state), Some(Ipv4Addr::new(172, 31, 0, 4)));
        assert_eq!(free_address(&mut state), Some(Ipv4Addr::new(172, 31, 0, 5)));
        state.last_address = 65_533;
        assert_eq!(free_address(&mut state), Some(Ipv4Addr::new(172, 31, 255, 254)));
        assert_eq!(free_address(&mut state), Some(Ipv4Addr::new(172, 31, 0, 4)), "past .255.255 and .0.0 to .0.3");
    }

    #[tokio::test]
    async fn an_essential_exit_stops_the_task_and_terminates_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake(vec!["sidecar"]);
        let ecs = running_engine(dir.path(), runtime.clone()).await;
        let arn = two_containers(&ecs, 30).await;
        let running = &ecs.describe_tasks(None, std::slice::from_ref(&arn)).await.unwrap().tasks[0].0;
        assert!(running.started_at.is_some());
        assert_eq!(running.containers[0].network_bindings[0]["hostPort"], 41000);
        assert_eq!(private_address(running), Some(Ipv4Addr::new(172, 31, 0, 4)), "the first one given out");
        let interface =
            serde_json::json!({"attachmentId": running.attachments[0].id, "privateIpv4Address": "172.31.0.4"});
        assert!(running.containers.iter().all(|c| c.network_interfaces == [interface.clone()]));
        assert_eq!(running.containers[0].image_digest.as_deref(), Some("sha256:digest-of-127.0.0.1:1/missing:v1"));
        let tx = runtime.exits.lock().unwrap().clone().unwrap();
        tx.send(ContainerExit { name: "sidecar".into(), exit_code: 0, oom: false }).unwrap();
        tx.send(ContainerExit { name: "web".into(), exit_code: 3, oom: true }).unwrap();
        let task = stopped(&ecs, &arn).await;
        assert_eq!(task.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(task.stopped_reason.as_deref(), Some("Essential container in task exited"));
        let web = task.containers.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(web.exit_code, Some(3));
        assert_eq!(web.reason.as_deref(), Some("OutOfMemoryError: Container killed due to memory usage"));
        assert_eq!(task.containers.iter().find(|c| c.name == "sidecar").unwrap().exit_code, Some(0));
        assert_eq!(*runtime.signals.lock().unwrap(), [StopSignal::Term], "nothing was left to kill");
    }

    #[tokio::test]
    async fn stop_task_sends_sigterm_then_sigkill_after_the_stop_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake(vec!["sidecar"]);
        let ecs = running_engine(dir.path(), runtime.clone()).await;
        let arn = two_containers(&ecs, 1).await;
        let asked = tokio::time::Instant::now();
        let answer = ecs.stop_task(None, &arn, Some("enough")).await.unwrap();
        assert_eq!((answer.desired_status.as_str(), answer.last_status.as_str()), ("STOPPED", "RUNNING"));
        let task = stopped(&ecs, &arn).await;
        assert!(asked.elapsed() >= Duration::from_secs(1), "web ignores SIGTERM until the 1 s stopTimeout");
        assert_eq!(*runtime.signals.lock().unwrap(), [StopSignal::Term, StopSignal::Kill]);
        assert_eq!(
            (task.stop_code.as_deref(), task.stopped_reason.as_deref()),
            (Some("UserInitiated"), Some("enough"))
        );
        let code = |n: &str| task.containers.iter().find(|c| c.name == n).unwrap().exit_code;
        assert_eq!((code("sidecar"), code("web")), (Some(143), Some(137)));
    }

    async fn engine(db: &std::path::Path, capacity: Capacity) -> Ecs {
        let store = Arc::new(SqliteMetadata::open(db).await.unwrap());
        let account = Account { id: "000000000000".into(), region: "us-east-1".into() };
        Ecs::open(account, store, Arc::new(NoImages), None, capacity, None).await.unwrap()
    }

    fn definition(family: &str, cpu: &str, memory: &str) -> RegisterTaskDefinition {
        serde_json::from_value(serde_json::json!({
            "family": family,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": cpu,
            "memory": memory,
            "containerDefinitions": [{"name": "web", "image": "127.0.0.1:1/missing:v1",
                                      "portMappings": [{"containerPort": 8080}]}],
        }))
        .unwrap()
    }

    fn run(family: &str, count: u32) -> RunTask {
        serde_json::from_value(serde_json::json!({
            "taskDefinition": family,
            "count": count,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
        }))
        .unwrap()
    }

    async fn stopped(ecs: &Ecs, arn: &str) -> Task {
        reached(ecs, arn, "STOPPED").await
    }

    /// The task once its lastStatus is `status`, polled for up to 5 s.
    async fn reached(ecs: &Ecs, arn: &str, status: &str) -> Task {
        for _ in 0..500 {
            let d = ecs.describe_tasks(None, &[arn.to_string()]).await.unwrap();
            if d.tasks[0].0.last_status == status {
                return d.tasks[0].0.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the task never reached {status}");
    }

    #[tokio::test]
    async fn revisions_number_up_and_sizes_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let ecs = engine(&dir.path().join("m.db"), Capacity { cpu: 2048, memory_mib: 4096 }).await;
        let one = ecs.register_task_definition(definition("web", "0.5 vCPU", "1GB")).await.unwrap();
        assert_eq!((one.definition.cpu.as_str(), one.definition.memory.as_str()), ("512", "1024"));
        let two = ecs.register_task_definition(definition("web", "256", "512")).await.unwrap();
        assert_eq!(two.definition.revision, 2);
        assert_eq!(ecs.describe_task_definition("web").await.unwrap().definition.revision, 2);
        ecs.deregister_task_definition("web:2").await.unwrap();
        assert_eq!(ecs.describe_task_definition("web").await.unwrap().definition.revision, 1);
        let e = ecs.register_task_definition(definition("web", "256", "4GB")).await.unwrap_err();
        assert!(e.to_string().starts_with("No Fargate configuration exists"), "{e}");
        let (deleted, _) = ecs.delete_task_definitions(&["web:2".into()]).await.unwrap();
        assert_eq!(deleted[0].status, "DELETE_IN_PROGRESS");
        let three = ecs.register_task_definition(definition("web", "256", "512")).await.unwrap();
        assert_eq!(three.definition.revision, 3, "a deleted revision's number is not reused");
    }

    #[tokio::test]
    async fn a_missing_image_stops_the_task_and_capacity_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ecs = engine(&dir.path().join("m.db"), Capacity { cpu: 2048, memory_mib: 4096 }).await;
        ecs.register_task_definition(definition("web", "1024", "2048")).await.unwrap();
        let out = ecs.run_task(run("web", 3)).await.unwrap();
        assert_eq!(out.tasks.len(), 2);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].reason, "RESOURCE:CPU");
        let task = stopped(&ecs, &out.tasks[0].task_arn).await;
        assert_eq!(task.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert!(task.stopped_reason.as_deref().unwrap().starts_with("CannotPullContainerError: "));
        assert_eq!(task.desired_status, "STOPPED");
        assert!(task.pull_started_at.is_some() && task.pull_stopped_at.is_some() && task.stopped_at.is_some());
        assert_eq!(task.version, 6, "PROVISIONING, PENDING, ACTIVATING, STOPPING, DEPROVISIONING, STOPPED");
        stopped(&ecs, &out.tasks[1].task_arn).await;
        let out = ecs.run_task(run("web", 2)).await.unwrap();
        assert_eq!((out.tasks.len(), out.failures.len()), (2, 0), "stopped tasks free their capacity");
    }

    #[tokio::test]
    async fn client_tokens_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let ecs = engine(&db, Capacity { cpu: 2048, memory_mib: 4096 }).await;
        ecs.register_task_definition(definition("web", "256", "512")).await.unwrap();
        let mut input = run("web", 1);
        input.client_token = Some("once".into());
        let first = ecs.run_task(input.clone()).await.unwrap();
        let again = ecs.run_task(input).await.unwrap();
        assert_eq!(first.tasks[0].task_arn, again.tasks[0].task_arn);
        // A task left unfinished by a node that went down is reported
        // stopped when the next one starts.
        let mut record =
            TaskRecord { task: first.tasks[0].clone(), tags: vec![], client_token: None, cpu: 256, memory_mib: 512 };
        record.task.task_arn = ecs.arn("task/default/0123456789abcdef0123456789abcdef");
        record.task.last_status = "RUNNING".into();
        ecs.inner.store.ecs_apply(&[put_task(&record).unwrap()]).await.unwrap();
        drop(ecs);
        let ecs = engine(&db, Capacity { cpu: 2048, memory_mib: 4096 }).await;
        let d = ecs.describe_tasks(None, &["0123456789abcdef0123456789abcdef".into()]).await.unwrap();
        let task = &d.tasks[0].0;
        assert_eq!((task.last_status.as_str(), task.stop_code.as_deref()), ("STOPPED", Some("TerminationNotice")));
    }
}
