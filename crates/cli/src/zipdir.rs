//! Deterministic zips of a directory: the same tree always gives the same
//! bytes (sorted entries, fixed timestamps, normalised modes), so deploying
//! an unchanged directory reports the same CodeSha256.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use zip::write::SimpleFileOptions;

pub fn zip_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    files.retain(|e| e.file_type().is_file() || e.file_type().is_symlink());
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for e in files {
        let rel = e.path().strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        if e.file_type().is_symlink() {
            let target = std::fs::read_link(e.path())?;
            w.add_symlink(rel, target.to_string_lossy(), base)?;
            continue;
        }
        let executable = e.metadata()?.permissions().mode() & 0o111 != 0;
        w.start_file(rel, base.unix_permissions(if executable { 0o755 } else { 0o644 }))?;
        let mut data = Vec::new();
        std::fs::File::open(e.path())?.read_to_end(&mut data)?;
        w.write_all(&data)?;
    }
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.py"), "x = 1\n").unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/a.py"), "y = 2\n").unwrap();
        let first = zip_dir(dir.path()).unwrap();
        // Touch the files: timestamps must not leak into the archive.
        std::fs::write(dir.path().join("b.py"), "x = 1\n").unwrap();
        assert_eq!(zip_dir(dir.path()).unwrap(), first);
        let names: Vec<String> =
            zip::ZipArchive::new(std::io::Cursor::new(first)).unwrap().file_names().map(str::to_string).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"pkg/a.py".to_string()));
    }
}
