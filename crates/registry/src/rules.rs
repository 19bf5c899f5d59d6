//! The distribution spec's grammar: digests, repository names, tags,
//! references and upload chunk ranges. Pure functions; no I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use sha2::Digest as _;

use crate::RegistryError;

/// The digest algorithms the registry verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The digest of `bytes` with this algorithm.
    pub fn digest(self, bytes: &[u8]) -> Digest {
        let hex = match self {
            Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(bytes)),
            Algorithm::Sha512 => hex::encode(sha2::Sha512::digest(bytes)),
        };
        Digest { algorithm: self, hex }
    }
}

/// A verified-form digest (`sha256:<64 hex>` or `sha512:<128 hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    /// The image spec's digest grammar (through `oci-spec`), then the
    /// algorithms this registry can verify; any other is DIGEST_INVALID, as
    /// the spec asks of digests a registry cannot check.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = oci_spec::image::Digest::from_str(s)
            .map_err(|e| RegistryError::DigestInvalid(format!("invalid digest {s:?}: {e}")))?;
        let algorithm = match parsed.algorithm() {
            oci_spec::image::DigestAlgorithm::Sha256 => Algorithm::Sha256,
            oci_spec::image::DigestAlgorithm::Sha512 => Algorithm::Sha512,
            other => return Err(RegistryError::DigestInvalid(format!("unsupported digest algorithm {other}"))),
        };
        Ok(Digest { algorithm, hex: parsed.digest().to_string() })
    }
}

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").expect("name pattern")
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("tag pattern"));

/// ECR's length bounds on repository names.
pub const NAME_MIN: usize = 2;
pub const NAME_MAX: usize = 256;

/// Checks a repository name against the distribution spec's grammar and
/// ECR's length bounds.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    if NAME.is_match(name) && (NAME_MIN..=NAME_MAX).contains(&name.len()) {
        Ok(())
    } else {
        Err(RegistryError::NameInvalid(format!("invalid repository name {name:?}")))
    }
}

pub fn is_tag(s: &str) -> bool {
    TAG.is_match(s)
}

/// What a manifest path names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            return Ok(Reference::Digest(s.parse()?));
        }
        if is_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(RegistryError::ManifestInvalid(format!("invalid tag {s:?}")))
        }
    }
}

/// An upload chunk's `Content-Range` (`<start>-<end>`, inclusive; the
/// `bytes ` prefix some clients send is accepted).
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let v = header.trim();
    let v = v.strip_prefix("bytes ").or_else(|| v.strip_prefix("bytes=")).unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (start, end) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

/// Checks a chunk of `[start, end]` against an upload that holds `size`
/// bytes: chunks must follow each other with no gap and no overlap, else
/// 416 as the spec says.
pub fn check_chunk(size: u64, start: u64, end: u64) -> Result<(), RegistryError> {
    if start == size && end >= start {
        Ok(())
    } else {
        Err(RegistryError::RangeInvalid { size })
    }
}

/// A blob `Range: bytes=a-b` request against a blob of `size` bytes: the
/// inclusive range to send; `None` for a header to ignore (RFC 9110: a unit
/// other than bytes, several ranges, or a malformed one get the whole
/// blob); `Err` when the range cannot be satisfied.
pub fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, RegistryError> {
    let bad = || RegistryError::RangeInvalid { size };
    let Some(spec) = header.trim().strip_prefix("bytes=").filter(|s| !s.contains(',')) else { return Ok(None) };
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => match number(suffix) {
            None => return Ok(None),
            Some(0) => return Err(bad()),
            Some(n) => (size.saturating_sub(n), size.checked_sub(1).ok_or_else(bad)?),
        },
        (a, "") => match number(a) {
            None => return Ok(None),
            Some(a) => (a, size.checked_sub(1).ok_or_else(bad)?),
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a <= b => (a, b.min(size.saturating_sub(1))),
            _ => return Ok(None),
        },
    };
    if start >= size {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_for_form_and_algorithm() {
        let sha = Algorithm::Sha256.digest(b"");
        assert_eq!(sha.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha.to_string().parse::<Digest>().unwrap(), sha);
        let sha512 = Algorithm::Sha512.digest(b"a");
        assert_eq!(sha512.to_string().parse::<Digest>().unwrap().algorithm, Algorithm::Sha512);
        for bad in [
            "sha256:abc",
            "sha256",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "md5:abc",
            "../x:y",
            "",
        ] {
            assert!(matches!(bad.parse::<Digest>(), Err(RegistryError::DigestInvalid(_))), "{bad}");
        }
    }

    #[test]
    fn names_and_references() {
        for ok in ["ab", "a/b", "team-a/app_1", "x.y/z--w", "a__b"] {
            check_name(ok).unwrap();
        }
        for bad in ["a", "A/b", "a//b", "-a", "a/", "a/../b", "a___b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(Reference::parse("v1.0_x").unwrap(), Reference::Tag("v1.0_x".into()));
        assert!(matches!(Reference::parse(&Algorithm::Sha256.digest(b"x").to_string()), Ok(Reference::Digest(_))));
        assert!(Reference::parse(".hidden").is_err());
        assert!(Reference::parse(&"a".repeat(129)).is_err());
        assert!(matches!(Reference::parse("sha256:zz"), Err(RegistryError::DigestInvalid(_))));
    }

    #[test]
    fn chunks_must_follow_each_other() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("9-1"), None);
        assert_eq!(parse_content_range("x-1"), None);
        check_chunk(100, 100, 199).unwrap();
        // A gap, an overlap and a repeat are all refused with the current size.
        for (start, end) in [(101, 150), (50, 150), (0, 99)] {
            assert!(matches!(check_chunk(100, start, end), Err(RegistryError::RangeInvalid { size: 100 })));
        }
    }

    #[test]
    fn blob_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), Some((95, 99)));
        for unsatisfiable in ["bytes=100-", "bytes=-0", "bytes=100-200"] {
            assert!(parse_range(unsatisfiable, 100).is_err(), "{unsatisfiable}");
        }
        for ignored in ["bytes=5-1", "items=0-1", "bytes=0-1,3-4", "garbage", "bytes=x-"] {
            assert_eq!(parse_range(ignored, 100).unwrap(), None, "{ignored}");
        }
    }
}
