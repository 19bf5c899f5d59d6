//! What the awsJson 1.1 fronts other than Lambda's (ECR, ECS, CloudWatch
//! Logs) share: taking a request in (its body within a limit, its
//! signature, its `X-Amz-Target` operation, the check against the service's
//! model) and the shape of a refusal, `{"__type": …, "message": …}` with the
//! type in `x-amzn-ErrorType` too. Each front keeps its own operations and
//! its own table from its engine's errors to AWS's types (its `From<…> for
//! Failure`).

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::access::Action;
use crate::sigv4::{Caller, SignedParts};
use crate::{read_signed_body, Api, ApiError, Unread};

/// One awsJson 1.1 service as its front takes requests in.
pub(crate) struct JsonService {
    /// The signing name and the model's name (`ecs`, `ecr`, `logs`).
    pub(crate) name: &'static str,
    /// `X-Amz-Target`'s prefix before the operation's name.
    pub(crate) target_prefix: &'static str,
    pub(crate) body_max: usize,
    /// The error type the service answers a malformed or oversized request with.
    pub(crate) invalid: &'static str,
    /// The service's own checks, after the model's types and before its
    /// rules (ECR's repository names, which it words its own way).
    pub(crate) precheck: fn(&Value) -> Result<(), Failure>,
}

/// A service with no checks of its own before the model's rules.
pub(crate) fn no_precheck(_: &Value) -> Result<(), Failure> {
    Ok(())
}

/// A request taken in: its operation, checked input and headers.
pub(crate) struct JsonCall {
    pub(crate) op: String,
    pub(crate) input: Value,
    pub(crate) headers: HeaderMap,
    /// Whose key signed it.
    pub(crate) caller: Caller,
}

impl JsonService {
    /// Whether a request names one of this service's operations (how an
    /// unsigned one is told apart, to be refused in this service's shape).
    pub(crate) fn is_target_of(&self, headers: &HeaderMap) -> bool {
        headers.get("x-amz-target").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with(self.target_prefix))
    }

    /// Reads, verifies and checks a request against the service's model.
    pub(crate) async fn accept(&self, api: &Api, req: Request<Body>) -> Result<JsonCall, Failure> {
        let (parts, body) = req.into_parts();
        let limit = self.body_max;
        let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let operation = target.strip_prefix(self.target_prefix).unwrap_or(target).to_string();
        let action = Action { service: self.name, operation: &operation, function: None };
        let body = read_signed_body(api, &parts, body, limit, &action)
            .await
            .map_err(|e| Failure::from(ApiError::from(e)))?
            .map_err(|u| match u {
                Unread::TooLarge => Failure::new(self.invalid, format!("Request must be smaller than {limit} bytes")),
                Unread::Busy => Failure::from(ApiError::Busy),
                Unread::Abandoned => Failure::from(ApiError::Abandoned),
            })?;
        let signed = SignedParts::of(&parts, &body);
        let caller = api
            .verifier
            .verify(&signed, self.name, SystemTime::now())
            .map_err(|e| Failure::from(ApiError::from(e)))?
            .caller;
        let model = nimbus_model::Model::of(self.name)
            .ok_or_else(|| Failure::from(ApiError::Unavailable(format!("{} is not served by this node", self.name))))?;
        let op = target
            .strip_prefix(self.target_prefix)
            .filter(|op| model.operation(op).is_some())
            .ok_or_else(|| Failure::new("UnknownOperationException", format!("Unknown operation {target}")))?
            .to_string();
        let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                Failure::new("SerializationException", format!("Could not parse the request body as JSON: {e}"))
            })?
        };
        let request = nimbus_model::Request {
            labels: vec![],
            query: vec![],
            headers: parts.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect(),
            body: Some(&input),
        };
        match nimbus_model::validate(model, &op, &request) {
            // As AWS's deserialiser refuses it, before any rule is checked.
            Err(e @ nimbus_model::Invalid::Mistyped(_)) => {
                return Err(Failure::new("SerializationException", e.to_string()))
            }
            Err(e) => {
                (self.precheck)(&input)?;
                return Err(Failure::new(self.invalid, e.to_string()));
            }
            Ok(()) => (self.precheck)(&input)?,
        }
        tracing::debug!(operation = %op, "authenticated");
        Ok(JsonCall { op, input, headers: parts.headers, caller })
    }
}

pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl Failure {
    /// A refusal of the request (400).
    pub(crate) fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind, message: message.into() }
    }

    /// A failure of the node itself: logged with its detail, answered
    /// without it.
    pub(crate) fn internal(kind: &'static str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        let message = "An internal error occurred; see the Nimbus server log.".into();
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, kind, message }
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
        let body = serde_json::json!({ "__type": self.kind, "message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        resp
    }
}
