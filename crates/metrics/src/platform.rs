//! The Prometheus/OpenMetrics exposition (`prometheus-client`): the same
//! per-function figures as the AWS/Lambda namespace as counters and
//! histograms, plus the platform's own (cold starts, init durations, store
//! writes), and gauges its caller reads at each scrape (environments by
//! state, templates, queue depths) and hands to [`Platform::render`].
//! Owns the metric names; must not read other crates' state itself.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriterLabel {
    writer: &'static str,
}

/// Seconds from 1 ms to about 17 minutes (past the 15-minute timeout).
#[derive(Clone)]
struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 2.0, 21))
    }
}

/// One gauge read at scrape time, with its samples (labels, value).
#[derive(Debug, Clone)]
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

/// Hands the scrape's gauges to the registry's encoder.
#[derive(Debug, Default)]
struct ScrapeGauges(Arc<Mutex<Vec<GaugeFamily>>>);

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for f in families.iter() {
            let mut family =
                encoder.encode_descriptor(f.name, f.help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for (labels, value) in &f.samples {
                ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

pub struct Platform {
    registry: Mutex<Registry>,
    scrape: Arc<Mutex<Vec<GaugeFamily>>>,
    invocations: Family<FunctionLabel, Counter>,
    errors: Family<FunctionLabel, Counter>,
    throttles: Family<FunctionLabel, Counter>,
    duration: Family<FunctionLabel, Histogram, Seconds>,
    cold_starts: Family<FunctionLabel, Counter>,
    init_duration: Family<FunctionLabel, Histogram, Seconds>,
    async_received: Family<FunctionLabel, Counter>,
    async_dropped: Family<FunctionLabel, Counter>,
    async_age: Family<FunctionLabel, Histogram, Seconds>,
    store_writes: Family<WriterLabel, Histogram, Seconds>,
}

impl Default for Platform {
    fn default() -> Self {
        let mut r = Registry::with_prefix("nimbus");
        let p = Self {
            registry: Mutex::new(Registry::default()),
            scrape: Arc::default(),
            invocations: Family::default(),
            errors: Family::default(),
            throttles: Family::default(),
            duration: Family::new_with_constructor(Seconds),
            cold_starts: Family::default(),
            init_duration: Family::new_with_constructor(Seconds),
            async_received: Family::default(),
            async_dropped: Family::default(),
            async_age: Family::new_with_constructor(Seconds),
            store_writes: Family::new_with_constructor(Seconds),
        };
        r.register("lambda_invocations", "Invocations that ran", p.invocations.clone());
        r.register("lambda_errors", "Invocations that ended in a function error", p.errors.clone());
        r.register("lambda_throttles", "Invocations refused for concurrency", p.throttles.clone());
        r.register_with_unit("lambda_duration", "Invocation duration", Unit::Seconds, p.duration.clone());
        r.register("lambda_cold_starts", "Invocations that started an environment", p.cold_starts.clone());
        r.register_with_unit(
            "lambda_init_duration",
            "Init phase of cold starts",
            Unit::Seconds,
            p.init_duration.clone(),
        );
        r.register("lambda_async_events_received", "Events queued for async invocation", p.async_received.clone());
        r.register("lambda_async_events_dropped", "Async events given up", p.async_dropped.clone());
        r.register_with_unit(
            "lambda_async_event_age",
            "Queued time of async events at each attempt",
            Unit::Seconds,
            p.async_age.clone(),
        );
        r.register_with_unit("store_write", "Store write transactions", Unit::Seconds, p.store_writes.clone());
        r.register_collector(Box::new(ScrapeGauges(p.scrape.clone())));
        *p.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        p
    }
}

fn label(function: &str) -> FunctionLabel {
    FunctionLabel { function: function.to_string() }
}

impl Platform {
    pub(crate) fn invoked(&self, function: &str, duration_ms: f64, error: bool, init_ms: Option<f64>) {
        let l = label(function);
        self.invocations.get_or_create(&l).inc();
        if error {
            self.errors.get_or_create(&l).inc();
        }
        self.duration.get_or_create(&l).observe(duration_ms / 1000.0);
        if let Some(init) = init_ms {
            self.cold_starts.get_or_create(&l).inc();
            self.init_duration.get_or_create(&l).observe(init / 1000.0);
        }
    }

    pub(crate) fn throttled(&self, function: &str) {
        self.throttles.get_or_create(&label(function)).inc();
    }

    pub(crate) fn async_received(&self, function: &str) {
        self.async_received.get_or_create(&label(function)).inc();
    }

    pub(crate) fn async_dropped(&self, function: &str) {
        self.async_dropped.get_or_create(&label(function)).inc();
    }

    pub(crate) fn async_attempt(&self, function: &str, age_ms: i64) {
        self.async_age.get_or_create(&label(function)).observe(age_ms as f64 / 1000.0);
    }

    /// A store transaction of `writer` ("invocation_records", "metrics") took this long.
    pub fn store_write(&self, writer: &'static str, took: std::time::Duration) {
        self.store_writes.get_or_create(&WriterLabel { writer }).observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of everything, with this scrape's gauges.
    pub fn render(&self, gauges: Vec<GaugeFamily>) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        *self.scrape.lock().unwrap_or_else(|e| e.into_inner()) = gauges;
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
