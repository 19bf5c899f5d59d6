//! ARNs and the ways a function may be named in a request: a plain name, a
//! partial ARN (`123456789012:function:name`) or a full ARN, each optionally
//! followed by `:qualifier`.

use crate::error::{Error, Result};
use crate::limits::{FUNCTION_NAME_MAX, LAYER_NAME_MAX};

/// The account and region this node serves; every ARN is built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub region: String,
}

impl Account {
    pub fn function_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:function:{name}", self.region, self.id)
    }

    pub fn qualified_arn(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{qualifier}", self.function_arn(name))
    }

    pub fn layer_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:layer:{name}", self.region, self.id)
    }

    pub fn layer_version_arn(&self, name: &str, version: u64) -> String {
        format!("{}:{version}", self.layer_arn(name))
    }

    /// Splits a layer version ARN into (layer name, version), checking that it
    /// belongs to this account and region.
    pub fn parse_layer_version_arn(&self, arn: &str) -> Result<(String, u64)> {
        let parts: Vec<&str> = arn.split(':').collect();
        let bad = || {
            Error::Validation(format!(
            "1 validation error detected: Value '{arn}' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{{12}}:layer:[a-zA-Z0-9-_]+:[0-9]+"
        ))
        };
        if parts.len() != 8 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "layer" {
            return Err(bad());
        }
        let version: u64 = parts[7].parse().map_err(|_| bad())?;
        if !is_name(parts[6], LAYER_NAME_MAX) {
            return Err(bad());
        }
        if parts[3] != self.region || parts[4] != self.id {
            return Err(Error::NotFound(format!("Layer version {arn} does not exist.")));
        }
        Ok((parts[6].to_string(), version))
    }

    /// Accepts a layer name or a layer ARN (without version) and returns the name.
    pub fn layer_name_of(&self, name_or_arn: &str) -> Result<String> {
        let name = match name_or_arn.strip_prefix("arn:") {
            Some(rest) => match rest.split(':').collect::<Vec<_>>().as_slice() {
                [_, "lambda", _, _, "layer", name] => *name,
                _ => "",
            },
            None => name_or_arn,
        };
        if is_name(name, LAYER_NAME_MAX) {
            Ok(name.to_string())
        } else {
            Err(Error::Validation(format!(
                "1 validation error detected: Value '{name_or_arn}' at 'layerName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{{12}}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
            )))
        }
    }
}

/// A bare function or layer name: letters, digits, `-` and `_`, at most `max`.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Which configuration of a function a request addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "$LATEST" {
            return Ok(Self::Latest);
        }
        // A version has one spelling: `01` read as version 1 let an alias
        // stored as `01` escape the checks that compare versions by name. It
        // names no version, so nothing is found by it.
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !(s.len() > 1 && s.starts_with('0')) {
            return s.parse().map(Self::Version).map_err(|_| invalid_qualifier(s));
        }
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid_qualifier(s));
        }
        Ok(Self::Alias(s.to_string()))
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(v) => write!(f, "{v}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

fn invalid_qualifier(s: &str) -> Error {
    Error::Validation(format!(
        "1 validation error detected: Value '{s}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
    ))
}

/// Whether `arn` is an ARN of a partition other than `aws`, the one a node
/// is in: `FunctionRef::parse` reads names across partitions (the model's
/// pattern allows them), so what delivers to a stored ARN checks this first.
pub fn of_other_partition(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.split(':').nth(1) != Some("aws")
}

/// A function as named in a request, resolved to its bare name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

impl FunctionRef {
    /// Parses the `FunctionName` of a request. `query_qualifier` is the
    /// `Qualifier` query parameter, which must agree with one in the name.
    pub fn parse(account: &Account, raw: &str, query_qualifier: Option<&str>) -> Result<Self> {
        let pattern_error = || {
            Error::Validation(format!(
                "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
            ))
        };
        if raw.is_empty() || raw.len() > 170 {
            return Err(pattern_error());
        }
        let parts: Vec<&str> = raw.split(':').collect();
        let (region, acct, name, qual) = match parts.as_slice() {
            ["arn", _partition, "lambda", region, acct, "function", name] => (Some(*region), Some(*acct), *name, None),
            ["arn", _partition, "lambda", region, acct, "function", name, q] => {
                (Some(*region), Some(*acct), *name, Some(*q))
            }
            [acct, "function", name] => (None, Some(*acct), *name, None),
            [acct, "function", name, q] => (None, Some(*acct), *name, Some(*q)),
            [name] => (None, None, *name, None),
            [name, q] => (None, None, *name, Some(*q)),
            _ => return Err(pattern_error()),
        };
        if !is_name(name, FUNCTION_NAME_MAX) {
            return Err(pattern_error());
        }
        if let Some(a) = acct {
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(pattern_error());
            }
        }
        let qualifier = match (qual, query_qualifier.filter(|q| !q.is_empty())) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::invalid(
                    "The derived qualifier from the function name does not match the specified qualifier.",
                ))
            }
            (Some(q), _) | (None, Some(q)) => Some(Qualifier::parse(q)?),
            (None, None) => None,
        };
        // What AWS answers for another account's function and another region's.
        if let Some(other) = acct.filter(|a| *a != account.id) {
            return Err(Error::AccessDenied(format!(
                "User: arn:aws:iam::{}:root is not authorized to access a function of account {other}: {raw}",
                account.id
            )));
        }
        if let Some(other) = region.filter(|r| *r != account.region) {
            return Err(Error::NotFound(format!(
                "Functions from '{other}' are not reachable in this region ('{}')",
                account.region
            )));
        }
        Ok(Self { name: name.to_string(), qualifier })
    }

    /// Like [`FunctionRef::parse`] for operations that take no qualifier.
    pub fn parse_unqualified(account: &Account, raw: &str) -> Result<Self> {
        let r = Self::parse(account, raw, None)?;
        if r.qualifier.is_some() {
            return Err(Error::invalid(format!(
                "Unsupported qualified function name {raw}; this operation takes an unqualified function."
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> Account {
        Account { id: "123456789012".into(), region: "us-east-1".into() }
    }

    #[test]
    fn parses_every_form_of_function_name() {
        let a = acct();
        let plain = FunctionRef::parse(&a, "hello", None).unwrap();
        assert_eq!(plain, FunctionRef { name: "hello".into(), qualifier: None });
        let partial = FunctionRef::parse(&a, "123456789012:function:hello:live", None).unwrap();
        assert_eq!(partial.qualifier, Some(Qualifier::Alias("live".into())));
        let full = FunctionRef::parse(&a, "arn:aws:lambda:us-east-1:123456789012:function:hello:7", None).unwrap();
        assert_eq!(full.name, "hello");
        assert_eq!(full.qualifier, Some(Qualifier::Version(7)));
        let q = FunctionRef::parse(&a, "hello", Some("$LATEST")).unwrap();
        assert_eq!(q.qualifier, Some(Qualifier::Latest));
    }

    #[test]
    fn rejects_malformed_names_and_foreign_arns() {
        let a = acct();
        for bad in ["", "has space", "a:b:c:d:e", "12345:function:x", &"x".repeat(65)] {
            assert!(matches!(FunctionRef::parse(&a, bad, None), Err(Error::Validation(_))), "{bad}");
        }
        let foreign = FunctionRef::parse(&a, "arn:aws:lambda:eu-west-1:123456789012:function:x", None);
        assert_eq!(
            foreign,
            Err(Error::NotFound("Functions from 'eu-west-1' are not reachable in this region ('us-east-1')".into()))
        );
        let other_account = FunctionRef::parse(&a, "999999999999:function:x", None);
        assert!(matches!(other_account, Err(Error::AccessDenied(_))));
        let mismatch = FunctionRef::parse(&a, "x:1", Some("2"));
        assert!(matches!(mismatch, Err(Error::InvalidParameter(_))));
    }

    #[test]
    fn builds_arns_from_the_account() {
        let a = acct();
        assert_eq!(a.function_arn("f"), "arn:aws:lambda:us-east-1:123456789012:function:f");
        assert_eq!(a.layer_version_arn("l", 3), "arn:aws:lambda:us-east-1:123456789012:layer:l:3");
        assert_eq!(
            a.parse_layer_version_arn("arn:aws:lambda:us-east-1:123456789012:layer:l:3").unwrap(),
            ("l".into(), 3)
        );
        assert!(a.parse_layer_version_arn("arn:aws:lambda:us-east-1:123456789012:layer:l").is_err());
    }
}
