//! Writing a large body to a new file past the page cache. Through the
//! page cache a write is a copy into the cache and a second pass by the
//! kernel's writeback before `fsync` returns; for a body the store writes
//! once and fsyncs at once, that copy costs as much CPU as the body's MD5.
//! With `O_DIRECT` the disk reads the bytes from one aligned block buffer
//! instead. A filesystem that refuses `O_DIRECT` (tmpfs) gets the same
//! block-sized writes through its cache.
//!
//! Used for S3 objects and registry uploads. Blocking: run it on a thread
//! of its own.

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
