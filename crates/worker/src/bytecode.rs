//! Byte-compiles a function's Python sources ahead of its cold starts.
//!
//! The sources are hostile, and CPython's compiler is not built for that:
//! a 10 KB archive can hold a module whose compile takes 6 GB and half a
//! minute. So the compiler runs as the sandboxes' unprivileged user,
//! without the node's environment (its keys), within limits of memory,
//! CPU, file size and wall time, and writes only into a scratch directory
//! of its own; the node then adopts what it wrote for sources that exist,
//! never through a link. A source left uncompiled (a limit, a syntax
//! error) is compiled by its import, as on AWS, so nothing here fails a
//! deploy.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the compiler writes, inside the directory it compiles; removed before that is published.
const SCRATCH: &str = ".nimbus-bytecode";
/// The compiler's wall-clock limit (its CPU limit is in [`SCRIPT`]).
const DEADLINE: Duration = Duration::from_secs(120);
/// The largest compiled module adopted (the compiler's file size limit).
const MAX_PYC: u64 = 64 << 20;

/// Run as `python -I -c SCRIPT <scratch> <uid> <gid>` in the directory to
/// compile (`-I`: nothing of that directory is importable). It limits and
/// unprivileges itself before it reads any source; a uid of -1 keeps the
/// caller's (a node without sandboxes, not root).
const SCRIPT: &str = r#"
import os, py_compile, resource, sys
scratch, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for limit, value in ((resource.RLIMIT_AS, 1 << 30), (resource.RLIMIT_CPU, 60),
                     (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
tag = sys.implementation.cache_tag
for root, dirs, files in os.walk("."):
    if root == ".":
        dirs[:] = [d for d in dirs if d != scratch]
    for name in files:
        if name.endswith(".py"):
            out = os.path.join(scratch, root, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            try:
                py_compile.compile(os.path.join(root, name), cfile=out, doraise=True)
            except BaseException:
                pass
"#;

/// Compilers running at once, node-wide: one per CPU. Each may take 1 GiB
/// and a CPU for a minute, outside any sandbox's cgroup, so that deploying
/// many functions at once must not take that many times over.
static RUNNING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
});

/// Compiles the Python sources under `dir` into `__pycache__` directories
/// beside them. `ids`: the user and group the compiler runs as (the node's
/// own when `None`).
pub async fn byte_compile(python: &str, dir: &Path, ids: Option<(u32, u32)>) {
    // Never closed, so the wait ends with a turn.
    let _turn = RUNNING.acquire().await;
    let scratch = dir.join(SCRATCH);
    let made = std::fs::create_dir(&scratch)
        .and_then(|()| ids.map_or(Ok(()), |(uid, gid)| std::os::unix::fs::chown(&scratch, Some(uid), Some(gid))));
    if let Err(e) = made {
        tracing::warn!(dir = %scratch.display(), error = %e, "cannot make the byte-compiler's directory");
        return;
    }
    let (uid, gid) = ids.map_or((-1, -1), |(uid, gid)| (i64::from(uid), i64::from(gid)));
    let child = tokio::process::Command::new(python)
        .args(["-I", "-c", SCRIPT, SCRATCH, &uid.to_string(), &gid.to_string()])
        .current_dir(dir)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(mut child) => match tokio::time::timeout(DEADLINE, child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                tracing::debug!(dir = %dir.display(), %status, "the byte-compiler stopped early")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(dir = %dir.display(), error = %e, "waiting for the byte-compiler"),
            Err(_) => tracing::warn!(dir = %dir.display(), "the byte-compiler ran past {DEADLINE:?} and was killed"),
        },
        Err(e) => tracing::warn!(python, error = %e, "cannot start the byte-compiler"),
    }
    let dir = dir.to_path_buf();
    let adopted = tokio::task::spawn_blocking(move || {
        let adopted = adopt(&dir, &scratch);
        let removed = std::fs::remove_dir_all(&scratch);
        adopted.and_then(|n| removed.map(|()| n))
    })
    .await;
    match adopted {
        Ok(Ok(n)) => tracing::debug!(modules = n, "byte-compiled"),
        Ok(Err(e)) => tracing::warn!(error = %e, "adopting the byte-compiler's output"),
        Err(e) => tracing::warn!(error = %e, "adopting the byte-compiler's output"),
    }
}

/// Copies each `scratch/<rel>/__pycache__/<stem>.<tag>.pyc` to
/// `dir/<rel>/__pycache__/` where `dir/<rel>/<stem>.py` exists and `<rel>`
/// is a directory of `dir`, not a link. A compiled module the archive
/// brought itself is kept. Returns how many were adopted.
fn adopt(dir: &Path, scratch: &Path) -> io::Result<usize> {
    let mut adopted = 0;
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(scratch.join(&rel))? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            if entry.file_name() != "__pycache__" {
                todo.push(rel.join(entry.file_name()));
            } else if is_directory_of(dir, &rel) {
                adopted += adopt_cache(&entry.path(), &dir.join(&rel))?;
            }
        }
    }
    Ok(adopted)
}

/// Whether `dir/<rel>` is a directory reached through directories only.
fn is_directory_of(dir: &Path, rel: &Path) -> bool {
    let mut at = dir.to_path_buf();
    std::iter::once(dir.as_os_str()).chain(rel.iter()).enumerate().all(|(i, part)| {
        if i > 0 {
            at.push(part);
        }
        at.symlink_metadata().is_ok_and(|m| m.is_dir())
    })
}

/// Adopts one compiled `__pycache__` for the sources in `sources`.
fn adopt_cache(compiled: &Path, sources: &Path) -> io::Result<usize> {
    let mut adopted = 0;
    let cache = sources.join("__pycache__");
    for entry in std::fs::read_dir(compiled)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(module_stem) else { continue };
        if !entry.file_type()?.is_file() || sources.join(format!("{stem}.py")).symlink_metadata().is_err() {
            continue;
        }
        match cache.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(adopted),
            Err(_) => std::fs::create_dir(&cache)?,
        }
        let target = cache.join(&name);
        if target.symlink_metadata().is_ok() {
            continue;
        }
        let mut from = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(entry.path())?;
        let meta = from.metadata()?;
        if !meta.is_file() || meta.len() > MAX_PYC {
            continue;
        }
        let mut to = std::fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
        io::copy(&mut io::Read::take(&mut from, MAX_PYC), &mut to)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o444))?;
        adopted += 1;
    }
    Ok(adopted)
}

/// `h` of `h.cpython-311.pyc`.
fn module_stem(name: &str) -> Option<&str> {
    let (stem, tag) = name.strip_suffix(".pyc")?.rsplit_once('.')?;
    (!stem.is_empty() && !stem.contains('.') && !tag.is_empty()).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const PYTHON: &str = "/usr/bin/python3.11";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn compiled(dir: &Path) -> Vec<String> {
        let mut found: Vec<String> = walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pyc"))
            .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
            .collect();
        found.sort();
        found
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn module_stems() {
        assert_eq!(module_stem("h.cpython-311.pyc"), Some("h"));
        assert_eq!(module_stem("h.pyc"), None);
        assert_eq!(module_stem(".cpython-311.pyc"), None);
        assert_eq!(module_stem("a.b.cpython-311.pyc"), None);
        assert_eq!(module_stem("h.cpython-311.py"), None);
    }

    #[tokio::test]
    async fn compiles_sources_beside_them_and_leaves_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("code");
        write(&dir.join("h.py"), "def handler(e, c):\n    return 1\n");
        write(&dir.join("pkg/__init__.py"), "");
        write(&dir.join("pkg/m.py"), "X = 2\n");
        write(&dir.join("broken.py"), "def (:\n");
        write(&dir.join("notes.txt"), "not python\n");
        // The archive's own compiled module is kept as it came.
        write(&dir.join("own/__pycache__/o.cpython-311.pyc"), "theirs");
        write(&dir.join("own/o.py"), "O = 1\n");
        // A link to a directory of the code: its sources are compiled where they are.
        std::os::unix::fs::symlink("pkg", dir.join("alias")).unwrap();
        byte_compile(PYTHON, &dir, None).await;
        assert_eq!(
            compiled(&dir),
            [
                "__pycache__/h.cpython-311.pyc",
                "own/__pycache__/o.cpython-311.pyc",
                "pkg/__pycache__/__init__.cpython-311.pyc",
                "pkg/__pycache__/m.cpython-311.pyc",
            ]
        );
        assert_eq!(std::fs::read_to_string(dir.join("own/__pycache__/o.cpython-311.pyc")).unwrap(), "theirs");
        assert!(!dir.join(SCRATCH).exists());
        let mode = std::fs::metadata(dir.join("__pycache__/h.cpython-311.pyc")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o444);
        // Python loads what was adopted: a source changed behind the
        // compiled module's back (same size and time) goes unseen.
        let source = dir.join("h.py");
        let modified = std::fs::metadata(&source).unwrap().modified().unwrap();
        std::fs::write(&source, "def handler(e, c):\n    return 2\n").unwrap();
        std::fs::File::options().write(true).open(&source).unwrap().set_modified(modified).unwrap();
        let out = std::process::Command::new(PYTHON)
            .args(["-I", "-B", "-c", "import sys; sys.path.insert(0, '.'); import h; print(h.handler(0, 0))"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "{out:?}");
    }

    #[test]
    fn adopts_nothing_through_links_or_for_missing_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, scratch, elsewhere) =
            (tmp.path().join("code"), tmp.path().join("scratch"), tmp.path().join("elsewhere"));
        write(&dir.join("a.py"), "");
        write(&elsewhere.join("b.py"), "");
        std::os::unix::fs::symlink(&elsewhere, dir.join("out")).unwrap();
        write(&scratch.join("__pycache__/a.cpython-311.pyc"), "a");
        // No source beside it.
        write(&scratch.join("__pycache__/gone.cpython-311.pyc"), "g");
        // Through the code's link to a directory outside it.
        write(&scratch.join("out/__pycache__/b.cpython-311.pyc"), "b");
        // A link the compiler made instead of a file.
        std::os::unix::fs::symlink("/etc/passwd", scratch.join("__pycache__/c.cpython-311.pyc")).unwrap();
        write(&dir.join("c.py"), "");
        assert_eq!(adopt(&dir, &scratch).unwrap(), 1);
        assert_eq!(compiled(&dir), ["__pycache__/a.cpython-311.pyc"]);
        assert!(!elsewhere.join("__pycache__").exists());
    }

    /// As root (the node with sandboxes; tests run as root), the compiler
    /// runs as the user it is given: what it writes is that user's.
    #[test]
    fn the_compiler_runs_as_the_user_it_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("code");
        // The compiler reaches its directory through none of its parents (a data directory is often 0700).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        write(&dir.join("h.py"), "X = 1\n");
        let scratch = dir.join(SCRATCH);
        std::fs::create_dir(&scratch).unwrap();
        std::os::unix::fs::chown(&scratch, Some(65534), Some(65534)).unwrap();
        let status = std::process::Command::new(PYTHON)
            .args(["-I", "-c", SCRIPT, SCRATCH, "65534", "65534"])
            .current_dir(&dir)
            .env_clear()
            .status()
            .unwrap();
        assert!(status.success());
        let written = scratch.join("__pycache__/h.cpython-311.pyc");
        assert_eq!(std::fs::metadata(written).unwrap().uid(), 65534);
    }
}
