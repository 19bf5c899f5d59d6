//! CloudWatch Logs' state ([`LogMeta`]): log groups with their retention,
//! log streams with their first and last event times, and the events
//! themselves in the `log_events` table functions' lines go to (see
//! [`crate::Metadata::record_invocations`], which creates their groups and
//! streams as it stores them).
//!
//! Events are read in (timestamp, id) order: the id breaks ties within a
//! millisecond and is the event id. The rules (names, batch limits, paging
//! tokens, filter patterns) are `nimbus-logs`'; this module keeps and reads.
//!
//! Every write transaction here begins IMMEDIATE (see `objects`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::sqlite::SqliteMetadata;
use crate::{LogEvent, Result};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Events one step of a large delete removes. Each step is a write of its
/// own: deleting a group of a million events in one held the node's one
/// writer (every S3, SQS and Lambda write) for two seconds.
const DELETE_STEP: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupRow {
    pub name: String,
    pub created_ms: i64,
    pub retention_days: Option<u32>,
    pub tags: BTreeMap<String, String>,
}

/// What [`LogMeta::retag_log_group`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retagged {
    Done(BTreeMap<String, String>),
    /// Nothing changed: the group would have had more tags than allowed.
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamRow {
    pub group: String,
    pub name: String,
    pub created_ms: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub last_ingestion_ms: Option<i64>,
}

/// What creating a stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCreated {
    Created,
    Exists,
    NoGroup,
}

/// The order of DescribeLogStreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOrder {
    Name,
    /// Streams without events first (as the oldest), then by last event.
    LastEvent,
}

/// A page of streams: those after `after` in `order`.
#[derive(Debug, Clone)]
pub struct StreamQuery<'a> {
    pub group: &'a str,
    pub prefix: Option<&'a str>,
    pub order: StreamOrder,
    pub descending: bool,
    /// The ordering key of the last stream of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// A place between events: (timestamp, id). Ids start at 1, so `(t, 0)`
/// lies before every event of millisecond `t`.
pub type Position = (i64, i64);

/// Events of a group in time order, after (or, backward, before) a position.
#[derive(Debug, Clone)]
pub struct EventQuery<'a> {
    pub group: &'a str,
    /// Only these streams (`None`: all).
    pub streams: Option<&'a [String]>,
    pub stream_prefix: Option<&'a str>,
    /// Exclusive bounds.
    pub after: Position,
    pub before: Position,
    /// Read from `before` down (the result is still oldest first).
    pub backward: bool,
    /// Only events containing every one of these (a cheap pre-filter; the
    /// caller still decides what matches).
    pub contains: &'a [String],
    pub limit: usize,
    /// Stop once the messages read add up to this many bytes (the event
    /// that reaches it included): at most this much more is held than a
    /// caller keeps, however large each event is.
    pub max_bytes: usize,
}

#[async_trait]
pub trait LogMeta: Send + Sync {
    /// `false` if the group exists.
    async fn create_log_group(&self, name: &str, now_ms: i64, tags: &BTreeMap<String, String>) -> Result<bool>;
    /// Removes the group, its streams and its events; `false` if there was none.
    async fn delete_log_group(&self, name: &str) -> Result<bool>;
    async fn log_group(&self, name: &str) -> Result<Option<LogGroupRow>>;
    /// Groups after `after` in name order, whose name starts with `prefix`
    /// and contains `pattern`.
    async fn list_log_groups(
        &self,
        prefix: Option<&str>,
        pattern: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogGroupRow>>;
    /// `false` if there is no such group.
    async fn set_retention(&self, group: &str, days: Option<u32>) -> Result<bool>;
    /// Adds `add` to the group's tags and removes `remove`, in one
    /// transaction, unless the result would have more than `max` tags;
    /// answers the tags the group has after it (unchanged when over `max`),
    /// or `None` if there is no such group.
    async fn retag_log_group(
        &self,
        group: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
        max: usize,
    ) -> Result<Option<Retagged>>;
    async fn create_log_stream(&self, group: &str, name: &str, now_ms: i64) -> Result<StreamCreated>;
    /// Removes the stream and its events; `false` if there was none.
    async fn delete_log_stream(&self, group: &str, name: &str) -> Result<bool>;
    async fn log_stream(&self, group: &str, name: &str) -> Result<Option<LogStreamRow>>;
    async fn list_log_streams(&self, q: StreamQuery<'_>) -> Result<Vec<LogStreamRow>>;
    /// Stores `(timestamp, message)` events in an existing stream, in one
    /// transaction.
    /// PutLogEvents' write: `false` (nothing stored) if the stream is gone,
    /// checked in the write's transaction (a delete racing the write must
    /// not be undone by it, as the awslogs driver's writes would make the
    /// group and stream again).
    async fn append_log_events(&self, group: &str, stream: &str, events: &[(i64, String)], now_ms: i64)
        -> Result<bool>;
    async fn read_log_events(&self, q: EventQuery<'_>) -> Result<Vec<LogEvent>>;
    /// Events of these groups stored after event `after_id`, in the order
    /// they were stored (for live tails).
    async fn log_events_after(&self, groups: &[String], after_id: i64, limit: usize) -> Result<Vec<LogEvent>>;
    /// The id of the last event stored (0 if none).
    async fn last_log_event_id(&self) -> Result<i64>;
    /// Changes after every commit that stored events.
    fn log_writes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Deletes the events older than their group's retention at `now_ms`.
    async fn expire_log_events(&self, now_ms: i64) -> Result<u64>;
    /// When the oldest event under a retention expires, if any group has a
    /// retention (a group without events expires nothing before `now_ms`
    /// plus its retention).
    async fn next_log_expiry(&self, now_ms: i64) -> Result<Option<i64>>;
}

fn event_row(r: &SqliteRow) -> LogEvent {
    LogEvent {
        id: r.get("id"),
        log_group: r.get("log_group"),
        log_stream: r.get("log_stream"),
        timestamp_ms: r.get("timestamp_ms"),
        ingestion_ms: r.get("ingestion_ms"),
        message: r.get("message"),
    }
}

fn group_row(r: &SqliteRow) -> LogGroupRow {
    LogGroupRow {
        name: r.get("name"),
        created_ms: r.get("created_ms"),
        retention_days: r.get::<Option<i64>, _>("retention_days").map(|d| d as u32),
        tags: serde_json::from_str(r.get("tags")).unwrap_or_default(),
    }
}

fn stream_row(r: &SqliteRow) -> LogStreamRow {
    LogStreamRow {
        group: r.get("log_group"),
        name: r.get("name"),
        created_ms: r.get("created_ms"),
        first_event_ms: r.get("first_event_ms"),
        last_event_ms: r.get("last_event_ms"),
        last_ingestion_ms: r.get("last_ingestion_ms"),
    }
}

/// Rows of one multi-row INSERT: within SQLite's 32,766 bound parameters
/// for the widest row written that way (an invocation record's 12).
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// Stores events and records their times on their stream, creating the
/// group and stream if they are new (function logs) or keeping them.
pub(crate) async fn insert_events(tx: &mut Transaction<'_, Sqlite>, events: &[LogEvent]) -> Result<()> {
    // Many rows a statement: each statement is a round trip to SQLite's
    // thread (two thread wake-ups), which cost more than the row itself.
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO log_events (log_group, log_stream, timestamp_ms, ingestion_ms, message) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(&e.log_group)
                .push_bind(&e.log_stream)
                .push_bind(e.timestamp_ms)
                .push_bind(e.ingestion_ms)
                .push_bind(&e.message);
        });
        // Not cached: its text changes with the number of rows.
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    // (first event, last event, last ingestion) per stream; a map, as a
    // burst's batch holds a thousand new streams.
    let mut spans: BTreeMap<(&str, &str), (i64, i64, i64)> = BTreeMap::new();
    for e in events {
        let span = spans.entry((&e.log_group, &e.log_stream)).or_insert((e.timestamp_ms, e.timestamp_ms, 0));
        span.0 = span.0.min(e.timestamp_ms);
        span.1 = span.1.max(e.timestamp_ms);
        span.2 = span.2.max(e.ingestion_ms);
    }
    let spans: Vec<_> = spans.into_iter().collect();
    // A group is made with the first of its streams in the batch.
    let mut groups: Vec<(&str, i64)> = Vec::new();
    for ((group, _), (_, _, ingested)) in &spans {
        if groups.last().is_none_or(|(g, _)| g != group) {
            groups.push((group, *ingested));
        }
    }
    for chunk in groups.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::new("INSERT INTO log_groups (name, created_ms) ");
        q.push_values(chunk, |mut b, (group, ingested)| {
            b.push_bind(*group).push_bind(*ingested);
        });
        q.push(" ON CONFLICT(name) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    for chunk in spans.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO log_streams (log_group, name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms) ",
        );
        q.push_values(chunk, |mut b, ((group, stream), (first, last, ingested))| {
            b.push_bind(*group)
                .push_bind(*stream)
                .push_bind(*ingested)
                .push_bind(*first)
                .push_bind(*last)
                .push_bind(*ingested);
        });
        q.push(
            " ON CONFLICT(log_group, name) DO UPDATE SET
               first_event_ms = MIN(COALESCE(first_event_ms, excluded.first_event_ms), excluded.first_event_ms),
               last_event_ms = MAX(COALESCE(last_event_ms, excluded.last_event_ms), excluded.last_event_ms),
               last_ingestion_ms = excluded.last_ingestion_ms",
        );
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqliteMetadata {
    /// Deletes a group's events (of one stream, or older than a time) in
    /// steps of [`DELETE_STEP`], each its own transaction; how many.
    async fn delete_events_stepwise(&self, group: &str, stream: Option<&str>, before_ms: Option<i64>) -> Result<u64> {
        let mut sql = String::from("DELETE FROM log_events WHERE id IN (SELECT id FROM log_events WHERE log_group = ?");
        if stream.is_some() {
            sql.push_str(" AND log_stream = ?");
        }
        if before_ms.is_some() {
            sql.push_str(" AND timestamp_ms < ?");
        }
        sql.push_str(" LIMIT ?)");
        let mut removed = 0;
        loop {
            let mut step = sqlx::query(&sql).bind(group);
            if let Some(s) = stream {
                step = step.bind(s);
            }
            if let Some(t) = before_ms {
                step = step.bind(t);
            }
            let done = step.bind(DELETE_STEP).execute(self.pool()).await?.rows_affected();
            removed += done;
            if done < DELETE_STEP as u64 {
                return Ok(removed);
            }
        }
    }
}

#[async_trait]
impl LogMeta for SqliteMetadata {
    async fn create_log_group(&self, name: &str, now_ms: i64, tags: &BTreeMap<String, String>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO log_groups (name, created_ms, tags) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms)
        .bind(serde_json::to_string(tags)?)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_log_group(&self, name: &str) -> Result<bool> {
        // The group goes last, with what was written meanwhile: stopped
        // half way, it is still there, its delete unacknowledged.
        self.delete_events_stepwise(name, None, None).await?;
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let gone = sqlx::query("DELETE FROM log_groups WHERE name = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM log_streams WHERE log_group = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM log_events WHERE log_group = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn log_group(&self, name: &str) -> Result<Option<LogGroupRow>> {
        let row = sqlx::query("SELECT * FROM log_groups WHERE name = ?").bind(name).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(group_row))
    }

    async fn list_log_groups(
        &self,
        prefix: Option<&str>,
        pattern: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogGroupRow>> {
        let rows = sqlx::query(
            "SELECT * FROM log_groups
             WHERE name > ? AND (?2 IS NULL OR substr(name, 1, length(?2)) = ?2) AND (?3 IS NULL OR instr(name, ?3) > 0)
             ORDER BY name LIMIT ?4",
        )
        .bind(after.unwrap_or(""))
        .bind(prefix)
        .bind(pattern)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(group_row).collect())
    }

    async fn set_retention(&self, group: &str, days: Option<u32>) -> Result<bool> {
        let done = sqlx::query("UPDATE log_groups SET retention_days = ? WHERE name = ?")
            .bind(days.map(i64::from))
            .bind(group)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn retag_log_group(
        &self,
        group: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
        max: usize,
    ) -> Result<Option<Retagged>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) =
            sqlx::query("SELECT * FROM log_groups WHERE name = ?").bind(group).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let mut tags = group_row(&row).tags;
        tags.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
        for k in remove {
            tags.remove(k);
        }
        if tags.len() > max {
            return Ok(Some(Retagged::TooMany));
        }
        sqlx::query("UPDATE log_groups SET tags = ? WHERE name = ?")
            .bind(serde_json::to_string(&tags).unwrap_or_else(|_| "{}".into()))
            .bind(group)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Retagged::Done(tags)))
    }

    async fn create_log_stream(&self, group: &str, name: &str, now_ms: i64) -> Result<StreamCreated> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let has_group =
            sqlx::query("SELECT 1 FROM log_groups WHERE name = ?").bind(group).fetch_optional(&mut *tx).await?;
        if has_group.is_none() {
            return Ok(StreamCreated::NoGroup);
        }
        let done = sqlx::query(
            "INSERT INTO log_streams (log_group, name, created_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 { StreamCreated::Created } else { StreamCreated::Exists })
    }

    async fn delete_log_stream(&self, group: &str, name: &str) -> Result<bool> {
        self.delete_events_stepwise(group, Some(name), None).await?;
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let gone = sqlx::query("DELETE FROM log_streams WHERE log_group = ? AND name = ?")
            .bind(group)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM log_events WHERE log_group = ? AND log_stream = ?")
            .bind(group)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn log_stream(&self, group: &str, name: &str) -> Result<Option<LogStreamRow>> {
        let row = sqlx::query("SELECT * FROM log_streams WHERE log_group = ? AND name = ?")
            .bind(group)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(stream_row))
    }

    async fn list_log_streams(&self, q: StreamQuery<'_>) -> Result<Vec<LogStreamRow>> {
        // The ordering key: 0 for name order, else the last event time
        // (-1 for a stream without events), then the name.
        let key = match q.order {
            StreamOrder::Name => "0",
            StreamOrder::LastEvent => "COALESCE(last_event_ms, -1)",
        };
        let (cmp, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        // (A constant in ORDER BY would be read as a column number.)
        let order = match q.order {
            StreamOrder::Name => format!("name {dir}"),
            StreamOrder::LastEvent => format!("{key} {dir}, name {dir}"),
        };
        let sql = format!(
            "SELECT * FROM log_streams
             WHERE log_group = ?1 AND (?2 IS NULL OR substr(name, 1, length(?2)) = ?2)
               AND (?3 IS NULL OR ({key}, name) {cmp} (?3, ?4))
             ORDER BY {order} LIMIT ?5"
        );
        let (after_key, after_name) = q.after.map_or((None, None), |(k, n)| (Some(k), Some(n)));
        let rows = sqlx::query(&sql)
            .bind(q.group)
            .bind(q.prefix)
            .bind(after_key)
            .bind(after_name)
            .bind(q.limit as i64)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(stream_row).collect())
    }

    async fn append_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
        now_ms: i64,
    ) -> Result<bool> {
        if !self.log_space.allows("log events (PutLogEvents, tasks' awslogs)") {
            return Err(crate::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the data directory's disk is nearly full: log events are not stored",
            )));
        }
        let rows: Vec<LogEvent> = events
            .iter()
            .map(|(ts, message)| LogEvent {
                id: 0,
                log_group: group.to_string(),
                log_stream: stream.to_string(),
                timestamp_ms: *ts,
                ingestion_ms: now_ms,
                message: message.clone(),
            })
            .collect();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let there = sqlx::query("SELECT 1 FROM log_streams WHERE log_group = ? AND name = ?")
            .bind(group)
            .bind(stream)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !there {
            return Ok(false);
        }
        insert_events(&mut tx, &rows).await?;
        tx.commit().await?;
        self.logs_written.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn read_log_events(&self, q: EventQuery<'_>) -> Result<Vec<LogEvent>> {
        let dir = if q.backward { "DESC" } else { "ASC" };
        // One stream is named as such, so that its index is used.
        let single = match q.streams {
            Some([one]) => Some(one.as_str()),
            _ => None,
        };
        let sql = format!(
            "SELECT id, log_group, log_stream, timestamp_ms, COALESCE(ingestion_ms, timestamp_ms) AS ingestion_ms, message
             FROM log_events
             WHERE log_group = ?1 AND (?10 IS NULL OR log_stream = ?10)
               AND timestamp_ms >= ?2 AND (timestamp_ms > ?2 OR id > ?3)
               AND timestamp_ms <= ?4 AND (timestamp_ms < ?4 OR id < ?5)
               AND (?6 IS NULL OR log_stream IN (SELECT value FROM json_each(?6)))
               AND (?7 IS NULL OR substr(log_stream, 1, length(?7)) = ?7)
               AND (SELECT COUNT(*) FROM json_each(?8) WHERE instr(message, value) = 0) = 0
             ORDER BY timestamp_ms {dir}, id {dir} LIMIT ?9"
        );
        let streams = q.streams.map(serde_json::to_string).transpose()?;
        let contains = serde_json::to_string(q.contains)?;
        let rows = sqlx::query(&sql)
            .bind(q.group)
            .bind(q.after.0)
            .bind(q.after.1)
            .bind(q.before.0)
            .bind(q.before.1)
            .bind(streams)
            .bind(q.stream_prefix)
            .bind(contains)
            .bind(q.limit as i64)
            .bind(single);
        let mut rows = rows.fetch(self.pool());
        let (mut events, mut bytes) = (Vec::new(), 0usize);
        while let Some(row) = rows.try_next().await? {
            let event = event_row(&row);
            bytes += event.message.len();
            events.push(event);
            if bytes >= q.max_bytes {
                break;
            }
        }
        if q.backward {
            events.reverse();
        }
        Ok(events)
    }

    async fn log_events_after(&self, groups: &[String], after_id: i64, limit: usize) -> Result<Vec<LogEvent>> {
        let rows = sqlx::query(
            "SELECT id, log_group, log_stream, timestamp_ms, COALESCE(ingestion_ms, timestamp_ms) AS ingestion_ms, message
             FROM log_events WHERE id > ? AND log_group IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(serde_json::to_string(groups)?)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(event_row).collect())
    }

    async fn last_log_event_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM log_events").fetch_one(self.pool()).await?;
        Ok(row.get("id"))
    }

    fn log_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logs_written.subscribe()
    }

    async fn expire_log_events(&self, now_ms: i64) -> Result<u64> {
        let groups = sqlx::query("SELECT name, retention_days FROM log_groups WHERE retention_days IS NOT NULL")
            .fetch_all(self.pool())
            .await?;
        let mut removed = 0;
        for g in &groups {
            let name: String = g.get("name");
            let days: i64 = g.get("retention_days");
            removed += self.delete_events_stepwise(&name, None, Some(now_ms - days * DAY_MS)).await?;
        }
        Ok(removed)
    }

    async fn next_log_expiry(&self, now_ms: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(COALESCE((SELECT MIN(timestamp_ms) FROM log_events WHERE log_group = g.name), ?1)
                        + g.retention_days * ?2) AS due
             FROM log_groups g WHERE g.retention_days IS NOT NULL",
        )
        .bind(now_ms)
        .bind(DAY_MS)
        .fetch_one(self.pool())
        .await?;
        Ok(row.get("due"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = DAY_MS;

    async fn store() -> (tempfile::TempDir, SqliteMetadata) {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        (dir, m)
    }

    fn all<'a>(group: &'a str) -> EventQuery<'a> {
        EventQuery {
            group,
            streams: None,
            stream_prefix: None,
            after: (0, 0),
            before: (i64::MAX, 0),
            backward: false,
            contains: &[],
            limit: 100,
            max_bytes: usize::MAX,
        }
    }

    #[tokio::test]
    async fn groups_and_streams_are_created_once_and_listed_in_order() {
        let (_d, m) = store().await;
        assert!(m.create_log_group("b", 1, &BTreeMap::new()).await.unwrap());
        assert!(!m.create_log_group("b", 2, &BTreeMap::new()).await.unwrap());
        assert!(m.create_log_group("a", 1, &BTreeMap::new()).await.unwrap());
        let names = |v: Vec<LogGroupRow>| v.into_iter().map(|g| g.name).collect::<Vec<_>>();
        assert_eq!(names(m.list_log_groups(None, None, None, 10).await.unwrap()), ["a", "b"]);
        assert_eq!(names(m.list_log_groups(None, None, Some("a"), 10).await.unwrap()), ["b"]);
        assert_eq!(m.create_log_stream("nope", "s", 1).await.unwrap(), StreamCreated::NoGroup);
        assert_eq!(m.create_log_stream("a", "s1", 1).await.unwrap(), StreamCreated::Created);
        assert_eq!(m.create_log_stream("a", "s1", 1).await.unwrap(), StreamCreated::Exists);
        m.create_log_stream("a", "s2", 1).await.unwrap();
        m.append_log_events("a", "s1", &[(50, "x".into())], 60).await.unwrap();
        let q =
            |order, descending, after| StreamQuery { group: "a", prefix: None, order, descending, after, limit: 10 };
        let names = |v: Vec<LogStreamRow>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(m.list_log_streams(q(StreamOrder::Name, true, None)).await.unwrap()), ["s2", "s1"]);
        let after = Some((0, "s1".to_string()));
        assert_eq!(names(m.list_log_streams(q(StreamOrder::Name, false, after)).await.unwrap()), ["s2"]);
        assert_eq!(names(m.list_log_streams(q(StreamOrder::LastEvent, true, None)).await.unwrap()), ["s1", "s2"]);
        assert_eq!(names(m.list_log_streams(q(StreamOrder::LastEvent, false, None)).await.unwrap()), ["s2", "s1"]);
        let after = Some((-1, "s2".to_string()));
        assert_eq!(names(m.list_log_streams(q(StreamOrder::LastEvent, false, after)).await.unwrap()), ["s1"]);
        assert!(m.delete_log_group("a").await.unwrap());
        assert!(m.read_log_events(all("a")).await.unwrap().is_empty());
        assert!(m.log_stream("a", "s1").await.unwrap().is_none());
        // A write racing the delete stores nothing and makes nothing again.
        assert!(!m.append_log_events("a", "s1", &[(70, "late".into())], 80).await.unwrap());
        assert!(m.log_group("a").await.unwrap().is_none() && m.log_stream("a", "s1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn events_read_in_time_order_both_ways_and_expire_by_retention() {
        let (_d, m) = store().await;
        m.create_log_group("g", 0, &BTreeMap::new()).await.unwrap();
        m.create_log_stream("g", "s", 0).await.unwrap();
        m.append_log_events("g", "s", &[(3 * DAY, "c".into()), (DAY, "a".into()), (2 * DAY, "b".into())], 0)
            .await
            .unwrap();
        let msgs = |v: Vec<LogEvent>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
        assert_eq!(msgs(m.read_log_events(all("g")).await.unwrap()), ["a", "b", "c"]);
        let last_two = EventQuery { backward: true, limit: 2, ..all("g") };
        assert_eq!(msgs(m.read_log_events(last_two).await.unwrap()), ["b", "c"]);
        let with_b = ["b".to_string()];
        assert_eq!(msgs(m.read_log_events(EventQuery { contains: &with_b, ..all("g") }).await.unwrap()), ["b"]);
        assert_eq!(m.next_log_expiry(0).await.unwrap(), None, "no retention, nothing expires");
        m.set_retention("g", Some(1)).await.unwrap();
        assert_eq!(m.next_log_expiry(0).await.unwrap(), Some(2 * DAY));
        assert_eq!(m.expire_log_events(3 * DAY).await.unwrap(), 1);
        assert_eq!(msgs(m.read_log_events(all("g")).await.unwrap()), ["b", "c"]);
        assert_eq!(m.next_log_expiry(0).await.unwrap(), Some(3 * DAY));
        // Past a step's worth, in steps.
        let many: Vec<(i64, String)> = (0..2 * DELETE_STEP + 7).map(|i| (4 * DAY + i, "x".to_string())).collect();
        m.append_log_events("g", "s", &many, 0).await.unwrap();
        m.append_log_events("g", "s", &[(6 * DAY, "d".into())], 0).await.unwrap();
        assert_eq!(m.expire_log_events(6 * DAY).await.unwrap(), many.len() as u64 + 2);
        assert_eq!(msgs(m.read_log_events(all("g")).await.unwrap()), ["d"]);
        m.create_log_stream("g", "t", 0).await.unwrap();
        m.append_log_events("g", "t", &many, 0).await.unwrap();
        assert!(m.delete_log_stream("g", "t").await.unwrap());
        assert_eq!(msgs(m.read_log_events(all("g")).await.unwrap()), ["d"]);
        m.append_log_events("g", "s", &many, 0).await.unwrap();
        assert!(m.delete_log_group("g").await.unwrap());
        assert!(m.read_log_events(all("g")).await.unwrap().is_empty());
        m.create_log_group("empty", 0, &BTreeMap::new()).await.unwrap();
        m.set_retention("empty", Some(1)).await.unwrap();
        assert_eq!(m.next_log_expiry(0).await.unwrap(), Some(DAY), "an empty group expires nothing sooner");
    }
}
