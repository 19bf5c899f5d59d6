//! The CloudWatch metrics front end (service `monitoring`): GetMetricData,
//! GetMetricStatistics and ListMetrics over `nimbus-metrics`, plus Nimbus's
//! own usage report (`GET /_nimbus/usage`, a Lambda-signed route) and the
//! Prometheus scrape (`prometheus`).
//!
//! botocore 1.44 (boto3, the aws CLI) speaks CloudWatch as awsJson 1.0
//! (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`, `x-amzn-query-mode`),
//! though the model lists smithy-rpc-v2-cbor first, which newer SDKs send
//! (`cbor`); both forms are served over the same JSON values (`wire`).
//! Timestamps are epoch seconds.
//! CloudWatch is "query compatible": an error's `__type` names the model's
//! error shape (`com.amazonaws.cloudwatch#InvalidParameterValueException`,
//! which typed SDKs match) and its query-protocol code is in
//! `x-amzn-query-error` (`InvalidParameterValue;Sender`), which is what
//! botocore reports as the code.
//!
//! Owns the wire shapes and AWS's messages for refusals; the statistics
//! are `nimbus-metrics`'.

mod cbor;
pub(crate) mod prometheus;
mod wire;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_metrics::MetricsError;

use crate::json_front::{Failure, JsonCall, JsonService};
use crate::{Api, ApiError};

const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";
const SERVICE: JsonService = JsonService {
    name: "monitoring",
    target_prefix: TARGET_PREFIX,
    body_max: 1 << 20,
    invalid: "InvalidParameterValue",
    precheck: crate::json_front::no_precheck,
};

/// Whether an unsigned request is for CloudWatch (so that CloudWatch refuses it).
pub fn is_unsigned_monitoring(headers: &HeaderMap, path: &str) -> bool {
    SERVICE.is_target_of(headers) || cbor::is_cbor(headers, path)
}

impl From<MetricsError> for Failure {
    fn from(e: MetricsError) -> Self {
        let kind = match &e {
            MetricsError::InvalidParameterValue(_) => "InvalidParameterValue",
            MetricsError::InvalidParameterCombination(_) => "InvalidParameterCombination",
            MetricsError::Store(_) | MetricsError::Corrupt(_) => return Self::internal("InternalServiceError", &e),
        };
        Self::new(kind, e.to_string())
    }
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    if req.uri().path().starts_with(cbor::PATH_PREFIX) {
        return cbor::respond(serve_cbor(api, req).await);
    }
    let mut resp = match serve_inner(api, req).await {
        Ok(r) => r,
        Err(f) => {
            tracing::debug!(error_type = f.kind, message = %f.message, "request refused");
            let body = serde_json::json!({ "__type": error_type(f.kind), "message": f.message });
            let mut resp = (f.status, body.to_string()).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(shape_of(f.kind).unwrap_or(f.kind)) {
                h.insert("x-amzn-ErrorType", v);
            }
            if let Ok(v) = HeaderValue::from_str(&query_error(&f)) {
                h.insert("x-amzn-query-error", v);
            }
            resp
        }
    };
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
    resp
}

/// The model's error shape whose query code `code` is [botocore cloudwatch
/// service-2.json, each error's `error.code`]; other refusals (the JSON
/// protocol's own, authentication's) have no query code of their own.
fn shape_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "InvalidParameterValue" => "InvalidParameterValueException",
        "InvalidParameterCombination" => "InvalidParameterCombinationException",
        "MissingParameter" => "MissingRequiredParameterException",
        "InternalServiceError" => "InternalServiceFault",
        _ => return None,
    })
}

/// An error's `__type`: its shape, in CloudWatch's namespace.
fn error_type(code: &str) -> String {
    shape_of(code).map_or_else(|| code.to_string(), |shape| format!("com.amazonaws.cloudwatch#{shape}"))
}

/// An error's `x-amzn-query-error`: its query code and who is at fault.
fn query_error(f: &Failure) -> String {
    format!("{};{}", f.kind, if f.status.is_server_error() { "Receiver" } else { "Sender" })
}

async fn serve_inner(api: &Api, req: Request<Body>) -> Result<Response, Failure> {
    let JsonCall { op, input, .. } = SERVICE.accept(api, req).await?;
    let body = wire::execute(engine(api)?, &op, input).await?;
    Ok((StatusCode::OK, body.to_string()).into_response())
}

async fn serve_cbor(api: &Api, req: Request<Body>) -> Result<serde_json::Value, Failure> {
    let (op, input) = cbor::accept(api, req, SERVICE.body_max).await?;
    wire::execute(engine(api)?, &op, input).await
}

fn engine(api: &Api) -> Result<&nimbus_metrics::Metrics, Failure> {
    api.metrics
        .as_deref()
        .ok_or_else(|| Failure::from(ApiError::Unavailable("CloudWatch metrics are not served by this node".into())))
}

/// `GET /_nimbus/usage?function=F&start=T&end=T&freeTier=true|false`
/// (Lambda-signed; times RFC 3339 or `YYYY-MM-DD`, UTC): requests,
/// GB-seconds and cost per function and day, as `nimbus usage` prints them.
/// Defaults: the last 30 days, free tier off.
pub(crate) async fn usage(api: &Api, query: &crate::route::Query) -> Result<Response, ApiError> {
    let metrics = api
        .metrics
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("Usage reports are not served by this node".into()))?;
    let time = |name: &str, default: i64| -> Result<i64, ApiError> {
        let Some(v) = query.get(name) else { return Ok(default) };
        let parsed = chrono::DateTime::parse_from_rfc3339(v).map(|t| t.timestamp_millis()).or_else(|_| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis())
        });
        parsed.map_err(|_| {
            ApiError::from(nimbus_core::Error::invalid(format!(
                "The value '{v}' for '{name}' is not a time (RFC 3339, or YYYY-MM-DD)."
            )))
        })
    };
    let now = chrono::Utc::now().timestamp_millis();
    let q = nimbus_metrics::UsageQuery {
        function: query.get("function").map(str::to_string),
        start_ms: time("start", now - 30 * 86_400_000)?,
        end_ms: time("end", now + 1)?,
        free_tier: query.get("freeTier") == Some("true"),
    };
    let report = metrics.usage(&q).await.map_err(|e| ApiError::Unavailable(format!("Cannot read usage: {e}")))?;
    Ok((StatusCode::OK, axum::Json(report)).into_response())
}
