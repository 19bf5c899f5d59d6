//! The SQS front end: requests signed for service `sqs`, in either of the
//! protocols AWS serves: JSON 1.0 (`X-Amz-Target: AmazonSQS.<Op>`, what
//! current SDKs send) and the query protocol (`Action=<Op>` in a form body
//! or the query string, XML answers; older SDKs, and clients that POST to
//! the queue URL itself). Both become one JSON input ([`wire`]), the
//! operations ([`ops`]) run once against `nimbus-queues`, and the answer is
//! written in the request's protocol with its own error shape.
//!
//! This module owns SQS's wire formats and error codes; the rules are
//! `nimbus-queues`'.

mod ops;
pub(crate) mod wire;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_queues::Error;
use serde_json::Value;
use tracing::Instrument as _;

use crate::sigv4::{AuthError, SignedParts};
use crate::Api;

/// The largest request body read: a 1 MiB batch, escaped or form-encoded
/// (at most three bytes a byte: `%XX`, or `\\uXXXX` for two UTF-8 bytes).
const BODY_LIMIT: usize = 4 * nimbus_queues::rules::MAX_MESSAGE_BYTES;

/// Whether an unsigned request is for SQS: it names an SQS operation in
/// `X-Amz-Target`.
pub fn is_unsigned_sqs(headers: &HeaderMap, method: &axum::http::Method, uri: &axum::http::Uri) -> bool {
    let json = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("AmazonSQS."));
    // The query protocol: an `Action` in the query, or a form posted to the
    // endpoint or to a queue's URL (`/<account>/<name>`, which no S3 request
    // without a query is).
    let action = uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("Action=")));
    let form = method == axum::http::Method::POST
        && uri.query().is_none()
        && headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
        && match uri.path().trim_matches('/').split_once('/') {
            None => uri.path() == "/",
            Some((account, name)) => {
                account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.contains('/')
            }
        };
    json || action || form
}

/// Which protocol a request came in, so the answer goes out the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Query,
}

/// An SQS error on the wire: the JSON `__type` (the model's shape name) and
/// the query protocol's code (which the JSON protocol also sends, in
/// `x-amzn-query-error`, and which SDKs report).
struct WireError {
    status: StatusCode,
    json_type: &'static str,
    query_code: &'static str,
    sender: bool,
    message: String,
}

fn wire_error(e: &Error) -> WireError {
    let (json_type, query_code) = match e {
        Error::QueueDoesNotExist => ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"),
        Error::QueueNameExists(_) => ("QueueNameExists", "QueueAlreadyExists"),
        Error::InvalidAttributeName(_) => ("InvalidAttributeName", "InvalidAttributeName"),
        Error::InvalidAttributeValue(_) => ("InvalidAttributeValue", "InvalidAttributeValue"),
        Error::InvalidParameterValue(_) => ("InvalidParameterValue", "InvalidParameterValue"),
        Error::MissingParameter(_) => ("MissingParameter", "MissingParameter"),
        Error::InvalidMessageContents => ("InvalidMessageContents", "InvalidMessageContents"),
        Error::ReceiptHandleIsInvalid(_) => ("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"),
        Error::BatchEntryIdsNotDistinct(_) => {
            ("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct")
        }
        Error::BatchRequestTooLong(_) => ("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"),
        Error::EmptyBatchRequest(_) => ("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"),
        Error::InvalidBatchEntryId => ("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId"),
        Error::TooManyEntriesInBatchRequest(_) => {
            ("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
        }
        Error::PurgeQueueInProgress(_) => ("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress"),
        Error::QueueDeletedRecently => ("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"),
        Error::ResourceNotFound(_) => ("ResourceNotFoundException", "ResourceNotFoundException"),
        Error::UnsupportedOperation(_) => ("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"),
        Error::Internal(_) => {
            return WireError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                json_type: "InternalError",
                query_code: "InternalError",
                sender: false,
                message: "We encountered an internal error. Please try again.".into(),
            }
        }
    };
    let status = if matches!(e, Error::ResourceNotFound(_)) { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
    WireError { status, json_type, query_code, sender: true, message: e.to_string() }
}

fn auth_error(e: &AuthError) -> WireError {
    let (status, code) = auth_code(e);
    WireError { status, json_type: code, query_code: code, sender: true, message: e.to_string() }
}

/// The query protocol's status and code for a refused signature or key
/// (SQS's and STS's alike).
pub(crate) fn auth_code(e: &AuthError) -> (StatusCode, &'static str) {
    match e {
        AuthError::Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
        AuthError::Incomplete(_) => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
        AuthError::UnknownKey => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        AuthError::InvalidSignature(_) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
        AuthError::ContentSha256Mismatch => (StatusCode::BAD_REQUEST, "SignatureDoesNotMatch"),
        AuthError::ExpiredToken => (StatusCode::FORBIDDEN, "ExpiredToken"),
        AuthError::Denied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
    }
}

fn respond_error(protocol: Protocol, e: WireError, request_id: &str) -> Response {
    let fault = if e.sender { "Sender" } else { "Receiver" };
    if !e.sender {
        tracing::error!(error = %e.message, "sqs request failed");
    }
    match protocol {
        Protocol::Json => {
            let body = serde_json::json!({
                "__type": format!("com.amazonaws.sqs#{}", e.json_type),
                "message": e.message,
            });
            let mut resp =
                (e.status, [("content-type", "application/x-amz-json-1.0")], body.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", e.query_code)) {
                resp.headers_mut().insert("x-amzn-query-error", v);
            }
            resp
        }
        Protocol::Query => {
            let body = format!(
                "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                wire::NAMESPACE,
                e.query_code,
                wire::escape(&e.message)
            );
            (e.status, [("content-type", "text/xml")], body).into_response()
        }
    }
}

/// Serves one SQS request.
pub async fn serve(api: &Api, req: Request<Body>, request_id: &str) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let protocol = if target.is_some() { Protocol::Json } else { Protocol::Query };
    let body = match crate::read_signed_body(api, &parts, body, BODY_LIMIT, &crate::access::Action::service("sqs"))
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(crate::Unread::TooLarge)) => {
            let e = Error::InvalidParameterValue(format!("Request must be smaller than {BODY_LIMIT} bytes."));
            return respond_error(protocol, wire_error(&e), request_id);
        }
        // Both are the node's own words, under one code for both protocols.
        Ok(Err(unread)) => {
            let (status, code, why) = match unread {
                crate::Unread::Busy => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", crate::ApiError::Busy),
                _ => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout", crate::ApiError::Abandoned),
            };
            let e = WireError { status, json_type: code, query_code: code, sender: true, message: why.to_string() };
            return respond_error(protocol, e, request_id);
        }
        Err(e) => return respond_error(protocol, auth_error(&e), request_id),
    };
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let signed = SignedParts::of(&parts, &body);
    if let Err(e) = api.verifier.verify(&signed, "sqs", std::time::SystemTime::now()) {
        return respond_error(protocol, auth_error(&e), request_id);
    }
    let (op, input) = match (&target, protocol) {
        (Some(t), _) => {
            let op = t.strip_prefix("AmazonSQS.").unwrap_or_default().to_string();
            let input =
                if body.is_empty() { Ok(Value::Object(Default::default())) } else { serde_json::from_slice(&body) };
            match input {
                Ok(v @ Value::Object(_)) => (op, v),
                _ => {
                    let e = Error::InvalidParameterValue("The request body is not a JSON object.".into());
                    return respond_error(protocol, wire_error(&e), request_id);
                }
            }
        }
        (None, _) => {
            let mut pairs = form_pairs(raw_query.as_deref().unwrap_or_default().as_bytes());
            pairs.extend(form_pairs(&body));
            let (action, input) = wire::query_to_json(&pairs);
            match action {
                Some(a) => (a, input),
                None => {
                    let e = Error::MissingParameter("Action".into());
                    return respond_error(protocol, wire_error(&e), request_id);
                }
            }
        }
    };
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost").to_string();
    tracing::debug!(operation = %op, "sqs");
    let queues = api.queues.clone();
    let operation = op.clone();
    let run = async move {
        let ctx = ops::Ctx { queues: &queues, host: &host, path: &raw_path };
        ops::execute(&ctx, &operation, &input).await
    };
    // A request runs to its end (see `droppable` in lib.rs), but for a
    // receive, which the front door cannot tell apart before the body is
    // read: a long poll nobody waits for should stop waiting.
    let result = if op == "ReceiveMessage" {
        run.await
    } else {
        nimbus_control::Finish::new(run.instrument(tracing::Span::current()), Some(api.tasks.clone())).await
    };
    match result {
        Ok(result) => match protocol {
            Protocol::Json => {
                (StatusCode::OK, [("content-type", "application/x-amz-json-1.0")], result.to_string()).into_response()
            }
            Protocol::Query => {
                (StatusCode::OK, [("content-type", "text/xml")], wire::json_to_xml(&op, &result, request_id))
                    .into_response()
            }
        },
        Err(ops::Failure::Queue(e)) => respond_error(protocol, wire_error(&e), request_id),
        Err(ops::Failure::UnknownOperation) => {
            let e = WireError {
                status: StatusCode::BAD_REQUEST,
                json_type: "UnsupportedOperation",
                query_code: "InvalidAction",
                sender: true,
                message: format!("The action {op} is not valid for this endpoint."),
            };
            respond_error(protocol, e, request_id)
        }
    }
}

pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn form_decode(raw: &[u8]) -> String {
    let spaced: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    percent_encoding::percent_decode(&spaced).decode_utf8_lossy().into_owned()
}
