//! One enabled mapping's poller: receive a batch (waiting on the queue, not
//! polling it), drop what the filters refuse, hand the batch to the function
//! synchronously and delete what it handled.
//!
//! Scaling: the receiving loop takes a concurrency permit before each
//! batch and gives it to the batch's invocation task, so with a backlog up
//! to `MaximumConcurrency` batches run at once, and with an empty queue
//! nothing runs but one receive waiting for the queue's wake.
//!
//! Results: success deletes the batch; a function error leaves it to come
//! back after the visibility timeout, so the queue's redrive policy takes
//! poison messages to its dead-letter queue. With `ReportBatchItemFailures`,
//! only the listed items stay. A throttled invocation is tried again, with
//! a backoff, while the batch is still invisible (as AWS's poller does, and
//! why AWS asks for a visibility timeout of six times the function's): a
//! busy function must not send messages it never ran to the dead-letter
//! queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nimbus_control::{Control, InvokeRequest};
use nimbus_core::mappings::EventSourceMapping;
use serde_json::{json, Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::filter::Filters;
use super::{DEFAULT_BATCH, IDLE_WAIT};
use nimbus_queues::{Queues, ReceivedMessage};

/// Concurrent batches of a mapping without `ScalingConfig` (AWS's most);
/// never more than the node runs at once, as a batch past that would only
/// be throttled and wait out its visibility timeout.
const DEFAULT_CONCURRENCY: u32 = 1000;

/// A batch stops growing before this many bytes of bodies, so that one more
/// message (256 KiB at most) cannot take the event past Lambda's 6 MB.
const PAYLOAD_BUDGET: usize = 6 * 1024 * 1024 - 256 * 1024;

pub(super) struct Poller {
    pub mapping: EventSourceMapping,
    pub filters: Filters,
    pub control: Arc<Control>,
    pub queues: Arc<Queues>,
}

impl Poller {
    pub async fn run(self) {
        let this = Arc::new(self);
        let m = &this.mapping;
        // Not `account_settings`, which counts every function's code: a
        // thousand pollers starting at once spent seconds on that.
        let node = this.control.concurrency_limit();
        let cap = m.maximum_concurrency.unwrap_or(DEFAULT_CONCURRENCY).min(node).max(1);
        let limit = Arc::new(Semaphore::new(cap as usize));
        let mut failures = 0u32;
        let stopping = this.control.stopping().clone();
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            // A stopping node begins no batch; those under way end (`Control::finish_work`).
            if stopping.is_cancelled() {
                return;
            }
            let batch = match this.gather().await {
                Ok(batch) => {
                    failures = 0;
                    batch
                }
                Err(e) => {
                    // The queue was deleted or the store failed: back off
                    // (up to a minute) rather than spin.
                    failures = (failures + 1).min(6);
                    tracing::warn!(uuid = %m.uuid, source = %m.event_source_arn, error = %e, "receiving failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1 << failures)) => continue,
                        () = stopping.cancelled() => return,
                    }
                }
            };
            let batch = this.drop_filtered(batch).await;
            if !batch.is_empty() {
                this.control.spawn_work(this.clone().deliver(batch, permit));
            }
        }
    }

    /// Waits for the first messages, then fills the batch for up to the
    /// batching window (none: the batch goes as soon as anything arrived).
    async fn gather(&self) -> Result<Vec<ReceivedMessage>, nimbus_queues::Error> {
        let m = &self.mapping;
        let arn = &m.event_source_arn;
        let mut batch = self.queues.receive(arn, m.batch_size.min(DEFAULT_BATCH), None, IDLE_WAIT).await?;
        if batch.is_empty() || m.maximum_batching_window_s == 0 {
            return Ok(batch);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(m.maximum_batching_window_s.into());
        let mut bytes: usize = batch.iter().map(|b| b.body.len()).sum();
        while batch.len() < m.batch_size as usize && bytes < PAYLOAD_BUDGET {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let want = (m.batch_size as usize - batch.len()).min(DEFAULT_BATCH as usize) as u32;
            for msg in self.queues.receive(arn, want, None, left).await? {
                // A message whose visibility timeout ran out within the
                // window comes again: keep it once, with its newest handle.
                match batch.iter_mut().find(|b| b.message_id == msg.message_id) {
                    Some(old) => *old = msg,
                    None => {
                        bytes += msg.body.len();
                        batch.push(msg);
                    }
                }
            }
        }
        Ok(batch)
    }

    /// Deletes the messages no filter lets through (AWS deletes them too)
    /// and returns the rest.
    async fn drop_filtered(&self, batch: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        let region = &self.control.account().region;
        let (keep, drop): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|msg| self.filters.pass(&filter_view(record(msg, &self.mapping.event_source_arn, region))));
        if !drop.is_empty() {
            let handles: Vec<String> = drop.into_iter().map(|d| d.receipt_handle).collect();
            self.delete(&handles).await;
        }
        keep
    }

    async fn deliver(self: Arc<Self>, batch: Vec<ReceivedMessage>, _permit: OwnedSemaphorePermit) {
        let m = &self.mapping;
        let region = &self.control.account().region;
        let records: Vec<Value> = batch.iter().map(|msg| record(msg, &m.event_source_arn, region)).collect();
        let payload = json!({ "Records": records }).to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        let req = InvokeRequest {
            request_id: request_id.clone(),
            function: m.function_arn.clone(),
            qualifier: None,
            payload: payload.into(),
            client_context: None,
            stream: None,
            lineage: 0,
        };
        let handled: Vec<String> = match self.invoke(req).await {
            Ok(done) if done.outcome.function_error.is_none() => {
                let failed = if m.reports_item_failures() {
                    let ids = batch.iter().map(|b| b.message_id.as_str()).collect();
                    item_failures(&done.outcome.payload, &ids)
                } else {
                    Some(HashSet::new())
                };
                match failed {
                    Some(failed) => batch
                        .iter()
                        .filter(|b| !failed.contains(b.message_id.as_str()))
                        .map(|b| b.receipt_handle.clone())
                        .collect(),
                    None => {
                        tracing::warn!(uuid = %m.uuid, %request_id, "invalid partial batch response: the whole batch failed");
                        vec![]
                    }
                }
            }
            Ok(_) => {
                tracing::debug!(uuid = %m.uuid, %request_id, "the function failed: the batch returns after its visibility timeout");
                vec![]
            }
            Err(e) => {
                tracing::debug!(uuid = %m.uuid, %request_id, error = %e, "the batch was not invoked: it returns after its visibility timeout");
                vec![]
            }
        };
        if !handled.is_empty() {
            self.delete(&handled).await;
        }
    }

    /// Invokes the function, again while it is throttled and the batch's
    /// visibility timeout leaves time (a second at least is kept for the
    /// run itself).
    async fn invoke(&self, req: InvokeRequest) -> Result<nimbus_control::Invoked, nimbus_control::Error> {
        let began = tokio::time::Instant::now();
        // Looked up at the first throttle only: most batches run at once.
        let mut until = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.control.invoke(req.clone()).await {
                Err(throttled @ nimbus_control::Error::Rule(nimbus_core::Error::Throttled(_))) => {
                    let until = *until.get_or_insert_with(|| {
                        let queue = self.queues.queue_by_arn(&self.mapping.event_source_arn).ok().flatten();
                        began
                            + queue
                                .map_or(Duration::ZERO, |q| q.visibility_timeout.saturating_sub(Duration::from_secs(1)))
                    });
                    if tokio::time::Instant::now() + backoff >= until {
                        return Err(throttled);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                done => return done,
            }
        }
    }

    async fn delete(&self, handles: &[String]) {
        if let Err(e) = self.queues.delete(&self.mapping.event_source_arn, handles).await {
            // They come back after their visibility timeout: at least once.
            tracing::warn!(uuid = %self.mapping.uuid, error = %e, "deleting handled messages failed");
        }
    }
}

/// One record of the event an SQS mapping hands its function, as AWS shapes it.
fn record(msg: &ReceivedMessage, source_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> =
        msg.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let message_attributes: Map<String, Value> = msg
        .message_attributes
        .iter()
        .map(|(name, a)| {
            let mut v = json!({"stringListValues": [], "binaryListValues": [], "dataType": a.data_type});
            if let Some(s) = &a.string {
                v["stringValue"] = json!(s);
            }
            if let Some(b) = &a.binary {
                use base64::Engine;
                v["binaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (name.clone(), v)
        })
        .collect();
    let mut r = json!({
        "messageId": msg.message_id,
        "receiptHandle": msg.receipt_handle,
        "body": msg.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": msg.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": region,
    });
    if let Some(md5) = &msg.md5_of_attributes {
        r["md5OfMessageAttributes"] = json!(md5);
    }
    r
}

/// The record as filters see it: a body that is a JSON object or array is
/// matched as that JSON, any other body as its text.
fn filter_view(mut record: Value) -> Value {
    let parsed = record["body"].as_str().and_then(|b| serde_json::from_str::<Value>(b).ok());
    if let Some(v @ (Value::Object(_) | Value::Array(_))) = parsed {
        record["body"] = v;
    }
    record
}

/// The message ids a partial batch response lists as failed; `None` when
/// the response is invalid, which fails the whole batch (AWS: not JSON, not
/// an object, a missing, empty or unknown `itemIdentifier`). A null or
/// empty response, or no `batchItemFailures`, means all succeeded.
fn item_failures<'a>(payload: &[u8], ids: &HashSet<&'a str>) -> Option<HashSet<&'a str>> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Some(HashSet::new());
    }
    let v: Value = serde_json::from_slice(payload).ok()?;
    let list = match &v {
        Value::Null => return Some(HashSet::new()),
        Value::Object(o) => match o.get("batchItemFailures") {
            None | Some(Value::Null) => return Some(HashSet::new()),
            Some(Value::Array(list)) => list,
            Some(_) => return None,
        },
        _ => return None,
    };
    list.iter()
        .map(|item| {
            let id = item.get("itemIdentifier")?.as_str().filter(|s| !s.is_empty())?;
            ids.get(id).copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use nimbus_core::queues::AttributeValue;

    fn message() -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m1".into(),
            receipt_handle: "h1".into(),
            body: r#"{"kind":"order"}"#.into(),
            md5_of_body: "abc".into(),
            attributes: BTreeMap::from([("ApproximateReceiveCount".to_string(), "1".to_string())]),
            message_attributes: BTreeMap::from([(
                "name".to_string(),
                AttributeValue { data_type: "String".into(), string: Some("v".into()), binary: None },
            )]),
            md5_of_attributes: Some("def".into()),
        }
    }

    #[test]
    fn records_have_aws_shape() {
        let r = record(&message(), "arn:aws:sqs:us-east-1:000000000000:q", "us-east-1");
        assert_eq!(
            r,
            json!({
                "messageId": "m1", "receiptHandle": "h1", "body": "{\"kind\":\"order\"}",
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {"name": {"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
                "md5OfBody": "abc", "md5OfMessageAttributes": "def", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q", "awsRegion": "us-east-1",
            })
        );
        assert_eq!(filter_view(r)["body"]["kind"], "order");
        let plain = ReceivedMessage { body: "hello".into(), md5_of_attributes: None, ..message() };
        let r = record(&plain, "arn", "r");
        assert!(r.get("md5OfMessageAttributes").is_none());
        assert_eq!(filter_view(r)["body"], "hello");
    }

    #[test]
    fn partial_batch_responses() {
        let ids: HashSet<&str> = ["a", "b", "c"].into();
        let parse = |s: &str| item_failures(s.as_bytes(), &ids);
        let none = Some(HashSet::new());
        assert_eq!(parse(""), none.clone());
        assert_eq!(parse("null"), none.clone());
        assert_eq!(parse("{}"), none.clone());
        assert_eq!(parse(r#"{"batchItemFailures": []}"#), none);
        let failed = item_failures(br#"{"batchItemFailures": [{"itemIdentifier": "b"}]}"#, &ids).unwrap();
        assert_eq!(failed, HashSet::from(["b"]));
        for bad in [
            r#""text""#,
            "[1]",
            "not json",
            r#"{"batchItemFailures": "b"}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": "zzz"}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": null}]}"#,
            r#"{"batchItemFailures": [{}]}"#,
        ] {
            assert_eq!(item_failures(bad.as_bytes(), &ids), None, "{bad}");
        }
    }
}
