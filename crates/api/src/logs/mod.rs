//! The CloudWatch Logs front end: requests signed for service `logs` (JSON
//! 1.1, `X-Amz-Target: Logs_20140328.<Op>`). Each request is checked against
//! botocore's logs model (`nimbus-model`), parsed into its wire type, run by
//! `nimbus-logs`, and answered in CloudWatch's shape: camelCase members,
//! and errors as `{"__type", "message"}` with status 400 (AWS answers the
//! model's violations as `InvalidParameterException`).
//!
//! This module owns the wire format and error names; the rules are
//! `nimbus-logs`'.

mod live;
mod wire;

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_logs::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::json_error::Failure;
use crate::sigv4::SignedParts;
use crate::{read_body, Api, ApiError};

const TARGET_PREFIX: &str = "Logs_20140328.";
/// A full PutLogEvents batch (1 MiB of messages), JSON-escaped.
const BODY_LIMIT: usize = 4 << 20;

/// Whether an unsigned request is for CloudWatch Logs (so that it is refused
/// as CloudWatch refuses it).
pub fn is_unsigned_logs(headers: &HeaderMap) -> bool {
    target(headers).is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

fn target(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-amz-target").and_then(|v| v.to_str().ok())
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::AlreadyExists(_) => "ResourceAlreadyExistsException",
            Error::NotFound(_) => "ResourceNotFoundException",
            Error::InvalidParameter(_) => "InvalidParameterException",
            Error::Store(detail) => return Self::internal("ServiceUnavailableException", detail),
        };
        Self::new(kind, e.to_string())
    }
}

pub async fn serve(api: &Api, req: Request<Body>, request_id: &str) -> Response {
    serve_inner(api, req, request_id).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(api: &Api, req: Request<Body>, request_id: &str) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, BODY_LIMIT).await.map_err(|_| {
        Failure::new("InvalidParameterException", format!("Request must be smaller than {BODY_LIMIT} bytes"))
    })?;
    let signed = SignedParts::of(&parts, &body);
    api.verifier.verify(&signed, "logs", SystemTime::now()).map_err(|e| Failure::from(ApiError::from(e)))?;
    let op = target(&parts.headers).and_then(|t| t.strip_prefix(TARGET_PREFIX)).unwrap_or_default().to_string();
    let model = nimbus_model::Model::of("logs").filter(|m| m.operation(&op).is_some()).ok_or_else(|| unknown(&op))?;
    let json: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| Failure {
            status: StatusCode::BAD_REQUEST,
            kind: "SerializationException",
            message: format!("Could not parse the request body as JSON: {e}"),
        })?
    };
    let request = nimbus_model::Request {
        labels: Vec::new(),
        query: Vec::new(),
        headers: parts.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect(),
        body: Some(&json),
    };
    nimbus_model::validate(model, &op, &request)
        .map_err(|v| Failure::new("InvalidParameterException", v.to_string()))?;
    let logs = api
        .logs
        .as_deref()
        .ok_or_else(|| Failure::from(ApiError::Unavailable("CloudWatch Logs is not served by this node".into())))?;
    tracing::debug!(operation = %op, "authenticated");
    if op == "StartLiveTail" {
        return live::start(logs, json, request_id).await;
    }
    let body = wire::execute(logs, &op, json).await?;
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    Ok(resp)
}

fn unknown(op: &str) -> Failure {
    Failure {
        status: StatusCode::BAD_REQUEST,
        kind: "UnknownOperationException",
        message: format!("Nimbus does not serve the CloudWatch Logs operation '{op}'"),
    }
}

/// Parses a request's members (already checked against the model).
fn input<T: DeserializeOwned>(json: Value) -> Result<T, Failure> {
    serde_json::from_value(json).map_err(|e| Failure {
        status: StatusCode::BAD_REQUEST,
        kind: "SerializationException",
        message: e.to_string(),
    })
}
