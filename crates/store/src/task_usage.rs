//! Metered ECS tasks ([`TaskUsageMeta`]): one row per stopped task with
//! the vCPU-seconds and GB-seconds it is billed, as `nimbus-containers`
//! works them out. The store keeps and ranges over them; it does not
//! compute them.

use async_trait::async_trait;
use sqlx::Row;

use crate::sqlite::SqliteMetadata;
use crate::Result;

/// One stopped task's bill.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUsage {
    pub task_arn: String,
    pub cluster_arn: String,
    pub family: String,
    pub cpu_units: u32,
    pub memory_mib: u32,
    pub started_ms: i64,
    pub stopped_ms: i64,
    pub billed_seconds: i64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
}

#[async_trait]
pub trait TaskUsageMeta: Send + Sync {
    /// Records (or records again, with the same figures) tasks' bills.
    async fn put_task_usage(&self, rows: &[TaskUsage]) -> Result<()>;
    /// The bills of tasks that stopped in `[from_ms, to_ms)`, by stop time.
    async fn task_usage(&self, from_ms: i64, to_ms: i64) -> Result<Vec<TaskUsage>>;
}

#[async_trait]
impl TaskUsageMeta for SqliteMetadata {
    async fn put_task_usage(&self, rows: &[TaskUsage]) -> Result<()> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for u in rows {
            sqlx::query(
                "INSERT OR REPLACE INTO ecs_task_usage (task_arn, cluster_arn, family, cpu_units, memory_mib, \
                 started_ms, stopped_ms, billed_seconds, vcpu_seconds, gb_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.task_arn)
            .bind(&u.cluster_arn)
            .bind(&u.family)
            .bind(u.cpu_units)
            .bind(u.memory_mib)
            .bind(u.started_ms)
            .bind(u.stopped_ms)
            .bind(u.billed_seconds)
            .bind(u.vcpu_seconds)
            .bind(u.gb_seconds)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn task_usage(&self, from_ms: i64, to_ms: i64) -> Result<Vec<TaskUsage>> {
        let rows = sqlx::query(
            "SELECT * FROM ecs_task_usage WHERE stopped_ms >= ? AND stopped_ms < ? ORDER BY stopped_ms, task_arn",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TaskUsage {
                task_arn: r.get("task_arn"),
                cluster_arn: r.get("cluster_arn"),
                family: r.get("family"),
                cpu_units: r.get("cpu_units"),
                memory_mib: r.get("memory_mib"),
                started_ms: r.get("started_ms"),
                stopped_ms: r.get("stopped_ms"),
                billed_seconds: r.get("billed_seconds"),
                vcpu_seconds: r.get("vcpu_seconds"),
                gb_seconds: r.get("gb_seconds"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(arn: &str, stopped_ms: i64) -> TaskUsage {
        TaskUsage {
            task_arn: arn.into(),
            cluster_arn: "c".into(),
            family: "web".into(),
            cpu_units: 256,
            memory_mib: 512,
            started_ms: 0,
            stopped_ms,
            billed_seconds: 60,
            vcpu_seconds: 15.0,
            gb_seconds: 30.0,
        }
    }

    #[tokio::test]
    async fn rows_are_ranged_by_stop_time_and_rewriting_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        meta.put_task_usage(&[row("a", 1_000), row("b", 2_000), row("c", 3_000)]).await.unwrap();
        meta.put_task_usage(&[row("b", 2_000)]).await.unwrap();
        let got = meta.task_usage(1_000, 3_000).await.unwrap();
        assert_eq!(got.iter().map(|r| r.task_arn.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(got[1], row("b", 2_000));
    }
}
