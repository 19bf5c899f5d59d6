//! The web console under `/console/`: one page, its script and style
//! (embedded in the binary, no CDN), and the JSON API they call under
//! `/console/api/` (`api.rs`), behind a session (`auth.rs`).
//!
//! Every console response carries a strict Content-Security-Policy (only
//! the script and style the page names by a nonce, no inline code, no
//! framing), so even a bug that put function-controlled text into markup
//! could not run it, nor load a script a function URL serves;
//! the script builds its DOM with text nodes only. This module must not
//! hold rules of the Lambda model: the API calls control, logs and metrics
//! as the AWS fronts do.

mod api;
mod auth;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};

pub use auth::{is_session_cookie, Sessions};

use crate::Api;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the console's pages may load and do: only this origin's requests,
/// and only the script and style the page names (`{nonce}`): not
/// `'self'`, which would take in a path-form function URL's answer too.
/// No inline code, plugins, forms elsewhere or frames.
const CSP: &str = "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// Whether an unsigned request is the console's (or a `nimbus console`
/// call signed for the `console` service).
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    // Fresh for each response, so a page's nonce tells nothing of the next.
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
    let nonce = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
    let mut resp = route(api, req, &nonce).await;
    let h = resp.headers_mut();
    let csp = CSP.replace("{nonce}", &nonce);
    h.insert("content-security-policy", HeaderValue::from_str(&csp).expect("base64 is a header value"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    resp
}

async fn route(api: &Api, req: Request<Body>, nonce: &str) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/console/api/") {
        return api::serve(api, req, rest.to_string()).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (body, kind) = match path.as_str() {
        "/console" => return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/console/")]).into_response(),
        "/console/" => (INDEX_HTML.replace("{nonce}", nonce), "text/html; charset=utf-8"),
        "/console/app.js" => (APP_JS.to_string(), "text/javascript; charset=utf-8"),
        "/console/app.css" => (APP_CSS.to_string(), "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "Not found").into_response(),
    };
    // The assets change with the binary only; `no-cache` revalidates them
    // after an upgrade without a fingerprint in their names.
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
