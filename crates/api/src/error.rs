//! The one table from Nimbus errors to AWS's error types and HTTP statuses,
//! and the JSON error body AWS sends.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::Error as Rule;
use nimbus_wire::ErrorBody;

use crate::sigv4::AuthError;

/// Every way a request can fail, before or after it reaches control.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Rule(#[from] Rule),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A failure of Nimbus itself; the details go to the log, not the client.
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    /// The node reads as much of other requests' bodies as it may; a retry later is served.
    #[error("The node is reading as many request bodies as it may; retry the request")]
    Busy,
    #[error("{0}")]
    UnknownOperation(String),
    /// The body stopped coming (`Unread::Abandoned`); the connection closes after the answer.
    #[error("The request body stopped arriving before it was whole: the connection broke, or the client paused past the node's --header-timeout")]
    Abandoned,
}

impl From<nimbus_control::Error> for ApiError {
    fn from(e: nimbus_control::Error) -> Self {
        match e {
            nimbus_control::Error::Rule(r) => Self::Rule(r),
            nimbus_control::Error::Unavailable(m) => Self::Unavailable(m),
            nimbus_control::Error::Store(s) => Self::Internal(s.to_string()),
        }
    }
}

impl ApiError {
    /// HTTP status and `x-amzn-ErrorType` of each error: the only place
    /// either is decided.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::Rule(r) => match r {
                Rule::InvalidParameter(_) => (S::BAD_REQUEST, "InvalidParameterValueException"),
                Rule::Validation(_) => (S::BAD_REQUEST, "ValidationException"),
                Rule::NotFound(_) => (S::NOT_FOUND, "ResourceNotFoundException"),
                Rule::Conflict(_) => (S::CONFLICT, "ResourceConflictException"),
                Rule::PreconditionFailed(_) => (S::PRECONDITION_FAILED, "PreconditionFailedException"),
                Rule::ProvisionedConcurrencyNotFound(_) => {
                    (S::NOT_FOUND, "ProvisionedConcurrencyConfigNotFoundException")
                }
                Rule::PolicyLengthExceeded(_) => (S::BAD_REQUEST, "PolicyLengthExceededException"),
                Rule::InvalidRequestContent(_) => (S::BAD_REQUEST, "InvalidRequestContentException"),
                Rule::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException"),
                Rule::Throttled(_) => (S::TOO_MANY_REQUESTS, "TooManyRequestsException"),
                Rule::AccessDenied(_) => (S::FORBIDDEN, "AccessDeniedException"),
                Rule::CodeSigningConfigNotFound(_) => (S::NOT_FOUND, "CodeSigningConfigNotFoundException"),
                Rule::CodeVerificationFailed(_) => (S::BAD_REQUEST, "CodeVerificationFailedException"),
                Rule::InUse(_) => (S::BAD_REQUEST, "ResourceInUseException"),
                Rule::QuotaExceeded(_) => (S::PAYMENT_REQUIRED, "ServiceQuotaExceededException"),
            },
            Self::Auth(a) => match a {
                AuthError::Missing => (S::FORBIDDEN, "MissingAuthenticationTokenException"),
                AuthError::Incomplete(_) => (S::BAD_REQUEST, "IncompleteSignatureException"),
                AuthError::UnknownKey => (S::FORBIDDEN, "UnrecognizedClientException"),
                AuthError::InvalidSignature(_) => (S::FORBIDDEN, "InvalidSignatureException"),
                AuthError::ContentSha256Mismatch => (S::BAD_REQUEST, "XAmzContentSHA256Mismatch"),
                AuthError::ExpiredToken => (S::FORBIDDEN, "ExpiredTokenException"),
                AuthError::Denied(_) => (S::FORBIDDEN, "AccessDeniedException"),
            },
            Self::Internal(_) | Self::Unavailable(_) => (S::INTERNAL_SERVER_ERROR, "ServiceException"),
            // A 503 is retried by every SDK, whatever the service.
            Self::Busy => (S::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::UnknownOperation(_) => (S::NOT_FOUND, "UnknownOperationException"),
            Self::Abandoned => (S::REQUEST_TIMEOUT, "RequestTimeoutException"),
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Internal(_) => "An internal error occurred; see the Nimbus server log.".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_type();
        // A client's own mistake is routine for the server: debug, not info.
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        } else if status.is_server_error() {
            tracing::warn!(error_type = kind, message = %self, "request failed");
        } else {
            tracing::debug!(error_type = kind, message = %self, "request refused");
        }
        let message = self.client_message();
        let reason = match &self {
            Self::Rule(Rule::Throttled(r)) => Some(r.as_str()),
            _ => None,
        };
        // The model gives these exceptions a capitalised `Message` member.
        let upper = matches!(
            kind,
            "ResourceNotFoundException"
                | "ServiceException"
                | "AccessDeniedException"
                | "CodeSigningConfigNotFoundException"
                | "CodeVerificationFailedException"
        );
        let body = ErrorBody {
            kind: if status.is_server_error() { "Service" } else { "User" }.into(),
            message: (!upper).then(|| message.clone()),
            message_upper: upper.then_some(message),
            reason: reason.map(str::to_string),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
        if reason.is_some() {
            // boto3 reads it as `retryAfterSeconds`; environments free up within a second or so.
            resp.headers_mut().insert("Retry-After", HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_aws_for_the_common_errors() {
        let cases = [
            (ApiError::Rule(Rule::NotFound(String::new())), 404, "ResourceNotFoundException"),
            (ApiError::Rule(Rule::TooLarge(String::new())), 413, "RequestEntityTooLargeException"),
            (ApiError::Rule(Rule::PreconditionFailed(String::new())), 412, "PreconditionFailedException"),
            (ApiError::Auth(AuthError::UnknownKey), 403, "UnrecognizedClientException"),
            (ApiError::Auth(AuthError::Missing), 403, "MissingAuthenticationTokenException"),
            (ApiError::Unavailable(String::new()), 500, "ServiceException"),
            (
                ApiError::Rule(Rule::Throttled(nimbus_core::ThrottleReason::ConcurrentInvocationLimitExceeded)),
                429,
                "TooManyRequestsException",
            ),
        ];
        for (err, status, kind) in cases {
            let (s, k) = err.status_and_type();
            assert_eq!((s.as_u16(), k), (status, kind));
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = ApiError::Internal("disk on fire at /secret/path".into());
        assert!(!e.client_message().contains("/secret"));
    }
}
