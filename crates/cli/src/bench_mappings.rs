//! `nimbus bench`'s event source mapping figure: the time from an
//! acknowledged SendMessage to the start of the mapped function's handler
//! (no batching window), one message at a time on a warm function.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{percentiles, Bench, Runtime};
use crate::bench_s3::started;
use crate::client::Client;

/// The handler notes when it starts (wall clock, shared with the bench on
/// this machine) and the body that woke it.
const MAPPED_APP: &str =
    "import time\n\ndef handler(event, context):\n    t = time.time_ns()\n    print(f\"STARTED {t} {event['Records'][0]['body']}\")\n";

/// One SQS call in the JSON 1.0 protocol.
async fn sqs(client: &Client, operation: &str, input: Value) -> anyhow::Result<Value> {
    let target = format!("AmazonSQS.{operation}");
    let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", target.as_str())];
    let (_, body) = client.send("sqs", "POST", "/", Some(serde_json::to_vec(&input)?), &headers).await?;
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// SendMessage acknowledged → the mapped handler starts, ms.
pub async fn sent_to_handler(b: &Bench, python: &Runtime, n: usize) -> anyhow::Result<Value> {
    let zip = crate::bench::zip_of(&[("app.py", MAPPED_APP.as_bytes(), 0o644)])?;
    let rt = Runtime { id: python.id.clone(), handler: "app.handler", zip, spawn: Vec::new() };
    let name = b.create(&rt).await?;
    // At least the function's timeout, as AWS requires of a mapped queue.
    let url =
        sqs(&b.client, "CreateQueue", json!({"QueueName": "bench-mapped", "Attributes": {"VisibilityTimeout": "900"}}))
            .await?["QueueUrl"]
            .as_str()
            .context("no QueueUrl")?
            .to_string();
    let attrs = sqs(&b.client, "GetQueueAttributes", json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]})).await?;
    let arn = attrs["Attributes"]["QueueArn"].as_str().context("no QueueArn")?;
    let mapping = json!({"EventSourceArn": arn, "FunctionName": name});
    let created =
        b.client.call("POST", "/2015-03-31/event-source-mappings", Some(serde_json::to_vec(&mapping)?)).await?;
    let path = format!("/2015-03-31/event-source-mappings/{}", created["UUID"].as_str().context("no UUID")?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.client.call("GET", &path, None).await?["State"] != "Enabled" {
        anyhow::ensure!(Instant::now() < deadline, "the mapping to {name} never became Enabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::new();
    // The first wakes the environment; it is not counted.
    for i in 0..=n {
        let body = format!("m{i}");
        sqs(&b.client, "SendMessage", json!({"QueueUrl": url, "MessageBody": body})).await?;
        let acked = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = loop {
            if let Some((_, t)) = started(&b.client, &name).await?.into_iter().find(|(k, _)| *k == body) {
                break t;
            }
            anyhow::ensure!(Instant::now() < deadline, "message {body} never reached {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if i > 0 {
            samples.push((start as f64 - acked as f64) / 1e6);
        }
    }
    b.client.call("DELETE", &path, None).await?;
    b.delete(&name).await?;
    Ok(percentiles(&mut samples))
}
