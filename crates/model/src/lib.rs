//! AWS's published service models, compiled into tables at build time, and
//! the request validation derived from them.
//!
//! The models are botocore's `service-2.json` files, vendored under
//! `models/` (see its README for versions and licence). `build.rs` turns each
//! into a static [`Model`]: every operation with the shapes its input reaches,
//! each shape with its constraints (length, pattern, range, enum, required
//! members) and each member's place in the request (URI label, query string,
//! header, body). Nothing here is written by hand from the AWS
//! documentation: a new model version brings its constraints with it.
//!
//! This crate owns the model tables and [`validate`]. It must not know
//! Nimbus's own rules (limits AWS applies beyond the model live in
//! `nimbus_core::service_rules`) nor speak HTTP.

mod validate;

use std::sync::OnceLock;

pub use validate::{validate, Invalid, Request, Violations};

/// One service model.
pub struct Model {
    pub service: &'static str,
    pub api_version: &'static str,
    /// Sorted by name.
    operations: &'static [Operation],
    shapes: &'static [Shape],
    /// Java regular expressions as the model spells them (and as AWS quotes them).
    patterns: &'static [&'static str],
    /// `patterns[i]` compiled on first use; `None` if it cannot be (a test
    /// compiles every one).
    compiled: &'static [OnceLock<Option<fancy_regex::Regex>>],
    /// Every enum shape by name (sorted) with its values.
    enums: &'static [(&'static str, &'static [&'static str])],
}

/// An operation and where its input starts.
pub struct Operation {
    pub name: &'static str,
    /// Index of the input shape in [`Model`]'s shapes.
    input: Option<usize>,
    /// URI label names in the order they appear in the request URI.
    pub labels: &'static [&'static str],
}

impl Operation {
    /// Whether the request body is a JSON document of input members (not a
    /// raw payload, nor absent).
    pub fn takes_json_body(&self, model: &Model) -> bool {
        let Some(Kind::Structure { members }) = self.input.map(|i| &model.shape(i).kind) else { return false };
        members.iter().any(|m| match m.location {
            Location::Body => true,
            Location::Payload => matches!(model.shape(m.shape).kind, Kind::Structure { .. }),
            _ => false,
        })
    }
}

/// A shape; the generated table names each in a comment.
struct Shape {
    /// AWS leaves sensitive values out of its messages ("Value at 'x'").
    sensitive: bool,
    kind: Kind,
}

enum Kind {
    String {
        min: Option<i64>,
        max: Option<i64>,
        pattern: Option<usize>,
        values: &'static [&'static str],
    },
    Blob {
        min: Option<i64>,
        max: Option<i64>,
    },
    /// `integer` and `long`.
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    /// `double` and `float`.
    Double {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Timestamp,
    List {
        member: usize,
        min: Option<i64>,
        max: Option<i64>,
    },
    Map {
        key: usize,
        value: usize,
        min: Option<i64>,
        max: Option<i64>,
    },
    Structure {
        members: &'static [Member],
    },
}

struct Member {
    name: &'static str,
    /// The name on the wire: the JSON key, label, query parameter or header.
    wire: &'static str,
    location: Location,
    required: bool,
    shape: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Location {
    Body,
    Label,
    Query,
    Header,
    /// The whole body is this member (Invoke's `Payload`).
    Payload,
}

impl Model {
    /// The model of a service, by the name its SigV4 scope carries
    /// (`lambda`), which is also botocore's folder name for it.
    pub fn of(service: &str) -> Option<&'static Model> {
        MODELS.iter().copied().find(|m| m.service == service)
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.binary_search_by(|o| o.name.cmp(name)).ok().map(|i| &self.operations[i])
    }

    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.operations.iter()
    }

    /// The values of a named enum shape (`Runtime`, `Architecture`).
    pub fn enum_values(&self, shape: &str) -> &'static [&'static str] {
        self.enums.binary_search_by(|(n, _)| n.cmp(&shape)).map_or(&[], |i| self.enums[i].1)
    }

    fn shape(&self, i: usize) -> &Shape {
        &self.shapes[i]
    }

    /// Whether the whole of `value` matches pattern `i`, as Java's
    /// `Matcher.matches()` decides. A pattern that cannot be compiled or
    /// a match that gives up (backtracking limit) counts as a match: the
    /// validator must never refuse a request AWS would take.
    fn matches(&self, i: usize, value: &str) -> bool {
        let re = self.compiled[i].get_or_init(|| fancy_regex::Regex::new(&java_to_rust(self.patterns[i])).ok());
        re.as_ref().is_none_or(|re| re.is_match(value).unwrap_or(true))
    }
}

/// Rewrites a model (Java) pattern for `fancy_regex`, anchored at both ends
/// because AWS matches the whole value. Java's `\d` is ASCII only; Rust's is
/// Unicode, so it is spelled out.
fn java_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("^(?:");
    let mut in_class = false;
    // Inside a class, whether the last item was a class escape (`\w`), after
    // which Java reads `-` as itself (`[\w-_]`), where Rust sees a bad range.
    let mut after_class_escape = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let escape_before = std::mem::take(&mut after_class_escape);
        match c {
            '\\' => match chars.next() {
                Some('d') => {
                    out.push_str(if in_class { "0-9" } else { "[0-9]" });
                    after_class_escape = in_class;
                }
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                    after_class_escape = in_class && "wWsSD".contains(e);
                }
                None => out.push_str("\\\\"),
            },
            '-' if in_class && escape_before && chars.peek() != Some(&']') => out.push_str("\\-"),
            '[' => {
                in_class = true;
                out.push(c);
            }
            ']' => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push_str(")$");
    out
}

include!(concat!(env!("OUT_DIR"), "/models.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_of_every_model_compiles() {
        for model in MODELS {
            for (i, p) in model.patterns.iter().enumerate() {
                assert!(fancy_regex::Regex::new(&java_to_rust(p)).is_ok(), "{}: {p}", model.service);
                assert!(model.compiled.len() > i);
            }
        }
    }

    #[test]
    fn patterns_match_whole_values_with_look_around() {
        let alias = LAMBDA.patterns.iter().position(|p| *p == "(?!^[0-9]+$)([a-zA-Z0-9-_]+)").unwrap();
        assert!(LAMBDA.matches(alias, "live"));
        assert!(!LAMBDA.matches(alias, "123"));
        assert!(!LAMBDA.matches(alias, "a b"));
        let hyphen = fancy_regex::Regex::new(&java_to_rust(r"[\w-_]*")).unwrap();
        assert!(hyphen.is_match("a-b_c").unwrap() && !hyphen.is_match("a.b").unwrap());
        let behind = LAMBDA.patterns.iter().position(|p| *p == r"[0-9A-Za-z\.\-_]*(?<!\.)").unwrap();
        assert!(LAMBDA.matches(behind, "a.b"));
        assert!(!LAMBDA.matches(behind, "ab."));
    }

    #[test]
    fn operations_are_found_by_name_with_labels_in_uri_order() {
        let op = LAMBDA.operation("GetAlias").unwrap();
        assert_eq!(op.labels, ["FunctionName", "Name"]);
        assert!(LAMBDA.operation("FilterLogEvents").is_none());
        assert!(LAMBDA.operations().count() > 80);
        assert!(LAMBDA.enum_values("Runtime").contains(&"python3.12"));
        assert!(LAMBDA.enum_values("NoSuchShape").is_empty());
        assert!(Model::of("lambda").is_some_and(|m| m.api_version == "2015-03-31"));
        assert!(Model::of("nimbus").is_none());
    }
}
