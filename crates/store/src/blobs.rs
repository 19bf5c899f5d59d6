//! Content-addressed storage of archives: a blob's name is the hex sha256 of
//! its bytes, so equal uploads are stored once.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

#[async_trait]
pub trait Blobs: Send + Sync {
    /// Stores `bytes` durably and returns their hex sha256.
    async fn put(&self, bytes: Vec<u8>) -> Result<String>;
    async fn get(&self, sha256_hex: &str) -> Result<Vec<u8>>;
    /// Deletes every blob not in `keep`; returns how many went.
    async fn retain(&self, keep: &HashSet<String>) -> Result<usize>;
}

/// Blobs as files `<root>/<first two hex>/<hash>`.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, sha: &str) -> Result<PathBuf> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::MissingBlob(sha.to_string()));
        }
        Ok(self.root.join(&sha[..2]).join(sha))
    }
}

fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

#[async_trait]
impl Blobs for FsBlobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<String> {
        let sha = hex::encode(Sha256::digest(&bytes));
        let path = self.path(&sha)?;
        if tokio::fs::try_exists(&path).await? {
            return Ok(sha);
        }
        let dir = self.root.join(&sha[..2]);
        tokio::task::spawn_blocking(move || write_durably(&dir, &path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(sha)
    }

    async fn get(&self, sha: &str) -> Result<Vec<u8>> {
        match tokio::fs::read(self.path(sha)?).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::MissingBlob(sha.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn retain(&self, keep: &HashSet<String>) -> Result<usize> {
        let root = self.root.clone();
        let keep = keep.clone();
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            let mut removed = 0;
            for shard in std::fs::read_dir(&root)? {
                let shard = shard?.path();
                if !shard.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(&shard)? {
                    let path = entry?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    // Leftover temp files are from writes a crash interrupted.
                    if name.starts_with(".tmp-") || !keep.contains(name) {
                        std::fs::remove_file(&path)?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_reads_back_and_collects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path()).unwrap();
        let a = blobs.put(b"alpha".to_vec()).await.unwrap();
        assert_eq!(a, hex::encode(Sha256::digest(b"alpha")));
        assert_eq!(blobs.put(b"alpha".to_vec()).await.unwrap(), a);
        let b = blobs.put(b"beta".to_vec()).await.unwrap();
        assert_eq!(blobs.get(&a).await.unwrap(), b"alpha");
        assert_eq!(blobs.retain(&HashSet::from([b.clone()])).await.unwrap(), 1);
        assert!(matches!(blobs.get(&a).await, Err(Error::MissingBlob(_))));
        assert_eq!(blobs.get(&b).await.unwrap(), b"beta");
        assert!(blobs.get("../../etc/passwd").await.is_err());
    }
}
