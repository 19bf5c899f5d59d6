//! OTLP export of the node's traces, for those who run a collector: the
//! `tracing` spans of the invoke path (the API request, resolve, worker,
//! admit, cold start, run, runtime, reply) become OpenTelemetry spans
//! (`tracing-opentelemetry`) sent in batches over OTLP/HTTP protobuf
//! (`opentelemetry-otlp`; no gRPC stack in the build), over plain HTTP
//! (the build has no TLS): a collector or agent near the node forwards them.
//!
//! Configured as OpenTelemetry users expect: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `serve --otlp-endpoint`, the same base URL; `/v1/traces` is added),
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, which wins),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (default service name
//! `nimbus`), `OTEL_TRACES_SAMPLER` / `_ARG`, `OTEL_BSP_*`, and
//! `OTEL_SDK_DISABLED` / `OTEL_TRACES_EXPORTER=none` to turn it off. With
//! none of the endpoints set there is no layer at all: the invoke path's
//! spans are `debug` and stay disabled at the callsite.
//!
//! Export never slows an invoke: a span ends into a bounded queue (the
//! SDK's batch processor, `OTEL_BSP_MAX_QUEUE_SIZE`, 2,048 by default)
//! that one background thread drains; a full queue drops spans (the SDK
//! warns when it starts to, and counts them at shutdown), and spans a
//! collector could not take are counted here with a WARN.
//!
//! Owns: the exporter, the layer and its filter, continuing a caller's
//! trace from a W3C `traceparent`. Must not: decide what is a span (the
//! crates on the invoke path do, with `tracing`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const SIGNAL_PATH: &str = "/v1/traces";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// How long shutdown waits for the last batch to go.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// At most one WARN about a failing collector per this long.
const WARN_EVERY_MS: i64 = 60_000;

static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP trace export: {0}")]
pub struct TraceSetupError(String);

/// Whether spans are exported: callers skip recording span fields that
/// only a collector would read (recording costs a formatting pass).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The exporter of a running node; [`Export::shutdown`] sends what is queued.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Sends the spans still queued, waiting at most a few seconds.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
            tracing::warn!(error = %e, "the last traces were not all sent to the OTLP collector");
        }
    }
}

fn nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OpenTelemetry layer, when an endpoint is configured (`base` is
/// `--otlp-endpoint`, which clap also fills from `OTEL_EXPORTER_OTLP_ENDPOINT`).
/// It sees the `nimbus*` crates' spans from `debug` up and their warnings
/// and errors (as span events), whatever `NIMBUS_LOG` lets the log print.
pub fn layer<S>(base: Option<&str>) -> Result<Option<(impl Layer<S>, Export)>, TraceSetupError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let disabled = nonempty("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || nonempty("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let signal = nonempty(TRACES_ENDPOINT);
    let base = base.filter(|b| !b.trim().is_empty());
    if disabled || (signal.is_none() && base.is_none()) {
        return Ok(None);
    }
    // The build has no TLS stack (reqwest without rustls or native-tls):
    // refuse an https collector at the start rather than fail every export.
    if let Some(url) = signal.as_deref().or(base).filter(|u| u.trim_start().starts_with("https:")) {
        return Err(TraceSetupError(format!(
            "{url}: Nimbus sends traces over plain HTTP only; run a collector (or agent) reachable over http:// that forwards them"
        )));
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    // The signal's own variable wins over the base URL, as in every
    // OpenTelemetry SDK; the exporter reads it when given no endpoint.
    if let (None, Some(base)) = (&signal, base) {
        exporter = exporter.with_endpoint(format!("{}{SIGNAL_PATH}", base.trim_end_matches('/')));
    }
    let exporter = exporter.build().map_err(|e| TraceSetupError(e.to_string()))?;
    let mut resource = Resource::builder();
    let named = Resource::builder()
        .build()
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        resource = resource.with_service_name("nimbus");
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(Counted::new(exporter)).build())
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("nimbus");
    let filter = Targets::new()
        .with_target("nimbus", tracing::Level::DEBUG)
        .and(filter_fn(|m| m.is_span() || *m.level() <= tracing::Level::WARN));
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter);
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some((layer, Export { provider })))
}

/// Makes `span` a child of the caller's span named by a W3C `traceparent`
/// header (and its `tracestate`). Nothing happens when export is off or
/// the header is malformed.
pub fn continue_trace(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if !exporting() || span.is_disabled() {
        return;
    }
    struct Headers<'a>(&'a str, Option<&'a str>);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    let cx = PROPAGATOR.get_or_init(TraceContextPropagator::new).extract(&Headers(traceparent, tracestate));
    if cx.span().span_context().is_valid() {
        // Fails only without the layer, which `exporting` rules out.
        let _ = span.set_parent(cx);
    }
}

/// The OTLP exporter, counting the spans a collector did not take and
/// warning about them at most once a minute.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    lost: AtomicU64,
    warned_at_ms: AtomicI64,
}

impl<E> Counted<E> {
    fn new(inner: E) -> Self {
        Self { inner, lost: AtomicU64::new(0), warned_at_ms: AtomicI64::new(i64::MIN) }
    }

    fn failed(&self, spans: u64, error: &dyn std::fmt::Display) {
        let lost = self.lost.fetch_add(spans, Ordering::Relaxed) + spans;
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self.warned_at_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(%error, spans, lost, "cannot send traces to the OTLP collector; dropping them");
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.failed(spans, e);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
