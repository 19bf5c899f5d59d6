//! CloudWatch Logs' requests and responses on the wire (camelCase members,
//! as botocore's logs model names them), and the dispatch of each
//! operation to `nimbus-logs`.

use std::collections::BTreeMap;

use nimbus_logs::{
    FilterQuery, GetQuery, InputEvent, LogEvent, LogGroupRow, LogStreamRow, Logs, OrderBy, StreamsQuery,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{input, unknown, Failure};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupName {
    log_group_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateGroup {
    log_group_name: String,
    /// Not offered: refused rather than ignored (a delete would succeed).
    deletion_protection_enabled: Option<bool>,
    /// Only `STANDARD` is offered: another is refused rather than reported as it.
    log_group_class: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// TagResource, UntagResource and ListTagsForResource, by ARN.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceTags {
    resource_arn: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

/// The older TagLogGroup and UntagLogGroup, by name: `tags` is a map to
/// add, or the keys to remove.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupTags<T> {
    log_group_name: String,
    tags: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamName {
    log_group_name: String,
    log_stream_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Retention {
    log_group_name: String,
    retention_in_days: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeGroups {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
    /// Names or ARNs: only these groups.
    log_group_identifiers: Option<Vec<String>>,
    /// Every group here is `STANDARD`.
    log_group_class: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeStreams {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    #[serde(default)]
    descending: bool,
    next_token: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutEvents {
    log_group_name: String,
    log_stream_name: String,
    log_events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    timestamp: i64,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetEvents {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    start_from_head: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterEvents {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn execute(logs: &Logs, op: &str, body: Value) -> Result<Value, Failure> {
    Ok(match op {
        "CreateLogGroup" => {
            let q: CreateGroup = input(body)?;
            if q.deletion_protection_enabled == Some(true) {
                return Err(Failure::new(
                    "InvalidParameterException",
                    "Deletion protection is not offered by this Nimbus node: a protected log group could still be deleted.",
                ));
            }
            if let Some(class) = q.log_group_class.filter(|c| c != "STANDARD") {
                return Err(Failure::new(
                    "InvalidParameterException",
                    format!("Log group class {class} is not offered by this Nimbus node: its groups are STANDARD."),
                ));
            }
            logs.create_log_group(&q.log_group_name, &q.tags).await?;
            json!({})
        }
        "ListTagsForResource" => {
            let group = logs.group_of_arn(&input::<ResourceTags>(body)?.resource_arn)?;
            json!({ "tags": logs.tags(&group).await? })
        }
        "TagResource" => {
            let q: ResourceTags = input(body)?;
            logs.retag(&logs.group_of_arn(&q.resource_arn)?, &q.tags, &[]).await?;
            json!({})
        }
        "UntagResource" => {
            let q: ResourceTags = input(body)?;
            logs.retag(&logs.group_of_arn(&q.resource_arn)?, &BTreeMap::new(), &q.tag_keys).await?;
            json!({})
        }
        "ListTagsLogGroup" => json!({ "tags": logs.tags(&input::<GroupName>(body)?.log_group_name).await? }),
        "TagLogGroup" => {
            let q: GroupTags<BTreeMap<String, String>> = input(body)?;
            logs.retag(&q.log_group_name, &q.tags, &[]).await?;
            json!({})
        }
        "UntagLogGroup" => {
            let q: GroupTags<Vec<String>> = input(body)?;
            logs.retag(&q.log_group_name, &BTreeMap::new(), &q.tags).await?;
            json!({})
        }
        "DeleteLogGroup" => {
            logs.delete_log_group(&input::<GroupName>(body)?.log_group_name).await?;
            json!({})
        }
        "DescribeLogGroups" => {
            let q: DescribeGroups = input(body)?;
            if q.log_group_class.as_deref().is_some_and(|c| c != "STANDARD") {
                return Ok(json!({ "logGroups": [] }));
            }
            if let Some(ids) = q.log_group_identifiers {
                // Each group named, as it is (a missing one is left out).
                let mut groups = Vec::new();
                for id in ids {
                    let name = logs.group_of(None, Some(id))?;
                    let page = logs.describe_log_groups(Some(&name), None, None, None).await?;
                    groups.extend(page.items.iter().filter(|g| g.name == name).map(|g| group_json(logs, g)));
                }
                return Ok(json!({ "logGroups": groups }));
            }
            let page = logs
                .describe_log_groups(
                    q.log_group_name_prefix.as_deref(),
                    q.log_group_name_pattern.as_deref(),
                    q.next_token.as_deref(),
                    q.limit,
                )
                .await?;
            let groups: Vec<Value> = page.items.iter().map(|g| group_json(logs, g)).collect();
            with_token(json!({ "logGroups": groups }), page.next_token)
        }
        "PutRetentionPolicy" => {
            let q: Retention = input(body)?;
            logs.put_retention_policy(&q.log_group_name, q.retention_in_days).await?;
            json!({})
        }
        "DeleteRetentionPolicy" => {
            logs.delete_retention_policy(&input::<GroupName>(body)?.log_group_name).await?;
            json!({})
        }
        "CreateLogStream" => {
            let q: StreamName = input(body)?;
            logs.create_log_stream(&q.log_group_name, &q.log_stream_name).await?;
            json!({})
        }
        "DeleteLogStream" => {
            let q: StreamName = input(body)?;
            logs.delete_log_stream(&q.log_group_name, &q.log_stream_name).await?;
            json!({})
        }
        "DescribeLogStreams" => {
            let q: DescribeStreams = input(body)?;
            let group = logs.group_of(q.log_group_name, q.log_group_identifier)?;
            let order_by = (q.order_by.as_deref() == Some("LastEventTime")).then_some(OrderBy::LastEvent);
            let page = logs
                .describe_log_streams(StreamsQuery {
                    group: &group,
                    prefix: q.log_stream_name_prefix.as_deref(),
                    order_by,
                    descending: q.descending,
                    next_token: q.next_token.as_deref(),
                    limit: q.limit,
                })
                .await?;
            let streams: Vec<Value> = page.items.iter().map(|s| stream_json(logs, s)).collect();
            with_token(json!({ "logStreams": streams }), page.next_token)
        }
        "PutLogEvents" => {
            let q: PutEvents = input(body)?;
            let events: Vec<InputEvent> = q
                .log_events
                .into_iter()
                .map(|e| InputEvent { timestamp_ms: e.timestamp, message: e.message })
                .collect();
            let out = logs.put_log_events(&q.log_group_name, &q.log_stream_name, &events).await?;
            let mut body = json!({ "nextSequenceToken": out.next_sequence_token });
            let r = out.rejected;
            let mut rejected = Map::new();
            for (key, value) in [
                ("tooNewLogEventStartIndex", r.too_new_start),
                ("tooOldLogEventEndIndex", r.too_old_end),
                ("expiredLogEventEndIndex", r.expired_end),
            ] {
                if let Some(v) = value {
                    rejected.insert(key.into(), v.into());
                }
            }
            if !rejected.is_empty() {
                body["rejectedLogEventsInfo"] = Value::Object(rejected);
            }
            body
        }
        "GetLogEvents" => {
            let q: GetEvents = input(body)?;
            let group = logs.group_of(q.log_group_name, q.log_group_identifier)?;
            let page = logs
                .get_log_events(GetQuery {
                    group: &group,
                    stream: &q.log_stream_name,
                    start_ms: q.start_time,
                    end_ms: q.end_time,
                    next_token: q.next_token.as_deref(),
                    limit: q.limit,
                    start_from_head: q.start_from_head,
                })
                .await?;
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|e| json!({ "timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.ingestion_ms }))
                .collect();
            json!({
                "events": events,
                "nextForwardToken": page.next_forward_token,
                "nextBackwardToken": page.next_backward_token,
            })
        }
        "FilterLogEvents" => {
            let q: FilterEvents = input(body)?;
            let group = logs.group_of(q.log_group_name, q.log_group_identifier)?;
            let page = logs
                .filter_log_events(FilterQuery {
                    group: &group,
                    streams: q.log_stream_names.as_deref(),
                    stream_prefix: q.log_stream_name_prefix.as_deref(),
                    start_ms: q.start_time,
                    end_ms: q.end_time,
                    pattern: q.filter_pattern.as_deref(),
                    next_token: q.next_token.as_deref(),
                    limit: q.limit,
                })
                .await?;
            let events: Vec<Value> = page.events.iter().map(filtered_json).collect();
            with_token(json!({ "events": events, "searchedLogStreams": [] }), page.next_token)
        }
        other => return Err(unknown(other)),
    })
}

fn with_token(mut body: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        body["nextToken"] = t.into();
    }
    body
}

fn group_json(logs: &Logs, g: &LogGroupRow) -> Value {
    let arn = logs.group_arn(&g.name);
    let mut v = json!({
        "logGroupName": g.name,
        "creationTime": g.created_ms,
        "metricFilterCount": 0,
        "arn": format!("{arn}:*"),
        "logGroupArn": arn,
        "logGroupClass": "STANDARD",
    });
    if let Some(days) = g.retention_days {
        v["retentionInDays"] = days.into();
    }
    v
}

fn stream_json(logs: &Logs, s: &LogStreamRow) -> Value {
    let mut v = json!({
        "logStreamName": s.name,
        "creationTime": s.created_ms,
        "arn": logs.stream_arn(&s.group, &s.name),
        "storedBytes": 0,
    });
    for (key, value) in [
        ("firstEventTimestamp", s.first_event_ms),
        ("lastEventTimestamp", s.last_event_ms),
        ("lastIngestionTime", s.last_ingestion_ms),
    ] {
        if let Some(t) = value {
            v[key] = t.into();
        }
    }
    v
}

fn filtered_json(e: &LogEvent) -> Value {
    json!({
        "logStreamName": e.log_stream,
        "timestamp": e.timestamp_ms,
        "message": e.message,
        "ingestionTime": e.ingestion_ms,
        "eventId": e.id.to_string(),
    })
}
