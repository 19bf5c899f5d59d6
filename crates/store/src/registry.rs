//! The container registry's metadata ([`RegistryMeta`]): repositories,
//! which blobs exist and which repositories hold them, manifests with what
//! they refer to, and tags. Blob bytes are files kept by `nimbus-registry`;
//! the distribution and ECR rules live there too. The checks that must be
//! atomic with a write (a manifest's blobs exist, an immutable tag is not
//! moved, a repository is empty) run inside that write's transaction.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::sqlite::{parse, SqliteMetadata};
use crate::Result;

/// An ECR repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    pub created_ms: i64,
    /// `MUTABLE` or `IMMUTABLE`.
    pub tag_mutability: String,
    #[serde(default)]
    pub scan_on_push: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A manifest stored in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    /// The manifest's `artifactType`, else its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// Bytes of the manifest itself.
    pub size: u64,
    /// Bytes of the image: its layers (for an index, its largest child).
    pub image_size: u64,
    pub pushed_ms: i64,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest to store, with what it refers to.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub row: ManifestRow,
    /// Blobs (config, layers) that must be in the repository.
    pub blobs: Vec<String>,
    /// Manifests (an index's children) that must be in the repository.
    pub manifests: Vec<String>,
    pub tag: Option<String>,
    /// When the manifest's own bytes were committed as a blob.
    pub now_ms: i64,
}

/// How [`RegistryMeta::put_manifest`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestPut {
    Stored,
    NoRepository,
    MissingBlob(String),
    MissingManifest(String),
    /// The repository is IMMUTABLE and the tag names another manifest.
    TagImmutable,
}

/// How [`RegistryMeta::delete_manifest`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDelete {
    Missing,
    /// An index of the repository lists it (this digest); nothing changed.
    ReferencedBy(String),
    /// Deleted with its tags; the digests it referred to are released.
    Deleted(Vec<String>),
}

/// How [`RegistryMeta::delete_repository`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryDelete {
    Missing,
    /// It still holds images and `force` was not given.
    NotEmpty,
    /// Deleted; the digests its manifests referred to are released.
    Deleted {
        repository: Repository,
        released: Vec<String>,
    },
}

/// What one garbage collection may take.
#[derive(Debug, Clone, Default)]
pub struct Collect {
    /// Blobs committed or mounted at or after this survive.
    pub started_ms: i64,
    /// Unreferenced blobs touched before this go, whoever released them.
    pub stale_before_ms: i64,
    /// Blobs the deletion that started this collection released.
    pub released: HashSet<String>,
    /// The repository of that deletion: a released blob still in another
    /// repository (pushed there, its manifest not yet) stays.
    pub repository: String,
    /// Blobs someone else holds (functions, tasks).
    pub keep: HashSet<String>,
}

#[async_trait]
pub trait RegistryMeta: Send + Sync {
    /// False if the name is taken.
    async fn create_repository(&self, r: &Repository) -> Result<bool>;
    async fn get_repository(&self, name: &str) -> Result<Option<Repository>>;
    /// Replaces a repository's document; false if it is gone.
    async fn put_repository(&self, r: &Repository) -> Result<bool>;
    /// Repositories by name, after `after`, at most `limit`.
    async fn list_repositories(&self, after: Option<&str>, limit: u32) -> Result<Vec<Repository>>;
    async fn delete_repository(&self, name: &str, force: bool) -> Result<RepositoryDelete>;

    /// The blob's size if it is in the repository.
    async fn repo_blob(&self, repository: &str, digest: &str) -> Result<Option<u64>>;
    /// Records a committed blob in the repository; false if the repository is gone.
    async fn commit_blob(&self, repository: &str, digest: &str, size: u64, now_ms: i64) -> Result<bool>;
    /// Links a blob of `from` into `to`; its size, or `None` if `from` lacks it or `to` is gone.
    async fn mount_blob(&self, from: &str, to: &str, digest: &str, now_ms: i64) -> Result<Option<u64>>;
    /// Removes a blob from a repository; false if it was not there.
    async fn unlink_blob(&self, repository: &str, digest: &str) -> Result<bool>;
    /// Every committed blob's digest.
    async fn blob_digests(&self) -> Result<HashSet<String>>;

    async fn put_manifest(&self, m: &PutManifest) -> Result<ManifestPut>;
    async fn get_manifest(&self, repository: &str, digest: &str) -> Result<Option<ManifestRow>>;
    /// The digest a tag names.
    async fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>>;
    /// Tags in lexical order after `after`, at most `limit`.
    async fn list_tags(&self, repository: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>>;
    /// Manifests whose subject is `digest`.
    async fn referrers(&self, repository: &str, digest: &str) -> Result<Vec<ManifestRow>>;
    /// Every manifest of the repository with its tags, by push time.
    async fn manifests(&self, repository: &str) -> Result<Vec<(ManifestRow, Vec<String>)>>;
    /// Deletes a manifest and its tags, unless another manifest (an index)
    /// refers to it.
    async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<ManifestDelete>;
    /// Removes a tag; the digest it named.
    async fn delete_tag(&self, repository: &str, tag: &str) -> Result<Option<String>>;

    /// Forgets the blobs `c` allows to go (no manifest refers to them) and
    /// returns them, so their files can be removed.
    async fn collect_blobs(&self, c: &Collect) -> Result<Vec<String>>;
}

fn manifest_row(r: &sqlx::sqlite::SqliteRow) -> Result<ManifestRow> {
    parse(r.get::<&str, _>("doc"))
}

#[async_trait]
impl RegistryMeta for SqliteMetadata {
    async fn create_repository(&self, r: &Repository) -> Result<bool> {
        let done = sqlx::query("INSERT OR IGNORE INTO registry_repositories (name, doc) VALUES (?, ?)")
            .bind(&r.name)
            .bind(serde_json::to_string(r)?)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_repository(&self, name: &str) -> Result<Option<Repository>> {
        let row = sqlx::query("SELECT doc FROM registry_repositories WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn put_repository(&self, r: &Repository) -> Result<bool> {
        let done = sqlx::query("UPDATE registry_repositories SET doc = ? WHERE name = ?")
            .bind(serde_json::to_string(r)?)
            .bind(&r.name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_repositories(&self, after: Option<&str>, limit: u32) -> Result<Vec<Repository>> {
        let rows = sqlx::query("SELECT doc FROM registry_repositories WHERE name > ? ORDER BY name LIMIT ?")
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| parse(r.get::<&str, _>("doc"))).collect()
    }

    async fn delete_repository(&self, name: &str, force: bool) -> Result<RepositoryDelete> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query("SELECT doc FROM registry_repositories WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(RepositoryDelete::Missing);
        };
        let repository: Repository = parse(row.get::<&str, _>("doc"))?;
        let manifests: Vec<String> = sqlx::query("SELECT digest FROM registry_manifests WHERE repository = ?")
            .bind(name)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get("digest"))
            .collect();
        if !manifests.is_empty() && !force {
            return Ok(RepositoryDelete::NotEmpty);
        }
        let mut released: Vec<String> =
            sqlx::query("SELECT DISTINCT digest FROM registry_manifest_refs WHERE repository = ?")
                .bind(name)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get("digest"))
                .collect();
        released.extend(manifests);
        for table in ["registry_manifest_refs", "registry_manifests", "registry_tags", "registry_repo_blobs"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE repository = ?")).bind(name).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM registry_repositories WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(RepositoryDelete::Deleted { repository, released })
    }

    async fn repo_blob(&self, repository: &str, digest: &str) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM registry_repo_blobs l JOIN registry_blobs b ON b.digest = l.digest
             WHERE l.repository = ? AND l.digest = ?",
        )
        .bind(repository)
        .bind(digest)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get::<i64, _>("size") as u64))
    }

    async fn commit_blob(&self, repository: &str, digest: &str, size: u64, now_ms: i64) -> Result<bool> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        if !repository_exists(&mut tx, repository).await? {
            return Ok(false);
        }
        link(&mut tx, repository, digest, size, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn mount_blob(&self, from: &str, to: &str, digest: &str, now_ms: i64) -> Result<Option<u64>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let size = sqlx::query(
            "SELECT b.size FROM registry_repo_blobs l JOIN registry_blobs b ON b.digest = l.digest
             WHERE l.repository = ? AND l.digest = ?",
        )
        .bind(from)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get::<i64, _>("size") as u64);
        let Some(size) = size else { return Ok(None) };
        if !repository_exists(&mut tx, to).await? {
            return Ok(None);
        }
        link(&mut tx, to, digest, size, now_ms).await?;
        tx.commit().await?;
        Ok(Some(size))
    }

    async fn unlink_blob(&self, repository: &str, digest: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM registry_repo_blobs WHERE repository = ? AND digest = ?")
            .bind(repository)
            .bind(digest)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn blob_digests(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT digest FROM registry_blobs").fetch_all(self.pool()).await?;
        Ok(rows.iter().map(|r| r.get("digest")).collect())
    }

    async fn put_manifest(&self, m: &PutManifest) -> Result<ManifestPut> {
        let repo = m.row.repository.as_str();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let Some(doc) = sqlx::query("SELECT doc FROM registry_repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(ManifestPut::NoRepository);
        };
        let repository: Repository = parse(doc.get::<&str, _>("doc"))?;
        for blob in &m.blobs {
            let linked = sqlx::query("SELECT 1 FROM registry_repo_blobs WHERE repository = ? AND digest = ?")
                .bind(repo)
                .bind(blob)
                .fetch_optional(&mut *tx)
                .await?;
            if linked.is_none() {
                return Ok(ManifestPut::MissingBlob(blob.clone()));
            }
        }
        for child in &m.manifests {
            let found = sqlx::query("SELECT 1 FROM registry_manifests WHERE repository = ? AND digest = ?")
                .bind(repo)
                .bind(child)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Ok(ManifestPut::MissingManifest(child.clone()));
            }
        }
        if let Some(tag) = &m.tag {
            let current = sqlx::query("SELECT digest FROM registry_tags WHERE repository = ? AND tag = ?")
                .bind(repo)
                .bind(tag)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get::<String, _>("digest"));
            let moves = current.is_some_and(|d| d != m.row.digest);
            if moves && repository.tag_mutability == "IMMUTABLE" {
                return Ok(ManifestPut::TagImmutable);
            }
            sqlx::query("INSERT OR REPLACE INTO registry_tags (repository, tag, digest) VALUES (?, ?, ?)")
                .bind(repo)
                .bind(tag)
                .bind(&m.row.digest)
                .execute(&mut *tx)
                .await?;
        }
        link(&mut tx, repo, &m.row.digest, m.row.size, m.now_ms).await?;
        let existing = sqlx::query("SELECT doc FROM registry_manifests WHERE repository = ? AND digest = ?")
            .bind(repo)
            .bind(&m.row.digest)
            .fetch_optional(&mut *tx)
            .await?;
        // Pushing the same manifest again keeps its first push time.
        if existing.is_none() {
            sqlx::query("INSERT INTO registry_manifests (repository, digest, subject, doc) VALUES (?, ?, ?, ?)")
                .bind(repo)
                .bind(&m.row.digest)
                .bind(&m.row.subject)
                .bind(serde_json::to_string(&m.row)?)
                .execute(&mut *tx)
                .await?;
            for blob in m.blobs.iter().chain(&m.manifests) {
                sqlx::query(
                    "INSERT OR IGNORE INTO registry_manifest_refs (repository, manifest, digest) VALUES (?, ?, ?)",
                )
                .bind(repo)
                .bind(&m.row.digest)
                .bind(blob)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(ManifestPut::Stored)
    }

    async fn get_manifest(&self, repository: &str, digest: &str) -> Result<Option<ManifestRow>> {
        let row = sqlx::query("SELECT doc FROM registry_manifests WHERE repository = ? AND digest = ?")
            .bind(repository)
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    async fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT digest FROM registry_tags WHERE repository = ? AND tag = ?")
            .bind(repository)
            .bind(tag)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get("digest")))
    }

    async fn list_tags(&self, repository: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM registry_tags WHERE repository = ? AND tag > ? ORDER BY tag LIMIT ?")
            .bind(repository)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get("tag")).collect())
    }

    async fn referrers(&self, repository: &str, digest: &str) -> Result<Vec<ManifestRow>> {
        let rows =
            sqlx::query("SELECT doc FROM registry_manifests WHERE repository = ? AND subject = ? ORDER BY digest")
                .bind(repository)
                .bind(digest)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(manifest_row).collect()
    }

    async fn manifests(&self, repository: &str) -> Result<Vec<(ManifestRow, Vec<String>)>> {
        let rows = sqlx::query(
            "SELECT m.doc, (SELECT group_concat(t.tag, ' ') FROM registry_tags t
                            WHERE t.repository = m.repository AND t.digest = m.digest) AS tags
             FROM registry_manifests m WHERE m.repository = ?",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let mut tags: Vec<String> = r
                    .get::<Option<String>, _>("tags")
                    .map(|t| t.split(' ').map(str::to_string).collect())
                    .unwrap_or_default();
                tags.sort();
                Ok((manifest_row(r)?, tags))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.0.pushed_ms, &a.0.digest).cmp(&(b.0.pushed_ms, &b.0.digest)));
        Ok(out)
    }

    async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<ManifestDelete> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let by = sqlx::query(
            "SELECT manifest FROM registry_manifest_refs WHERE repository = ? AND digest = ? AND manifest != ? LIMIT 1",
        )
        .bind(repository)
        .bind(digest)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(by) = by {
            return Ok(ManifestDelete::ReferencedBy(by.get("manifest")));
        }
        let gone = sqlx::query("DELETE FROM registry_manifests WHERE repository = ? AND digest = ?")
            .bind(repository)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Ok(ManifestDelete::Missing);
        }
        let mut released: Vec<String> =
            sqlx::query("SELECT digest FROM registry_manifest_refs WHERE repository = ? AND manifest = ?")
                .bind(repository)
                .bind(digest)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get("digest"))
                .collect();
        released.push(digest.to_string());
        for sql in [
            "DELETE FROM registry_manifest_refs WHERE repository = ? AND manifest = ?",
            "DELETE FROM registry_tags WHERE repository = ? AND digest = ?",
        ] {
            sqlx::query(sql).bind(repository).bind(digest).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ManifestDelete::Deleted(released))
    }

    async fn delete_tag(&self, repository: &str, tag: &str) -> Result<Option<String>> {
        let row = sqlx::query("DELETE FROM registry_tags WHERE repository = ? AND tag = ? RETURNING digest")
            .bind(repository)
            .bind(tag)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get("digest")))
    }

    async fn collect_blobs(&self, c: &Collect) -> Result<Vec<String>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT digest, touched_ms FROM registry_blobs b WHERE touched_ms < ?
               AND NOT EXISTS (SELECT 1 FROM registry_manifest_refs r WHERE r.digest = b.digest)
               AND NOT EXISTS (SELECT 1 FROM registry_manifests m WHERE m.digest = b.digest)",
        )
        .bind(c.started_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut gone = Vec::new();
        for row in rows {
            let digest: String = row.get("digest");
            let touched: i64 = row.get("touched_ms");
            let stale = touched < c.stale_before_ms;
            if c.keep.contains(&digest) || (!stale && !c.released.contains(&digest)) {
                continue;
            }
            if !stale {
                let elsewhere = sqlx::query("SELECT 1 FROM registry_repo_blobs WHERE digest = ? AND repository != ?")
                    .bind(&digest)
                    .bind(&c.repository)
                    .fetch_optional(&mut *tx)
                    .await?;
                if elsewhere.is_some() {
                    continue;
                }
            }
            for sql in
                ["DELETE FROM registry_blobs WHERE digest = ?", "DELETE FROM registry_repo_blobs WHERE digest = ?"]
            {
                sqlx::query(sql).bind(&digest).execute(&mut *tx).await?;
            }
            gone.push(digest);
        }
        tx.commit().await?;
        Ok(gone)
    }
}

async fn repository_exists(tx: &mut sqlx::SqliteConnection, name: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM registry_repositories WHERE name = ?").bind(name).fetch_optional(tx).await?;
    Ok(row.is_some())
}

async fn link(tx: &mut sqlx::SqliteConnection, repository: &str, digest: &str, size: u64, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_blobs (digest, size, touched_ms) VALUES (?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET touched_ms = excluded.touched_ms",
    )
    .bind(digest)
    .bind(size as i64)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT OR IGNORE INTO registry_repo_blobs (repository, digest) VALUES (?, ?)")
        .bind(repository)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, mutability: &str) -> Repository {
        Repository {
            name: name.into(),
            created_ms: 1,
            tag_mutability: mutability.into(),
            scan_on_push: false,
            tags: BTreeMap::new(),
        }
    }

    fn manifest(repo: &str, digest: &str, blobs: &[&str], tag: Option<&str>) -> PutManifest {
        PutManifest {
            row: ManifestRow {
                repository: repo.into(),
                digest: digest.into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                artifact_type: None,
                subject: None,
                size: 10,
                image_size: 0,
                pushed_ms: 5,
                annotations: None,
            },
            blobs: blobs.iter().map(|b| b.to_string()).collect(),
            manifests: vec![],
            tag: tag.map(str::to_string),
            now_ms: 5,
        }
    }

    #[tokio::test]
    async fn manifests_need_their_blobs_and_immutable_tags_stay() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        assert!(meta.create_repository(&repo("a", "IMMUTABLE")).await.unwrap());
        assert!(!meta.create_repository(&repo("a", "MUTABLE")).await.unwrap());
        assert!(!meta.commit_blob("nope", "sha256:1", 3, 1).await.unwrap());
        let put = manifest("a", "sha256:m1", &["sha256:1"], Some("v1"));
        assert_eq!(meta.put_manifest(&put).await.unwrap(), ManifestPut::MissingBlob("sha256:1".into()));
        assert!(meta.commit_blob("a", "sha256:1", 3, 1).await.unwrap());
        assert_eq!(meta.put_manifest(&put).await.unwrap(), ManifestPut::Stored);
        assert_eq!(meta.put_manifest(&put).await.unwrap(), ManifestPut::Stored);
        let moved = manifest("a", "sha256:m2", &["sha256:1"], Some("v1"));
        assert_eq!(meta.put_manifest(&moved).await.unwrap(), ManifestPut::TagImmutable);
        assert_eq!(meta.tag("a", "v1").await.unwrap().as_deref(), Some("sha256:m1"));
        assert_eq!(meta.delete_repository("a", false).await.unwrap(), RepositoryDelete::NotEmpty);
        assert_eq!(meta.mount_blob("a", "b", "sha256:1", 2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn collection_spares_referenced_recent_and_kept_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        meta.create_repository(&repo("a", "MUTABLE")).await.unwrap();
        meta.create_repository(&repo("b", "MUTABLE")).await.unwrap();
        for (d, t) in [("sha256:l1", 1), ("sha256:l2", 1), ("sha256:old", 1), ("sha256:new", 50), ("sha256:kept", 1)] {
            meta.commit_blob("a", d, 1, t).await.unwrap();
        }
        // Pushed to b as well, whose manifest has not come yet.
        meta.commit_blob("a", "sha256:pending", 1, 10).await.unwrap();
        meta.commit_blob("b", "sha256:pending", 1, 10).await.unwrap();
        assert_eq!(meta.mount_blob("a", "b", "sha256:l2", 1).await.unwrap(), Some(1));
        meta.put_manifest(&manifest("a", "sha256:m1", &["sha256:l1", "sha256:l2"], Some("x"))).await.unwrap();
        meta.put_manifest(&manifest("b", "sha256:m2", &["sha256:l2"], None)).await.unwrap();
        let ManifestDelete::Deleted(released) = meta.delete_manifest("a", "sha256:m1").await.unwrap() else {
            panic!("not deleted")
        };
        assert_eq!(meta.tag("a", "x").await.unwrap(), None);
        let c = Collect {
            started_ms: 40,
            stale_before_ms: 2,
            released: released.into_iter().chain(["sha256:pending".to_string()]).collect(),
            repository: "a".into(),
            keep: HashSet::from(["sha256:kept".to_string()]),
        };
        let mut gone = meta.collect_blobs(&c).await.unwrap();
        gone.sort();
        // l2 is still referenced by b's manifest, new was committed after
        // the collection started, kept is held by someone else, pending is
        // in b too.
        assert_eq!(gone, ["sha256:l1", "sha256:m1", "sha256:old"]);
        assert_eq!(meta.repo_blob("a", "sha256:l1").await.unwrap(), None);
        assert_eq!(meta.repo_blob("b", "sha256:l2").await.unwrap(), Some(1));
        match meta.delete_repository("b", true).await.unwrap() {
            RepositoryDelete::Deleted { released, .. } => {
                assert_eq!(
                    HashSet::<String>::from_iter(released),
                    HashSet::from(["sha256:l2".into(), "sha256:m2".into()])
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
