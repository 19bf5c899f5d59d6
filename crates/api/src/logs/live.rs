//! StartLiveTail: an event stream response (`application/vnd.amazon.eventstream`)
//! of `initial-response` and one `sessionStart`, then a `sessionUpdate` per batch of matching
//! events as they are stored (an empty one after a second without any), until the client leaves or the session
//! reaches AWS's three hours (`SessionTimeoutException`).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nimbus_logs::{LiveTail, Logs, TailQuery};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{input, Failure};
use crate::streaming::{event, exception};

/// AWS ends a live tail session after three hours.
const SESSION_MAX: Duration = Duration::from_secs(3 * 60 * 60);
/// A session with nothing to show still gets an update this often.
const QUIET_UPDATE: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartLiveTail {
    log_group_identifiers: Vec<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefixes: Option<Vec<String>>,
    log_event_filter_pattern: Option<String>,
}

enum State {
    Starting(Bytes, LiveTail),
    Tailing(LiveTail),
    Over,
}

pub(super) async fn start(
    logs: &Logs,
    body: Value,
    request_id: &str,
    closing: tokio_util::sync::CancellationToken,
) -> Result<Response, Failure> {
    let q: StartLiveTail = input(body)?;
    if q.log_group_identifiers.len() > 1 && (q.log_stream_names.is_some() || q.log_stream_name_prefixes.is_some()) {
        return Err(Failure::new(
            "InvalidParameterException",
            "logStreamNames and logStreamNamePrefixes can be specified only with a single log group identifier",
        ));
    }
    let groups = q
        .log_group_identifiers
        .iter()
        .map(|id| logs.group_of(None, Some(id.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    // (group name, the identifier the client named it by), for the updates.
    let ids: Vec<(String, String)> = groups.iter().cloned().zip(q.log_group_identifiers.iter().cloned()).collect();
    let tail = logs
        .start_live_tail(TailQuery {
            groups,
            streams: q.log_stream_names.as_deref(),
            stream_prefixes: q.log_stream_name_prefixes.as_deref(),
            pattern: q.log_event_filter_pattern.as_deref(),
        })
        .await?;
    let mut session = json!({
        "requestId": request_id,
        "sessionId": uuid::Uuid::new_v4().to_string(),
        "logGroupIdentifiers": q.log_group_identifiers,
    });
    for (key, value) in [("logStreamNames", q.log_stream_names), ("logStreamNamePrefixes", q.log_stream_name_prefixes)]
    {
        if let Some(v) = value {
            session[key] = v.into();
        }
    }
    if let Some(p) = q.log_event_filter_pattern {
        session["logEventFilterPattern"] = p.into();
    }
    // JSON protocols open an event stream with the output's other members
    // (none here) as `initial-response`.
    let mut first = event("initial-response", "application/json", Bytes::from_static(b"{}")).to_vec();
    first.extend_from_slice(&event("sessionStart", "application/json", Bytes::from(session.to_string())));
    let first = Bytes::from(first);
    let deadline = tokio::time::Instant::now() + SESSION_MAX;
    let frames = futures_util::stream::unfold(State::Starting(first, tail), move |state| {
        let (ids, closing) = (ids.clone(), closing.clone());
        async move {
            let (frame, next) = match state {
                State::Starting(first, tail) => (first, State::Tailing(tail)),
                State::Tailing(mut tail) => tokio::select! {
                    events = tail.next() => match events {
                        Ok(events) => (update(&events, &ids), State::Tailing(tail)),
                        Err(e) => {
                            tracing::error!(error = %e, "live tail failed");
                            let body = json!({ "message": "The live tail session could not read the log store." });
                            (exception("SessionStreamingException", Bytes::from(body.to_string())), State::Over)
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let body = json!({ "message": "The session has timed out after 3 hours." });
                        (exception("SessionTimeoutException", Bytes::from(body.to_string())), State::Over)
                    }
                    // The node is stopping: the session ends, as the client leaving ends it.
                    () = closing.cancelled() => return None,
                    // As AWS: an update every second, empty when nothing came,
                    // so that a quiet session is not taken for a dead one.
                    _ = tokio::time::sleep(QUIET_UPDATE) => (update(&[], &ids), State::Tailing(tail)),
                },
                State::Over => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(frame), next))
        }
    });
    let mut resp = (StatusCode::OK, axum::body::Body::from_stream(frames)).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/vnd.amazon.eventstream"));
    Ok(resp)
}

/// A `sessionUpdate` with the events, each under the identifier the client
/// named its group by.
fn update(events: &[nimbus_logs::LogEvent], ids: &[(String, String)]) -> Bytes {
    let results: Vec<Value> = events
        .iter()
        .map(|e| {
            let id = ids.iter().find(|(g, _)| *g == e.log_group).map_or(e.log_group.as_str(), |(_, id)| id.as_str());
            json!({
                "logStreamName": e.log_stream,
                "logGroupIdentifier": id,
                "message": e.message,
                "timestamp": e.timestamp_ms,
                "ingestionTime": e.ingestion_ms,
            })
        })
        .collect();
    let body = json!({ "sessionMetadata": { "sampled": false }, "sessionResults": results });
    event("sessionUpdate", "application/json", Bytes::from(body.to_string()))
}
