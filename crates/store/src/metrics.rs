//! CloudWatch metrics' state ([`MetricsMeta`]): one-minute statistic sets
//! of the AWS/Lambda namespace, as `nimbus-metrics` flushes them, and the
//! per-day sums of the invocation records that usage reports price.
//!
//! This module keeps and reads rows; what a statistic set means (merging,
//! percentiles, periods) is `nimbus-metrics`'.

use async_trait::async_trait;
use sqlx::Row;

use crate::sqlite::SqliteMetadata;
use crate::Result;

/// The statistic set of one metric, dimension set and minute.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub metric: String,
    /// `FunctionName`, `Resource` and `ExecutedVersion`; '' when absent.
    pub function: String,
    pub resource: String,
    pub executed_version: String,
    pub minute_ms: i64,
    pub sample_count: f64,
    pub sum: f64,
    pub minimum: f64,
    pub maximum: f64,
    /// The samples' log-scale histogram, encoded by `nimbus-metrics`.
    pub histogram: String,
}

/// One metric and dimension set that has data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    pub metric: String,
    pub function: String,
    pub resource: String,
    pub executed_version: String,
}

/// Invocation records of one function, UTC day, architecture and memory size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub function: String,
    /// Milliseconds since the epoch of the day's midnight (UTC).
    pub day_ms: i64,
    pub architecture: String,
    pub memory_mb: u32,
    pub requests: u64,
    /// Sum of the billed milliseconds.
    pub billed_ms: u64,
}

#[async_trait]
pub trait MetricsMeta: crate::TaskUsageMeta + Send + Sync {
    /// Appends flushed minutes in one transaction.
    async fn insert_metric_rows(&self, rows: &[MetricRow]) -> Result<()>;
    /// The rows of one series with `from_ms <= minute_ms < to_ms`, by minute.
    async fn metric_rows(&self, key: &MetricKey, from_ms: i64, to_ms: i64) -> Result<Vec<MetricRow>>;
    /// Every series with a row at or after `since_ms`, sorted.
    async fn metric_keys(&self, since_ms: i64) -> Result<Vec<MetricKey>>;
    /// Deletes minutes before `before_ms`; returns how many rows went.
    async fn prune_metrics(&self, before_ms: i64) -> Result<u64>;
    /// The oldest stored minute, if any (when the retention sweep is due).
    async fn oldest_metric_minute(&self) -> Result<Option<i64>>;
    /// Events waiting in the async invocation queue (leased ones included).
    async fn queued_async_events(&self) -> Result<u64>;
    /// Invocation records with `from_ms <= timestamp_ms < to_ms`, summed per
    /// function (all when `None`), day, architecture and memory size.
    async fn usage_rows(&self, function: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRow>>;
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> MetricRow {
    MetricRow {
        metric: r.get("metric"),
        function: r.get("function"),
        resource: r.get("resource"),
        executed_version: r.get("executed_version"),
        minute_ms: r.get("minute_ms"),
        sample_count: r.get("sample_count"),
        sum: r.get("sum"),
        minimum: r.get("minimum"),
        maximum: r.get("maximum"),
        histogram: r.get("histogram"),
    }
}

#[async_trait]
impl MetricsMeta for SqliteMetadata {
    async fn insert_metric_rows(&self, rows: &[MetricRow]) -> Result<()> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO metric_minutes (metric, function, resource, executed_version, minute_ms, sample_count,
                   sum, minimum, maximum, histogram) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.metric)
            .bind(&r.function)
            .bind(&r.resource)
            .bind(&r.executed_version)
            .bind(r.minute_ms)
            .bind(r.sample_count)
            .bind(r.sum)
            .bind(r.minimum)
            .bind(r.maximum)
            .bind(&r.histogram)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn metric_rows(&self, key: &MetricKey, from_ms: i64, to_ms: i64) -> Result<Vec<MetricRow>> {
        let rows = sqlx::query(
            "SELECT * FROM metric_minutes WHERE metric = ? AND function = ? AND resource = ? AND executed_version = ?
               AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms, id",
        )
        .bind(&key.metric)
        .bind(&key.function)
        .bind(&key.resource)
        .bind(&key.executed_version)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(row_of).collect())
    }

    async fn metric_keys(&self, since_ms: i64) -> Result<Vec<MetricKey>> {
        let rows = sqlx::query(
            "SELECT DISTINCT metric, function, resource, executed_version FROM metric_minutes WHERE minute_ms >= ?
               ORDER BY metric, function, resource, executed_version",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| MetricKey {
                metric: r.get("metric"),
                function: r.get("function"),
                resource: r.get("resource"),
                executed_version: r.get("executed_version"),
            })
            .collect())
    }

    async fn prune_metrics(&self, before_ms: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM metric_minutes WHERE minute_ms < ?").bind(before_ms).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    async fn oldest_metric_minute(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(minute_ms) FROM metric_minutes").fetch_one(self.pool()).await?)
    }

    async fn queued_async_events(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM async_events").fetch_one(self.pool()).await?;
        Ok(n as u64)
    }

    async fn usage_rows(&self, function: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT function, (timestamp_ms / 86400000) * 86400000 AS day_ms, architecture, memory_mb,
                    COUNT(*) AS requests, SUM(billed_ms) AS billed_ms
               FROM invocations
              WHERE timestamp_ms >= ? AND timestamp_ms < ? AND (? IS NULL OR function = ?)
              GROUP BY function, day_ms, architecture, memory_mb
              ORDER BY function, day_ms, architecture, memory_mb",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(function)
        .bind(function)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| UsageRow {
                function: r.get("function"),
                day_ms: r.get("day_ms"),
                architecture: r.get("architecture"),
                memory_mb: r.get::<i64, _>("memory_mb") as u32,
                requests: r.get::<i64, _>("requests") as u64,
                billed_ms: r.get::<i64, _>("billed_ms") as u64,
            })
            .collect())
    }
}
