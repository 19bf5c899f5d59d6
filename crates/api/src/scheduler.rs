//! The EventBridge Scheduler API (rest-json, SigV4 service `scheduler`):
//! its routes, the model's checks (`nimbus-model`, botocore's scheduler
//! model), wire ↔ domain conversion, and its error shape
//! (`x-amzn-ErrorType` with a `{"Message"}` body). The rules are
//! `nimbus_triggers::schedules`'; nothing here fires a schedule.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::schedules::{Schedule, ScheduleGroup};
use nimbus_triggers::schedules::{Error as SchedError, ScheduleInput, ScheduleQuery, Schedules, TargetInput};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::route::Query;
use crate::sigv4::SignedParts;
use crate::{read_signed_body, Api, ApiError};

/// Largest request body (a schedule with a large Input).
const BODY_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateSchedule,
    GetSchedule,
    UpdateSchedule,
    DeleteSchedule,
    ListSchedules,
    CreateScheduleGroup,
    GetScheduleGroup,
    DeleteScheduleGroup,
    ListScheduleGroups,
    TagResource,
    UntagResource,
    ListTagsForResource,
}

/// The operation and its URI label (`Name` or `ResourceArn`), decoded.
fn route(method: &Method, raw_path: &str) -> Option<(Op, Option<(&'static str, String)>)> {
    let segs: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let label = |name: &'static str, raw: &str| {
        Some((name, percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()))
    };
    let (name, arn) = ("Name", "ResourceArn");
    Some(match (method.as_str(), segs.as_slice()) {
        ("GET", ["schedules"]) => (Op::ListSchedules, None),
        ("POST", ["schedules", n]) => (Op::CreateSchedule, label(name, n)),
        ("GET", ["schedules", n]) => (Op::GetSchedule, label(name, n)),
        ("PUT", ["schedules", n]) => (Op::UpdateSchedule, label(name, n)),
        ("DELETE", ["schedules", n]) => (Op::DeleteSchedule, label(name, n)),
        ("GET", ["schedule-groups"]) => (Op::ListScheduleGroups, None),
        ("POST", ["schedule-groups", n]) => (Op::CreateScheduleGroup, label(name, n)),
        ("GET", ["schedule-groups", n]) => (Op::GetScheduleGroup, label(name, n)),
        ("DELETE", ["schedule-groups", n]) => (Op::DeleteScheduleGroup, label(name, n)),
        ("POST", ["tags", a]) => (Op::TagResource, label(arn, a)),
        ("GET", ["tags", a]) => (Op::ListTagsForResource, label(arn, a)),
        ("DELETE", ["tags", a]) => (Op::UntagResource, label(arn, a)),
        _ => return None,
    })
}

/// Whether an unsigned request names a Scheduler operation (so that the
/// Scheduler refuses it, in its own shape): a tag operation only for one
/// of its ARNs.
pub fn is_unsigned_scheduler(method: &Method, raw_path: &str) -> bool {
    match route(method, raw_path) {
        Some((Op::TagResource | Op::ListTagsForResource | Op::UntagResource, label)) => {
            label.is_some_and(|(_, arn)| arn.contains(":scheduler:"))
        }
        routed => routed.is_some(),
    }
}

/// A refusal in the Scheduler's shape.
struct Failure {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn validation(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind: "ValidationException", message: message.into() }
    }
}

impl From<SchedError> for Failure {
    fn from(e: SchedError) -> Self {
        use nimbus_core::Error as Rule;
        let (status, kind) = match &e {
            SchedError::Rule(Rule::NotFound(_)) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            SchedError::Rule(Rule::Conflict(_)) => (StatusCode::CONFLICT, "ConflictException"),
            SchedError::Rule(Rule::QuotaExceeded(_)) => (StatusCode::PAYMENT_REQUIRED, "ServiceQuotaExceededException"),
            SchedError::Rule(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            SchedError::Store(detail) => {
                tracing::error!(error = %detail, "internal error");
                let message = "An internal error occurred; see the Nimbus server log.".into();
                return Self { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "InternalServerException", message };
            }
        };
        Self { status, kind, message: e.to_string() }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let (status, kind) = e.status_and_type();
        Self { status, kind, message: e.to_string() }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::debug!(error_type = self.kind, message = %self.message, "request refused");
        let mut resp = (self.status, axum::Json(json!({ "Message": self.message }))).into_response();
        resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        resp
    }
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    serve_inner(api, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(api: &Api, req: Request<Body>) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let routed = route(&parts.method, &raw_path);
    let name = routed.as_ref().map(|(op, _)| format!("{op:?}")).unwrap_or_default();
    let action = crate::access::Action { service: "scheduler", operation: &name, function: None };
    let body = read_signed_body(api, &parts, body, BODY_MAX, &action)
        .await
        .map_err(|e| Failure::from(ApiError::from(e)))?
        .map_err(|u| match u {
            crate::Unread::TooLarge => Failure::validation(format!("Request must be smaller than {BODY_MAX} bytes")),
            crate::Unread::Busy => Failure::from(ApiError::Busy),
            crate::Unread::Abandoned => Failure::from(ApiError::Abandoned),
        })?;
    let signed = SignedParts::of(&parts, &body);
    api.verifier.verify(&signed, "scheduler", SystemTime::now()).map_err(|e| Failure::from(ApiError::from(e)))?;
    let (op, label) = routed.ok_or_else(|| {
        Failure::from(ApiError::UnknownOperation(format!("No operation for {} {raw_path}", parts.method)))
    })?;
    let query = Query::parse(raw_query.as_deref());
    let json: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| Failure::validation(format!("Invalid JSON body: {e}")))?)
    };
    if let Some(model) = nimbus_model::Model::of("scheduler") {
        let request = nimbus_model::Request {
            labels: label.iter().map(|(k, v)| (*k, v.as_str())).collect(),
            query: query.pairs().collect(),
            headers: parts.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect(),
            body: json.as_ref(),
        };
        nimbus_model::validate(model, &name, &request).map_err(|v| Failure::validation(v.to_string()))?;
    }
    let schedules = api.schedules.as_deref().ok_or_else(|| {
        Failure::from(ApiError::Unavailable("EventBridge Scheduler is not served by this node".into()))
    })?;
    tracing::debug!(operation = %name, "authenticated");
    let label = label.map(|(_, v)| v).unwrap_or_default();
    let out = execute(schedules, op, &label, &query, json.unwrap_or(Value::Object(Map::new()))).await?;
    Ok((StatusCode::OK, axum::Json(out)).into_response())
}

async fn execute(s: &Schedules, op: Op, label: &str, query: &Query, body: Value) -> Result<Value, Failure> {
    Ok(match op {
        Op::CreateSchedule => json!({ "ScheduleArn": s.create_schedule(schedule_input(label, body)?).await? }),
        Op::UpdateSchedule => json!({ "ScheduleArn": s.update_schedule(schedule_input(label, body)?).await? }),
        Op::GetSchedule => schedule_json(&s.get_schedule(query.get("groupName"), label).await?),
        Op::DeleteSchedule => {
            s.delete_schedule(query.get("groupName"), label).await?;
            json!({})
        }
        Op::ListSchedules => {
            let page = s
                .list_schedules(ScheduleQuery {
                    group: query.get("ScheduleGroup").map(str::to_string),
                    name_prefix: query.get("NamePrefix").map(str::to_string),
                    state: query.get("State").map(str::to_string),
                    max_results: max_results(query)?,
                    next_token: query.get("NextToken").map(str::to_string),
                })
                .await?;
            let items: Vec<Value> = page.items.iter().map(schedule_summary).collect();
            with_token(json!({ "Schedules": items }), page.next_token)
        }
        Op::CreateScheduleGroup => {
            let tags = tags(&body)?;
            let token = body.get("ClientToken").and_then(Value::as_str).map(str::to_string);
            json!({ "ScheduleGroupArn": s.create_schedule_group(label, tags, token).await? })
        }
        Op::GetScheduleGroup => group_json(&s.get_schedule_group(label).await?),
        Op::DeleteScheduleGroup => {
            s.delete_schedule_group(label).await?;
            json!({})
        }
        Op::ListScheduleGroups => {
            let page =
                s.list_schedule_groups(query.get("NamePrefix"), max_results(query)?, query.get("NextToken")).await?;
            let items: Vec<Value> = page.items.iter().map(group_json).collect();
            with_token(json!({ "ScheduleGroups": items }), page.next_token)
        }
        Op::TagResource => {
            s.tag_resource(label, tags(&body)?).await?;
            json!({})
        }
        Op::UntagResource => {
            s.untag_resource(label, &query.all("TagKeys")).await?;
            json!({})
        }
        Op::ListTagsForResource => {
            let tags: Vec<Value> =
                s.list_tags(label).await?.into_iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
            json!({ "Tags": tags })
        }
    })
}

fn max_results(query: &Query) -> Result<Option<usize>, Failure> {
    query
        .get("MaxResults")
        .map(|v| v.parse().map_err(|_| Failure::validation(format!("Invalid MaxResults {v}."))))
        .transpose()
}

fn with_token(mut v: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        v["NextToken"] = Value::String(t);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleBody {
    group_name: Option<String>,
    schedule_expression: String,
    schedule_expression_timezone: Option<String>,
    start_date: Option<Value>,
    end_date: Option<Value>,
    description: Option<String>,
    state: Option<String>,
    kms_key_arn: Option<String>,
    target: TargetBody,
    flexible_time_window: FlexibleBody,
    action_after_completion: Option<String>,
    client_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetBody {
    arn: String,
    role_arn: String,
    input: Option<String>,
    retry_policy: Option<RetryBody>,
    dead_letter_config: Option<DeadLetterBody>,
    /// The parameters of other target types (EcsParameters, SqsParameters, …).
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RetryBody {
    maximum_event_age_in_seconds: Option<u32>,
    maximum_retry_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeadLetterBody {
    arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FlexibleBody {
    mode: String,
    maximum_window_in_minutes: Option<u32>,
}

fn schedule_input(name: &str, body: Value) -> Result<ScheduleInput, Failure> {
    let b: ScheduleBody =
        serde_json::from_value(body).map_err(|e| Failure::validation(format!("Invalid request: {e}")))?;
    if let Some(other) = b.target.other.keys().next() {
        return Err(Failure::validation(format!(
            "Target {other} is not supported: this node invokes Lambda function targets only."
        )));
    }
    // As for Lambda's KMSKeyArn: a setting this node cannot honour is refused, not ignored.
    if b.kms_key_arn.is_some() {
        return Err(Failure::validation("KmsKeyArn is not supported: this node has no KMS to encrypt schedules with."));
    }
    let retry = b.target.retry_policy.as_ref();
    Ok(ScheduleInput {
        group: b.group_name,
        name: name.to_string(),
        description: b.description,
        expression: b.schedule_expression,
        timezone: b.schedule_expression_timezone,
        start_ms: b.start_date.as_ref().map(|v| timestamp_ms(v, "StartDate")).transpose()?,
        end_ms: b.end_date.as_ref().map(|v| timestamp_ms(v, "EndDate")).transpose()?,
        state: b.state,
        flexible_mode: b.flexible_time_window.mode,
        flexible_window_minutes: b.flexible_time_window.maximum_window_in_minutes,
        action_after_completion: b.action_after_completion,
        target: TargetInput {
            arn: b.target.arn,
            role_arn: b.target.role_arn,
            input: b.target.input,
            max_event_age_seconds: retry.and_then(|r| r.maximum_event_age_in_seconds),
            max_retry_attempts: retry.and_then(|r| r.maximum_retry_attempts),
            dead_letter_arn: b.target.dead_letter_config.and_then(|d| d.arn),
        },
        client_token: b.client_token,
    })
}

/// rest-json timestamps are epoch seconds; an ISO 8601 string is read too.
fn timestamp_ms(v: &Value, member: &str) -> Result<i64, Failure> {
    let ms = match v {
        Value::Number(n) => n.as_f64().map(|s| (s * 1000.0).round() as i64),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
        _ => None,
    };
    ms.ok_or_else(|| Failure::validation(format!("Invalid {member}: {v}")))
}

fn tags(body: &Value) -> Result<BTreeMap<String, String>, Failure> {
    let list = body["Tags"].as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|t| match (t["Key"].as_str(), t["Value"].as_str()) {
            (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::validation("Each tag needs a Key and a Value.")),
        })
        .collect()
}

fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn schedule_json(s: &Schedule) -> Value {
    let t = &s.target;
    let mut target = json!({
        "Arn": t.arn,
        "RoleArn": t.role_arn,
        "RetryPolicy": {
            "MaximumEventAgeInSeconds": t.max_event_age_seconds,
            "MaximumRetryAttempts": t.max_retry_attempts,
        },
    });
    if let Some(input) = &t.input {
        target["Input"] = json!(input);
    }
    if let Some(dlq) = &t.dead_letter_arn {
        target["DeadLetterConfig"] = json!({ "Arn": dlq });
    }
    let window = match s.flexible_window_minutes {
        Some(m) => json!({ "Mode": "FLEXIBLE", "MaximumWindowInMinutes": m }),
        None => json!({ "Mode": "OFF" }),
    };
    let mut v = json!({
        "Arn": s.arn,
        "GroupName": s.group,
        "Name": s.name,
        "ScheduleExpression": s.expression,
        "ScheduleExpressionTimezone": s.timezone,
        "State": state(s),
        "CreationDate": seconds(s.created_ms),
        "LastModificationDate": seconds(s.modified_ms),
        "Target": target,
        "FlexibleTimeWindow": window,
        "ActionAfterCompletion": s.action_after_completion.as_deref().unwrap_or("NONE"),
    });
    let optional = [
        ("Description", s.description.as_ref().map(|d| json!(d))),
        ("StartDate", s.start_ms.map(seconds)),
        ("EndDate", s.end_ms.map(seconds)),
    ];
    for (k, val) in optional {
        if let Some(val) = val {
            v[k] = val;
        }
    }
    v
}

fn state(s: &Schedule) -> &'static str {
    if s.enabled {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

fn schedule_summary(s: &Schedule) -> Value {
    json!({
        "Arn": s.arn,
        "Name": s.name,
        "GroupName": s.group,
        "State": state(s),
        "CreationDate": seconds(s.created_ms),
        "LastModificationDate": seconds(s.modified_ms),
        "Target": { "Arn": s.target.arn },
    })
}

fn group_json(g: &ScheduleGroup) -> Value {
    let mut v = json!({ "Arn": g.arn, "Name": g.name, "State": "ACTIVE" });
    // The implicit default group was never created.
    if g.created_ms != 0 {
        v["CreationDate"] = seconds(g.created_ms);
        v["LastModificationDate"] = seconds(g.modified_ms);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_model_and_decode_arns() {
        let r = |m: &str, p: &str| route(&m.parse().unwrap(), p);
        assert_eq!(r("POST", "/schedules/s1"), Some((Op::CreateSchedule, Some(("Name", "s1".into())))));
        assert_eq!(r("PUT", "/schedules/s1").unwrap().0, Op::UpdateSchedule);
        assert_eq!(r("GET", "/schedules"), Some((Op::ListSchedules, None)));
        assert_eq!(r("DELETE", "/schedule-groups/g").unwrap().0, Op::DeleteScheduleGroup);
        assert_eq!(
            r("GET", "/tags/arn%3Aaws%3Ascheduler%3Aus-east-1%3A123456789012%3Aschedule-group%2Fg"),
            Some((
                Op::ListTagsForResource,
                Some(("ResourceArn", "arn:aws:scheduler:us-east-1:123456789012:schedule-group/g".into()))
            ))
        );
        assert_eq!(r("PATCH", "/schedules/s1"), None);
        assert_eq!(r("GET", "/other"), None);
    }

    #[test]
    fn timestamps_are_epoch_seconds_or_iso() {
        assert_eq!(timestamp_ms(&json!(1_700_000_000.5), "StartDate").ok(), Some(1_700_000_000_500));
        assert_eq!(timestamp_ms(&json!("2023-11-14T22:13:20Z"), "StartDate").ok(), Some(1_700_000_000_000));
        assert!(timestamp_ms(&json!(true), "StartDate").is_err());
    }
}
