//! Container images as execution roots: each image's layers flattened, once
//! per manifest digest, into one directory that every environment of that
//! image binds read-only (see `nimbus-sandbox`).
//!
//! This crate owns unpacking (`flatten.rs`: layer formats, whiteouts, the
//! checks that keep a hostile layer inside its root, the size limit) and the
//! directory of roots (`<dir>/roots/<hex of the manifest digest>`). It must
//! not know where layers come from (the registry hands their blob paths) nor
//! what runs in a root.

mod flatten;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use flatten::MOUNT_POINTS;

/// One layer of an image, bottom first in a list.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob's digest (`sha256:…`), for messages.
    pub digest: String,
    /// OCI or Docker layer media type: it says the compression.
    pub media_type: String,
    /// The blob on disk.
    pub path: PathBuf,
    /// The image config's `rootfs.diff_ids` entry: the sha256 of the
    /// uncompressed tar. Empty: not checked.
    pub diff_id: String,
}

/// What an image may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The uncompressed size of all layers together (their tar streams):
    /// Lambda's image quota is 10 GB.
    pub max_unpacked_bytes: u64,
    /// The entries of all layers together (files, directories, links and
    /// whiteouts): each costs an inode, which the byte limit does not
    /// count (an empty file is 512 bytes of tar: 10 GB hold 20 million).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_unpacked_bytes: 10 * 1024 * 1024 * 1024, max_entries: 1_000_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a sha256 manifest digest: {0}")]
    BadDigest(String),
    #[error("layer {layer} has the unsupported media type {media_type}")]
    UnknownMediaType { layer: String, media_type: String },
    #[error("the image's layers exceed the limit of {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    #[error("the image's layers hold more than {limit} files, directories and links")]
    TooManyEntries { limit: u64 },
    #[error("layer {layer} does not match its diff_id: expected {expected}, got {actual}")]
    DiffIdMismatch { layer: String, expected: String, actual: String },
    /// An entry that would land (or link, or delete) outside the root.
    #[error("layer {layer} has an entry escaping the image root: {path}")]
    Escape { layer: String, path: String },
    #[error("layer {layer}: {source}")]
    Layer { layer: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One cell per digest being or already unpacked by this process:
/// concurrent requests for one image wait for one unpacking.
type Cell = Arc<tokio::sync::OnceCell<PathBuf>>;

/// The roots of the node's images.
pub struct Images {
    dir: PathBuf,
    limits: Limits,
    cells: Mutex<HashMap<String, Cell>>,
}

/// An image's flattened root, held: [`Images::retain`] leaves a root alone
/// while a `Root` of it lives (an environment or a task runs there, or is
/// about to).
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    /// A clone of the digest's cell: the cell's count tells whether any
    /// `Root` of it lives.
    _hold: Option<Cell>,
}

/// Roots are the same root whoever holds them.
impl PartialEq for Root {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Root {}

impl Root {
    /// A root this crate does not manage (tests, roots made elsewhere).
    pub fn unmanaged(path: PathBuf) -> Self {
        Self { path, _hold: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Images {
    /// Roots live under `dir`; what an earlier process left half unpacked
    /// (under `dir/staging`) is removed.
    pub fn open(dir: PathBuf, limits: Limits) -> Self {
        let _ = std::fs::remove_dir_all(dir.join("staging"));
        Self { dir, limits, cells: Mutex::default() }
    }

    fn roots(&self) -> PathBuf {
        self.dir.join("roots")
    }

    /// The flattened root of this image (unpacked once per manifest digest,
    /// then shared read-only).
    pub async fn root(&self, manifest_digest: &str, layers: &[Layer]) -> Result<Root, ImageError> {
        let hex = digest_hex(manifest_digest)?.to_string();
        let target = self.roots().join(&hex);
        let cell = self.cells.lock().unwrap_or_else(|e| e.into_inner()).entry(hex).or_default().clone();
        let root = cell
            .get_or_try_init(|| async {
                if target.is_dir() {
                    return Ok::<_, ImageError>(target.clone());
                }
                let (staging, roots, into, layers, limits) =
                    (self.dir.join("staging"), self.roots(), target.clone(), layers.to_vec(), self.limits);
                tokio::task::spawn_blocking(move || unpack(&staging, &roots, &into, &layers, limits))
                    .await
                    .map_err(|e| ImageError::Io(std::io::Error::other(e)))??;
                Ok(target)
            })
            .await?;
        let path = root.clone();
        Ok(Root { path, _hold: Some(cell) })
    }

    /// Removes every root whose manifest digest is not in `keep` and that
    /// no [`Root`] holds; returns how many went. A root goes out of sight
    /// (renamed) before it is deleted.
    pub async fn retain(&self, keep: &HashSet<String>) -> Result<usize, ImageError> {
        let keep: HashSet<String> = keep.iter().filter_map(|d| digest_hex(d).ok()).map(str::to_string).collect();
        let (roots, staging) = (self.roots(), self.dir.join("staging"));
        let gone = {
            let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            for entry in std::fs::read_dir(&roots).into_iter().flatten() {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let held = cells.get(&name).is_some_and(|c| Arc::strong_count(c) > 1);
                if keep.contains(&name) || held {
                    continue;
                }
                std::fs::create_dir_all(&staging)?;
                let doomed = staging.join(format!("gone-{name}"));
                std::fs::rename(entry.path(), &doomed)?;
                cells.remove(&name);
                gone.push(doomed);
            }
            gone
        };
        let count = gone.len();
        tokio::task::spawn_blocking(move || gone.iter().try_for_each(std::fs::remove_dir_all))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e)))??;
        Ok(count)
    }
}

/// The hex of a `sha256:` digest: it names a directory, so nothing else passes.
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| ImageError::BadDigest(digest.to_string()))
}

/// Flattens into a fresh directory under `staging`, then renames it into
/// place: a crash or a refused layer leaves no root visible.
fn unpack(staging: &Path, roots: &Path, target: &Path, layers: &[Layer], limits: Limits) -> Result<(), ImageError> {
    std::fs::create_dir_all(staging)?;
    std::fs::create_dir_all(roots)?;
    let work = staging.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir(&work)?;
    let began = std::time::Instant::now();
    let result = flatten::flatten(layers, &work, &limits)
        .and_then(|bytes| std::fs::rename(&work, target).map(|()| bytes).map_err(ImageError::from));
    match result {
        Ok(bytes) => {
            let secs = began.elapsed().as_secs_f64();
            tracing::info!(root = %target.display(), bytes, secs, "image unpacked at {:.0} MB/s", bytes as f64 / 1e6 / secs.max(1e-9));
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
