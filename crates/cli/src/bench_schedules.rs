//! `nimbus bench`'s schedule figure: the time from a schedule's due time to
//! the start of its target's handler. One-time `at()` schedules a second
//! apart (AWS's expressions have whole seconds) invoke a warm function
//! whose handler logs when it starts.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::bench::{percentiles, Bench, Runtime};
use crate::bench_s3::started;

/// The handler notes when it starts and which schedule woke it.
const SCHEDULED_APP: &str =
    "import time\n\ndef handler(event, context):\n    t = time.time_ns()\n    print(f\"STARTED {t} {event['k']}\")\n";

/// Due time → handler starts, ms, for `n` schedules (and one more first,
/// which wakes the function and is not counted).
pub async fn due_to_handler(b: &Bench, python: &Runtime, n: usize) -> anyhow::Result<Value> {
    let zip = crate::bench::zip_of(&[("app.py", SCHEDULED_APP.as_bytes(), 0o644)])?;
    let rt = Runtime { id: python.id.clone(), handler: "app.handler", zip, spawn: Vec::new() };
    let name = b.create(&rt).await?;
    let config = b.client.call("GET", &format!("/2015-03-31/functions/{name}/configuration"), None).await?;
    let function_arn = config["FunctionArn"].as_str().context("no FunctionArn")?.to_string();
    let account = function_arn.split(':').nth(4).unwrap_or_default().to_string();
    // Whole seconds from two seconds ahead, one schedule a second.
    let first = Utc::now().duration_trunc(TimeDelta::seconds(1))? + TimeDelta::seconds(2);
    let mut due = Vec::new();
    for i in 0..=n {
        let at = first + TimeDelta::seconds(i as i64);
        let schedule = json!({
            "ScheduleExpression": format!("at({})", at.format("%Y-%m-%dT%H:%M:%S")),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Target": {"Arn": function_arn, "RoleArn": format!("arn:aws:iam::{account}:role/scheduler"),
                       "Input": json!({"k": format!("s{i}")}).to_string()},
        });
        let path = format!("/schedules/bench-at-{i}");
        let headers = [("content-type", "application/json")];
        b.client.send("scheduler", "POST", &path, Some(serde_json::to_vec(&schedule)?), &headers).await?;
        due.push((format!("s{i}"), at.timestamp_nanos_opt().context("due time out of range")?));
    }
    let deadline = Instant::now() + Duration::from_secs(n as u64 + 30);
    let starts = loop {
        let starts = started(&b.client, &name).await?;
        if due.iter().all(|(k, _)| starts.iter().any(|(s, _)| s == k)) {
            break starts;
        }
        anyhow::ensure!(Instant::now() < deadline, "not every schedule reached {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut samples: Vec<f64> = due
        .iter()
        .skip(1)
        .filter_map(|(k, at)| starts.iter().find(|(s, _)| s == k).map(|(_, t)| (*t as f64 - *at as f64) / 1e6))
        .collect();
    b.delete(&name).await?;
    Ok(percentiles(&mut samples))
}
