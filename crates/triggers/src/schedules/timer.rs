//! The one timer: a single task that sleeps until the earliest time a
//! schedule fires or a retry is due (or until a change wakes it), fires
//! what is due, and sleeps again. No task per schedule, no polling: with
//! nothing due it costs nothing.
//!
//! A firing is recorded with what it produced in one store transaction:
//! the async event that invokes the Lambda target (delivered by control's
//! async dispatcher, with the function's own retry policy), or a retry of
//! the firing when the target cannot be invoked (missing function), and the
//! schedule's next due time or its deletion. A crash before the commit
//! fires the time again after the restart; after it, never: at least once.
//!
//! After downtime a schedule fires once, for its latest due time missed
//! while the node was down, and the earlier ones are reported skipped
//! (WARN); times due since the node started all fire. A firing older than
//! the RetryPolicy's MaximumEventAgeInSeconds is not delivered at all.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use nimbus_core::queues::AttributeValue;
use nimbus_core::schedules::Schedule;
use nimbus_core::FunctionRef;
use nimbus_queues::OutgoingMessage;
use nimbus_store::{After, AsyncEvent, DueTimes, Firing, ScheduleRetry, ScheduleRow};

use super::{times, Schedules};

/// Schedules or retries handled per store read.
const BATCH: usize = 64;
const RETRY_BACKOFF_MAX_MS: i64 = 5 * 60_000;
/// After a store error, before the timer tries again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What a firing of a schedule is: its schedule, time, execution and attempt.
struct Run<'a> {
    schedule: &'a Schedule,
    scheduled_ms: i64,
    execution_id: &'a str,
    attempt: u32,
}

impl Schedules {
    /// Fires schedules until the process ends.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            let wake = match self.fire_due().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "schedules: cannot read or record firings; trying again");
                    Some(self.clock.after(STORE_ERROR_PAUSE))
                }
            };
            match wake {
                Some(t) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.clock.until(t)) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Fires every schedule and retry due now; returns when the next is due.
    /// The schedules' write lock is taken a batch at a time: held through a
    /// burst, it kept CreateSchedule and the like waiting as long as the
    /// burst lasted (4.6 s for 2,000 schedules due in one minute).
    async fn fire_due(&self) -> super::Result<Option<i64>> {
        loop {
            let _w = self.writes.lock().await;
            let now = self.clock.now_ms();
            let due = self.meta.due_schedules(now, BATCH).await?;
            let retries = self.meta.due_schedule_retries(now, BATCH).await?;
            if due.is_empty() && retries.is_empty() {
                return Ok(self.meta.next_schedule_wake().await?);
            }
            for row in due {
                self.fire(row, now).await?;
            }
            for r in retries {
                self.retry(r, now).await?;
            }
        }
    }

    async fn fire(&self, row: ScheduleRow, now: i64) -> super::Result<()> {
        let s = &row.schedule;
        let (Some(due), Ok(timing)) = (row.times.due_ms, self.timing(s)) else {
            // Unreadable (cannot happen for what create checked): park it.
            return self.record(s, After::Next(DueTimes::default()), None, None, None).await;
        };
        // A due time is missed only once its whole flexible window has passed,
        // and only if it fell while the node was down: a running node that
        // falls behind (a stalled disk, a starved timer) fires each time late.
        let window_ms = i64::from(s.flexible_window_minutes.unwrap_or(0)) * 60_000;
        let (scheduled, missed) = timing.latest_due(due, (now - window_ms).min(self.started_ms).max(due));
        let next = times(s, timing.next_due(scheduled));
        let completed = next.due_ms.is_none();
        if missed.any() {
            tracing::warn!(
                schedule = %s.arn, skipped = %missed, from = %stamp(due), before = %stamp(scheduled),
                "schedule missed due times while the node was down; firing only the latest"
            );
        }
        let after = |delivered: bool| match completed && delivered && deletes(s) {
            true => After::Delete,
            false => After::Next(next),
        };
        let execution_id = uuid::Uuid::new_v4().to_string();
        let run = Run { schedule: s, scheduled_ms: scheduled, execution_id: &execution_id, attempt: 1 };
        if now - scheduled > i64::from(s.target.max_event_age_seconds) * 1000 {
            // Too old to invoke (the node was down): dead-lettered as an
            // age-exhausted retry is, never dropped unseen.
            let reason =
                format!("the firing is older than its MaximumEventAgeInSeconds ({}s)", s.target.max_event_age_seconds);
            self.dead_letter(&run, &reason, "MaximumEventAgeInSeconds").await;
            return self.record(s, after(true), None, None, None).await;
        }
        match self.event(&run).await {
            Ok(event) => {
                tracing::info!(schedule = %s.arn, scheduled_time = %stamp(scheduled), "schedule fired");
                self.record(s, after(true), Some(event), None, None).await
            }
            Err(reason) => {
                let retry = self.after_failure(&run, &reason, now).await;
                self.record(s, after(retry.is_none()), None, retry, None).await
            }
        }
    }

    async fn retry(&self, r: ScheduleRetry, now: i64) -> super::Result<()> {
        let Some(row) = self.meta.get_schedule(&r.group, &r.name).await? else {
            return Ok(());
        };
        let s = &row.schedule;
        // Enabled with nothing left due: completed (a disabled one only waits).
        let completed = s.enabled && row.times.due_ms.is_none();
        // Once this firing is done (delivered or given up), a completed
        // schedule with ActionAfterCompletion DELETE goes.
        let done_after = || if completed && deletes(s) { After::Delete } else { After::Unchanged };
        let run =
            Run { schedule: s, scheduled_ms: r.scheduled_ms, execution_id: &r.execution_id, attempt: r.attempts + 1 };
        let done = Some(r.execution_id.clone());
        match self.event(&run).await {
            Ok(event) => {
                tracing::info!(schedule = %s.arn, attempt = run.attempt, "schedule fired after retrying");
                self.record(s, done_after(), Some(event), None, done).await
            }
            Err(reason) => match self.after_failure(&run, &reason, now).await {
                Some(retry) => self.record(s, After::Unchanged, None, Some(retry), None).await,
                None => self.record(s, done_after(), None, None, done).await,
            },
        }
    }

    /// The retry of a failed attempt, or `None` (after dead-lettering it)
    /// when the RetryPolicy is spent.
    async fn after_failure(&self, run: &Run<'_>, reason: &str, now: i64) -> Option<ScheduleRetry> {
        let s = run.schedule;
        let backoff = (1000i64 << run.attempt.min(20).saturating_sub(1)).min(RETRY_BACKOFF_MAX_MS);
        let age_ok = now + backoff - run.scheduled_ms <= i64::from(s.target.max_event_age_seconds) * 1000;
        if run.attempt <= s.target.max_retry_attempts && age_ok {
            tracing::info!(schedule = %s.arn, attempt = run.attempt, %reason, backoff_ms = backoff, "schedule target not invoked; will retry");
            return Some(ScheduleRetry {
                execution_id: run.execution_id.to_string(),
                group: s.group.clone(),
                name: s.name.clone(),
                scheduled_ms: run.scheduled_ms,
                attempts: run.attempt,
                not_before_ms: now + backoff,
            });
        }
        let exhausted = if age_ok { "MaximumRetryAttempts" } else { "MaximumEventAgeInSeconds" };
        self.dead_letter(run, reason, exhausted).await;
        None
    }

    /// Sends a firing whose retries are spent to the schedule's
    /// DeadLetterConfig queue: the input it would have been invoked with,
    /// and what went wrong as message attributes, as EventBridge Scheduler's
    /// dead-letter events carry them. It is sent (durably) before the
    /// firing's end is recorded, so a crash in between repeats it rather
    /// than losing it. Without a queue, or if the queue refuses it, the
    /// firing is logged and dropped.
    async fn dead_letter(&self, run: &Run<'_>, reason: &str, exhausted: &str) {
        let s = run.schedule;
        let Some(queue) = s.target.dead_letter_arn.as_deref() else {
            tracing::warn!(schedule = %s.arn, execution_id = %run.execution_id, attempts = run.attempt, %reason,
                "schedule firing failed; giving up (no dead-letter queue)");
            return;
        };
        let text = |v: String| AttributeValue { data_type: "String".into(), string: Some(v), binary: None };
        let attributes = [
            ("ERROR_CODE", "AWS.Scheduler.TargetInvocationFailed".to_string()),
            ("ERROR_MESSAGE", reason.to_string()),
            ("EXHAUSTED_RETRY_CONDITION", exhausted.to_string()),
            ("RETRY_ATTEMPTS", run.attempt.saturating_sub(1).to_string()),
            ("SCHEDULE_ARN", s.arn.clone()),
            ("TARGET_ARN", s.target.arn.clone()),
        ];
        let message = OutgoingMessage {
            body: payload(run),
            attributes: attributes.into_iter().map(|(k, v)| (k.to_string(), text(v))).collect(),
            ..Default::default()
        };
        match self.queues.send(queue, message).await {
            Ok(_) => tracing::warn!(schedule = %s.arn, execution_id = %run.execution_id, dead_letter_queue = %queue,
                %reason, "schedule firing failed; sent to its dead-letter queue"),
            Err(e) => tracing::warn!(schedule = %s.arn, execution_id = %run.execution_id, dead_letter_queue = %queue,
                %reason, error = %e, "schedule firing failed; its dead-letter queue refused it, so it is dropped"),
        }
    }

    /// The async event that invokes the target, or why it cannot be invoked.
    async fn event(&self, run: &Run<'_>) -> Result<AsyncEvent, String> {
        let target = &run.schedule.target;
        let function = FunctionRef::parse(self.control.account(), &target.arn, None).map_err(|e| e.to_string())?;
        self.control.resolve_invocation(&target.arn, None).await.map_err(|e| e.to_string())?;
        let payload = payload(run);
        // Lambda's Invoke refuses a payload that is not JSON: the firing
        // fails as the target's invocation would (its retries, then the
        // schedule's dead-letter queue), not in the function's runtime.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&payload) {
            return Err(format!(
                "InvalidRequestContentException: Could not parse request body into json: Could not parse payload into json: {e}"
            ));
        }
        let now = Utc::now().timestamp_millis();
        Ok(AsyncEvent {
            id: uuid::Uuid::new_v4().to_string(),
            function: function.name,
            qualifier: function.qualifier.map(|q| q.to_string()),
            payload: payload.into_bytes(),
            attempts: 0,
            not_before_ms: now,
            created_ms: now,
            lineage: 0,
        })
    }

    async fn record(
        &self,
        s: &Schedule,
        schedule: After,
        event: Option<AsyncEvent>,
        retry: Option<ScheduleRetry>,
        retry_done: Option<String>,
    ) -> super::Result<()> {
        let queued = event.is_some();
        if schedule == After::Delete {
            tracing::info!(
                schedule = %s.arn,
                "schedule completed; deleted once no firing of it is left to retry (ActionAfterCompletion DELETE)"
            );
        }
        let f = Firing { group: s.group.clone(), name: s.name.clone(), schedule, event, retry, retry_done };
        self.meta.record_firing(&f).await?;
        if queued {
            self.control.wake_async();
        }
        Ok(())
    }
}

fn deletes(s: &Schedule) -> bool {
    s.action_after_completion.as_deref() == Some("DELETE")
}

fn stamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The Input with AWS's context keywords replaced for this attempt.
/// What the target gets: the schedule's `Input` with its context keywords
/// replaced, or without one, EventBridge Scheduler's default notification.
fn payload(run: &Run<'_>) -> String {
    match run.schedule.target.input.as_deref() {
        Some(input) => substitute(input, run),
        None => {
            let arn = &run.schedule.arn;
            let mut parts = arn.split(':').skip(3);
            let (region, account) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            serde_json::json!({
                "version": "0",
                "id": run.execution_id,
                "detail-type": "Scheduled Event",
                "source": "aws.scheduler",
                "account": account,
                "time": stamp(run.scheduled_ms),
                "region": region,
                "resources": [arn],
                "detail": "{}",
            })
            .to_string()
        }
    }
}

fn substitute(input: &str, run: &Run<'_>) -> String {
    input
        .replace("<aws.scheduler.schedule-arn>", &run.schedule.arn)
        .replace("<aws.scheduler.scheduled-time>", &stamp(run.scheduled_ms))
        .replace("<aws.scheduler.execution-id>", run.execution_id)
        .replace("<aws.scheduler.attempt-number>", &run.attempt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keywords_are_replaced_and_the_rest_kept_verbatim() {
        let s: Schedule = serde_json::from_value(serde_json::json!({
            "group": "default", "name": "n", "arn": "arn:aws:scheduler:us-east-1:123456789012:schedule/default/n",
            "description": null, "expression": "rate(1 minute)", "timezone": "UTC", "start_ms": null,
            "end_ms": null, "enabled": true, "flexible_window_minutes": null, "action_after_completion": null,
            "created_ms": 0, "modified_ms": 0,
            "target": {"arn": "a", "role_arn": "r", "input": null, "max_event_age_seconds": 60,
                       "max_retry_attempts": 0, "dead_letter_arn": null}
        }))
        .unwrap();
        let run = Run { schedule: &s, scheduled_ms: 1_764_633_600_000, execution_id: "e-1", attempt: 2 };
        assert_eq!(
            substitute(
                r#"{"arn":"<aws.scheduler.schedule-arn>","at":"<aws.scheduler.scheduled-time>","id":"<aws.scheduler.execution-id>","n":<aws.scheduler.attempt-number>, "x": " <aws.other> "}"#,
                &run
            ),
            r#"{"arn":"arn:aws:scheduler:us-east-1:123456789012:schedule/default/n","at":"2025-12-02T00:00:00Z","id":"e-1","n":2, "x": " <aws.other> "}"#
        );
        // No input: the default notification, as AWS documents it.
        let notification: serde_json::Value = serde_json::from_str(&payload(&run)).unwrap();
        assert_eq!(
            notification,
            serde_json::json!({"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.scheduler",
                "account": "123456789012", "time": "2025-12-02T00:00:00Z", "region": "us-east-1",
                "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/n"], "detail": "{}"})
        );
    }
}
