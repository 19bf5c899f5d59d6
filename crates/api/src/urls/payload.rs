//! Payload format 2.0 of function URLs: an HTTP request as the event AWS
//! hands the function, and the function's result back as an HTTP response,
//! by AWS's mapping rules (developer guide, "Invoking Lambda function URLs").
//! Pure conversions: no I/O, no auth, no CORS.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// What the event needs beyond the HTTP request itself.
pub struct RequestFacts<'a> {
    pub url_id: &'a str,
    pub account_id: &'a str,
    pub domain_name: &'a str,
    pub method: &'a str,
    /// The path the function sees (the path form's prefix removed).
    pub path: &'a str,
    pub raw_query: &'a str,
    pub protocol: &'a str,
    pub source_ip: &'a str,
    pub request_id: &'a str,
    pub now: chrono::DateTime<chrono::Utc>,
    /// `requestContext.authorizer.iam` of an AWS_IAM URL.
    pub iam: Option<Value>,
}

/// Builds the event: headers lower-cased with repeats comma-joined, cookies
/// moved out of them, query values comma-joined, and a body that is not
/// text base64-encoded.
pub fn request_event(facts: &RequestFacts<'_>, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string));
            continue;
        }
        joined
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    // The peer is appended, as proxies do: the client's own value is no
    // address a function could trust, the last one is.
    joined
        .entry("x-forwarded-for".into())
        .and_modify(|v| {
            v.push_str(", ");
            v.push_str(facts.source_ip);
        })
        .or_insert_with(|| facts.source_ip.to_string());
    // What a proxy in front of the function adds and drops, as AWS's does:
    // the scheme and port the client reached (not what it claims), and no
    // hop-by-hop headers.
    for hop in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"] {
        joined.remove(hop);
    }
    let port = joined
        .get("host")
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("80")
        .to_string();
    joined.insert("x-forwarded-port".into(), port);
    joined.insert("x-forwarded-proto".into(), "http".into());
    let user_agent = joined.get("user-agent").cloned().unwrap_or_default();

    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": facts.path,
        "rawQueryString": facts.raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": if facts.iam.is_some() { facts.account_id } else { "anonymous" },
            "apiId": facts.url_id,
            "domainName": facts.domain_name,
            "domainPrefix": facts.url_id,
            "http": {
                "method": facts.method,
                "path": facts.path,
                "protocol": facts.protocol,
                "sourceIp": facts.source_ip,
                "userAgent": user_agent,
            },
            "requestId": facts.request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": facts.now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": facts.now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if let Some(iam) = &facts.iam {
        event["requestContext"]["authorizer"] = json!({ "iam": iam });
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    let query = query_parameters(facts.raw_query);
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !body.is_empty() {
        match std::str::from_utf8(body).ok().filter(|_| is_text(headers)) {
            Some(text) => event["body"] = json!(text),
            None => {
                event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

/// Decoded query parameters, repeated keys' values comma-joined.
fn query_parameters(raw: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        params
            .entry(decode(k))
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    params
}

/// Whether the request's content type is text, which AWS passes as is;
/// every other body reaches the function base64-encoded.
fn is_text(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(essence.as_str(), "application/json" | "application/javascript" | "application/xml")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

/// The content type of a streamed HTTP integration response.
pub const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// What ends the JSON prelude of an HTTP integration response.
pub const PRELUDE_END: &[u8] = &[0; 8];

/// The HTTP response a function's result maps to.
#[derive(Debug, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<String>,
    pub body: Bytes,
}

/// The result is not a response AWS can map (a 502 for the caller).
#[derive(Debug, PartialEq)]
pub struct Malformed;

/// Maps the function's result: an object with `statusCode` is a response;
/// anything else (a string, a number, an object without `statusCode`) is
/// a 200 whose JSON body is the result itself.
pub fn map_response(payload: &[u8]) -> Result<HttpResponse, Malformed> {
    let parsed: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(obj) = parsed.as_ref().and_then(Value::as_object).filter(|o| o.contains_key("statusCode")) else {
        return Ok(HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            cookies: vec![],
            body: Bytes::copy_from_slice(payload),
        });
    };
    structured(obj)
}

/// Maps the prelude of a streamed HTTP integration response: its status
/// (200 when left out), headers and cookies; the body follows it. The
/// default content type is `application/octet-stream`, as on AWS.
pub fn map_prelude(prelude: &[u8]) -> Result<HttpResponse, Malformed> {
    let mut obj: Map<String, Value> = serde_json::from_slice(prelude).map_err(|_| Malformed)?;
    obj.entry("statusCode").or_insert(json!(200));
    let headers = obj.entry("headers").or_insert(json!({}));
    if let Some(h) = headers.as_object_mut() {
        if !h.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
            h.insert("content-type".into(), json!("application/octet-stream"));
        }
    }
    obj.remove("body");
    obj.remove("isBase64Encoded");
    structured(&obj)
}

fn structured(obj: &Map<String, Value>) -> Result<HttpResponse, Malformed> {
    // An informational status is the connection's, never a final answer.
    // A number, or a string of one (as API Gateway integrations often return it).
    let status = match &obj["statusCode"] {
        Value::String(s) => s.parse::<u64>().ok(),
        v => v.as_u64(),
    };
    let status = status.filter(|s| (200..=599).contains(s)).ok_or(Malformed)? as u16;
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                headers.push((k.clone(), scalar(v).ok_or(Malformed)?));
            }
        }
        Some(_) => return Err(Malformed),
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let cookies = match obj.get("cookies") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(list)) => {
            list.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or(Malformed)?
        }
        Some(_) => return Err(Malformed),
    };
    let base64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Malformed),
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if base64 => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| Malformed)?)
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(_) => return Err(Malformed),
    };
    Ok(HttpResponse { status, headers, cookies, body })
}

/// A header value as the function may give it: a string, number or boolean.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_without_status_code_are_json_200s() {
        for payload in [&b"\"Hello\""[..], b"{\"a\":1}", b"42"] {
            let r = map_response(payload).unwrap();
            assert_eq!((r.status, r.body.as_ref()), (200, payload));
            assert_eq!(r.headers, vec![("content-type".to_string(), "application/json".to_string())]);
        }
    }

    #[test]
    fn structured_results_map_their_parts() {
        let r = map_response(
            br#"{"statusCode":201,"headers":{"x-a":"1","Content-Type":"text/plain"},"cookies":["c=1"],"body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(map_response(br#"{"statusCode":"418","body":"teapot"}"#).unwrap().status, 418);
        assert_eq!(r.body.as_ref(), b"hi");
        assert_eq!(r.cookies, vec!["c=1".to_string()]);
        assert!(r.headers.contains(&("Content-Type".into(), "text/plain".into())));
    }

    #[test]
    fn malformed_results_are_refused() {
        for bad in [
            &br#"{"statusCode":"abc"}"#[..],
            br#"{"statusCode":99}"#,
            br#"{"statusCode":200,"headers":[1]}"#,
            br#"{"statusCode":200,"body":{"a":1}}"#,
            br#"{"statusCode":200,"cookies":"c=1"}"#,
            br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#,
        ] {
            assert_eq!(map_response(bad), Err(Malformed), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn query_values_are_decoded_and_joined() {
        let q = query_parameters("a=1&a=2&b=x%20y&c");
        assert_eq!(q["a"], "1,2");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "");
    }
}
