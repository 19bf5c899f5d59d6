//! Blobs: reading, deleting, mounting, and uploads (monolithic, chunked,
//! streamed). An upload's bytes stream to its file as they arrive, hashed on
//! the way (sha256; a sha512 digest is checked by reading the file back),
//! never held whole in memory. A chunk that fails half-way is rolled back,
//! so the upload is as it was before the chunk.
//!
//! A chunk is written by a thread of its own while the request task
//! receives and hashes the next bytes, past the page cache
//! ([`BlockWriter`]): no second copy of every byte, and the `fsync` when
//! the blob is committed has no backlog of the whole blob to wait for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use nimbus_store::direct::BlockWriter;
use sha2::{Digest as _, Sha256, Sha512};

use crate::rules::{self, Algorithm, Digest};
use crate::{now_ms, Registry, RegistryError, Result};

struct Upload {
    repository: String,
    /// Finished or cancelled: a request that waited for the lock meanwhile
    /// must not write to a file that is now a blob, or gone.
    closed: bool,
    /// When a request last used it.
    touched: Instant,
    size: u64,
    hasher: Sha256,
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

    /// Takes out the uploads no request has used for [`UPLOAD_IDLE_MAX`]
    /// (a client that gave up without cancelling); their files to remove.
    pub(crate) fn expire(&self, now: Instant) -> Vec<PathBuf> {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        table.retain(|_, u| match u.try_lock() {
            Ok(mut u) if now.duration_since(u.touched) > UPLOAD_IDLE_MAX => {
                u.closed = true;
                gone.push(u.path.clone());
                false
            }
            _ => true,
        });
        gone
    }
}

/// How long an upload may sit unused before it is dropped, checked
/// whenever an upload starts (as the distribution registry purges
/// abandoned uploads, though it waits longer).
pub const UPLOAD_IDLE_MAX: Duration = Duration::from_secs(24 * 3600);

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
        for path in self.uploads.expire(Instant::now()) {
            remove_quietly(&path).await;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.files.upload(&id);
        tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        let upload = Upload {
            repository: repository.to_string(),
            closed: false,
            touched: Instant::now(),
            size: 0,
            hasher: Sha256::new(),
            path,
        };
        self.uploads.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), Arc::new(upload.into()));
        Ok(id)
    }

    /// The upload, locked; unknown if closed or named under another repository.
    async fn upload(&self, repository: &str, id: &str) -> Result<tokio::sync::OwnedMutexGuard<Upload>> {
        let u = self.uploads.get(id).ok_or(RegistryError::BlobUploadUnknown)?.lock_owned().await;
        if u.closed || u.repository != repository {
            return Err(RegistryError::BlobUploadUnknown);
        }
        Ok(u)
    }

    /// Marks the upload closed and takes it out of the table.
    fn close(&self, u: &mut Upload, id: &str) {
        u.closed = true;
        self.uploads.remove(id);
    }

    /// How many bytes an upload holds.
    pub async fn upload_size(&self, repository: &str, id: &str) -> Result<u64> {
        Ok(self.upload(repository, id).await?.size)
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
        let mut u = self.upload(repository, id).await?;
        append_to(&mut u, range, body).await?;
        Ok(u.size)
    }

    /// Cancels an upload, removing its bytes.
    pub async fn cancel_upload(&self, repository: &str, id: &str) -> Result<()> {
        let mut u = self.upload(repository, id).await?;
        self.close(&mut u, id);
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
        let mut u = self.upload(repository, id).await?;
        append_to(&mut u, range, body).await?;
        self.close(&mut u, id);
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
            // Still open if its bytes were refused before the digest check.
            if let Ok(mut u) = self.upload(repository, &id).await {
                self.close(&mut u, &id);
                remove_quietly(&u.path).await;
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

/// Appends a chunk to a locked upload, or leaves it as it was.
async fn append_to(u: &mut Upload, range: Option<(u64, u64)>, body: impl BodyStream) -> Result<()> {
    if let Some((start, end)) = range {
        rules::check_chunk(u.size, start, end)?;
    }
    u.touched = Instant::now();
    let (size, hasher) = (u.size, u.hasher.clone());
    // Closed until the chunk is applied or rolled back: were this future
    // dropped meanwhile, its size and hash would be ahead of its file.
    u.closed = true;
    let written = write_chunk(u, body, range.map(|(s, e)| e - s + 1)).await;
    if written.is_err() {
        tokio::fs::OpenOptions::new().write(true).open(&u.path).await?.set_len(size).await?;
        u.size = size;
        u.hasher = hasher;
    }
    u.closed = false;
    written
}

/// Receives a chunk, hashing it on the request task, while the blocking
/// pool appends what came before to the upload's file (see
/// [`nimbus_store::direct::in_batches`]).
async fn write_chunk(u: &mut Upload, body: impl BodyStream, expected: Option<u64>) -> Result<()> {
    let (path, len) = (u.path.clone(), u.size);
    let out =
        tokio::task::spawn_blocking(move || BlockWriter::append(&path, len)).await.map_err(std::io::Error::other)??;
    let mut written = 0u64;
    let checked = body.map(|chunk| {
        let chunk = chunk.map_err(|e| RegistryError::Body(e.to_string()))?;
        written += chunk.len() as u64;
        if expected.is_some_and(|n| written > n) {
            return Err(RegistryError::RangeInvalid { size: len });
        }
        u.hasher.update(&chunk);
        u.size += chunk.len() as u64;
        Ok(chunk)
    });
    let append = |mut out: BlockWriter, batch: Vec<Bytes>| -> Result<BlockWriter> {
        for chunk in &batch {
            out.write(chunk)?;
        }
        Ok(out)
    };
    let out = nimbus_store::direct::in_batches(out, Vec::new(), std::pin::pin!(checked), append).await?;
    if expected.is_some_and(|n| written != n) {
        return Err(RegistryError::RangeInvalid { size: u.size - written });
    }
    tokio::task::spawn_blocking(move || out.close().map(drop)).await.map_err(std::io::Error::other)??;
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
