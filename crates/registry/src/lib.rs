//! The built-in container registry: the OCI distribution spec's rules and
//! storage (repositories, content-addressed blobs, uploads, manifests,
//! tags, referrers), ECR's repository rules, registry credentials, and
//! garbage collection of blobs. Image functions and tasks find their images
//! through [`Registry::resolve`].
//!
//! This crate does not speak HTTP (`nimbus-api` maps requests and errors)
//! and keeps no metadata but through `nimbus_store::RegistryMeta`.

pub mod auth;
mod files;
mod images;
pub mod manifests;
pub mod rules;
mod uploads;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::Account;
use nimbus_store::{Collect, RegistryMeta, RepositoryDelete};

pub use images::{Image, Pushed};
pub use nimbus_store::{ManifestRow, Repository};
pub use uploads::BodyStream;

/// Why a registry request failed. Each variant is one distribution-spec
/// error code ([`RegistryError::code`]) or one ECR exception.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest references a blob unknown to registry: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry: {0}")]
    ManifestUnknown(String),
    #[error("The image with digest {digest} is referenced by the manifest list {by}, and cannot be deleted before it")]
    ManifestReferenced { digest: String, by: String },
    #[error("{0}")]
    NameInvalid(String),
    #[error("The repository with name '{name}' does not exist in the registry with id '{registry}'")]
    NameUnknown { name: String, registry: String },
    /// A chunk or range that does not fit what is stored (HTTP 416).
    #[error("requested range not satisfiable")]
    RangeInvalid { size: u64 },
    #[error(
        "The image tag '{tag}' already exists in the '{repository}' repository and cannot be overwritten because the repository is immutable."
    )]
    TagImmutable { tag: String, repository: String },
    #[error("The repository with name '{name}' already exists in the registry with id '{registry}'")]
    RepositoryExists { name: String, registry: String },
    #[error(
        "The repository with name '{name}' in registry with id '{registry}' cannot be deleted because it still contains images"
    )]
    RepositoryNotEmpty { name: String, registry: String },
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("registry store: {0}")]
    Store(#[from] nimbus_store::Error),
    #[error("registry files: {0}")]
    Io(#[from] std::io::Error),
}

impl RegistryError {
    /// The distribution spec's error code.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => "BLOB_UNKNOWN",
            RangeInvalid { .. } | Body(_) => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid(_) => "DIGEST_INVALID",
            ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            NameInvalid(_) => "NAME_INVALID",
            NameUnknown { .. } => "NAME_UNKNOWN",
            // What ECR answers a push that would move an immutable tag.
            TagImmutable { .. } => "TAG_INVALID",
            RepositoryExists { .. } | RepositoryNotEmpty { .. } | ManifestReferenced { .. } | TooManyTags(_) => {
                "DENIED"
            }
            Store(_) | Io(_) => "UNKNOWN",
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Who else holds images (functions, tasks), asked by garbage collection.
#[async_trait]
pub trait ImageUsers: Send + Sync {
    /// Manifest digests in use.
    async fn manifests_in_use(&self) -> HashSet<String>;
}

/// An image found by [`Registry::resolve`].
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub repository: String,
    /// Manifest digest "sha256:…" (for an index: the linux/amd64 manifest chosen).
    pub digest: String,
    /// "<registry host>/<repository>@sha256:…"
    pub resolved_uri: String,
    pub config: oci_spec::image::ImageConfiguration,
    /// In order, bottom first.
    pub layers: Vec<LayerBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub path: PathBuf,
}

/// How long a blob no manifest refers to is kept: a push uploads its blobs
/// before its manifest, and a collection in between must not take them.
pub const UNREFERENCED_GRACE: Duration = Duration::from_secs(3600);

pub struct Registry {
    meta: Arc<dyn RegistryMeta>,
    files: files::Files,
    account: Account,
    tokens: auth::Tokens,
    uploads: uploads::Uploads,
    /// Commits (rename into place + the row) hold it shared, a collection
    /// exclusively: a blob is never unlinked between its rename and its row.
    gc: tokio::sync::RwLock<()>,
    users: std::sync::RwLock<Option<Arc<dyn ImageUsers>>>,
    /// Changes of a repository's settings and tags take turns: each reads
    /// the repository and writes it whole.
    repository_edits: tokio::sync::Mutex<()>,
}

pub(crate) use nimbus_core::clock::now_ms;

impl Registry {
    /// Opens the registry kept under `dir`: removes uploads a stopped node
    /// left and blob files no commit recorded. `secret` signs credentials.
    pub async fn open(dir: PathBuf, meta: Arc<dyn RegistryMeta>, account: Account, secret: &str) -> Result<Self> {
        let files =
            tokio::task::spawn_blocking(move || files::Files::open(&dir)).await.map_err(std::io::Error::other)??;
        let known = meta.blob_digests().await?;
        let sweeper = files.clone();
        let swept =
            tokio::task::spawn_blocking(move || sweeper.sweep(&known)).await.map_err(std::io::Error::other)??;
        if swept > 0 {
            tracing::info!(swept, "removed blob files an interrupted push left");
        }
        Ok(Self {
            meta,
            files,
            account,
            tokens: auth::Tokens::new(secret),
            uploads: Default::default(),
            gc: Default::default(),
            users: Default::default(),
            repository_edits: Default::default(),
        })
    }

    /// Lets garbage collection ask who else holds images.
    pub fn set_users(&self, users: Arc<dyn ImageUsers>) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Some(users);
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    pub fn tokens(&self) -> &auth::Tokens {
        &self.tokens
    }

    fn name_unknown(&self, name: &str) -> RegistryError {
        RegistryError::NameUnknown { name: name.to_string(), registry: self.account.id.clone() }
    }

    /// The repository, or NAME_UNKNOWN.
    pub async fn repository(&self, name: &str) -> Result<Repository> {
        self.meta.get_repository(name).await?.ok_or_else(|| self.name_unknown(name))
    }

    pub async fn create_repository(
        &self,
        name: &str,
        tag_mutability: &str,
        scan_on_push: bool,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<Repository> {
        rules::check_name(name)?;
        let r = Repository {
            name: name.to_string(),
            created_ms: now_ms(),
            tag_mutability: tag_mutability.to_string(),
            scan_on_push,
            tags,
        };
        if !self.meta.create_repository(&r).await? {
            return Err(RegistryError::RepositoryExists { name: name.into(), registry: self.account.id.clone() });
        }
        Ok(r)
    }

    /// Repositories by name after `after`, at most `limit`.
    pub async fn repositories(&self, after: Option<&str>, limit: u32) -> Result<Vec<Repository>> {
        Ok(self.meta.list_repositories(after, limit).await?)
    }

    /// Changes a repository's settings or tags with `change`; what it
    /// refuses is not stored.
    pub async fn update_repository(
        &self,
        name: &str,
        change: impl FnOnce(&mut Repository) -> Result<()>,
    ) -> Result<Repository> {
        let _turn = self.repository_edits.lock().await;
        let mut r = self.repository(name).await?;
        change(&mut r)?;
        if !self.meta.put_repository(&r).await? {
            return Err(self.name_unknown(name));
        }
        Ok(r)
    }

    /// Deletes a repository (with its images if `force`) and collects the
    /// blobs it alone held.
    pub async fn delete_repository(&self, name: &str, force: bool) -> Result<Repository> {
        match self.meta.delete_repository(name, force).await? {
            RepositoryDelete::Missing => Err(self.name_unknown(name)),
            RepositoryDelete::NotEmpty => {
                Err(RegistryError::RepositoryNotEmpty { name: name.into(), registry: self.account.id.clone() })
            }
            RepositoryDelete::Deleted { repository, released } => {
                self.collect(name, released).await?;
                Ok(repository)
            }
        }
    }

    /// Garbage collection: removes blobs no manifest refers to that were
    /// `released` by a deletion in `repository` and are in no other
    /// repository (or have been unreferenced for [`UNREFERENCED_GRACE`]),
    /// sparing what [`ImageUsers`] hold and anything committed after the
    /// collection started. Returns how many blobs went.
    pub async fn collect(&self, repository: &str, released: Vec<String>) -> Result<usize> {
        let started_ms = now_ms();
        let users = self.users.read().unwrap_or_else(|e| e.into_inner()).clone();
        let in_use = match users {
            Some(u) => u.manifests_in_use().await,
            None => HashSet::new(),
        };
        let keep = self.held_by(in_use).await;
        let _exclusive = self.gc.write().await;
        let c = Collect {
            started_ms,
            stale_before_ms: started_ms - UNREFERENCED_GRACE.as_millis() as i64,
            released: released.into_iter().collect(),
            repository: repository.to_string(),
            keep,
        };
        let gone = self.meta.collect_blobs(&c).await?;
        let files = self.files.clone();
        let count = gone.len();
        tokio::task::spawn_blocking(move || files.remove(&gone)).await.map_err(std::io::Error::other)??;
        if count > 0 {
            tracing::info!(blobs = count, "registry garbage collected");
        }
        Ok(count)
    }

    /// The blobs held by manifests in use: the manifests themselves and
    /// what they refer to, read from their stored bytes (the manifest's
    /// row may already be deleted while a function still runs it).
    async fn held_by(&self, manifests: HashSet<String>) -> HashSet<String> {
        let mut keep = HashSet::new();
        let mut todo: Vec<String> = manifests.into_iter().collect();
        while let Some(digest) = todo.pop() {
            if !keep.insert(digest.clone()) {
                continue;
            }
            let Ok(d) = digest.parse::<rules::Digest>() else { continue };
            let Ok(bytes) = tokio::fs::read(self.files.blob(&d)).await else { continue };
            if let Ok(p) = manifests::parse(None, &bytes) {
                keep.extend(p.blobs.into_iter().map(|(d, _)| d));
                todo.extend(p.manifests);
            }
        }
        keep
    }
}
