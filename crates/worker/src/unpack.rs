//! Unpacks an archive that `nimbus_core::zipcheck` has already accepted
//! into a fresh directory, re-checking every path as it goes, then marks it
//! read-only. Nothing else writes uploaded archives to disk.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Unpacks archives one over another (later ones win, as layers do) into
/// a fresh staging directory beside `target`, which [`publish`] then moves
/// into place, so that `target` appears only once complete.
pub fn stage(archives: &[&[u8]], target: &Path) -> io::Result<PathBuf> {
    let parent = target.parent().ok_or_else(|| io::Error::other("code directory has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".unpack-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&staging)?;
    let written = archives.iter().try_for_each(|a| write_all(a, &staging));
    match written {
        Ok(()) => Ok(staging),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Moves a staged directory to `target` (or removes it, if that fails).
pub fn publish(staging: &Path, target: &Path) -> io::Result<()> {
    let moved = std::fs::rename(staging, target);
    if moved.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    moved
}

fn write_all(bytes: &[u8], dir: &Path) -> io::Result<()> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(io::Error::other)?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(io::Error::other)?;
        let rel = entry.enclosed_name().ok_or_else(|| io::Error::other("unsafe path in archive"))?;
        let out = dir.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p)?;
        }
        if entry.is_symlink() {
            // zipcheck refused links that leave the package.
            let mut target = String::new();
            io::Read::read_to_string(&mut entry, &mut target)?;
            std::os::unix::fs::symlink(target, &out)?;
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        if out.symlink_metadata().is_ok() {
            // A later layer replaces the file (it is read-only by now).
            std::fs::remove_file(&out)?;
        }
        let mut file = std::fs::File::create(&out)?;
        io::copy(&mut entry, &mut file)?;
        // Keep the executable bits the author set; nothing is writable.
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(if mode & 0o111 != 0 { 0o555 } else { 0o444 }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, text) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn later_layers_win() {
        let first = zip_of(&[("python/shared.py", "V = 1\n"), ("python/only_first.py", "")]);
        let second = zip_of(&[("python/shared.py", "V = 2\n")]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("opt");
        publish(&stage(&[&first, &second], &target).unwrap(), &target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("python/shared.py")).unwrap(), "V = 2\n");
        assert!(target.join("python/only_first.py").exists());
    }

    #[test]
    fn unpacks_read_only_with_exec_bits() {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        w.start_file("bootstrap", SimpleFileOptions::default().unix_permissions(0o755)).unwrap();
        w.write_all(b"#!/bin/sh\n").unwrap();
        w.start_file("lib/a.py", SimpleFileOptions::default()).unwrap();
        w.write_all(b"x = 1\n").unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("code");
        publish(&stage(&[&bytes], &target).unwrap(), &target).unwrap();
        let mode = |p: &str| std::fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("bootstrap"), 0o555);
        assert_eq!(mode("lib/a.py"), 0o444);
        assert_eq!(std::fs::read_to_string(target.join("lib/a.py")).unwrap(), "x = 1\n");
    }
}
