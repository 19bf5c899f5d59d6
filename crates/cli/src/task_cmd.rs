//! `nimbus task list|logs|stop`: a convenience over the ECS API (the same
//! calls `aws ecs` makes) and, for `logs`, CloudWatch Logs' FilterLogEvents
//! on the task's `awslogs` streams.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{AwsError, Client};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum TaskCommand {
    /// List running tasks (with --all, stopped ones too), their status,
    /// private address and the host address of each published port.
    List {
        /// The cluster (name or ARN); `default` if not given.
        #[arg(long)]
        cluster: Option<String>,
        /// Include stopped tasks (kept for an hour after they stop).
        #[arg(long)]
        all: bool,
    },
    /// Print the `awslogs` lines of a task's containers.
    Logs {
        /// Task id or ARN.
        task: String,
        /// The cluster (name or ARN); `default` if not given.
        #[arg(long)]
        cluster: Option<String>,
        /// Only this container's lines.
        #[arg(long)]
        container: Option<String>,
    },
    /// Stop a task (SIGTERM, then SIGKILL after its stop timeout).
    Stop {
        /// Task id or ARN.
        task: String,
        /// The cluster (name or ARN); `default` if not given.
        #[arg(long)]
        cluster: Option<String>,
        /// Why, as DescribeTasks reports it.
        #[arg(long)]
        reason: Option<String>,
    },
}

async fn call(client: &Client, service: &str, target: &str, body: Value) -> anyhow::Result<Value> {
    let headers = [("x-amz-target", target), ("content-type", "application/x-amz-json-1.1")];
    let (_, bytes) = client.send(service, "POST", "/", Some(serde_json::to_vec(&body)?), &headers).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

async fn ecs(client: &Client, op: &str, body: Value) -> anyhow::Result<Value> {
    call(client, "ecs", &format!("AmazonEC2ContainerServiceV20141113.{op}"), body).await
}

fn with_cluster(mut body: Value, cluster: &Option<String>) -> Value {
    if let Some(c) = cluster {
        body["cluster"] = c.clone().into();
    }
    body
}

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

pub async fn task(cmd: TaskCommand, args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    match cmd {
        TaskCommand::List { cluster, all } => {
            let statuses: &[&str] = if all { &["RUNNING", "STOPPED"] } else { &["RUNNING"] };
            let mut arns = Vec::new();
            for status in statuses {
                let mut token: Option<String> = None;
                loop {
                    let mut body = with_cluster(json!({"desiredStatus": status}), &cluster);
                    if let Some(t) = &token {
                        body["nextToken"] = t.clone().into();
                    }
                    let page = ecs(&client, "ListTasks", body).await?;
                    arns.extend(page["taskArns"].as_array().cloned().unwrap_or_default());
                    token = page["nextToken"].as_str().map(str::to_string);
                    if token.is_none() {
                        break;
                    }
                }
            }
            let mut tasks = Vec::new();
            for chunk in arns.chunks(100) {
                let got = ecs(&client, "DescribeTasks", with_cluster(json!({"tasks": chunk}), &cluster)).await?;
                tasks.extend(got["tasks"].as_array().cloned().unwrap_or_default());
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
                return Ok(());
            }
            println!("{:<34} {:<14} {:<28} {:<15} PORTS", "TASK", "STATUS", "DEFINITION", "ADDRESS");
            for t in &tasks {
                let ports: Vec<String> = t["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| {
                        let name = c["name"].as_str().unwrap_or_default().to_string();
                        c["networkBindings"].as_array().cloned().unwrap_or_default().into_iter().map(move |b| {
                            format!(
                                "{name}:{}->{}:{}",
                                b["containerPort"],
                                b["bindIP"].as_str().unwrap_or(""),
                                b["hostPort"]
                            )
                        })
                    })
                    .collect();
                let details = t["attachments"].as_array().into_iter().flatten().flat_map(|a| a["details"].as_array());
                let address = details.flatten().find(|d| d["name"] == "privateIPv4Address");
                println!(
                    "{:<34} {:<14} {:<28} {:<15} {}",
                    short(t["taskArn"].as_str().unwrap_or_default()),
                    t["lastStatus"].as_str().unwrap_or_default(),
                    short(t["taskDefinitionArn"].as_str().unwrap_or_default()),
                    address.and_then(|d| d["value"].as_str()).unwrap_or("-"),
                    ports.join(" ")
                );
            }
            Ok(())
        }
        TaskCommand::Logs { task, cluster, container } => {
            let got = ecs(&client, "DescribeTasks", with_cluster(json!({"tasks": [task]}), &cluster)).await?;
            let Some(t) = got["tasks"].get(0) else { anyhow::bail!("task {task} not found") };
            let definition =
                ecs(&client, "DescribeTaskDefinition", json!({"taskDefinition": t["taskDefinitionArn"]})).await?;
            let id = short(t["taskArn"].as_str().unwrap_or_default());
            let mut printed = false;
            for def in definition["taskDefinition"]["containerDefinitions"].as_array().into_iter().flatten() {
                let name = def["name"].as_str().unwrap_or_default();
                let log = &def["logConfiguration"];
                if container.as_deref().is_some_and(|c| c != name) || log["logDriver"] != "awslogs" {
                    continue;
                }
                let group = log["options"]["awslogs-group"].as_str().unwrap_or_default();
                let prefix = log["options"]["awslogs-stream-prefix"].as_str().unwrap_or_default();
                let stream = format!("{prefix}/{name}/{id}");
                print_stream(&client, group, &stream, args.json).await?;
                printed = true;
            }
            if !printed {
                anyhow::bail!("no container of task {id} logs with the awslogs driver");
            }
            Ok(())
        }
        TaskCommand::Stop { task, cluster, reason } => {
            let mut body = with_cluster(json!({"task": task}), &cluster);
            if let Some(r) = reason {
                body["reason"] = r.into();
            }
            let stopped = ecs(&client, "StopTask", body).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stopped["task"])?);
            } else {
                println!("stopping {}", stopped["task"]["taskArn"].as_str().unwrap_or_default());
            }
            Ok(())
        }
    }
}

/// Prints a stream's lines, oldest first.
async fn print_stream(client: &Client, group: &str, stream: &str, as_json: bool) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": group, "logStreamNames": [stream]});
        if let Some(t) = &token {
            body["nextToken"] = t.clone().into();
        }
        let page = match call(client, "logs", "Logs_20140328.FilterLogEvents", body).await {
            Ok(page) => page,
            Err(e) if AwsError::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in page["events"].as_array().into_iter().flatten() {
            if as_json {
                println!("{e}");
            } else {
                println!("{}", e["message"].as_str().unwrap_or_default());
            }
        }
        token = page["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            return Ok(());
        }
    }
}
