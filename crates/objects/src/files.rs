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

/// A read's chunk; the next one is read while it goes out.
const READ_CHUNK: u64 = 1 << 20;

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

/// What a body's blocking jobs carry from one to the next.
struct Work {
    digests: Digests,
    out: BlockWriter,
    /// How many chunks of the next batch are digested already (the head
    /// [`Files::receive`] looked at).
    digested: usize,
}

impl Work {
    /// Digests and writes one batch of chunks; blocking. A large batch is
    /// digested on a second thread while this one writes it.
    fn run(self, batch: Vec<Bytes>) -> Result<Self, WriteError> {
        let Work { mut digests, mut out, digested } = self;
        let digest = |digests: &mut Digests| batch[digested..].iter().try_for_each(|chunk| digests.add(chunk));
        let mut write = || batch.iter().try_for_each(|chunk| out.write(chunk));
        if batch.iter().map(Bytes::len).sum::<usize>() < PARALLEL_MIN {
            digest(&mut digests)?;
            write()?;
        } else {
            let digested = std::thread::scope(|s| {
                let digesting = s.spawn(|| digest(&mut digests));
                write()?;
                digesting.join().map_err(|_| std::io::Error::other("the digest thread panicked"))?
            });
            digested?;
        }
        Ok(Work { digests, out, digested: 0 })
    }
}

/// A batch this large is digested and written at once, on two threads.
const PARALLEL_MIN: usize = 1 << 20;

impl Files {
    /// Opens the area, removing what interrupted writes left.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        let (tmp, data) = (root.join("tmp"), root.join("data"));
        // std's errors name no path; a start that fails must say which.
        let at = |dir: &std::path::Path| {
            let dir = dir.display().to_string();
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{dir}: {e}"))
        };
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(at(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(at(&tmp))?;
        std::fs::create_dir_all(&data).map_err(at(&data))?;
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

    /// Writes `head` (already digested) and the rest of `body` to a new
    /// file, digesting and writing in batches on the blocking pool while
    /// the next are received (see [`nimbus_store::direct::in_batches`]).
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
        let path = tmp.clone();
        let out =
            tokio::task::spawn_blocking(move || BlockWriter::create(&path)).await.map_err(std::io::Error::other)??;
        let work = Work { digests, out, digested: head.len() };
        let body = body.as_mut().map(|chunk| chunk.map_err(|e| WriteError::Body(e.to_string())));
        let received = nimbus_store::direct::in_batches(work, head, std::pin::pin!(body), Work::run).await;
        let result = match received {
            Ok(work) => tokio::task::spawn_blocking(move || work.out.finish().map(|()| work.digests))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(WriteError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(digests) => {
                self.publish(&tmp, &name).await?;
                Ok(digests.finish(name, None))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
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
        let file = tokio::task::spawn_blocking(move || file.seek(std::io::SeekFrom::Start(start)).map(|_| file))
            .await
            .map_err(std::io::Error::other)??;
        // Each chunk is read by a short blocking job, the next one while
        // the one before goes out (so the disk and the network work at
        // once), and none while the client does not take what was read: a
        // slow reader holds no thread of the blocking pool.
        let read = |mut file: std::fs::File, left: u64| {
            tokio::task::spawn_blocking(move || {
                let mut buf = bytes::BytesMut::zeroed(left.min(READ_CHUNK) as usize);
                file.read_exact(&mut buf).map(|()| (buf.freeze(), file))
            })
        };
        let first = (len > 0).then(|| read(file, len));
        let chunks = futures_util::stream::unfold((first, len), move |(job, left)| async move {
            let done = job?.await.map_err(std::io::Error::other).and_then(|r| r);
            Some(match done {
                Ok((chunk, file)) => {
                    let left = left - chunk.len() as u64;
                    (Ok(chunk), ((left > 0).then(|| read(file, left)), left))
                }
                Err(e) => (Err(e), (None, 0)),
            })
        });
        Ok(Box::pin(chunks))
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
