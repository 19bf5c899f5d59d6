//! Whole-object reads for Nimbus's own use (code deployed from the store):
//! the bytes of one object, bounded, without going through the S3 protocol.
//! It must not write, and it holds an object in memory only up to the limit
//! its caller gives.

use std::sync::Arc;

use futures_util::StreamExt;
use nimbus_store::ObjectMeta;

use crate::Files;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the key does not exist")]
    NoSuchKey,
    #[error("the version does not exist")]
    NoSuchVersion,
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Store(#[from] nimbus_store::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads objects whole. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    meta: Arc<dyn ObjectMeta>,
    files: Files,
}

impl Reader {
    pub fn new(meta: Arc<dyn ObjectMeta>, files: Files) -> Self {
        Self { meta, files }
    }

    /// The bytes of `bucket`/`key`. Buckets are not versioned, so the only
    /// version an object has is S3's `null`.
    pub async fn read(&self, bucket: &str, key: &str, version: Option<&str>, limit: u64) -> Result<Vec<u8>, ReadError> {
        if self.meta.get_bucket(bucket).await?.is_none() {
            return Err(ReadError::NoSuchBucket);
        }
        let o = self.meta.get_object(bucket, key).await?.ok_or(ReadError::NoSuchKey)?;
        if version.is_some_and(|v| v != "null") {
            return Err(ReadError::NoSuchVersion);
        }
        if o.size > limit {
            return Err(ReadError::TooLarge(limit));
        }
        let mut bytes = Vec::with_capacity(o.size as usize);
        let mut body = self.files.read(&o, 0, o.size).await?;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::objects::{Bucket, ObjectInfo};

    async fn store() -> (tempfile::TempDir, Reader, Arc<dyn ObjectMeta>, Files) {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn ObjectMeta> =
            Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("db.sqlite")).await.unwrap());
        let files = Files::open(dir.path().join("objects")).unwrap();
        (dir, Reader::new(meta.clone(), files.clone()), meta, files)
    }

    #[tokio::test]
    async fn reads_objects_within_the_limit_and_names_what_is_missing() {
        let (_dir, reader, meta, files) = store().await;
        assert!(matches!(reader.read("b", "k", None, 10).await, Err(ReadError::NoSuchBucket)));
        let bucket = Bucket {
            name: "b".into(),
            created_ms: 0,
            notifications: vec![],
            tags: Default::default(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        meta.create_bucket(&bucket, usize::MAX).await.unwrap();
        assert!(matches!(reader.read("b", "k", None, 10).await, Err(ReadError::NoSuchKey)));

        std::fs::write(files.path("f1"), b"hello").unwrap();
        let o = ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            file: "f1".into(),
            size: 5,
            etag: String::new(),
            modified_ms: 0,
            headers: Default::default(),
            tags: Default::default(),
            checksum: None,
            part_sizes: vec![],
            data: None,
        };
        meta.put_object(&o, &[]).await.unwrap();
        assert_eq!(reader.read("b", "k", None, 5).await.unwrap(), b"hello");
        assert_eq!(reader.read("b", "k", Some("null"), 5).await.unwrap(), b"hello");
        assert!(matches!(reader.read("b", "k", Some("3HL4kqtJ"), 5).await, Err(ReadError::NoSuchVersion)));
        assert!(matches!(reader.read("b", "k", None, 4).await, Err(ReadError::TooLarge(4))));
    }
}
