//! Applies layers, bottom first, to one directory: decompression by media
//! type, streamed (a layer is never whole in memory); whiteouts and opaque
//! directories as the OCI image spec's "Representing Changes" has them; a
//! running diff_id and size count per layer.
//!
//! A layer is hostile until proven otherwise: no entry may be written,
//! linked or deleted outside the root. Paths with `..` or a leading `/`
//! are refused, and so is any path whose parent inside the root is a
//! symbolic link (a link is never followed while unpacking; the image's
//! own links resolve at run time, inside its root). Device and fifo nodes
//! are skipped; setuid and setgid bits are dropped; owners are not kept
//! (everything belongs to the unpacking user, and the sandbox's user
//! namespace shows the function a read-only root).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ImageError, Layer, Limits};

/// Directories a sandbox mounts on inside an image's root; they exist in
/// every flattened root, because the root is read-only afterwards.
pub const MOUNT_POINTS: &[&str] = &["proc", "dev", "tmp"];

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks `layers` into `root`; returns the uncompressed bytes read.
pub(crate) fn flatten(layers: &[Layer], root: &Path, limits: &Limits) -> Result<u64, ImageError> {
    let (mut total, mut entries) = (0, 0);
    for layer in layers {
        total = apply(layer, root, total, &mut entries, limits)?;
    }
    for dir in MOUNT_POINTS {
        let path = root.join(dir);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            make_room(&path, false)?;
            fs::create_dir(&path)?;
        }
    }
    Ok(total)
}

/// Counts and hashes the uncompressed stream, and stops it at the limit:
/// a small layer that inflates without end is refused as it inflates.
struct Counted<R> {
    inner: R,
    hash: Sha256,
    total: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.limit {
            return Err(io::Error::other(TooLarge));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The size limit, carried through `tar`'s io::Error to be told apart.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the image is too large")
    }
}

impl std::error::Error for TooLarge {}

fn decoder(layer: &Layer) -> Result<Box<dyn Read>, ImageError> {
    let file = io::BufReader::with_capacity(1 << 20, fs::File::open(&layer.path).map_err(|e| layer_err(layer, e))?);
    let m = layer.media_type.as_str();
    // OCI's `+gzip`, Docker's `.tar.gzip`; the non-distributable variants alike.
    Ok(if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
        Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(|e| layer_err(layer, e))?)
    } else if m.ends_with("layer.v1.tar") || m.ends_with("rootfs.diff.tar") || m.ends_with("nondistributable.v1.tar") {
        Box::new(file)
    } else {
        return Err(ImageError::UnknownMediaType { layer: layer.digest.clone(), media_type: m.to_string() });
    })
}

fn layer_err(layer: &Layer, e: io::Error) -> ImageError {
    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
        return ImageError::TooLarge { limit: 0 };
    }
    ImageError::Layer { layer: layer.digest.clone(), source: e }
}

/// Applies one layer; `done` bytes and `entries` entries were read before it.
fn apply(layer: &Layer, root: &Path, done: u64, entries: &mut u64, limits: &Limits) -> Result<u64, ImageError> {
    let limit = limits.max_unpacked_bytes;
    let stream = Counted { inner: decoder(layer)?, hash: Sha256::new(), total: done, limit };
    let fix_limit = |e: ImageError| match e {
        ImageError::TooLarge { .. } => ImageError::TooLarge { limit },
        e => e,
    };
    let mut archive = tar::Archive::new(stream);
    // What this layer wrote: an opaque directory hides only lower layers' entries.
    let mut ours: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(|e| layer_err(layer, e)).map_err(fix_limit)? {
        let entry = entry.map_err(|e| layer_err(layer, e)).map_err(fix_limit)?;
        *entries += 1;
        if *entries > limits.max_entries {
            return Err(ImageError::TooManyEntries { limit: limits.max_entries });
        }
        apply_entry(layer, root, entry, &mut ours).map_err(fix_limit)?;
    }
    // The end-of-archive blocks and any padding belong to the diff_id.
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(|e| layer_err(layer, e)).map_err(fix_limit)?;
    let actual = format!("sha256:{}", hex::encode(stream.hash.finalize()));
    if !layer.diff_id.is_empty() && layer.diff_id != actual {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.digest.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(stream.total)
}

/// A layer path as a relative path of normal components; `None` for the
/// root itself.
fn relative(layer: &Layer, path: &Path) -> Result<Option<PathBuf>, ImageError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::Escape { layer: layer.digest.clone(), path: path.display().to_string() })
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes every parent of `rel` a real directory inside `root`, creating
/// missing ones; a parent that is a link (or a file) is refused.
fn parents(layer: &Layer, root: &Path, rel: &Path) -> Result<(), ImageError> {
    let mut at = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ImageError::Escape { layer: layer.digest.clone(), path: rel.display().to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at).map_err(|e| layer_err(layer, e))?,
            Err(e) => return Err(layer_err(layer, e)),
        }
    }
    Ok(())
}

/// Removes what is at `path` (never following a link), unless it is a
/// directory and `keep_dir`.
fn make_room(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_entry<R: Read>(
    layer: &Layer,
    root: &Path,
    mut entry: tar::Entry<'_, R>,
    ours: &mut HashSet<PathBuf>,
) -> Result<(), ImageError> {
    let raw = entry.path().map_err(|e| layer_err(layer, e))?.into_owned();
    let Some(rel) = relative(layer, &raw)? else { return Ok(()) };
    parents(layer, root, &rel)?;
    let path = root.join(&rel);
    let io_err = |e| layer_err(layer, e);
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name == OPAQUE {
        let dir = path.parent().unwrap_or(root);
        for child in fs::read_dir(dir).map_err(io_err)? {
            let child = child.map_err(io_err)?.path();
            let child_rel = child.strip_prefix(root).unwrap_or(&child).to_path_buf();
            if !ours.contains(&child_rel) {
                make_room(&child, false).map_err(io_err)?;
            }
        }
        return Ok(());
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT) {
        // `.wh..` would name the parent of the directory, `.wh.` itself.
        if matches!(hidden, "" | "." | "..") {
            return Err(ImageError::Escape { layer: layer.digest.clone(), path: raw.display().to_string() });
        }
        return make_room(&path.with_file_name(hidden), false).map_err(io_err);
    }
    let mode = entry.header().mode().map_err(io_err)? & 0o1777;
    let kind = entry.header().entry_type();
    match kind {
        tar::EntryType::Directory => {
            make_room(&path, true).map_err(io_err)?;
            if !path.is_dir() {
                fs::create_dir(&path).map_err(io_err)?;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            make_room(&path, false).map_err(io_err)?;
            let mut file = fs::File::create_new(&path).map_err(io_err)?;
            io::copy(&mut entry, &mut file).map_err(io_err)?;
            file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err)?;
            // Python compares a source's mtime with its cached bytecode's.
            if let Ok(mtime) = entry.header().mtime() {
                let _ = file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
            }
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().map_err(io_err)?.unwrap_or_default();
            make_room(&path, false).map_err(io_err)?;
            std::os::unix::fs::symlink(&target, &path).map_err(io_err)?;
        }
        tar::EntryType::Link => {
            let target = entry.link_name().map_err(io_err)?.unwrap_or_default();
            let escape = || ImageError::Escape { layer: layer.digest.clone(), path: target.display().to_string() };
            let target_rel = relative(layer, &target)?.ok_or_else(escape)?;
            parents(layer, root, &target_rel)?;
            let source = root.join(&target_rel);
            // linkat without AT_SYMLINK_FOLLOW: a link to a link stays a link, inside.
            if fs::symlink_metadata(&source).map_err(io_err)?.is_dir() {
                return Err(escape());
            }
            make_room(&path, false).map_err(io_err)?;
            fs::hard_link(&source, &path).map_err(io_err)?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            tracing::debug!(layer = %layer.digest, path = %rel.display(), "device or fifo node skipped");
            return Ok(());
        }
        // Extension headers the tar reader has folded into the next entry,
        // and kinds a root has no use for.
        _ => return Ok(()),
    }
    ours.insert(rel);
    Ok(())
}
