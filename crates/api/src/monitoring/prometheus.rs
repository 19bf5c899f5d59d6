//! `GET /_nimbus/metrics`: the Prometheus/OpenMetrics scrape
//! (`nimbus_metrics::Metrics::prometheus`), with the gauges read at scrape
//! time from the rest of the node: environments by state, templates and
//! invocations running per function (the worker, through control) and SQS queue depths (the engine reads the
//! async queue's depth itself).
//!
//! Never unauthenticated: a scraper sends HTTP Basic credentials, the
//! node's access key id as user name and its secret key as password
//! (Prometheus's `basic_auth`), compared in constant time. SigV4 is not
//! offered: Prometheus cannot sign a scrape.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_metrics::GaugeFamily;
use subtle::ConstantTimeEq;

use crate::Api;

pub const PATH: &str = "/_nimbus/metrics";

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let Some(encoded) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let expected = format!("{}:{}", api.credentials.access_key_id, api.credentials.secret_access_key);
    bool::from(decoded.as_slice().ct_eq(expected.as_bytes()))
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    if !authorized(api, req.headers()) {
        let mut resp =
            (StatusCode::UNAUTHORIZED, "The metrics endpoint needs HTTP Basic auth with the node's access key pair.\n")
                .into_response();
        resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Basic realm=\"nimbus\""));
        return resp;
    }
    let Some(metrics) = api.metrics.as_deref() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "Metrics are not kept by this node.\n").into_response();
    };
    let text = match metrics.prometheus(gauges(api)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the metrics' gauges");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Cannot read the node's metrics; see the server log.\n")
                .into_response();
        }
    };
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    resp
}

/// What the node has now: requests, environments, templates and queue depths.
fn gauges(api: &Api) -> Vec<GaugeFamily> {
    let mut out = vec![GaugeFamily {
        name: "requests_in_flight",
        help: "API requests being served, this scrape included",
        samples: vec![(vec![], api.requests.in_flight() as f64)],
    }];
    if let Some(env) = api.control.environments() {
        let state = |s: &str, n: u32| (vec![("state".to_string(), s.to_string())], f64::from(n));
        out.push(GaugeFamily {
            name: "environments",
            help: "Execution environments by state (provisioned: idle ones kept for provisioned concurrency)",
            samples: vec![state("busy", env.busy), state("idle", env.idle), state("provisioned", env.provisioned)],
        });
        out.push(GaugeFamily {
            name: "templates_ready",
            help: "Runtime templates started ahead of cold starts",
            samples: env.templates.into_iter().map(|(r, n)| (vec![("runtime".to_string(), r)], f64::from(n))).collect(),
        });
        out.push(GaugeFamily {
            name: "lambda_concurrent_executions",
            help: "Invocations running now",
            samples: env.running.into_iter().map(|(f, n)| (vec![("function".to_string(), f)], f64::from(n))).collect(),
        });
    }
    let mut visible = Vec::new();
    let mut in_flight = Vec::new();
    for name in api.queues.list_queues("", None) {
        let Ok(attributes) = api.queues.queue_by_name(&name).and_then(|q| api.queues.attributes(&q.arn)) else {
            continue;
        };
        let count = |k: &str| attributes.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let label = vec![("queue".to_string(), name.clone())];
        visible.push((label.clone(), count("ApproximateNumberOfMessages")));
        in_flight.push((label, count("ApproximateNumberOfMessagesNotVisible")));
    }
    out.push(GaugeFamily { name: "sqs_messages_visible", help: "Messages available in each queue", samples: visible });
    out.push(GaugeFamily {
        name: "sqs_messages_in_flight",
        help: "Messages received and not yet deleted",
        samples: in_flight,
    });
    out
}
