//! The ECS API (JSON 1.1, `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Op>`,
//! SigV4 service `ecs`): the model's checks (`nimbus-model`, botocore's ecs
//! model), the request and answer documents, and ECS's error shape
//! (`{"__type", "message"}`). The rules and state are
//! `nimbus_containers::Ecs`'s; its documents are already in ECS's field
//! names, so answers are built from them directly.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_containers::types::Tag;
use nimbus_containers::{
    CreateService, Ecs, Error, ListTaskDefinitions, ListTasks, Page, RegisterTaskDefinition, RunTask, ServiceRecord,
    UpdateService,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::json_front::{Failure, JsonService};
use crate::{Api, ApiError};

const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const SERVICE: JsonService = JsonService {
    name: "ecs",
    target_prefix: TARGET_PREFIX,
    // A large task definition.
    body_max: 1 << 20,
    invalid: "InvalidParameterException",
    precheck: crate::json_front::no_precheck,
};

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Client(_) => "ClientException",
            Error::InvalidParameter(_) => "InvalidParameterException",
            Error::ClusterNotFound => "ClusterNotFoundException",
            Error::ClusterContainsTasks => "ClusterContainsTasksException",
            Error::ClusterContainsServices => "ClusterContainsServicesException",
            Error::ResourceNotFound => "ResourceNotFoundException",
            Error::ServiceNotFound => "ServiceNotFoundException",
            Error::ServiceNotActive => "ServiceNotActiveException",
            Error::Store(detail) => return Self::internal("ServerException", detail),
        };
        Self::new(kind, e.to_string())
    }
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    serve_inner(api, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(api: &Api, req: Request<Body>) -> Result<Response, Failure> {
    let call = SERVICE.accept(api, req).await?;
    let ecs = api
        .ecs
        .as_ref()
        .ok_or_else(|| Failure::from(ApiError::Unavailable("ECS is not served by this node".into())))?;
    let out = execute(ecs, &call.op, call.input).await?;
    Ok((StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], out.to_string()).into_response())
}

/// Whether an unsigned request names an ECS operation (so that ECS
/// refuses it, in its own shape).
pub fn is_unsigned_ecs(headers: &axum::http::HeaderMap) -> bool {
    SERVICE.is_target_of(headers)
}

/// Reads an operation's input from the request document.
fn input<T: DeserializeOwned>(body: Value) -> Result<T, Failure> {
    serde_json::from_value(body).map_err(|e| Failure::new("SerializationException", e.to_string()))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn with_token(mut out: Value, page: &Page, key: &str) -> Value {
    out[key] = json!(page.items);
    if let Some(t) = &page.next_token {
        out["nextToken"] = json!(t);
    }
    out
}

/// A service as answered, with its tags if asked for.
fn service_json(record: &ServiceRecord, tags: bool) -> Value {
    let mut v = to_json(&record.service);
    if tags {
        v["tags"] = to_json(&record.tags);
    }
    v
}

fn includes_tags(include: &[String]) -> bool {
    include.iter().any(|i| i == "TAGS")
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Common {
    cluster: Option<String>,
    cluster_name: Option<String>,
    clusters: Vec<String>,
    include: Vec<String>,
    task_definition: Option<String>,
    task_definitions: Vec<String>,
    tasks: Vec<String>,
    task: Option<String>,
    reason: Option<String>,
    family_prefix: Option<String>,
    status: Option<String>,
    max_results: Option<u32>,
    next_token: Option<String>,
    resource_arn: Option<String>,
    tags: Vec<Tag>,
    tag_keys: Vec<String>,
    service: Option<String>,
    services: Vec<String>,
    force: bool,
    settings: Vec<Value>,
}

fn required(value: Option<String>, name: &str) -> Result<String, Failure> {
    value.ok_or_else(|| Failure::new("InvalidParameterException", format!("{name} is required.")))
}

/// A list AWS requires at least one of (DescribeTasks' `tasks`, DescribeServices' `services`).
fn not_empty<T>(list: &[T], what: &str) -> Result<(), Failure> {
    match list.is_empty() {
        true => Err(Failure::new("InvalidParameterException", format!("{what} cannot be empty."))),
        false => Ok(()),
    }
}

/// Members that would change what runs, which Nimbus cannot honour:
/// refused by name rather than ignored (ignored, a Terraform plan would
/// show them changed at every apply, and a user would believe them set).
const NOT_OFFERED: &[(&str, &str, &str)] = &[
    ("CreateCluster", "capacityProviders", "tasks run as FARGATE; capacity providers are not offered"),
    ("CreateCluster", "defaultCapacityProviderStrategy", "tasks run as FARGATE; capacity providers are not offered"),
    ("CreateCluster", "configuration", "ECS Exec is not offered"),
    ("PutClusterCapacityProviders", "capacityProviders", "tasks run as FARGATE; capacity providers are not offered"),
    (
        "PutClusterCapacityProviders",
        "defaultCapacityProviderStrategy",
        "tasks run as FARGATE; capacity providers are not offered",
    ),
    ("CreateService", "capacityProviderStrategy", "use launchType FARGATE; capacity providers are not offered"),
    ("UpdateService", "capacityProviderStrategy", "use launchType FARGATE; capacity providers are not offered"),
    ("CreateService", "enableExecuteCommand", "ECS Exec is not offered"),
    ("UpdateService", "enableExecuteCommand", "ECS Exec is not offered"),
];

/// An empty list, `false` or `null` sets nothing and is accepted.
fn not_offered(op: &str, body: &Value) -> Result<(), Failure> {
    let sets = |v: &Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    match NOT_OFFERED.iter().find(|(o, member, _)| *o == op && sets(&body[*member])) {
        Some((_, member, why)) => {
            Err(Failure::new("InvalidParameterException", format!("{member} is not supported by Nimbus: {why}.")))
        }
        None => Ok(()),
    }
}

async fn execute(ecs: &Ecs, op: &str, body: Value) -> Result<Value, Failure> {
    not_offered(op, &body)?;
    let c: Common = match op {
        "RegisterTaskDefinition"
        | "RunTask"
        | "ListTasks"
        | "ListTaskDefinitions"
        | "CreateService"
        | "UpdateService" => Common::default(),
        _ => input(body.clone())?,
    };
    Ok(match op {
        "CreateCluster" => {
            json!({ "cluster": to_json(&ecs.create_cluster(c.cluster_name.as_deref(), c.tags, &c.settings).await?) })
        }
        // Of UpdateCluster's members only `settings` is served (Container
        // Insights, recorded and reported); the rest is refused by name.
        // Only the reset to none is taken (what removing the providers sends).
        "PutClusterCapacityProviders" => {
            json!({ "cluster": to_json(&ecs.update_cluster_settings(c.cluster.as_deref(), &[]).await?) })
        }
        "UpdateCluster" | "UpdateClusterSettings" => {
            if let Some(member) = ["configuration", "serviceConnectDefaults"].into_iter().find(|m| !body[*m].is_null())
            {
                return Err(Failure::new(
                    "UnsupportedFeatureException",
                    format!("UpdateCluster's {member} is not supported by Nimbus yet."),
                ));
            }
            json!({ "cluster": to_json(&ecs.update_cluster_settings(c.cluster.as_deref(), &c.settings).await?) })
        }
        "DescribeClusters" => {
            let (clusters, failures) = ecs.describe_clusters(&c.clusters).await?;
            let tags = includes_tags(&c.include);
            let clusters: Vec<Value> = clusters
                .iter()
                .map(|cl| {
                    let mut v = to_json(cl);
                    if !tags {
                        v.as_object_mut().map(|o| o.remove("tags"));
                    }
                    v
                })
                .collect();
            json!({ "clusters": clusters, "failures": to_json(&failures) })
        }
        "ListClusters" => {
            with_token(json!({}), &ecs.list_clusters(c.max_results, c.next_token.as_deref()).await?, "clusterArns")
        }
        "DeleteCluster" => json!({ "cluster": to_json(&ecs.delete_cluster(&required(c.cluster, "cluster")?).await?) }),
        "RegisterTaskDefinition" => {
            let r = ecs.register_task_definition(input::<RegisterTaskDefinition>(body)?).await?;
            json!({ "taskDefinition": to_json(&r.definition), "tags": to_json(&r.tags) })
        }
        "DescribeTaskDefinition" => {
            let r = ecs.describe_task_definition(&required(c.task_definition, "taskDefinition")?).await?;
            let mut out = json!({ "taskDefinition": to_json(&r.definition) });
            if includes_tags(&c.include) {
                out["tags"] = to_json(&r.tags);
            }
            out
        }
        "ListTaskDefinitions" => {
            let q: ListTaskDefinitions = input(body)?;
            with_token(json!({}), &ecs.list_task_definitions(&q).await?, "taskDefinitionArns")
        }
        "ListTaskDefinitionFamilies" => {
            let page = ecs
                .list_task_definition_families(
                    c.family_prefix.as_deref(),
                    c.status.as_deref(),
                    c.max_results,
                    c.next_token.as_deref(),
                )
                .await?;
            with_token(json!({}), &page, "families")
        }
        "DeregisterTaskDefinition" => {
            let d = ecs.deregister_task_definition(&required(c.task_definition, "taskDefinition")?).await?;
            json!({ "taskDefinition": to_json(&d) })
        }
        "DeleteTaskDefinitions" => {
            let (deleted, failures) = ecs.delete_task_definitions(&c.task_definitions).await?;
            let deleted: Vec<Value> = deleted.iter().map(to_json).collect();
            json!({ "taskDefinitions": deleted, "failures": to_json(&failures) })
        }
        "RunTask" => {
            let out = ecs.run_task(input::<RunTask>(body)?).await?;
            json!({ "tasks": to_json(&out.tasks), "failures": to_json(&out.failures) })
        }
        "DescribeTasks" => {
            not_empty(&c.tasks, "Tasks")?;
            if c.tasks.len() > 100 {
                return Err(Failure::new("InvalidParameterException", "Tasks can have at most 100 items."));
            }
            let out = ecs.describe_tasks(c.cluster.as_deref(), &c.tasks).await?;
            let tags = includes_tags(&c.include);
            let tasks: Vec<Value> = out
                .tasks
                .iter()
                .map(|(t, tag_list)| {
                    let mut v = to_json(t);
                    if tags {
                        v["tags"] = to_json(tag_list);
                    }
                    v
                })
                .collect();
            json!({ "tasks": tasks, "failures": to_json(&out.failures) })
        }
        "ListTasks" => {
            let q: ListTasks = input(body)?;
            with_token(json!({}), &ecs.list_tasks(&q).await?, "taskArns")
        }
        "StopTask" => {
            let task = ecs.stop_task(c.cluster.as_deref(), &required(c.task, "task")?, c.reason.as_deref()).await?;
            json!({ "task": to_json(&task) })
        }
        "CreateService" => {
            json!({ "service": service_json(&ecs.create_service(input::<CreateService>(body)?).await?, false) })
        }
        "UpdateService" => {
            json!({ "service": service_json(&ecs.update_service(input::<UpdateService>(body)?).await?, false) })
        }
        "DescribeServices" => {
            not_empty(&c.services, "Services")?;
            let (found, failures) = ecs.describe_services(c.cluster.as_deref(), &c.services).await?;
            let tags = includes_tags(&c.include);
            let services: Vec<Value> = found.iter().map(|s| service_json(s, tags)).collect();
            json!({ "services": services, "failures": to_json(&failures) })
        }
        "ListServices" => {
            let page = ecs.list_services(c.cluster.as_deref(), c.max_results, c.next_token.as_deref()).await?;
            with_token(json!({}), &page, "serviceArns")
        }
        "DeleteService" => {
            let service = ecs.delete_service(c.cluster.as_deref(), &required(c.service, "service")?, c.force).await?;
            json!({ "service": to_json(&service) })
        }
        "TagResource" => {
            ecs.tag_resource(&required(c.resource_arn, "resourceArn")?, c.tags).await?;
            json!({})
        }
        "UntagResource" => {
            ecs.untag_resource(&required(c.resource_arn, "resourceArn")?, &c.tag_keys).await?;
            json!({})
        }
        "ListTagsForResource" => {
            json!({ "tags": to_json(&ecs.list_tags(&required(c.resource_arn, "resourceArn")?).await?) })
        }
        other => {
            return Err(Failure::new("UnsupportedFeatureException", format!("{other} is not supported by Nimbus yet.")))
        }
    })
}
