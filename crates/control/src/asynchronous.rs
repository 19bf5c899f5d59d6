//! Asynchronous invocation (InvocationType Event): events are stored in the
//! queue before the caller gets its 202, then delivered by a dispatcher that
//! sleeps until the next event is due or a new one arrives (no polling).
//!
//! Delivery is at least once: an event is leased (pushed into the future)
//! before it runs and deleted only after it succeeded or was given up; after
//! a crash, the next start offers every queued event again at once. Function errors are
//! retried `MaximumRetryAttempts` times (default 2) after one and then two
//! retry delays (AWS waits about 1 and 2 minutes); throttles and system
//! errors put the event back with a backoff (1 s up to 5 min) until
//! `MaximumEventAgeInSeconds` (default 6 hours), except that reserved
//! concurrency 0 gives up at once, as AWS does.
//!
//! Recursive loop detection, as Lambda's: an event carries its lineage, the
//! number of invocations in the chain of function writes that caused it
//! (the writer's `Lineage=` trace field plus one, set by the event source).
//! Past [`RECURSION_LIMIT`] the invocation is stopped and logged at WARN,
//! unless the function's recursion config is `Allow`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nimbus_core::function::LATEST;
use nimbus_store::AsyncEvent;
use tracing::Instrument;

use crate::*;

/// Largest asynchronous payload (1 MB since October 2025).
pub const ASYNC_PAYLOAD_MAX: usize = 1_048_576;
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_MAX_AGE_MS: i64 = 21_600_000;
/// How long a delivery may run before the event is offered again.
const LEASE_MS: i64 = 16 * 60 * 1000;
const SYSTEM_BACKOFF_MAX_MS: i64 = 5 * 60 * 1000;
/// Invocations of one chain Lambda lets run before it stops the next (AWS:
/// "after approximately 16 invocations").
pub const RECURSION_LIMIT: u32 = 16;

impl Control {
    /// Queues an event durably; the caller answers 202 after this returns.
    pub async fn invoke_async(
        &self,
        request_id: &str,
        function: &str,
        qualifier: Option<&str>,
        payload: Bytes,
    ) -> Result<()> {
        if payload.len() > ASYNC_PAYLOAD_MAX {
            return Err(Error::Rule(nimbus_core::Error::TooLarge(format!(
                "Request must be smaller than {ASYNC_PAYLOAD_MAX} bytes for the Invoke operation"
            ))));
        }
        self.resolve_invocation(function, qualifier).await?;
        let now = now_ms();
        self.meta
            .enqueue_event(&AsyncEvent {
                id: request_id.to_string(),
                function: function.to_string(),
                qualifier: qualifier.map(str::to_string),
                payload: payload.to_vec(),
                attempts: 0,
                not_before_ms: now,
                created_ms: now,
                lineage: 0,
            })
            .await?;
        self.async_wake.notify_one();
        Ok(())
    }

    /// Delivers queued events until the process ends. Events leased by a
    /// previous run (which may have died mid-delivery) are offered again at
    /// once: delivery is at least once.
    pub async fn run_async_dispatcher(self: Arc<Self>) {
        if let Err(e) = self.meta.release_events(now_ms()).await {
            tracing::error!(error = %e, "cannot release async events from a previous run");
        }
        loop {
            let now = now_ms();
            match self.meta.due_events(now, 64).await {
                Ok(due) => {
                    for ev in due {
                        if let Err(e) = self.meta.reschedule_event(&ev.id, ev.attempts, now + LEASE_MS).await {
                            tracing::error!(error = %e, "cannot lease async event");
                            continue;
                        }
                        let span = tracing::info_span!("async", request_id = %ev.id, function = %ev.function);
                        tokio::spawn(self.clone().deliver(ev).instrument(span));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the async queue"),
            }
            let next = self.meta.next_event_due().await.ok().flatten();
            let wait = next.map(|t| Duration::from_millis((t - now_ms()).max(0) as u64));
            match wait {
                Some(w) => {
                    tokio::select! {
                        _ = self.async_wake.notified() => {}
                        _ = tokio::time::sleep(w) => {}
                    }
                }
                None => self.async_wake.notified().await,
            }
        }
    }

    async fn deliver(self: Arc<Self>, ev: AsyncEvent) {
        if ev.lineage > RECURSION_LIMIT && !self.recursion_allowed(&ev).await {
            tracing::warn!(
                source = %event_source(&ev.payload),
                lineage = ev.lineage,
                "recursive loop detected: the invocation is stopped after {RECURSION_LIMIT} invocations of its chain \
                 (PutFunctionRecursionConfig with Allow lets it run)"
            );
            if let Err(e) = self.meta.delete_event(&ev.id).await {
                tracing::error!(error = %e, "cannot update the async queue; the event will be offered again");
            }
            return;
        }
        let result = self
            .invoke(InvokeRequest {
                request_id: ev.id.clone(),
                function: ev.function.clone(),
                qualifier: ev.qualifier.clone(),
                payload: Bytes::from(ev.payload.clone()),
                client_context: None,
                stream: None,
                lineage: ev.lineage,
            })
            .await;
        let (retries, max_age_ms) = self.retry_policy(&ev).await;
        let now = now_ms();
        let too_old = now - ev.created_ms > max_age_ms;
        let outcome = match result {
            Ok(done) if done.outcome.function_error.is_none() => {
                tracing::info!("async event delivered");
                self.meta.delete_event(&ev.id).await
            }
            Ok(done) => {
                let attempts = ev.attempts + 1;
                if attempts > retries || too_old {
                    let kind = serde_json::from_slice::<serde_json::Value>(&done.outcome.payload)
                        .ok()
                        .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
                        .unwrap_or_default();
                    tracing::warn!(attempts, error_type = %kind, "async event failed; giving up");
                    self.meta.delete_event(&ev.id).await
                } else {
                    let delay = self.settings.async_retry_delay.as_millis() as i64 * i64::from(attempts);
                    tracing::info!(attempts, delay_ms = delay, "async event failed; will retry");
                    self.meta.reschedule_event(&ev.id, attempts, now + delay).await
                }
            }
            Err(Error::Rule(nimbus_core::Error::NotFound(m))) => {
                tracing::warn!(reason = %m, "async event dropped: its function is gone");
                self.meta.delete_event(&ev.id).await
            }
            Err(Error::Rule(nimbus_core::Error::Throttled(_))) if self.reserved_zero(&ev).await => {
                // AWS sends these straight to the failure destination, with no retries.
                tracing::warn!("async event throttled by reserved concurrency 0; giving up");
                self.meta.delete_event(&ev.id).await
            }
            Err(e) if too_old => {
                tracing::warn!(error = %e, "async event expired after system errors; giving up");
                self.meta.delete_event(&ev.id).await
            }
            Err(e) => {
                let backoff = ((now - ev.created_ms) / 2).clamp(1000, SYSTEM_BACKOFF_MAX_MS);
                tracing::info!(error = %e, backoff_ms = backoff, "async event not run (throttled or a system error); will retry");
                self.meta.reschedule_event(&ev.id, ev.attempts, now + backoff).await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot update the async queue; the event will be offered again");
        }
        self.async_wake.notify_one();
    }

    async fn recursion_allowed(&self, ev: &AsyncEvent) -> bool {
        let name = FunctionRef::parse(self.account(), &ev.function, None).map(|r| r.name).unwrap_or_default();
        let f = self.meta.get_function(&name).await.ok().flatten();
        f.is_some_and(|f| f.recursive_loop.as_deref() == Some("Allow"))
    }

    async fn reserved_zero(&self, ev: &AsyncEvent) -> bool {
        let name = FunctionRef::parse(self.account(), &ev.function, None).map(|r| r.name).unwrap_or_default();
        let f = self.meta.get_function(&name).await.ok().flatten();
        f.is_some_and(|f| f.reserved_concurrency == Some(0))
    }

    /// (retries, maximum age) from the function's event-invoke config.
    async fn retry_policy(&self, ev: &AsyncEvent) -> (u32, i64) {
        let key = ev.qualifier.clone().unwrap_or_else(|| LATEST.to_string());
        let name = FunctionRef::parse(self.account(), &ev.function, None).map(|r| r.name).unwrap_or_default();
        let cfg =
            self.meta.get_function(&name).await.ok().flatten().and_then(|f| f.event_invoke_configs.get(&key).cloned());
        match cfg {
            Some(c) => (
                c.maximum_retry_attempts.unwrap_or(DEFAULT_RETRIES),
                c.maximum_event_age.map_or(DEFAULT_MAX_AGE_MS, |s| i64::from(s) * 1000),
            ),
            None => (DEFAULT_RETRIES, DEFAULT_MAX_AGE_MS),
        }
    }
}

/// The resource an event came from, for the loop detection's log line: the
/// first record's `eventSourceARN` (SQS, DynamoDB, Kinesis) or its S3 bucket.
fn event_source(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let record = &v["Records"][0];
    let arn = record["eventSourceARN"].as_str().or_else(|| record["s3"]["bucket"]["arn"].as_str());
    arn.unwrap_or("unknown").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_source_is_named_by_its_first_record() {
        let s3 = br#"{"Records":[{"eventSource":"aws:s3","s3":{"bucket":{"name":"b","arn":"arn:aws:s3:::b"}}}]}"#;
        assert_eq!(event_source(s3), "arn:aws:s3:::b");
        assert_eq!(
            event_source(br#"{"Records":[{"eventSourceARN":"arn:aws:sqs:us-east-1:1:q"}]}"#),
            "arn:aws:sqs:us-east-1:1:q"
        );
        assert_eq!(event_source(b"{}"), "unknown");
    }
}
