//! The AWS-compatible front door. A request goes to a front by the service
//! its signature names (or, unsigned, by what it carries): Lambda, S3, SQS,
//! Logs, CloudWatch, ECS, ECR and the registry, Scheduler, function URLs
//! and the console. Lambda's takes the same short path the other JSON
//! fronts follow: route on method and path to an [`Op`], check the caller
//! before reading the body, read it within that operation's limit, verify
//! SigV4, check the values against AWS's model and service rules, parse the
//! wire types, call `nimbus-control`, and write AWS's response or error.
//!
//! This crate owns HTTP: routes, SigV4, wire ↔ domain conversion and an
//! error table per protocol. It never touches the store or sandboxes.

mod access;
mod aws_chunked;
mod console;
mod convert;
mod ecs;
mod error;
mod json_front;
mod logs;
mod monitoring;
mod ops;
mod registry;
mod route;
mod s3;
mod scheduler;
pub mod sigv4;
mod sqs;
mod streaming;
mod sts;
mod urls;
mod validation;

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use nimbus_control::Control;
use tracing::Instrument;

pub use error::ApiError;
pub use route::Op;
pub use s3::S3Front;
use sigv4::{Credentials, SignedParts, Verifier};
pub use urls::UrlBase;

/// What the front door needs to serve.
pub struct Api {
    control: Arc<Control>,
    verifier: Verifier,
    credentials: Credentials,
    /// The port clients reach this node on, for links it hands out.
    public_port: u16,
    /// Where clients reach function URLs, for the `FunctionUrl` it hands out.
    url_base: UrlBase,
    s3: S3Front,
    /// EventBridge Scheduler; `None` answers its requests as unavailable.
    schedules: Option<Arc<nimbus_triggers::schedules::Schedules>>,
    queues: Arc<nimbus_queues::Queues>,
    /// Event source mappings; `None` on a node without queues.
    mappings: Option<Arc<nimbus_triggers::mappings::Mappings>>,
    /// ECS; `None` answers its requests as unavailable.
    ecs: Option<nimbus_containers::Ecs>,
    /// The container registry (`/v2/` and ECR); `None` answers them as unavailable.
    registry: Option<Arc<nimbus_registry::Registry>>,
    /// CloudWatch Logs; `None` answers its requests as unavailable.
    logs: Option<Arc<nimbus_logs::Logs>>,
    /// The web console's sessions and login links.
    console: Arc<console::Sessions>,
    /// CloudWatch metrics, usage reports and the Prometheus scrape; `None` answers them as unavailable.
    metrics: Option<Arc<nimbus_metrics::Metrics>>,
    /// KiB of request bodies the node may be reading at once (see [`read_body`]).
    reading: Arc<tokio::sync::Semaphore>,
    /// Requests whose clients left, running to their end in tasks of their
    /// own (see [`droppable`]), which a graceful stop waits for.
    tasks: tokio_util::task::TaskTracker,
    /// The listener's count of requests being served (a Prometheus gauge).
    pub(crate) requests: nimbus_http::Requests,
    /// Cancelled when the node begins to stop: streams that end only when
    /// their client or session does (live tails) end then, so that a
    /// graceful stop is not held for hours.
    closing: tokio_util::sync::CancellationToken,
}

/// The default of [`Api::with_body_budget`]: 1 GiB.
pub const BODY_BUDGET_DEFAULT: usize = 1 << 30;

impl Api {
    pub fn new(
        control: Arc<Control>,
        credentials: Credentials,
        public_port: u16,
        url_base: UrlBase,
        s3: S3Front,
        queues: Arc<nimbus_queues::Queues>,
    ) -> Self {
        let verifier = Verifier::new(credentials.clone(), control.account().region.clone());
        Self {
            verifier,
            control,
            credentials,
            public_port,
            url_base,
            s3,
            queues,
            schedules: None,
            mappings: None,
            ecs: None,
            registry: None,
            logs: None,
            console: Arc::default(),
            metrics: None,
            reading: Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_DEFAULT >> 10)),
            tasks: tokio_util::task::TaskTracker::new(),
            requests: Default::default(),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Where requests whose clients left finish: tasks a graceful stop
    /// waits for (`TaskTracker::close`, then `wait`).
    /// Ends the streams that would otherwise outlive a graceful stop.
    pub fn close_streams(&self) {
        self.closing.cancel();
    }

    pub fn with_requests(mut self, requests: nimbus_http::Requests) -> Self {
        self.requests = requests;
        self
    }

    pub fn with_tasks(mut self, tasks: tokio_util::task::TaskTracker) -> Self {
        self.tasks = tasks;
        self
    }

    /// Bytes of request bodies the node may be reading at once, all clients
    /// together; a request whose body would go past it is refused (503).
    pub fn with_body_budget(mut self, bytes: usize) -> Self {
        self.reading = Arc::new(tokio::sync::Semaphore::new((bytes >> 10).max(1)));
        self
    }

    /// Serves the EventBridge Scheduler API with these schedules.
    pub fn with_schedules(mut self, schedules: Arc<nimbus_triggers::schedules::Schedules>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// Serves the ECS API with this engine.
    pub fn with_ecs(mut self, ecs: nimbus_containers::Ecs) -> Self {
        self.ecs = Some(ecs);
        self
    }

    /// Serves the OCI registry (`/v2/`) and the ECR API from this registry.
    pub fn with_registry(mut self, registry: Arc<nimbus_registry::Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Serves the CloudWatch Logs API over this log store.
    pub fn with_logs(mut self, logs: Arc<nimbus_logs::Logs>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Serves CloudWatch metrics, `/_nimbus/usage` and `/_nimbus/metrics` from this engine.
    pub fn with_metrics(mut self, metrics: Arc<nimbus_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the event source mapping operations with these rules.
    pub fn with_mappings(mut self, mappings: Arc<nimbus_triggers::mappings::Mappings>) -> Self {
        self.mappings = Some(mappings);
        self
    }
}

/// The router serving every AWS-compatible API on one listener.
pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(handle).with_state(api)
}

async fn handle(State(api): State<Arc<Api>>, req: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        function = tracing::field::Empty,
    );
    // A caller's W3C trace context: this request's spans continue its trace.
    if let Some(parent) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        let state = req.headers().get("tracestate").and_then(|v| v.to_str().ok());
        nimbus_metrics::traces::continue_trace(&span, parent, state);
    }
    let expects_continue =
        req.headers().get("expect").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // A function URL's address wins over a scope naming another service:
    // such a request is an AWS_IAM URL call signed for the wrong service,
    // and is refused.
    let (mut resp, own_origin) = if !one_host(&req) {
        let refusal = "An HTTP/1.1 request names its host in one Host header (RFC 9112, 3.2).";
        ((axum::http::StatusCode::BAD_REQUEST, refusal).into_response(), false)
    } else if let Some(at) = urls::address(req.headers(), req.uri().path()) {
        let own_origin = at.own_origin;
        (urls::serve(&api, req, at, &request_id).instrument(span).await, own_origin)
    } else {
        let front = front(&req);
        let own_origin = matches!(front, Front::Console);
        let resp = if droppable(&front, &req) {
            dispatch(&api, front, req, &request_id).instrument(span).await
        } else {
            let (task_api, task_request_id) = (api.clone(), request_id.clone());
            let work = async move { dispatch(&task_api, front, req, &task_request_id).await };
            nimbus_control::Finish::new(work.instrument(span), Some(api.tasks.clone())).await
        };
        (resp, own_origin)
    };
    let refused = resp.status().is_client_error() || resp.status().is_server_error();
    let headers = resp.headers_mut();
    if !own_origin {
        // Appended, so that a policy of a function's own cannot lift it.
        headers.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SANDBOX));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-RequestId", v);
    }
    // `Date` is hyper's (formatted once a second).
    // A client that sent `Expect: 100-continue` and is refused before its
    // body was asked for never sends that body; the connection must not be
    // reused, or the next request would be read as the rest of this one.
    if expects_continue && refused {
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

/// Serves a request by its front.
async fn dispatch(api: &Api, front: Front, req: Request<Body>, request_id: &str) -> Response {
    match front {
        Front::Scheduler => scheduler::serve(api, req).await,
        Front::Ecs => ecs::serve(api, req).await,
        Front::Registry => registry::serve(api, req).await,
        Front::Ecr => registry::ecr::serve(api, req).await,
        Front::Sqs => sqs::serve(api, req, request_id).await,
        Front::Logs => logs::serve(api, req, request_id).await,
        Front::Console => console::serve(api, req).await,
        Front::Monitoring => monitoring::serve(api, req).await,
        Front::Prometheus => monitoring::prometheus::serve(api, req).await,
        Front::Sts => sts::serve(api, req, request_id).await,
        Front::S3 => {
            let mut resp = api.s3.serve(&api.verifier, &api.reading, req, request_id).await;
            s3::tag_response(&mut resp, request_id);
            resp
        }
        Front::Table => serve(api, req, request_id).await.unwrap_or_else(IntoResponse::into_response),
        Front::Unoffered(service) => unoffered(&service, &req, request_id),
    }
}

/// The refusal of a request for a service Nimbus does not offer, in the
/// error form of the request's own protocol, so that an SDK reads its code
/// (it read a bare 404: "An error occurred (404)", or an XML parse error
/// for IAM): awsJson's `__type`, the query protocol's XML `ErrorResponse`,
/// or the REST protocols' `x-amzn-ErrorType`.
fn unoffered(service: &str, req: &Request<Body>, request_id: &str) -> Response {
    let message = format!(
        "Nimbus does not offer the AWS service '{service}' (the request is signed for it); it offers Lambda, S3, SQS, \
         EventBridge Scheduler, ECR, ECS, CloudWatch Logs and metrics, and STS's GetCallerIdentity."
    );
    let headers = req.headers();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form && headers.get("x-amz-target").is_none() {
        let body = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>{}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>",
            sqs::wire::escape(&message)
        );
        return (axum::http::StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    }
    let body = serde_json::json!({"__type": "UnknownOperationException", "message": message}).to_string();
    let content_type =
        if headers.get("x-amz-target").is_some() { "application/x-amz-json-1.1" } else { "application/json" };
    let json = [
        (header::CONTENT_TYPE, content_type),
        (header::HeaderName::from_static("x-amzn-errortype"), "UnknownOperationException"),
    ];
    (axum::http::StatusCode::BAD_REQUEST, json, body).into_response()
}

/// Whether the request names its host as HTTP/1.1 requires: one `Host`
/// (which an HTTP/1.0 request may leave out). The routes read it (a
/// function URL's, a virtual-hosted bucket's), and a proxy in front may
/// have read the other of two.
fn one_host(req: &Request<Body>) -> bool {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    hosts == 1 || (hosts == 0 && req.version() < axum::http::Version::HTTP_11)
}

/// Whether a request's handling may stop where its client left it. Most
/// run to their end, in a task of their own if their client hangs up
/// ([`nimbus_control::Finish`]): a handler dropped after its write was
/// committed would skip what follows the commit (waking the task that acts
/// on it, clearing a cache, marking an update done), and a lock it held
/// would be released while its write still waited, to land after a later,
/// acknowledged one. Left droppable: a synchronous invoke (its invocation
/// finishes the same way, on its own) and SQS, whose front finishes every
/// operation but ReceiveMessage (a long poll nobody waits for should stop).
fn droppable(front: &Front, req: &Request<Body>) -> bool {
    let path = req.uri().path();
    let event = req.headers().get("x-amz-invocation-type").is_some_and(|v| v.as_bytes() == b"Event");
    match front {
        Front::Sqs => true,
        Front::Table => (path.ends_with("/invocations") && !event) || path.ends_with("/response-streaming-invocations"),
        _ => false,
    }
}

/// What a browser may do with a page of the listener's shared origin that
/// is not the console's: a path-form function URL's answer, an S3 object
/// behind a presigned URL, any API body. Such a page is written by a
/// tenant, and the console's origin is the operator's: as a sandbox without
/// `allow-same-origin` its origin is opaque, so its scripts run but cannot
/// use the console's session, read another URL's cookies or storage, or
/// register a service worker over the origin.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// The fronts a request can be served by (function URLs aside).
enum Front {
    Scheduler,
    Ecs,
    /// The OCI distribution API (`/v2/`, Basic or Bearer auth).
    Registry,
    /// ECR's control API.
    Ecr,
    Sqs,
    S3,
    Logs,
    /// The web console (`/console/`) and `nimbus console`'s calls (signed for `console`).
    Console,
    /// CloudWatch metrics (awsJson 1.0).
    Monitoring,
    /// `GET /_nimbus/metrics` with HTTP Basic auth.
    Prometheus,
    /// STS's GetCallerIdentity (the query protocol).
    Sts,
    /// The route table: Lambda.
    Table,
    /// Signed for an AWS service Nimbus does not offer (SSM, IAM, DynamoDB...).
    Unoffered(String),
}

/// Picks the front by the service the request is signed for (DESIGN: one
/// router keyed by the signed service name). Requests that carry no SigV4
/// scope go by their shape, so that each is refused by the service it was
/// meant for: the registry's `/v2/` paths (Basic or Bearer auth, no
/// SigV4), the web console's `/console/` (a session cookie; so a bucket
/// named `console` is reached only by signed S3 requests), SQS's and CloudWatch Logs' target headers, S3's SigV2 and
/// virtual-hosted forms,
/// and an unsigned request that names no Lambda operation, which is taken
/// for an anonymous path-style S3 request (`GET /bucket/key`, 403
/// AccessDenied rather than an unknown Lambda operation).
fn front(req: &Request<Body>) -> Front {
    match sigv4::signed_service(req.headers(), req.uri().query()).as_deref() {
        Some("scheduler") => Front::Scheduler,
        Some("ecs") => Front::Ecs,
        Some("ecr") => Front::Ecr,
        Some("sqs") => Front::Sqs,
        Some("s3") => Front::S3,
        Some("logs") => Front::Logs,
        Some("console") => Front::Console,
        Some("monitoring") => Front::Monitoring,
        Some("sts") => Front::Sts,
        Some("lambda") => Front::Table,
        Some(other) => Front::Unoffered(other.to_string()),
        None if registry::is_registry(req.uri().path()) => Front::Registry,
        None if console::is_console(req.uri().path()) => Front::Console,
        None if sqs::is_unsigned_sqs(req.headers(), req.method(), req.uri()) => Front::Sqs,
        None if registry::ecr::is_unsigned_ecr(req.headers()) => Front::Ecr,
        None if scheduler::is_unsigned_scheduler(req.method(), req.uri().path()) => Front::Scheduler,
        None if logs::is_unsigned_logs(req.headers()) => Front::Logs,
        None if monitoring::is_unsigned_monitoring(req.headers(), req.uri().path()) => Front::Monitoring,
        None if req.uri().path() == monitoring::prometheus::PATH => Front::Prometheus,
        None if ecs::is_unsigned_ecs(req.headers()) => Front::Ecs,
        None if s3::is_unscoped_s3(req.headers(), req.uri().query()) || anonymous_s3(req) => Front::S3,
        None => Front::Table,
    }
}

fn anonymous_s3(req: &Request<Body>) -> bool {
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok());
    route::route(req.method(), req.uri().path(), &route::Query::parse(req.uri().query()), target).is_err()
}

async fn serve(api: &Api, req: Request<Body>, request_id: &str) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let query = route::Query::parse(raw_query.as_deref());
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let (op, args) = route::route(&parts.method, &raw_path, &query, target)?;

    let limit = op.body_limit();
    let operation = format!("{op:?}");
    let function = args.first().filter(|_| op.names_function()).map(String::as_str);
    let action = access::Action { service: op.service(), operation: &operation, function };
    let body = read_signed_body(api, &parts, body, limit, &action).await?.map_err(|u| match u {
        Unread::TooLarge => ApiError::from(nimbus_core::Error::TooLarge(format!(
            "Request must be smaller than {limit} bytes for the {} operation",
            // AWS's message names Invoke by its older name.
            if op == route::Op::Invoke { "InvokeFunction" } else { operation.as_str() }
        ))),
        Unread::Busy => ApiError::Busy,
        Unread::Abandoned => ApiError::Abandoned,
    })?;

    let signed = SignedParts::of(&parts, &body);
    api.verifier.verify(&signed, op.service(), SystemTime::now())?;
    tracing::debug!(operation = ?op, "authenticated");
    validation::check(op, &args, &query, &parts.headers, &body)?;

    let ctx = ops::Ctx { api, args, query, headers: &parts.headers, body, request_id };
    ops::execute(op, ctx).await
}

/// How much of an oversized body is read and discarded before answering
/// 413, so that a client still sending can read the error instead of
/// seeing its connection reset. Past this the connection is simply closed.
const DRAIN_MAX: usize = 256 << 20;
/// How long the rest of a refused body is read (see [`read_body`]).
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a request's body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    /// Past the operation's limit.
    TooLarge,
    /// The connection broke, or the client paused past `--header-timeout`.
    Abandoned,
    /// The node is reading as much of other requests' bodies as it may.
    Busy,
}

/// Reads a signed request's body if it fits in `limit` (the inner `Err`
/// once it is known not to), after checking its key, scope and time
/// (`Verifier::precheck`) and that its caller may do `action`: a request
/// that fails those has its body read and discarded, not kept, so nobody
/// without a key (or whose key may not do this) makes the node hold one,
/// and a client still sending reads the error. The signature is checked
/// after, over the body.
pub(crate) async fn read_signed_body(
    api: &Api,
    parts: &axum::http::request::Parts,
    body: Body,
    limit: usize,
    action: &access::Action<'_>,
) -> Result<Result<Bytes, Unread>, sigv4::AuthError> {
    let admitted = api
        .verifier
        .precheck(&parts.headers, parts.uri.query(), action.service, SystemTime::now())
        .and_then(|caller| access::check(api.control.account(), &caller, action));
    if let Err(e) = admitted {
        let _ = read_body(api, body, 0).await;
        return Err(e);
    }
    Ok(read_body(api, body, limit).await)
}

/// Reads the body if it fits in `limit`. What is kept counts against the
/// node's budget until the body is whole: a client sending slowly (or never
/// finishing) holds its part of it, and many such clients would otherwise
/// hold gigabytes of the node's memory. Past the budget the request is
/// refused at once; waiting for a share could wait on clients that are gone.
async fn read_body(api: &Api, body: Body, limit: usize) -> Result<Bytes, Unread> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut seen = 0usize;
    // Once past `limit`, the rest is read only to let the client read the
    // refusal, for a while: a client sending a byte now and then kept its
    // connection for as long as 256 MB took it.
    let mut discard_until: Option<tokio::time::Instant> = None;
    loop {
        let next = match discard_until {
            None => stream.next().await,
            Some(until) => tokio::time::timeout_at(until, stream.next()).await.map_err(|_| Unread::TooLarge)?,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| Unread::Abandoned)?;
        seen += chunk.len();
        if seen > DRAIN_MAX {
            return Err(Unread::TooLarge);
        }
        if seen > limit && discard_until.is_none() {
            discard_until = Some(tokio::time::Instant::now() + DRAIN_FOR);
        }
        if seen <= limit {
            // KiB held for the bytes kept so far, rounded up.
            let want = u32::try_from(buf.len().saturating_add(chunk.len()).div_ceil(1024)).unwrap_or(u32::MAX);
            let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
            if want > have {
                let more = api.reading.clone().try_acquire_many_owned(want - have).map_err(|_| Unread::Busy)?;
                match &mut held {
                    Some(p) => p.merge(more),
                    None => held = Some(more),
                }
            }
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(Unread::TooLarge);
    }
    Ok(Bytes::from(buf))
}
