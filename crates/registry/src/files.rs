//! Blob and upload files. A blob is `blobs/<algorithm>/<2 hex>/<hex>`,
//! written only by renaming a complete, verified, fsynced upload file into
//! place (then fsyncing the directory), so a crash never leaves a partial
//! blob under a digest's name. Uploads in progress are `uploads/<id>`; a
//! restart forgets them (their hash state was in memory) and removes them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::rules::Digest;

#[derive(Debug, Clone)]
pub struct Files {
    blobs: PathBuf,
    uploads: PathBuf,
}

impl Files {
    /// Opens the directories, removing every upload a stopped node left.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let files = Self { blobs: root.join("blobs"), uploads: root.join("uploads") };
        // std's errors name no path; a start that fails must say which.
        let at = |dir: &Path| {
            let dir = dir.display().to_string();
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{dir}: {e}"))
        };
        if files.uploads.exists() {
            std::fs::remove_dir_all(&files.uploads).map_err(at(&files.uploads))?;
        }
        std::fs::create_dir_all(&files.uploads).map_err(at(&files.uploads))?;
        std::fs::create_dir_all(&files.blobs).map_err(at(&files.blobs))?;
        Ok(files)
    }

    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.algorithm.name()).join(&d.hex[..2]).join(&d.hex)
    }

    pub fn upload(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    /// Moves a complete upload file into place as blob `d`, durably.
    pub fn commit(&self, upload: &Path, d: &Digest) -> std::io::Result<PathBuf> {
        let path = self.blob(d);
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir)?;
        std::fs::File::open(upload)?.sync_all()?;
        std::fs::rename(upload, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(path)
    }

    /// Removes blob files, ignoring ones already gone.
    pub fn remove(&self, digests: &[String]) -> std::io::Result<()> {
        for d in digests {
            let Ok(d) = d.parse::<Digest>() else { continue };
            match std::fs::remove_file(self.blob(&d)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes blob files the store does not know: renamed into place by a
    /// push that crashed before its commit.
    pub fn sweep(&self, known: &HashSet<String>) -> std::io::Result<usize> {
        let mut removed = 0;
        for algorithm in std::fs::read_dir(&self.blobs)? {
            let algorithm = algorithm?;
            let name = algorithm.file_name().to_string_lossy().into_owned();
            for shard in std::fs::read_dir(algorithm.path())? {
                for file in std::fs::read_dir(shard?.path())? {
                    let file = file?;
                    let digest = format!("{name}:{}", file.file_name().to_string_lossy());
                    if !known.contains(&digest) {
                        std::fs::remove_file(file.path())?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}
