//! EventBridge Scheduler's state ([`ScheduleMeta`]): schedule groups,
//! schedules with the times the timer orders them by, and the firings
//! waiting for a retry. A firing is recorded in one transaction with what it
//! produced (the async event it queued, the retry it needs, or the
//! schedule's deletion), so a crash can neither lose nor repeat one: the
//! outbox, as for bucket notifications.
//!
//! Every write transaction here begins IMMEDIATE (see `objects`).

use async_trait::async_trait;
use nimbus_core::schedules::{Schedule, ScheduleGroup};
use sqlx::Row;

use crate::sqlite::insert_events;
use crate::sqlite::{parse, parse_all, SqliteMetadata};
use crate::{AsyncEvent, Result};

/// A schedule and its place on the timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub schedule: Schedule,
    pub times: DueTimes,
}

/// When a schedule is next due and when the timer fires it; `None` when
/// nothing is due (disabled, or no due time left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DueTimes {
    pub due_ms: Option<i64>,
    pub fire_ms: Option<i64>,
}

/// A firing whose target could not be invoked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRetry {
    pub execution_id: String,
    pub group: String,
    pub name: String,
    pub scheduled_ms: i64,
    pub attempts: u32,
    pub not_before_ms: i64,
}

/// What a firing (or a retry of one) changes, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub group: String,
    pub name: String,
    pub schedule: After,
    /// The async event that delivers it, when the target could be invoked.
    pub event: Option<AsyncEvent>,
    /// A retry row to write (insert or replace).
    pub retry: Option<ScheduleRetry>,
    /// A retry row that is done (delivered or given up).
    pub retry_done: Option<String>,
}

/// What becomes of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Unchanged,
    Next(DueTimes),
    /// Completed with ActionAfterCompletion DELETE: deleted once no other
    /// firing of it waits for a retry (until then, left with nothing due).
    Delete,
}

#[async_trait]
pub trait ScheduleMeta: Send + Sync {
    /// Creates a group; false if one of that name exists.
    async fn create_schedule_group(&self, g: &ScheduleGroup) -> Result<bool>;
    async fn get_schedule_group(&self, name: &str) -> Result<Option<ScheduleGroup>>;
    /// Stored groups whose names start with `prefix` and sort after `after`, by name.
    async fn list_schedule_groups(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<ScheduleGroup>>;
    async fn put_schedule_group(&self, g: &ScheduleGroup) -> Result<()>;
    /// Deletes a group with its schedules and their retries; false if it did not exist.
    async fn delete_schedule_group(&self, name: &str) -> Result<bool>;

    /// Inserts a schedule; false, storing nothing, if one of that group and name exists.
    async fn create_schedule(&self, row: &ScheduleRow) -> Result<bool>;
    /// Replaces a schedule; false, storing nothing, if it does not exist.
    async fn replace_schedule(&self, row: &ScheduleRow) -> Result<bool>;
    async fn get_schedule(&self, group: &str, name: &str) -> Result<Option<ScheduleRow>>;
    /// Deletes a schedule and its retries; false if it did not exist.
    async fn delete_schedule(&self, group: &str, name: &str) -> Result<bool>;
    /// Schedules in (group, name) order after `after`, optionally of one
    /// group and state, whose names start with `prefix`.
    async fn list_schedules(
        &self,
        group: Option<&str>,
        prefix: &str,
        enabled: Option<bool>,
        after: (&str, &str),
        limit: usize,
    ) -> Result<Vec<Schedule>>;

    /// The earliest time a schedule fires or a retry is due, if any.
    async fn next_schedule_wake(&self) -> Result<Option<i64>>;
    /// Schedules that fire at `now_ms` or earlier, earliest first.
    async fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<ScheduleRow>>;
    /// Retries due at `now_ms` or earlier, earliest first.
    async fn due_schedule_retries(&self, now_ms: i64, limit: usize) -> Result<Vec<ScheduleRetry>>;
    /// Records a firing and what it produced, in one transaction.
    async fn record_firing(&self, f: &Firing) -> Result<()>;
}

fn retry_from(r: &sqlx::sqlite::SqliteRow) -> ScheduleRetry {
    ScheduleRetry {
        execution_id: r.get("execution_id"),
        group: r.get("group_name"),
        name: r.get("name"),
        scheduled_ms: r.get("scheduled_ms"),
        attempts: r.get::<i64, _>("attempts") as u32,
        not_before_ms: r.get("not_before_ms"),
    }
}

fn row_from(r: &sqlx::sqlite::SqliteRow) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        schedule: parse(r.get::<&str, _>("doc"))?,
        times: DueTimes { due_ms: r.get("due_ms"), fire_ms: r.get("fire_ms") },
    })
}

async fn delete_retries_of(tx: &mut sqlx::SqliteConnection, group: &str, name: Option<&str>) -> Result<()> {
    sqlx::query("DELETE FROM schedule_retries WHERE group_name = ? AND (? IS NULL OR name = ?)")
        .bind(group)
        .bind(name)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl ScheduleMeta for SqliteMetadata {
    async fn create_schedule_group(&self, g: &ScheduleGroup) -> Result<bool> {
        let done = sqlx::query("INSERT INTO schedule_groups (name, doc) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(&g.name)
            .bind(serde_json::to_string(g)?)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_schedule_group(&self, name: &str) -> Result<Option<ScheduleGroup>> {
        let row = sqlx::query("SELECT doc FROM schedule_groups WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn list_schedule_groups(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<ScheduleGroup>> {
        let rows = sqlx::query(
            "SELECT doc FROM schedule_groups WHERE name > ? AND substr(name, 1, length(?)) = ? ORDER BY name LIMIT ?",
        )
        .bind(after)
        .bind(prefix)
        .bind(prefix)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        parse_all(&rows)
    }

    async fn put_schedule_group(&self, g: &ScheduleGroup) -> Result<()> {
        sqlx::query("UPDATE schedule_groups SET doc = ? WHERE name = ?")
            .bind(serde_json::to_string(g)?)
            .bind(&g.name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_schedule_group(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("DELETE FROM schedule_groups WHERE name = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM schedules WHERE group_name = ?").bind(name).execute(&mut *tx).await?;
        delete_retries_of(&mut tx, name, None).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let s = &row.schedule;
        let done = sqlx::query(
            "INSERT INTO schedules (group_name, name, doc, due_ms, fire_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(group_name, name) DO NOTHING",
        )
        .bind(&s.group)
        .bind(&s.name)
        .bind(serde_json::to_string(s)?)
        .bind(row.times.due_ms)
        .bind(row.times.fire_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let s = &row.schedule;
        let done =
            sqlx::query("UPDATE schedules SET doc = ?, due_ms = ?, fire_ms = ? WHERE group_name = ? AND name = ?")
                .bind(serde_json::to_string(s)?)
                .bind(row.times.due_ms)
                .bind(row.times.fire_ms)
                .bind(&s.group)
                .bind(&s.name)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_schedule(&self, group: &str, name: &str) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query("SELECT doc, due_ms, fire_ms FROM schedules WHERE group_name = ? AND name = ?")
            .bind(group)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(row_from).transpose()
    }

    async fn delete_schedule(&self, group: &str, name: &str) -> Result<bool> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("DELETE FROM schedules WHERE group_name = ? AND name = ?")
            .bind(group)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        delete_retries_of(&mut tx, group, Some(name)).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_schedules(
        &self,
        group: Option<&str>,
        prefix: &str,
        enabled: Option<bool>,
        after: (&str, &str),
        limit: usize,
    ) -> Result<Vec<Schedule>> {
        let rows = sqlx::query(
            "SELECT doc FROM schedules
             WHERE (group_name, name) > (?, ?) AND (? IS NULL OR group_name = ?)
               AND substr(name, 1, length(?)) = ?
               AND (? IS NULL OR json_extract(doc, '$.enabled') = ?)
             ORDER BY group_name, name LIMIT ?",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(group)
        .bind(group)
        .bind(prefix)
        .bind(prefix)
        .bind(enabled)
        .bind(enabled)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        parse_all(&rows)
    }

    async fn next_schedule_wake(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(t) AS t FROM (SELECT MIN(fire_ms) AS t FROM schedules
             UNION ALL SELECT MIN(not_before_ms) FROM schedule_retries)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(row.get("t"))
    }

    async fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<ScheduleRow>> {
        let rows =
            sqlx::query("SELECT doc, due_ms, fire_ms FROM schedules WHERE fire_ms <= ? ORDER BY fire_ms LIMIT ?")
                .bind(now_ms)
                .bind(limit as i64)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(row_from).collect()
    }

    async fn due_schedule_retries(&self, now_ms: i64, limit: usize) -> Result<Vec<ScheduleRetry>> {
        let rows =
            sqlx::query("SELECT * FROM schedule_retries WHERE not_before_ms <= ? ORDER BY not_before_ms LIMIT ?")
                .bind(now_ms)
                .bind(limit as i64)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.iter().map(retry_from).collect())
    }

    async fn record_firing(&self, f: &Firing) -> Result<()> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        match &f.schedule {
            After::Unchanged => {}
            After::Next(t) => {
                sqlx::query("UPDATE schedules SET due_ms = ?, fire_ms = ? WHERE group_name = ? AND name = ?")
                    .bind(t.due_ms)
                    .bind(t.fire_ms)
                    .bind(&f.group)
                    .bind(&f.name)
                    .execute(&mut *tx)
                    .await?;
            }
            After::Delete => {}
        }
        if let Some(id) = &f.retry_done {
            sqlx::query("DELETE FROM schedule_retries WHERE execution_id = ?").bind(id).execute(&mut *tx).await?;
        }
        if f.schedule == After::Delete {
            // Other firings still retrying keep the schedule (completed:
            // nothing more is due) until the last of them is done.
            let left: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM schedule_retries WHERE group_name = ? AND name = ?")
                    .bind(&f.group)
                    .bind(&f.name)
                    .fetch_one(&mut *tx)
                    .await?;
            let sql = if left == 0 {
                "DELETE FROM schedules WHERE group_name = ? AND name = ?"
            } else {
                "UPDATE schedules SET due_ms = NULL, fire_ms = NULL WHERE group_name = ? AND name = ?"
            };
            sqlx::query(sql).bind(&f.group).bind(&f.name).execute(&mut *tx).await?;
        }
        if let Some(r) = &f.retry {
            sqlx::query(
                "INSERT OR REPLACE INTO schedule_retries
                 (execution_id, group_name, name, scheduled_ms, attempts, not_before_ms)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.execution_id)
            .bind(&r.group)
            .bind(&r.name)
            .bind(r.scheduled_ms)
            .bind(i64::from(r.attempts))
            .bind(r.not_before_ms)
            .execute(&mut *tx)
            .await?;
        }
        insert_events(&mut tx, f.event.as_slice()).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nimbus_core::schedules::Target;

    use crate::Metadata;

    use super::*;

    fn schedule(group: &str, name: &str, enabled: bool) -> Schedule {
        Schedule {
            group: group.into(),
            name: name.into(),
            arn: format!("arn:aws:scheduler:us-east-1:123456789012:schedule/{group}/{name}"),
            description: None,
            expression: "rate(1 minute)".into(),
            timezone: "UTC".into(),
            start_ms: None,
            end_ms: None,
            enabled,
            flexible_window_minutes: None,
            action_after_completion: None,
            target: Target {
                arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
                role_arn: "arn:aws:iam::123456789012:role/r".into(),
                input: None,
                max_event_age_seconds: 86_400,
                max_retry_attempts: 185,
                dead_letter_arn: None,
            },
            created_ms: 0,
            modified_ms: 0,
            client_token: None,
        }
    }

    fn at(due: i64) -> DueTimes {
        DueTimes { due_ms: Some(due), fire_ms: Some(due) }
    }

    #[tokio::test]
    async fn a_firing_and_its_event_commit_together_and_the_timer_sees_the_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let m = SqliteMetadata::open(&db).await.unwrap();
        assert!(m
            .create_schedule(&ScheduleRow { schedule: schedule("default", "a", true), times: at(100) })
            .await
            .unwrap());
        assert!(!m
            .create_schedule(&ScheduleRow { schedule: schedule("default", "a", true), times: at(5) })
            .await
            .unwrap());
        assert_eq!(m.next_schedule_wake().await.unwrap(), Some(100));
        assert!(m.due_schedules(99, 10).await.unwrap().is_empty());
        assert_eq!(m.due_schedules(100, 10).await.unwrap().len(), 1);
        let event = AsyncEvent {
            id: "e1".into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            attempts: 0,
            not_before_ms: 100,
            created_ms: 100,
            lineage: 0,
        };
        let fired = Firing {
            group: "default".into(),
            name: "a".into(),
            schedule: After::Next(at(160)),
            event: Some(event.clone()),
            retry: None,
            retry_done: None,
        };
        m.record_firing(&fired).await.unwrap();
        // A duplicate event id fails the whole transaction: the schedule does not move.
        let again = Firing { schedule: After::Next(at(220)), ..fired };
        assert!(m.record_firing(&again).await.is_err());
        drop(m);
        let m = SqliteMetadata::open(&db).await.unwrap();
        assert_eq!(m.get_schedule("default", "a").await.unwrap().unwrap().times, at(160));
        assert_eq!(m.due_events(1000, 10).await.unwrap(), vec![event]);
    }

    #[tokio::test]
    async fn retries_wake_the_timer_and_go_with_their_schedule_or_group() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let g = ScheduleGroup {
            name: "g".into(),
            arn: "arn".into(),
            created_ms: 0,
            modified_ms: 0,
            tags: Default::default(),
            client_token: None,
        };
        assert!(m.create_schedule_group(&g).await.unwrap());
        m.create_schedule(&ScheduleRow { schedule: schedule("g", "a", true), times: DueTimes::default() })
            .await
            .unwrap();
        m.create_schedule(&ScheduleRow { schedule: schedule("g", "b", false), times: at(500) }).await.unwrap();
        let retry = ScheduleRetry {
            execution_id: "x".into(),
            group: "g".into(),
            name: "a".into(),
            scheduled_ms: 10,
            attempts: 1,
            not_before_ms: 40,
        };
        let firing = Firing {
            group: "g".into(),
            name: "a".into(),
            schedule: After::Unchanged,
            event: None,
            retry: Some(retry.clone()),
            retry_done: None,
        };
        m.record_firing(&firing).await.unwrap();
        assert_eq!(m.next_schedule_wake().await.unwrap(), Some(40));
        assert_eq!(m.due_schedule_retries(40, 10).await.unwrap(), vec![retry]);
        let names = |v: Vec<Schedule>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(m.list_schedules(Some("g"), "", Some(false), ("", ""), 10).await.unwrap()), ["b"]);
        assert_eq!(names(m.list_schedules(None, "", None, ("g", "a"), 10).await.unwrap()), ["b"]);
        assert!(m.delete_schedule("g", "a").await.unwrap());
        assert_eq!(m.next_schedule_wake().await.unwrap(), Some(500));
        assert!(m.delete_schedule_group("g").await.unwrap());
        assert_eq!(m.next_schedule_wake().await.unwrap(), None);
        assert!(m.get_schedule("g", "b").await.unwrap().is_none());
    }
}
