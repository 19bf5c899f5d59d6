//! The Runtime API (2018-06-01) of one environment, served on that
//! environment's own listener, so `AWS_LAMBDA_RUNTIME_API` needs no routing.
//! A response posted in streaming mode (chunked, errors in trailers) is
//! passed on chunk by chunk to the invocation's stream sink, within AWS's
//! size and bandwidth limits.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use base64::Engine;
use http_body_util::BodyExt;

use crate::env::{platform_error, Reply, Shared};
use crate::{StreamSink, Streamed};

/// Largest response a function may return (6 MiB + 100 bytes, as on AWS).
pub const RESPONSE_MAX: usize = 6_291_556;
/// Largest streamed response (AWS raised it from 20 MB to 200 MB in 2025).
pub const STREAM_MAX: u64 = 200 << 20;
/// A stream's first 6 MB go at full speed; the rest at 2 MiB/s, as on AWS.
const STREAM_BURST: u64 = 6 << 20;
const STREAM_RATE: f64 = (2 << 20) as f64;
const MODE_HEADER: &str = "lambda-runtime-function-response-mode";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(shared)
}

fn json_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [("content-type", "application/json")], r#"{"status":"OK"}"#).into_response()
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.mark_ready();
    let job = {
        let mut rx = shared.jobs_rx.lock().await;
        rx.recv().await
    };
    let Some(job) = job else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "Runtime.Shutdown", "environment is shutting down");
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("content-type", "application/json");
    put("lambda-runtime-aws-request-id", &job.request_id);
    put("lambda-runtime-deadline-ms", &job.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &job.invoked_arn);
    put("lambda-runtime-trace-id", &job.trace_id);
    if let Some(cc) = &job.client_context {
        put("lambda-runtime-client-context", cc);
    }
    (StatusCode::OK, headers, job.payload).into_response()
}

/// The function's error when its response is over [`RESPONSE_MAX`], as AWS words it.
pub fn response_too_large() -> Bytes {
    let message = format!("Response payload size exceeded maximum allowed payload size ({RESPONSE_MAX} bytes).");
    Bytes::from(
        serde_json::json!({ "errorType": "Function.ResponseSizeTooLarge", "errorMessage": message }).to_string(),
    )
}

/// Why a posted body was not read.
enum Unread {
    /// Past the response limit: the invocation fails with it.
    TooLarge,
    /// Another post of the runtime is being read.
    Busy,
}

impl IntoResponse for Unread {
    fn into_response(self) -> Response {
        match self {
            Self::TooLarge => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({RESPONSE_MAX} bytes)."),
            ),
            Self::Busy => json_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "One post at a time."),
        }
    }
}

/// Reads a body the runtime posts, within the response limit, one at a
/// time: a runtime posting on many connections at once is refused, rather
/// than holding their bodies in the node.
async fn read(shared: &Shared, body: Body) -> Result<Bytes, Unread> {
    let Ok(_reading) = shared.posting.try_acquire() else { return Err(Unread::Busy) };
    to_bytes(body, RESPONSE_MAX).await.map_err(|_| Unread::TooLarge)
}

async fn complete(shared: &Shared, id: &str, reply: Reply) -> Response {
    if shared.complete(id, reply) {
        accepted()
    } else {
        invalid_id()
    }
}

fn invalid_id() -> Response {
    json_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match headers.get(MODE_HEADER).map(|v| v.as_bytes()) {
        None => {}
        Some(b"streaming") => return streaming(&shared, &id, &headers, body).await,
        Some(_) => {
            let message = "Invalid Lambda-Runtime-Function-Response-Mode header; expected 'streaming'.";
            shared.complete(&id, Reply::Error(platform_error("Runtime.InvalidResponseModeHeader", message.into())));
            return json_error(StatusCode::BAD_REQUEST, "InvalidFunctionResponseMode", message);
        }
    }
    // Nothing of a post for another invocation is read.
    if !shared.is_current(&id) {
        return invalid_id();
    }
    match read(&shared, body).await {
        Ok(bytes) => complete(&shared, &id, Reply::Response(bytes)).await,
        Err(Unread::TooLarge) => {
            shared.complete(&id, Reply::Error(response_too_large()));
            Unread::TooLarge.into_response()
        }
        Err(busy) => busy.into_response(),
    }
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Body) -> Response {
    if !shared.is_current(&id) {
        return invalid_id();
    }
    match read(&shared, body).await {
        Ok(bytes) => complete(&shared, &id, Reply::Error(bytes)).await,
        Err(unread) => unread.into_response(),
    }
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    match read(&shared, body).await {
        Ok(bytes) => {
            shared.init_failed(bytes);
            accepted()
        }
        Err(unread) => unread.into_response(),
    }
}

/// A response posted in streaming mode: forwarded to the caller's sink as
/// it arrives (collected within [`RESPONSE_MAX`] when the caller takes no
/// stream), with an error the runtime reports in the trailers.
async fn streaming(shared: &Shared, id: &str, headers: &HeaderMap, mut body: Body) -> Response {
    let Some(sink) = shared.stream_of(id) else {
        return json_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID");
    };
    let content_type =
        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream").to_string();
    let mut out = Output::new(sink, content_type).await;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The runtime went away mid-stream; its exit fails the invocation.
            return json_error(StatusCode::BAD_REQUEST, "InvalidStream", "The response stream was cut off.");
        };
        match frame.into_data() {
            Ok(data) => {
                if let Err(too_big) = out.write(data).await {
                    shared.complete(id, Reply::Error(too_big));
                    return json_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", "Response too large.");
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let error = trailers.as_ref().and_then(trailer_error);
    let reply = match out.collected {
        Some(bytes) => error.map_or(Reply::Response(bytes.into()), Reply::Error),
        None => Reply::Streamed(error),
    };
    complete(shared, id, reply).await
}

/// The error a runtime reports in a stream's trailers:
/// `Lambda-Runtime-Function-Error-Type` and a base64 JSON error body.
fn trailer_error(trailers: &HeaderMap) -> Option<Bytes> {
    let error_type = trailers.get("lambda-runtime-function-error-type")?.to_str().ok()?.to_string();
    let body = trailers
        .get("lambda-runtime-function-error-body")
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.as_bytes()).ok())
        .filter(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok());
    Some(body.map(Bytes::from).unwrap_or_else(|| platform_error(&error_type, String::new())))
}

/// Where a streamed response's bytes go.
struct Output {
    sink: Option<StreamSink>,
    /// The whole response, when the caller takes no stream.
    collected: Option<Vec<u8>>,
    sent: u64,
    /// When the stream passed its full-speed burst.
    burst_end: Option<tokio::time::Instant>,
}

impl Output {
    async fn new(sink: Option<StreamSink>, content_type: String) -> Self {
        let collected = sink.is_none().then(Vec::new);
        if let Some(s) = &sink {
            // A caller that went away leaves the function running, as on AWS.
            let _ = s.send(Streamed::Start { content_type }).await;
        }
        Self { sink, collected, sent: 0, burst_end: None }
    }

    /// Passes a chunk on; `Err` is the function's error once a limit is passed.
    async fn write(&mut self, data: Bytes) -> Result<(), Bytes> {
        self.sent += data.len() as u64;
        if let Some(all) = &mut self.collected {
            if all.len() + data.len() > RESPONSE_MAX {
                return Err(response_too_large());
            }
            all.extend_from_slice(&data);
            return Ok(());
        }
        if self.sent > STREAM_MAX {
            let message = format!("Response payload size exceeded maximum allowed payload size ({STREAM_MAX} bytes).");
            return Err(platform_error("Function.ResponseSizeTooLarge", message));
        }
        if self.sent > STREAM_BURST {
            let since = *self.burst_end.get_or_insert_with(tokio::time::Instant::now);
            let due = std::time::Duration::from_secs_f64((self.sent - STREAM_BURST) as f64 / STREAM_RATE);
            tokio::time::sleep_until(since + due).await;
        }
        if let Some(s) = &self.sink {
            if s.send(Streamed::Chunk(data)).await.is_err() {
                self.sink = None;
            }
        }
        Ok(())
    }
}
