//! CloudWatch in smithy-rpc-v2-cbor, the protocol CloudWatch's model lists
//! first and newer AWS SDKs speak: `POST /service/GraniteServiceVersion20100801/operation/<Op>`
//! with `smithy-protocol: rpc-v2-cbor` and CBOR bodies (`ciborium`).
//! Bodies are translated to and from the JSON values the awsJson 1.0 form
//! uses, so both share `wire`; timestamps travel as CBOR tag 1 (epoch
//! seconds) and are plain numbers in between.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use ciborium::Value as Cbor;
use serde_json::Value;

use crate::json_front::Failure;
use crate::sigv4::SignedParts;
use crate::{read_signed_body, Api, ApiError};

pub const PATH_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";
/// CBOR's tag for epoch-based date/time.
const EPOCH_TAG: u64 = 1;

/// Whether an unsigned request is CloudWatch's CBOR form.
pub fn is_cbor(headers: &HeaderMap, path: &str) -> bool {
    path.starts_with(PATH_PREFIX) || headers.get("smithy-protocol").and_then(|v| v.to_str().ok()) == Some("rpc-v2-cbor")
}

/// Reads, verifies and checks a request; returns its operation and input.
pub(super) async fn accept(api: &Api, req: Request<Body>, body_max: usize) -> Result<(String, Value), Failure> {
    let (parts, body) = req.into_parts();
    let body = read_signed_body(api, &parts, body, body_max, &crate::access::Action::service("monitoring"))
        .await
        .map_err(|e| Failure::from(ApiError::from(e)))?
        .map_err(|u| match u {
            crate::Unread::TooLarge => {
                Failure::new("InvalidParameterValue", format!("Request must be smaller than {body_max} bytes"))
            }
            crate::Unread::Busy => Failure::from(ApiError::Busy),
            crate::Unread::Abandoned => Failure::from(ApiError::Abandoned),
        })?;
    let signed = SignedParts::of(&parts, &body);
    api.verifier.verify(&signed, "monitoring", SystemTime::now()).map_err(|e| Failure::from(ApiError::from(e)))?;
    let model = nimbus_model::Model::of("monitoring")
        .ok_or_else(|| Failure::from(ApiError::Unavailable("CloudWatch is not served by this node".into())))?;
    let op = parts
        .uri
        .path()
        .strip_prefix(PATH_PREFIX)
        .filter(|op| model.operation(op).is_some())
        .ok_or_else(|| Failure::new("UnknownOperationException", format!("Unknown operation {}", parts.uri.path())))?
        .to_string();
    let input = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        let cbor: Cbor = ciborium::from_reader(body.as_ref()).map_err(|e| {
            Failure::new("SerializationException", format!("Could not parse the request body as CBOR: {e}"))
        })?;
        to_json(cbor)
    };
    let request = nimbus_model::Request {
        labels: vec![],
        query: vec![],
        headers: parts.headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect(),
        body: Some(&input),
    };
    nimbus_model::validate(model, &op, &request).map_err(|e| match e {
        nimbus_model::Invalid::Mistyped(_) => Failure::new("SerializationException", e.to_string()),
        nimbus_model::Invalid::Violations(_) => Failure::new("InvalidParameterValue", e.to_string()),
    })?;
    Ok((op, input))
}

fn to_json(v: Cbor) -> Value {
    match v {
        Cbor::Integer(i) => {
            let i = i128::from(i);
            i64::try_from(i).map(Value::from).unwrap_or_else(|_| Value::from(i as f64))
        }
        Cbor::Float(f) => Value::from(f),
        Cbor::Text(s) => Value::String(s),
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Null => Value::Null,
        Cbor::Bytes(b) => Value::String(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)),
        Cbor::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        Cbor::Map(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| match k {
                    Cbor::Text(k) => Some((k, to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        Cbor::Tag(_, inner) => to_json(*inner),
        _ => Value::Null,
    }
}

/// A JSON value as CBOR; members named `Timestamp` or `Timestamps` are dates.
fn to_cbor(v: &Value, date: bool) -> Cbor {
    match v {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) => {
            let plain = match n.as_i64() {
                Some(i) => Cbor::Integer(i.into()),
                None => Cbor::Float(n.as_f64().unwrap_or(0.0)),
            };
            if date {
                Cbor::Tag(EPOCH_TAG, Box::new(plain))
            } else {
                plain
            }
        }
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(a) => Cbor::Array(a.iter().map(|x| to_cbor(x, date)).collect()),
        Value::Object(m) => Cbor::Map(
            m.iter().map(|(k, x)| (Cbor::Text(k.clone()), to_cbor(x, k == "Timestamp" || k == "Timestamps"))).collect(),
        ),
    }
}

/// A CBOR response: the body, or an error as `{"__type", "message"}`.
pub(super) fn respond(result: Result<Value, Failure>) -> Response {
    let (status, body, query_error) = match result {
        Ok(v) => (StatusCode::OK, v, None),
        Err(f) => {
            tracing::debug!(error_type = f.kind, message = %f.message, "request refused");
            let body = serde_json::json!({ "__type": super::error_type(f.kind), "message": f.message });
            (f.status, body, Some(super::query_error(&f)))
        }
    };
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(&to_cbor(&body, false), &mut bytes);
    let mut resp = (status, bytes).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/cbor"));
    h.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    if let Some(v) = query_error.and_then(|q| HeaderValue::from_str(&q).ok()) {
        h.insert("x-amzn-query-error", v);
    }
    resp
}
