//! Runtime identifiers. The catalog of what a node can run is discovered by
//! the caller (it needs the filesystem); this module only holds the result.
//! Which identifiers AWS defines is the model's to say (`nimbus-model`).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The ARN of the runtime version a node runs for `runtime`, in AWS's form
/// `arn:aws:lambda:<region>::runtime:<64 hex>`. A node has one version of
/// each runtime, so the digest of the identifier names it stably.
pub fn version_arn(region: &str, runtime: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("nimbus-runtime:{runtime}").as_bytes());
    format!("arn:aws:lambda:{region}::runtime:{}", hex::encode(digest))
}

/// The name of the runtime version a node runs for `runtime`, in AWS's form
/// (`python:3.11.v1`, `nodejs:20.v1`, `provided:al2023.v1`): the language,
/// its release, and the node's one version of it.
pub fn version_name(runtime: &str) -> String {
    let release = runtime.trim_end_matches(".x");
    let (language, release) = match release.split_once('.') {
        Some((language, release)) if !language.ends_with(|c: char| c.is_ascii_digit()) => (language, release),
        _ => match release.find(|c: char| c.is_ascii_digit()) {
            Some(i) => release.split_at(i),
            None => (release, "al1"),
        },
    };
    format!("{language}:{release}.v1")
}

/// The runtimes every node offers: they bring their own `bootstrap`.
pub const PROVIDED: &[&str] = &["provided", "provided.al2", "provided.al2023"];

/// The runtimes this node can run, each with the interpreter that runs it
/// (`None` for the `provided` family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    runtimes: BTreeMap<String, Option<String>>,
}

impl Catalog {
    /// A catalog of the `provided` runtimes plus the given interpreters.
    pub fn new(interpreters: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut runtimes: BTreeMap<String, Option<String>> = PROVIDED.iter().map(|r| (r.to_string(), None)).collect();
        for (id, path) in interpreters {
            runtimes.insert(id, Some(path));
        }
        Self { runtimes }
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.runtimes.keys().map(String::as_str)
    }

    pub fn interpreter(&self, id: &str) -> Option<&str> {
        self.runtimes.get(id).and_then(|p| p.as_deref())
    }

    /// Checks that `id` can run here; the error names what can.
    pub fn check(&self, id: &str) -> Result<()> {
        if self.runtimes.contains_key(id) {
            return Ok(());
        }
        let available: Vec<&str> = self.ids().collect();
        Err(Error::invalid(format!(
            "The runtime parameter of {id} is not supported on this Nimbus node. Available runtimes: {}",
            available.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_read_as_aws_writes_them() {
        for (runtime, name) in [
            ("python3.11", "python:3.11.v1"),
            ("nodejs20.x", "nodejs:20.v1"),
            ("java17", "java:17.v1"),
            ("provided.al2023", "provided:al2023.v1"),
            ("provided", "provided:al1.v1"),
        ] {
            assert_eq!(version_name(runtime), name);
        }
    }

    #[test]
    fn catalog_offers_provided_and_detected_runtimes_only() {
        let c = Catalog::new([("python3.11".to_string(), "/usr/bin/python3.11".to_string())]);
        assert!(c.check("provided.al2023").is_ok());
        assert_eq!(c.interpreter("python3.11"), Some("/usr/bin/python3.11"));
        let err = c.check("ruby3.3").unwrap_err().to_string();
        assert!(err.contains("ruby3.3") && err.contains("python3.11") && err.contains("provided"), "{err}");
    }

    #[test]
    fn runtime_version_arns_have_aws_form_and_differ_by_runtime() {
        let a = version_arn("us-east-1", "python3.11");
        let hex = a.strip_prefix("arn:aws:lambda:us-east-1::runtime:").unwrap();
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, version_arn("us-east-1", "nodejs20.x"));
    }
}
