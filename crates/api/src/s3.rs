//! S3 on the API's listener. A request signed for service `s3` (in its
//! `Authorization` header or, presigned, in its query), or addressed to a
//! `<bucket>.s3.<domain>` or `<bucket>.localhost` host, goes to `s3s` with Nimbus's object store
//! behind it. `s3s` owns the S3 protocol, its signature checks included
//! (aws-chunked bodies are signed chunk by chunk); this module hands it the
//! node's key and, once their tokens are verified here, the secrets of
//! environments' session credentials. It also tells the object store how to
//! reach functions for notifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_control::Control;
use nimbus_objects::Objects;
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::service::{S3Service, S3ServiceBuilder};

use crate::sigv4::{Credentials, Verifier};

/// Whether a request without a SigV4 scope is for S3: signed with
/// Signature Version 2 (`AWS key:signature`, or `AWSAccessKeyId=` in a
/// presigned URL, boto3's default for presigned GETs), which is S3's alone,
/// or sent to a virtual-hosted bucket's host.
pub fn is_unscoped_s3(headers: &HeaderMap, query: Option<&str>) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    header("authorization").is_some_and(|a| a.starts_with("AWS "))
        || query.is_some_and(|q| q.contains("AWSAccessKeyId="))
        || header("host").is_some_and(|h| bucket_of_host(h).is_some())
}

/// The bucket and domain of a virtual-hosted-style host:
/// `<bucket>.s3.<domain>[:port]`, or `<bucket>.localhost[:port]`, which is
/// where the SDKs that put the bucket in the host (JavaScript's, Java's,
/// Go's, Rust's) send a request for an endpoint of `http://localhost:PORT`
/// (a resolver may map every `*.localhost` there). Read path-style, such a
/// request would name another bucket: a DeleteObject would delete one.
fn bucket_of_host(host: &str) -> Option<(&str, &str)> {
    let name = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    if let Some(at) = name.find(".s3.") {
        return Some((&name[..at], &name[at + 1..]));
    }
    let at = name.len().checked_sub(".localhost".len())?;
    let bucket = name.get(..at).filter(|_| name[at..].eq_ignore_ascii_case(".localhost"))?;
    // One label: `s3.localhost` is an endpoint's name, and a function URL's
    // host (`<id>.lambda-url.<region>.localhost`) is not a bucket's.
    let one_label = !bucket.is_empty() && !bucket.contains('.');
    (one_label && !bucket.eq_ignore_ascii_case("s3")).then(|| (bucket, &name[at + 1..]))
}

/// Virtual-hosted style for `<bucket>.s3.<domain>` and `<bucket>.localhost`;
/// path style otherwise.
struct Hosts;

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<VirtualHost<'a>> {
        Ok(match bucket_of_host(host) {
            Some((bucket, domain)) => VirtualHost::new(domain).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

struct AnyBucketName;

impl s3s::validation::NameValidation for AnyBucketName {
    fn validate_bucket_name(&self, _name: &str) -> bool {
        true
    }
}

/// The secrets `s3s` checks signatures with.
struct Keys {
    node: Credentials,
    /// Session credentials seen with a genuine token: access key → (secret, expiry).
    sessions: Mutex<HashMap<String, (String, SystemTime)>>,
}

#[async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        if access_key == self.node.access_key_id {
            return Ok(SecretKey::from(self.node.secret_access_key.clone()));
        }
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(access_key) {
            Some((secret, until)) if *until > SystemTime::now() => Ok(SecretKey::from(secret.clone())),
            _ => Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// Functions as bucket notifications see them.
struct Targets(Arc<Control>);

#[async_trait]
impl nimbus_objects::Functions for Targets {
    async fn may_notify(&self, function_arn: &str, bucket: &str) -> bool {
        self.0.service_may_invoke(function_arn, "s3.amazonaws.com", &format!("arn:aws:s3:::{bucket}")).await
    }

    fn queued(&self) {
        self.0.wake_async();
    }
}

/// The S3 front end.
pub struct S3Front {
    service: S3Service,
    keys: Arc<Keys>,
    /// The account owning every bucket (`x-amz-expected-bucket-owner`).
    account: String,
}

impl S3Front {
    pub fn new(objects: Objects, node: Credentials) -> Self {
        let keys = Arc::new(Keys { node, sessions: Mutex::default() });
        let account = objects.account_id().to_string();
        let mut builder = S3ServiceBuilder::new(objects);
        builder.set_auth(SharedKeys(keys.clone()));
        builder.set_host(Hosts);
        // Bucket names are checked where AWS checks them, on CreateBucket
        // (with AWS's message); other operations on such a name find no bucket.
        builder.set_validation(AnyBucketName);
        Self { service: builder.build(), keys, account }
    }

    /// The notification targets the object store is opened with.
    pub fn targets(control: Arc<Control>) -> Arc<dyn nimbus_objects::Functions> {
        Arc::new(Targets(control))
    }

    /// Serves one S3 request, answered as `request_id`.
    /// `budget` is the node's for request bodies (one permit a KiB), which an
    /// `aws-chunked` upload's chunks hold while `s3s` reads them whole.
    pub async fn serve(
        &self,
        verifier: &Verifier,
        budget: &Arc<tokio::sync::Semaphore>,
        req: Request<Body>,
        request_id: &str,
    ) -> Response {
        if is_browser_form(&req) {
            return not_implemented(req.uri().path());
        }
        if let Some(refused) = self.refused(verifier, req.headers(), req.uri().query(), SystemTime::now()) {
            return with_message(refused, request_id).await;
        }
        let source_ip = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        let chunked =
            req.headers().get("x-amz-content-sha256").is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        let mut req = if chunked {
            req.map(|b| s3s::Body::http_body_unsync(crate::aws_chunked::Budgeted::new(b, budget.clone())))
        } else {
            req.map(s3s::Body::http_body_unsync)
        };
        req.extensions_mut().insert(nimbus_objects::Requested {
            request_id: request_id.to_string(),
            source_ip: source_ip.map_or_else(|| "127.0.0.1".into(), |ip| ip.to_string()),
        });
        if let Some(uri) = sigv2_bucket_uri(req.headers(), req.uri()) {
            *req.uri_mut() = uri;
        }
        presigned_query_headers(&mut req);
        if let Some(refused) = refused_headers(req.headers(), &self.account) {
            return with_message(refused, request_id).await;
        }
        join_repeated(req.headers_mut(), header::CONTENT_ENCODING);
        let head = req.method() == axum::http::Method::HEAD;
        match self.service.call(req).await {
            Ok(resp) if resp.status().is_client_error() => with_message(resp.map(Body::new), request_id).await,
            Ok(mut resp) => {
                // A HEAD of part of an object is a 206, as its GET is (`s3s` answers 200).
                if head && resp.status() == StatusCode::OK && resp.headers().contains_key(header::CONTENT_RANGE) {
                    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                }
                // `s3s` writes a 304 as an error document; S3's has no body,
                // and a length the empty body does not have broke the AWS
                // SDK for Rust (hyper drops the body, not the header).
                if resp.status() == StatusCode::NOT_MODIFIED {
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                    resp.headers_mut().remove(header::CONTENT_TYPE);
                    return resp.map(|_| Body::empty());
                }
                // A document of `s3s`'s own (an object's body has an ETag).
                let xml = resp.headers().get(header::CONTENT_TYPE).is_some_and(|t| t == "application/xml")
                    && !resp.headers().contains_key(header::ETAG);
                let resp = resp.map(Body::new);
                if xml {
                    return with_control_characters_escaped(resp).await;
                }
                resp
            }
            Err(e) => {
                tracing::error!(error = ?e, "S3 request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// Refuses, before `s3s` sees it, what `s3s` lets through and AWS does
    /// not: a scope naming another region; a presigned URL living more than
    /// a week; a request signed in its headers at another time (`s3s` checks
    /// only that a SigV2 request has a date, so a captured one could be
    /// replayed for good); session credentials without their genuine, current
    /// token. Once a session's token is verified here, `s3s` is given its
    /// secret to check the signature with.
    fn refused(
        &self,
        verifier: &Verifier,
        headers: &HeaderMap,
        query: Option<&str>,
        now: SystemTime,
    ) -> Option<Response> {
        let pairs: Vec<(String, String)> = query.map(crate::sigv4::query_pairs).unwrap_or_default();
        let from_query = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let region = verifier.region();
        let wrong_region = |code, lead: &str, r: &str| {
            let message = format!("{lead}; the region '{r}' is wrong; expecting '{region}'");
            Some(s3_error(StatusCode::BAD_REQUEST, code, &message, &[("Region", region)]))
        };
        // The key id of a SigV4 (`Credential=AKID/…`) or SigV2 (`AWS AKID:signature`)
        // header, or of a presigned URL of either.
        let access_key = match header("authorization") {
            Some(auth) => {
                let date = header("x-amz-date").or_else(|| header("date"));
                match auth.strip_prefix("AWS ") {
                    Some(v2) => {
                        if let Some(skewed) = skewed(date, now) {
                            return Some(skewed);
                        }
                        v2.split(':').next()
                    }
                    None => {
                        let credential = auth.split("Credential=").nth(1).and_then(|c| c.split([',', ' ']).next());
                        let scope: Vec<&str> = credential.unwrap_or_default().split('/').collect();
                        if let [_, day, r, ..] = scope[..] {
                            if r != region {
                                return wrong_region(
                                    "AuthorizationHeaderMalformed",
                                    "The authorization header is malformed",
                                    r,
                                );
                            }
                            // (A SigV4 request may carry its time in `Date`, in HTTP's form, instead.)
                            if header("x-amz-date").is_some_and(|d| !d.starts_with(day)) {
                                let message = "The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.";
                                return Some(s3_error(
                                    StatusCode::BAD_REQUEST,
                                    "AuthorizationHeaderMalformed",
                                    message,
                                    &[],
                                ));
                            }
                        }
                        if let Some(skewed) = skewed(date, now) {
                            return Some(skewed);
                        }
                        scope.first().copied()
                    }
                }
            }
            None => match from_query("X-Amz-Credential") {
                Some(credential) => {
                    let scope: Vec<&str> = credential.split('/').collect();
                    if let [_, _, r, ..] = scope[..] {
                        if r != region {
                            let lead = "Error parsing the X-Amz-Credential parameter";
                            return wrong_region("AuthorizationQueryParametersError", lead, r);
                        }
                    }
                    if from_query("X-Amz-Expires").and_then(|e| e.parse::<i64>().ok()).is_some_and(|e| e < 0) {
                        let message = "X-Amz-Expires must be non-negative";
                        return Some(s3_error(
                            StatusCode::BAD_REQUEST,
                            "AuthorizationQueryParametersError",
                            message,
                            &[],
                        ));
                    }
                    let expires = from_query("X-Amz-Expires").and_then(|e| e.parse::<u64>().ok());
                    if expires.is_some_and(|e| e > crate::sigv4::MAX_PRESIGN_EXPIRY) {
                        let message = "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds";
                        return Some(s3_error(
                            StatusCode::BAD_REQUEST,
                            "AuthorizationQueryParametersError",
                            message,
                            &[],
                        ));
                    }
                    if let Some(refused) = presign_timing(from_query("X-Amz-Date"), from_query("X-Amz-Expires"), now) {
                        return Some(refused);
                    }
                    scope.first().copied()
                }
                None => from_query("AWSAccessKeyId"),
            },
        }?;
        if !crate::sigv4::is_session_key(access_key) {
            return None;
        }
        let token = header("x-amz-security-token")
            .or_else(|| from_query("X-Amz-Security-Token"))
            .or_else(|| from_query("x-amz-security-token"));
        let Some(token) = token else {
            let message = "The AWS Access Key Id you provided does not exist in our records.";
            return Some(s3_error(
                StatusCode::FORBIDDEN,
                "InvalidAccessKeyId",
                message,
                &[("AWSAccessKeyId", access_key)],
            ));
        };
        match verifier.session(access_key, token, now) {
            Ok(session) => {
                let mut sessions = self.keys.sessions.lock().unwrap_or_else(|e| e.into_inner());
                sessions.retain(|_, (_, u)| *u > now);
                sessions.insert(access_key.to_string(), (session.secret, session.until));
                None
            }
            Err(crate::sigv4::AuthError::ExpiredToken) => {
                Some(s3_error(StatusCode::BAD_REQUEST, "ExpiredToken", "The provided token has expired.", &[]))
            }
            Err(_) => {
                let message = "The provided token is malformed or otherwise invalid.";
                Some(s3_error(StatusCode::BAD_REQUEST, "InvalidToken", message, &[]))
            }
        }
    }
}

/// S3's limit on a signed request's time: 15 minutes either way.
const MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// `RequestTimeTooSkewed` for a request whose date (SigV4's ISO 8601 basic
/// form, or SigV2's HTTP date) is more than 15 minutes from `now`; `None`
/// for one in time or without a date, which `s3s` refuses.
fn skewed(date: Option<&str>, now: SystemTime) -> Option<Response> {
    use chrono::{DateTime, Utc};
    let date = date?;
    let when = crate::sigv4::parse_amz_date(date)
        .or_else(|| DateTime::parse_from_rfc2822(date).ok().map(|d| d.with_timezone(&Utc)))?;
    let now: DateTime<Utc> = now.into();
    if (now - when).num_milliseconds().abs() <= MAX_SKEW_MS {
        return None;
    }
    let server = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let limit = MAX_SKEW_MS.to_string();
    let message = "The difference between the request time and the current time is too large.";
    let extra =
        [("RequestTime", date), ("ServerTime", server.as_str()), ("MaxAllowedSkewMilliseconds", limit.as_str())];
    Some(s3_error(StatusCode::FORBIDDEN, "RequestTimeTooSkewed", message, &extra))
}

/// A SigV4 presigned URL used before its time (past the allowed skew) or
/// after it: S3's `AccessDenied`, with the times S3 gives. (s3s answered
/// the first as a skewed clock, and the second without the times.)
fn presign_timing(date: Option<&str>, expires: Option<&str>, now: SystemTime) -> Option<Response> {
    use chrono::{DateTime, Utc};
    let (raw_date, raw_expires) = (date?, expires?);
    let when = crate::sigv4::parse_amz_date(raw_date)?;
    let until = when + chrono::Duration::seconds(raw_expires.parse().ok()?);
    let now: DateTime<Utc> = now.into();
    let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (server, expiry) = (iso(now), iso(until));
    if (when - now).num_milliseconds() > MAX_SKEW_MS {
        let extra = [("X-Amz-Date", raw_date), ("Expires", expiry.as_str()), ("ServerTime", server.as_str())];
        return Some(s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request is not yet valid", &extra));
    }
    if now > until {
        let extra = [("X-Amz-Expires", raw_expires), ("Expires", expiry.as_str()), ("ServerTime", server.as_str())];
        return Some(s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired", &extra));
    }
    None
}

/// An S3 error document, with the elements AWS adds for this error.
fn s3_error(status: StatusCode, code: &str, message: &str, extra: &[(&str, &str)]) -> Response {
    // Text content: quotes stay as they are, as in AWS's messages.
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let extra: String = extra.iter().map(|(name, value)| format!("<{name}>{}</{name}>", escape(value))).collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>{extra}</Error>",
        escape(message)
    );
    (status, [(axum::http::header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// What S3 refuses by its headers alone, and Nimbus would otherwise
/// accept and ignore: a bucket owner other than the account (S3's 403),
/// customer-provided encryption keys (refused over plain HTTP, as S3 does:
/// the object would be stored and served as plaintext), and Object Lock
/// (no bucket has it, so a "locked" object could be deleted).
fn refused_headers(headers: &axum::http::HeaderMap, account: &str) -> Option<Response> {
    let has = |name: &str| headers.contains_key(name);
    let owners = ["x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner"];
    if owners.iter().filter_map(|h| headers.get(*h)).any(|v| v.as_bytes() != account.as_bytes()) {
        return Some(s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied", &[]));
    }
    let customer_keys = [
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-copy-source-server-side-encryption-customer-algorithm",
    ];
    if customer_keys.iter().any(|h| has(h)) {
        let message = "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.";
        return Some(s3_error(StatusCode::BAD_REQUEST, "InvalidRequest", message, &[]));
    }
    if ["x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date", "x-amz-object-lock-legal-hold"]
        .iter()
        .any(|h| has(h))
    {
        let message = "Bucket is missing Object Lock Configuration";
        return Some(s3_error(StatusCode::BAD_REQUEST, "InvalidRequest", message, &[]));
    }
    if headers.get("x-amz-bucket-object-lock-enabled").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")) {
        let message = "Object Lock is not offered by Nimbus: a bucket cannot be created with it.";
        return Some(s3_error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message, &[]));
    }
    None
}

/// Writes the control characters of an XML document's text (a key holding
/// a CR, listed without `encoding-type=url`, as the JavaScript, Go and Java
/// SDKs list) as character references, as S3 does: `s3s` wrote them raw,
/// and an XML parser reads a raw CR as a newline, so the key listed was not
/// the key stored.
async fn with_control_characters_escaped(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    let control = |b: &u8| *b < 0x20 && *b != b'\t' && *b != b'\n';
    if !bytes.iter().any(control) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut escaped = Vec::with_capacity(bytes.len() + 16);
    for b in bytes.iter() {
        if control(b) {
            escaped.extend_from_slice(format!("&#x{b:X};").as_bytes());
        } else {
            escaped.push(*b);
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(escaped))
}

/// Joins a list header sent as several lines into one, as RFC 9110 makes
/// them equivalent (and SigV4 signs them joined with commas): the AWS SDK
/// for Rust sends a streamed gzip upload's `Content-Encoding` as `gzip`
/// and `aws-chunked` on two lines, which `s3s` refuses as a duplicate.
fn join_repeated(headers: &mut axum::http::HeaderMap, name: axum::http::HeaderName) {
    if headers.get_all(&name).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(&name).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b","[..])) {
        headers.insert(name, value);
    }
}

/// A presigned URL carries the `x-amz-*` headers it was signed with in its
/// query (a session's `x-amz-security-token`, in SigV2; an object's
/// `x-amz-meta-*`, `x-amz-tagging` or `x-amz-checksum-*`, which the
/// JavaScript SDK's presigner moves there), and AWS counts them as headers;
/// `s3s` reads only headers, so they are made headers. What was signed
/// wins: a header of the same name the URL's holder sent is replaced (else
/// a checksum or tag the URL pins could be swapped). SigV4's own
/// parameters stay where `s3s` reads them.
fn presigned_query_headers<B>(req: &mut Request<B>) {
    const SIGV4_OWN: &[&str] = &[
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ];
    let Some(query) = req.uri().query() else { return };
    let pairs = crate::sigv4::query_pairs(query);
    let v4 = pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-amz-algorithm"));
    if !v4 && !pairs.iter().any(|(k, _)| k == "AWSAccessKeyId") {
        return;
    }
    for (name, value) in pairs {
        let name = name.to_ascii_lowercase();
        let own = v4 && SIGV4_OWN.contains(&name.as_str());
        if !name.starts_with("x-amz-") || own {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            req.headers_mut().insert(name, value);
        }
    }
}

/// A path-style bucket request signed with Signature Version 2 names the
/// bucket as `/<bucket>/` in the string it signs (botocore's presigned
/// ListObjects URLs, for one) while its path is `/<bucket>`; AWS accepts
/// both. `s3s` signs the path as it is, so it is given the one with the slash.
fn sigv2_bucket_uri(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<axum::http::Uri> {
    let v2 = headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|a| a.starts_with("AWS "))
        || uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("AWSAccessKeyId=")));
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
    let path = uri.path();
    let one_segment = path.len() > 1 && !path[1..].contains('/');
    if !v2 || !one_segment || bucket_of_host(host).is_some() {
        return None;
    }
    let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
    format!("{path}/{query}").parse().ok()
}

/// A browser-form upload (`POST /<bucket>` with a multipart form:
/// PostObject), which the object store does not implement. Refused before
/// `s3s` sees it, which would read the whole file part into memory (up to
/// 5 GB, and before any signature or policy check) to answer the same.
fn is_browser_form(req: &Request<Body>) -> bool {
    req.method() == axum::http::Method::POST
        && req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// S3's `NotImplemented`, as AWS words it.
fn not_implemented(resource: &str) -> Response {
    let message = "A header you provided implies functionality that is not implemented.";
    s3_error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message, &[("Resource", resource)])
}

/// AWS's messages for the errors `s3s` raises itself without one (while
/// checking signatures and paths, before the object store is asked).
fn aws_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method."
        }
        "KeyTooLongError" => "Your key is too long",
        "InvalidURI" => "Couldn't parse the specified URI.",
        "MissingContentLength" => "You must provide the Content-Length HTTP header.",
        _ => return None,
    })
}

/// Completes an S3 error document as AWS writes it: a message-less error
/// gets AWS's message (SDKs print it), and every one names its request
/// (`<RequestId>`, `<HostId>`, which SDKs read from the body).
async fn with_message(resp: Response, request_id: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    // S3's error documents are a few hundred bytes.
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if !text.trim_end().ends_with("</Error>") {
        return Response::from_parts(parts, Body::from(bytes));
    }
    // `s3s`'s own wording of an anonymous request's refusal.
    text = text.replace("<Message>Signature is required</Message>", "<Message>Access Denied</Message>");
    let message = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code></Error>"))
        .and_then(|(code, _)| Some((code.to_string(), aws_message(code)?)));
    if let Some((code, msg)) = message {
        text = text.replace(
            &format!("<Code>{code}</Code></Error>"),
            &format!("<Code>{code}</Code><Message>{msg}</Message></Error>"),
        );
    }
    if !text.contains("<RequestId>") {
        let ids = format!("<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>");
        if let Some(at) = text.rfind("</Error>") {
            text.replace_range(at.., &ids);
        }
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

struct SharedKeys(Arc<Keys>);

#[async_trait]
impl S3Auth for SharedKeys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        self.0.get_secret_key(access_key).await
    }
}

/// S3 answers carry its request id headers too (the events a write
/// triggers name the same ids).
pub fn tag_response(resp: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amz-request-id", v.clone());
        resp.headers_mut().insert("x-amz-id-2", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_requests_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:9070"));
        assert!(!is_unscoped_s3(&h, None));
        assert!(is_unscoped_s3(&h, Some("AWSAccessKeyId=AK&Signature=x&Expires=1")));
        h.insert("authorization", HeaderValue::from_static("AWS AK:c2lnbmF0dXJl"));
        assert!(is_unscoped_s3(&h, None));
        let mut v = HeaderMap::new();
        v.insert("host", HeaderValue::from_static("photos.s3.localhost:9070"));
        assert!(is_unscoped_s3(&v, None));
        assert_eq!(bucket_of_host("photos.s3.localhost:9070"), Some(("photos", "s3.localhost")));
        assert_eq!(bucket_of_host("x.lambda-url.us-east-1.localhost"), None);
        assert_eq!(bucket_of_host("photos.localhost:9070"), Some(("photos", "localhost")));
        assert_eq!(bucket_of_host("photos.LOCALHOST"), Some(("photos", "LOCALHOST")));
        for host in ["localhost:9070", "s3.localhost:9070", ".localhost", "127.0.0.1:9070", "notlocalhost"] {
            assert_eq!(bucket_of_host(host), None, "{host}");
        }
    }

    #[tokio::test]
    async fn errors_without_a_message_get_aws_one() {
        let error = |xml: &'static str| {
            Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("content-length", "1")
                .body(Body::from(xml))
                .unwrap()
        };
        let body = |r: Response| async { axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap() };
        let filled = with_message(error("<Error><Code>SignatureDoesNotMatch</Code></Error>"), "r1").await;
        assert!(filled.headers().get("content-length").is_none());
        let text = body(filled).await;
        assert!(text.starts_with(b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature"));
        assert!(text.ends_with(b"</Message><RequestId>r1</RequestId><HostId>r1</HostId></Error>"));
        let kept = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        let named = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message><RequestId>r2</RequestId><HostId>r2</HostId></Error>";
        assert_eq!(body(with_message(error(kept), "r2").await).await, named.as_bytes());
    }

    #[test]
    fn sigv2_bucket_paths_get_their_slash() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:9070"));
        let presigned = uri("/photos?list-type=2&AWSAccessKeyId=AK&Signature=x&Expires=1");
        assert_eq!(
            sigv2_bucket_uri(&h, &presigned),
            Some(uri("/photos/?list-type=2&AWSAccessKeyId=AK&Signature=x&Expires=1"))
        );
        assert_eq!(sigv2_bucket_uri(&h, &uri("/photos/key?AWSAccessKeyId=AK")), None);
        assert_eq!(sigv2_bucket_uri(&h, &uri("/photos?X-Amz-Credential=AK")), None);
        h.insert("authorization", HeaderValue::from_static("AWS AK:sig"));
        assert_eq!(sigv2_bucket_uri(&h, &uri("/photos")), Some(uri("/photos/")));
        h.insert("host", HeaderValue::from_static("photos.s3.localhost"));
        assert_eq!(sigv2_bucket_uri(&h, &uri("/key")), None);
    }
}
