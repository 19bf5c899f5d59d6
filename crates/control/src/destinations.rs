//! Where the result of an asynchronous invocation goes: AWS's invocation
//! record for the function's OnSuccess or OnFailure destination, or the
//! original event for its dead-letter queue (`DeadLetterConfig`), built as
//! [`FollowUp`]s that the dispatcher (`asynchronous`) commits in the same
//! transaction that removes the event from the queue.
//!
//! This module decides content and routing only; it must not touch the
//! store. A Lambda-function destination becomes an asynchronous invocation
//! with the record as its event; a queue destination or dead-letter queue
//! becomes a [`QueueMessage`]. Destination types this node does not offer
//! (SNS, EventBridge, S3) are refused when configured (`service_rules`).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use nimbus_core::{Account, FunctionRef};
use nimbus_store::{AsyncEvent, FollowUp, MessageAttribute, QueueMessage};
use serde_json::{json, Value};

/// Why an event's processing ended, as the record's `condition` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// What the function's last run answered.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub executed_version: String,
    /// `Unhandled` (or `Handled`) when the function failed.
    pub function_error: Option<String>,
    pub payload: Bytes,
}

/// How an event ended.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub condition: Condition,
    /// Times the function ran for this event.
    pub invoke_count: u32,
    /// The last run, if the function ran at all: the record's
    /// `responseContext` and `responsePayload` are left out when it never did.
    pub response: Option<Response>,
    /// For a failure: the HTTP status of the last attempt (200 when the
    /// function ran and failed) and its error message, which a dead-letter
    /// message carries as `ErrorCode` and `ErrorMessage`.
    pub error: (u16, String),
    /// Stopped by recursive loop detection: its record goes to a queue or
    /// the dead-letter queue, never to a destination function, whose
    /// invocation would be stopped in turn and send its own record on,
    /// without end (two failing functions naming each other).
    pub loop_stopped: bool,
}

/// Where a function's results go, from its event-invoke config and its
/// configuration's `DeadLetterConfig`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub dead_letter: Option<String>,
}

/// AWS sends the first 1 KB of the error message to a dead-letter queue.
const DLQ_MESSAGE_MAX: usize = 1024;

/// AWS's invocation record, as an asynchronous invocation's destination gets it. `function_arn` carries the
/// qualifier the event was sent to (`$LATEST` when none).
pub(crate) fn invocation_record(ev: &AsyncEvent, function_arn: &str, end: &Ending, now: DateTime<Utc>) -> Value {
    let mut record = json!({
        "version": "1.0",
        "timestamp": now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "requestContext": {
            "requestId": ev.id,
            "functionArn": function_arn,
            "condition": end.condition.as_str(),
            "approximateInvokeCount": end.invoke_count,
        },
        "requestPayload": json_or_text(&ev.payload),
    });
    if let Some(r) = &end.response {
        let mut context = json!({ "statusCode": 200, "executedVersion": r.executed_version });
        if let Some(e) = &r.function_error {
            context["functionError"] = json!(e);
        }
        record["responseContext"] = context;
        record["responsePayload"] = json_or_text(&r.payload);
    }
    record
}

/// What an ended event causes: the record for the destination its
/// condition selects, or, for a failure with no OnFailure destination, the
/// original event for the dead-letter queue.
pub(crate) fn follow_ups(
    account: &Account,
    ev: &AsyncEvent,
    function_arn: &str,
    routes: &Routes,
    end: &Ending,
    now: DateTime<Utc>,
) -> Vec<FollowUp> {
    let destination = match end.condition {
        Condition::Success => routes.on_success.as_deref(),
        Condition::RetriesExhausted | Condition::EventAgeExceeded => routes.on_failure.as_deref(),
    };
    let destination = destination.filter(|arn| {
        let to_function = arn.split(':').nth(2) == Some("lambda");
        if to_function && end.loop_stopped {
            tracing::warn!(destination = %arn, "a recursive loop's stopped event is not sent to a destination function");
        }
        !(to_function && end.loop_stopped)
    });
    if let Some(arn) = destination {
        let record = invocation_record(ev, function_arn, end, now);
        return send_record(account, ev, arn, record, now).into_iter().collect();
    }
    match (&routes.dead_letter, end.condition) {
        (Some(queue_arn), Condition::RetriesExhausted | Condition::EventAgeExceeded) => {
            tracing::info!(dead_letter_queue = %queue_arn, "the event is sent to the dead-letter queue");
            vec![FollowUp::QueueMessage(dead_letter_message(ev, queue_arn, &end.error))]
        }
        _ => Vec::new(),
    }
}

/// The record as an invocation of a destination function or a message for a
/// destination queue.
fn send_record(account: &Account, ev: &AsyncEvent, arn: &str, record: Value, now: DateTime<Utc>) -> Option<FollowUp> {
    match arn.split(':').nth(2) {
        // Refused when the configuration is put; one stored by an older
        // build is not delivered to this node's namesake.
        Some("lambda") if nimbus_core::arn::of_other_partition(arn) => {
            tracing::warn!(destination = %arn, "the destination function is of another partition; the record is dropped");
            None
        }
        Some("lambda") => match FunctionRef::parse(account, arn, None) {
            Ok(r) => {
                tracing::info!(destination = %arn, "the invocation record is sent to the destination function");
                Some(FollowUp::Event(AsyncEvent {
                    id: uuid::Uuid::new_v4().to_string(),
                    function: r.name,
                    qualifier: r.qualifier.map(|q| q.to_string()),
                    payload: record.to_string().into_bytes(),
                    attempts: 0,
                    not_before_ms: now.timestamp_millis(),
                    created_ms: now.timestamp_millis(),
                    // The destination's invocation is one more in this chain,
                    // so that functions sending records to each other are
                    // stopped by recursive loop detection.
                    lineage: ev.lineage.saturating_add(1),
                }))
            }
            Err(e) => {
                tracing::warn!(destination = %arn, error = %e, "the destination function cannot be reached; the record is dropped");
                None
            }
        },
        Some("sqs") => {
            tracing::info!(destination = %arn, "the invocation record is sent to the destination queue");
            let body = record.to_string();
            let mut without_payloads = record;
            if let Some(r) = without_payloads.as_object_mut() {
                r.remove("requestPayload");
                r.remove("responsePayload");
            }
            Some(FollowUp::QueueMessage(QueueMessage {
                queue_arn: arn.to_string(),
                body,
                smaller_body: Some(without_payloads.to_string()),
                attributes: vec![],
                dead_letter: false,
                stored: None,
            }))
        }
        _ => {
            // Configurations stored before such destinations were refused.
            tracing::warn!(destination = %arn, "this node does not deliver to this destination type; the record is dropped");
            None
        }
    }
}

/// The original event with AWS's attributes: `RequestID`, `ErrorCode` (the
/// HTTP status, a Number) and `ErrorMessage` (its first 1 KB).
fn dead_letter_message(ev: &AsyncEvent, queue_arn: &str, (status, message): &(u16, String)) -> QueueMessage {
    let attribute = |name: &str, data_type: &str, value: String| MessageAttribute {
        name: name.to_string(),
        data_type: data_type.to_string(),
        value,
    };
    QueueMessage {
        queue_arn: queue_arn.to_string(),
        body: String::from_utf8_lossy(&ev.payload).into_owned(),
        smaller_body: None,
        attributes: vec![
            attribute("RequestID", "String", ev.id.clone()),
            attribute("ErrorCode", "Number", status.to_string()),
            attribute("ErrorMessage", "String", truncate(message, DLQ_MESSAGE_MAX).to_string()),
        ],
        dead_letter: true,
        stored: None,
    }
}

/// The error message of a function's error response
/// (`{"errorMessage": …, "errorType": …}`).
pub(crate) fn error_message(payload: &[u8]) -> String {
    let v: Value = serde_json::from_slice(payload).unwrap_or_default();
    v["errorMessage"].as_str().map_or_else(|| String::from_utf8_lossy(payload).into_owned(), str::to_string)
}

fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account { id: "123456789012".into(), region: "us-east-1".into() }
    }

    fn event() -> AsyncEvent {
        AsyncEvent {
            id: "req-1".into(),
            function: "f".into(),
            qualifier: None,
            payload: br#"{"order": 7}"#.to_vec(),
            attempts: 2,
            not_before_ms: 0,
            created_ms: 0,
            lineage: 3,
        }
    }

    fn failed() -> Ending {
        Ending {
            condition: Condition::RetriesExhausted,
            invoke_count: 3,
            response: Some(Response {
                executed_version: "$LATEST".into(),
                function_error: Some("Unhandled".into()),
                payload: Bytes::from_static(br#"{"errorMessage":"boom","errorType":"RuntimeError"}"#),
            }),
            error: (200, "boom".into()),
            loop_stopped: false,
        }
    }

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST";

    #[test]
    fn the_record_has_aws_shape() {
        let now = DateTime::parse_from_rfc3339("2019-11-14T18:16:05.568Z").unwrap().with_timezone(&Utc);
        let record = invocation_record(&event(), ARN, &failed(), now);
        assert_eq!(
            record,
            json!({
                "version": "1.0",
                "timestamp": "2019-11-14T18:16:05.568Z",
                "requestContext": {
                    "requestId": "req-1", "functionArn": ARN,
                    "condition": "RetriesExhausted", "approximateInvokeCount": 3,
                },
                "requestPayload": {"order": 7},
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": "boom", "errorType": "RuntimeError"},
            })
        );
        let success = Ending {
            condition: Condition::Success,
            invoke_count: 1,
            response: Some(Response {
                executed_version: "3".into(),
                function_error: None,
                payload: Bytes::from_static(b"null"),
            }),
            error: (200, String::new()),
            loop_stopped: false,
        };
        let record = invocation_record(&event(), ARN, &success, now);
        assert_eq!(record["responseContext"], json!({"statusCode": 200, "executedVersion": "3"}));
        assert_eq!(record["responsePayload"], Value::Null);
        assert!(record.as_object().unwrap().contains_key("responsePayload"));

        let expired = Ending { condition: Condition::EventAgeExceeded, invoke_count: 0, response: None, ..failed() };
        let record = invocation_record(&event(), ARN, &expired, now);
        assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
        assert!(record.get("responseContext").is_none() && record.get("responsePayload").is_none());
    }

    #[test]
    fn a_function_destination_gets_the_record_as_a_new_event() {
        let routes = Routes {
            on_failure: Some("arn:aws:lambda:us-east-1:123456789012:function:dest:live".into()),
            dead_letter: Some("arn:aws:sqs:us-east-1:123456789012:dlq".into()),
            ..Routes::default()
        };
        let ups = follow_ups(&account(), &event(), ARN, &routes, &failed(), Utc::now());
        let [FollowUp::Event(e)] = ups.as_slice() else { panic!("{ups:?}") };
        assert_eq!((e.function.as_str(), e.qualifier.as_deref(), e.attempts, e.lineage), ("dest", Some("live"), 0, 4));
        assert_ne!(e.id, "req-1");
        let record: Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(record["requestContext"]["requestId"], "req-1");
        // A success has no OnSuccess destination here, and never goes to the DLQ.
        let success = Ending { condition: Condition::Success, ..failed() };
        assert!(follow_ups(&account(), &event(), ARN, &routes, &success, Utc::now()).is_empty());
        // Stopped by loop detection, it goes to the dead-letter queue instead:
        // a destination function would be stopped in turn, and so on.
        let stopped = Ending { loop_stopped: true, ..failed() };
        let ups = follow_ups(&account(), &event(), ARN, &routes, &stopped, Utc::now());
        let [FollowUp::QueueMessage(m)] = ups.as_slice() else { panic!("{ups:?}") };
        assert_eq!(m.queue_arn, "arn:aws:sqs:us-east-1:123456789012:dlq");
    }

    #[test]
    fn a_queue_destination_gets_the_record_as_its_body() {
        let routes = Routes { on_success: Some("arn:aws:sqs:us-east-1:123456789012:q".into()), ..Routes::default() };
        let success = Ending { condition: Condition::Success, ..failed() };
        let ups = follow_ups(&account(), &event(), ARN, &routes, &success, Utc::now());
        let [FollowUp::QueueMessage(m)] = ups.as_slice() else { panic!("{ups:?}") };
        assert_eq!(m.queue_arn, "arn:aws:sqs:us-east-1:123456789012:q");
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body["requestContext"]["condition"], "Success");
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn the_dead_letter_queue_gets_the_original_event_with_error_attributes() {
        let routes = Routes { dead_letter: Some("arn:aws:sqs:us-east-1:123456789012:dlq".into()), ..Routes::default() };
        let mut end = failed();
        end.error.1 = "é".repeat(600);
        let ups = follow_ups(&account(), &event(), ARN, &routes, &end, Utc::now());
        let [FollowUp::QueueMessage(m)] = ups.as_slice() else { panic!("{ups:?}") };
        assert_eq!(m.body, r#"{"order": 7}"#);
        let attrs: Vec<(&str, &str, &str)> =
            m.attributes.iter().map(|a| (a.name.as_str(), a.data_type.as_str(), a.value.as_str())).collect();
        assert_eq!(attrs[..2], [("RequestID", "String", "req-1"), ("ErrorCode", "Number", "200")]);
        assert_eq!(attrs[2].2, "é".repeat(512), "the first 1 KB, cut at a character boundary");
    }

    #[test]
    fn unsupported_destinations_and_error_messages() {
        let routes = Routes { on_failure: Some("arn:aws:sns:us-east-1:123456789012:t".into()), ..Routes::default() };
        assert!(follow_ups(&account(), &event(), ARN, &routes, &failed(), Utc::now()).is_empty());
        assert_eq!(error_message(br#"{"errorMessage":"boom"}"#), "boom");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
