//! Writing a large body to a new file past the page cache. Through the
//! page cache a write is a copy into the cache and a second pass by the
//! kernel's writeback before `fsync` returns; for a body the store writes
//! once and fsyncs at once, that copy costs as much CPU as the body's MD5.
//! With `O_DIRECT` the disk reads the bytes from one aligned block buffer
//! instead. A filesystem that refuses `O_DIRECT` (tmpfs) gets the same
//! block-sized writes through its cache.
//!
//! Used for S3 objects and registry uploads. Blocking: run it on a thread
//! of the blocking pool, a batch at a time ([`in_batches`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// What `O_DIRECT` needs of buffer addresses, lengths and file offsets.
const ALIGN: usize = 4096;
/// Bytes gathered before each write.
const BLOCK: usize = 8 << 20;

pub struct BlockWriter {
    file: File,
    direct: bool,
    /// `BLOCK` bytes from `start` are the aligned block.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Where the block goes in the file: always a multiple of `ALIGN`.
    written: u64,
}

impl BlockWriter {
    /// Creates `path`, which must not exist.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::open(path, true, 0)
    }

    /// Opens `path`, which holds `len` bytes, to write after them. The
    /// bytes of its last partial `ALIGN` block are read back into the
    /// block, which is written again from that block's start.
    pub fn append(path: &Path, len: u64) -> std::io::Result<Self> {
        let mut w = Self::open(path, false, len - len % ALIGN as u64)?;
        w.filled = (len % ALIGN as u64) as usize;
        File::open(path)?.read_exact_at(&mut w.buf[w.start..w.start + w.filled], w.written)?;
        Ok(w)
    }

    fn open(path: &Path, new: bool, written: u64) -> std::io::Result<Self> {
        let open = |flags| OpenOptions::new().write(true).create_new(new).custom_flags(flags).open(path);
        let (file, direct) = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Ok(Self { file, direct, buf, start, filled: 0, written })
    }

    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = (BLOCK - self.filled).min(data.len());
            let at = self.start + self.filled;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == BLOCK {
                self.file.write_all_at(&self.buf[self.start..self.start + BLOCK], self.written)?;
                self.written += BLOCK as u64;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes what is left, without making it durable. A direct write
    /// must be whole blocks, so the tail goes out padded with zeros and
    /// the file is cut back to its length.
    pub fn close(self) -> std::io::Result<File> {
        if self.filled > 0 {
            let len = if self.direct { self.filled.next_multiple_of(ALIGN) } else { self.filled };
            let mut buf = self.buf;
            buf[self.start + self.filled..self.start + len].fill(0);
            self.file.write_all_at(&buf[self.start..self.start + len], self.written)?;
            if len != self.filled {
                self.file.set_len(self.written + self.filled as u64)?;
            }
        }
        Ok(self.file)
    }

    /// Writes what is left and makes the file durable.
    pub fn finish(self) -> std::io::Result<()> {
        self.close()?.sync_all()
    }
}

/// Bytes received while a batch is worked on, at most: bounds the memory a
/// body held up by a slow disk (or digest) can take.
const BATCH_MAX: usize = 8 << 20;

/// Hands `first`, then the chunks of `body` as they arrive, to `job` in
/// batches on the blocking pool, one job at a time, each taking the state
/// the one before returned; the last state.
///
/// The next batch is received while a job runs, so a body moves at the
/// pace of the slower of the network and the jobs rather than of their
/// sum; but a thread is taken only while there is a batch to work on: a
/// client that sends slowly, or stops, holds none of the blocking pool,
/// which every file read and write of the node shares (a thread held per
/// upload let 256 stalled uploads stop them all).
pub async fn in_batches<S, T, E>(
    state: T,
    first: Vec<bytes::Bytes>,
    mut body: std::pin::Pin<&mut S>,
    job: fn(T, Vec<bytes::Bytes>) -> Result<T, E>,
) -> Result<T, E>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    T: Send + 'static,
    E: From<std::io::Error> + Send + 'static,
{
    use futures_util::StreamExt;
    let finished = |done: Result<Result<T, E>, tokio::task::JoinError>| done.map_err(std::io::Error::other)?;
    let (mut idle, mut running) = match first.is_empty() {
        true => (Some(state), None),
        false => (None, Some(tokio::task::spawn_blocking(move || job(state, first)))),
    };
    let (mut batch, mut held, mut ended) = (Vec::new(), 0, false);
    loop {
        let next = match (&mut running, ended || held >= BATCH_MAX) {
            (Some(task), false) => tokio::select! {
                done = task => {
                    (idle, running) = (Some(finished(done)?), None);
                    continue;
                }
                next = body.next() => next,
            },
            (Some(task), true) => {
                (idle, running) = (Some(finished(task.await)?), None);
                continue;
            }
            (None, _) if !batch.is_empty() => {
                let (state, batch) = (idle.take().expect("no job runs"), std::mem::take(&mut batch));
                held = 0;
                running = Some(tokio::task::spawn_blocking(move || job(state, batch)));
                continue;
            }
            (None, true) => return Ok(idle.take().expect("no job runs")),
            // Waiting on the client, with no thread held.
            (None, false) => body.next().await,
        };
        let next = match next.transpose() {
            Ok(next) => next,
            Err(e) => {
                // The caller may undo what the jobs did once this returns.
                if let Some(task) = running {
                    let _ = task.await;
                }
                return Err(e);
            }
        };
        match next {
            Some(chunk) => {
                held += chunk.len();
                batch.push(chunk);
            }
            None => ended = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_out_whole_whatever_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..BLOCK * 2 + 12_345).map(|i| (i % 251) as u8).collect();
        for len in [0, 1, ALIGN, BLOCK, BLOCK + 1, body.len()] {
            let path = dir.path().join(format!("f{len}"));
            let mut w = BlockWriter::create(&path).unwrap();
            for chunk in body[..len].chunks(70_000) {
                w.write(chunk).unwrap();
            }
            w.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == body[..len], "a file of {len} bytes");
        }
        assert!(BlockWriter::create(&dir.path().join("f0")).is_err(), "an existing file is not overwritten");
    }

    #[test]
    fn appends_continue_a_file_whatever_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..BLOCK + 3 * ALIGN + 77).map(|i| (i % 253) as u8).collect();
        for cut in [0, 1, ALIGN - 1, ALIGN, ALIGN + 5, BLOCK, BLOCK + 1] {
            let path = dir.path().join(format!("a{cut}"));
            let mut w = BlockWriter::create(&path).unwrap();
            w.write(&body[..cut]).unwrap();
            w.close().unwrap();
            let mut w = BlockWriter::append(&path, cut as u64).unwrap();
            w.write(&body[cut..]).unwrap();
            w.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == body, "a file cut at {cut}");
        }
    }
}
