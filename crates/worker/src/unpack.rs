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
    let written = archives.iter().try_for_each(|a| write_all(a, &staging)).and_then(|()| links_stay_inside(&staging));
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
            make_dirs(dir, &rel)?;
            continue;
        }
        if let Some(parent) = rel.parent() {
            make_dirs(dir, parent)?;
        }
        if entry.is_symlink() {
            let mut target = String::new();
            io::Read::read_to_string(&mut io::Read::take(&mut entry, nimbus_core::zipcheck::LINK_MAX), &mut target)?;
            if out.symlink_metadata().is_ok() {
                std::fs::remove_file(&out)?;
            }
            std::os::unix::fs::symlink(target, &out)?;
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        if out.symlink_metadata().is_ok() {
            // A later layer replaces the file (it is read-only by now).
            std::fs::remove_file(&out)?;
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&out)?;
        io::copy(&mut entry, &mut file)?;
        // Keep the executable bits the author set; nothing is writable.
        file.set_permissions(std::fs::Permissions::from_mode(if mode & 0o111 != 0 { 0o555 } else { 0o444 }))?;
    }
    Ok(())
}

/// Makes `dir/rel` a directory, refusing to go through a link: an entry
/// under a link (an earlier layer's; zipcheck refuses one in a single
/// archive) would be written wherever the link points, on the host.
fn make_dirs(dir: &Path, rel: &Path) -> io::Result<()> {
    let mut at = dir.to_path_buf();
    for part in rel.iter() {
        at.push(part);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!("unsafe path in archive: {} is not a directory", rel.display())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fails if any link under `dir` resolves outside it, through the other
/// links as the kernel follows them (merged layers can make a chain that no
/// one archive holds). A link that dangles or loops resolves nowhere.
fn links_stay_inside(dir: &Path) -> io::Result<()> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let root = std::fs::File::open(dir)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let (kind, rel) = (entry.file_type()?, rel.join(entry.file_name()));
            if kind.is_dir() {
                todo.push(rel);
            } else if kind.is_symlink() && matches!(openat2(&root, &rel, how), Err(nix::errno::Errno::EXDEV)) {
                return Err(io::Error::other(format!(
                    "the symbolic link {} points outside the package",
                    rel.display()
                )));
            }
        }
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

    fn with_links(files: &[(&str, &str)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, text) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Each layer passes zipcheck alone; merged, the second would be written
    /// through the first's link, outside the directory.
    #[test]
    fn a_later_layer_is_not_written_through_an_earlier_ones_link() {
        let tmp = tempfile::tempdir().unwrap();
        let first = with_links(&[], &[("a/d", "..")]);
        let second = with_links(&[("a/d/a/d/x", "escaped")], &[]);
        let target = tmp.path().join("inner/opt");
        let e = stage(&[&first, &second], &target).unwrap_err();
        assert!(e.to_string().contains("unsafe path"), "{e}");
        assert!(!tmp.path().join("inner/x").exists() && !tmp.path().join("x").exists());
        // Nothing is left staged.
        assert_eq!(std::fs::read_dir(tmp.path().join("inner")).unwrap().count(), 0);
    }

    /// The first layer's link is inside on its own; the second's link makes
    /// it lead out.
    #[test]
    fn links_that_merged_layers_lead_outside_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = with_links(&[], &[("p", "a/d/a/d/../../x")]);
        let second = with_links(&[], &[("a/d", "..")]);
        let target = tmp.path().join("opt");
        let e = stage(&[&first, &second], &target).unwrap_err();
        assert!(e.to_string().contains("symbolic link p points outside"), "{e}");
        // Links that stay inside, dangle or loop are kept.
        let kept = with_links(
            &[("lib/x.py", "")],
            &[("a/d", "../lib"), ("p", "a/d/x.py"), ("l1", "l2"), ("l2", "l1"), ("gone", "no/such")],
        );
        publish(&stage(&[&kept], &target).unwrap(), &target).unwrap();
        assert_eq!(std::fs::read_link(target.join("p")).unwrap(), Path::new("a/d/x.py"));
    }
}
