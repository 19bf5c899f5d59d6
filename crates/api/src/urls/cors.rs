//! A function URL's CORS configuration, enforced by the front end as AWS
//! does: preflights are answered without invoking the function, and
//! responses to allowed origins carry the configured `Access-Control-*`
//! headers (in place of the function's own of the same name). Pure header
//! logic, no I/O.

use axum::http::{HeaderMap, HeaderValue};
use nimbus_core::function::Cors;

fn contains(list: &Option<Vec<String>>, wanted: &str) -> bool {
    list.iter().flatten().any(|v| v == "*" || v.eq_ignore_ascii_case(wanted))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of `Access-Control-Allow-Origin` for this request's origin,
/// if the configuration allows it.
fn allowed_origin(cors: &Cors, origin: &str) -> Option<String> {
    let origins = cors.allow_origins.iter().flatten();
    let wildcard = origins.clone().any(|o| o == "*");
    if wildcard && cors.allow_credentials != Some(true) {
        return Some("*".into());
    }
    (wildcard || origins.clone().any(|o| o.eq_ignore_ascii_case(origin))).then(|| origin.to_string())
}

/// Whether a request is a CORS preflight (which the front end answers).
pub fn is_preflight(method: &str, headers: &HeaderMap) -> bool {
    method == "OPTIONS" && headers.contains_key("origin") && headers.contains_key("access-control-request-method")
}

/// The headers of the answer to a preflight: the `Access-Control-*`
/// headers when the origin, method and headers asked for are all allowed,
/// none otherwise (the browser then refuses the real request).
pub fn preflight(cors: &Cors, request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let (Some(origin), Some(method)) = (header(request, "origin"), header(request, "access-control-request-method"))
    else {
        return out;
    };
    let asked: Vec<&str> = header(request, "access-control-request-headers")
        .map(|h| h.split(',').map(str::trim).filter(|h| !h.is_empty()).collect())
        .unwrap_or_default();
    let Some(allow_origin) = allowed_origin(cors, origin) else {
        return out;
    };
    if !contains(&cors.allow_methods, method) || !asked.iter().all(|h| contains(&cors.allow_headers, h)) {
        return out;
    }
    put(&mut out, "access-control-allow-origin", &allow_origin);
    put(&mut out, "access-control-allow-methods", method);
    if !asked.is_empty() {
        put(&mut out, "access-control-allow-headers", &asked.join(","));
    }
    if let Some(age) = cors.max_age {
        put(&mut out, "access-control-max-age", &age.to_string());
    }
    if cors.allow_credentials == Some(true) {
        put(&mut out, "access-control-allow-credentials", "true");
    }
    put(&mut out, "vary", "Origin");
    out
}

/// Sets the configured CORS headers on a response to `request`. As AWS
/// documents, they take precedence over the function's own headers of the
/// same name, and the function's other `Access-Control-*` headers stand (a
/// function may add CORS headers itself). A preflight answer passes through
/// unchanged but for `Access-Control-Expose-Headers`, since `preflight` set
/// the same origin, credentials and `Vary` already.
pub fn decorate(cors: &Cors, request: &HeaderMap, response: &mut HeaderMap) {
    let Some(allow_origin) = header(request, "origin").and_then(|o| allowed_origin(cors, o)) else {
        return;
    };
    put(response, "access-control-allow-origin", &allow_origin);
    if let Some(expose) = cors.expose_headers.as_ref().filter(|e| !e.is_empty()) {
        put(response, "access-control-expose-headers", &expose.join(","));
    }
    if cors.allow_credentials == Some(true) {
        put(response, "access-control-allow-credentials", "true");
    }
    let varies = response.get_all("vary").iter().filter_map(|v| v.to_str().ok());
    if !varies.flat_map(|v| v.split(',')).any(|v| v.trim().eq_ignore_ascii_case("origin")) {
        response.append("vary", HeaderValue::from_static("Origin"));
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            allow_origins: Some(vec!["https://app.example".into()]),
            allow_methods: Some(vec!["POST".into()]),
            allow_headers: Some(vec!["x-token".into()]),
            expose_headers: Some(vec!["x-result".into()]),
            max_age: Some(60),
            allow_credentials: Some(true),
        }
    }

    fn request(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn preflights_allow_only_what_is_configured() {
        let ok = preflight(
            &cors(),
            &request(&[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "X-Token"),
            ]),
        );
        assert_eq!(ok["access-control-allow-origin"], "https://app.example");
        assert_eq!(ok["access-control-allow-headers"], "X-Token");
        assert_eq!(ok["access-control-max-age"], "60");
        for refused in [
            [("origin", "https://evil.example"), ("access-control-request-method", "POST")],
            [("origin", "https://app.example"), ("access-control-request-method", "DELETE")],
        ] {
            assert!(preflight(&cors(), &request(&refused)).is_empty());
        }
        let other_header = request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-other"),
        ]);
        assert!(preflight(&cors(), &other_header).is_empty());
    }

    #[test]
    fn configured_headers_take_precedence_over_the_functions_own() {
        let own = request(&[
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "x-own"),
            ("access-control-max-age", "5"),
        ]);
        let mut resp = own.clone();
        decorate(&cors(), &request(&[("origin", "https://evil.example")]), &mut resp);
        assert_eq!(resp, own, "a refused origin gets nothing configured, so nothing conflicts");
        decorate(&cors(), &request(&[("origin", "https://app.example")]), &mut resp);
        assert_eq!(resp["access-control-allow-origin"], "https://app.example");
        assert_eq!(resp["access-control-expose-headers"], "x-result");
        assert_eq!(resp["access-control-allow-credentials"], "true");
        assert_eq!(resp["access-control-max-age"], "5", "not configured for responses: the function's stands");
        assert_eq!(resp["vary"], "Origin");
    }

    #[test]
    fn a_preflight_answer_keeps_its_headers_through_decoration() {
        let req = request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-token"),
        ]);
        let mut resp = preflight(&cors(), &req);
        decorate(&cors(), &req, &mut resp);
        assert_eq!(resp["access-control-allow-methods"], "POST");
        assert_eq!(resp["access-control-allow-headers"], "x-token");
        assert_eq!(resp["access-control-max-age"], "60");
        assert_eq!(resp["access-control-allow-origin"], "https://app.example");
        assert_eq!(resp.get_all("vary").iter().count(), 1);
    }

    #[test]
    fn a_wildcard_origin_without_credentials_answers_star() {
        let c = Cors { allow_origins: Some(vec!["*".into()]), ..Cors::default() };
        let mut resp = HeaderMap::new();
        decorate(&c, &request(&[("origin", "https://any.example")]), &mut resp);
        assert_eq!(resp["access-control-allow-origin"], "*");
    }
}
