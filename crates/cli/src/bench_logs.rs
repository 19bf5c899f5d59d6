//! `nimbus bench`'s CloudWatch Logs figures: PutLogEvents ingestion rate,
//! and FilterLogEvents over a group of `lines` stored lines (one million
//! in a full run) for a recent window (the last five minutes), with
//! a term pattern and a JSON pattern.

use std::time::Instant;

use serde_json::{json, Value};

use crate::bench::{percentiles, round};
use crate::client::Client;

const GROUP: &str = "/nimbus/bench/logs";
const STREAMS: usize = 10;
/// The stored lines span this many hours, ending now (PutLogEvents takes
/// at most 24 hours per batch and nothing older than 14 days).
const SPAN_HOURS: i64 = 10;
const WINDOW_MS: i64 = 5 * 60 * 1000;

async fn logs(client: &Client, op: &str, body: Value) -> anyhow::Result<Value> {
    let target = format!("Logs_20140328.{op}");
    let headers = [("x-amz-target", target.as_str()), ("content-type", "application/x-amz-json-1.1")];
    let (_, out) = client.send("logs", "POST", "/", Some(serde_json::to_vec(&body)?), &headers).await?;
    Ok(serde_json::from_slice(&out)?)
}

/// Stores `lines` lines, then times `queries` FilterLogEvents of each kind.
pub async fn figures(client: &Client, lines: usize, queries: usize) -> anyhow::Result<Value> {
    logs(client, "CreateLogGroup", json!({"logGroupName": GROUP})).await?;
    for s in 0..STREAMS {
        logs(client, "CreateLogStream", json!({"logGroupName": GROUP, "logStreamName": format!("s{s}")})).await?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let first = now - SPAN_HOURS * 3_600_000;
    let step = (now - first) as f64 / lines as f64;
    let batch = 10_000;
    let t = Instant::now();
    for (n, start) in (0..lines).step_by(batch).enumerate() {
        let events: Vec<Value> = (start..(start + batch).min(lines))
            .map(|i| {
                let ts = first + (i as f64 * step) as i64;
                let message = if i % 10 == 0 {
                    json!({"level": "ERROR", "latency": i % 500, "request": i}).to_string()
                } else {
                    format!("INFO request {i} served in {} ms", i % 300)
                };
                json!({"timestamp": ts, "message": message})
            })
            .collect();
        let stream = format!("s{}", n % STREAMS);
        logs(client, "PutLogEvents", json!({"logGroupName": GROUP, "logStreamName": stream, "logEvents": events}))
            .await?;
    }
    let ingest = lines as f64 / t.elapsed().as_secs_f64();

    let (terms_ms, terms_found) = filter_times(client, "ERROR", queries).await?;
    let (json_ms, json_found) = filter_times(client, "{ $.latency > 400 }", queries).await?;
    Ok(json!({
        "lines": lines,
        "put_lines_per_s": round(ingest),
        "filter_recent_terms_ms": terms_ms,
        "filter_recent_terms_events": terms_found,
        "filter_recent_json_ms": json_ms,
        "filter_recent_json_events": json_found,
    }))
}

/// FilterLogEvents over the last five minutes: its latency (p50 / p99, ms)
/// and how many events the last page held.
async fn filter_times(client: &Client, pattern: &str, queries: usize) -> anyhow::Result<(Value, usize)> {
    let (mut samples, mut found) = (Vec::new(), 0);
    for _ in 0..queries {
        let end = chrono::Utc::now().timestamp_millis();
        let q = json!({"logGroupName": GROUP, "startTime": end - WINDOW_MS, "endTime": end, "filterPattern": pattern});
        let t = Instant::now();
        let page = logs(client, "FilterLogEvents", q).await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        found = page["events"].as_array().map_or(0, Vec::len);
    }
    Ok((percentiles(&mut samples), found))
}
