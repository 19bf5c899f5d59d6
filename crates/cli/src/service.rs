//! `nimbus service list`: ECS services with their counts and rollout, over
//! the same signed ECS API (`ListServices`, `DescribeServices`) that the
//! aws CLI uses.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::{table, text};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// List a cluster's services: desired, running and pending counts, the
    /// task definition and the primary deployment's rollout state.
    List {
        /// Cluster name or ARN (default: `default`).
        #[arg(long, default_value = "default")]
        cluster: String,
    },
}

/// One ECS call (JSON 1.1).
async fn ecs(client: &Client, op: &str, input: Value) -> anyhow::Result<Value> {
    let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
    let extra = [("x-amz-target", target.as_str()), ("content-type", "application/x-amz-json-1.1")];
    let (_, body) = client.send("ecs", "POST", "/", Some(input.to_string().into_bytes()), &extra).await?;
    Ok(serde_json::from_slice(&body)?)
}

pub async fn run(cmd: ServiceCommand, args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    let ServiceCommand::List { cluster } = cmd;
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "cluster": cluster });
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let page = ecs(&client, "ListServices", input).await?;
        arns.extend(page["serviceArns"].as_array().cloned().unwrap_or_default());
        token = page["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // DescribeServices takes at most 10 services.
    let mut services = Vec::new();
    for chunk in arns.chunks(10) {
        let page = ecs(&client, "DescribeServices", json!({ "cluster": cluster, "services": chunk })).await?;
        services.extend(page["services"].as_array().cloned().unwrap_or_default());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "services": services }))?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let definition = text(&s["taskDefinition"]);
            vec![
                text(&s["serviceName"]),
                text(&s["status"]),
                text(&s["desiredCount"]),
                text(&s["runningCount"]),
                text(&s["pendingCount"]),
                definition.rsplit('/').next().unwrap_or_default().to_string(),
                text(&s["deployments"][0]["rolloutState"]),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "DESIRED", "RUNNING", "PENDING", "TASK DEFINITION", "ROLLOUT"], &rows);
    Ok(())
}
