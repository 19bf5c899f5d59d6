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

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_logs::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::json_front::{Failure, JsonCall, JsonService};
use crate::{Api, ApiError};

const TARGET_PREFIX: &str = "Logs_20140328.";
const SERVICE: JsonService = JsonService {
    name: "logs",
    target_prefix: TARGET_PREFIX,
    // A full PutLogEvents batch (1 MiB of messages), JSON-escaped.
    body_max: 4 << 20,
    invalid: "InvalidParameterException",
    precheck: crate::json_front::no_precheck,
};

/// Whether an unsigned request is for CloudWatch Logs (so that it is refused
/// as CloudWatch refuses it).
pub fn is_unsigned_logs(headers: &HeaderMap) -> bool {
    SERVICE.is_target_of(headers)
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::AlreadyExists(_) => "ResourceAlreadyExistsException",
            Error::NotFound(_) => "ResourceNotFoundException",
            Error::InvalidParameter(_) => "InvalidParameterException",
            Error::LimitExceeded(_) => "LimitExceededException",
            Error::TooManyTags(_) => "TooManyTagsException",
            Error::Store(detail) => return Self::internal("ServiceUnavailableException", detail),
        };
        Self::new(kind, e.to_string())
    }
}

pub async fn serve(api: &Api, req: Request<Body>, request_id: &str) -> Response {
    serve_inner(api, req, request_id).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(api: &Api, req: Request<Body>, request_id: &str) -> Result<Response, Failure> {
    let JsonCall { op, input: json, caller, .. } = SERVICE.accept(api, req).await?;
    // What a session writes into, and the streams it describes, once the body names the group.
    if matches!(op.as_str(), "CreateLogGroup" | "CreateLogStream" | "PutLogEvents" | "DescribeLogStreams") {
        // An identifier may be the group's ARN.
        let group = ["logGroupName", "logGroupIdentifier"].iter().find_map(|k| json[*k].as_str()).unwrap_or_default();
        let group = nimbus_logs::group_name(group);
        crate::access::check_log_group(api.control.account(), &caller, &op, group)
            .map_err(|e| Failure::from(ApiError::from(e)))?;
        // Tags on a new group need logs:TagResource too, as on AWS.
        if json["tags"].as_object().is_some_and(|t| !t.is_empty()) {
            let tagging = crate::access::Action { service: "logs", operation: "TagResource", function: None };
            crate::access::check(api.control.account(), &caller, &tagging)
                .map_err(|e| Failure::from(ApiError::from(e)))?;
        }
    }
    let logs = api
        .logs
        .as_deref()
        .ok_or_else(|| Failure::from(ApiError::Unavailable("CloudWatch Logs is not served by this node".into())))?;
    if op == "StartLiveTail" {
        return live::start(logs, json, request_id, api.closing.clone()).await;
    }
    let body = wire::execute(logs, &op, json).await?;
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    Ok(resp)
}

/// An operation of the model that Nimbus does not serve.
fn unknown(op: &str) -> Failure {
    Failure::new("UnknownOperationException", format!("Nimbus does not serve the CloudWatch Logs operation '{op}'"))
}

/// Parses a request's members (already checked against the model).
fn input<T: DeserializeOwned>(json: Value) -> Result<T, Failure> {
    serde_json::from_value(json).map_err(|e| Failure {
        status: StatusCode::BAD_REQUEST,
        kind: "SerializationException",
        message: e.to_string(),
    })
}
