//! Blobs: reading, deleting, mounting, and uploads (monolithic, chunked,
//! streamed). An upload's bytes stream to its file as they arrive, hashed on
//! the way (sha256; a sha512 digest is checked by reading the file back),
//! never held whole in memory. A chunk that fails half-way is rolled back,
//! so the upload is as it was before the chunk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::io::AsyncWriteExt;

use crate::rules::{self, Algorithm, Digest};
use crate::{now_ms, Registry, RegistryError, Result};

struct Upload {
    repository: String,
    size: u64,
    hasher: Sha256,
    file: tokio::fs::File,
    path: PathBuf,
}

/// Uploads in progress, by id. Each has its own lock: its chunks are
/// applied one at a time.
#[derive(Default)]
pub(crate) struct Uploads(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>);

impl Uploads {
    fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Upload>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Upload>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// A request body as a stream of chunks.
pub trait BodyStream: Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin {}
impl<S: Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin> BodyStream for S {}

impl Registry {
    /// The size of a blob in the repository, or BLOB_UNKNOWN.
    pub async fn stat_blob(&self, repository: &str, digest: &str) -> Result<u64> {
        self.repository(repository).await?;
        let d: Digest = digest.parse()?;
        self.meta.repo_blob(repository, &d.to_string()).await?.ok_or_else(|| RegistryError::BlobUnknown(digest.into()))
    }

    /// A blob's file, opened, and its size.
    pub async fn open_blob(&self, repository: &str, digest: &str) -> Result<(tokio::fs::File, u64)> {
        let size = self.stat_blob(repository, digest).await?;
        let path = self.files.blob(&digest.parse()?);
        match tokio::fs::File::open(path).await {
            Ok(f) => Ok((f, size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::BlobUnknown(digest.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob from the repository; the bytes go if no manifest
    /// and no other repository has them.
    pub async fn delete_blob(&self, repository: &str, digest: &str) -> Result<()> {
        self.repository(repository).await?;
        let d = digest.parse::<Digest>()?.to_string();
        if !self.meta.unlink_blob(repository, &d).await? {
            return Err(RegistryError::BlobUnknown(digest.into()));
        }
        self.collect(repository, vec![d]).await?;
        Ok(())
    }

    /// Cross-repository mount: links `from`'s blob into `repository`. The
    /// size if mounted, `None` if `from` does not hold it.
    pub async fn mount_blob(&self, repository: &str, from: &str, digest: &str) -> Result<Option<u64>> {
        self.repository(repository).await?;
        let d: Digest = digest.parse()?;
        let _shared = self.gc.read().await;
        Ok(self.meta.mount_blob(from, repository, &d.to_string(), now_ms()).await?)
    }

    /// Starts an upload into an existing repository; its id.
    pub async fn start_upload(&self, repository: &str) -> Result<String> {
        self.repository(repository).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.files.upload(&id);
        let file = tokio::fs::OpenOptions::new().append(true).create_new(true).open(&path).await?;
        let upload = Upload { repository: repository.to_string(), size: 0, hasher: Sha256::new(), file, path };
        self.uploads.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), Arc::new(upload.into()));
        Ok(id)
    }

    fn upload(&self, repository: &str, id: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>> {
        self.uploads.get(id).ok_or(RegistryError::BlobUploadUnknown).and_then(|u| {
            // The id is a UUID; naming it under another repository finds nothing.
            match u.try_lock().map(|g| g.repository == repository) {
                Ok(false) => Err(RegistryError::BlobUploadUnknown),
                _ => Ok(u),
            }
        })
    }

    /// How many bytes an upload holds.
    pub async fn upload_size(&self, repository: &str, id: &str) -> Result<u64> {
        let u = self.upload(repository, id)?;
        let u = u.lock().await;
        Ok(u.size)
    }

    /// Appends a chunk. With `range` (the `Content-Range`), the chunk must
    /// start where the upload ends and hold exactly that many bytes, else
    /// 416 and nothing is kept. Returns the upload's new size.
    pub async fn append(
        &self,
        repository: &str,
        id: &str,
        range: Option<(u64, u64)>,
        body: impl BodyStream,
    ) -> Result<u64> {
        let u = self.upload(repository, id)?;
        let mut u = u.lock().await;
        if u.repository != repository {
            return Err(RegistryError::BlobUploadUnknown);
        }
        if let Some((start, end)) = range {
            rules::check_chunk(u.size, start, end)?;
        }
        let (size, hasher) = (u.size, u.hasher.clone());
        let written = write_chunk(&mut u, body, range.map(|(s, e)| e - s + 1)).await;
        match written {
            Ok(_) => Ok(u.size),
            Err(e) => {
                u.file.set_len(size).await?;
                u.size = size;
                u.hasher = hasher;
                Err(e)
            }
        }
    }

    /// Cancels an upload, removing its bytes.
    pub async fn cancel_upload(&self, repository: &str, id: &str) -> Result<()> {
        self.upload(repository, id)?;
        let u = self.uploads.remove(id).ok_or(RegistryError::BlobUploadUnknown)?;
        let u = u.lock().await;
        remove_quietly(&u.path).await;
        Ok(())
    }

    /// Completes an upload with an optional last chunk: the bytes must hash
    /// to `digest`, else DIGEST_INVALID and the upload is discarded. The
    /// blob is then durable and in the repository.
    pub async fn finish_upload(
        &self,
        repository: &str,
        id: &str,
        digest: &str,
        range: Option<(u64, u64)>,
        body: impl BodyStream,
    ) -> Result<Digest> {
        let expected: Digest = digest.parse()?;
        self.append(repository, id, range, body).await?;
        let u = self.uploads.remove(id).ok_or(RegistryError::BlobUploadUnknown)?;
        let mut u = u.lock().await;
        u.file.flush().await?;
        let actual = match expected.algorithm {
            Algorithm::Sha256 => Digest { algorithm: Algorithm::Sha256, hex: hex::encode(u.hasher.clone().finalize()) },
            Algorithm::Sha512 => sha512_of(u.path.clone()).await?,
        };
        if actual != expected {
            remove_quietly(&u.path).await;
            return Err(RegistryError::DigestInvalid(format!(
                "provided digest {expected} did not match uploaded content ({actual})"
            )));
        }
        self.commit_file(repository, u.path.clone(), &actual, u.size).await?;
        Ok(actual)
    }

    /// A monolithic upload: the whole blob in one request.
    pub async fn put_blob(&self, repository: &str, digest: &str, body: impl BodyStream) -> Result<Digest> {
        digest.parse::<Digest>()?;
        let id = self.start_upload(repository).await?;
        let done = self.finish_upload(repository, &id, digest, None, body).await;
        if done.is_err() {
            if let Some(u) = self.uploads.remove(&id) {
                remove_quietly(&u.lock().await.path).await;
            }
        }
        done
    }

    /// Moves a verified file into place and records it in the repository.
    pub(crate) async fn commit_file(&self, repository: &str, file: PathBuf, d: &Digest, size: u64) -> Result<()> {
        let _shared = self.gc.read().await;
        let files = self.files.clone();
        let digest = d.clone();
        tokio::task::spawn_blocking(move || files.commit(&file, &digest)).await.map_err(std::io::Error::other)??;
        if !self.meta.commit_blob(repository, &d.to_string(), size, now_ms()).await? {
            return Err(self.name_unknown(repository));
        }
        Ok(())
    }

    /// A new upload file holding `bytes` (a manifest), for [`Self::commit_file`].
    pub(crate) async fn staged(&self, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.files.upload(&uuid::Uuid::new_v4().to_string());
        tokio::fs::write(&path, bytes).await?;
        Ok(path)
    }
}

async fn write_chunk(u: &mut Upload, mut body: impl BodyStream, expected: Option<u64>) -> Result<()> {
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Body(e.to_string()))?;
        written += chunk.len() as u64;
        if expected.is_some_and(|n| written > n) {
            return Err(RegistryError::RangeInvalid { size: u.size });
        }
        u.file.write_all(&chunk).await?;
        u.hasher.update(&chunk);
        u.size += chunk.len() as u64;
    }
    if expected.is_some_and(|n| written != n) {
        return Err(RegistryError::RangeInvalid { size: u.size - written });
    }
    Ok(())
}

async fn sha512_of(path: PathBuf) -> Result<Digest> {
    tokio::task::spawn_blocking(move || -> std::io::Result<Digest> {
        let mut hasher = Sha512::new();
        std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
        Ok(Digest { algorithm: Algorithm::Sha512, hex: hex::encode(hasher.finalize()) })
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(Into::into)
}

async fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(path = %path.display(), error = %e, "removing an upload file");
    }
}
