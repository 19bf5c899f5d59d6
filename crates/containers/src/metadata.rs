//! What a task's containers reach inside their network namespace, as on
//! Fargate: the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`:
//! `${URI}` is the container, `${URI}/task` the task, `/stats` minimal),
//! task-role credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, answered
//! only with the task's `AWS_CONTAINER_AUTHORIZATION_TOKEN`) and the node's
//! API (`AWS_ENDPOINT_URL`), so that an AWS SDK in the container calls back
//! into Nimbus as the task.
//!
//! Fargate serves these at 169.254.170.2. Here that address is added to
//! the loopback of the task's own network namespace, and the listeners are
//! bound there from a thread that has joined it (the sockets keep the
//! namespace; tokio serves them). One listener per task, so a task reaches
//! only its own: no other namespace has the address. Port 80 is left to
//! the containers (an app listening on `0.0.0.0:80` would collide with it);
//! the endpoints use the ports the ECS agent reserves, 51679 and 51678.
//!
//! It reads the task's state from the engine and must not change it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::engine::Ecs;
use crate::runtime::InsideTask;
use crate::types::{ContainerDefinition, TaskRecord};
use crate::Platform;

/// The link-local address Fargate serves task metadata and credentials at.
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Metadata and credentials.
pub const CREDENTIALS_PORT: u16 = 51679;
/// The node's API, forwarded.
const API_PORT: u16 = 51678;
/// Connections one task may hold open to each of its endpoints at once.
const TASK_CONNECTIONS: usize = 64;
const CREDENTIALS_PATH: &str = "/v2/credentials";
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST: usize = 16 * 1024;

/// The environment that points a container at the endpoints;
/// `container_id` is the last part of its ARN.
pub fn env(container_id: &str, token: &str) -> Vec<(String, String)> {
    let base = format!("http://{ENDPOINT_IP}:{CREDENTIALS_PORT}");
    vec![
        ("ECS_CONTAINER_METADATA_URI_V4".into(), format!("{base}/v4/{container_id}")),
        ("ECS_CONTAINER_METADATA_URI".into(), format!("{base}/v3/{container_id}")),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), format!("{base}{CREDENTIALS_PATH}")),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), token.into()),
        ("AWS_ENDPOINT_URL".into(), format!("http://{ENDPOINT_IP}:{API_PORT}")),
    ]
}

/// A task's secret for its credentials endpoint.
pub fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// One task's endpoints.
pub struct Endpoint {
    pub ecs: Ecs,
    pub task_id: String,
    pub token: String,
    pub platform: Platform,
}

#[async_trait::async_trait]
impl InsideTask for Endpoint {
    async fn start(&self, netns_pid: u32) -> std::io::Result<Vec<JoinHandle<()>>> {
        let [metadata, api] = tokio::task::spawn_blocking(move || bind_inside(netns_pid))
            .await
            .map_err(std::io::Error::other)??
            .map(tokio::net::TcpListener::from_std);
        let (metadata, api) = (metadata?, api?);
        let me = Arc::new(Endpoint {
            ecs: self.ecs.clone(),
            task_id: self.task_id.clone(),
            token: self.token.clone(),
            platform: self.platform.clone(),
        });
        // Each listener holds at most TASK_CONNECTIONS of the task's
        // connections (the rest wait in its backlog): each costs the node a
        // descriptor, two when forwarded, and the forwarded ones a slot of
        // the node's API, shared by all sandboxes.
        let open = Arc::new(tokio::sync::Semaphore::new(TASK_CONNECTIONS));
        let serving = tokio::spawn(async move {
            while let Ok(permit) = open.clone().acquire_owned().await {
                let Ok((stream, _)) = metadata.accept().await else { return };
                let me = me.clone();
                tokio::spawn(async move {
                    me.answer(stream).await;
                    drop(permit);
                });
            }
        });
        let (target, node) = (self.platform.api, self.platform.api_connections.clone());
        let open = Arc::new(tokio::sync::Semaphore::new(TASK_CONNECTIONS));
        let forwarding = tokio::spawn(async move {
            while let Ok(permit) = open.clone().acquire_owned().await {
                let Ok((mut inside, _)) = api.accept().await else { return };
                let node = node.clone();
                tokio::spawn(async move {
                    let Ok(_shared) = node.acquire_owned().await else { return };
                    if let Ok(mut outside) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                    }
                    drop(permit);
                });
            }
        });
        Ok(vec![serving, forwarding])
    }
}

/// Adds [`ENDPOINT_IP`] to the loopback of the network namespace of `pid`
/// and binds the endpoints' listeners there.
fn bind_inside(pid: u32) -> std::io::Result<[std::net::TcpListener; 2]> {
    crate::mesh::inside_task(pid, || {
        crate::mesh::ip(&format!("addr add {ENDPOINT_IP}/32 dev lo\n"))?;
        let listen = |port| crate::mesh::listen(SocketAddr::from((ENDPOINT_IP, port)));
        Ok([listen(CREDENTIALS_PORT)?, listen(API_PORT)?])
    })
}

impl Endpoint {
    /// Reads one request and answers it; the connection then closes.
    async fn answer(&self, mut stream: tokio::net::TcpStream) {
        let Ok(Some(head)) =
            tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await.map(Result::ok).map(Option::flatten)
        else {
            return;
        };
        let (status, body) = self.route(&head).await;
        let body = body.to_string();
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            405 => "Method Not Allowed",
            _ => "Not Found",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    async fn route(&self, head: &Head) -> (u16, Value) {
        if head.method != "GET" {
            return (405, json!({"message": "only GET is served here"}));
        }
        let Some((record, defs)) = self.ecs.snapshot(&self.task_id).await else {
            return (404, json!({"message": "task not found"}));
        };
        if head.path == CREDENTIALS_PATH {
            if head.authorization.as_deref() != Some(self.token.as_str()) {
                return (401, json!({"code": "AccessDenied", "message": "Authorization token is missing or invalid"}));
            }
            return (200, self.credentials(&record, &defs.1));
        }
        let rest = head.path.strip_prefix("/v4/").or_else(|| head.path.strip_prefix("/v3/"));
        let Some((container_id, what)) = rest.map(|r| r.split_once('/').unwrap_or((r, ""))) else {
            return (404, json!({"message": "not found"}));
        };
        let Some(index) =
            record.task.containers.iter().position(|c| c.container_arn.ends_with(&format!("/{container_id}")))
        else {
            return (404, json!({"message": "unknown container"}));
        };
        match what {
            "" => (200, container_json(&record, &defs.0, index)),
            "task" => (200, task_json(&record, &defs.0)),
            "stats" => (200, json!({})),
            "task/stats" => {
                let ids = record.task.containers.iter().map(|c| (docker_id(&c.container_arn), json!({})));
                (200, Value::Object(ids.collect()))
            }
            _ => (404, json!({"message": "not found"})),
        }
    }

    fn credentials(&self, record: &TaskRecord, role: &Option<String>) -> Value {
        let role_arn = record.task.overrides.task_role_arn.clone().or_else(|| role.clone());
        // The task, not its role, is who calls: refusals name it.
        let subject = record.task.task_arn.clone();
        let keys = self.platform.credentials.issue(&subject);
        json!({
            "AccessKeyId": keys.access_key_id,
            "SecretAccessKey": keys.secret_access_key,
            "Token": keys.session_token,
            "Expiration": rfc3339(keys.expiration as f64),
            "RoleArn": role_arn.unwrap_or(subject),
        })
    }
}

/// A request's line and the one header the endpoints read.
struct Head {
    method: String,
    path: String,
    authorization: Option<String>,
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else { return Ok(None) };
    let path = target.split('?').next().unwrap_or(target).trim_end_matches('/').to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    Ok(Some(Head { method: method.to_string(), path, authorization }))
}

fn rfc3339(epoch_s: f64) -> String {
    chrono::DateTime::from_timestamp_millis((epoch_s * 1000.0) as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn docker_id(container_arn: &str) -> String {
    container_arn.rsplit('/').next().unwrap_or(container_arn).to_string()
}

/// `(family, revision)` of a task definition ARN.
fn family_revision(arn: &str) -> (String, String) {
    let short = arn.rsplit('/').next().unwrap_or(arn);
    let (f, r) = short.rsplit_once(':').unwrap_or((short, ""));
    (f.to_string(), r.to_string())
}

/// The task's address as its containers see it.
fn address(record: &TaskRecord) -> String {
    crate::engine::private_address(&record.task).map_or_else(|| "127.0.0.1".into(), |a| a.to_string())
}

fn container_json(record: &TaskRecord, defs: &[ContainerDefinition], index: usize) -> Value {
    let t = &record.task;
    let c = &t.containers[index];
    let def = defs.iter().find(|d| d.name == c.name);
    let (family, revision) = family_revision(&t.task_definition_arn);
    let log = def.and_then(|d| d.log_configuration.as_ref());
    let id = docker_id(&c.container_arn);
    let mut v = json!({
        "DockerId": id,
        "Name": c.name,
        "DockerName": format!("ecs-{family}-{revision}-{}-{id}", c.name),
        "Image": c.image,
        "ImageID": c.image_digest,
        "Labels": {
            "com.amazonaws.ecs.cluster": t.cluster_arn,
            "com.amazonaws.ecs.container-name": c.name,
            "com.amazonaws.ecs.task-arn": t.task_arn,
            "com.amazonaws.ecs.task-definition-family": family,
            "com.amazonaws.ecs.task-definition-version": revision,
        },
        "DesiredStatus": t.desired_status,
        "KnownStatus": c.last_status,
        "Limits": {"CPU": c.cpu.parse::<u32>().unwrap_or(0), "Memory": c.memory.as_deref().and_then(|m| m.parse::<u32>().ok()).unwrap_or(record.memory_mib)},
        "CreatedAt": rfc3339(t.created_at),
        "Type": "NORMAL",
        "ContainerARN": c.container_arn,
        "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [address(record)]}],
    });
    if let Some(at) = t.started_at {
        v["StartedAt"] = rfc3339(at).into();
    }
    if let Some(log) = log {
        v["LogDriver"] = log["logDriver"].clone();
        v["LogOptions"] = log["options"].clone();
    }
    if let Some(code) = c.exit_code {
        v["ExitCode"] = code.into();
    }
    v
}

fn task_json(record: &TaskRecord, defs: &[ContainerDefinition]) -> Value {
    let t = &record.task;
    let (family, revision) = family_revision(&t.task_definition_arn);
    let containers: Vec<Value> = (0..t.containers.len()).map(|i| container_json(record, defs, i)).collect();
    let mut v = json!({
        "Cluster": t.cluster_arn,
        "TaskARN": t.task_arn,
        "Family": family,
        "Revision": revision,
        "DesiredStatus": t.desired_status,
        "KnownStatus": t.last_status,
        "Limits": {"CPU": f64::from(record.cpu) / 1024.0, "Memory": record.memory_mib},
        "AvailabilityZone": t.availability_zone,
        "LaunchType": "FARGATE",
        "Containers": containers,
    });
    for (key, at) in [("PullStartedAt", t.pull_started_at), ("PullStoppedAt", t.pull_stopped_at)] {
        if let Some(at) = at {
            v[key] = rfc3339(at).into();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_points_at_the_task_address() {
        let env = env("abc", "tok");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ECS_CONTAINER_METADATA_URI_V4"), Some("http://169.254.170.2:51679/v4/abc"));
        assert_eq!(get("AWS_CONTAINER_CREDENTIALS_FULL_URI"), Some("http://169.254.170.2:51679/v2/credentials"));
        assert_eq!(get("AWS_CONTAINER_AUTHORIZATION_TOKEN"), Some("tok"));
        assert_eq!(family_revision("arn:aws:ecs:r:1:task-definition/web:3"), ("web".into(), "3".into()));
        assert_eq!(rfc3339(1.5), "1970-01-01T00:00:01.500Z");
    }
}
