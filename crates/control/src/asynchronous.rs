//! Asynchronous invocation (InvocationType Event): events are stored in the
//! queue before the caller gets its 202, then delivered by a dispatcher that
//! sleeps until the next event is due or a new one arrives (no polling).
//! Every asynchronous source goes through this queue: Event invokes, bucket
//! notifications (queued with their object write) and destinations.
//!
//! Delivery is at least once: an event is leased (pushed into the future)
//! before it runs and removed only after it succeeded or was given up; after
//! a crash, the next start offers every queued event again at once. Function errors are
//! retried `MaximumRetryAttempts` times (default 2) after one and then two
//! retry delays (AWS waits about 1 and 2 minutes); throttles and system
//! errors put the event back with a backoff (1 s up to 5 min) until
//! `MaximumEventAgeInSeconds` (default 6 hours), except that reserved
//! concurrency 0 gives up at once, as AWS does. An event whose next attempt
//! would come after its maximum age is given up at once (`EventAgeExceeded`).
//!
//! How an event ends decides what follows (`destinations`): the invocation
//! record for the OnSuccess or OnFailure destination, or the original event
//! for the function's dead-letter queue. What follows is committed in the
//! transaction that removes the event (the outbox), so across `kill -9`
//! every event ends in success, a destination or a dead-letter queue.
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
use nimbus_store::{AsyncEvent, FollowUp, QueueMessage};
use tracing::Instrument;

use crate::destinations::{error_message, follow_ups, Condition, Ending, Response, Routes};
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
                "{} byte payload is too large for the Event invocation type (limit {ASYNC_PAYLOAD_MAX} bytes)",
                payload.len()
            ))));
        }
        let (resolved, invoked_arn) = self.resolve_invocation(function, qualifier).await?;
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
        if let Some(m) = self.metrics() {
            m.async_received(&resolved.config.name, crate::invoke::qualifier_of(&invoked_arn));
        }
        self.async_wake.notify_one();
        Ok(())
    }

    /// Delivers queued events until the node begins to stop (those under
    /// way run on, see [`Control::finish_work`]). Events leased by a
    /// previous run (which may have died mid-delivery) are offered again at
    /// once: delivery is at least once. Events waiting for a retry wait on.
    pub async fn run_async_dispatcher(self: Arc<Self>) {
        if let Err(e) = self.meta.release_events(now_ms()).await {
            tracing::error!(error = %e, "cannot release async events from a previous run");
        }
        while !self.stopping.is_cancelled() {
            let now = now_ms();
            match self.meta.due_events(now, 64).await {
                Ok(due) => {
                    for ev in due {
                        if let Err(e) = self.meta.lease_event(&ev.id, now + LEASE_MS).await {
                            tracing::error!(error = %e, "cannot lease async event");
                            continue;
                        }
                        let span = tracing::info_span!("async", request_id = %ev.id, function = %ev.function);
                        self.spawn_work(self.clone().deliver(ev).instrument(span));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the async queue"),
            }
            let next = self.meta.next_event_due().await.ok().flatten();
            let wait = next.map(|t| Duration::from_millis((t - now_ms()).max(0) as u64));
            let wait = wait.unwrap_or(Duration::MAX);
            tokio::select! {
                _ = self.async_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.stopping.cancelled() => {}
            }
        }
    }

    /// Runs an event once and commits what follows: a retry, or its end
    /// with the destination or dead-letter message the end causes, in the
    /// transaction that removes it from the queue.
    async fn deliver(self: Arc<Self>, ev: AsyncEvent) {
        let result = match self.step(&ev).await {
            Step::Retry { attempts, at_ms } => self.meta.reschedule_event(&ev.id, attempts, at_ms).await,
            // Held as a lease is: a start (which may have cured what failed) offers it at once.
            Step::Backoff { at_ms } => self.meta.lease_event(&ev.id, at_ms).await,
            Step::Finish(mut follow_ups) => {
                let refused = self.prepare_messages(&mut follow_ups);
                match self.meta.finish_event(&ev.id, &follow_ups).await {
                    Ok(seqs) => {
                        self.adopt_messages(follow_ups, seqs);
                        // Counted once the end is committed: a failed commit offers the event again.
                        for dead_letter in refused {
                            self.count_event(&ev, |m, f, q| m.async_undelivered(f, q, dead_letter));
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot update the async queue; the event will be offered again");
        }
        self.async_wake.notify_one();
    }

    /// Has the queue engine check each queue message and make its row, so
    /// that the commit that ends the event stores it (the outbox). A message
    /// the queue refuses (it is gone, or FIFO) is dropped, as AWS drops a
    /// record it cannot deliver. Returns, for each message refused, whether
    /// it was for a dead-letter queue (`DeadLetterErrors`) or a destination
    /// (`DestinationDeliveryFailures`).
    fn prepare_messages(&self, follow_ups: &mut [FollowUp]) -> Vec<bool> {
        let mut refused = Vec::new();
        for f in follow_ups {
            let FollowUp::QueueMessage(m) = f else { continue };
            let Some(queues) = &self.queues else { continue };
            let attributes: std::collections::BTreeMap<_, _> = m
                .attributes
                .iter()
                .map(|a| {
                    let value = nimbus_core::queues::AttributeValue {
                        data_type: a.data_type.clone(),
                        string: Some(a.value.clone()),
                        binary: None,
                    };
                    (a.name.clone(), value)
                })
                .collect();
            let outgoing = |body: &String| nimbus_queues::OutgoingMessage {
                body: body.clone(),
                attributes: attributes.clone(),
                ..Default::default()
            };
            let prepared = queues.prepare_outbox(&m.queue_arn, outgoing(&m.body)).or_else(|e| match &m.smaller_body {
                Some(smaller) => {
                    tracing::info!(queue = %m.queue_arn, error = %e, "the record is sent without its payloads");
                    queues.prepare_outbox(&m.queue_arn, outgoing(smaller))
                }
                None => Err(e),
            });
            match prepared {
                Ok(stored) => m.stored = Some(Box::new(stored)),
                Err(e) => {
                    tracing::warn!(queue = %m.queue_arn, error = %e, "the queue cannot take the message");
                    refused.push(m.dead_letter);
                }
            }
        }
        refused
    }

    /// Makes the messages the commit stored receivable.
    fn adopt_messages(&self, follow_ups: Vec<FollowUp>, seqs: Vec<i64>) {
        let Some(queues) = &self.queues else { return };
        let stored = follow_ups.into_iter().filter_map(|f| match f {
            FollowUp::QueueMessage(QueueMessage { queue_arn, stored: Some(stored), .. }) => Some((queue_arn, stored.1)),
            _ => None,
        });
        for ((queue_arn, message), seq) in stored.zip(seqs) {
            if let Err(e) = queues.adopt(&queue_arn, seq, message) {
                tracing::warn!(queue = %queue_arn, error = %e, "a stored message waits for the next start");
            }
        }
    }

    async fn step(&self, ev: &AsyncEvent) -> Step {
        let policy = match self.policy(ev).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::warn!("async event dropped: its function is gone");
                self.count_event(ev, |m, f, q| m.async_dropped(f, q));
                return Step::Finish(Vec::new());
            }
            Err(e) => {
                let at_ms = now_ms() + system_backoff(ev, now_ms());
                tracing::error!(error = %e, "cannot read the event's function; will retry");
                return Step::Backoff { at_ms };
            }
        };
        let deadline = ev.created_ms + policy.max_age_ms;
        let stopped = ev.lineage > RECURSION_LIMIT && !policy.recursion_allowed;
        let ended = |condition, invoke_count, response, error| {
            if condition != Condition::Success {
                self.count_event(ev, |m, f, q| m.async_dropped(f, q));
            }
            let end = Ending { condition, invoke_count, response, error, loop_stopped: stopped };
            Step::Finish(self.finish(ev, &policy, &end))
        };
        if stopped {
            tracing::warn!(
                source = %event_source(&ev.payload),
                lineage = ev.lineage,
                "recursive loop detected: the invocation is stopped after {RECURSION_LIMIT} invocations of its chain \
                 (PutFunctionRecursionConfig with Allow lets it run)"
            );
            let error = (400, "Lambda detected that the function is being invoked in a recursive loop".to_string());
            return ended(Condition::RetriesExhausted, ev.attempts, None, error);
        }
        if now_ms() > deadline {
            // Only after downtime or a backlog: an event whose next attempt
            // would come too late is given up when that is known (below).
            tracing::warn!("async event expired before it could run; giving up");
            let error = (500, format!("The event was older than its maximum age of {} s", policy.max_age_ms / 1000));
            return ended(Condition::EventAgeExceeded, ev.attempts, None, error);
        }
        self.count_event(ev, |m, f, q| m.async_attempt(f, q, now_ms() - ev.created_ms));
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
        let now = now_ms();
        match result {
            Ok(done) => {
                let attempts = ev.attempts + 1;
                let response = Response {
                    executed_version: done.executed_version,
                    function_error: done.outcome.function_error,
                    payload: done.outcome.payload,
                };
                if response.function_error.is_none() {
                    tracing::info!("async event delivered");
                    return ended(Condition::Success, attempts, Some(response), (200, String::new()));
                }
                let error = (200, error_message(&response.payload));
                let kind = serde_json::from_slice::<serde_json::Value>(&response.payload)
                    .ok()
                    .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
                    .unwrap_or_default();
                let delay = self.settings.async_retry_delay.as_millis() as i64 * i64::from(attempts);
                if attempts > policy.retries {
                    tracing::warn!(attempts, error_type = %kind, "async event failed; giving up");
                    ended(Condition::RetriesExhausted, attempts, Some(response), error)
                } else if now + delay > deadline {
                    // AWS would drop it when the retry came up; the outcome is the same, known now.
                    tracing::warn!(attempts, error_type = %kind, "async event failed and is too old to retry; giving up");
                    ended(Condition::EventAgeExceeded, attempts, Some(response), error)
                } else {
                    tracing::info!(attempts, delay_ms = delay, "async event failed; will retry");
                    Step::Retry { attempts, at_ms: now + delay }
                }
            }
            Err(Error::Rule(nimbus_core::Error::NotFound(m))) => {
                tracing::warn!(reason = %m, "async event dropped: its function is gone");
                self.count_event(ev, |m, f, q| m.async_dropped(f, q));
                Step::Finish(Vec::new())
            }
            Err(e @ Error::Rule(nimbus_core::Error::Throttled(_))) if policy.reserved_zero => {
                // AWS sends these straight to the failure destination, with no retries.
                tracing::warn!("async event throttled by reserved concurrency 0; giving up");
                ended(Condition::RetriesExhausted, ev.attempts, None, (429, e.to_string()))
            }
            Err(e) => {
                let status = if matches!(e, Error::Rule(nimbus_core::Error::Throttled(_))) { 429 } else { 500 };
                let backoff = system_backoff(ev, now);
                if now + backoff > deadline {
                    tracing::warn!(error = %e, "async event expired after system errors; giving up");
                    ended(Condition::EventAgeExceeded, ev.attempts, None, (status, e.to_string()))
                } else {
                    tracing::info!(error = %e, backoff_ms = backoff, "async event not run (throttled or a system error); will retry");
                    Step::Backoff { at_ms: now + backoff }
                }
            }
        }
    }

    /// Counts an event in the metrics, under the function and qualifier it was sent to.
    fn count_event(&self, ev: &AsyncEvent, count: impl FnOnce(&nimbus_metrics::Metrics, &str, Option<&str>)) {
        if let (Some(m), Ok(r)) = (self.metrics(), self.parse_ref(&ev.function, ev.qualifier.as_deref())) {
            count(m, &r.name, r.qualifier.map(|q| q.to_string()).as_deref());
        }
    }

    /// The follow-ups of an ended event (see `destinations`).
    fn finish(&self, ev: &AsyncEvent, policy: &Policy, end: &Ending) -> Vec<FollowUp> {
        follow_ups(self.account(), ev, &policy.function_arn, &policy.routes, end, chrono::Utc::now())
    }

    /// The settings an event is delivered under, read when it is delivered:
    /// the event-invoke config of the qualifier it was sent to and the
    /// configuration it runs. None when the function or qualifier is gone.
    async fn policy(&self, ev: &AsyncEvent) -> Result<Option<Policy>> {
        let Ok(r) = self.parse_ref(&ev.function, ev.qualifier.as_deref()) else {
            return Ok(None);
        };
        let Some(f) = self.meta.get_function(&r.name).await? else {
            return Ok(None);
        };
        let dead_letter = match self.config_at(&f, r.qualifier.as_ref()).await {
            Ok(resolved) => resolved.config.dead_letter_target,
            Err(Error::Rule(nimbus_core::Error::NotFound(_))) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = r.qualifier.as_ref().map_or_else(|| LATEST.to_string(), ToString::to_string);
        let cfg = f.event_invoke_configs.get(&key).cloned().unwrap_or_default();
        Ok(Some(Policy {
            function_arn: self.account().qualified_arn(&r.name, &key),
            retries: cfg.maximum_retry_attempts.unwrap_or(DEFAULT_RETRIES),
            max_age_ms: cfg.maximum_event_age.map_or(DEFAULT_MAX_AGE_MS, |s| i64::from(s) * 1000),
            routes: Routes { on_success: cfg.on_success, on_failure: cfg.on_failure, dead_letter },
            recursion_allowed: f.recursive_loop.as_deref() == Some("Allow"),
            reserved_zero: f.reserved_concurrency == Some(0),
        }))
    }
}

/// What delivering an event once leads to.
enum Step {
    /// Offer it again at `at_ms`, after `attempts` failed runs (the wait
    /// outlives a restart, as AWS's retry delays are the function's).
    Retry { attempts: u32, at_ms: i64 },
    /// Not run (a throttle or a system error): offer it again at `at_ms`,
    /// or at once after a restart.
    Backoff { at_ms: i64 },
    /// It is done; commit what it causes with its removal.
    Finish(Vec<FollowUp>),
}

/// How an event is delivered: its function's async settings.
struct Policy {
    /// The function's ARN with the qualifier the event was sent to.
    function_arn: String,
    retries: u32,
    max_age_ms: i64,
    routes: Routes,
    recursion_allowed: bool,
    reserved_zero: bool,
}

/// The wait after a throttle or a system error: half the event's age so
/// far, from 1 s up to 5 minutes (AWS: exponential from 1 s, capped at 5 min).
fn system_backoff(ev: &AsyncEvent, now: i64) -> i64 {
    ((now - ev.created_ms) / 2).clamp(1000, SYSTEM_BACKOFF_MAX_MS)
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
