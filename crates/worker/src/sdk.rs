//! The AWS SDKs that Nimbus's managed runtimes ship, as AWS's do: boto3 for
//! Python and a set of SDK for JavaScript v3 clients for Node.js. Their
//! pinned sets are embedded in the binary (`runtimes/*/sdk*`) and installed
//! from PyPI and npm with the ordinary clients (`pip --require-hashes`,
//! `npm ci`), never taken from the host, into a cache shared by every node
//! of the host and keyed by the pinned set.
//!
//! An install is written to a temporary directory and renamed into place, so
//! a key's directory is either absent or complete; a lock file per key makes
//! two processes installing at once take turns. This module installs and
//! names the directories; the worker mounts them into environments.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYTHON_PINS: &str = include_str!("../../../runtimes/python/sdk-requirements.txt");
const NODE_PACKAGE: &str = include_str!("../../../runtimes/nodejs/sdk/package.json");
const NODE_LOCK: &str = include_str!("../../../runtimes/nodejs/sdk/package-lock.json");

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The package client is not there (pip for the interpreter, npm).
    #[error("{0} is missing")]
    Missing(String),
    #[error("`{command}` failed ({status}): {output}")]
    Failed { command: String, status: String, output: String },
}

/// One runtime family's SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    Python,
    Node,
}

impl Sdk {
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Node => "nodejs",
        }
    }

    /// What the logs call it, e.g. `the Python SDK (boto3 1.44.8)`.
    pub fn title(self) -> String {
        match self {
            Self::Python => {
                let pin = PYTHON_PINS.lines().find_map(|l| l.strip_prefix("boto3==")).unwrap_or_default();
                format!("the Python SDK (boto3 {})", pin.split_whitespace().next().unwrap_or_default())
            }
            Self::Node => {
                let package: serde_json::Value = serde_json::from_str(NODE_PACKAGE).unwrap_or_default();
                let clients = package["dependencies"].as_object().map(|d| d.len()).unwrap_or_default();
                format!("the Node.js SDK (AWS SDK for JavaScript v3, {clients} packages)")
            }
        }
    }

    /// The pinned set's key: its name and a hash of what pins it.
    fn key(self) -> String {
        let pins = match self {
            Self::Python => PYTHON_PINS.to_string(),
            Self::Node => format!("{NODE_PACKAGE}{NODE_LOCK}"),
        };
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(pins.as_bytes()));
        format!("{}-{}", self.name(), &digest[..16])
    }

    /// The installed directory in `cache` (complete once it exists).
    fn dir(self, cache: &Path) -> PathBuf {
        cache.join(self.key())
    }

    /// What goes on the runtime's module path: the Python packages, or Node's
    /// `node_modules`.
    pub fn path(self, cache: &Path) -> PathBuf {
        match self {
            Self::Python => self.dir(cache),
            Self::Node => self.dir(cache).join("node_modules"),
        }
    }

    pub fn installed(self, cache: &Path) -> bool {
        self.dir(cache).is_dir()
    }

    /// Installs the SDK into `cache` unless it is there. `tool` is the
    /// Python interpreter whose pip installs it, or npm; `pythons` are the
    /// interpreters it is byte-compiled for. Blocking (minutes at worst).
    pub fn install(self, cache: &Path, tool: &Path, pythons: &[String]) -> Result<(), InstallError> {
        std::fs::create_dir_all(cache)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cache.join(format!(".{}.lock", self.key())))?;
        // Held until this returns: another process waits here, then finds it done.
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::other(format!("locking the SDK cache: {e}")))?;
        if self.installed(cache) {
            return Ok(());
        }
        // What an install that died half-way left (best effort: the client
        // of a killed node may still be writing there).
        let partial = format!(".{}.tmp-", self.key());
        for e in std::fs::read_dir(cache)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(&partial) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let tmp = cache.join(format!("{partial}{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        // A failed install leaves nothing behind. Sandboxes read the SDK as
        // `nobody`, whatever the installing umask was.
        let filled = self.fill(&tmp, cache, tool, pythons).and_then(|()| Ok(readable_by_all(&tmp)?));
        if let Err(e) = filled {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, self.dir(cache))?;
        Ok(())
    }

    /// Installs the SDK's packages into `tmp` with `tool`.
    fn fill(self, tmp: &Path, cache: &Path, tool: &Path, pythons: &[String]) -> Result<(), InstallError> {
        match self {
            Self::Python => {
                let pins = cache.join(format!(".{}.requirements.txt", self.key()));
                std::fs::File::create(&pins)?.write_all(PYTHON_PINS.as_bytes())?;
                let pip = run_checked(
                    Command::new(tool)
                        .args(["-I", "-m", "pip", "install", "--no-deps", "--require-hashes", "--only-binary=:all:"])
                        .args(["--no-compile", "--disable-pip-version-check", "--no-input", "--quiet", "--target"])
                        .arg(tmp)
                        .arg("-r")
                        .arg(&pins),
                );
                std::fs::remove_file(&pins)?;
                if let Err(InstallError::Failed { output, .. }) = &pip {
                    if output.contains("No module named pip") {
                        return Err(InstallError::Missing(format!("pip (for {})", tool.display())));
                    }
                }
                pip?;
                // Each interpreter's own byte code, as imports inside a
                // read-only sandbox cannot write it.
                for python in pythons {
                    run_checked(Command::new(python).args(["-I", "-m", "compileall", "-q"]).arg(tmp))?;
                }
            }
            Self::Node => {
                std::fs::write(tmp.join("package.json"), NODE_PACKAGE)?;
                std::fs::write(tmp.join("package-lock.json"), NODE_LOCK)?;
                run_checked(
                    Command::new(tool)
                        .args(["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
                        .current_dir(tmp),
                )?;
            }
        }
        Ok(())
    }
}

/// Adds read permission for everyone (and search, on directories and
/// executables) to every file under `dir`.
fn readable_by_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let widen = |path: &Path, meta: &std::fs::Metadata| {
        let mode = meta.permissions().mode();
        let wanted = mode | 0o444 | if meta.is_dir() || mode & 0o111 != 0 { 0o111 } else { 0 };
        match wanted == mode {
            true => Ok(()),
            false => std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)),
        }
    };
    widen(dir, &std::fs::metadata(dir)?)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            readable_by_all(&entry.path())?;
        } else if meta.is_file() {
            widen(&entry.path(), &meta)?;
        }
    }
    Ok(())
}

fn run_checked(command: &mut Command) -> Result<(), InstallError> {
    let shown = format!("{command:?}");
    let out = command.stdin(std::process::Stdio::null()).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => InstallError::Missing(format!("{:?}", command.get_program())),
        _ => InstallError::Io(e),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    output.push_str(String::from_utf8_lossy(&out.stdout).trim());
    Err(InstallError::Failed { command: shown, status: out.status.to_string(), output })
}

/// The `npm` that goes with a Node.js interpreter: beside it, else on PATH.
pub fn npm_for(node: &Path) -> Option<PathBuf> {
    let beside = node.parent().map(|d| d.join("npm")).filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("npm")).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_pinned_sets() {
        let cache = Path::new("/c");
        assert!(Sdk::Python.path(cache).to_string_lossy().starts_with("/c/python-"));
        assert!(Sdk::Node.path(cache).ends_with("node_modules"));
        assert_eq!(Sdk::Python.key().len(), "python-".len() + 16);
        assert_ne!(Sdk::Python.key(), Sdk::Node.key());
        assert_eq!(Sdk::Python.title(), "the Python SDK (boto3 1.44.8)");
    }

    #[test]
    fn every_python_pin_carries_a_hash() {
        let pins: Vec<&str> = PYTHON_PINS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        assert!(pins.iter().any(|l| l.starts_with("botocore==")));
        assert!(pins.iter().all(|l| l.contains("==") && l.contains("--hash=sha256:")), "{pins:?}");
    }

    #[test]
    fn installed_files_are_readable_by_everyone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("pkg");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(sub.join("m.py"), "").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(sub.join("m.py"), std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap_or_else(|e| panic!("{e}"));
        readable_by_all(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or_default();
        assert_eq!((mode(&sub), mode(&sub.join("m.py"))), (0o755, 0o644));
    }

    #[test]
    fn a_missing_tool_is_reported_and_leaves_no_directory() {
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Sdk::Node.install(cache.path(), Path::new("/nonexistent/npm"), &[]);
        assert!(matches!(err, Err(InstallError::Missing(_))), "{err:?}");
        assert!(!Sdk::Node.installed(cache.path()));
        let left: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "a failed install leaves only its lock: {left:?}");
    }
}
