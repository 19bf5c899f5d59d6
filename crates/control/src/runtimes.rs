//! Discovers which managed runtimes this node can run by finding real
//! interpreter binaries for `python3.x` and `nodejs*.x`: shell shims (such
//! as pyenv's, 100 ms a start) are resolved or skipped, and in a sandbox only
//! interpreters the sandbox will see are offered. Java is not offered: there
//! is no Java bootstrap yet, so CreateFunction refuses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nimbus_core::runtime::Catalog;

/// Every runtime identifier AWS defines, from its model.
fn known(id: &str) -> bool {
    nimbus_model::LAMBDA.enum_values("Runtime").contains(&id)
}

/// Which interpreters can run functions.
#[derive(Debug, Clone, Copy)]
pub enum Visible<'a> {
    /// Functions run as host processes: any real interpreter.
    Host,
    /// Functions run in a sandbox that sees only these host directories.
    Under(&'a [&'a str]),
}

impl Visible<'_> {
    fn contains(self, real: &Path) -> bool {
        match self {
            Self::Host => true,
            Self::Under(dirs) => dirs.iter().any(|d| real.starts_with(d)),
        }
    }
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in ["/usr/local/bin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Every executable called `name` in PATH and the system dirs, each
/// resolved to its real binary (an ELF file, not a script), in PATH order.
fn candidates(name: &str) -> Vec<Candidate> {
    search_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .filter_map(|path| {
            let real = std::fs::canonicalize(&path).ok()?;
            Some(Candidate { binary: is_elf(&real), path, real })
        })
        .collect()
}

/// A file named as the interpreter on the search path.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathBuf,
    /// What it resolves to.
    real: PathBuf,
    /// An executable binary, not a script (a pyenv shim, a wrapper).
    binary: bool,
}

/// The first candidate functions can use; the ones passed over are said,
/// because a PATH that prefers them (a venv, pyenv, nvm) is common.
fn choose(id: &str, found: Vec<Candidate>, visible: Visible) -> Option<PathBuf> {
    let mut skipped = Vec::new();
    for Candidate { path, real, binary } in found {
        if binary && visible.contains(&real) {
            if !skipped.is_empty() {
                tracing::warn!(
                    runtime = id,
                    using = %real.display(),
                    skipped = %skipped.join(", "),
                    "interpreters outside what a sandbox sees (/usr), and scripts, are not used"
                );
            }
            return Some(real);
        }
        let script = if binary { "" } else { " (a script, such as a pyenv shim)" };
        let shown = format!("{} -> {}{script}", path.display(), real.display());
        if !skipped.contains(&shown) {
            skipped.push(shown);
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            runtime = id,
            skipped = %skipped.join(", "),
            "runtime not offered: its interpreter is a script or outside what a sandbox sees (/usr); install it under /usr"
        );
    }
    None
}

fn pythons(found: &mut BTreeMap<String, String>, visible: Visible) {
    let mut names = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(minor) = name.strip_prefix("python3.") else { continue };
            if !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names {
        if !known(&name) {
            continue;
        }
        if let Some(real) = choose(&name, candidates(&name), visible) {
            found.insert(name, real.display().to_string());
        }
    }
}

fn node(found: &mut BTreeMap<String, String>, visible: Visible) {
    let Some(path) = choose("nodejs", candidates("node"), visible) else { return };
    let Ok(out) = std::process::Command::new(&path).arg("--version").output() else { return };
    let version = String::from_utf8_lossy(&out.stdout);
    let major = version.trim().trim_start_matches('v').split('.').next().unwrap_or_default().to_string();
    let id = format!("nodejs{major}.x");
    if known(&id) {
        found.insert(id, path.display().to_string());
    }
}

/// The catalog of this node.
pub fn discover(visible: Visible) -> Catalog {
    let mut found = BTreeMap::new();
    pythons(&mut found, visible);
    node(&mut found, visible);
    Catalog::new(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_offered_only_interpreters_it_sees() {
        let under = Visible::Under(&["/usr"]);
        let at = |path: &str, real: &str, binary| Candidate { path: path.into(), real: real.into(), binary };
        let venv = at("/home/u/.venv/bin/python3.11", "/home/u/.pyenv/versions/3.11.9/bin/python3.11", true);
        let system = at("/usr/bin/python3.11", "/usr/bin/python3.11", true);
        // A pyenv shim first on PATH is passed over, and named as a script.
        let shim = at("/root/.pyenv/shims/python3.11", "/root/.pyenv/shims/python3.11", false);
        assert_eq!(
            choose("python3.11", vec![shim.clone(), system.clone()], Visible::Host),
            Some("/usr/bin/python3.11".into())
        );
        assert_eq!(choose("python3.12", vec![shim], Visible::Host), None);
        assert_eq!(choose("python3.11", vec![venv.clone(), system], under), Some(PathBuf::from("/usr/bin/python3.11")));
        assert_eq!(choose("python3.11", vec![venv.clone()], under), None);
        assert_eq!(
            choose("python3.11", vec![venv], Visible::Host),
            Some(PathBuf::from("/home/u/.pyenv/versions/3.11.9/bin/python3.11"))
        );
    }
}
