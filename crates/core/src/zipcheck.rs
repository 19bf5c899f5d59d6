//! The one gate every uploaded zip passes before anything is stored: it reads
//! the whole archive in memory, refuses what could escape or explode when
//! unpacked, and measures it. Nothing else in Nimbus opens an uploaded zip
//! without having passed here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::limits::{UNZIPPED_MAX, ZIP_ENTRIES_MAX};

/// What the gate learnt of an archive that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipInfo {
    /// Hex sha256 of the archive bytes: its address in the blob store.
    pub sha256_hex: String,
    pub size: u64,
    /// Bytes actually produced by decompressing every entry.
    pub unzipped_size: u64,
}

const UNREADABLE: &str = "Could not unzip uploaded file. Please check your file, then try to upload again.";

fn unreadable() -> Error {
    Error::invalid(UNREADABLE)
}

pub fn too_big() -> Error {
    Error::invalid(format!("Unzipped size must be smaller than {UNZIPPED_MAX} bytes"))
}

/// Checks an archive completely. `budget` is how many unzipped bytes it may
/// produce (250 MB less what the function's layers already use).
pub fn inspect(bytes: &[u8], budget: u64) -> Result<ZipInfo> {
    // Before the directory is parsed: parsing 600,000 entries took 600 MB.
    let too_many = |n: u64| {
        Error::invalid(format!(
            "Could not unzip uploaded file: it has {n} entries, more than the {ZIP_ENTRIES_MAX} a package may have."
        ))
    };
    if let Some(n) = declared_entries(bytes).filter(|&n| n > ZIP_ENTRIES_MAX as u64) {
        return Err(too_many(n));
    }
    let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(|_| unreadable())?;
    if archive.len() > ZIP_ENTRIES_MAX {
        return Err(too_many(archive.len() as u64));
    }
    let mut remaining = budget;
    // Every path first: where a link may point, and what may lie under one,
    // depends on the archive's other links.
    let mut paths = Vec::with_capacity(archive.len());
    let mut links = HashMap::new();
    let mut made = Made::default();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|_| unreadable())?;
        let raw_name = entry.name().to_string();
        let Some(path) = entry.enclosed_name() else {
            return Err(Error::invalid(format!(
                "Could not unzip uploaded file: the entry '{raw_name}' has an absolute path or leaves the package directory."
            )));
        };
        if made.add(&path, entry.is_dir()) > ZIP_ENTRIES_MAX {
            return Err(Error::invalid(format!(
                "Could not unzip uploaded file: its paths make more than the {ZIP_ENTRIES_MAX} files and directories a package may have."
            )));
        }
        if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry).take(LINK_MAX).read_to_string(&mut target).map_err(|_| unreadable())?;
            links.insert(path.clone(), target);
        }
        paths.push((raw_name, path));
    }
    for (raw_name, path) in &paths {
        // Unpacked, an entry under a link would be written wherever the link points.
        if let Some(link) = path.ancestors().skip(1).find(|a| links.contains_key(*a)) {
            return Err(Error::invalid(format!(
                "Could not unzip uploaded file: the entry '{raw_name}' is inside the symbolic link '{}'.",
                link.display()
            )));
        }
        if let Some(target) = links.get(path) {
            if !link_stays_inside(&links, path, target) {
                return Err(Error::invalid(format!(
                    "Could not unzip uploaded file: the symbolic link '{raw_name}' points outside the package."
                )));
            }
        }
    }
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|_| unreadable())?;
        if entry.is_symlink() {
            continue;
        }
        // Count what decompression really yields; the sizes in the headers
        // are the attacker's to choose. Reading to the end also checks CRCs.
        let mut sink = Budget { remaining };
        match io::copy(&mut entry, &mut sink) {
            Ok(_) => remaining = sink.remaining,
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Err(too_big()),
            Err(_) => return Err(unreadable()),
        }
    }
    Ok(ZipInfo {
        sha256_hex: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
        unzipped_size: budget - remaining,
    })
}

/// The files and directories unpacking makes: every entry's, and the
/// directories its path implies, which cost an inode and a block each as
/// much as an entry does (a few hundred entries 1,900 levels deep made
/// 380,000). Directories are told apart by a hash of their path, made
/// component by component, so a deep path costs its length, not its square.
#[derive(Default)]
struct Made {
    files: usize,
    dirs: std::collections::HashSet<u64>,
}

impl Made {
    /// Counts `path` (a directory, or a file); returns the total so far.
    fn add(&mut self, path: &Path, is_dir: bool) -> usize {
        use std::hash::Hasher;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let components: Vec<_> = path.components().collect();
        let last = components.len().saturating_sub(1);
        for (i, c) in components.iter().enumerate() {
            hasher.write(c.as_os_str().as_encoded_bytes());
            hasher.write_u8(b'/');
            if i < last || is_dir {
                self.dirs.insert(hasher.clone().finish());
            }
        }
        self.files += usize::from(!is_dir && !components.is_empty());
        self.files + self.dirs.len()
    }
}

/// How many entries an archive's end-of-central-directory record says its
/// directory holds (zip64's record's, where it defers to that), found from
/// the end without parsing the directory; `None` if there is no such record.
fn declared_entries(bytes: &[u8]) -> Option<u64> {
    const END: &[u8] = b"PK\x05\x06";
    const END_LEN: usize = 22;
    let last = bytes.len().checked_sub(END_LEN)?;
    // The record ends the archive but for a comment of at most 64 KiB.
    let at = (last.saturating_sub(0xFFFF)..=last).rev().find(|&i| &bytes[i..i + 4] == END)?;
    let field = |o: usize| u16::from_le_bytes([bytes[at + o], bytes[at + o + 1]]);
    let declared = field(8).max(field(10));
    if declared != 0xFFFF {
        return Some(declared.into());
    }
    // Zip64: a locator just before the record gives the zip64 record's offset.
    let locator = bytes.get(at.checked_sub(20)?..at)?;
    if &locator[..4] != b"PK\x06\x07" {
        return Some(declared.into());
    }
    let offset = usize::try_from(u64::from_le_bytes(locator[8..16].try_into().ok()?)).ok()?;
    let record = bytes.get(offset..offset.checked_add(56)?)?;
    if &record[..4] != b"PK\x06\x06" {
        return None;
    }
    let count = |o: usize| u64::from_le_bytes(record[o..o + 8].try_into().unwrap_or_default());
    Some(count(24).max(count(32)))
}

/// The longest link target read (Linux's own limit on a path).
pub const LINK_MAX: u64 = 4096;
/// How many links one resolution may pass through (Linux's `ELOOP` limit).
const LINK_HOPS: usize = 40;

/// Whether a link at `link` (relative to the package root) pointing at
/// `target` resolves inside the package, following the archive's other
/// `links` as the filesystem will once it is unpacked. A resolution that
/// loops or reaches a missing path ends there (and so inside).
fn link_stays_inside(links: &HashMap<PathBuf, String>, link: &Path, target: &str) -> bool {
    let mut hops = 0;
    let at: Vec<&OsStr> = link.parent().map(|p| p.iter().collect()).unwrap_or_default();
    resolve(links, at, target, &mut hops).is_some()
}

/// Walks `target` from the directory `at`; `None` once it leaves the root.
fn resolve<'a>(
    links: &'a HashMap<PathBuf, String>,
    mut at: Vec<&'a OsStr>,
    target: &'a str,
    hops: &mut usize,
) -> Option<Vec<&'a OsStr>> {
    let target = Path::new(target);
    if target.has_root() || target.as_os_str().is_empty() {
        return None;
    }
    for c in target.components() {
        match c {
            Component::Normal(part) => {
                at.push(part);
                if *hops < LINK_HOPS {
                    if let Some((_, next)) = links.get_key_value(&at.iter().collect::<PathBuf>()) {
                        *hops += 1;
                        at.pop();
                        at = resolve(links, at, next, hops)?;
                    }
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

/// A writer that discards bytes and fails once more than its budget arrives.
struct Budget {
    remaining: u64,
}

impl Write for Budget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len() as u64;
        if n > self.remaining {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "unzipped budget exceeded"));
        }
        self.remaining -= n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn build(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn accepts_a_plain_package_and_measures_it() {
        let z = build(&[("app.py", b"def handler(e, c): return 1\n"), ("lib/x.py", b"")], &[("lib/y", "x.py")]);
        let info = inspect(&z, UNZIPPED_MAX).unwrap();
        assert_eq!(info.size, z.len() as u64);
        assert_eq!(info.unzipped_size, 28);
        assert_eq!(info.sha256_hex, hex::encode(Sha256::digest(&z)));
    }

    #[test]
    fn refuses_escapes_garbage_and_bombs() {
        assert!(inspect(b"not a zip at all", UNZIPPED_MAX).is_err());
        let good = build(&[("a", b"hello")], &[]);
        assert!(inspect(&good[..good.len() - 10], UNZIPPED_MAX).is_err(), "truncated");
        assert!(inspect(&build(&[("../evil", b"x")], &[]), UNZIPPED_MAX).is_err());
        assert!(inspect(&build(&[("/etc/evil", b"x")], &[]), UNZIPPED_MAX).is_err());
        assert!(inspect(&build(&[], &[("link", "../../etc/passwd")]), UNZIPPED_MAX).is_err());
        assert!(inspect(&build(&[], &[("a/link", "/etc/passwd")]), UNZIPPED_MAX).is_err());
        let bomb = build(&[("zeros", &vec![0u8; 2_000_000])], &[]);
        assert!(bomb.len() < 20_000);
        assert_eq!(inspect(&bomb, 1_000_000).unwrap_err(), too_big());
    }

    /// Each link alone stays inside, read as text; unpacked, one after
    /// another, they lead out of the package.
    #[test]
    fn refuses_links_that_leave_through_other_links() {
        let refused = |entries: &[(&str, &[u8])], links: &[(&str, &str)]| {
            inspect(&build(entries, links), UNZIPPED_MAX).unwrap_err().to_string()
        };
        // Written through: a file under a link lands where the link points.
        let deep = "a/d/a/d/a/d/a/d/e";
        let e = refused(
            &[("a/d/a/d/a/d/a/d/e/etc/cron.d/x", b"* * * * * root sh")],
            &[("a/d", ".."), (deep, "../../../..")],
        );
        assert!(e.contains("is inside the symbolic link"), "{e}");
        // The links alone: the second is inside the first.
        let e = refused(&[], &[("a/d", ".."), (deep, "../../../..")]);
        assert!(e.contains("'a/d/a/d/a/d/a/d/e' is inside the symbolic link 'a/d'"), "{e}");
        // Read through: a link whose target passes through another.
        let e = refused(&[("a/x", b"")], &[("a/d", ".."), ("p", "a/d/a/d/../../x")]);
        assert!(e.contains("'p' points outside"), "{e}");
        let e = refused(&[], &[("a/up", ".."), ("a/b/c", "../up/../x")]);
        assert!(e.contains("'a/b/c' points outside"), "{e}");
        // Links that only pass through others inside, loop, or dangle are kept.
        let kept = build(
            &[("lib/x.py", b"")],
            &[("a/d", "../lib"), ("p", "a/d/x.py"), ("l1", "l2"), ("l2", "l1"), ("gone", "nothing/here")],
        );
        inspect(&kept, UNZIPPED_MAX).unwrap();
    }

    #[test]
    fn refuses_more_entries_than_a_package_may_have() {
        let names: Vec<String> = (0..=ZIP_ENTRIES_MAX).map(|i| format!("d{i}/")).collect();
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for name in &names {
            w.add_directory(name.as_str(), SimpleFileOptions::default()).unwrap();
        }
        let z = w.finish().unwrap().into_inner();
        assert_eq!(declared_entries(&z), Some(ZIP_ENTRIES_MAX as u64 + 1));
        let refused = inspect(&z, UNZIPPED_MAX).unwrap_err().to_string();
        assert!(refused.contains("it has 100001 entries, more than the 100000"), "{refused}");
        let few = build(&[("a", b"x"), ("b", b"y")], &[]);
        assert_eq!(declared_entries(&few), Some(2));
        assert_eq!(declared_entries(b"PK\x05\x06 too short"), None);
    }

    #[test]
    fn refuses_paths_that_imply_more_directories_than_a_package_may_have() {
        // 60 entries, each 2,000 directories deep: 120,000 directories.
        let names: Vec<String> = (0..60).map(|i| format!("{i}/{}f", "d/".repeat(1999))).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let refused = inspect(&build(&files, &[]), UNZIPPED_MAX).unwrap_err().to_string();
        assert!(refused.contains("paths make more than the 100000 files and directories"), "{refused}");
        // Shared directories count once, and a directory entry is its directory.
        let mut made = Made::default();
        for (path, dir) in [("a/b/c.py", false), ("a/b/d.py", false), ("a/", true), ("a/b/e/", true)] {
            made.add(Path::new(path), dir);
        }
        assert_eq!((made.files, made.dirs.len()), (2, 3));
        let few = build(&[("lib/a/x.py", b""), ("lib/a/y.py", b""), ("lib/b/z.py", b"")], &[]);
        inspect(&few, UNZIPPED_MAX).unwrap();
    }

    #[test]
    fn a_corrupted_entry_fails_its_crc() {
        let mut z = build(&[("a.txt", &b"0123456789".repeat(50))], &[]);
        // Flip a byte inside the stored data (after the 30-byte local header + name).
        let at = 30 + "a.txt".len() + 3;
        z[at] ^= 0xff;
        assert!(inspect(&z, UNZIPPED_MAX).is_err());
    }
}
