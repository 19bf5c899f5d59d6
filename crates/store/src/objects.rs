//! The object store's metadata ([`ObjectMeta`]): buckets, objects, multipart
//! uploads and their parts, as documents in the same SQLite database as
//! functions. A write that creates or removes an object commits the
//! asynchronous invocations it triggers in the same transaction (the
//! outbox), so a notification is never lost and never sent for a write that
//! did not happen. Object bytes are files the caller names; the store never
//! reads them.
//!
//! Every write transaction here begins IMMEDIATE: most read before they
//! write, and a deferred one would fail at once ("database is locked") when
//! a concurrent writer commits in between, instead of waiting its turn.

use std::collections::HashSet;

use async_trait::async_trait;
use nimbus_core::objects::{Bucket, ObjectInfo, Part, Upload};
use sqlx::Row;

use crate::sqlite::{insert_events, parse, parse_all, SqliteMetadata};
use crate::{AsyncEvent, Result};

/// What a conditional write needs of the object it would replace
/// (S3's `If-None-Match: *` and `If-Match`); checked in the write's own
/// transaction, so that of two writers racing only one can pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No object of its key.
    Absent,
    /// An object of its key; given an ETag (quoted, as stored), with that ETag.
    Present(Option<String>),
}

impl Precondition {
    /// Whether it holds for an object of this ETag, or none.
    pub fn check(&self, current: Option<&str>) -> Result<(), crate::Unmet> {
        match (self, current) {
            (Precondition::Absent, None) | (Precondition::Present(None), Some(_)) => Ok(()),
            (Precondition::Present(Some(want)), Some(have)) if want == have => Ok(()),
            (Precondition::Present(_), None) => Err(crate::Unmet::Missing),
            _ => Err(crate::Unmet::Mismatch),
        }
    }
}

/// Why a bucket could not be deleted.
#[derive(Debug, PartialEq, Eq)]
pub enum BucketDelete {
    Deleted,
    Missing,
    NotEmpty,
}

#[async_trait]
pub trait ObjectMeta: Send + Sync {
    /// Creates a bucket if fewer than `max` exist; false if one of that
    /// name exists, or `max` do.
    async fn create_bucket(&self, b: &Bucket, max: usize) -> Result<bool>;
    async fn get_bucket(&self, name: &str) -> Result<Option<Bucket>>;
    /// Every bucket, by name.
    async fn list_buckets(&self) -> Result<Vec<Bucket>>;
    async fn put_bucket(&self, b: &Bucket) -> Result<()>;
    /// Deletes an empty bucket (no objects, no uploads in progress).
    async fn delete_bucket(&self, name: &str) -> Result<BucketDelete>;

    /// Stores an object (replacing any of that key) and queues `events`;
    /// returns the file of the object it replaced.
    async fn put_object(&self, o: &ObjectInfo, events: &[AsyncEvent]) -> Result<Option<String>> {
        self.put_object_if(o, events, None).await
    }
    /// [`ObjectMeta::put_object`] if `condition` holds, else
    /// [`crate::Error::Unmet`], storing nothing.
    async fn put_object_if(
        &self,
        o: &ObjectInfo,
        events: &[AsyncEvent],
        condition: Option<Precondition>,
    ) -> Result<Option<String>>;
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>>;
    /// Rewrites an object's document (its tags, say) if it still has the
    /// bytes of `o.file`; false if it was deleted or replaced meanwhile.
    async fn update_object(&self, o: &ObjectInfo) -> Result<bool>;
    /// Removes an object and queues `events` if it existed (and, given
    /// `only_file`, still has the bytes of that file); returns it. Given a
    /// `condition` (S3's conditional delete) that does not hold, removes
    /// nothing and fails with [`crate::Error::Unmet`].
    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        only_file: Option<&str>,
        condition: Option<&Precondition>,
        events: &(dyn for<'o> Fn(&'o ObjectInfo) -> Vec<AsyncEvent> + Sync),
    ) -> Result<Option<ObjectInfo>>;
    /// Objects whose keys start with `prefix` and sort after `after`, in key order.
    async fn list_objects(&self, bucket: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<ObjectInfo>>;

    async fn create_upload(&self, u: &Upload) -> Result<()>;
    async fn get_upload(&self, id: &str) -> Result<Option<Upload>>;
    /// Uploads of a bucket in (key, id) order, after (`key`, `id`).
    async fn list_uploads(&self, bucket: &str, prefix: &str, after: (&str, &str), limit: usize) -> Result<Vec<Upload>>;
    /// Stores a part (replacing one of that number); returns the replaced
    /// file. None, storing nothing, if the upload is gone (completed or
    /// aborted meanwhile): the caller's file is then unreferenced.
    async fn put_part(&self, upload_id: &str, p: &Part) -> Result<Option<Option<String>>>;
    /// Parts in number order, after `after`.
    async fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> Result<Vec<Part>>;
    /// Ends an upload: its parts and itself go; with `done`, the object it
    /// became is stored and `events` queued in the same transaction. Returns
    /// the files no longer referred to (its parts', a replaced object's), or
    /// None, changing nothing, if the upload had already ended.
    /// With `condition`, the object is stored only if it holds, else
    /// [`crate::Error::Unmet`] and the upload remains.
    async fn finish_upload(
        &self,
        id: &str,
        done: Option<(&ObjectInfo, &[AsyncEvent])>,
        condition: Option<&Precondition>,
    ) -> Result<Option<Vec<String>>>;

    /// Every file an object or part refers to (for cleaning up after a crash).
    async fn object_files(&self) -> Result<HashSet<String>>;
}

/// Stores `o` (its bytes too, if it is small) in place of any object of its
/// key; returns the data file of the object it replaced.
pub(crate) async fn upsert_object(tx: &mut sqlx::SqliteConnection, o: &ObjectInfo) -> Result<Option<String>> {
    // Few statements: this runs for every PUT, each a round trip to
    // SQLite's thread.
    let old: Option<(String, bool)> = sqlx::query(
        "SELECT o.file, d.key IS NOT NULL AS inline FROM objects o
         LEFT JOIN object_data d ON d.bucket = o.bucket AND d.key = o.key WHERE o.bucket = ? AND o.key = ?",
    )
    .bind(&o.bucket)
    .bind(&o.key)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| (r.get("file"), r.get("inline")));
    let old_inline = old.as_ref().is_some_and(|(_, inline)| *inline);
    if old_inline && o.data.is_none() {
        remove_data(tx, &o.bucket, &o.key).await?;
    }
    sqlx::query(
        "INSERT INTO objects (bucket, key, file, doc) VALUES (?, ?, ?, ?)
         ON CONFLICT(bucket, key) DO UPDATE SET file = excluded.file, doc = excluded.doc",
    )
    .bind(&o.bucket)
    .bind(&o.key)
    .bind(&o.file)
    .bind(serde_json::to_string(o)?)
    .execute(&mut *tx)
    .await?;
    if let Some(data) = &o.data {
        sqlx::query("INSERT OR REPLACE INTO object_data (bucket, key, data) VALUES (?, ?, ?)")
            .bind(&o.bucket)
            .bind(&o.key)
            .bind(data.as_ref())
            .execute(&mut *tx)
            .await?;
    }
    Ok(old.map(|(file, _)| file).filter(|f| !old_inline && f != &o.file))
}

/// Whether bucket `name` exists, in the transaction of a write into it.
pub(crate) async fn bucket_exists(tx: &mut sqlx::SqliteConnection, name: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM buckets WHERE name = ?").bind(name).fetch_optional(&mut *tx).await?.is_some())
}

/// The ETag of the object stored at `o`'s key, if any.
pub(crate) async fn current_etag(tx: &mut sqlx::SqliteConnection, bucket: &str, key: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT json_extract(doc, '$.etag') FROM objects WHERE bucket = ? AND key = ?")
        .bind(bucket)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?)
}

/// Removes a small object's bytes; returns them if there were any.
async fn remove_data(tx: &mut sqlx::SqliteConnection, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query("DELETE FROM object_data WHERE bucket = ? AND key = ? RETURNING data")
        .bind(bucket)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get("data")))
}

#[async_trait]
impl ObjectMeta for SqliteMetadata {
    async fn create_bucket(&self, b: &Bucket, max: usize) -> Result<bool> {
        let _forget = self.object_cache.around(&b.name, None);
        // One statement, so that concurrent creates cannot pass `max` together.
        let done = sqlx::query(
            "INSERT INTO buckets (name, doc) SELECT ?, ? WHERE (SELECT COUNT(*) FROM buckets) < ?
             ON CONFLICT(name) DO NOTHING",
        )
        .bind(&b.name)
        .bind(serde_json::to_string(b)?)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_bucket(&self, name: &str) -> Result<Option<Bucket>> {
        if let Some(b) = self.object_cache.bucket(name) {
            return Ok(b);
        }
        let generation = self.object_cache.generation();
        let row = sqlx::query("SELECT doc FROM buckets WHERE name = ?").bind(name).fetch_optional(self.pool()).await?;
        let b: Option<Bucket> = row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()?;
        self.object_cache.keep_bucket(generation, name, b.clone());
        Ok(b)
    }

    async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        let rows = sqlx::query("SELECT doc FROM buckets ORDER BY name").fetch_all(self.pool()).await?;
        parse_all(&rows)
    }

    async fn put_bucket(&self, b: &Bucket) -> Result<()> {
        let _forget = self.object_cache.around(&b.name, None);
        sqlx::query("UPDATE buckets SET doc = ? WHERE name = ?")
            .bind(serde_json::to_string(b)?)
            .bind(&b.name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDelete> {
        let _forget = self.object_cache.around(name, None);
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let in_use = sqlx::query(
            "SELECT 1 FROM objects WHERE bucket = ?1 UNION ALL SELECT 1 FROM uploads WHERE bucket = ?1 LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if in_use.is_some() {
            return Ok(BucketDelete::NotEmpty);
        }
        let done = sqlx::query("DELETE FROM buckets WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 { BucketDelete::Deleted } else { BucketDelete::Missing })
    }

    async fn put_object_if(
        &self,
        o: &ObjectInfo,
        events: &[AsyncEvent],
        condition: Option<Precondition>,
    ) -> Result<Option<String>> {
        let _forget = self.object_cache.around(&o.bucket, Some(&o.key));
        self.group_commit(o.clone(), events.to_vec(), condition).await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        if let Some(o) = self.object_cache.object(bucket, key) {
            return Ok(o);
        }
        let generation = self.object_cache.generation();
        let row = sqlx::query(
            "SELECT o.doc, d.data FROM objects o LEFT JOIN object_data d ON d.bucket = o.bucket AND d.key = o.key
             WHERE o.bucket = ? AND o.key = ?",
        )
        .bind(bucket)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let o = match row {
            Some(row) => {
                let mut o: ObjectInfo = parse(row.get::<&str, _>("doc"))?;
                o.data = row.get::<Option<Vec<u8>>, _>("data").map(Into::into);
                Some(o)
            }
            None => None,
        };
        self.object_cache.keep_object(generation, bucket, key, o.clone());
        Ok(o)
    }

    async fn update_object(&self, o: &ObjectInfo) -> Result<bool> {
        let _forget = self.object_cache.around(&o.bucket, Some(&o.key));
        let done = sqlx::query("UPDATE objects SET doc = ? WHERE bucket = ? AND key = ? AND file = ?")
            .bind(serde_json::to_string(o)?)
            .bind(&o.bucket)
            .bind(&o.key)
            .bind(&o.file)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        only_file: Option<&str>,
        condition: Option<&Precondition>,
        events: &(dyn for<'o> Fn(&'o ObjectInfo) -> Vec<AsyncEvent> + Sync),
    ) -> Result<Option<ObjectInfo>> {
        let _forget = self.object_cache.around(bucket, Some(key));
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let Some(condition) = condition {
            condition.check(current_etag(&mut tx, bucket, key).await?.as_deref()).map_err(crate::Error::Unmet)?;
        }
        let row =
            sqlx::query("DELETE FROM objects WHERE bucket = ? AND key = ? AND (?3 IS NULL OR file = ?3) RETURNING doc")
                .bind(bucket)
                .bind(key)
                .bind(only_file)
                .fetch_optional(&mut *tx)
                .await?;
        let mut gone: Option<ObjectInfo> = row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()?;
        if let Some(o) = &mut gone {
            o.data = remove_data(&mut tx, bucket, key).await?.map(Into::into);
            insert_events(&mut tx, &events(o)).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn list_objects(&self, bucket: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<ObjectInfo>> {
        // `key >= prefix` with the prefix check keeps the range scan on the
        // primary key; substr compares bytes, as keys do.
        let rows = sqlx::query(
            "SELECT doc FROM objects WHERE bucket = ? AND key > ? AND key >= ? AND substr(key, 1, length(?)) = ?
             ORDER BY key LIMIT ?",
        )
        .bind(bucket)
        .bind(after)
        .bind(prefix)
        .bind(prefix)
        .bind(prefix)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        parse_all(&rows)
    }

    async fn create_upload(&self, u: &Upload) -> Result<()> {
        // Only into a bucket that still exists (see `group::write`).
        let made = sqlx::query(
            "INSERT INTO uploads (id, bucket, key, doc) SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM buckets WHERE name = ?2)",
        )
        .bind(&u.id)
        .bind(&u.bucket)
        .bind(&u.key)
        .bind(serde_json::to_string(u)?)
        .execute(self.pool())
        .await?;
        match made.rows_affected() {
            0 => Err(crate::Error::Unmet(crate::Unmet::NoBucket)),
            _ => Ok(()),
        }
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
        let row = sqlx::query("SELECT doc FROM uploads WHERE id = ?").bind(id).fetch_optional(self.pool()).await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str, after: (&str, &str), limit: usize) -> Result<Vec<Upload>> {
        let rows = sqlx::query(
            "SELECT doc FROM uploads WHERE bucket = ? AND (key, id) > (?, ?) AND substr(key, 1, length(?)) = ?
             ORDER BY key, id LIMIT ?",
        )
        .bind(bucket)
        .bind(after.0)
        .bind(after.1)
        .bind(prefix)
        .bind(prefix)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        parse_all(&rows)
    }

    async fn put_part(&self, upload_id: &str, p: &Part) -> Result<Option<Option<String>>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let upload = sqlx::query("SELECT 1 FROM uploads WHERE id = ?").bind(upload_id).fetch_optional(&mut *tx).await?;
        if upload.is_none() {
            return Ok(None);
        }
        let old: Option<String> = sqlx::query("SELECT file FROM parts WHERE upload_id = ? AND number = ?")
            .bind(upload_id)
            .bind(p.number)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get("file"));
        sqlx::query(
            "INSERT INTO parts (upload_id, number, file, doc) VALUES (?, ?, ?, ?)
             ON CONFLICT(upload_id, number) DO UPDATE SET file = excluded.file, doc = excluded.doc",
        )
        .bind(upload_id)
        .bind(p.number)
        .bind(&p.file)
        .bind(serde_json::to_string(p)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(old.filter(|f| f != &p.file)))
    }

    async fn list_parts(&self, upload_id: &str, after: u32, limit: usize) -> Result<Vec<Part>> {
        let rows = sqlx::query("SELECT doc FROM parts WHERE upload_id = ? AND number > ? ORDER BY number LIMIT ?")
            .bind(upload_id)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await?;
        parse_all(&rows)
    }

    async fn finish_upload(
        &self,
        id: &str,
        done: Option<(&ObjectInfo, &[AsyncEvent])>,
        condition: Option<&Precondition>,
    ) -> Result<Option<Vec<String>>> {
        let _forget = done.map(|(o, _)| self.object_cache.around(&o.bucket, Some(&o.key)));
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if let (Some((object, _)), Some(c)) = (done, condition) {
            // Dropped, the transaction rolls back: the upload remains.
            c.check(current_etag(&mut tx, &object.bucket, &object.key).await?.as_deref())
                .map_err(crate::Error::Unmet)?;
        }
        let ended = sqlx::query("DELETE FROM uploads WHERE id = ?").bind(id).execute(&mut *tx).await?;
        if ended.rows_affected() == 0 {
            return Ok(None);
        }
        let mut freed: Vec<String> = sqlx::query("DELETE FROM parts WHERE upload_id = ? RETURNING file")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get("file"))
            .collect();
        if let Some((object, events)) = done {
            freed.extend(upsert_object(&mut tx, object).await?);
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(Some(freed))
    }

    async fn object_files(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT file FROM objects o
             WHERE NOT EXISTS (SELECT 1 FROM object_data d WHERE d.bucket = o.bucket AND d.key = o.key)
             UNION SELECT file FROM parts",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.get("file")).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nimbus_core::objects::ObjectHeaders;

    use super::*;

    fn object(file: &str) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            file: file.into(),
            size: 1,
            etag: "\"e\"".into(),
            modified_ms: 1,
            headers: ObjectHeaders::default(),
            tags: BTreeMap::new(),
            checksum: None,
            part_sizes: vec![],
            data: None,
        }
    }

    /// A store with bucket `b`, which the tests' objects are in.
    async fn with_bucket(m: SqliteMetadata) -> SqliteMetadata {
        let b = nimbus_core::objects::Bucket {
            name: "b".into(),
            created_ms: 1,
            notifications: vec![],
            tags: BTreeMap::new(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        assert!(m.create_bucket(&b, 10).await.unwrap());
        m
    }

    #[tokio::test]
    async fn nothing_is_written_into_a_bucket_deleted_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await;
        assert_eq!(m.delete_bucket("b").await.unwrap(), BucketDelete::Deleted);
        let put = m.put_object_if(&object("f"), &[], None).await;
        assert!(matches!(put, Err(crate::Error::Unmet(crate::Unmet::NoBucket))), "{put:?}");
        assert!(m.get_object("b", "k").await.unwrap().is_none());
    }

    fn part(number: u32, file: &str) -> Part {
        Part { number, file: file.into(), size: 1, etag: "\"e\"".into(), modified_ms: 1, checksum: None }
    }

    #[tokio::test]
    async fn an_ended_upload_takes_no_parts_and_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await;
        let upload = Upload {
            id: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
            initiated_ms: 1,
            headers: ObjectHeaders::default(),
            tags: BTreeMap::new(),
            checksum_algorithm: None,
            checksum_type: None,
        };
        m.create_upload(&upload).await.unwrap();
        assert_eq!(m.put_part("u", &part(1, "p1")).await.unwrap(), Some(None));
        assert_eq!(m.put_part("u", &part(1, "p1b")).await.unwrap(), Some(Some("p1".into())));
        assert_eq!(m.put_part("u", &part(2, "p2")).await.unwrap(), Some(None));
        let freed = m.finish_upload("u", Some((&object("joined"), &[])), None).await.unwrap();
        assert_eq!(
            freed.map(|mut f| {
                f.sort();
                f
            }),
            Some(vec!["p1b".to_string(), "p2".to_string()])
        );
        assert_eq!(m.get_object("b", "k").await.unwrap().unwrap().file, "joined");
        // A part arriving after completion, or a second completion, changes nothing.
        assert_eq!(m.put_part("u", &part(3, "late")).await.unwrap(), None);
        assert_eq!(m.finish_upload("u", Some((&object("again"), &[])), None).await.unwrap(), None);
        assert_eq!(m.get_object("b", "k").await.unwrap().unwrap().file, "joined");
        assert_eq!(m.object_files().await.unwrap(), HashSet::from(["joined".to_string()]));
    }

    #[tokio::test]
    async fn updates_keep_to_the_object_they_read() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await;
        let mut o = object("f1");
        assert!(!m.update_object(&o).await.unwrap(), "no object yet");
        m.put_object(&o, &[]).await.unwrap();
        o.tags.insert("a".into(), "1".into());
        assert!(m.update_object(&o).await.unwrap());
        assert_eq!(m.get_object("b", "k").await.unwrap().unwrap().tags["a"], "1");
        // Replaced meanwhile: the update of the old bytes does not apply.
        m.put_object(&object("f2"), &[]).await.unwrap();
        assert!(!m.update_object(&o).await.unwrap());
        let now = m.get_object("b", "k").await.unwrap().unwrap();
        assert_eq!((now.file.as_str(), now.tags.len()), ("f2", 0));
    }

    #[tokio::test]
    async fn small_objects_keep_their_bytes_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await;
        let inline = |file: &str, bytes: &'static [u8]| ObjectInfo { data: Some(bytes.into()), ..object(file) };
        assert_eq!(m.put_object(&object("f1"), &[]).await.unwrap(), None);
        // A file replaced by inline bytes is freed; inline bytes replaced leave no file to free.
        assert_eq!(m.put_object(&inline("v2", b"two"), &[]).await.unwrap(), Some("f1".into()));
        assert_eq!(m.get_object("b", "k").await.unwrap().unwrap().data.as_deref(), Some(&b"two"[..]));
        assert_eq!(m.put_object(&object("f3"), &[]).await.unwrap(), None);
        assert_eq!(m.get_object("b", "k").await.unwrap().unwrap().data, None);
        assert_eq!(m.put_object(&inline("v4", b"four"), &[]).await.unwrap(), Some("f3".into()));
        assert!(m.object_files().await.unwrap().is_empty(), "inline bytes are no file to keep");
        let listed = m.list_objects("b", "", "", 10).await.unwrap();
        assert_eq!((listed.len(), listed[0].data.is_none()), (1, true), "listings carry no bytes");
        let wrong = Precondition::Present(Some("\"other\"".into()));
        let refused = m.delete_object("b", "k", None, Some(&wrong), &|_| vec![]).await;
        assert!(
            matches!(refused, Err(crate::Error::Unmet(crate::Unmet::Mismatch))),
            "a condition that fails deletes nothing"
        );
        let gone =
            m.delete_object("b", "k", None, Some(&Precondition::Present(None)), &|_| vec![]).await.unwrap().unwrap();
        assert_eq!(gone.data.as_deref(), Some(&b"four"[..]));
        assert!(m.get_object("b", "k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_puts_commit_together_and_each_gets_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let m = std::sync::Arc::new(with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await);
        let puts = (0..100).map(|i| {
            let m = m.clone();
            tokio::spawn(async move {
                let o = ObjectInfo { key: format!("k{}", i % 50), file: format!("f{i}"), ..object("") };
                m.put_object(&o, &[]).await.unwrap()
            })
        });
        let replaced: Vec<_> = futures_util::future::join_all(puts).await.into_iter().map(Result::unwrap).collect();
        // Two writes per key: exactly one of each pair replaced the other.
        assert_eq!(replaced.iter().flatten().count(), 50);
        assert_eq!(m.list_objects("b", "", "", 1000).await.unwrap().len(), 50);
        let mut files = m.object_files().await.unwrap().into_iter().collect::<Vec<_>>();
        files.sort();
        let mut kept: Vec<_> =
            (0..100).map(|i| format!("f{i}")).filter(|f| !replaced.contains(&Some(f.clone()))).collect();
        kept.sort();
        assert_eq!(files, kept);
    }

    #[tokio::test]
    async fn of_conditional_creators_in_one_batch_one_wins_and_the_rest_of_the_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let m = std::sync::Arc::new(with_bucket(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap()).await);
        // Twenty creators of "lock" and twenty plain writes of other keys, at once.
        let puts = (0..40).map(|i| {
            let m = m.clone();
            tokio::spawn(async move {
                let key = if i % 2 == 0 { "lock".to_string() } else { format!("k{i}") };
                let o = ObjectInfo { key, file: format!("f{i}"), ..object("") };
                let condition = (i % 2 == 0).then_some(Precondition::Absent);
                m.put_object_if(&o, &[], condition).await.map(|_| i)
            })
        });
        let results: Vec<_> = futures_util::future::join_all(puts).await.into_iter().map(Result::unwrap).collect();
        let (created, refused): (Vec<_>, Vec<_>) = results.iter().step_by(2).partition(|r| r.is_ok());
        assert_eq!(created.len(), 1);
        assert!(refused.iter().all(|r| matches!(r, Err(crate::Error::Unmet(crate::Unmet::Mismatch)))));
        assert!(results.iter().skip(1).step_by(2).all(Result::is_ok));
        assert_eq!(m.list_objects("b", "", "", 1000).await.unwrap().len(), 21);
        // If-Match: another ETag, or no object, writes nothing.
        let o = ObjectInfo { key: "lock".into(), file: "g".into(), ..object("") };
        let wrong = Some(Precondition::Present(Some("\"other\"".into())));
        assert!(matches!(m.put_object_if(&o, &[], wrong).await, Err(crate::Error::Unmet(crate::Unmet::Mismatch))));
        let absent = ObjectInfo { key: "none".into(), ..o.clone() };
        let any = Some(Precondition::Present(None));
        assert!(matches!(m.put_object_if(&absent, &[], any).await, Err(crate::Error::Unmet(crate::Unmet::Missing))));
        let right = Some(Precondition::Present(Some("\"e\"".into())));
        assert!(m.put_object_if(&o, &[], right).await.is_ok());
    }
}
