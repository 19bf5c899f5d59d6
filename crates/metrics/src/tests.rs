use std::sync::Arc;

use nimbus_store::{InvocationRecord, Metadata, SqliteMetadata};

use super::*;

async fn engine() -> (tempfile::TempDir, Arc<SqliteMetadata>, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
    let m = Metrics::start(meta.clone(), Settings::default());
    (dir, meta, m)
}

/// An invocation that ran alone.
fn one() -> Concurrency {
    Concurrency { account: 1, function: 1, unreserved: 1 }
}

fn target(q: Option<&str>, v: &str) -> Target {
    Target { function: "f".into(), qualifier: q.map(str::to_string), executed_version: v.into() }
}

fn query(metric: &str, dimensions: Dimensions, stat: &str, now: i64) -> SeriesQuery {
    SeriesQuery {
        metric: metric.into(),
        dimensions,
        stat: stat.into(),
        // One period holds the whole range: a test may cross a minute.
        period_s: 3600,
        start_ms: now - 5 * MINUTE_MS,
        end_ms: now + MINUTE_MS,
    }
}

#[tokio::test]
async fn samples_count_towards_their_dimension_sets_before_and_after_a_flush() {
    let (_dir, _meta, m) = engine().await;
    for i in 1..=100 {
        m.invoked(&target(None, "$LATEST"), one(), f64::from(i), i % 10 == 0, (i == 1).then_some(250.0));
    }
    m.invoked(&target(Some("live"), "3"), one(), 7.0, false, None);
    m.throttled(&target(None, "$LATEST"));
    let now = Clock::real().now_ms();
    let f = Dimensions::function("f");
    let check = |m: Arc<Metrics>, f: Dimensions| async move {
        let one = |points: Vec<(i64, f64)>| {
            assert_eq!(points.len(), 1, "{points:?}");
            points[0].1
        };
        assert_eq!(one(m.series(&query("Invocations", f.clone(), "Sum", now)).await.unwrap()), 101.0);
        assert_eq!(one(m.series(&query("Errors", f.clone(), "Sum", now)).await.unwrap()), 10.0);
        assert_eq!(one(m.series(&query("Throttles", f.clone(), "Sum", now)).await.unwrap()), 1.0);
        assert_eq!(one(m.series(&query("Invocations", Dimensions::default(), "Sum", now)).await.unwrap()), 101.0);
        let p99 = one(m.series(&query("Duration", f.clone(), "p99", now)).await.unwrap());
        assert!((98.0..=101.0).contains(&p99), "{p99}");
        let alias = Dimensions { resource: Some("f:live".into()), ..f.clone() };
        assert_eq!(one(m.series(&query("Invocations", alias.clone(), "Sum", now)).await.unwrap()), 1.0);
        let ran = Dimensions { executed_version: Some("3".into()), ..alias };
        assert_eq!(one(m.series(&query("Duration", ran, "Maximum", now)).await.unwrap()), 7.0);
    };
    check(m.clone(), f.clone()).await;
    m.flush().await.unwrap();
    assert!(m.lock().minutes.is_empty());
    check(m.clone(), f.clone()).await;
    let text = m.prometheus(Vec::new()).await.unwrap();
    for line in [
        "nimbus_lambda_invocations_total{function=\"f\"} 101",
        "nimbus_lambda_errors_total{function=\"f\"} 10",
        "nimbus_lambda_throttles_total{function=\"f\"} 1",
        "nimbus_lambda_cold_starts_total{function=\"f\"} 1",
        "nimbus_lambda_init_duration_seconds_count{function=\"f\"} 1",
        "nimbus_store_write_seconds_count{writer=\"metrics\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    let listed = m.list(false).await.unwrap();
    assert!(listed.contains(&("Throttles".to_string(), f.clone())));
    assert!(listed.contains(&("Invocations".to_string(), Dimensions::default())));
}

#[tokio::test]
async fn concurrency_is_what_ran_when_an_invocation_was_admitted() {
    let (_dir, _meta, m) = engine().await;
    m.throttled(&target(None, "$LATEST"));
    let now = Clock::real().now_ms();
    assert_eq!(m.series(&query("Invocations", Dimensions::function("f"), "Sum", now)).await.unwrap(), vec![]);
    // Two of f and one of a reserved function at once, then f alone.
    m.invoked(&target(None, "$LATEST"), Concurrency { account: 3, function: 2, unreserved: 2 }, 1.0, false, None);
    let text = m.prometheus(Vec::new()).await.unwrap();
    assert!(text.contains("\nnimbus_async_events_queued 0.0\n"), "{text}");
    m.invoked(&target(None, "$LATEST"), one(), 1.0, false, None);
    let stat = |metric: &str, d: Dimensions, s: &str| {
        let m = m.clone();
        let q = query(metric, d, s, now);
        async move { m.series(&q).await.unwrap()[0].1 }
    };
    assert_eq!(stat("ConcurrentExecutions", Dimensions::default(), "Maximum").await, 3.0);
    assert_eq!(stat("ConcurrentExecutions", Dimensions::function("f"), "Maximum").await, 2.0);
    assert_eq!(stat("ConcurrentExecutions", Dimensions::function("f"), "Minimum").await, 1.0);
    assert_eq!(stat("UnreservedConcurrentExecutions", Dimensions::default(), "Maximum").await, 2.0);
}

#[tokio::test]
async fn bad_queries_are_refused_with_aws_messages() {
    let (_dir, _meta, m) = engine().await;
    let now = Clock::real().now_ms();
    let mut q = query("Invocations", Dimensions::default(), "Sum", now);
    q.period_s = 61;
    assert!(matches!(m.series(&q).await, Err(MetricsError::InvalidParameterValue(_))));
    q.period_s = 60;
    q.start_ms = q.end_ms - 2 * 24 * 3600 * 1000 - 1;
    let e = m.series(&q).await.unwrap_err().to_string();
    assert!(e.starts_with("You have requested up to 2,881 datapoints, which exceeds the limit of 1,440."), "{e}");
    q.start_ms = q.end_ms;
    assert!(matches!(m.series(&q).await, Err(MetricsError::InvalidParameterValue(_))));
    q.start_ms = now - MINUTE_MS;
    q.stat = "p100.5".into();
    assert!(matches!(m.series(&q).await, Err(MetricsError::InvalidParameterValue(_))));
}

#[tokio::test]
async fn usage_adds_up_billed_milliseconds_and_prices_them() {
    let (_dir, meta, m) = engine().await;
    let day = 1_700_000_000_000 / 86_400_000 * 86_400_000;
    let rec = |id: &str, f: &str, arch: &str, billed: u64, mem: u32, at: i64| InvocationRecord {
        request_id: id.into(),
        function: f.into(),
        version: "$LATEST".into(),
        cold: false,
        init_ms: None,
        duration_ms: billed as f64 - 0.5,
        billed_ms: billed,
        memory_mb: mem,
        architecture: arch.into(),
        max_memory_mb: 30,
        outcome: "success".into(),
        timestamp_ms: at,
    };
    let records = [
        rec("1", "a", "x86_64", 3, 128, day + 10),
        rec("2", "a", "x86_64", 1001, 1024, day + 20),
        rec("3", "a", "x86_64", 5, 128, day + 86_400_000),
        rec("4", "b", "arm64", 2000, 2048, day + 30),
    ];
    meta.record_invocations(&records, &[]).await.unwrap();
    let q = UsageQuery { function: None, start_ms: day, end_ms: day + 2 * 86_400_000, free_tier: false };
    let r = m.usage(&q).await.unwrap();
    assert_eq!(r.requests, 4);
    assert_eq!(r.billed_ms, 3 + 1001 + 5 + 2000);
    assert_eq!(r.functions.len(), 3);
    let first = &r.functions[0];
    assert_eq!((first.function.as_str(), first.requests, first.mb_ms), ("a", 2, 3 * 128 + 1001 * 1024));
    assert_eq!(r.functions[2].gb_seconds, 4.0);
    let expected = 3.0 * 0.2e-6
        + (3.0 * 128.0 + 1001.0 * 1024.0 + 5.0 * 128.0) / 1024e3 * 0.000_016_666_7
        + 0.2e-6
        + 4.0 * 0.000_013_333_4;
    assert!((r.gross_cost - expected).abs() < 1e-12, "{} vs {expected}", r.gross_cost);
    assert_eq!(r.cost, r.gross_cost);
    let free = m.usage(&UsageQuery { free_tier: true, ..q.clone() }).await.unwrap();
    assert!((free.free_tier_credit - free.gross_cost).abs() < 1e-12);
    assert_eq!(free.cost, 0.0);
    let only_b = m.usage(&UsageQuery { function: Some("b".into()), ..q }).await.unwrap();
    assert_eq!((only_b.requests, only_b.functions[0].day.as_str()), (1, "2023-11-14"));
}

/// Polls until `f` holds, for at most ten seconds of real time.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn finished_minutes_are_flushed_and_expire_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
    // A minute of this clock passes in 50 ms.
    let clock = Clock::scaled(Clock::real().now_ms(), 1200);
    // A day's retention first: the flushed rows stay for the test to see
    // (with a short one they could expire between two looks).
    let keep = Settings { retention: Duration::from_secs(86_400), clock, prices: Prices::default() };
    let m = Metrics::start(meta.clone(), keep);
    m.throttled(&target(None, "$LATEST"));
    let stored = || {
        let meta = meta.clone();
        async move { meta.metric_keys(0).await.unwrap().len() }
    };
    eventually("the minute to be flushed", || async { stored().await == 2 }).await;
    assert!(m.lock().minutes.is_empty());
    // An engine that keeps three minutes (150 ms) expires them.
    let short = Settings { retention: Duration::from_secs(180), clock, prices: Prices::default() };
    let _expiring = Metrics::start(meta.clone(), short);
    eventually("the rows to expire", || async { stored().await == 0 }).await;
}
