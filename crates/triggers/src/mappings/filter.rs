//! Event filtering (`FilterCriteria.Filters[].Pattern`): EventBridge's
//! pattern language, compiled once when a mapping is saved and matched
//! against each record a poller receives. A record passes if any filter
//! matches it; an empty list passes everything.
//!
//! Supported, as AWS documents them: exact values (strings, numbers compared
//! as numbers, booleans, null), `prefix` and `suffix` (optionally with
//! `equals-ignore-case`), `equals-ignore-case`, `wildcard`, `anything-but`
//! (values, `prefix`, `suffix`, `equals-ignore-case`, `wildcard`), `numeric`
//! ranges, `exists`, `$or`, and arrays in the record meaning "any element".
//!
//! This module knows nothing of queues or invocations: it judges JSON.

use serde_json::{Map, Value};

/// AWS's limit of filters per event source mapping.
pub const MAX_FILTERS: usize = 5;

/// The record's field that holds the message's data. A pattern for it must be
/// of the data's kind: an object for data that is JSON, values for text (AWS
/// drops a message whose body is the other kind).
const DATA: &str = "body";

/// A pattern that is not valid EventBridge syntax (AWS answers
/// `InvalidParameterValueException` with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter pattern definition.")]
pub struct InvalidPattern;

type Parsed<T> = Result<T, InvalidPattern>;

/// A mapping's compiled filters.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Object>);

impl Filters {
    /// Compiles the patterns a request gave (each a JSON document).
    pub fn compile(patterns: &[String]) -> Parsed<Self> {
        patterns
            .iter()
            .map(|p| match serde_json::from_str::<Value>(p) {
                Ok(Value::Object(o)) => Object::compile(&o),
                _ => Err(InvalidPattern),
            })
            .collect::<Parsed<Vec<_>>>()
            .map(Self)
    }

    /// Whether a record passes: any filter matches, or there are none.
    pub fn pass(&self, record: &Value) -> bool {
        let json = matches!(record.get(DATA), Some(Value::Object(_) | Value::Array(_)));
        self.0.is_empty() || self.0.iter().any(|o| o.matches_at(record, Some(json)))
    }
}

/// A pattern object: every field must match, and every `$or` group must
/// have a branch that matches.
#[derive(Debug, Clone)]
struct Object {
    fields: Vec<(String, Field)>,
    or: Vec<Vec<Object>>,
}

#[derive(Debug, Clone)]
enum Field {
    Nested(Object),
    /// Matches if any of these matches.
    Any(Vec<Matcher>),
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(Value),
    Prefix {
        text: String,
        ignore_case: bool,
    },
    Suffix {
        text: String,
        ignore_case: bool,
    },
    EqualsIgnoreCase(String),
    Wildcard(String),
    /// Matches a present value that none of these match.
    AnythingBut(Vec<Matcher>),
    /// Every bound must hold.
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy)]
enum Comparison {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Object {
    fn compile(o: &Map<String, Value>) -> Parsed<Self> {
        let mut fields = Vec::new();
        let mut or = Vec::new();
        for (key, v) in o {
            if key == "$or" {
                let Value::Array(branches) = v else { return Err(InvalidPattern) };
                if branches.len() < 2 {
                    return Err(InvalidPattern);
                }
                let group = branches
                    .iter()
                    .map(|b| b.as_object().ok_or(InvalidPattern).and_then(Object::compile))
                    .collect::<Parsed<Vec<_>>>()?;
                or.push(group);
                continue;
            }
            let field = match v {
                Value::Object(inner) => Field::Nested(Object::compile(inner)?),
                Value::Array(items) if !items.is_empty() => {
                    Field::Any(items.iter().map(Matcher::compile).collect::<Parsed<_>>()?)
                }
                _ => return Err(InvalidPattern),
            };
            fields.push((key.clone(), field));
        }
        Ok(Self { fields, or })
    }

    fn matches(&self, v: &Value) -> bool {
        self.matches_at(v, None)
    }

    /// `data_json` is given at the record's level: whether its data is JSON.
    fn matches_at(&self, v: &Value, data_json: Option<bool>) -> bool {
        let empty = Map::new();
        let obj = match v {
            Value::Object(o) => o,
            // An array of objects matches if any element does.
            Value::Array(items) => return items.iter().any(|i| self.matches(i)),
            _ => &empty,
        };
        let kind_fits = |key: &str, field: &Field| {
            data_json.is_none_or(|json| key != DATA || matches!(field, Field::Nested(_)) == json)
        };
        self.fields.iter().all(|(key, field)| kind_fits(key, field) && field.matches(obj.get(key)))
            && self.or.iter().all(|group| group.iter().any(|b| b.matches_at(v, data_json)))
    }
}

impl Field {
    fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            // A missing object is an empty one: `exists: false` inside it holds.
            Field::Nested(o) => o.matches(v.unwrap_or(&Value::Null)),
            Field::Any(ms) => ms.iter().any(|m| m.matches(v)),
        }
    }
}

impl Matcher {
    fn compile(v: &Value) -> Parsed<Self> {
        let Value::Object(o) = v else {
            return match v {
                Value::Array(_) => Err(InvalidPattern),
                scalar => Ok(Self::Exact(scalar.clone())),
            };
        };
        let mut entries = o.iter();
        let (Some((op, arg)), None) = (entries.next(), entries.next()) else { return Err(InvalidPattern) };
        match op.as_str() {
            "prefix" | "suffix" => {
                let (text, ignore_case) = match arg {
                    Value::String(s) => (s.clone(), false),
                    Value::Object(inner) => match (inner.len(), inner.get("equals-ignore-case")) {
                        (1, Some(Value::String(s))) => (s.clone(), true),
                        _ => return Err(InvalidPattern),
                    },
                    _ => return Err(InvalidPattern),
                };
                Ok(if op == "prefix" { Self::Prefix { text, ignore_case } } else { Self::Suffix { text, ignore_case } })
            }
            "equals-ignore-case" => Ok(Self::EqualsIgnoreCase(string(arg)?)),
            "wildcard" => {
                let w = string(arg)?;
                // EventBridge refuses consecutive wildcards.
                if w.contains("**") {
                    return Err(InvalidPattern);
                }
                Ok(Self::Wildcard(w))
            }
            "anything-but" => Ok(Self::AnythingBut(anything_but(arg)?)),
            "numeric" => numeric(arg).map(Self::Numeric),
            "exists" => arg.as_bool().map(Self::Exists).ok_or(InvalidPattern),
            _ => Err(InvalidPattern),
        }
    }

    fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (Self::Exists(wanted), v) => *wanted == v.is_some(),
            (_, None) => false,
            // An array in the record matches if any element does.
            (_, Some(Value::Array(items))) => items.iter().any(|i| self.matches_one(i)),
            (_, Some(one)) => self.matches_one(one),
        }
    }

    fn matches_one(&self, v: &Value) -> bool {
        let text = v.as_str();
        match self {
            Self::Exact(want) => match (want, v) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => want == v,
            },
            Self::Prefix { text: p, ignore_case } => text.is_some_and(|t| affix(t, p, *ignore_case, true)),
            Self::Suffix { text: s, ignore_case } => text.is_some_and(|t| affix(t, s, *ignore_case, false)),
            Self::EqualsIgnoreCase(s) => text.is_some_and(|t| t.to_lowercase() == s.to_lowercase()),
            Self::Wildcard(w) => text.is_some_and(|t| wildcard(w.as_bytes(), t.as_bytes())),
            Self::AnythingBut(not) => !not.iter().any(|m| m.matches_one(v)),
            Self::Numeric(bounds) => v.as_f64().is_some_and(|n| {
                bounds.iter().all(|(c, b)| match c {
                    Comparison::Eq => n == *b,
                    Comparison::Lt => n < *b,
                    Comparison::Le => n <= *b,
                    Comparison::Gt => n > *b,
                    Comparison::Ge => n >= *b,
                })
            }),
            Self::Exists(wanted) => *wanted,
        }
    }
}

fn string(v: &Value) -> Parsed<String> {
    v.as_str().map(str::to_string).ok_or(InvalidPattern)
}

/// `anything-but`: a value, a list of values, or one of prefix, suffix,
/// equals-ignore-case (a value or a list) and wildcard (likewise).
fn anything_but(arg: &Value) -> Parsed<Vec<Matcher>> {
    let scalars = |v: &Value, make: fn(String) -> Matcher| -> Parsed<Vec<Matcher>> {
        match v {
            Value::String(s) => Ok(vec![make(s.clone())]),
            Value::Array(items) if !items.is_empty() => items.iter().map(|i| string(i).map(make)).collect(),
            _ => Err(InvalidPattern),
        }
    };
    match arg {
        Value::String(_) | Value::Number(_) => Ok(vec![Matcher::Exact(arg.clone())]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(_) | Value::Number(_) => Ok(Matcher::Exact(i.clone())),
                _ => Err(InvalidPattern),
            })
            .collect(),
        Value::Object(o) if o.len() == 1 => {
            let (op, v) = o.iter().next().ok_or(InvalidPattern)?;
            match op.as_str() {
                "prefix" => Ok(vec![Matcher::Prefix { text: string(v)?, ignore_case: false }]),
                "suffix" => Ok(vec![Matcher::Suffix { text: string(v)?, ignore_case: false }]),
                "equals-ignore-case" => scalars(v, Matcher::EqualsIgnoreCase),
                "wildcard" => scalars(v, Matcher::Wildcard),
                _ => Err(InvalidPattern),
            }
        }
        _ => Err(InvalidPattern),
    }
}

/// `numeric`: `[op, n]` or a range `[">"|">=", low, "<"|"<=", high]`.
fn numeric(arg: &Value) -> Parsed<Vec<(Comparison, f64)>> {
    let Value::Array(items) = arg else { return Err(InvalidPattern) };
    let bound = |op: &Value, n: &Value| -> Parsed<(Comparison, f64)> {
        let c = match op.as_str() {
            Some("=") => Comparison::Eq,
            Some("<") => Comparison::Lt,
            Some("<=") => Comparison::Le,
            Some(">") => Comparison::Gt,
            Some(">=") => Comparison::Ge,
            _ => return Err(InvalidPattern),
        };
        Ok((c, n.as_f64().ok_or(InvalidPattern)?))
    };
    match items.as_slice() {
        [op, n] => Ok(vec![bound(op, n)?]),
        [op1, n1, op2, n2] => {
            let low = bound(op1, n1)?;
            let high = bound(op2, n2)?;
            let ok = matches!(low.0, Comparison::Gt | Comparison::Ge)
                && matches!(high.0, Comparison::Lt | Comparison::Le)
                && low.1 <= high.1;
            if ok {
                Ok(vec![low, high])
            } else {
                Err(InvalidPattern)
            }
        }
        _ => Err(InvalidPattern),
    }
}

fn affix(text: &str, part: &str, ignore_case: bool, prefix: bool) -> bool {
    let (t, p) = if ignore_case { (text.to_lowercase(), part.to_lowercase()) } else { (text.into(), part.into()) };
    if prefix {
        t.starts_with(&p)
    } else {
        t.ends_with(&p)
    }
}

/// `*` matches any run of characters (bytes of UTF-8 text line up).
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    // Greedy with backtracking to the last star: linear in practice.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pass(pattern: Value, record: Value) -> bool {
        Filters::compile(&[pattern.to_string()]).expect("valid pattern").pass(&record)
    }

    fn invalid(pattern: &str) -> bool {
        Filters::compile(&[pattern.to_string()]).is_err()
    }

    #[test]
    fn exact_values_match_strings_numbers_booleans_and_null() {
        let p = json!({"body": {"kind": ["order", 5, true, null]}});
        assert!(pass(p.clone(), json!({"body": {"kind": "order"}})));
        assert!(pass(p.clone(), json!({"body": {"kind": 5.0}})));
        assert!(pass(p.clone(), json!({"body": {"kind": true}})));
        assert!(pass(p.clone(), json!({"body": {"kind": null}})));
        assert!(!pass(p.clone(), json!({"body": {"kind": "Order"}})));
        assert!(!pass(p.clone(), json!({"body": {"kind": "5"}})));
        assert!(!pass(p, json!({"body": {}})));
    }

    #[test]
    fn every_field_must_match_and_nesting_follows_the_record() {
        let p = json!({"body": {"a": ["x"], "b": {"c": [1]}}});
        assert!(pass(p.clone(), json!({"body": {"a": "x", "b": {"c": 1}}})));
        assert!(!pass(p.clone(), json!({"body": {"a": "x", "b": {"c": 2}}})));
        assert!(!pass(p.clone(), json!({"body": {"a": "x"}})));
        assert!(!pass(p, json!({"body": {"a": "x", "b": "c"}})));
    }

    #[test]
    fn arrays_in_the_record_mean_any_element() {
        let p = json!({"body": {"tags": ["red"], "items": {"sku": [{"prefix": "A-"}]}}});
        assert!(pass(p.clone(), json!({"body": {"tags": ["blue", "red"], "items": [{"sku": "B-1"}, {"sku": "A-2"}]}})));
        assert!(!pass(p.clone(), json!({"body": {"tags": ["blue"], "items": [{"sku": "A-2"}]}})));
        assert!(!pass(p, json!({"body": {"tags": ["red"], "items": [{"sku": "B-1"}]}})));
    }

    #[test]
    fn prefix_suffix_and_ignoring_case() {
        assert!(pass(json!({"body": {"k": [{"prefix": "img/"}]}}), json!({"body": {"k": "img/a.png"}})));
        assert!(!pass(json!({"body": {"k": [{"prefix": "img/"}]}}), json!({"body": {"k": "IMG/a.png"}})));
        assert!(pass(
            json!({"body": {"k": [{"prefix": {"equals-ignore-case": "img/"}}]}}),
            json!({"body": {"k": "IMG/a.png"}})
        ));
        assert!(pass(json!({"body": {"k": [{"suffix": ".png"}]}}), json!({"body": {"k": "a.png"}})));
        assert!(!pass(json!({"body": {"k": [{"suffix": ".png"}]}}), json!({"body": {"k": "a.PNG"}})));
        assert!(pass(
            json!({"body": {"k": [{"suffix": {"equals-ignore-case": ".png"}}]}}),
            json!({"body": {"k": "a.PNG"}})
        ));
        assert!(pass(json!({"body": {"k": [{"equals-ignore-case": "ALICE"}]}}), json!({"body": {"k": "alice"}})));
        assert!(!pass(json!({"body": {"k": [{"prefix": "1"}]}}), json!({"body": {"k": 12}})));
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        let p = json!({"body": {"k": [{"wildcard": "dir/*.png"}]}});
        assert!(pass(p.clone(), json!({"body": {"k": "dir/a/b.png"}})));
        assert!(pass(p.clone(), json!({"body": {"k": "dir/.png"}})));
        assert!(!pass(p.clone(), json!({"body": {"k": "dir/a.jpg"}})));
        assert!(!pass(p, json!({"body": {"k": "x/dir/a.png"}})));
        assert!(wildcard(b"*a*b*", b"xxaxxbxx") && !wildcard(b"*a*b", b"ba"));
        assert!(invalid(r#"{"body": {"k": [{"wildcard": "a**b"}]}}"#));
    }

    #[test]
    fn anything_but_values_prefixes_and_suffixes() {
        let values = json!({"body": {"state": [{"anything-but": ["done", "failed"]}]}});
        assert!(pass(values.clone(), json!({"body": {"state": "running"}})));
        assert!(!pass(values.clone(), json!({"body": {"state": "done"}})));
        // A missing field is not "anything but".
        assert!(!pass(values, json!({"body": {}})));
        assert!(pass(json!({"body": {"n": [{"anything-but": 3}]}}), json!({"body": {"n": 4}})));
        assert!(!pass(json!({"body": {"n": [{"anything-but": 3}]}}), json!({"body": {"n": 3.0}})));
        let prefix = json!({"body": {"k": [{"anything-but": {"prefix": "tmp/"}}]}});
        assert!(pass(prefix.clone(), json!({"body": {"k": "data/x"}})));
        assert!(!pass(prefix, json!({"body": {"k": "tmp/x"}})));
        let suffix = json!({"body": {"k": [{"anything-but": {"suffix": ".tmp"}}]}});
        assert!(!pass(suffix, json!({"body": {"k": "a.tmp"}})));
        let icase = json!({"body": {"k": [{"anything-but": {"equals-ignore-case": ["A", "b"]}}]}});
        assert!(!pass(icase.clone(), json!({"body": {"k": "a"}})));
        assert!(pass(icase, json!({"body": {"k": "c"}})));
    }

    #[test]
    fn numeric_ranges() {
        let p = json!({"body": {"price": [{"numeric": [">", 10, "<=", 20]}]}});
        assert!(pass(p.clone(), json!({"body": {"price": 20}})));
        assert!(pass(p.clone(), json!({"body": {"price": 10.5}})));
        assert!(!pass(p.clone(), json!({"body": {"price": 10}})));
        assert!(!pass(p.clone(), json!({"body": {"price": 21}})));
        assert!(!pass(p, json!({"body": {"price": "15"}})));
        assert!(pass(json!({"body": {"n": [{"numeric": ["=", 3]}]}}), json!({"body": {"n": 3.0}})));
        assert!(pass(json!({"body": {"n": [{"numeric": ["<", 0]}]}}), json!({"body": {"n": -1}})));
        assert!(invalid(r#"{"body": {"n": [{"numeric": ["<", 5, ">", 1]}]}}"#));
        assert!(invalid(r#"{"body": {"n": [{"numeric": [">", 5, "<", 1]}]}}"#));
        assert!(invalid(r#"{"body": {"n": [{"numeric": ["~", 5]}]}}"#));
        assert!(invalid(r#"{"body": {"n": [{"numeric": [">", "5"]}]}}"#));
    }

    #[test]
    fn exists_true_and_false() {
        let yes = json!({"body": {"id": [{"exists": true}]}});
        assert!(pass(yes.clone(), json!({"body": {"id": "x"}})));
        assert!(!pass(yes, json!({"body": {}})));
        let no = json!({"body": {"id": [{"exists": false}]}});
        assert!(pass(no.clone(), json!({"body": {}})));
        assert!(!pass(no, json!({"body": {"id": 1}})));
        // Inside a missing object, nothing exists.
        assert!(pass(json!({"body": {"a": {"b": [{"exists": false}]}}}), json!({"body": {}})));
    }

    #[test]
    fn or_needs_one_branch() {
        let p = json!({"body": {"$or": [{"kind": ["a"]}, {"size": [{"numeric": [">", 100]}]}]}});
        assert!(pass(p.clone(), json!({"body": {"kind": "a", "size": 1}})));
        assert!(pass(p.clone(), json!({"body": {"kind": "b", "size": 101}})));
        assert!(!pass(p, json!({"body": {"kind": "b", "size": 1}})));
        assert!(invalid(r#"{"$or": [{"a": ["x"]}]}"#));
    }

    #[test]
    fn plain_bodies_match_as_strings_and_other_record_fields_too() {
        let record = json!({"body": "hello world", "attributes": {"ApproximateReceiveCount": "1"}});
        assert!(pass(json!({"body": [{"prefix": "hello"}]}), record.clone()));
        assert!(!pass(json!({"body": {"k": ["v"]}}), record.clone()));
        assert!(pass(json!({"attributes": {"ApproximateReceiveCount": ["1"]}}), record.clone()));
        // A pattern for JSON never matches text, nor values JSON, whatever it asks.
        assert!(!pass(json!({"body": {"a": [{"exists": false}]}}), record.clone()));
        assert!(!pass(json!({"$or": [{"body": {"a": [{"exists": false}]}}, {"body": ["x"]}]}), record));
        assert!(!pass(json!({"body": ["a"]}), json!({"body": ["a", "b"]})));
        assert!(pass(json!({"body": {"a": [{"exists": false}]}}), json!({"body": {"b": 1}})));
    }

    #[test]
    fn any_filter_passes_a_record_and_none_means_all() {
        let f = Filters::compile(&[r#"{"body": {"a": [1]}}"#.into(), r#"{"body": {"b": [2]}}"#.into()]).unwrap();
        assert!(f.pass(&json!({"body": {"b": 2}})));
        assert!(!f.pass(&json!({"body": {"c": 3}})));
        assert!(Filters::default().pass(&json!({"body": "x"})));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for p in [
            "not json",
            "[]",
            r#"{"body": "x"}"#,
            r#"{"body": []}"#,
            r#"{"body": {"k": [["nested"]]}}"#,
            r#"{"body": {"k": [{"prefix": 1}]}}"#,
            r#"{"body": {"k": [{"unknown": 1}]}}"#,
            r#"{"body": {"k": [{"prefix": "a", "suffix": "b"}]}}"#,
            r#"{"body": {"k": [{"exists": "yes"}]}}"#,
            r#"{"body": {"k": [{"anything-but": {"numeric": [">", 1]}}]}}"#,
            r#"{"body": {"k": [{"anything-but": []}]}}"#,
        ] {
            assert!(invalid(p), "{p} should be refused");
        }
    }
}
