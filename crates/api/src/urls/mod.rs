//! The function URL front end, on the API's listener: a request addressed
//! to `<url-id>.lambda-url.<region>.<domain>` (by `Host`) or to
//! `/lambda-url/<url-id>/...` (by path) is checked against the URL's auth
//! type and CORS configuration, turned into a payload format 2.0 event,
//! invoked as any other invocation, and its result mapped back to HTTP.
//!
//! Errors here are the function URL protocol's, not the Lambda API's: a
//! JSON `{"Message": ...}` body with `x-amzn-ErrorType` (the table is
//! [`UrlError`]). This module never reaches the store; control does.

mod cors;
mod payload;

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use nimbus_control::{InvokeRequest, UrlTarget};

use crate::sigv4::{AuthError, Caller, SignedParts};
use crate::streaming::{self, Chunks, Next, Started};
use crate::{read_body, Api, ApiError, Unread};

/// Largest request body a URL accepts (6 MB, as Invoke's payload).
const REQUEST_MAX: usize = 6_291_456;
const PATH_PREFIX: &str = "/lambda-url/";
/// How much of a stream may come before its prelude ends.
const PRELUDE_MAX: usize = 1 << 20;

/// Where clients reach function URLs, for the `FunctionUrl` the API hands out.
#[derive(Debug, Clone)]
pub enum UrlBase {
    /// `http://<url-id>.lambda-url.<region>.<domain>:<port>/`: needs a
    /// resolver that sends every such name to this node (wildcard DNS, or
    /// `localhost` on resolvers that resolve `*.localhost`).
    Domain { domain: String, port: u16 },
    /// `http://<authority>/lambda-url/<url-id>/`: works with any resolver.
    Path { authority: String },
}

impl UrlBase {
    pub fn url(&self, url_id: &str, region: &str) -> String {
        match self {
            Self::Domain { domain, port } => format!("http://{url_id}.lambda-url.{region}.{domain}:{port}/"),
            Self::Path { authority } => format!("http://{authority}{PATH_PREFIX}{url_id}/"),
        }
    }
}

/// A request addressed to a function URL.
pub struct Addressed {
    pub url_id: String,
    /// The path the function sees.
    pub path: String,
    /// The name the URL was reached by (the event's `domainName`).
    pub domain: String,
    /// Reached by its own host name, so a browser gives it an origin of its
    /// own, as AWS's URLs have; the path form shares the API's.
    pub own_origin: bool,
}

/// Whether a request is for a function URL rather than an AWS API: its
/// `Host` is `<id>.lambda-url.…`, or its path starts with `/lambda-url/`.
pub fn address(headers: &HeaderMap, path: &str) -> Option<Addressed> {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
    let domain = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let mut labels = domain.split('.');
    // Host names are case-insensitive; URL ids are lower case.
    if let (Some(id), Some(label)) = (labels.next(), labels.next()) {
        if !label.eq_ignore_ascii_case("lambda-url") {
            return path_form(path, domain);
        }
        return Some(Addressed {
            url_id: id.to_ascii_lowercase(),
            path: path.to_string(),
            domain: domain.to_string(),
            own_origin: true,
        });
    }
    path_form(path, domain)
}

/// A URL addressed by path, `/lambda-url/<id>/…`.
fn path_form(path: &str, domain: &str) -> Option<Addressed> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let (id, tail) = rest.split_once('/').map_or((rest, ""), |(id, tail)| (id, tail));
    Some(Addressed { url_id: id.to_string(), path: format!("/{tail}"), domain: domain.to_string(), own_origin: false })
}

const FORBIDDEN: &str = "Forbidden. For troubleshooting Function URL authorization issues, see: https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html";

/// The function URL protocol's errors, with AWS's statuses and messages.
#[derive(Debug)]
enum UrlError {
    NotFound,
    Forbidden,
    Auth(AuthError),
    TooLarge,
    Throttled,
    /// The function failed, or returned what cannot be mapped to HTTP.
    BadGateway,
    Api(ApiError),
}

impl IntoResponse for UrlError {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            // AWS answers a URL that leads nowhere as one the caller may not see.
            Self::NotFound => {
                let mut resp =
                    (StatusCode::FORBIDDEN, axum::Json(serde_json::json!({ "Message": null }))).into_response();
                resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static("AccessDeniedException"));
                return resp;
            }
            // As AWS's front end answers it: text, not the JSON of the other errors.
            Self::BadGateway => {
                let mut resp = (StatusCode::BAD_GATEWAY, "Internal Server Error").into_response();
                resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static("BadGatewayException"));
                return resp;
            }
            Self::Forbidden => (StatusCode::FORBIDDEN, "AccessDeniedException", FORBIDDEN.to_string()),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                format!("Request must be smaller than {REQUEST_MAX} bytes for the InvokeFunction operation"),
            ),
            Self::Throttled => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate Exceeded.".into()),
            Self::Auth(a) => {
                let (status, kind) = ApiError::Auth(a.clone()).status_and_type();
                (status, kind, a.to_string())
            }
            Self::Api(e) => {
                let (status, kind) = e.status_and_type();
                let message = match &e {
                    ApiError::Internal(_) => "Internal Server Error".to_string(),
                    other => other.to_string(),
                };
                if status.is_server_error() {
                    tracing::warn!(error = %e, "function URL request failed");
                }
                (status, kind, message)
            }
        };
        let mut resp = (status, axum::Json(serde_json::json!({ "Message": message }))).into_response();
        resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
        resp
    }
}

/// Headers of the connection rather than of the function's answer: a
/// function's own go out renamed `x-amzn-Remapped-<name>`, as AWS's front
/// end renames them. Passed on, a `Content-Length` other than the body's
/// would let a function's body pose as the next response on the connection.
const REMAPPED: &[&str] = &[
    "connection",
    "content-length",
    "date",
    "keep-alive",
    "proxy-authenticate",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a path-form URL's answer must not carry: they would act on the
/// origin it shares with the console and every other URL.
const ORIGIN_WIDE: &[&str] = &["clear-site-data", "service-worker-allowed"];

/// Serves one function URL request.
pub async fn serve(api: &Api, req: Request<Body>, at: Addressed, request_id: &str) -> Response {
    let (parts, body) = req.into_parts();
    let target = match api.control.function_url(&at.url_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return UrlError::NotFound.into_response(),
        Err(e) => return UrlError::Api(e.into()).into_response(),
    };
    let mut resp =
        answer(api, &target, &parts, body, &at, request_id).await.unwrap_or_else(IntoResponse::into_response);
    if let Some(c) = &target.config.cors {
        cors::decorate(c, &parts.headers, resp.headers_mut());
    }
    let own_path = (!at.own_origin).then(|| format!("{PATH_PREFIX}{}", at.url_id));
    confine(resp.headers_mut(), own_path.as_deref(), parts.uri.path());
    resp
}

/// Keeps a URL's answer from acting beyond the URL. Its cookies lose any
/// `Domain`: a host-form URL's would reach every URL under that domain, and
/// the console on it (cookies ignore ports). A path-form URL (`own_path`,
/// `/lambda-url/<id>`) shares its origin with the console and every other
/// path-form URL, so its answer also loses the origin-wide headers and
/// cookies named as the console's session (a browser would send those to
/// the console ahead of the operator's own), and a cookie's path outside
/// its own is narrowed to it: a tenant's `Path=/` cookies, enough of them,
/// made every request to the origin too large (431), the console's too.
fn confine(headers: &mut HeaderMap, own_path: Option<&str>, request_path: &str) {
    if own_path.is_some() {
        for name in ORIGIN_WIDE {
            headers.remove(*name);
        }
    }
    let cookies: Vec<HeaderValue> = headers.get_all(axum::http::header::SET_COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(axum::http::header::SET_COOKIE);
    for cookie in cookies {
        let Ok(cookie) = std::str::from_utf8(cookie.as_bytes()) else { continue };
        if let Some(c) = confine_cookie(cookie, own_path, request_path).and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.append(axum::http::header::SET_COOKIE, c);
        }
    }
}

/// One `Set-Cookie` as [`confine`] lets it through, or `None` to drop it.
fn confine_cookie(cookie: &str, own_path: Option<&str>, request_path: &str) -> Option<String> {
    let mut parts = cookie.split(';');
    let pair = parts.next().unwrap_or_default();
    if own_path.is_some() && crate::console::is_session_cookie(pair.as_bytes()) {
        return None;
    }
    // Browsers ignore a path over 1,024 bytes, and take the default.
    let within = |path: &str| {
        own_path.is_none_or(|own| {
            path.len() <= 1024 && path.strip_prefix(own).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    };
    let narrowed = own_path.map(|own| format!("Path={own}/"));
    let mut out = vec![pair.to_string()];
    let mut has_path = false;
    for attr in parts {
        let name = attr.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("domain") {
            continue;
        }
        if name.eq_ignore_ascii_case("path") {
            has_path = true;
            let value = attr.split_once('=').map_or("", |(_, v)| v.trim());
            if let (false, Some(narrowed)) = (within(value), &narrowed) {
                out.push(format!(" {narrowed}"));
                continue;
            }
        }
        out.push(attr.to_string());
    }
    // Without one, a browser takes the request path's directory, which is
    // `/lambda-url` itself for `/lambda-url/<id>`.
    if let (false, Some(narrowed)) = (has_path, &narrowed) {
        let directory = request_path.rsplit_once('/').map_or("/", |(d, _)| d);
        if !within(directory) {
            out.push(format!(" {narrowed}"));
        }
    }
    Some(out.join(";"))
}

/// A URL's answer: a preflight's, or the function's once auth allows.
async fn answer(
    api: &Api,
    target: &UrlTarget,
    parts: &axum::http::request::Parts,
    body: Body,
    at: &Addressed,
    request_id: &str,
) -> Result<Response, UrlError> {
    if let Some(c) = &target.config.cors {
        if cors::is_preflight(parts.method.as_str(), &parts.headers) {
            return Ok((StatusCode::OK, cors::preflight(c, &parts.headers)).into_response());
        }
    }
    let body = read_body(api, body, REQUEST_MAX).await.map_err(|u| match u {
        Unread::TooLarge => UrlError::TooLarge,
        Unread::Busy => UrlError::Api(ApiError::Busy),
        Unread::Abandoned => UrlError::Api(ApiError::Abandoned),
    })?;
    let iam = authorize(api, target, parts, &body)?;
    let source_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let facts = payload::RequestFacts {
        url_id: &at.url_id,
        account_id: &api.control.account().id,
        domain_name: &at.domain,
        method: parts.method.as_str(),
        path: &at.path,
        raw_query: parts.uri.query().unwrap_or(""),
        protocol: protocol(parts.version),
        source_ip: source_ip.as_deref().unwrap_or("127.0.0.1"),
        request_id,
        now: chrono::Utc::now(),
        iam,
    };
    let event = payload::request_event(&facts, &parts.headers, &body);
    invoke(api, target, event, request_id).await
}

fn protocol(v: axum::http::Version) -> &'static str {
    match v {
        axum::http::Version::HTTP_10 => "HTTP/1.0",
        axum::http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// Lets the request through the URL's auth type: a valid SigV4 signature
/// for service `lambda` (AWS_IAM; the event's `authorizer.iam` is returned),
/// or, for NONE, a resource policy that opens the URL to everyone.
fn authorize(
    api: &Api,
    target: &UrlTarget,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Option<serde_json::Value>, UrlError> {
    if target.config.auth_type == "NONE" {
        return if target.public { Ok(None) } else { Err(UrlError::Forbidden) };
    }
    let signed = match api.verifier.verify(&SignedParts::of(parts, body), "lambda", SystemTime::now()) {
        Ok(signed) => signed,
        Err(AuthError::Missing) => return Err(UrlError::Forbidden),
        Err(e) => return Err(UrlError::Auth(e)),
    };
    let account = &api.control.account().id;
    // Who called: the account's root for the node's key; for a function's
    // or task's own credentials, that function or task.
    let user_arn = match signed.caller {
        Caller::Node => format!("arn:aws:iam::{account}:root"),
        Caller::Session { subject } => subject,
    };
    Ok(Some(serde_json::json!({
        "accessKey": signed.access_key,
        "accountId": account,
        "callerId": signed.access_key,
        "cognitoIdentity": null,
        "principalOrgId": null,
        "userArn": user_arn,
        "userId": account,
    })))
}

async fn invoke(
    api: &Api,
    target: &UrlTarget,
    event: serde_json::Value,
    request_id: &str,
) -> Result<Response, UrlError> {
    // The limit is the invocation's: the event, body (base64 for binary) and headers together.
    let payload = event.to_string();
    if payload.len() > REQUEST_MAX {
        return Err(UrlError::TooLarge);
    }
    let req = InvokeRequest {
        request_id: request_id.to_string(),
        function: target.function.clone(),
        qualifier: target.qualifier.clone(),
        payload: payload.into(),
        client_context: None,
        stream: None,
        lineage: 0,
    };
    let refused = |e: nimbus_control::Error| match e {
        nimbus_control::Error::Rule(nimbus_core::Error::Throttled(_)) => UrlError::Throttled,
        other => UrlError::Api(other.into()),
    };
    if target.config.invoke_mode != "RESPONSE_STREAM" {
        return buffered(target, api.control.invoke(req).await.map_err(refused)?);
    }
    match streaming::start(api.control.clone(), req).await {
        Started::Finished(done) => buffered(target, done.map_err(refused)?),
        Started::Streaming { content_type, chunks, .. } => streamed(content_type, chunks).await,
    }
}

/// The HTTP response of a function's whole result.
fn buffered(target: &UrlTarget, invoked: nimbus_control::Invoked) -> Result<Response, UrlError> {
    if invoked.outcome.function_error.is_some() {
        return Err(UrlError::BadGateway);
    }
    let mapped = payload::map_response(&invoked.outcome.payload).map_err(|payload::Malformed| {
        tracing::debug!(function = %target.function, "the function's response cannot be mapped to HTTP");
        UrlError::BadGateway
    })?;
    respond(mapped.status, &mapped.headers, &mapped.cookies, Body::from(mapped.body))
}

fn respond(status: u16, headers: &[(String, String)], cookies: &[String], body: Body) -> Result<Response, UrlError> {
    let status = StatusCode::from_u16(status).map_err(|_| UrlError::BadGateway)?;
    // These carry no body, nor a length of one (RFC 9110).
    let body = if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) { Body::empty() } else { body };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (name, value) in headers {
        let name = if REMAPPED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            HeaderName::from_bytes(format!("x-amzn-Remapped-{name}").as_bytes())
        } else {
            HeaderName::from_bytes(name.as_bytes())
        };
        h.insert(
            name.map_err(|_| UrlError::BadGateway)?,
            HeaderValue::from_str(value).map_err(|_| UrlError::BadGateway)?,
        );
    }
    for cookie in cookies {
        h.append("set-cookie", HeaderValue::from_str(cookie).map_err(|_| UrlError::BadGateway)?);
    }
    Ok(resp)
}

/// A streamed result: sent on as it is written. An HTTP integration
/// response (what `HttpResponseStream.from` writes) starts with a JSON
/// prelude of status, headers and cookies, ended by 8 NUL bytes. A stream
/// the function fails mid-way is cut off, so the client sees it incomplete.
async fn streamed(content_type: String, mut chunks: Chunks) -> Result<Response, UrlError> {
    let (status, headers, cookies, rest) = if content_type == payload::HTTP_INTEGRATION {
        let mut head = Vec::new();
        let split = loop {
            if let Some(at) = head.windows(payload::PRELUDE_END.len()).position(|w| w == payload::PRELUDE_END) {
                break at;
            }
            match chunks.next().await {
                Some(Next::Chunk(_)) if head.len() > PRELUDE_MAX => return Err(UrlError::BadGateway),
                Some(Next::Chunk(b)) => head.extend_from_slice(&b),
                Some(Next::End(_)) | None => return Err(UrlError::BadGateway),
            }
        };
        let prelude = payload::map_prelude(&head[..split]).map_err(|payload::Malformed| UrlError::BadGateway)?;
        let rest = Bytes::copy_from_slice(&head[split + payload::PRELUDE_END.len()..]);
        (prelude.status, prelude.headers, prelude.cookies, rest)
    } else {
        (200, vec![("content-type".to_string(), content_type)], vec![], Bytes::new())
    };
    let first = (!rest.is_empty()).then_some(Ok(rest));
    let more = futures_util::stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        match chunks.next().await? {
            Next::Chunk(b) => Some((Ok(b), Some(chunks))),
            Next::End(done) => match *done {
                Ok(invoked) if invoked.outcome.function_error.is_none() => None,
                _ => {
                    // Pending once first: hyper flushes what it holds before
                    // it polls again, and the error then closes the
                    // connection without losing the chunks already sent.
                    tokio::task::yield_now().await;
                    Some((Err(std::io::Error::other("the function failed mid-stream")), None))
                }
            },
        }
    });
    let body = Body::from_stream(futures_util::stream::iter(first).chain(more));
    respond(status, &headers, &cookies, body)
}

#[cfg(test)]
mod tests {
    use super::confine_cookie;

    #[test]
    fn a_path_form_urls_cookies_stay_within_its_path() {
        let own = Some("/lambda-url/abc");
        let at = |c: &str, path: &str| confine_cookie(c, own, path);
        assert_eq!(at("a=1; Path=/; HttpOnly", "/lambda-url/abc/x").unwrap(), "a=1; Path=/lambda-url/abc/; HttpOnly");
        assert_eq!(at("a=1; path=/lambda-url/abcd", "/lambda-url/abc/").unwrap(), "a=1; Path=/lambda-url/abc/");
        assert_eq!(at("a=1; Path=/lambda-url/other/", "/lambda-url/abc/").unwrap(), "a=1; Path=/lambda-url/abc/");
        assert_eq!(at("a=1; Path=/lambda-url/abc/app", "/lambda-url/abc/").unwrap(), "a=1; Path=/lambda-url/abc/app");
        assert_eq!(at("a=1; Path=/lambda-url/abc", "/lambda-url/abc/").unwrap(), "a=1; Path=/lambda-url/abc");
        // No path: the browser's default, the request's directory, unless that is outside.
        assert_eq!(at("a=1", "/lambda-url/abc/app/login").unwrap(), "a=1");
        assert_eq!(at("a=1", "/lambda-url/abc").unwrap(), "a=1; Path=/lambda-url/abc/");
        assert_eq!(at("a=1; Domain=127.0.0.1; Max-Age=9", "/lambda-url/abc/").unwrap(), "a=1; Max-Age=9");
        assert_eq!(at("nimbus_console=x; Path=/console", "/lambda-url/abc/"), None);
        let long = format!("a=1; Path=/lambda-url/abc/{}", "x".repeat(1100));
        assert_eq!(at(&long, "/lambda-url/abc").unwrap(), "a=1; Path=/lambda-url/abc/", "ignored by browsers");
    }

    #[test]
    fn a_host_form_urls_cookies_lose_only_their_domain() {
        let c = confine_cookie("nimbus_console=x; Path=/; Domain=example.com; Secure", None, "/").unwrap();
        assert_eq!(c, "nimbus_console=x; Path=/; Secure");
    }
}
