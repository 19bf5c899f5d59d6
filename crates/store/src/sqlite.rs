//! [`Metadata`] on an embedded SQLite database (WAL, full fsync).

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use nimbus_core::function::{CodeSigningConfig, Function, FunctionConfig, LayerVersion};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{
    AsyncEvent, ConfigCursor, FollowUp, InvocationRecord, InvocationSummary, LogEvent, Metadata, QueueMessage, Result,
    Usage, Write,
};

pub struct SqliteMetadata {
    pool: SqlitePool,
    cache: std::sync::Mutex<Cache>,
    /// One cache miss is read at a time: a burst of invokes of a function
    /// not yet cached reads it once, not once per invoke.
    misses: tokio::sync::Mutex<()>,
    /// Buckets and objects as last read (see `object_cache`).
    pub(crate) object_cache: crate::object_cache::ObjectCache,
    /// Object writes, committed in groups (see `group`).
    objects: tokio::sync::mpsc::UnboundedSender<crate::group::Job>,
    /// Counts commits of log events, for live tails (see `logs`).
    pub(crate) logs_written: tokio::sync::watch::Sender<u64>,
    /// Whether there is room for log lines (see `space`).
    pub(crate) log_space: crate::space::LogSpace,
}

/// Functions and versions as last read, for the invoke path (which reads
/// one on every call). This process is the database's only writer, and
/// every write goes through [`Metadata::apply`], which drops what it
/// touched; the generation stops a read that raced a write from caching
/// what the write replaced.
#[derive(Default)]
struct Cache {
    generation: u64,
    functions: std::collections::HashMap<String, Option<Function>>,
    versions: std::collections::HashMap<(String, u64), Option<FunctionConfig>>,
    /// Function URL ids and what they serve; any function write clears it.
    urls: std::collections::HashMap<String, Option<(String, String)>>,
}

impl SqliteMetadata {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, writes: &[Write]) {
        let mut c = self.cache();
        c.generation += 1;
        for w in writes {
            let name = match w {
                Write::PutFunction(f) => f.name(),
                Write::DeleteFunction(name) => name,
                Write::PutVersion(v) => &v.name,
                Write::DeleteVersion { name, .. } => name,
                Write::PutLayerVersion(_)
                | Write::DeleteLayerVersion { .. }
                | Write::PutCodeSigningConfig(_)
                | Write::DeleteCodeSigningConfig(_) => continue,
            };
            c.functions.remove(name);
            c.versions.retain(|(n, _), _| n != name);
            c.urls.clear();
        }
    }

    async fn write(&self, writes: &[Write]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            match w {
                Write::PutFunction(f) => {
                    sqlx::query(
                        "INSERT INTO functions (name, doc, latest, code_sha, code_size, layer_shas, reserved)
                         VALUES (?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, latest = excluded.latest,
                           code_sha = excluded.code_sha, code_size = excluded.code_size,
                           layer_shas = excluded.layer_shas, reserved = excluded.reserved",
                    )
                    .bind(f.name())
                    .bind(serde_json::to_string(&f)?)
                    .bind(serde_json::to_string(&f.latest)?)
                    .bind(&f.latest.code.sha256_hex)
                    .bind(f.latest.code.size as i64)
                    .bind(layer_shas(&f.latest))
                    .bind(f.reserved_concurrency.map(i64::from))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM function_urls WHERE name = ?").bind(f.name()).execute(&mut *tx).await?;
                    for (qualifier, u) in &f.url_configs {
                        sqlx::query("INSERT INTO function_urls (url_id, name, qualifier) VALUES (?, ?, ?)")
                            .bind(&u.url_id)
                            .bind(f.name())
                            .bind(qualifier)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Write::DeleteFunction(name) => {
                    sqlx::query("DELETE FROM function_urls WHERE name = ?").bind(name).execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM versions WHERE name = ?").bind(name).execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM functions WHERE name = ?").bind(name).execute(&mut *tx).await?;
                }
                Write::PutVersion(c) => {
                    let version: i64 = c
                        .version
                        .parse()
                        .map_err(|_| sqlx::Error::Protocol(format!("version {} is not a number", c.version)))?;
                    sqlx::query(
                        "INSERT INTO versions (name, version, doc, code_sha, code_size, layer_shas) VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT(name, version) DO UPDATE SET doc = excluded.doc",
                    )
                        .bind(&c.name)
                        .bind(version)
                        .bind(serde_json::to_string(&c)?)
                        .bind(&c.code.sha256_hex)
                        .bind(c.code.size as i64)
                        .bind(layer_shas(c))
                        .execute(&mut *tx)
                        .await?;
                }
                Write::DeleteVersion { name, version } => {
                    sqlx::query("DELETE FROM versions WHERE name = ? AND version = ?")
                        .bind(name)
                        .bind(*version as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::PutLayerVersion(l) => {
                    sqlx::query(
                        "INSERT INTO layer_versions (name, version, doc, code_sha, code_size) VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT(name, version) DO UPDATE SET doc = excluded.doc",
                    )
                    .bind(&l.name)
                    .bind(l.version as i64)
                    .bind(serde_json::to_string(&l)?)
                    .bind(&l.code.sha256_hex)
                    .bind(l.code.size as i64)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO layers (name, last_version) VALUES (?, ?)
                         ON CONFLICT(name) DO UPDATE SET last_version = MAX(last_version, excluded.last_version)",
                    )
                    .bind(&l.name)
                    .bind(l.version as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteLayerVersion { name, version } => {
                    sqlx::query("DELETE FROM layer_versions WHERE name = ? AND version = ?")
                        .bind(name)
                        .bind(*version as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::PutCodeSigningConfig(c) => {
                    sqlx::query(
                        "INSERT INTO code_signing_configs (id, doc) VALUES (?, ?)
                         ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                    )
                    .bind(&c.id)
                    .bind(serde_json::to_string(&c)?)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteCodeSigningConfig(id) => {
                    sqlx::query("DELETE FROM code_signing_configs WHERE id = ?").bind(id).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

pub(crate) fn parse<T: DeserializeOwned>(doc: &str) -> Result<T> {
    Ok(serde_json::from_str(doc)?)
}

/// Layer blobs stay while any function version uses them, even after the
/// layer version itself is deleted (as on AWS).
fn layer_shas(c: &FunctionConfig) -> String {
    c.layers.iter().map(|l| l.sha256_hex.as_str()).collect::<Vec<_>>().join(" ")
}

pub(crate) fn parse_all<T: DeserializeOwned>(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<T>> {
    rows.iter().map(|r| parse(r.get::<&str, _>("doc"))).collect()
}

impl SqliteMetadata {
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Moves everything the write-ahead log holds into the database file
    /// and empties the log: at a clean stop, so that `metadata.db` alone
    /// (a copy taken as a backup) holds every acknowledged write.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores an object through the group committer.
    pub(crate) async fn group_commit(
        &self,
        object: nimbus_core::objects::ObjectInfo,
        events: Vec<AsyncEvent>,
        condition: Option<crate::Precondition>,
    ) -> Result<Option<String>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.objects
            .send(crate::group::Job { object, events, condition, done })
            .map_err(|_| crate::Error::Commit("the committer has stopped".into()))?;
        answer.await.map_err(|_| crate::Error::Commit("the committer has stopped".into()))?
    }

    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(out_of_transaction(conn)))
            .connect_with(opts)
            .await?;
        crate::migrations::refuse_newer(&pool, path).await?;
        crate::migrations::migrator().await?.run(&pool).await?;
        let objects = crate::group::start(pool.clone());
        Ok(Self {
            pool,
            cache: Default::default(),
            misses: Default::default(),
            object_cache: Default::default(),
            objects,
            logs_written: tokio::sync::watch::Sender::new(0),
            log_space: crate::space::LogSpace::new(path.parent().unwrap_or(path).to_path_buf()),
        })
    }

    /// Stores no log line while the data directory's filesystem has less
    /// than `bytes` free (1 GiB unless set).
    pub fn set_log_floor(&self, bytes: u64) {
        self.log_space.set_floor(bytes);
    }
}

/// A row of `invocations` as its record.
fn invocation_record(r: &sqlx::sqlite::SqliteRow) -> InvocationRecord {
    InvocationRecord {
        request_id: r.get("request_id"),
        function: r.get("function"),
        version: r.get("version"),
        cold: r.get("cold"),
        init_ms: r.get("init_ms"),
        duration_ms: r.get("duration_ms"),
        billed_ms: r.get::<i64, _>("billed_ms") as u64,
        memory_mb: r.get::<i64, _>("memory_mb") as u32,
        architecture: r.get("architecture"),
        max_memory_mb: r.get::<i64, _>("max_memory_mb") as u64,
        outcome: r.get("outcome"),
        timestamp_ms: r.get("timestamp_ms"),
    }
}

#[async_trait]
impl Metadata for SqliteMetadata {
    async fn get_function(&self, name: &str) -> Result<Option<Function>> {
        if let Some(f) = self.cache().functions.get(name) {
            return Ok(f.clone());
        }
        let _one = self.misses.lock().await;
        let generation = {
            let c = self.cache();
            if let Some(f) = c.functions.get(name) {
                return Ok(f.clone());
            }
            c.generation
        };
        let row = sqlx::query("SELECT doc FROM functions WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        let f: Option<Function> = row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()?;
        let mut c = self.cache();
        if c.generation == generation {
            c.functions.insert(name.to_string(), f.clone());
        }
        Ok(f)
    }

    async fn list_configs(
        &self,
        after: Option<ConfigCursor>,
        versions: bool,
        limit: usize,
    ) -> Result<Vec<FunctionConfig>> {
        // Each table's cursor condition is its own, and plain: the index
        // then starts at the cursor. One condition over the union (or an
        // `OR` for the first page) read both tables from their start and
        // sorted them for every page, so a whole listing grew as the
        // square of the functions.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match (after, versions) {
            (None, true) => {
                sqlx::query(
                    "SELECT name, 0 AS v, latest AS doc FROM functions
                     UNION ALL SELECT name, version AS v, doc FROM versions ORDER BY name, v LIMIT ?",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            (Some((name, version)), true) => {
                sqlx::query(
                    "SELECT name, 0 AS v, latest AS doc FROM functions WHERE name > ?
                     UNION ALL SELECT name, version AS v, doc FROM versions WHERE (name, version) > (?, ?)
                     ORDER BY name, v LIMIT ?",
                )
                .bind(&name)
                .bind(&name)
                .bind(version as i64)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            (after, false) => {
                // $LATEST only: a cursor's version is 0.
                let name = after.map(|(name, _)| name).unwrap_or_default();
                sqlx::query("SELECT latest AS doc FROM functions WHERE name > ? ORDER BY name LIMIT ?")
                    .bind(&name)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        parse_all(&rows)
    }

    async fn get_version(&self, name: &str, version: u64) -> Result<Option<FunctionConfig>> {
        let key = (name.to_string(), version);
        if let Some(v) = self.cache().versions.get(&key) {
            return Ok(v.clone());
        }
        let _one = self.misses.lock().await;
        let generation = {
            let c = self.cache();
            if let Some(v) = c.versions.get(&key) {
                return Ok(v.clone());
            }
            c.generation
        };
        let row = sqlx::query("SELECT doc FROM versions WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        let v: Option<FunctionConfig> = row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()?;
        let mut c = self.cache();
        if c.generation == generation {
            c.versions.insert(key, v.clone());
        }
        Ok(v)
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionConfig>> {
        let rows = sqlx::query("SELECT doc FROM versions WHERE name = ? ORDER BY version")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        parse_all(&rows)
    }

    async fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>> {
        let row = sqlx::query("SELECT doc FROM layer_versions WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn list_layer_versions(&self, name: &str) -> Result<Vec<LayerVersion>> {
        let rows = sqlx::query("SELECT doc FROM layer_versions WHERE name = ? ORDER BY version DESC")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        parse_all(&rows)
    }

    async fn list_latest_layer_versions(&self) -> Result<Vec<LayerVersion>> {
        let rows = sqlx::query(
            "SELECT lv.doc FROM layer_versions lv
             JOIN (SELECT name, MAX(version) AS version FROM layer_versions GROUP BY name) m
               ON lv.name = m.name AND lv.version = m.version
             ORDER BY lv.name",
        )
        .fetch_all(&self.pool)
        .await?;
        parse_all(&rows)
    }

    async fn last_layer_version(&self, name: &str) -> Result<u64> {
        let row =
            sqlx::query("SELECT last_version FROM layers WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get::<i64, _>("last_version") as u64).unwrap_or(0))
    }

    async fn get_code_signing_config(&self, id: &str) -> Result<Option<CodeSigningConfig>> {
        let row = sqlx::query("SELECT doc FROM code_signing_configs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn function_url(&self, url_id: &str) -> Result<Option<(String, String)>> {
        let generation = {
            let c = self.cache();
            if let Some(hit) = c.urls.get(url_id) {
                return Ok(hit.clone());
            }
            c.generation
        };
        let row = sqlx::query("SELECT name, qualifier FROM function_urls WHERE url_id = ?")
            .bind(url_id)
            .fetch_optional(&self.pool)
            .await?;
        let found: Option<(String, String)> = row.map(|r| (r.get("name"), r.get("qualifier")));
        let mut c = self.cache();
        // Misses are not kept: a stream of made-up ids must not grow the map.
        if c.generation == generation && found.is_some() {
            c.urls.insert(url_id.to_string(), found.clone());
        }
        Ok(found)
    }

    async fn list_code_signing_configs(&self) -> Result<Vec<CodeSigningConfig>> {
        let rows = sqlx::query("SELECT doc FROM code_signing_configs ORDER BY id").fetch_all(&self.pool).await?;
        parse_all(&rows)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        // Before and after: no reader caches the old document meanwhile,
        // and none keeps one it read before the commit.
        self.forget(&writes);
        let result = self.write(&writes).await;
        self.forget(&writes);
        result
    }

    async fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT code_sha, layer_shas FROM functions UNION SELECT code_sha, layer_shas FROM versions
             UNION SELECT code_sha, '' FROM layer_versions",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut shas = HashSet::new();
        for r in &rows {
            shas.insert(r.get::<String, _>("code_sha"));
            shas.extend(r.get::<&str, _>("layer_shas").split_whitespace().map(str::to_string));
        }
        Ok(shas)
    }

    async fn unpacked_in_use(&self) -> Result<HashSet<String>> {
        let rows =
            sqlx::query("SELECT code_sha, layer_shas FROM functions UNION SELECT code_sha, layer_shas FROM versions")
                .fetch_all(&self.pool)
                .await?;
        let mut names = HashSet::new();
        for r in &rows {
            names.insert(r.get::<String, _>("code_sha"));
            let layers: Vec<&str> = r.get::<&str, _>("layer_shas").split_whitespace().collect();
            if !layers.is_empty() {
                names.insert(layers.join("-"));
            }
        }
        Ok(names)
    }

    async fn enqueue_event(&self, e: &AsyncEvent) -> Result<()> {
        insert_events(&mut *self.pool.acquire().await?, std::slice::from_ref(e)).await
    }

    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<AsyncEvent>> {
        let rows = sqlx::query("SELECT * FROM async_events WHERE not_before_ms <= ? ORDER BY not_before_ms LIMIT ?")
            .bind(now_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(event_of).collect())
    }

    async fn next_event_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(not_before_ms) AS due FROM async_events").fetch_one(&self.pool).await?;
        Ok(row.get::<Option<i64>, _>("due"))
    }

    async fn reschedule_event(&self, id: &str, attempts: u32, not_before_ms: i64) -> Result<()> {
        sqlx::query("UPDATE async_events SET attempts = ?, not_before_ms = ?, leased = 0 WHERE id = ?")
            .bind(i64::from(attempts))
            .bind(not_before_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_event(&self, id: &str, follow_ups: &[FollowUp]) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM async_events WHERE id = ?").bind(id).execute(&mut *tx).await?;
        let mut seqs = Vec::new();
        for f in follow_ups {
            match f {
                FollowUp::Event(e) => insert_events(&mut tx, std::slice::from_ref(e)).await?,
                FollowUp::QueueMessage(QueueMessage { stored: Some(stored), .. }) => {
                    seqs.push(crate::insert_message(&mut tx, &stored.0, &stored.1).await?);
                }
                FollowUp::QueueMessage(m) => {
                    tracing::warn!(queue = %m.queue_arn, "the queue cannot take the message; it is dropped")
                }
            }
        }
        tx.commit().await?;
        Ok(seqs)
    }

    async fn lease_event(&self, id: &str, until_ms: i64) -> Result<()> {
        sqlx::query("UPDATE async_events SET not_before_ms = ?, leased = 1 WHERE id = ?")
            .bind(until_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_events(&self, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE async_events SET not_before_ms = ?, leased = 0 WHERE leased = 1 AND not_before_ms > ?")
            .bind(now_ms)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_invocations(&self, records: &[InvocationRecord], lines: &[LogEvent]) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in records.chunks(crate::logs::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO invocations (request_id, function, version, cold, init_ms, duration_ms, billed_ms,
                   memory_mb, architecture, max_memory_mb, outcome, timestamp_ms) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.request_id)
                    .push_bind(&r.function)
                    .push_bind(&r.version)
                    .push_bind(r.cold)
                    .push_bind(r.init_ms)
                    .push_bind(r.duration_ms)
                    .push_bind(r.billed_ms as i64)
                    .push_bind(i64::from(r.memory_mb))
                    .push_bind(&r.architecture)
                    .push_bind(r.max_memory_mb as i64)
                    .push_bind(&r.outcome)
                    .push_bind(r.timestamp_ms);
            });
            // One statement per batch, not per record (see `insert_events`).
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        let lines = if lines.is_empty() || self.log_space.allows("functions' log lines") { lines } else { &[] };
        crate::logs::insert_events(&mut tx, lines).await?;
        tx.commit().await?;
        if !lines.is_empty() {
            self.logs_written.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn invocations(&self, function: &str) -> Result<Vec<InvocationRecord>> {
        let rows = sqlx::query("SELECT * FROM invocations WHERE function = ? ORDER BY timestamp_ms, seq")
            .bind(function)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(invocation_record).collect())
    }

    async fn prune_logs(&self, before_ms: i64) -> Result<u64> {
        let a =
            sqlx::query("DELETE FROM log_events WHERE timestamp_ms < ?").bind(before_ms).execute(&self.pool).await?;
        let b =
            sqlx::query("DELETE FROM invocations WHERE timestamp_ms < ?").bind(before_ms).execute(&self.pool).await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    async fn invocation_summaries(&self, functions: &[String], since_ms: i64) -> Result<Vec<InvocationSummary>> {
        let mut out = Vec::with_capacity(functions.len());
        // SQLite binds at most 32,766 parameters; a page of the console is far smaller.
        for chunk in functions.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            // One index range per function: (function, timestamp_ms).
            let sql = format!(
                "SELECT function, MAX(timestamp_ms) AS last_ms,
                        SUM(timestamp_ms >= ?) AS invocations,
                        SUM(timestamp_ms >= ? AND outcome != 'success') AS errors
                 FROM invocations WHERE function IN ({marks}) GROUP BY function"
            );
            let mut q = sqlx::query(&sql).bind(since_ms).bind(since_ms);
            for f in chunk {
                q = q.bind(f);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(InvocationSummary {
                    function: r.get("function"),
                    last_ms: r.get("last_ms"),
                    invocations: r.get::<i64, _>("invocations") as u64,
                    errors: r.get::<i64, _>("errors") as u64,
                });
            }
        }
        Ok(out)
    }

    async fn cold_starts(&self, function: &str, start_ms: i64, end_ms: i64, period_ms: i64) -> Result<Vec<(i64, u64)>> {
        let rows = sqlx::query(
            "SELECT (timestamp_ms - ?1) / ?2 AS period, COUNT(*) AS n FROM invocations
             WHERE function = ?3 AND timestamp_ms >= ?1 AND timestamp_ms < ?4 AND cold GROUP BY period ORDER BY period",
        )
        .bind(start_ms)
        .bind(period_ms.max(1))
        .bind(function)
        .bind(end_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (start_ms + r.get::<i64, _>("period") * period_ms, r.get::<i64, _>("n") as u64))
            .collect())
    }

    async fn recent_invocations(&self, function: &str, limit: usize) -> Result<Vec<InvocationRecord>> {
        let rows =
            sqlx::query("SELECT * FROM invocations WHERE function = ? ORDER BY timestamp_ms DESC, seq DESC LIMIT ?")
                .bind(function)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(invocation_record).collect())
    }

    async fn usage(&self) -> Result<Usage> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM functions) AS n,
                    (SELECT COALESCE(SUM(reserved), 0) FROM functions) AS reserved,
                    (SELECT COALESCE(SUM(code_size), 0) FROM functions)
                  + (SELECT COALESCE(SUM(code_size), 0) FROM versions)
                  + (SELECT COALESCE(SUM(code_size), 0) FROM layer_versions) AS total",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage {
            function_count: row.get::<i64, _>("n") as u64,
            total_code_size: row.get::<i64, _>("total") as u64,
            reserved_concurrency: row.get::<i64, _>("reserved") as u64,
        })
    }
}

/// Queues asynchronous invocations within a write transaction (the outbox
/// of object writes and of finished events).
pub(crate) async fn insert_events(tx: &mut sqlx::SqliteConnection, events: &[AsyncEvent]) -> Result<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO async_events (id, function, qualifier, payload, attempts, not_before_ms, created_ms, lineage)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.function)
        .bind(&e.qualifier)
        .bind(&e.payload)
        .bind(i64::from(e.attempts))
        .bind(e.not_before_ms)
        .bind(e.created_ms)
        .bind(i64::from(e.lineage))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

fn event_of(r: &sqlx::sqlite::SqliteRow) -> AsyncEvent {
    AsyncEvent {
        id: r.get("id"),
        function: r.get("function"),
        qualifier: r.get("qualifier"),
        payload: r.get("payload"),
        attempts: r.get::<i64, _>("attempts") as u32,
        not_before_ms: r.get("not_before_ms"),
        created_ms: r.get("created_ms"),
        lineage: r.get::<i64, _>("lineage") as u32,
    }
}

/// Whether a connection going back to the pool is out of every
/// transaction, as sqlx counts them; one that is not is closed, not reused.
/// A COMMIT that fails on a full disk or a read-only file is rolled back
/// by SQLite itself, while sqlx still counts the transaction open (its
/// ROLLBACK then fails): reused, such a connection refuses `BEGIN
/// IMMEDIATE` and begins `begin()`'s transactions as savepoints nothing
/// commits, so writes would be answered and never stored. The ping lets
/// the rollback a dropped transaction queued run first.
async fn out_of_transaction(conn: &mut sqlx::SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    use sqlx::{Connection, TransactionManager};
    type Manager = sqlx::sqlite::SqliteTransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    conn.ping().await?;
    let clean = Manager::get_transaction_depth(conn) == 0;
    if !clean {
        tracing::warn!("a store connection was left inside a failed transaction; it is closed");
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::function::Code;

    fn config(name: &str, version: &str, sha: &str) -> FunctionConfig {
        let code = Code { sha256_hex: sha.into(), size: 100, unzipped_size: 200 };
        let mut c = FunctionConfig::new(name, "arn:aws:iam::123456789012:role/r".into(), code, 0, "r".into());
        c.version = version.into();
        c
    }

    #[tokio::test]
    async fn a_database_a_newer_build_migrated_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        let m = SqliteMetadata::open(&db).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&m.pool)
        .await
        .unwrap();
        m.pool.close().await;
        let e = SqliteMetadata::open(&db).await.err().expect("refused");
        let text = e.to_string();
        assert!(matches!(e, crate::Error::NewerSchema { found: 9999, .. }), "{text}");
        assert!(text.starts_with(&format!("{} was written by a newer Nimbus", db.display())), "{text}");
        // Untouched: the row from the future is still the newest.
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let newest: i64 =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
        assert_eq!(newest, 9999);
    }

    #[tokio::test]
    async fn documents_survive_reopen_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        {
            let m = SqliteMetadata::open(&db).await.unwrap();
            let f = Function::new(config("b", "$LATEST", "s1"), Default::default());
            let g = Function::new(config("a", "$LATEST", "s2"), Default::default());
            m.apply(vec![
                Write::PutFunction(Box::new(f)),
                Write::PutFunction(Box::new(g)),
                Write::PutVersion(Box::new(config("b", "1", "s3"))),
            ])
            .await
            .unwrap();
        }
        let m = SqliteMetadata::open(&db).await.unwrap();
        let latest: Vec<String> = m.list_configs(None, false, 10).await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(latest, ["a", "b"]);
        let all: Vec<(String, String)> =
            m.list_configs(None, true, 10).await.unwrap().into_iter().map(|c| (c.name, c.version)).collect();
        assert_eq!(all, [("a".into(), "$LATEST".into()), ("b".into(), "$LATEST".into()), ("b".into(), "1".into())]);
        let rest = m.list_configs(Some(("b".into(), 0)), true, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        // A page at a time, from each cursor: the same listing.
        let (mut paged, mut after) = (Vec::new(), None);
        while let Some(c) = m.list_configs(after.clone(), true, 1).await.unwrap().pop() {
            after = Some((c.name.clone(), c.version.parse().unwrap_or(0)));
            paged.push((c.name, c.version));
        }
        assert_eq!(paged, all);
        let after_a = m.list_configs(Some(("a".into(), 0)), false, 10).await.unwrap();
        assert_eq!(after_a.into_iter().map(|c| c.name).collect::<Vec<_>>(), ["b"]);
        assert_eq!(m.referenced_blobs().await.unwrap(), HashSet::from(["s1".into(), "s2".into(), "s3".into()]));
        assert_eq!(
            m.usage().await.unwrap(),
            Usage { function_count: 2, total_code_size: 300, reserved_concurrency: 0 }
        );
        m.apply(vec![Write::DeleteFunction("b".into())]).await.unwrap();
        assert!(m.get_function("b").await.unwrap().is_none());
        assert!(m.get_version("b", 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn cached_reads_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        assert!(m.get_function("f").await.unwrap().is_none(), "a miss is cached too");
        assert!(m.get_version("f", 1).await.unwrap().is_none());
        m.apply(vec![
            Write::PutFunction(Box::new(Function::new(config("f", "$LATEST", "s1"), Default::default()))),
            Write::PutVersion(Box::new(config("f", "1", "s1"))),
        ])
        .await
        .unwrap();
        assert_eq!(m.get_function("f").await.unwrap().unwrap().latest.code.sha256_hex, "s1");
        assert_eq!(m.get_version("f", 1).await.unwrap().unwrap().code.sha256_hex, "s1");
        let updated = Function::new(config("f", "$LATEST", "s2"), Default::default());
        m.apply(vec![Write::PutFunction(Box::new(updated))]).await.unwrap();
        assert_eq!(m.get_function("f").await.unwrap().unwrap().latest.code.sha256_hex, "s2");
        m.apply(vec![Write::DeleteVersion { name: "f".into(), version: 1 }]).await.unwrap();
        assert!(m.get_version("f", 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn url_ids_follow_the_function_documents() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let mut f = Function::new(config("f", "$LATEST", "s1"), Default::default());
        let url = |id: &str| nimbus_core::function::UrlConfig {
            url_id: id.into(),
            auth_type: "NONE".into(),
            cors: None,
            invoke_mode: "BUFFERED".into(),
            created_ms: 0,
            modified_ms: 0,
        };
        f.url_configs.insert("live".into(), url("id1"));
        m.apply(vec![Write::PutFunction(Box::new(f.clone()))]).await.unwrap();
        assert_eq!(m.function_url("id1").await.unwrap(), Some(("f".into(), "live".into())));
        f.url_configs.clear();
        f.url_configs.insert(String::new(), url("id2"));
        m.apply(vec![Write::PutFunction(Box::new(f))]).await.unwrap();
        assert_eq!(m.function_url("id1").await.unwrap(), None, "the cached id went with its configuration");
        assert_eq!(m.function_url("id2").await.unwrap(), Some(("f".into(), String::new())));
        m.apply(vec![Write::DeleteFunction("f".into())]).await.unwrap();
        assert_eq!(m.function_url("id2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failing_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let bad = m
            .apply(vec![
                Write::PutFunction(Box::new(Function::new(config("y", "$LATEST", "t"), Default::default()))),
                Write::PutVersion(Box::new(config("x", "not-a-number", "s"))),
            ])
            .await;
        assert!(bad.is_err());
        assert!(m.get_function("y").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn versions_are_replaced_and_code_signing_configs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        m.apply(vec![Write::PutVersion(Box::new(config("x", "1", "s")))]).await.unwrap();
        let mut v = config("x", "1", "s");
        v.description = "ready".into();
        m.apply(vec![Write::PutVersion(Box::new(v))]).await.unwrap();
        assert_eq!(m.get_version("x", 1).await.unwrap().unwrap().description, "ready");

        let csc = CodeSigningConfig {
            id: "csc-0123456789abcdefg".into(),
            description: "d".into(),
            signing_profile_version_arns: vec!["arn:aws:signer:us-east-1:123456789012:/signing-profiles/p/v".into()],
            untrusted_artifact_on_deployment: "Warn".into(),
            modified_ms: 1,
        };
        m.apply(vec![Write::PutCodeSigningConfig(Box::new(csc.clone()))]).await.unwrap();
        assert_eq!(m.get_code_signing_config(&csc.id).await.unwrap(), Some(csc.clone()));
        assert_eq!(m.list_code_signing_configs().await.unwrap(), std::slice::from_ref(&csc));
        m.apply(vec![Write::DeleteCodeSigningConfig(csc.id.clone())]).await.unwrap();
        assert!(m.get_code_signing_config(&csc.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn async_events_queue_in_due_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let ev = |id: &str, due: i64| AsyncEvent {
            id: id.into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            attempts: 0,
            not_before_ms: due,
            created_ms: 0,
            lineage: 0,
        };
        {
            let m = SqliteMetadata::open(&db).await.unwrap();
            m.enqueue_event(&ev("late", 50)).await.unwrap();
            m.enqueue_event(&ev("early", 10)).await.unwrap();
        }
        let m = SqliteMetadata::open(&db).await.unwrap();
        assert_eq!(m.next_event_due().await.unwrap(), Some(10));
        let due: Vec<String> = m.due_events(20, 10).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(due, ["early"]);
        m.reschedule_event("early", 1, 100).await.unwrap();
        let all = m.due_events(1000, 10).await.unwrap();
        assert_eq!((all[0].id.as_str(), all[1].id.as_str(), all[1].attempts), ("late", "early", 1));
        m.lease_event("late", 1000).await.unwrap();
        m.release_events(30).await.unwrap();
        let due: Vec<String> = m.due_events(30, 10).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(due, ["late"], "a lease is released at once; a retry keeps its wait");
        assert_eq!(m.next_event_due().await.unwrap(), Some(30));
        m.reschedule_event("late", 1, 200).await.unwrap();
        m.release_events(40).await.unwrap();
        assert!(m.due_events(40, 10).await.unwrap().is_empty(), "a retry's wait outlives a restart");
        // A message the queue could not take is dropped without holding the
        // event back.
        let message = QueueMessage {
            queue_arn: "arn:aws:sqs:us-east-1:1:q".into(),
            body: "{}".into(),
            smaller_body: None,
            attributes: vec![],
            dead_letter: false,
            stored: None,
        };
        assert_eq!(m.finish_event("late", &[FollowUp::QueueMessage(message)]).await.unwrap(), Vec::<i64>::new());
        // Finishing an event queues what it causes in the same transaction.
        m.finish_event("early", &[FollowUp::Event(ev("destination", 40))]).await.unwrap();
        let left = m.due_events(1000, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["destination"]);
        assert!(m.finish_event("destination", &[]).await.unwrap().is_empty());
        assert_eq!(m.next_event_due().await.unwrap(), None);
    }

    #[tokio::test]
    async fn function_lines_make_their_group_and_streams_and_prune_by_age() {
        use crate::{EventQuery, LogMeta};
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let line = |stream: &str, ts: i64, msg: &str| LogEvent {
            id: 0,
            log_group: "/aws/lambda/f".into(),
            log_stream: stream.into(),
            timestamp_ms: ts,
            ingestion_ms: ts,
            message: msg.into(),
        };
        let rec = InvocationRecord {
            request_id: "r1".into(),
            function: "f".into(),
            version: "$LATEST".into(),
            cold: true,
            init_ms: Some(5.0),
            duration_ms: 1.5,
            billed_ms: 7,
            memory_mb: 128,
            architecture: "x86_64".into(),
            max_memory_mb: 20,
            outcome: "success".into(),
            timestamp_ms: 100,
        };
        m.record_invocations(
            std::slice::from_ref(&rec),
            &[line("a", 100, "one"), line("b", 200, "two"), line("a", 300, "three")],
        )
        .await
        .unwrap();
        let read = |streams: Option<&'static [String]>, after: i64| EventQuery {
            group: "/aws/lambda/f",
            streams,
            stream_prefix: None,
            after: (after, 0),
            before: (i64::MAX, 0),
            backward: false,
            contains: &[],
            limit: 10,
            max_bytes: usize::MAX,
        };
        let messages = |v: Vec<LogEvent>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
        assert_eq!(messages(m.read_log_events(read(None, 0)).await.unwrap()), ["one", "two", "three"]);
        let a: &'static [String] = Box::leak(Box::new(["a".to_string()]));
        assert_eq!(messages(m.read_log_events(read(Some(a), 101)).await.unwrap()), ["three"]);
        let stream = m.log_stream("/aws/lambda/f", "a").await.unwrap().unwrap();
        assert_eq!((stream.first_event_ms, stream.last_event_ms), (Some(100), Some(300)));
        assert!(m.log_group("/aws/lambda/f").await.unwrap().is_some());
        assert_eq!(m.invocations("f").await.unwrap(), [rec]);
        assert_eq!(m.prune_logs(250).await.unwrap(), 3, "two lines and the record are older");
        assert_eq!(m.read_log_events(read(None, 0)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn invocation_summaries_count_a_window_and_recent_records_come_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let rec = |id: &str, function: &str, outcome: &str, ts: i64| InvocationRecord {
            request_id: id.into(),
            function: function.into(),
            version: "$LATEST".into(),
            cold: false,
            init_ms: None,
            duration_ms: 1.0,
            billed_ms: 1,
            memory_mb: 128,
            architecture: "x86_64".into(),
            max_memory_mb: 40,
            outcome: outcome.into(),
            timestamp_ms: ts,
        };
        let records = [
            rec("a1", "a", "success", 100),
            rec("a2", "a", "error", 200),
            rec("a3", "a", "success", 300),
            rec("a4", "a", "timeout", 400),
            rec("b1", "b", "error", 50),
            rec("c1", "c", "success", 500),
        ];
        m.record_invocations(&records, &[]).await.unwrap();
        let names = ["a".to_string(), "b".to_string(), "never".to_string()];
        let mut got = m.invocation_summaries(&names, 200).await.unwrap();
        got.sort_by(|x, y| x.function.cmp(&y.function));
        assert_eq!(
            got,
            [
                InvocationSummary { function: "a".into(), last_ms: 400, invocations: 3, errors: 2 },
                InvocationSummary { function: "b".into(), last_ms: 50, invocations: 0, errors: 0 },
            ],
            "only the functions asked for, counted from the window's start; the last invoke whenever it was"
        );
        let recent = m.recent_invocations("a", 2).await.unwrap();
        assert_eq!(recent.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["a4", "a3"]);
        let cold = |id: &str, ts: i64| InvocationRecord { cold: true, ..rec(id, "d", "success", ts) };
        m.record_invocations(
            &[cold("d1", 1_000), cold("d2", 1_059), rec("d3", "d", "success", 1_070), cold("d4", 1_130)],
            &[],
        )
        .await
        .unwrap();
        assert_eq!(m.cold_starts("d", 1_000, 1_120, 60).await.unwrap(), [(1_000, 2)], "the last is past the end");
        assert_eq!(m.cold_starts("d", 1_000, 1_200, 60).await.unwrap(), [(1_000, 2), (1_120, 1)]);
    }

    #[tokio::test]
    async fn layer_numbers_are_remembered_after_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let lv = LayerVersion {
            name: "l".into(),
            version: 1,
            description: String::new(),
            compatible_runtimes: vec![],
            compatible_architectures: vec![],
            license_info: None,
            code: Code { sha256_hex: "s".into(), size: 1, unzipped_size: 1 },
            created_ms: 0,
            permissions: vec![],
            policy_revision_id: None,
        };
        m.apply(vec![Write::PutLayerVersion(Box::new(lv))]).await.unwrap();
        m.apply(vec![Write::DeleteLayerVersion { name: "l".into(), version: 1 }]).await.unwrap();
        assert_eq!(m.last_layer_version("l").await.unwrap(), 1);
        assert!(m.list_latest_layer_versions().await.unwrap().is_empty());
    }
}
