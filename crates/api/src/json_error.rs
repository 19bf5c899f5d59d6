//! How the awsJson 1.1 fronts other than Lambda's (ECR, ECS, CloudWatch
//! Logs) answer a refusal: `{"__type": …, "message": …}` with the type in
//! `x-amzn-ErrorType` too. Each front keeps its own table from its engine's
//! errors to AWS's types (its `From<…> for Failure`); this owns only the
//! shape on the wire, and what an internal failure shows (nothing of it).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

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
