//! The console's JSON API (`/console/api/…`). Every call but two needs a
//! live session and passes the same-origin check (`auth::same_origin`):
//! `login` (the check, then the node's key pair or a one-time link) and
//! `links` (a SigV4 request signed for service `console` with the node's
//! own key pair, which `nimbus console` sends).
//!
//! The answers reuse the Lambda API's wire shapes where one exists
//! (configurations, aliases, URLs, mappings), so the console shows what
//! `aws lambda` shows. Nothing here renders HTML.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_control::InvokeRequest;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth;
use crate::sigv4::{Caller, SignedParts};
use crate::{convert, Api, ApiError};

/// Functions per page of the list: ListFunctions' largest page.
const PAGE: i64 = nimbus_core::limits::LIST_MAX_ITEMS as i64;
/// The window of the list's invocation and error counts.
const RECENT_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Records shown on a function's page.
const RECENT_RECORDS: usize = 20;
/// The test panel's request: an event of up to 6 MB, as Invoke takes
/// ([`nimbus_core::limits::REQUEST_MAX`]), which JSON string escaping may grow.
const INVOKE_BODY_MAX: usize = 14 << 20;
/// A sign-in's request: a key pair or a link, a few hundred bytes.
const LOGIN_BODY_MAX: usize = 4 << 10;
/// The test panel's log: its last 4 KB, as Lambda's `LogType=Tail` (and
/// AWS's console) gives. The whole of a chatty invocation's (100,000
/// lines) took the page 40 s to show; the log group has every line.
const LOG_TAIL_MAX: usize = 4 << 10;

type R = Result<Response, Failure>;

/// Why a console call failed: the console's own refusal, or an engine's
/// error in the Lambda API's shape.
enum Failure {
    Refused(StatusCode, String),
    Api(ApiError),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(status, message) => (status, axum::Json(json!({ "message": message }))).into_response(),
            Self::Api(e) => e.into_response(),
        }
    }
}

fn now_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn ok<T: Serialize>(v: &T) -> R {
    Ok(axum::Json(v).into_response())
}

fn refuse(status: StatusCode, message: &str) -> Failure {
    Failure::Refused(status, message.to_string())
}

fn failed(e: impl Into<ApiError>) -> Failure {
    Failure::Api(e.into())
}

/// The body, read within the node's budget for request bodies (as every
/// API's is: sign-in needs no key, and must not let anyone make the node
/// hold megabytes per connection).
async fn read(api: &Api, body: Body, limit: usize) -> Result<Bytes, Failure> {
    crate::read_body(api, body, limit).await.map_err(unread)
}

fn unread(u: crate::Unread) -> Failure {
    match u {
        crate::Unread::TooLarge => refuse(StatusCode::PAYLOAD_TOO_LARGE, "The request is too large."),
        crate::Unread::Busy => failed(ApiError::Busy),
        crate::Unread::Abandoned => failed(ApiError::Abandoned),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("Malformed request: {e}")))
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// The query string's non-empty parameters, decoded.
fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(&v.replace('+', " "))))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Every answer of the API is the session's: no cache may keep one (a
/// function's code, its environment).
pub(super) async fn serve(api: &Api, req: Request<Body>, rest: String) -> Response {
    let mut resp = answer(api, req, rest).await;
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn answer(api: &Api, req: Request<Body>, rest: String) -> Response {
    let method = req.method().clone();
    if rest == "links" && method == Method::POST {
        return links(api, req).await.unwrap_or_else(IntoResponse::into_response);
    }
    let state_changing = method != Method::GET && method != Method::HEAD;
    if !auth::same_origin(req.headers(), state_changing) {
        return refuse(StatusCode::FORBIDDEN, "Cross-site requests to the console are refused.").into_response();
    }
    let now = SystemTime::now();
    if rest == "login" && method == Method::POST {
        return login(api, req, now).await.unwrap_or_else(IntoResponse::into_response);
    }
    // Any live one: a cookie of the same name that a page of the origin
    // set for a longer path comes first, and must not sign the operator out.
    let live = auth::cookie_tokens(req.headers()).find_map(|t| Some((t.to_string(), api.console.expires(t, now)?)));
    let Some((token, session_end)) = live else {
        return refuse(StatusCode::UNAUTHORIZED, "Sign in to use the console.").into_response();
    };
    let segments: Vec<String> = rest.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["session"]) => session(api),
        (&Method::POST, ["logout"]) => {
            api.console.close(&token);
            Ok(([(header::SET_COOKIE, auth::cleared_cookie())], axum::Json(json!({}))).into_response())
        }
        (&Method::GET, ["functions"]) => {
            functions(api, query_pairs(req.uri().query()).get("marker").map(String::as_str), now).await
        }
        (&Method::GET, ["functions", name]) => function(api, name).await,
        (&Method::GET, ["functions", name, "code"]) => code(api, name).await,
        (&Method::GET, ["functions", name, "logs"]) => live_logs(api, name, token.clone(), session_end).await,
        (&Method::GET, ["metrics"]) => charts(api, &query_pairs(req.uri().query()), now).await,
        (&Method::GET, ["usage"]) => usage(api, &query_pairs(req.uri().query()), now).await,
        (&Method::POST, ["functions", name, "invoke"]) => {
            let name = name.to_string();
            invoke(api, &name, req).await
        }
        _ => Err(refuse(StatusCode::NOT_FOUND, "No such console call.")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `nimbus console`: a one-time login link, for the node's own key pair
/// only (an environment's session keys are refused: a function must not
/// open the console).
async fn links(api: &Api, req: Request<Body>) -> R {
    let (parts, body) = req.into_parts();
    let action = crate::access::Action { service: "console", operation: "CreateLoginLink", function: None };
    let body =
        crate::read_signed_body(api, &parts, body, LOGIN_BODY_MAX, &action).await.map_err(failed)?.map_err(unread)?;
    let signed = api.verifier.verify(&SignedParts::of(&parts, &body), "console", SystemTime::now()).map_err(failed)?;
    if signed.caller != Caller::Node {
        return Err(refuse(StatusCode::FORBIDDEN, "Only the node's own key pair may make console login links."));
    }
    let token = api.console.mint_link(SystemTime::now());
    ok(&json!({ "path": format!("/console/#link={token}"), "expiresInSeconds": auth::LINK_TTL.as_secs() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    link: Option<String>,
}

async fn login(api: &Api, req: Request<Body>, now: SystemTime) -> R {
    let body = read(api, req.into_body(), LOGIN_BODY_MAX).await?;
    let login: Login = parse(&body)?;
    let allowed = match (&login.link, &login.access_key_id, &login.secret_access_key) {
        (Some(link), None, None) => api.console.redeem_link(link, now),
        (None, Some(id), Some(secret)) => auth::is_node_key(&api.credentials, id, secret),
        _ => false,
    };
    if !allowed {
        let why = match login.link {
            Some(_) => "This login link is not valid: it was used already, has expired, or the server restarted. Run `nimbus console` for a new one.",
            None => "The access key pair is not this node's.",
        };
        return Err(refuse(StatusCode::UNAUTHORIZED, why));
    }
    let token = api.console.open(now);
    Ok(([(header::SET_COOKIE, auth::session_cookie(&token))], axum::Json(json!({}))).into_response())
}

fn session(api: &Api) -> R {
    let account = api.control.account();
    ok(&json!({
        "account": account.id,
        "region": account.region,
        "charts": api.metrics.is_some(),
        "usage": api.metrics.is_some(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    runtime: Option<String>,
    package_type: String,
    memory_size: u32,
    state: Option<String>,
    last_update_status: Option<String>,
    last_modified: String,
    last_invoke_ms: Option<i64>,
    invocations_24h: u64,
    errors_24h: u64,
}

/// The functions list, a page at a time, with each one's recent activity.
async fn functions(api: &Api, marker: Option<&str>, now: SystemTime) -> R {
    let ctl = &api.control;
    let page = ctl.list_functions(marker, Some(PAGE), false).await.map_err(failed)?;
    let names: Vec<String> = page.items.iter().map(|c| c.name.clone()).collect();
    let stats = ctl.invocation_summaries(&names, now_ms(now) - RECENT_WINDOW_MS).await.map_err(failed)?;
    let rows: Vec<Row> = page
        .items
        .iter()
        .map(|c| {
            let wire = convert::configuration(ctl.account(), c, None);
            let s = stats.iter().find(|s| s.function == c.name);
            Row {
                name: c.name.clone(),
                runtime: c.runtime.clone(),
                package_type: c.package_type.clone(),
                memory_size: c.memory_size,
                state: wire.state,
                last_update_status: wire.last_update_status,
                last_modified: wire.last_modified,
                last_invoke_ms: s.map(|s| s.last_ms),
                invocations_24h: s.map_or(0, |s| s.invocations),
                errors_24h: s.map_or(0, |s| s.errors),
            }
        })
        .collect();
    ok(&json!({ "functions": rows, "nextMarker": page.next_marker }))
}

/// One function: its configuration, versions, aliases, concurrency,
/// triggers and recent invocations.
async fn function(api: &Api, name: &str) -> R {
    let ctl = &api.control;
    let acct = ctl.account();
    let (resolved, f) = ctl.get_function(name, None).await.map_err(failed)?;
    let name = f.name().to_string();
    let all = Some(i64::from(u16::MAX));
    let versions = ctl.list_versions(&name, None, all).await.map_err(failed)?;
    let aliases = ctl.list_aliases(&name, None, None, all).await.map_err(failed)?;
    let provisioned = ctl.list_provisioned_concurrency(&name, None, all).await.map_err(failed)?;
    let urls = ctl.list_url_configs(&name, None, all).await.map_err(failed)?;
    let mappings = match &api.mappings {
        Some(m) => {
            let page =
                m.list(None, Some(&name), None, all).await.map_err(|e| failed(ApiError::Internal(e.to_string())))?;
            page.items.iter().map(|e| convert::mapping_out(e, m.mapping_arn(&e.uuid))).collect()
        }
        None => Vec::new(),
    };
    let recent = ctl.recent_invocations(&name, RECENT_RECORDS).await.map_err(failed)?;
    ok(&json!({
        "configuration": convert::configuration(acct, &resolved.config, None),
        "tags": f.tags,
        "reservedConcurrency": f.reserved_concurrency,
        "versions": versions.items.iter().map(|c| convert::configuration(acct, c, Some(&c.version))).collect::<Vec<_>>(),
        "aliases": aliases.items.iter().map(|a| convert::alias(acct, &name, a)).collect::<Vec<_>>(),
        "provisioned": provisioned.items.iter().map(|(q, p)| {
            crate::ops::provisioned(Some(acct.qualified_arn(&name, q)), p)
        }).collect::<Vec<_>>(),
        "urls": urls.items.iter().map(|(key, u)| convert::url_config(acct, &name, key, u, &api.url_base)).collect::<Vec<_>>(),
        "eventSourceMappings": mappings,
        "recentInvocations": recent.iter().map(|r| json!({
            "requestId": r.request_id,
            "version": r.version,
            "timestamp": r.timestamp_ms,
            "durationMs": r.duration_ms,
            "billedMs": r.billed_ms,
            "maxMemoryMb": r.max_memory_mb,
            "cold": r.cold,
            "initMs": r.init_ms,
            "outcome": r.outcome,
        })).collect::<Vec<_>>(),
    }))
}

/// The function's deployment package, as a download.
async fn code(api: &Api, name: &str) -> R {
    let (resolved, f) = api.control.get_function(name, None).await.map_err(failed)?;
    if resolved.config.image.is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, "An image function has no zip to download; pull its image."));
    }
    let bytes = api.control.code_blob(&resolved.config.code.sha256_hex).await.map_err(failed)?;
    // Function names are [A-Za-z0-9_-], safe inside the quoted filename.
    let disposition = format!("attachment; filename=\"{}.zip\"", f.name());
    Ok(([(header::CONTENT_TYPE, "application/zip".to_string()), (header::CONTENT_DISPOSITION, disposition)], bytes)
        .into_response())
}

/// The charts of a function's page: (series name, metric, statistic).
const CHARTS: &[(&str, &str, &str)] = &[
    ("Invocations", "Invocations", "Sum"),
    ("Errors", "Errors", "Sum"),
    ("Throttles", "Throttles", "Sum"),
    ("DurationP50", "Duration", "p50"),
    ("DurationP99", "Duration", "p99"),
    ("ConcurrentExecutions", "ConcurrentExecutions", "Maximum"),
];

/// A function's metrics over the last `hours` (1 to 72), from the same
/// engine as GetMetricData, plus its cold starts from the invocation records.
async fn charts(api: &Api, q: &HashMap<String, String>, now: SystemTime) -> R {
    let Some(metrics) = &api.metrics else {
        return Err(failed(ApiError::Unavailable("Metrics are not available on this node.".into())));
    };
    let name = q.get("function").ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "Which function?"))?;
    let (_, f) = api.control.get_function(name, None).await.map_err(failed)?;
    let hours: i64 = q.get("hours").and_then(|h| h.parse().ok()).unwrap_or(1).clamp(1, 72);
    // At most 180 points a chart.
    let period_s: u32 = match hours {
        1..=3 => 60,
        4..=12 => 300,
        13..=24 => 600,
        _ => 1800,
    };
    let period_ms = i64::from(period_s) * 1000;
    // Periods aligned to the clock, the last one the current one.
    let end_ms = (now_ms(now) / period_ms + 1) * period_ms;
    let start_ms = end_ms - hours * 3_600_000;
    let mut series = serde_json::Map::new();
    for (key, metric, stat) in CHARTS {
        let query = nimbus_metrics::SeriesQuery {
            metric: metric.to_string(),
            dimensions: nimbus_metrics::Dimensions::function(f.name()),
            stat: stat.to_string(),
            period_s,
            start_ms,
            end_ms,
        };
        let points = metrics.series(&query).await.map_err(|e| failed(ApiError::Internal(e.to_string())))?;
        series.insert(key.to_string(), json!(points));
    }
    let cold = api.control.cold_starts(f.name(), start_ms, end_ms, period_ms).await.map_err(failed)?;
    series.insert("ColdStarts".into(), json!(cold));
    ok(&json!({ "start": start_ms, "end": end_ms, "period": period_s, "series": series }))
}

/// Requests, GB-seconds and cost per function and day over the last
/// `days` (1 to 365), as `nimbus usage` reports them.
async fn usage(api: &Api, q: &HashMap<String, String>, now: SystemTime) -> R {
    let Some(metrics) = &api.metrics else {
        return Err(failed(ApiError::Unavailable("Usage reports are not available on this node.".into())));
    };
    let days: i64 = q.get("days").and_then(|d| d.parse().ok()).unwrap_or(30).clamp(1, 365);
    let end_ms = now_ms(now);
    let query = nimbus_metrics::UsageQuery {
        function: None,
        start_ms: end_ms - days * 86_400_000,
        end_ms,
        free_tier: q.get("freeTier").is_none_or(|v| v != "false"),
    };
    let report = metrics.usage(&query).await.map_err(|e| failed(ApiError::Internal(e.to_string())))?;
    ok(&report)
}

#[derive(Deserialize)]
struct Invoke {
    /// The event, as the JSON text typed in the editor.
    payload: String,
    qualifier: Option<String>,
}

/// Runs the function once, synchronously, and answers its result with
/// its log lines and REPORT line.
async fn invoke(api: &Api, name: &str, req: Request<Body>) -> R {
    let body = read(api, req.into_body(), INVOKE_BODY_MAX).await?;
    let input: Invoke = parse(&body)?;
    let payload = if input.payload.trim().is_empty() { "{}".to_string() } else { input.payload };
    let limit = nimbus_core::limits::REQUEST_MAX;
    if payload.len() > limit {
        return Err(failed(nimbus_core::Error::TooLarge(format!(
            "Request must be smaller than {limit} bytes for the InvokeFunction operation"
        ))));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
        return Err(refuse(StatusCode::BAD_REQUEST, &format!("The event is not valid JSON: {e}")));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let done = api
        .control
        .invoke(InvokeRequest {
            request_id: request_id.clone(),
            function: name.to_string(),
            qualifier: input.qualifier.filter(|q| !q.is_empty()),
            payload: Bytes::from(payload),
            client_context: None,
            stream: None,
            lineage: 0,
        })
        .await
        .map_err(failed)?;
    let lines: Vec<&str> = done.outcome.lines.iter().map(|(_, l)| l.trim_end_matches('\n')).collect();
    // Text logs end with `REPORT RequestId: …`; JSON logs with a `platform.report` record.
    let report = lines.iter().rev().find(|l| l.starts_with("REPORT ") || l.contains("\"platform.report\""));
    let joined = lines.join("\n");
    let (log, cut) = log_tail(&joined);
    ok(&json!({
        "requestId": request_id,
        "executedVersion": done.executed_version,
        "functionError": done.outcome.function_error,
        "payload": String::from_utf8_lossy(&done.outcome.payload),
        "log": log.split('\n').collect::<Vec<_>>(),
        "logTruncated": cut,
        "report": report,
    }))
}

/// The last [`LOG_TAIL_MAX`] bytes of `log`, from its first whole line
/// when it has one, and whether anything was cut.
fn log_tail(log: &str) -> (&str, bool) {
    if log.len() <= LOG_TAIL_MAX {
        return (log, false);
    }
    let mut start = log.len() - LOG_TAIL_MAX;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    if log.as_bytes()[start - 1] != b'\n' {
        if let Some(end) = log[start..].find('\n') {
            start += end + 1;
        }
    }
    (&log[start..], true)
}

/// Live logs as server-sent events: `ready` once following (so nothing
/// stored after it is missed), then one `log` event per line as the store
/// commits it. The stream ends when the session expires or signs out.
async fn live_logs(api: &Api, name: &str, token: String, session_end: SystemTime) -> R {
    let (resolved, _) = api.control.get_function(name, None).await.map_err(failed)?;
    let Some(logs) = api.logs.clone() else {
        return Err(failed(ApiError::Unavailable("Logs are not available on this node.".into())));
    };
    let tail = logs
        .follow(vec![resolved.config.logging.log_group.clone()])
        .await
        .map_err(|e| failed(ApiError::Internal(e.to_string())))?;
    let left = session_end.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + left;
    let sessions = api.console.clone();
    let closing = api.closing.clone();
    let first = Some(Bytes::from_static(b"event: ready\ndata: {}\n\n"));
    let frames = futures_util::stream::unfold((first, tail), move |(first, mut tail)| {
        let (sessions, token, closing) = (sessions.clone(), token.clone(), closing.clone());
        async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::convert::Infallible>(first), (None, tail)));
            }
            let events = tokio::select! {
                events = tail.next() => events,
                _ = tokio::time::sleep_until(deadline) => return None,
                // The node is stopping: a graceful stop does not wait for the session's end.
                () = closing.cancelled() => return None,
            };
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "console live logs failed");
                    return None;
                }
            };
            sessions.expires(&token, SystemTime::now())?;
            let mut frame = String::new();
            for e in events {
                let data = json!({ "timestamp": e.timestamp_ms, "stream": e.log_stream, "message": e.message });
                frame.push_str(&format!("event: log\ndata: {data}\n\n"));
            }
            Some((Ok(Bytes::from(frame)), (None, tail)))
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(frames)).into_response())
}

#[cfg(test)]
mod tests {
    use super::{log_tail, LOG_TAIL_MAX};

    #[test]
    fn the_test_panels_log_is_its_last_whole_lines_within_4_kb() {
        assert_eq!(log_tail("a\nb"), ("a\nb", false));
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i:04}")).collect();
        let joined = lines.join("\n");
        let (tail, cut) = log_tail(&joined);
        assert!(cut && tail.len() <= LOG_TAIL_MAX && tail.starts_with("line ") && tail.ends_with("line 0999"));
        assert_eq!(tail.split('\n').next().unwrap().len(), 9, "a whole first line");
        // One line longer than the tail: its end, cut at a character boundary.
        let long = "é".repeat(LOG_TAIL_MAX);
        let (tail, cut) = log_tail(&long);
        assert!(cut && tail.len() <= LOG_TAIL_MAX && tail.chars().all(|c| c == 'é'));
    }
}
