//! `nimbus bench`'s queue figures: SQS throughput each way (SendMessageBatch
//! in; ReceiveMessage, then DeleteMessageBatch, out), and the event source
//! mapping figure, the time from a SendMessage call to the start of the
//! mapped function's handler (no batching window), one message at a time on
//! a warm function.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{loop_for, percentiles, round, Bench, Runtime};
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

/// Messages per second into a queue (SendMessageBatch of 10 small messages
/// from `clients` keep-alive clients), then out of it: ReceiveMessage of up
/// to 10 until every message is in flight, then DeleteMessageBatch of each
/// received batch.
pub async fn throughput(client: &Arc<Client>, clients: usize, secs: f64) -> anyhow::Result<Value> {
    let url = sqs(client, "CreateQueue", json!({"QueueName": "bench-throughput"})).await?["QueueUrl"]
        .as_str()
        .context("no QueueUrl")?
        .to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let batch: Vec<Value> = (0..10).map(|i| json!({"Id": format!("m{i}"), "MessageBody": "x".repeat(100)})).collect();
    let calls = loop_for(clients, secs, {
        let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
        move || {
            let (client, url, sent, entries) = (client.clone(), url.clone(), sent.clone(), batch.clone());
            async move {
                let out = sqs(&client, "SendMessageBatch", json!({"QueueUrl": url, "Entries": entries})).await?;
                let ok = out["Successful"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(ok == 10, "a batch was not taken whole: {out}");
                sent.fetch_add(ok as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await?;
    let in_rate = calls * 10.0;
    let total = sent.load(Ordering::Relaxed);
    // Out: every message received (in flight, invisible for the run), then
    // every receipt deleted, each timed on its own.
    let received = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url, received) = (client.clone(), url.clone(), received.clone());
        tasks.spawn(async move {
            let mut receipts = Vec::new();
            while received.load(Ordering::Relaxed) < total {
                let input = json!({"QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 900});
                let got = sqs(&client, "ReceiveMessage", input).await?;
                let Some(messages) = got["Messages"].as_array().filter(|m| !m.is_empty()) else { break };
                received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                receipts.push(messages.iter().map(|m| m["ReceiptHandle"].clone()).collect::<Vec<_>>());
            }
            anyhow::Ok(receipts)
        });
    }
    let mut batches = Vec::new();
    while let Some(r) = tasks.join_next().await {
        batches.extend(r??);
    }
    let receive_rate = received.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let chunk = batches.len().div_ceil(clients).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for share in batches.chunks(chunk).map(<[_]>::to_vec) {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for handles in share {
                let entries: Vec<Value> =
                    handles.iter().enumerate().map(|(i, h)| json!({"Id": i.to_string(), "ReceiptHandle": h})).collect();
                let out = sqs(&client, "DeleteMessageBatch", json!({"QueueUrl": url, "Entries": entries})).await?;
                anyhow::ensure!(out["Failed"].as_array().is_none_or(Vec::is_empty), "deletes failed: {out}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let delete_rate = received.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    sqs(client, "DeleteQueue", json!({"QueueUrl": url})).await?;
    Ok(json!({
        "messages": total,
        "send_batch_msgs_per_s": round(in_rate),
        "receive_msgs_per_s": round(receive_rate),
        "delete_batch_msgs_per_s": round(delete_rate),
    }))
}

/// Leaves `n` queues, each mapped to `function`, and `n` schedules of it
/// (due in a year) for the idle measurement: none of them may cost CPU.
pub async fn idle_sources(b: &Bench, function: &str, n: usize) -> anyhow::Result<()> {
    let year = chrono::Utc::now().format("%Y").to_string().parse::<i32>()? + 1;
    let config = b.client.call("GET", &format!("/2015-03-31/functions/{function}/configuration"), None).await?;
    let function_arn = config["FunctionArn"].as_str().context("no FunctionArn")?.to_string();
    let account = function_arn.split(':').nth(4).unwrap_or_default().to_string();
    for i in 0..n {
        let queue = format!("bench-idle-{i}");
        sqs(&b.client, "CreateQueue", json!({"QueueName": queue, "Attributes": {"VisibilityTimeout": "900"}})).await?;
        let region = function_arn.split(':').nth(3).unwrap_or_default();
        let arn = format!("arn:aws:sqs:{region}:{account}:{queue}");
        let mapping = json!({"EventSourceArn": arn, "FunctionName": function});
        let m = b.client.call("POST", "/2015-03-31/event-source-mappings", Some(serde_json::to_vec(&mapping)?)).await?;
        anyhow::ensure!(m["UUID"].is_string(), "CreateEventSourceMapping for {queue}: {m}");
        let schedule = json!({
            "ScheduleExpression": format!("cron(0 3 1 1 ? {year})"),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": function_arn, "RoleArn": format!("arn:aws:iam::{account}:role/scheduler")},
        });
        let path = format!("/schedules/bench-idle-{i}");
        let headers = [("content-type", "application/json")];
        b.client.send("scheduler", "POST", &path, Some(serde_json::to_vec(&schedule)?), &headers).await?;
    }
    Ok(())
}

/// SendMessage called → the mapped handler starts, ms.
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
        // From the call, not its answer: the poller wakes at the commit, so
        // the handler may start before the answer is read.
        let called = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        sqs(&b.client, "SendMessage", json!({"QueueUrl": url, "MessageBody": body})).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = loop {
            if let Some((_, t)) = started(&b.client, &name).await?.into_iter().find(|(k, _)| *k == body) {
                break t;
            }
            anyhow::ensure!(Instant::now() < deadline, "message {body} never reached {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if i > 0 {
            samples.push((start as f64 - called as f64) / 1e6);
        }
    }
    b.client.call("DELETE", &path, None).await?;
    b.delete(&name).await?;
    Ok(percentiles(&mut samples))
}
