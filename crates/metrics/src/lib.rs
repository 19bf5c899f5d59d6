//! CloudWatch metrics of the `AWS/Lambda` namespace, usage reports, and
//! the export of traces to an OpenTelemetry collector.
//!
//! The invoke path records samples here ([`Metrics::invoked`],
//! [`Metrics::throttled`], the async events' three):
//! each is added, under one short lock, to the in-memory statistic set of
//! its minute for every dimension set it belongs to. No sample touches the
//! store: one task flushes finished minutes each minute (and everything
//! at [`Metrics::flush`] on shutdown) and deletes minutes older than the
//! retention, sleeping until the next minute ends or the oldest expires,
//! and not at all while nothing is recorded. Reads merge the store's
//! minutes with the ones still in memory.
//!
//! Owns: what a sample counts towards (the dimension sets), periods and
//! statistics over minutes, listing metrics, the Prometheus exposition of
//! the node's own figures (`platform`), usage and cost of functions and
//! tasks ([`usage`]), and OTLP trace export ([`traces`]). Must not: serve HTTP (the
//! `monitoring` front end and the Prometheus endpoint in `nimbus-api` do;
//! the trace exporter only posts to a collector), decide what an
//! invocation's outcome was (control tells it), or count what runs (the
//! worker's pool does, and each invocation brings its [`Concurrency`]).

mod platform;
mod stats;
pub mod traces;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nimbus_core::clock::Clock;
pub use nimbus_core::Concurrency;
use nimbus_store::{MetricKey, MetricRow, MetricsMeta};
use tokio::sync::{Notify, RwLock};

pub use platform::{GaugeFamily, Platform};
pub use stats::{Stat, StatSet};
pub use usage::{Prices, UsageQuery, UsageReport};

pub const NAMESPACE: &str = "AWS/Lambda";
const MINUTE_MS: i64 = 60_000;
/// ListMetrics lists what has data in the last two weeks, as AWS does.
const LIST_WINDOW_MS: i64 = 14 * 24 * 60 * MINUTE_MS;
/// Most datapoints one series query may ask for (GetMetricStatistics' limit).
pub const MAX_DATAPOINTS: i64 = 1440;

/// The metrics this namespace has, with their units. Every one keeps a
/// histogram, so any statistic, percentiles too, can be asked of any.
pub const METRICS: &[(&str, &str)] = &[
    ("Invocations", "Count"),
    ("Errors", "Count"),
    ("Throttles", "Count"),
    ("Duration", "Milliseconds"),
    ("ConcurrentExecutions", "Count"),
    ("UnreservedConcurrentExecutions", "Count"),
    ("AsyncEventsReceived", "Count"),
    ("AsyncEventAge", "Milliseconds"),
    ("AsyncEventsDropped", "Count"),
    ("DestinationDeliveryFailures", "Count"),
    ("DeadLetterErrors", "Count"),
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    InvalidParameterCombination(String),
    #[error(transparent)]
    Store(#[from] nimbus_store::Error),
    #[error("a stored histogram is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// A dimension set of the namespace; `None` is a dimension the set lacks.
/// The empty set is the account's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dimensions {
    pub function: Option<String>,
    /// `name:alias` or `name:version`.
    pub resource: Option<String>,
    pub executed_version: Option<String>,
}

impl Dimensions {
    pub fn function(name: &str) -> Self {
        Self { function: Some(name.to_string()), ..Self::default() }
    }

    fn key(&self, metric: &str) -> MetricKey {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        MetricKey {
            metric: metric.to_string(),
            function: s(&self.function),
            resource: s(&self.resource),
            executed_version: s(&self.executed_version),
        }
    }

    fn of_key(k: &MetricKey) -> Self {
        let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Self { function: o(&k.function), resource: o(&k.resource), executed_version: o(&k.executed_version) }
    }
}

/// What an invocation addressed and ran.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub function: String,
    /// The alias or version the request named.
    pub qualifier: Option<String>,
    pub executed_version: String,
}

impl Target {
    /// The dimension sets a sample of this invocation counts towards: the
    /// account, the function (these two first, in this order), the
    /// qualified resource and, for an alias, the version it ran.
    fn dimension_sets(&self) -> Vec<Dimensions> {
        let mut sets = vec![Dimensions::default(), Dimensions::function(&self.function)];
        if let Some(q) = &self.qualifier {
            let resource = Some(format!("{}:{q}", self.function));
            sets.push(Dimensions { resource: resource.clone(), ..Dimensions::function(&self.function) });
            let is_alias = q != "$LATEST" && q.parse::<u64>().is_err();
            if is_alias {
                sets.push(Dimensions {
                    resource,
                    executed_version: Some(self.executed_version.clone()),
                    ..Dimensions::function(&self.function)
                });
            }
        }
        sets
    }
}

/// One series over a time range, as GetMetricData's `MetricStat` asks.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// "Invocations", "Errors", "Duration", ... (see [`METRICS`]).
    pub metric: String,
    /// The exact dimension set (CloudWatch does not aggregate across sets).
    pub dimensions: Dimensions,
    /// "Sum", "Average", "Minimum", "Maximum", "SampleCount", "p99", "p99.9".
    pub stat: String,
    /// A multiple of 60 (or 1, 5, 10, 20, 30).
    pub period_s: u32,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long minutes are kept.
    pub retention: Duration,
    pub clock: Clock,
    pub prices: Prices,
}

impl Default for Settings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(15 * 24 * 3600), clock: Clock::real(), prices: Prices::default() }
    }
}

#[derive(Default)]
struct State {
    /// Minutes not yet flushed: minute start -> dimension set -> one
    /// statistic set per metric, in [`METRICS`] order. A sample allocates
    /// nothing once its dimension set has been seen this minute.
    minutes: BTreeMap<i64, HashMap<Dimensions, Vec<StatSet>>>,
    /// The dimension sets of the targets sampled since the last flush, made
    /// once rather than on every invoke.
    targets: HashMap<Target, Arc<[Dimensions]>>,
}

impl State {
    fn sets_of(&mut self, t: &Target) -> Arc<[Dimensions]> {
        if let Some(sets) = self.targets.get(t) {
            return sets.clone();
        }
        let sets: Arc<[Dimensions]> = t.dimension_sets().into();
        self.targets.insert(t.clone(), sets.clone());
        sets
    }
}

pub struct Metrics {
    meta: Arc<dyn MetricsMeta>,
    settings: Settings,
    state: Mutex<State>,
    /// Wakes the flusher when a sample lands in an empty memory.
    wake: Arc<Notify>,
    /// Held for writing while a flush moves minutes from memory to the
    /// store, so that a read sees each minute exactly once.
    moving: RwLock<()>,
    platform: Platform,
}

impl Metrics {
    /// The engine, with its flush and retention task running.
    pub fn start(meta: Arc<dyn MetricsMeta>, settings: Settings) -> Arc<Self> {
        let m = Arc::new(Self {
            meta,
            settings,
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            moving: RwLock::new(()),
            platform: Platform::default(),
        });
        tokio::spawn(run_flusher(Arc::downgrade(&m)));
        m
    }

    /// The Prometheus side: counters, histograms, store write timings.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The OpenMetrics exposition, with the caller's scrape-time gauges
    /// and the async queue's depth.
    pub async fn prometheus(&self, mut gauges: Vec<GaugeFamily>) -> Result<String, MetricsError> {
        gauges.push(GaugeFamily {
            name: "async_events_queued",
            help: "Events waiting in the async invocation queue",
            samples: vec![(vec![], self.meta.queued_async_events().await? as f64)],
        });
        Ok(self.platform.render(gauges))
    }

    pub fn prices(&self) -> &Prices {
        &self.settings.prices
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds samples `(metric, value)` to the current minute of each set.
    fn add(&self, st: &mut State, sets: &[Dimensions], samples: &[(&str, f64)]) {
        let minute = self.settings.clock.now_ms().div_euclid(MINUTE_MS) * MINUTE_MS;
        if st.minutes.is_empty() {
            self.wake.notify_one();
        }
        let by_dims = st.minutes.entry(minute).or_default();
        for d in sets {
            if !by_dims.contains_key(d) {
                by_dims.insert(d.clone(), vec![StatSet::default(); METRICS.len()]);
            }
            let Some(series) = by_dims.get_mut(d) else { continue };
            for (metric, value) in samples {
                if let Some(i) = metric_index(metric) {
                    series[i].add(*value);
                }
            }
        }
    }

    /// An invocation that ran: Invocations, Errors (0 or 1, so that the
    /// average is the error rate), Duration, and the concurrency it was
    /// admitted at: ConcurrentExecutions (account and function) and
    /// UnreservedConcurrentExecutions (account). Throttled attempts are
    /// never admitted, so they count for nothing.
    pub fn invoked(&self, t: &Target, running: Concurrency, duration_ms: f64, error: bool, init_ms: Option<f64>) {
        let mut st = self.lock();
        let sets = st.sets_of(t);
        let errors = if error { 1.0 } else { 0.0 };
        self.add(&mut st, &sets, &[("Invocations", 1.0), ("Errors", errors), ("Duration", duration_ms)]);
        let account = [
            ("ConcurrentExecutions", f64::from(running.account)),
            ("UnreservedConcurrentExecutions", f64::from(running.unreserved)),
        ];
        self.add(&mut st, &sets[..1], &account);
        self.add(&mut st, &sets[1..2], &[("ConcurrentExecutions", f64::from(running.function))]);
        drop(st);
        self.platform.invoked(&t.function, duration_ms, error, init_ms);
    }

    /// An invocation refused for concurrency (it is not an Invocation).
    pub fn throttled(&self, t: &Target) {
        let mut st = self.lock();
        let sets = st.sets_of(t);
        self.add(&mut st, &sets, &[("Throttles", 1.0)]);
        drop(st);
        self.platform.throttled(&t.function);
    }

    fn async_sets(function: &str, qualifier: Option<&str>) -> Vec<Dimensions> {
        let mut sets = vec![Dimensions::function(function)];
        if let Some(q) = qualifier {
            sets.push(Dimensions { resource: Some(format!("{function}:{q}")), ..Dimensions::function(function) });
        }
        sets
    }

    /// An event queued for asynchronous invocation.
    pub fn async_received(&self, function: &str, qualifier: Option<&str>) {
        self.add(&mut self.lock(), &Self::async_sets(function, qualifier), &[("AsyncEventsReceived", 1.0)]);
        self.platform.async_received(function);
    }

    /// An attempt to run a queued event, `age_ms` after it was queued.
    pub fn async_attempt(&self, function: &str, qualifier: Option<&str>, age_ms: i64) {
        self.add(&mut self.lock(), &Self::async_sets(function, qualifier), &[("AsyncEventAge", age_ms as f64)]);
        self.platform.async_attempt(function, age_ms);
    }

    /// An event given up without a successful run (it may still have gone
    /// to a dead-letter queue or an on-failure destination).
    pub fn async_dropped(&self, function: &str, qualifier: Option<&str>) {
        self.add(&mut self.lock(), &Self::async_sets(function, qualifier), &[("AsyncEventsDropped", 1.0)]);
        self.platform.async_dropped(function);
    }

    /// An invocation record its destination refused (`DestinationDeliveryFailures`),
    /// or an event its dead-letter queue refused (`DeadLetterErrors`).
    pub fn async_undelivered(&self, function: &str, qualifier: Option<&str>, dead_letter: bool) {
        let metric = if dead_letter { "DeadLetterErrors" } else { "DestinationDeliveryFailures" };
        self.add(&mut self.lock(), &Self::async_sets(function, qualifier), &[(metric, 1.0)]);
    }

    /// Moves the minutes before `before_ms` from memory to the store.
    async fn flush_before(&self, before_ms: i64) -> Result<(), MetricsError> {
        let _moving = self.moving.write().await;
        let due = {
            let mut st = self.lock();
            let later = st.minutes.split_off(&before_ms);
            // Forgets the targets of functions since deleted, at least.
            st.targets.clear();
            std::mem::replace(&mut st.minutes, later)
        };
        if due.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (minute, by_dims) in &due {
            for (d, series) in by_dims {
                for ((metric, _), s) in METRICS.iter().zip(series).filter(|(_, s)| s.sample_count > 0.0) {
                    let k = d.key(metric);
                    rows.push(MetricRow {
                        metric: k.metric,
                        function: k.function,
                        resource: k.resource,
                        executed_version: k.executed_version,
                        minute_ms: *minute,
                        sample_count: s.sample_count,
                        sum: s.sum,
                        minimum: s.minimum,
                        maximum: s.maximum,
                        histogram: s.encode_histogram(),
                    });
                }
            }
        }
        let began = std::time::Instant::now();
        let written = self.meta.insert_metric_rows(&rows).await;
        self.platform.store_write("metrics", began.elapsed());
        if let Err(e) = written {
            // Put them back for the next flush rather than lose them.
            let mut st = self.lock();
            for (minute, by_dims) in due {
                let mine = st.minutes.entry(minute).or_default();
                for (d, series) in by_dims {
                    let into = mine.entry(d).or_insert_with(|| vec![StatSet::default(); METRICS.len()]);
                    into.iter_mut().zip(&series).for_each(|(a, b)| a.merge(b));
                }
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Writes every minute in memory, the current one too (at shutdown).
    pub async fn flush(&self) -> Result<(), MetricsError> {
        self.flush_before(i64::MAX).await
    }

    /// Per-period statistic sets of one series, by period start; periods
    /// without samples are left out. Checks the period and the range but
    /// not the number of datapoints (each API has its own limit).
    pub async fn statistics(
        &self,
        metric: &str,
        dims: &Dimensions,
        period_s: u32,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(i64, StatSet)>, MetricsError> {
        check_period(period_s)?;
        if start_ms >= end_ms {
            return Err(MetricsError::InvalidParameterValue(
                "The parameter StartTime must be less than the parameter EndTime.".into(),
            ));
        }
        let (start_ms, end_ms) = (start_ms.clamp(0, LAST_MS), end_ms.clamp(0, LAST_MS));
        let key = dims.key(metric);
        let from = start_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let period_ms = i64::from(period_s) * 1000;
        let mut periods: std::collections::BTreeMap<i64, StatSet> = Default::default();
        let mut put = |minute: i64, s: &StatSet| {
            if s.sample_count == 0.0 {
                return;
            }
            let p = from + (minute - from).div_euclid(period_ms) * period_ms;
            periods.entry(p).or_default().merge(s);
        };
        let _moving = self.moving.read().await;
        for r in self.meta.metric_rows(&key, from, end_ms).await? {
            let s = StatSet {
                sample_count: r.sample_count,
                sum: r.sum,
                minimum: r.minimum,
                maximum: r.maximum,
                histogram: StatSet::decode_histogram(&r.histogram)?,
            };
            put(r.minute_ms, &s);
        }
        if let Some(i) = metric_index(metric) {
            let st = self.lock();
            for (minute, by_dims) in st.minutes.range(from..end_ms) {
                if let Some(series) = by_dims.get(dims) {
                    put(*minute, &series[i]);
                }
            }
        }
        Ok(periods.into_iter().collect())
    }

    /// Per-period datapoints of one metric, oldest first, as GetMetricData
    /// returns them (at most [`MAX_DATAPOINTS`] periods may be asked for).
    pub async fn series(&self, q: &SeriesQuery) -> Result<Vec<(i64, f64)>, MetricsError> {
        let stat = Stat::parse(&q.stat)?;
        check_period(q.period_s)?;
        check_datapoints(q.period_s, q.start_ms, q.end_ms, MAX_DATAPOINTS)?;
        let sets = self.statistics(&q.metric, &q.dimensions, q.period_s, q.start_ms, q.end_ms).await?;
        Ok(sets.into_iter().filter_map(|(t, s)| s.value(stat).map(|v| (t, v))).collect())
    }

    /// Every metric and dimension set with data in the last two weeks,
    /// sorted by metric, then dimensions.
    /// The metrics with data in the last two weeks, as ListMetrics lists
    /// them; with `recently_active` (`RecentlyActive: PT3H`), in the last three hours.
    pub async fn list(&self, recently_active: bool) -> Result<Vec<(String, Dimensions)>, MetricsError> {
        let window = if recently_active { 3 * 60 * MINUTE_MS } else { LIST_WINDOW_MS };
        let since = self.settings.clock.now_ms() - window;
        let _moving = self.moving.read().await;
        let mut keys: BTreeSet<MetricKey> = self.meta.metric_keys(since).await?.into_iter().collect();
        for by_dims in self.lock().minutes.range(since..).map(|(_, v)| v) {
            for (d, series) in by_dims {
                let has_data = METRICS.iter().zip(series).filter(|(_, s)| s.sample_count > 0.0);
                keys.extend(has_data.map(|((metric, _), _)| d.key(metric)));
            }
        }
        Ok(keys.iter().map(|k| (k.metric.clone(), Dimensions::of_key(k))).collect())
    }

    /// Requests and GB-seconds per function and day, and their price.
    pub async fn usage(&self, q: &UsageQuery) -> Result<UsageReport, MetricsError> {
        let rows = self.meta.usage_rows(q.function.as_deref(), q.start_ms, q.end_ms).await?;
        // A report of one function has no tasks in it.
        let tasks = match q.function {
            Some(_) => Vec::new(),
            None => self.meta.task_usage(q.start_ms, q.end_ms).await?,
        };
        // The free tier is the node's, per calendar month: what its use
        // before the window, in the window's first month, took of it.
        let month_start = usage::month_start_ms(q.start_ms);
        let earlier = match q.free_tier && month_start < q.start_ms {
            true => self.meta.usage_rows(None, month_start, q.start_ms).await?,
            false => Vec::new(),
        };
        let prices = &self.settings.prices;
        let mut report = usage::report(&rows, &earlier, &tasks, prices, q.free_tier);
        if q.free_tier && q.function.is_some() {
            // One function's share of what the node's window took of the
            // free tier, in proportion to its cost: the functions' reports
            // add up to the node's.
            let all = self.meta.usage_rows(None, q.start_ms, q.end_ms).await?;
            let node = usage::report(&all, &earlier, &[], prices, true);
            let share = if node.gross_cost > 0.0 { report.gross_cost / node.gross_cost } else { 0.0 };
            // A node whose use the tier covers whole covers each function
            // whole, exactly: its credit and cost are sums of the same
            // figures in another order, equal but for rounding.
            report.free_tier_credit = match node.cost <= node.gross_cost * 1e-9 {
                true => report.gross_cost,
                false => (node.free_tier_credit * share).min(report.gross_cost),
            };
            report.cost = (report.gross_cost - report.free_tier_credit).max(0.0);
        }
        Ok(report)
    }
}

fn metric_index(metric: &str) -> Option<usize> {
    METRICS.iter().position(|(m, _)| *m == metric)
}

/// A period GetMetricStatistics accepts: 1, 5, 10, 20, 30 or a multiple of 60.
pub fn check_period(period_s: u32) -> Result<(), MetricsError> {
    if period_s == 0 || (!period_s.is_multiple_of(60) && ![1, 5, 10, 20, 30].contains(&period_s)) {
        return Err(MetricsError::InvalidParameterValue(
            "The parameter Period must be 1, 5, 10, 20, 30, or a multiple of 60.".into(),
        ));
    }
    Ok(())
}

/// Times past which a range is cut: no sample is older than the epoch or
/// newer than the year 9999, and arithmetic on the times stays in range.
const LAST_MS: i64 = 253_402_300_799_999;

/// Refuses ranges of more than `limit` periods, with AWS's message.
pub fn check_datapoints(period_s: u32, start_ms: i64, end_ms: i64, limit: i64) -> Result<(), MetricsError> {
    let period_ms = i64::from(period_s.max(1)) * 1000;
    let span = end_ms.clamp(0, LAST_MS) - start_ms.clamp(0, LAST_MS);
    let n = (span.max(0) as u64).div_ceil(period_ms as u64) as i64;
    if n > limit {
        return Err(too_many_datapoints(n, limit));
    }
    Ok(())
}

/// AWS's refusal of a query over `n` datapoints when `limit` are allowed.
fn too_many_datapoints(n: i64, limit: i64) -> MetricsError {
    MetricsError::InvalidParameterCombination(format!(
        "You have requested up to {} datapoints, which exceeds the limit of {}. You may reduce the datapoints \
         requested by increasing Period, or decreasing the time range.",
        thousands(n),
        thousands(limit)
    ))
}

fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Flushes finished minutes as each minute ends and deletes expired ones;
/// sleeps while nothing is recorded and nothing expires. Ends with the engine.
async fn run_flusher(weak: std::sync::Weak<Metrics>) {
    loop {
        let Some(m) = weak.upgrade() else { return };
        let clock = m.settings.clock;
        let now = clock.now_ms();
        let this_minute = now.div_euclid(MINUTE_MS) * MINUTE_MS;
        if let Err(e) = m.flush_before(this_minute).await {
            tracing::error!(error = %e, "cannot store metrics; will retry next minute");
        }
        let retention_ms = m.settings.retention.as_millis() as i64;
        if let Err(e) = m.meta.prune_metrics(now - retention_ms).await {
            tracing::error!(error = %e, "cannot delete expired metrics");
        }
        let mut due: Vec<i64> = Vec::new();
        if !m.lock().minutes.is_empty() {
            due.push(this_minute + MINUTE_MS);
        }
        match m.meta.oldest_metric_minute().await {
            Ok(Some(oldest)) => due.push(oldest + retention_ms + MINUTE_MS),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read metrics' retention"),
        }
        let wait = due.into_iter().min().map(|t| clock.until(t));
        let wake = m.wake.clone();
        let notified = wake.notified();
        drop(m);
        // The engine may go meanwhile; a weak reference lets it.
        match wait {
            Some(w) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(w) => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests;
