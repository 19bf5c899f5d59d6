//! ECS services: CreateService, UpdateService, DescribeServices,
//! ListServices, DeleteService, and the scheduler that keeps each service's
//! tasks at its desired count.
//!
//! The scheduler is one tokio task. It sleeps until woken (a task changed
//! status or health, a service changed: `Inner::scheduler`) or until the
//! earliest timed deadline (a launch backoff, a health-check grace period
//! ending); it never polls. Each pass reconciles every service from the
//! engine's task table: a service's tasks are those with `group`
//! `service:<name>`, and a task belongs to the deployment whose id is its
//! `startedBy`. A pass decides what to start and stop under the state
//! lock, then starts tasks through `run_task` and stops them through
//! `stop_as` (stop code `ServiceSchedulerInitiated`), and passes again
//! until there is nothing to do.
//!
//! Rolling deployments: the PRIMARY deployment starts tasks while all the
//! service's live tasks stay within `maximumPercent` of the desired count;
//! older deployments' tasks stop while the healthy ones (RUNNING, and
//! HEALTHY if the definition has health checks) stay at or above
//! `minimumHealthyPercent`. Tasks that stop on their own count as failures:
//! consecutive failures delay the next launch (0, 0.5 s, 1 s, … up to 60 s,
//! reset at a steady state), and in an IN_PROGRESS deployment with the
//! circuit breaker on, AWS's threshold (half the desired count, at least 3,
//! at most 200) fails it, and with rollback the previous deployment becomes
//! PRIMARY again.
//!
//! Services are written through to the store before an answer, so a
//! restarted node reconciles them back to their desired count (their old
//! tasks are reported STOPPED by the engine, and replaced).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nimbus_store::EcsWrite;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{after_slash, now, NetworkConfiguration, RunTask, State};
use crate::types::{Tag, TaskRecord};
use crate::{Ecs, Error};

/// How many events a service keeps (AWS keeps the latest 100).
const EVENTS_KEPT: usize = 100;
/// Stop codes that are not the task's failure.
const NOT_FAILURES: [&str; 3] = ["ServiceSchedulerInitiated", "UserInitiated", "TerminationNotice"];
const UNHEALTHY_REASON: &str = "Task failed container health checks";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub maximum_percent: Option<u32>,
    #[serde(default)]
    pub minimum_healthy_percent: Option<u32>,
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        Self {
            deployment_circuit_breaker: Some(CircuitBreaker { enable: false, rollback: false }),
            maximum_percent: Some(200),
            minimum_healthy_percent: Some(100),
        }
    }
}

impl DeploymentConfiguration {
    /// The configuration with ECS's defaults filled in.
    fn completed(self) -> Result<Self, Error> {
        let d = Self::default();
        let c = Self {
            deployment_circuit_breaker: self.deployment_circuit_breaker.or(d.deployment_circuit_breaker),
            maximum_percent: self.maximum_percent.or(d.maximum_percent),
            minimum_healthy_percent: self.minimum_healthy_percent.or(d.minimum_healthy_percent),
        };
        let (max, min) = (c.max(), c.min());
        if !(100..=2000).contains(&max) {
            return Err(Error::InvalidParameter("maximumPercent must be between 100 and 2000.".into()));
        }
        if min > 100 || min >= max {
            return Err(Error::InvalidParameter(
                "minimumHealthyPercent must be between 0 and 100 and less than maximumPercent.".into(),
            ));
        }
        Ok(c)
    }

    fn max(&self) -> u32 {
        self.maximum_percent.unwrap_or(200)
    }

    fn min(&self) -> u32 {
        self.minimum_healthy_percent.unwrap_or(100)
    }

    fn breaker(&self) -> CircuitBreaker {
        self.deployment_circuit_breaker.clone().unwrap_or(CircuitBreaker { enable: false, rollback: false })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    /// PRIMARY (the newest), ACTIVE (older ones still draining).
    pub status: String,
    pub task_definition: String,
    pub desired_count: u32,
    pub pending_count: u32,
    pub running_count: u32,
    pub failed_tasks: u32,
    pub created_at: f64,
    pub updated_at: f64,
    pub launch_type: String,
    pub platform_version: String,
    pub platform_family: String,
    pub network_configuration: Value,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: String,
    pub rollout_state_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

/// A service as DescribeServices answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    /// ACTIVE, DRAINING (deleted, tasks stopping) or INACTIVE.
    pub status: String,
    pub desired_count: u32,
    pub running_count: u32,
    pub pending_count: u32,
    pub launch_type: String,
    pub platform_version: String,
    pub platform_family: String,
    pub task_definition: String,
    pub deployment_configuration: DeploymentConfiguration,
    pub deployments: Vec<Deployment>,
    pub events: Vec<ServiceEvent>,
    pub created_at: f64,
    pub network_configuration: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    pub scheduling_strategy: String,
    pub deployment_controller: Value,
    pub load_balancers: Vec<Value>,
    pub service_registries: Vec<Value>,
    pub placement_constraints: Vec<Value>,
    pub placement_strategy: Vec<Value>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: bool,
    pub propagate_tags: String,
    pub enable_execute_command: bool,
}

/// What is stored for a service: the service, its tags, and what only the
/// scheduler needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: Service,
    pub tags: Vec<Tag>,
    /// The deployment an update replaced, for a circuit-breaker rollback
    /// after its tasks have gone.
    #[serde(default)]
    previous: Option<Deployment>,
    /// Live tasks the scheduler has seen, to notice when they stop.
    #[serde(default)]
    seen: BTreeSet<String>,
    /// Consecutive failed tasks, and no launch before `not_before`.
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    not_before: f64,
    #[serde(default)]
    steady: bool,
}

impl ServiceRecord {
    /// After a restart: the service's tasks were all reported stopped, so
    /// none runs until the scheduler starts new ones.
    pub(crate) fn forget_tasks(&mut self) {
        let s = &mut self.service;
        (s.running_count, s.pending_count) = (0, 0);
        s.deployments.iter_mut().for_each(|d| (d.running_count, d.pending_count) = (0, 0));
        self.steady = false;
    }
}

/// CreateService's input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateService {
    pub cluster: Option<String>,
    pub service_name: String,
    pub task_definition: Option<String>,
    pub desired_count: Option<u32>,
    pub launch_type: Option<String>,
    pub network_configuration: Option<Value>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub health_check_grace_period_seconds: Option<u32>,
    pub scheduling_strategy: Option<String>,
    #[serde(default)]
    pub load_balancers: Vec<Value>,
    /// Service discovery: refused, as load balancers are.
    #[serde(default)]
    pub service_registries: Vec<Value>,
    /// `SERVICE` or `TASK_DEFINITION`: whose tags its tasks get.
    pub propagate_tags: Option<String>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// UpdateService's input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateService {
    pub cluster: Option<String>,
    pub service: String,
    pub desired_count: Option<u32>,
    pub task_definition: Option<String>,
    pub network_configuration: Option<Value>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub health_check_grace_period_seconds: Option<u32>,
    #[serde(default)]
    pub force_new_deployment: bool,
}

pub(crate) fn put_service(r: &ServiceRecord) -> Result<EcsWrite, Error> {
    Ok(EcsWrite::PutService { arn: r.service.service_arn.clone(), doc: serde_json::to_string(r)? })
}

/// A deployment id as ECS writes them: `ecs-svc/` and 19 digits.
fn deployment_id() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 10u128.pow(19);
    format!("ecs-svc/{n:019}")
}

fn push_event(service: &mut Service, message: String) {
    let event = ServiceEvent { id: uuid::Uuid::new_v4().to_string(), created_at: now(), message };
    service.events.insert(0, event);
    service.events.truncate(EVENTS_KEPT);
}

/// `(task <id>) (task <id>)`, as events list tasks.
fn task_list(ids: &[String]) -> String {
    ids.iter().map(|id| format!("(task {id})")).collect::<Vec<_>>().join(" ")
}

/// The circuit breaker's failure threshold for a desired count.
fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// Delay before the next launch after `failures` consecutive failures.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(500u64 << (n - 2).min(7)).min(Duration::from_secs(60)),
    }
}

/// What one pass decided for one service.
#[derive(Default)]
struct Plan {
    /// (deployment id, task definition, count).
    launch: Option<(String, String, u32)>,
    /// (task id, reason).
    stop: Vec<(String, String)>,
}

impl Ecs {
    pub async fn create_service(&self, input: CreateService) -> Result<ServiceRecord, Error> {
        let mut state = self.inner.state.lock().await;
        let cluster = self.cluster_name(&mut state, input.cluster.as_deref()).await?;
        let cluster_arn = state.clusters[&cluster].cluster_arn.clone();
        crate::rules::check_name("Service name", &input.service_name)
            .map_err(|e| Error::InvalidParameter(e.to_string()))?;
        if let Some(l) = input.launch_type.as_deref().filter(|l| *l != "FARGATE") {
            return Err(Error::InvalidParameter(format!(
                "launchType {l} needs container instances registered to the cluster, which Nimbus offers only in cluster mode (not yet available); use FARGATE."
            )));
        }
        if input.scheduling_strategy.as_deref().is_some_and(|s| s != "REPLICA") {
            return Err(Error::InvalidParameter(
                "Fargate services only support the REPLICA scheduling strategy.".into(),
            ));
        }
        if !input.load_balancers.is_empty() {
            return Err(Error::InvalidParameter("Load balancers are not available on Nimbus.".into()));
        }
        if !input.service_registries.is_empty() {
            return Err(Error::InvalidParameter("Service discovery is not available on Nimbus.".into()));
        }
        let propagate_tags = input.propagate_tags.clone().unwrap_or_else(|| "NONE".into());
        if !["NONE", "SERVICE", "TASK_DEFINITION"].contains(&propagate_tags.as_str()) {
            return Err(Error::InvalidParameter(format!("Invalid propagateTags value {propagate_tags}.")));
        }
        let reference = input
            .task_definition
            .as_deref()
            .ok_or_else(|| Error::InvalidParameter("TaskDefinition must be specified.".into()))?;
        let definition = self.active_definition(&state, reference)?;
        let network = input.network_configuration.clone().unwrap_or(Value::Null);
        check_service_network(&network)?;
        let configuration = input.deployment_configuration.clone().unwrap_or_default().completed()?;
        let arn = self.arn(&format!("service/{cluster}/{}", input.service_name));
        if let Some(existing) = state.services.get(&arn) {
            match existing.service.status.as_str() {
                "ACTIVE" => return Err(Error::InvalidParameter("Creation of service was not idempotent.".into())),
                "DRAINING" => {
                    return Err(Error::InvalidParameter("Unable to Start a service that is still Draining.".into()))
                }
                _ => {}
            }
        }
        let desired = input.desired_count.unwrap_or(0);
        let at = now();
        let deployment = new_deployment(&definition, desired, &network, at, "ECS deployment {id} in progress.");
        let service = Service {
            service_arn: arn.clone(),
            service_name: input.service_name.clone(),
            cluster_arn,
            status: "ACTIVE".into(),
            desired_count: desired,
            running_count: 0,
            pending_count: 0,
            launch_type: "FARGATE".into(),
            platform_version: "LATEST".into(),
            platform_family: "Linux".into(),
            task_definition: definition,
            deployment_configuration: configuration,
            deployments: vec![deployment],
            events: Vec::new(),
            created_at: at,
            network_configuration: network,
            health_check_grace_period_seconds: input.health_check_grace_period_seconds,
            scheduling_strategy: "REPLICA".into(),
            deployment_controller: serde_json::json!({"type": "ECS"}),
            load_balancers: Vec::new(),
            service_registries: Vec::new(),
            placement_constraints: Vec::new(),
            placement_strategy: Vec::new(),
            enable_ecs_managed_tags: input.enable_ecs_managed_tags.unwrap_or(false),
            propagate_tags,
            enable_execute_command: false,
        };
        let record = ServiceRecord {
            service,
            tags: input.tags,
            previous: None,
            seen: BTreeSet::new(),
            failures: 0,
            not_before: 0.0,
            steady: false,
        };
        self.inner.store.ecs_apply(&[put_service(&record)?]).await?;
        state.services.insert(arn, record.clone());
        self.inner.scheduler.notify_one();
        Ok(record)
    }

    /// The ARN of an ACTIVE task definition.
    fn active_definition(&self, state: &State, reference: &str) -> Result<String, Error> {
        let record = self
            .find_definition(state, reference)
            .ok_or_else(|| Error::InvalidParameter("TaskDefinition not found.".into()))?;
        if record.definition.status != "ACTIVE" {
            return Err(Error::InvalidParameter("TaskDefinition is inactive.".into()));
        }
        Ok(record.definition.task_definition_arn.clone())
    }

    /// The ARN of a service named by name or ARN in a cluster.
    async fn service_arn(&self, state: &mut State, cluster: Option<&str>, reference: &str) -> Result<String, Error> {
        let cluster = self.cluster_name(state, cluster).await?;
        Ok(self.arn(&format!("service/{cluster}/{}", after_slash(reference))))
    }

    pub async fn update_service(&self, input: UpdateService) -> Result<ServiceRecord, Error> {
        let mut state = self.inner.state.lock().await;
        let arn = self.service_arn(&mut state, input.cluster.as_deref(), &input.service).await?;
        let mut record = state.services.get(&arn).cloned().ok_or(Error::ServiceNotFound)?;
        if record.service.status != "ACTIVE" {
            return Err(Error::ServiceNotActive);
        }
        let definition = match input.task_definition.as_deref() {
            Some(r) => Some(self.active_definition(&state, r)?),
            None => None,
        };
        let s = &mut record.service;
        if let Some(n) = &input.network_configuration {
            check_service_network(n)?;
        }
        if let Some(c) = input.deployment_configuration.clone() {
            s.deployment_configuration = c.completed()?;
        }
        if let Some(n) = input.desired_count {
            s.desired_count = n;
            s.deployments[0].desired_count = n;
        }
        if let Some(g) = input.health_check_grace_period_seconds {
            s.health_check_grace_period_seconds = Some(g);
        }
        let changed_definition = definition.as_ref().is_some_and(|d| *d != s.task_definition);
        if changed_definition || input.network_configuration.is_some() || input.force_new_deployment {
            if let Some(d) = definition {
                s.task_definition = d;
            }
            if let Some(n) = input.network_configuration {
                s.network_configuration = n;
            }
            let at = now();
            let deployment = new_deployment(
                &s.task_definition,
                s.desired_count,
                &s.network_configuration,
                at,
                "ECS deployment {id} in progress.",
            );
            let previous = s.deployments[0].clone();
            for d in &mut s.deployments {
                d.status = "ACTIVE".into();
                d.desired_count = 0;
                d.updated_at = at;
            }
            s.deployments.insert(0, deployment);
            if previous.rollout_state == "COMPLETED" {
                record.previous = Some(previous);
            }
            record.failures = 0;
            record.not_before = 0.0;
        }
        record.steady = false;
        self.inner.store.ecs_apply(&[put_service(&record)?]).await?;
        state.services.insert(arn, record.clone());
        self.inner.scheduler.notify_one();
        Ok(record)
    }

    /// Services by name or ARN; the unknown ones are `MISSING` failures.
    pub async fn describe_services(
        &self,
        cluster: Option<&str>,
        references: &[String],
    ) -> Result<(Vec<ServiceRecord>, Vec<crate::types::Failure>), Error> {
        let mut state = self.inner.state.lock().await;
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        for r in references {
            let arn = self.service_arn(&mut state, cluster, r).await?;
            match state.services.get(&arn) {
                Some(s) => found.push(s.clone()),
                None => failures.push(crate::types::Failure::missing(&arn)),
            }
        }
        Ok((found, failures))
    }

    /// The cluster's ACTIVE and DRAINING services' ARNs.
    pub async fn list_services(
        &self,
        cluster: Option<&str>,
        max: Option<u32>,
        token: Option<&str>,
    ) -> Result<crate::Page, Error> {
        let mut state = self.inner.state.lock().await;
        let name = self.cluster_name(&mut state, cluster).await?;
        let cluster_arn = &state.clusters[&name].cluster_arn;
        let arns = state
            .services
            .values()
            .filter(|s| s.service.cluster_arn == *cluster_arn && s.service.status != "INACTIVE")
            .map(|s| (s.service.service_arn.clone(), s.service.service_arn.clone()))
            .collect();
        crate::engine::page(arns, false, max, token)
    }

    /// Deletes a service: DRAINING while its tasks stop, then INACTIVE.
    /// Without `force` it must be scaled to 0 first, as on AWS.
    pub async fn delete_service(&self, cluster: Option<&str>, reference: &str, force: bool) -> Result<Service, Error> {
        let mut state = self.inner.state.lock().await;
        let arn = self.service_arn(&mut state, cluster, reference).await?;
        let mut record = state.services.get(&arn).cloned().ok_or(Error::ServiceNotFound)?;
        if record.service.status != "ACTIVE" {
            return Err(Error::ServiceNotActive);
        }
        if record.service.desired_count > 0 && !force {
            return Err(Error::InvalidParameter("The service cannot be stopped while it is scaled above 0.".into()));
        }
        record.service.status = "DRAINING".into();
        record.service.desired_count = 0;
        record.service.deployments.iter_mut().for_each(|d| d.desired_count = 0);
        self.inner.store.ecs_apply(&[put_service(&record)?]).await?;
        state.services.insert(arn, record.clone());
        self.inner.scheduler.notify_one();
        Ok(record.service)
    }

    /// One pass over every service: plans under the lock, then starts and
    /// stops tasks. The answer is whether anything was started or stopped
    /// (the caller passes again) and the next timed deadline.
    async fn reconcile(&self) -> (bool, Option<f64>) {
        let mut plans = Vec::new();
        let mut deadline: Option<f64> = None;
        {
            let mut state = self.inner.state.lock().await;
            let (mut changed, mut writes) = (Vec::new(), Vec::new());
            for (arn, before) in &state.services {
                let mut record = before.clone();
                let (plan, due) = self.plan(&state, &mut record);
                if let Some(due) = due {
                    deadline = Some(deadline.map_or(due, |d| d.min(due)));
                }
                if record != *before {
                    match put_service(&record) {
                        Ok(w) => writes.push(w),
                        Err(e) => tracing::error!(service = arn, error = %e, "serialising a service failed"),
                    }
                    changed.push(record);
                }
                plans.push((arn.clone(), plan));
            }
            if !writes.is_empty() {
                if let Err(e) = self.inner.store.ecs_apply(&writes).await {
                    // Nothing is done that is not stored; try again shortly.
                    tracing::error!(error = %e, "storing services failed");
                    return (false, Some(now() + 1.0));
                }
            }
            for record in changed {
                state.services.insert(record.service.service_arn.clone(), record);
            }
        }
        let mut acted = false;
        for (arn, plan) in plans {
            for (task, reason) in &plan.stop {
                acted = true;
                if let Err(e) = self.stop_as(task, "ServiceSchedulerInitiated", reason).await {
                    tracing::warn!(service = arn, task, error = %e, "stopping a service's task failed");
                }
            }
            if let Some((deployment, definition, count)) = plan.launch {
                acted = true;
                self.launch(&arn, &deployment, &definition, count).await;
            }
        }
        (acted, deadline)
    }

    /// Starts `count` tasks of a deployment and records what happened.
    async fn launch(&self, arn: &str, deployment: &str, definition: &str, count: u32) {
        let (cluster, name, network, propagate, service_tags) = {
            let state = self.inner.state.lock().await;
            let Some(r) = state.services.get(arn) else { return };
            let s = &r.service;
            (
                s.cluster_arn.clone(),
                s.service_name.clone(),
                s.network_configuration.clone(),
                s.propagate_tags.clone(),
                r.tags.clone(),
            )
        };
        // The service's own tags, or its definition's, as propagateTags says.
        let (tags, propagate_tags) = match propagate.as_str() {
            "SERVICE" => (service_tags, None),
            "TASK_DEFINITION" => (Vec::new(), Some(propagate)),
            _ => (Vec::new(), None),
        };
        let input = RunTask {
            cluster: Some(cluster),
            task_definition: definition.to_string(),
            count: Some(count.min(10)),
            launch_type: Some("FARGATE".into()),
            network_configuration: serde_json::from_value::<NetworkConfiguration>(network).ok(),
            started_by: Some(deployment.to_string()),
            group: Some(format!("service:{name}")),
            tags,
            propagate_tags,
            ..RunTask::default()
        };
        let outcome = self.start_tasks(input, true).await;
        let mut state = self.inner.state.lock().await;
        let Some(mut record) = state.services.get(arn).cloned() else { return };
        match outcome {
            Ok(out) => {
                let ids: Vec<String> = out.tasks.iter().map(|t| after_slash(&t.task_arn).to_string()).collect();
                if !ids.is_empty() {
                    let message = format!("(service {name}) has started {} tasks: {}.", ids.len(), task_list(&ids));
                    push_event(&mut record.service, message);
                    record.seen.extend(ids);
                }
                if let Some(f) = out.failures.first() {
                    let message = format!(
                        "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {}.",
                        f.reason
                    );
                    push_event(&mut record.service, message);
                    self.failed(&mut record);
                }
            }
            Err(e) => {
                push_event(&mut record.service, format!("(service {name}) failed to launch a task with ({e})."));
                self.failed(&mut record);
            }
        }
        match put_service(&record) {
            Ok(w) => match self.inner.store.ecs_apply(&[w]).await {
                Ok(()) => {
                    state.services.insert(arn.to_string(), record);
                }
                Err(e) => tracing::error!(service = arn, error = %e, "storing a service failed"),
            },
            Err(e) => tracing::error!(service = arn, error = %e, "serialising a service failed"),
        }
    }

    /// A failed launch or task: the next launch backs off.
    fn failed(&self, record: &mut ServiceRecord) {
        record.failures += 1;
        record.not_before = now() + backoff(record.failures).as_secs_f64();
    }

    /// Decides one service's starts and stops and updates its counts,
    /// deployments and events; the time it must be looked at again.
    fn plan(&self, state: &State, record: &mut ServiceRecord) -> (Plan, Option<f64>) {
        let mut plan = Plan::default();
        let mut due: Option<f64> = None;
        let at = now();
        let name = record.service.service_name.clone();
        let group = format!("service:{name}");
        let tasks: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|t| t.task.cluster_arn == record.service.cluster_arn && t.task.group == group)
            .collect();
        let live = |t: &&&TaskRecord| t.task.desired_status == "RUNNING";
        let id_of = |t: &TaskRecord| after_slash(&t.task.task_arn).to_string();

        // Tasks that stopped since the last pass, and whether on their own.
        let mut stopped_on_their_own = Vec::new();
        for id in record.seen.clone() {
            let Some(t) = state.tasks.get(&id) else {
                record.seen.remove(&id);
                continue;
            };
            if t.task.desired_status != "STOPPED" {
                continue;
            }
            record.seen.remove(&id);
            if !t.task.stop_code.as_deref().is_some_and(|c| NOT_FAILURES.contains(&c)) {
                stopped_on_their_own.push(t);
            }
        }
        for t in &stopped_on_their_own {
            if let Some(d) = record.service.deployments.iter_mut().find(|d| Some(&d.id) == t.task.started_by.as_ref()) {
                d.failed_tasks += 1;
                d.updated_at = at;
            }
            self.failed(record);
        }

        // Counts.
        let mut service_running = 0;
        let mut service_pending = 0;
        for d in &mut record.service.deployments {
            let mine: Vec<_> =
                tasks.iter().filter(live).filter(|t| t.task.started_by.as_ref() == Some(&d.id)).collect();
            let running = mine.iter().filter(|t| t.task.last_status == "RUNNING").count() as u32;
            let pending = mine.len() as u32 - running;
            if (running, pending) != (d.running_count, d.pending_count) {
                (d.running_count, d.pending_count, d.updated_at) = (running, pending, at);
            }
            service_running += running;
            service_pending += pending;
        }
        record.service.running_count = service_running;
        record.service.pending_count = service_pending;

        trip_breaker(record, at);

        let s = &record.service;
        let primary = &s.deployments[0];
        let desired = if s.status == "ACTIVE" { s.desired_count } else { 0 };
        let max_total = desired * s.deployment_configuration.max() / 100;
        let min_healthy = (desired * s.deployment_configuration.min()).div_ceil(100);
        let has_check = |t: &TaskRecord| {
            self.find_definition(state, &t.task.task_definition_arn).is_some_and(|d| {
                d.definition.container_definitions.iter().any(|c| c.essential && c.health_check.is_some())
            })
        };
        let healthy =
            |t: &TaskRecord| t.task.last_status == "RUNNING" && (t.task.health_status == "HEALTHY" || !has_check(t));
        let is_primary = |t: &TaskRecord| t.task.started_by.as_ref() == Some(&primary.id);
        let live_tasks: Vec<&TaskRecord> = tasks.iter().filter(live).copied().collect();

        // Unhealthy tasks go once their grace period is over.
        let grace = f64::from(s.health_check_grace_period_seconds.unwrap_or(0));
        let mut stopping: BTreeSet<String> = BTreeSet::new();
        for t in live_tasks.iter().filter(|t| t.task.health_status == "UNHEALTHY") {
            let until = t.task.started_at.unwrap_or(at) + grace;
            if until <= at {
                stopping.insert(id_of(t));
                plan.stop.push((id_of(t), UNHEALTHY_REASON.into()));
            } else {
                due = Some(due.map_or(until, |d: f64| d.min(until)));
            }
        }
        let unhealthy_events: Vec<String> = plan
            .stop
            .iter()
            .map(|(id, _)| format!("(service {name}) (task {id}) failed container health checks."))
            .collect();
        let remaining: Vec<&TaskRecord> =
            live_tasks.iter().filter(|t| !stopping.contains(&id_of(t))).copied().collect();
        let (mine, old): (Vec<&TaskRecord>, Vec<&TaskRecord>) = remaining.iter().partition(|t| is_primary(t));

        // Scaling the primary down: pending tasks first.
        let mut mine_sorted = mine.clone();
        mine_sorted.sort_by_key(|t| t.task.last_status == "RUNNING");
        let excess = (mine.len() as u32).saturating_sub(desired) as usize;
        let mut scale_down = Vec::new();
        for t in mine_sorted.iter().take(excess) {
            scale_down.push(id_of(t));
        }

        // Old deployments' tasks: those not yet RUNNING go at once; RUNNING
        // ones once enough others are healthy (a healthy one only while
        // enough stay healthy without it).
        let mut healthy_now = remaining.iter().filter(|t| healthy(t)).count() as u32;
        healthy_now -= mine_sorted.iter().take(excess).filter(|t| healthy(t)).count() as u32;
        let mut old_sorted = old.clone();
        old_sorted.sort_by_key(|t| (t.task.last_status == "RUNNING", healthy(t)));
        let mut old_stops = Vec::new();
        for t in old_sorted {
            let (running, counted) = (t.task.last_status == "RUNNING", healthy(t));
            if desired == 0 || !running || (!counted && healthy_now >= min_healthy) {
                old_stops.push(id_of(t));
            } else if counted && healthy_now > min_healthy {
                healthy_now -= 1;
                old_stops.push(id_of(t));
            }
        }

        // Starting the primary's tasks within maximumPercent.
        let total = remaining.len() as u32 - scale_down.len() as u32;
        let need = desired.saturating_sub(mine.len() as u32);
        let room = max_total.saturating_sub(total);
        let blocked = primary.rollout_state == "FAILED" || s.status != "ACTIVE";
        if need > 0 && room > 0 && !blocked {
            if record.not_before <= at {
                plan.launch = Some((primary.id.clone(), primary.task_definition.clone(), need.min(room)));
            } else {
                due = Some(due.map_or(record.not_before, |d: f64| d.min(record.not_before)));
            }
        }
        let primary_id = primary.id.clone();
        let stops: Vec<String> = scale_down.into_iter().chain(old_stops).collect();
        if !stops.is_empty() {
            let message = format!("(service {name}) has stopped {} running tasks: {}.", stops.len(), task_list(&stops));
            push_event(&mut record.service, message);
        }
        for m in unhealthy_events {
            push_event(&mut record.service, m);
        }
        let reason = format!("Scaling activity initiated by (deployment {primary_id})");
        plan.stop.extend(stops.into_iter().map(|id| (id, reason.clone())));
        for (id, _) in &plan.stop {
            record.seen.remove(id);
        }
        record.seen.extend(live_tasks.iter().map(|t| id_of(t)).filter(|id| !plan.stop.iter().any(|(s, _)| s == id)));

        self.settle(state, record, at);
        (plan, due)
    }

    /// Drops drained deployments, completes the primary's rollout and
    /// notes a steady state; a deleted service with no tasks left becomes
    /// INACTIVE.
    fn settle(&self, state: &State, record: &mut ServiceRecord, at: f64) {
        let s = &mut record.service;
        let name = s.service_name.clone();
        let group = format!("service:{name}");
        let unfinished = |id: &str| {
            state.tasks.values().any(|t| {
                t.task.cluster_arn == s.cluster_arn
                    && t.task.group == group
                    && !t.is_stopped()
                    && t.task.started_by.as_deref() == Some(id)
            })
        };
        let drained: Vec<String> =
            s.deployments.iter().skip(1).filter(|d| !unfinished(&d.id)).map(|d| d.id.clone()).collect();
        s.deployments.retain(|d| !drained.contains(&d.id));
        if s.status == "DRAINING" {
            if !state
                .tasks
                .values()
                .any(|t| t.task.group == group && t.task.cluster_arn == s.cluster_arn && !t.is_stopped())
            {
                s.status = "INACTIVE".into();
            }
            return;
        }
        let primary = &s.deployments[0];
        let steady = s.deployments.len() == 1
            && primary.running_count == s.desired_count
            && primary.pending_count == 0
            && s.running_count == s.desired_count;
        if steady && primary.rollout_state == "IN_PROGRESS" {
            let id = primary.id.clone();
            s.deployments[0].rollout_state = "COMPLETED".into();
            s.deployments[0].rollout_state_reason = format!("ECS deployment {id} completed.");
            s.deployments[0].updated_at = at;
            push_event(s, format!("(service {name}) (deployment {id}) deployment completed."));
        }
        if steady && !record.steady {
            push_event(&mut record.service, format!("(service {name}) has reached a steady state."));
            record.failures = 0;
            record.not_before = 0.0;
        }
        record.steady = steady;
    }
}

/// The circuit breaker: an IN_PROGRESS deployment whose failed tasks
/// reach the threshold is FAILED, and with rollback the previous one (still
/// draining, or remembered) becomes PRIMARY again.
fn trip_breaker(record: &mut ServiceRecord, at: f64) {
    let name = record.service.service_name.clone();
    let s = &mut record.service;
    let breaker = s.deployment_configuration.breaker();
    let primary = &s.deployments[0];
    if breaker.enable
        && primary.rollout_state == "IN_PROGRESS"
        && primary.failed_tasks >= failure_threshold(s.desired_count)
    {
        let failed_id = primary.id.clone();
        s.deployments[0].rollout_state = "FAILED".into();
        s.deployments[0].rollout_state_reason = "ECS deployment circuit breaker: tasks failed to start.".into();
        s.deployments[0].updated_at = at;
        push_event(s, format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."));
        let previous = record.previous.clone();
        let back_to = if breaker.rollback {
            let still_there = s.deployments.iter().position(|d| d.status == "ACTIVE").map(|i| s.deployments.remove(i));
            still_there.or_else(|| previous.map(|p| Deployment { id: deployment_id(), created_at: at, ..p }))
        } else {
            None
        };
        let s = &mut record.service;
        if let Some(mut back) = back_to {
            back.status = "PRIMARY".into();
            back.desired_count = s.desired_count;
            back.rollout_state = "IN_PROGRESS".into();
            back.rollout_state_reason =
                format!("ECS deployment circuit breaker: rolling back to deploymentId {}.", back.id);
            back.updated_at = at;
            s.task_definition = back.task_definition.clone();
            push_event(s, format!("(service {name}) rolling back to deployment {}.", back.id));
            for d in &mut s.deployments {
                d.status = "ACTIVE".into();
                d.desired_count = 0;
            }
            s.deployments.insert(0, back);
            record.failures = 0;
            record.not_before = 0.0;
        }
    }
}

fn new_deployment(definition: &str, desired: u32, network: &Value, at: f64, reason: &str) -> Deployment {
    let id = deployment_id();
    Deployment {
        status: "PRIMARY".into(),
        task_definition: definition.to_string(),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: at,
        updated_at: at,
        launch_type: "FARGATE".into(),
        platform_version: "1.4.0".into(),
        platform_family: "Linux".into(),
        network_configuration: network.clone(),
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: reason.replace("{id}", &id),
        id,
    }
}

/// A Fargate service needs an awsvpc configuration, as its tasks do.
fn check_service_network(network: &Value) -> Result<(), Error> {
    let parsed: Option<NetworkConfiguration> = serde_json::from_value(network.clone()).ok();
    crate::engine::check_network(parsed.as_ref()).map(|_| ())
}

/// Starts the scheduler; it holds the engine weakly and ends with it.
pub(crate) fn spawn_scheduler(ecs: &Ecs) {
    let engine = Arc::downgrade(&ecs.inner);
    let wake = ecs.inner.scheduler.clone();
    tokio::spawn(async move {
        loop {
            let Some(inner) = engine.upgrade() else { return };
            // A stopping node's tasks are stopped for it, not replaced.
            if inner.node_stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let ecs = Ecs { inner };
            let (mut acted, mut deadline) = ecs.reconcile().await;
            while acted {
                (acted, deadline) = ecs.reconcile().await;
            }
            drop(ecs);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep(Duration::from_secs_f64((at - now()).max(0.0))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                () = sleep => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use nimbus_core::Account;
    use nimbus_store::SqliteMetadata;
    use tokio::sync::mpsc;

    use super::*;
    use crate::runtime::{ContainerExit, ContainerLaunch, RunningTask, StopSignal, TaskLaunch, TaskRuntime};
    use crate::{Capacity, PullError, PulledImage, RegisterTaskDefinition, TaskImages};

    struct Images;

    #[async_trait::async_trait]
    impl TaskImages for Images {
        async fn pull(&self, _: &str) -> Result<PulledImage, PullError> {
            let root = nimbus_images::Root::unmanaged("/nonexistent".into());
            let entrypoint = vec!["/bin/server".into()];
            Ok(PulledImage {
                root,
                digest: "sha256:d".into(),
                entrypoint,
                cmd: vec![],
                env: vec![],
                working_dir: None,
                user: None,
            })
        }
    }

    /// Tasks of one container that run until signalled or until the test
    /// ends them (`crash`).
    #[derive(Default)]
    struct Fake {
        ends: Mutex<Vec<mpsc::UnboundedSender<i32>>>,
    }

    struct FakeTask {
        name: String,
        end: mpsc::UnboundedSender<i32>,
        ended: mpsc::UnboundedReceiver<i32>,
        done: bool,
    }

    #[async_trait::async_trait]
    impl TaskRuntime for Fake {
        async fn start(&self, task: TaskLaunch) -> Result<Box<dyn RunningTask>, String> {
            let (end, ended) = mpsc::unbounded_channel();
            self.ends.lock().unwrap().push(end.clone());
            Ok(Box::new(FakeTask { name: task.containers[0].name.clone(), end, ended, done: false }))
        }
    }

    impl Fake {
        fn crash(&self, i: usize) {
            self.ends.lock().unwrap()[i].send(1).unwrap();
        }
    }

    #[async_trait::async_trait]
    impl RunningTask for FakeTask {
        async fn next_exit(&mut self) -> Option<ContainerExit> {
            if self.done {
                return None;
            }
            let exit_code = self.ended.recv().await?;
            self.done = true;
            Some(ContainerExit { name: self.name.clone(), exit_code, oom: false })
        }

        fn signal(&mut self, _: StopSignal) {
            let _ = self.end.send(143);
        }

        fn endpoints(&self) -> Vec<(u16, std::net::SocketAddr)> {
            Vec::new()
        }

        async fn start_container(&mut self, _: ContainerLaunch) -> Result<Vec<(u16, std::net::SocketAddr)>, String> {
            Ok(Vec::new())
        }
    }

    async fn engine(db: &std::path::Path, runtime: Arc<Fake>) -> Ecs {
        let store = Arc::new(SqliteMetadata::open(db).await.unwrap());
        let account = Account { id: "000000000000".into(), region: "us-east-1".into() };
        let capacity = Capacity { cpu: 4096, memory_mib: 8192 };
        Ecs::open(account, store, Arc::new(Images), Some(runtime), capacity, None).await.unwrap()
    }

    async fn service_when(ecs: &Ecs, name: &str, what: impl Fn(&Service) -> bool) -> Service {
        for _ in 0..500 {
            let (found, _) = ecs.describe_services(None, &[name.to_string()]).await.unwrap();
            if what(&found[0].service) {
                return found[0].service.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the service never got there");
    }

    fn steady(s: &Service) -> bool {
        s.deployments.len() == 1 && s.running_count == s.desired_count && s.deployments[0].rollout_state == "COMPLETED"
    }

    #[tokio::test]
    async fn replaces_a_crashed_task_and_reconciles_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let runtime = Arc::new(Fake::default());
        let ecs = engine(&db, runtime.clone()).await;
        let definition: RegisterTaskDefinition = serde_json::from_value(serde_json::json!({
            "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
            "memory": "512", "containerDefinitions": [{"name": "web", "image": "x"}]}))
        .unwrap();
        ecs.register_task_definition(definition).await.unwrap();
        let input: CreateService = serde_json::from_value(serde_json::json!({
            "serviceName": "s", "taskDefinition": "web", "desiredCount": 2,
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}))
        .unwrap();
        ecs.create_service(input).await.unwrap();
        let s = service_when(&ecs, "s", steady).await;
        assert!(s.events.iter().any(|e| e.message == "(service s) has reached a steady state."));
        runtime.crash(0);
        let s = service_when(&ecs, "s", |s| s.deployments[0].failed_tasks == 1 && s.running_count == 2).await;
        assert_eq!(runtime.ends.lock().unwrap().len(), 3, "one replacement");
        assert!(s.events.iter().any(|e| e.message.starts_with("(service s) has started 1 tasks: (task ")));
        assert!(ecs.delete_service(None, "s", false).await.unwrap_err().to_string().contains("scaled above 0"));

        // A new node on the same store starts the service's tasks again.
        drop(ecs);
        let runtime = Arc::new(Fake::default());
        let ecs = engine(&db, runtime.clone()).await;
        service_when(&ecs, "s", |s| s.running_count == 2).await;
        assert_eq!(runtime.ends.lock().unwrap().len(), 2);
        ecs.delete_service(None, "s", true).await.unwrap();
        service_when(&ecs, "s", |s| s.status == "INACTIVE").await;
        let update = UpdateService { service: "s".into(), desired_count: Some(1), ..UpdateService::default() };
        assert!(matches!(ecs.update_service(update).await, Err(Error::ServiceNotActive)));
    }

    #[test]
    fn thresholds_and_backoff() {
        assert_eq!((failure_threshold(1), failure_threshold(10), failure_threshold(1000)), (3, 5, 200));
        assert_eq!(
            (backoff(1), backoff(2), backoff(3)),
            (Duration::ZERO, Duration::from_millis(500), Duration::from_secs(1))
        );
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
