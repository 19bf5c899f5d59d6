//! Object bytes on disk. Every object and every multipart part is one
//! immutable file under `<root>/data`, written under `<root>/tmp` first and
//! renamed into place only once it is complete and fsynced: a crash never
//! leaves a visible partial object, and an interrupted upload leaves only a
//! temporary file that the next start removes. Replacing an object writes a
//! new file; the old one is removed after the metadata commit.
//!
//! Bytes stream through: nothing here holds a whole object in memory.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nimbus_store::direct::BlockWriter;

/// Bodies up to this size are kept in the store with their metadata
/// rather than in a file of their own: one durable commit instead of three
/// fsyncs (file, directory, database), and a GET that opens no file.
pub const INLINE_MAX: usize = 64 << 10;

/// Chunks of a body waiting for the digest or the disk thread: bounds the
/// memory a body held up by a slow digest or disk can take.
const QUEUE: usize = 32;

/// A read's chunk, and how many chunks are read ahead of the client.
const READ_CHUNK: u64 = 1 << 20;
const READ_AHEAD: usize = 4;

/// An object's bytes on their way out.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// What a finished write produced.
#[derive(Debug)]
pub struct Written {
    /// The name of this version of the bytes; a data file unless `data`.
    pub file: String,
    /// The bytes themselves, for a body of at most [`INLINE_MAX`] written
    /// with [`Files::receive`]: no file was made.
    pub data: Option<Bytes>,
    pub size: u64,
    pub md5: [u8; 16],
    /// The checksums asked for, base64.
    pub checksums: s3s::dto::Checksum,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The body stream failed: the client went away or sent a malformed
    /// (e.g. truncated or badly signed aws-chunked) body.
    #[error("the request body could not be read: {0}")]
    Body(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
}

#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

/// The digests a body accumulates as it streams through.
struct Digests {
    md5: Md5,
    hasher: ChecksumHasher,
    size: u64,
    limit: u64,
}

impl Digests {
    fn add(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(WriteError::TooLarge(self.limit));
        }
        self.md5.update(chunk);
        self.hasher.update(chunk);
        Ok(())
    }

    fn finish(self, file: String, data: Option<Bytes>) -> Written {
        Written { file, data, size: self.size, md5: self.md5.finalize().into(), checksums: self.hasher.finalize() }
    }
}

impl Files {
    /// Opens the area, removing what interrupted writes left.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join("data"))?;
        Ok(Self { root })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join("data").join(file)
    }

    /// Streams `body` into a new file, computing its MD5 and the checksums
    /// `hasher` was set up for.
    pub async fn write<S, E>(&self, body: S, hasher: ChecksumHasher, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let digests = Digests { md5: Md5::new(), hasher, size: 0, limit };
        self.spill(Vec::new(), std::pin::pin!(body), digests).await
    }

    /// Takes in `body` as [`Files::write`] does, except that a body of at
    /// most [`INLINE_MAX`] bytes stays in memory (`Written::data`).
    pub async fn receive<S, E>(&self, body: S, hasher: ChecksumHasher, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut digests = Digests { md5: Md5::new(), hasher, size: 0, limit };
        let mut body = std::pin::pin!(body);
        let mut head = Vec::new();
        let mut held = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
            digests.add(&chunk)?;
            held += chunk.len();
            head.push(chunk);
            if held > INLINE_MAX {
                return self.spill(head, body, digests).await;
            }
        }
        let data = match head.len() {
            1 => head.pop().unwrap_or_default(),
            _ => head.concat().into(),
        };
        Ok(digests.finish(uuid::Uuid::new_v4().simple().to_string(), Some(data)))
    }

    /// Writes `head` (already digested) and the rest of `body` to a new file.
    async fn spill<S, E>(
        &self,
        head: Vec<Bytes>,
        mut body: std::pin::Pin<&mut S>,
        digests: Digests,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.root.join("tmp").join(&name);
        let Digests { mut md5, mut hasher, mut size, limit } = digests;
        // The digests and the disk each get a thread of their own while
        // this task receives: a large body moves at the pace of the slowest
        // of network, MD5 and disk rather than of their sum.
        let (to_digest, mut digest_queue) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let digesting = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = digest_queue.blocking_recv() {
                md5.update(&chunk);
                hasher.update(&chunk);
            }
            (md5, hasher)
        });
        let (to_disk, mut disk_queue) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let path = tmp.clone();
        // Ends when the queue closes, leaving the file unfinished: only a
        // whole body is made durable.
        let writing = tokio::task::spawn_blocking(move || {
            let mut out = BlockWriter::create(&path)?;
            while let Some(chunk) = disk_queue.blocking_recv() {
                out.write(&chunk)?;
            }
            Ok::<_, std::io::Error>(out)
        });
        let received = async {
            let stopped = || std::io::Error::other("the digest or disk thread stopped");
            for chunk in head {
                to_disk.send(chunk).await.map_err(|_| stopped())?;
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(WriteError::TooLarge(limit));
                }
                to_digest.send(chunk.clone()).await.map_err(|_| stopped())?;
                to_disk.send(chunk).await.map_err(|_| stopped())?;
            }
            Ok(())
        }
        .await;
        drop((to_digest, to_disk));
        let (md5, hasher) = digesting.await.map_err(std::io::Error::other)?;
        let written = writing.await.map_err(std::io::Error::other).and_then(|w| w);
        // A disk error explains a stopped queue better than the queue does.
        let result = match (received, written) {
            (Ok(()), Ok(out)) => tokio::task::spawn_blocking(move || out.finish())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(WriteError::from),
            (Ok(()), Err(e)) | (Err(WriteError::Io(_)), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        };
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.publish(&tmp, &name).await?;
        Ok(Digests { md5, hasher, size, limit }.finish(name, None))
    }

    /// Writes the concatenation of `parts` (files of this area) as a new
    /// file, computing the checksums `hasher` was set up for (a multipart
    /// upload's full-object checksum).
    pub async fn concat(
        &self,
        parts: &[String],
        mut hasher: ChecksumHasher,
    ) -> std::io::Result<(String, u64, s3s::dto::Checksum)> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.root.join("tmp").join(&name);
        let result = async {
            let mut out = tokio::fs::File::create(&tmp).await?;
            let mut buf = vec![0; 256 << 10];
            let mut size = 0;
            for part in parts {
                let mut input = tokio::fs::File::open(self.path(part)).await?;
                loop {
                    let n = input.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).await?;
                    size += n as u64;
                }
            }
            out.sync_all().await?;
            Ok(size)
        }
        .await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        self.publish(&tmp, &name).await?;
        Ok((name, size, hasher.finalize()))
    }

    /// Renames a complete, synced temporary file into place durably.
    async fn publish(&self, tmp: &Path, name: &str) -> std::io::Result<()> {
        let data = self.root.join("data");
        tokio::fs::rename(tmp, data.join(name)).await?;
        tokio::task::spawn_blocking(move || std::fs::File::open(data)?.sync_all())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Drops what a write produced that will not be committed.
    pub async fn discard(&self, w: Written) {
        if w.data.is_none() {
            self.remove([w.file]).await;
        }
    }

    /// `len` bytes of an object from `start`, from the store or its file.
    pub async fn read(
        &self,
        o: &nimbus_core::objects::ObjectInfo,
        start: u64,
        len: u64,
    ) -> std::io::Result<ByteStream> {
        if let Some(data) = &o.data {
            let range =
                usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(start + len).unwrap_or(usize::MAX);
            let part = data.get(range).map(|_| data.slice(start as usize..(start + len) as usize));
            let part = part.ok_or_else(|| std::io::Error::other("range beyond the object"))?;
            return Ok(Box::pin(futures_util::stream::once(async { Ok(part) })));
        }
        let mut file = tokio::fs::File::open(self.path(&o.file)).await?.into_std().await;
        // A thread of its own reads ahead while the chunks before go out,
        // so the disk and the network work at once.
        let (chunks, queue) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut left = len;
            let read = |file: &mut std::fs::File, want: u64| -> std::io::Result<Bytes> {
                let mut buf = bytes::BytesMut::zeroed(want as usize);
                file.read_exact(&mut buf)?;
                Ok(buf.freeze())
            };
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
                let _ = chunks.blocking_send(Err(e));
                return;
            }
            while left > 0 {
                let chunk = read(&mut file, left.min(READ_CHUNK));
                let failed = chunk.is_err();
                left -= chunk.as_ref().map_or(0, |c| c.len() as u64);
                // The client went away, or the file failed: stop reading.
                if chunks.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(queue, |mut q| async move { q.recv().await.map(|c| (c, q)) })))
    }

    /// Removes files no metadata refers to any more.
    pub async fn remove(&self, files: impl IntoIterator<Item = String>) {
        for f in files {
            if let Err(e) = tokio::fs::remove_file(self.path(&f)).await {
                tracing::warn!(file = %f, error = %e, "could not remove an object file");
            }
        }
    }

    /// Removes every data file not in `keep` (after a crash between a
    /// file's write and its metadata commit, or its removal).
    pub fn retain(&self, keep: &HashSet<String>) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("data"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn writes_publish_whole_files_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        let w = files.write(chunks(&[b"hello ", b"world"]), ChecksumHasher::default(), 100).await.unwrap();
        assert_eq!(w.size, 11);
        assert_eq!(hex::encode(w.md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(std::fs::read(files.path(&w.file)).unwrap(), b"hello world");
        assert!(matches!(
            files.write(chunks(&[b"0123456789"]), ChecksumHasher::default(), 5).await,
            Err(WriteError::TooLarge(5))
        ));
        let failing = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"part")), Err("cut off")]);
        assert!(matches!(files.write(failing, ChecksumHasher::default(), 100).await, Err(WriteError::Body(_))));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("data")).unwrap().count(), 1);

        let sha = ChecksumHasher { sha256: Some(Default::default()), ..Default::default() };
        let (joined, size, sums) = files.concat(&[w.file.clone(), w.file.clone()], sha).await.unwrap();
        assert_eq!((std::fs::read(files.path(&joined)).unwrap(), size), (b"hello worldhello world".to_vec(), 22));
        // sha256("hello worldhello world"), base64.
        assert_eq!(sums.checksum_sha256.as_deref(), Some("UkhX0BSHIcJOPneV4ZreDNz0nypN++8vFXXRII+oxU8="));
        assert_eq!(files.retain(&HashSet::from([joined.clone()])).unwrap(), 1);
        assert!(files.path(&joined).exists() && !files.path(&w.file).exists());
    }
}
