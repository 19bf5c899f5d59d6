//! Discovers which managed runtimes this node can run by finding real
//! interpreter binaries (not shell shims such as pyenv's, which cost 100 ms
//! a start) for `python3.x`, `nodejs*.x` and `java*`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nimbus_core::runtime::Catalog;

/// Every runtime identifier AWS defines, from its model.
fn known(id: &str) -> bool {
    nimbus_model::LAMBDA.enum_values("Runtime").contains(&id)
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

/// Finds the first real executable called `name` in PATH or the system dirs.
fn find(name: &str) -> Option<PathBuf> {
    search_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file() && std::fs::canonicalize(p).is_ok_and(|c| is_elf(&c)))
        .and_then(|p| std::fs::canonicalize(p).ok())
}

fn pythons(found: &mut BTreeMap<String, String>) {
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(minor) = name.strip_prefix("python3.") else { continue };
            if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let id = format!("python3.{minor}");
            if !known(&id) || found.contains_key(&id) {
                continue;
            }
            if let Ok(real) = std::fs::canonicalize(e.path()) {
                if is_elf(&real) {
                    found.insert(id, real.display().to_string());
                }
            }
        }
    }
}

fn node(found: &mut BTreeMap<String, String>) {
    let Some(path) = find("node") else { return };
    let Ok(out) = std::process::Command::new(&path).arg("--version").output() else { return };
    let version = String::from_utf8_lossy(&out.stdout);
    let major = version.trim().trim_start_matches('v').split('.').next().unwrap_or_default().to_string();
    let id = format!("nodejs{major}.x");
    if known(&id) {
        found.insert(id, path.display().to_string());
    }
}

fn java(found: &mut BTreeMap<String, String>) {
    let Some(path) = find("java") else { return };
    // JAVA_HOME/bin/java → JAVA_HOME/release names the version without
    // starting a JVM.
    let release = path.parent().and_then(Path::parent).map(|home| home.join("release"));
    let Some(text) = release.and_then(|r| std::fs::read_to_string(r).ok()) else { return };
    let Some(line) = text.lines().find(|l| l.starts_with("JAVA_VERSION=")) else { return };
    let version = line.trim_start_matches("JAVA_VERSION=").trim_matches('"');
    let major = match version.strip_prefix("1.") {
        Some(rest) => rest.split('.').next().unwrap_or_default(),
        None => version.split('.').next().unwrap_or_default(),
    };
    let id = format!("java{major}");
    if known(&id) {
        found.insert(id, path.display().to_string());
    }
}

/// The catalog of this node.
pub fn discover() -> Catalog {
    let mut found = BTreeMap::new();
    pythons(&mut found);
    node(&mut found);
    java(&mut found);
    Catalog::new(found)
}
