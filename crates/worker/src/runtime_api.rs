//! The Runtime API (2018-06-01) of one environment, served on that
//! environment's own listener, so `AWS_LAMBDA_RUNTIME_API` needs no routing.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::env::{Reply, Shared};

/// Largest response a function may return (6 MiB + 100 bytes, as on AWS).
pub const RESPONSE_MAX: usize = 6_291_556;

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

/// Reads a body the runtime posts, within the response limit.
async fn read(body: Body) -> Result<Bytes, Response> {
    to_bytes(body, RESPONSE_MAX).await.map_err(|_| {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({RESPONSE_MAX} bytes)."),
        )
    })
}

async fn complete(shared: &Shared, id: &str, reply: Reply) -> Response {
    if shared.complete(id, reply) {
        accepted()
    } else {
        json_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Body) -> Response {
    match read(body).await {
        Ok(bytes) => complete(&shared, &id, Reply::Response(bytes)).await,
        Err(too_big) => {
            shared.complete(&id, Reply::Error(response_too_large()));
            too_big
        }
    }
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Body) -> Response {
    match read(body).await {
        Ok(bytes) => complete(&shared, &id, Reply::Error(bytes)).await,
        Err(too_big) => too_big,
    }
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    match read(body).await {
        Ok(bytes) => {
            shared.init_failed(bytes);
            accepted()
        }
        Err(too_big) => too_big,
    }
}
