//! The OCI distribution API (`/v2/…`, distribution-spec v1.1) on the main
//! listener: its routes, headers (`Docker-Content-Digest`, `Location`,
//! `Range`, `OCI-Subject`, `Docker-Distribution-Api-Version`), its error
//! JSON, and the registry's auth (HTTP Basic with user `AWS` and an ECR
//! authorization token, or a bearer token from `GET /v2/token`). The ECR
//! control API is [`ecr`]. The rules and storage are `nimbus-registry`'s;
//! this module only speaks HTTP.

pub mod ecr;

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use nimbus_registry::auth::{Purpose, TokenError, BEARER_TTL};
use nimbus_registry::{manifests, rules, BodyStream, Registry, RegistryError};
use serde_json::json;

use crate::route::Query;
use crate::Api;

/// Whether an unsigned request is for the registry.
pub fn is_registry(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// Tags and catalog entries per page when the client names no `n`.
const PAGE_DEFAULT: u32 = 1000;
/// Bytes read from a blob file at a time when serving it.
const READ_CHUNK: usize = 256 << 10;

/// A distribution-spec error response.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: serde_json::Value,
    headers: Vec<(&'static str, String)>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: serde_json::Value::Null, headers: vec![] }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let status = match &e {
            E::BlobUnknown(_) | E::BlobUploadUnknown | E::ManifestUnknown(_) | E::NameUnknown { .. } => {
                StatusCode::NOT_FOUND
            }
            E::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            E::RepositoryExists { .. } | E::RepositoryNotEmpty { .. } | E::ManifestReferenced { .. } => {
                StatusCode::FORBIDDEN
            }
            E::Store(_) | E::Io(_) => {
                tracing::error!(error = %e, "registry internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal error; see the Nimbus server log",
                );
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let detail = match &e {
            E::BlobUnknown(d) | E::ManifestBlobUnknown(d) => json!({ "digest": d }),
            E::NameUnknown { name, .. } => json!({ "name": name }),
            E::TagImmutable { tag, .. } => json!({ "tag": tag }),
            _ => serde_json::Value::Null,
        };
        let mut headers = vec![];
        if let E::RangeInvalid { size } = e {
            headers.push(("range", range_header(size)));
        }
        Self { status, code: e.code(), message: e.to_string(), detail, headers }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::debug!(code = self.code, message = %self.message, "registry request refused");
        let body = json!({ "errors": [{ "code": self.code, "message": self.message, "detail": self.detail }] });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// `Range: 0-<last byte>` of an upload holding `size` bytes.
fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// What a `/v2/` path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Token,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
}

fn route(path: &str) -> Option<Route> {
    // Only the one slash after `/v2` is the route's: `/v2//foo` names no
    // repository (`/foo` fails the name's grammar), not `foo`.
    let rest = match path.strip_prefix("/v2")? {
        "" => "",
        more => more.strip_prefix('/')?,
    };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some(match rest {
        "" => Route::Base,
        "token" => Route::Token,
        "_catalog" => Route::Catalog,
        _ => {
            // A name may hold any of the routes' words as segments of its
            // own, so the route is read from the end: its last segments.
            let segs: Vec<&str> = rest.split('/').collect();
            let n = segs.len();
            let from_end = |k: usize| if k <= n { segs[n - k] } else { "" };
            // The route's words take `k` segments; the name is the rest, and not empty.
            let name = |k: usize| (k < n).then(|| segs[..n - k].join("/"));
            match (from_end(3), from_end(2), from_end(1)) {
                (_, "tags", "list") => Route::Tags(name(2)?),
                (_, "blobs", "uploads") => Route::Uploads(name(2)?),
                ("blobs", "uploads", "") => Route::Uploads(name(3)?),
                ("blobs", "uploads", id) => Route::Upload(name(3)?, decode(id)),
                (_, "manifests", r) => Route::Manifest(name(2)?, decode(r)),
                (_, "blobs", d) => Route::Blob(name(2)?, decode(d)),
                (_, "referrers", d) => Route::Referrers(name(2)?, decode(d)),
                _ => return None,
            }
        }
    })
}

impl Route {
    fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Token | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Uploads(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    let has_body = req.headers().get("transfer-encoding").is_some()
        || req.headers().get("content-length").is_some_and(|v| v.as_bytes() != b"0");
    let mut resp = match api.registry.as_deref() {
        Some(registry) => serve_inner(api, registry, req).await.unwrap_or_else(IntoResponse::into_response),
        None => Failure::unsupported("the registry is not served by this node").into_response(),
    };
    resp.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    // A refusal may come before the body was read (a chunk out of order,
    // an unknown upload): the connection cannot carry another request.
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut().insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

async fn serve_inner(api: &Api, registry: &Registry, req: Request<Body>) -> Result<Response, Failure> {
    let path = req.uri().path().to_string();
    let route = route(&path).ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such route"))?;
    let now = SystemTime::now();
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    if route == Route::Token {
        return token(registry, req.headers(), &host, now);
    }
    authorized(registry, req.headers(), now).map_err(|e| refusal(e, || challenge(&host, route.repository())))?;
    if let Some(name) = route.repository() {
        rules::check_name(name)?;
    }
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    match (method, route) {
        (Method::GET | Method::HEAD, Route::Base) => Ok(axum::Json(json!({})).into_response()),
        (Method::GET, Route::Catalog) => {
            let (n, last) = page(&query)?;
            let (names, more) = registry.catalog(last, n).await?;
            // `n=0` asks for an empty page, and nothing after it (the spec).
            let link = (more && n > 0).then(|| next_link("/v2/_catalog", n, names.last()));
            Ok(with_link(axum::Json(json!({ "repositories": names })).into_response(), link))
        }
        (Method::GET, Route::Tags(name)) => {
            let (n, last) = page(&query)?;
            let (tags, more) = registry.tags(&name, last, n).await?;
            let link = (more && n > 0).then(|| next_link(&format!("/v2/{name}/tags/list"), n, tags.last()));
            Ok(with_link(axum::Json(json!({ "name": name, "tags": tags })).into_response(), link))
        }
        (m @ (Method::GET | Method::HEAD), Route::Manifest(name, reference)) => {
            let (row, bytes) = registry.get_manifest(&name, &reference).await?;
            if !accepts(&headers, &row.media_type) {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    format!(
                        "manifest {reference} is a {}, which the request's Accept header does not list",
                        row.media_type
                    ),
                ));
            }
            let len = bytes.len();
            let body = if m == Method::HEAD { Body::empty() } else { Body::from(bytes) };
            Ok(response(
                StatusCode::OK,
                &[
                    ("content-type", row.media_type),
                    ("docker-content-digest", row.digest),
                    ("content-length", len.to_string()),
                ],
                body,
            ))
        }
        (Method::PUT, Route::Manifest(name, reference)) => {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = crate::read_body(api, body, manifests::MANIFEST_MAX).await.map_err(|u| match u {
                crate::Unread::TooLarge => Failure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "MANIFEST_INVALID",
                    format!("manifest is larger than {} bytes", manifests::MANIFEST_MAX),
                ),
                crate::Unread::Busy => {
                    Failure::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", crate::ApiError::Busy.to_string())
                }
                crate::Unread::Abandoned => Failure::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "MANIFEST_INVALID",
                    crate::ApiError::Abandoned.to_string(),
                ),
            })?;
            let pushed = registry.put_manifest(&name, &reference, content_type.as_deref(), body).await?;
            let mut h = vec![
                ("location", format!("/v2/{name}/manifests/{}", pushed.digest)),
                ("docker-content-digest", pushed.digest),
            ];
            if let Some(subject) = pushed.subject {
                h.push(("oci-subject", subject));
            }
            Ok(response(StatusCode::CREATED, &h, Body::empty()))
        }
        (Method::DELETE, Route::Manifest(name, reference)) => {
            registry.delete_manifest(&name, &reference).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (m @ (Method::GET | Method::HEAD), Route::Blob(name, digest)) => {
            get_blob(registry, &name, &digest, &headers, m).await
        }
        (Method::DELETE, Route::Blob(name, digest)) => {
            registry.delete_blob(&name, &digest).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Method::POST, Route::Uploads(name)) => start_upload(registry, &name, &query, &headers, body).await,
        (Method::GET, Route::Upload(name, id)) => {
            let size = registry.upload_size(&name, &id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Method::PATCH, Route::Upload(name, id)) => {
            let range = content_range(&headers)?;
            let size = registry.append(&name, &id, range, stream(body)).await?;
            Ok(upload_response(StatusCode::ACCEPTED, &name, &id, size))
        }
        (Method::PUT, Route::Upload(name, id)) => {
            let digest = query.get("digest").ok_or_else(|| {
                Failure::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "the digest query parameter is required")
            })?;
            let range = content_range(&headers)?;
            let d = registry.finish_upload(&name, &id, digest, range, stream(body)).await?;
            Ok(blob_created(&name, &d.to_string()))
        }
        (Method::DELETE, Route::Upload(name, id)) => {
            registry.cancel_upload(&name, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Route::Referrers(name, digest)) => {
            let filter = query.get("artifactType");
            let rows = registry.referrers(&name, &digest, filter).await?;
            let manifests: Vec<_> = rows
                .iter()
                .map(|r| {
                    let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
                    if let Some(t) = &r.artifact_type {
                        d["artifactType"] = json!(t);
                    }
                    if let Some(a) = &r.annotations {
                        d["annotations"] = json!(a);
                    }
                    d
                })
                .collect();
            let body = json!({ "schemaVersion": 2, "mediaType": manifests::OCI_INDEX, "manifests": manifests });
            let mut h = vec![("content-type", manifests::OCI_INDEX.to_string())];
            if filter.is_some() {
                h.push(("oci-filters-applied", "artifactType".into()));
            }
            Ok(response(StatusCode::OK, &h, Body::from(body.to_string())))
        }
        (m, _) => Err(Failure::unsupported(format!("{m} is not supported on {path}"))),
    }
}

/// Whether a manifest of `media_type` may be answered: the request lists
/// it, lists `*/*` or `application/*`, or has no `Accept` (a registry
/// answers the stored format; it converts none, so a client that lists
/// only other formats gets MANIFEST_UNKNOWN, as from Docker's registry).
fn accepts(headers: &axum::http::HeaderMap, media_type: &str) -> bool {
    let listed: Vec<&str> = headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .filter(|t| !t.is_empty())
        .collect();
    listed.is_empty() || listed.iter().any(|t| *t == media_type || *t == "*/*" || *t == "application/*")
}

fn response(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut resp = (status, body).into_response();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

fn stream(body: Body) -> impl BodyStream {
    body.into_data_stream().map(|c| c.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
}

/// `n` and `last` of a paginated listing.
fn page(query: &Query) -> Result<(u32, Option<&str>), Failure> {
    let n = match query.get("n") {
        None => PAGE_DEFAULT,
        Some(n) => n.parse().map_err(|_| {
            Failure::new(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID", format!("invalid n {n:?}"))
        })?,
    };
    Ok((n, query.get("last")))
}

fn next_link(path: &str, n: u32, last: Option<&String>) -> String {
    let last = last.map(|l| percent_encoding::utf8_percent_encode(l, percent_encoding::NON_ALPHANUMERIC).to_string());
    format!("<{path}?n={n}&last={}>; rel=\"next\"", last.unwrap_or_default())
}

fn with_link(mut resp: Response, link: Option<String>) -> Response {
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert("link", v);
    }
    resp
}

fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Failure> {
    let Some(v) = headers.get("content-range") else { return Ok(None) };
    let v = v.to_str().unwrap_or_default();
    rules::parse_content_range(v).map(Some).ok_or_else(|| {
        Failure::new(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", format!("invalid Content-Range {v:?}"))
    })
}

fn upload_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    response(
        status,
        &[
            ("location", format!("/v2/{name}/blobs/uploads/{id}")),
            ("range", range_header(size)),
            ("docker-upload-uuid", id.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    )
}

fn blob_created(name: &str, digest: &str) -> Response {
    response(
        StatusCode::CREATED,
        &[("location", format!("/v2/{name}/blobs/{digest}")), ("docker-content-digest", digest.to_string())],
        Body::empty(),
    )
}

async fn start_upload(
    registry: &Registry,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    if let (Some(digest), Some(from)) = (query.get("mount"), query.get("from")) {
        if registry.mount_blob(name, from, digest).await?.is_some() {
            return Ok(blob_created(name, digest));
        }
    } else if let Some(digest) = query.get("digest") {
        let d = registry.put_blob(name, digest, stream(body)).await?;
        return Ok(blob_created(name, &d.to_string()));
    }
    // A POST carrying bytes without a digest cannot be finished as one.
    let has_body = headers.get("content-length").and_then(|v| v.to_str().ok()).is_some_and(|v| v != "0");
    if has_body {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "a blob upload with content needs a digest",
        ));
    }
    let id = registry.start_upload(name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

async fn get_blob(
    registry: &Registry,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    method: Method,
) -> Result<Response, Failure> {
    let (file, size) = registry.open_blob(name, digest).await?;
    let mut h = vec![
        ("docker-content-digest", digest.to_string()),
        ("content-type", "application/octet-stream".to_string()),
        ("accept-ranges", "bytes".to_string()),
    ];
    let range = match headers.get("range").and_then(|v| v.to_str().ok()) {
        Some(r) => rules::parse_range(r, size).map_err(|_| {
            let mut f =
                Failure::new(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN", "requested range not satisfiable");
            f.headers.push(("content-range", format!("bytes */{size}")));
            f
        })?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => {
            h.push(("content-range", format!("bytes {a}-{b}/{size}")));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    h.push(("content-length", len.to_string()));
    if method == Method::HEAD {
        return Ok(response(status, &h, Body::empty()));
    }
    let mut file = file;
    if start > 0 {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(RegistryError::from)?;
    }
    use tokio::io::AsyncReadExt;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK));
    Ok(response(status, &h, body))
}

/// Whether the request carries a registry credential: Basic `AWS:<ECR
/// authorization token>` or a bearer token from `/v2/token`.
fn authorized(registry: &Registry, headers: &HeaderMap, now: SystemTime) -> Result<(), TokenError> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(TokenError::Invalid)?;
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return registry.tokens().check(Purpose::Bearer, token.trim(), now);
    }
    basic_login(registry, auth, now)
}

fn basic_login(registry: &Registry, auth: &str, now: SystemTime) -> Result<(), TokenError> {
    let encoded = auth.strip_prefix("Basic ").ok_or(TokenError::Invalid)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| TokenError::Invalid)?;
    match String::from_utf8_lossy(&decoded).split_once(':') {
        Some(("AWS", token)) => registry.tokens().check(Purpose::Login, token, now),
        _ => Err(TokenError::Invalid),
    }
}

/// An expired token is refused as ECR refuses it (403 `DENIED`: the client
/// is to log in again), any other as the distribution spec says.
fn refusal(e: TokenError, unauthorized: impl FnOnce() -> Failure) -> Failure {
    match e {
        TokenError::Expired => Failure::new(StatusCode::FORBIDDEN, "DENIED", e.to_string()),
        TokenError::Invalid => unauthorized(),
    }
}

/// 401 with the distribution token challenge.
fn challenge(host: &str, repository: Option<&str>) -> Failure {
    let mut value = format!("Bearer realm=\"http://{host}/v2/token\",service=\"{host}\"");
    if let Some(r) = repository {
        value.push_str(&format!(",scope=\"repository:{r}:pull,push\""));
    }
    let mut f = Failure::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
    f.headers.push(("www-authenticate", value));
    f
}

/// `GET /v2/token`: a bearer token for a client that logged in with Basic.
fn token(registry: &Registry, headers: &HeaderMap, host: &str, now: SystemTime) -> Result<Response, Failure> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    basic_login(registry, auth, now).map_err(|e| {
        refusal(e, || {
            let mut f = Failure::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
            f.headers.push(("www-authenticate", format!("Basic realm=\"http://{host}/v2/token\"")));
            f
        })
    })?;
    let (token, _) = registry.tokens().mint(Purpose::Bearer, BEARER_TTL, now);
    let issued = chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(axum::Json(json!({
        "token": token, "access_token": token, "expires_in": BEARER_TTL.as_secs(), "issued_at": issued,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(route("/v2/a/b/manifests/v1"), Some(Route::Manifest("a/b".into(), "v1".into())));
        assert_eq!(route(&format!("/v2/a/blobs/{d}")), Some(Route::Blob("a".into(), d.into())));
        assert_eq!(route("/v2/a/blobs/sha256%3Aab"), Some(Route::Blob("a".into(), "sha256:ab".into())));
        assert_eq!(route("/v2/a/blobs/uploads/"), Some(Route::Uploads("a".into())));
        assert_eq!(route("/v2/a/blobs/uploads/x-1"), Some(Route::Upload("a".into(), "x-1".into())));
        assert_eq!(route(&format!("/v2/a/referrers/{d}")), Some(Route::Referrers("a".into(), d.into())));
        assert_eq!(route("/v2/a/unknown"), None);
        assert_eq!(route("/v2x/a/tags/list"), None);
        assert_eq!(route("/v2//a/tags/list"), Some(Route::Tags("/a".into())), "a name the grammar refuses");
        // Names holding the routes' words.
        assert_eq!(
            route("/v2/x/manifests/y/blobs/sha256:ab"),
            Some(Route::Blob("x/manifests/y".into(), "sha256:ab".into()))
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/z/manifests/v1"),
            Some(Route::Manifest("x/blobs/uploads/z".into(), "v1".into()))
        );
        assert_eq!(route("/v2/x/blobs/uploads/z/blobs/uploads/"), Some(Route::Uploads("x/blobs/uploads/z".into())));
        assert_eq!(
            route("/v2/x/blobs/uploads/z/blobs/uploads/u"),
            Some(Route::Upload("x/blobs/uploads/z".into(), "u".into()))
        );
        assert_eq!(route("/v2/a/blobs/uploads"), Some(Route::Uploads("a".into())));
        assert_eq!(route("/v2/tags/list"), None);
        assert_eq!(route("/v2/blobs/uploads/"), None);
    }

    #[test]
    fn an_expired_token_is_denied_as_ecr_denies_it_and_any_other_challenged() {
        let expired = refusal(TokenError::Expired, || challenge("h", None));
        assert_eq!((expired.status, expired.code), (StatusCode::FORBIDDEN, "DENIED"));
        assert_eq!(expired.message, "Your authorization token has expired. Reauthenticate and try again.");
        let other = refusal(TokenError::Invalid, || challenge("h", None));
        assert_eq!((other.status, other.code), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    }
}
