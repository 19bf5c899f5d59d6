//! Request validation against a [`Model`], with AWS's messages.
//!
//! What AWS answers, and where that is known from (real responses quoted in
//! public issues and in LocalStack's and moto's tests recorded against AWS):
//!
//! - The message is `N validation error(s) detected: ` followed by every
//!   violation, joined by `; ` (e.g. DynamoDB's `2 validation errors detected:
//!   Value '0' at 'provisionedThroughput.writeCapacityUnits' failed to satisfy
//!   constraint: ...; Value '0' at 'provisionedThroughput.readCapacityUnits' ...`).
//!   Every violation is counted, several on one member included.
//! - One violation reads `Value '<v>' at '<path>' failed to satisfy
//!   constraint: <rule>`; a missing required member `Value null at '<path>'
//!   failed to satisfy constraint: Member must not be null`; a sensitive
//!   value is left out: `Value at 'environment.variables' ...` (Lambda,
//!   CreateFunction with a bad environment variable name, quoted from AWS in
//!   github.com/klothoplatform/klotho/issues/317 and
//!   github.com/trek10inc/serverless-secrets/issues/39; the model marks that
//!   map `sensitive`).
//! - Paths are member names with a lower-case first letter, nested with dots
//!   (`kMSKeyArn` in github.com/highsource/bitcoin-a-day/issues/1,
//!   `cors.allowMethods` below); a structure inside a list is
//!   `list.<1-based index>.member.field` (DynamoDB
//!   `attributeDefinitions.1.member.attributeType`).
//! - Rules: `Member must have length less than or equal to N`, `... greater
//!   than or equal to N`, `Member must have value less than or equal to N`,
//!   `... greater than or equal to N`, `Member must satisfy enum value set:
//!   [a, b]`, `Member must satisfy regular expression pattern: P` (P as the
//!   model spells it).
//! - A list of scalars whose element breaks a rule gets one violation for the
//!   whole list, listing every rule of the element shape and then `Member must
//!   not be null`: Lambda's `Value '[GET, POST, OPTIONS]' at 'cors.allowMethods'
//!   failed to satisfy constraint: Member must satisfy constraint: [Member must
//!   have length less than or equal to 6, Member must have length greater than
//!   or equal to 0, Member must satisfy regular expression pattern: .*, Member
//!   must not be null]` (CreateFunctionUrlConfig and UpdateFunctionUrlConfig
//!   answers in two public deployment logs). Maps alike, with `Map keys must
//!   satisfy constraint: [...]` and `Map value must satisfy constraint:
//!   [...]` (LocalStack's Lambda provider, which copies AWS's answers for
//!   `routingConfig.additionalVersionWeights`; it added the trailing `Member
//!   must not be null` in a later revision, as moto has for `architectures`).
//!   Older answers (2018-2023) for environment keys lack that trailing rule;
//!   the newer form is used everywhere here.
//! - Values are rendered as Java renders them: numbers bare (`'0'`), doubles
//!   with a fraction (`1.0`), lists `[a, b]`, maps `{k=v, k2=v2}` in
//!   `java.util.HashMap` iteration order (an EventBridge message lists
//!   `{de onde?=.., Quem foi?=.., o que?=..}` for keys sent in another order,
//!   which is that order).
//! - Order: AWS reports the members of a structure last-declared first
//!   (DynamoDB write before read capacity, SWF `execution` before `domain`,
//!   Cognito `groupName` before `username`: the reverse of each model), and
//!   a pattern violation before a length violation of the same value
//!   (DynamoDB `tableName`, Cognito `userCode`, Firehose). Nothing public
//!   shows AWS's order beyond that; this is the one used here.
//!
//! A value whose JSON type is not the model's is not judged by the rules:
//! AWS fails it while deserialising, before validation, whatever else the
//! request holds. It is reported as [`Invalid::Mistyped`] (the front answers
//! its protocol's deserialisation error), never passed on: a handler that
//! does not read that member would otherwise take a request whose other
//! members were never checked.

use std::fmt;

use serde_json::{Map, Value};

use crate::{Kind, Location, Member, Model};

/// The parts of a request that carry input members.
#[derive(Default)]
pub struct Request<'a> {
    /// URI labels by the model's name for them (`FunctionName`), decoded.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Query parameters, decoded, in order, repeats kept.
    pub query: Vec<(&'a str, &'a str)>,
    /// Headers; names are compared without regard to case.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The JSON body; `None` if there is none.
    pub body: Option<&'a Value>,
}

/// Every violation of the model in one request; displays as AWS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(Vec<String>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} validation error{} detected: {}", if n == 1 { "" } else { "s" }, self.0.join("; "))
    }
}

/// Why a request is not the model's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A value of another JSON type than its shape's (the first met), at this path.
    #[error("Cannot read the value at '{0}': it is not of the type the operation takes")]
    Mistyped(String),
    #[error(transparent)]
    Violations(#[from] Violations),
}

/// Checks a request to `operation` against `model`. An operation the model
/// does not have passes: it is not the model's to judge. A body that is not
/// an object is the deserialiser's to refuse.
pub fn validate(model: &Model, operation: &str, req: &Request<'_>) -> Result<(), Invalid> {
    let Some(Kind::Structure { members }) =
        model.operation(operation).and_then(|o| o.input).map(|i| &model.shape(i).kind)
    else {
        return Ok(());
    };
    let empty = Value::Object(Map::new());
    let body = req.body.unwrap_or(&empty);
    if !body.is_object() && members.iter().any(|m| m.location == Location::Body) {
        return Ok(());
    }
    let mut walk = Walk { model, errors: Vec::new(), mistyped: None };
    for m in members.iter().rev() {
        let value = match m.location {
            Location::Body => body.get(m.wire).cloned(),
            Location::Payload => match model.shape(m.shape).kind {
                Kind::Structure { .. } => req.body.cloned(),
                _ => continue,
            },
            Location::Label => req.labels.iter().find(|(k, _)| *k == m.wire).map(|(_, v)| walk.text(m, m.shape, &[v])),
            Location::Header => req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(m.wire))
                .map(|(_, v)| walk.text(m, m.shape, &[v])),
            Location::Query => {
                let found: Vec<&str> = req.query.iter().filter(|(k, _)| *k == m.wire).map(|(_, v)| *v).collect();
                (!found.is_empty()).then(|| walk.text(m, m.shape, &found))
            }
        };
        walk.member(m, value.as_ref(), "");
    }
    match walk.mistyped {
        Some(path) => Err(Invalid::Mistyped(path)),
        None if walk.errors.is_empty() => Ok(()),
        None => Err(Invalid::Violations(Violations(walk.errors))),
    }
}

struct Walk<'m> {
    model: &'m Model,
    errors: Vec<String>,
    /// Where a value first had another JSON type than its shape.
    mistyped: Option<String>,
}

impl Walk<'_> {
    /// A label, header or query value of member `m` as the JSON value of its shape.
    fn text(&mut self, m: &Member, shape: usize, values: &[&str]) -> Value {
        let parsed = match &self.model.shape(shape).kind {
            Kind::List { member, .. } => {
                return Value::Array(values.iter().map(|v| self.text(m, *member, &[v])).collect())
            }
            Kind::Integer { .. } => values[0].parse::<i64>().ok().map(Value::from),
            Kind::Double { .. } => values[0].parse::<f64>().ok().map(Value::from),
            Kind::Boolean => values[0].parse::<bool>().ok().map(Value::from),
            Kind::String { .. } | Kind::Blob { .. } | Kind::Timestamp => Some(Value::from(values[0])),
            Kind::Map { .. } | Kind::Structure { .. } => None,
        };
        parsed.unwrap_or_else(|| {
            self.mistyped(&lower_first(m.name));
            Value::Null
        })
    }

    fn mistyped(&mut self, path: &str) {
        self.mistyped.get_or_insert_with(|| path.to_string());
    }

    fn member(&mut self, m: &Member, value: Option<&Value>, parent: &str) {
        let path = if parent.is_empty() { lower_first(m.name) } else { format!("{parent}.{}", lower_first(m.name)) };
        match value.filter(|v| !v.is_null()) {
            None if m.required => self.report(m.shape, None, &path, "Member must not be null"),
            None => {}
            Some(v) => self.value(m.shape, v, &path),
        }
    }

    fn report(&mut self, shape: usize, value: Option<&Value>, path: &str, rule: &str) {
        let shown = match value {
            _ if self.model.shape(shape).sensitive => String::new(),
            None => "null ".to_string(),
            Some(v) => format!("'{}' ", render(self.model, shape, v)),
        };
        self.errors.push(format!("Value {shown}at '{path}' failed to satisfy constraint: {rule}"));
    }

    fn value(&mut self, shape: usize, v: &Value, path: &str) {
        if !fits(&self.model.shape(shape).kind, v) {
            self.mistyped(path);
            return;
        }
        for rule in broken(self.model, shape, v) {
            self.report(shape, Some(v), path, &rule);
        }
        match &self.model.shape(shape).kind {
            Kind::Structure { members } => {
                for m in members.iter().rev() {
                    self.member(m, v.get(m.wire), path);
                }
            }
            Kind::List { member, .. } => {
                let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
                if is_aggregate(&self.model.shape(*member).kind) {
                    for (i, item) in items.iter().enumerate() {
                        let at = format!("{path}.{}.member", i + 1);
                        match item {
                            Value::Null => self.report(*member, None, &at, "Member must not be null"),
                            item => self.value(*member, item, &at),
                        }
                    }
                } else if items.iter().any(|i| !self.element_ok(*member, i, path)) {
                    let rule = format!("Member must satisfy constraint: {}", self.element_rules(*member));
                    self.report(shape, Some(v), path, &rule);
                }
            }
            Kind::Map { key, value, .. } => {
                let entries = v.as_object().into_iter().flatten();
                if entries.clone().any(|(k, _)| !self.element_ok(*key, &Value::from(k.as_str()), path)) {
                    let rule = format!("Map keys must satisfy constraint: {}", self.element_rules(*key));
                    self.report(shape, Some(v), path, &rule);
                }
                if is_aggregate(&self.model.shape(*value).kind) {
                    for (k, item) in entries {
                        self.value(*value, item, &format!("{path}.{k}.member"));
                    }
                } else if entries.clone().any(|(_, i)| !self.element_ok(*value, i, path)) {
                    let rule = format!("Map value must satisfy constraint: {}", self.element_rules(*value));
                    self.report(shape, Some(v), path, &rule);
                }
            }
            _ => {}
        }
    }

    /// Whether a scalar element of a list or map keeps every rule of its shape.
    fn element_ok(&mut self, shape: usize, v: &Value, path: &str) -> bool {
        if v.is_null() {
            return false;
        }
        if !fits(&self.model.shape(shape).kind, v) {
            self.mistyped(path);
            return true;
        }
        broken(self.model, shape, v).is_empty()
    }

    /// Every rule of an element shape, as AWS lists them for a collection.
    fn element_rules(&self, shape: usize) -> String {
        let mut rules = Vec::new();
        match &self.model.shape(shape).kind {
            Kind::String { min, max, pattern, values } => {
                rules.extend(max.map(|n| format!("Member must have length less than or equal to {n}")));
                rules.extend(min.map(|n| format!("Member must have length greater than or equal to {n}")));
                rules.extend(pattern.map(|p| pattern_rule(self.model, p)));
                if !values.is_empty() {
                    rules.push(enum_rule(values));
                }
            }
            Kind::Blob { min, max } => {
                rules.extend(max.map(|n| format!("Member must have length less than or equal to {n}")));
                rules.extend(min.map(|n| format!("Member must have length greater than or equal to {n}")));
            }
            Kind::Integer { min, max } => {
                rules.extend(max.map(|n| format!("Member must have value less than or equal to {n}")));
                rules.extend(min.map(|n| format!("Member must have value greater than or equal to {n}")));
            }
            Kind::Double { min, max } => {
                rules.extend(max.map(|n| format!("Member must have value less than or equal to {}", java_double(n))));
                rules
                    .extend(min.map(|n| format!("Member must have value greater than or equal to {}", java_double(n))));
            }
            _ => {}
        }
        rules.push("Member must not be null".to_string());
        format!("[{}]", rules.join(", "))
    }
}

fn is_aggregate(kind: &Kind) -> bool {
    matches!(kind, Kind::Structure { .. } | Kind::List { .. } | Kind::Map { .. })
}

/// Whether a JSON value has the type its shape needs.
fn fits(kind: &Kind, v: &Value) -> bool {
    match kind {
        Kind::String { .. } | Kind::Blob { .. } => v.is_string(),
        Kind::Integer { .. } => v.is_i64() || v.is_u64(),
        Kind::Double { .. } => v.is_number(),
        Kind::Boolean => v.is_boolean(),
        Kind::Timestamp => v.is_number() || v.is_string(),
        Kind::List { .. } => v.is_array(),
        Kind::Map { .. } | Kind::Structure { .. } => v.is_object(),
    }
}

/// The rules of its own shape a (well-typed) value breaks, pattern first.
fn broken(model: &Model, shape: usize, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let length = |out: &mut Vec<String>, len: usize, min: &Option<i64>, max: &Option<i64>| {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        if let Some(n) = min.filter(|n| len < *n) {
            out.push(format!("Member must have length greater than or equal to {n}"));
        }
        if let Some(n) = max.filter(|n| len > *n) {
            out.push(format!("Member must have length less than or equal to {n}"));
        }
    };
    match &model.shape(shape).kind {
        Kind::String { min, max, pattern, values } => {
            let s = v.as_str().unwrap_or_default();
            if let Some(p) = pattern.filter(|p| !model.matches(*p, s)) {
                out.push(pattern_rule(model, p));
            }
            length(&mut out, s.chars().count(), min, max);
            if !values.is_empty() && !values.contains(&s) {
                out.push(enum_rule(values));
            }
        }
        Kind::Blob { min, max } => length(&mut out, v.as_str().map_or(0, base64_len), min, max),
        Kind::List { min, max, .. } => length(&mut out, v.as_array().map_or(0, Vec::len), min, max),
        Kind::Map { min, max, .. } => length(&mut out, v.as_object().map_or(0, Map::len), min, max),
        Kind::Integer { min, max } => {
            // A u64 beyond i64 is above any maximum the models use.
            let n = v.as_i64().unwrap_or(i64::MAX);
            if let Some(m) = min.filter(|m| n < *m) {
                out.push(format!("Member must have value greater than or equal to {m}"));
            }
            if let Some(m) = max.filter(|m| n > *m) {
                out.push(format!("Member must have value less than or equal to {m}"));
            }
        }
        Kind::Double { min, max } => {
            let n = v.as_f64().unwrap_or_default();
            if let Some(m) = min.filter(|m| n < *m) {
                out.push(format!("Member must have value greater than or equal to {}", java_double(m)));
            }
            if let Some(m) = max.filter(|m| n > *m) {
                out.push(format!("Member must have value less than or equal to {}", java_double(m)));
            }
        }
        Kind::Boolean | Kind::Timestamp | Kind::Structure { .. } => {}
    }
    out
}

fn pattern_rule(model: &Model, p: usize) -> String {
    format!("Member must satisfy regular expression pattern: {}", model.patterns[p])
}

fn enum_rule(values: &[&str]) -> String {
    format!("Member must satisfy enum value set: [{}]", values.join(", "))
}

/// Bytes a base64 text decodes to (the blob's length as AWS measures it).
fn base64_len(s: &str) -> usize {
    let t = s.trim_end_matches('=');
    t.len() * 3 / 4
}

fn lower_first(name: &str) -> String {
    let mut c = name.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}

/// A value as Java's `toString` shows it in AWS's messages.
fn render(model: &Model, shape: usize, v: &Value) -> String {
    let kind = &model.shape(shape).kind;
    match (v, kind) {
        (Value::String(s), _) => s.clone(),
        (Value::Number(n), Kind::Double { .. }) => java_double(n.as_f64().unwrap_or_default()),
        (Value::Number(n), _) if n.is_f64() => java_double(n.as_f64().unwrap_or_default()),
        (Value::Number(n), _) => n.to_string(),
        (Value::Bool(b), _) => b.to_string(),
        (Value::Null, _) => "null".to_string(),
        (Value::Array(items), _) => {
            let member = match kind {
                Kind::List { member, .. } => Some(*member),
                _ => None,
            };
            let shown: Vec<String> =
                items.iter().map(|i| member.map_or_else(|| i.to_string(), |m| render(model, m, i))).collect();
            format!("[{}]", shown.join(", "))
        }
        (Value::Object(o), _) => {
            let field_shape = |k: &str| match kind {
                Kind::Map { value, .. } => Some(*value),
                Kind::Structure { members } => members.iter().find(|m| m.wire == k).map(|m| m.shape),
                _ => None,
            };
            let shown: Vec<String> = java_hash_order(o)
                .into_iter()
                .map(|(k, item)| {
                    let r = field_shape(k).map_or_else(|| item.to_string(), |s| render(model, s, item));
                    format!("{k}={r}")
                })
                .collect();
            format!("{{{}}}", shown.join(", "))
        }
    }
}

/// Java's `Double.toString`: always a fraction digit, scientific notation
/// outside [10^-3, 10^7).
fn java_double(d: f64) -> String {
    let a = d.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let s = format!("{d}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{d:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
        format!("{mantissa}E{exp}")
    }
}

/// Entries in the order a `java.util.HashMap` holding them iterates: by
/// bucket (the key's `String.hashCode`, spread, masked by a capacity that
/// starts at 16 and doubles past a 0.75 load), ties in insertion order.
fn java_hash_order(o: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut capacity: u32 = 16;
    while o.len() as u64 * 4 > u64::from(capacity) * 3 {
        capacity *= 2;
    }
    let bucket = |k: &str| {
        let h = k.encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u))) as u32;
        (h ^ (h >> 16)) & (capacity - 1)
    };
    let mut entries: Vec<(&str, &Value)> = o.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_by_key(|(k, _)| bucket(k));
    entries
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::LAMBDA;

    fn check(op: &str, labels: &[(&str, &str)], body: Value) -> String {
        let req = Request { labels: labels.to_vec(), body: Some(&body), ..Request::default() };
        validate(&LAMBDA, op, &req).map_or_else(|e| e.to_string(), |()| "ok".to_string())
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/r";

    #[test]
    fn one_violation() {
        assert_eq!(
            check("GetFunctionConfiguration", &[("FunctionName", "abc!")], json!({})),
            "1 validation error detected: Value 'abc!' at 'functionName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST(\\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
        );
        assert_eq!(check("GetFunctionConfiguration", &[("FunctionName", "abc")], json!({})), "ok");
    }

    #[test]
    fn several_violations_are_counted_and_joined_last_member_first() {
        let msg = check(
            "CreateFunction",
            &[],
            json!({"FunctionName": "f", "Role": ROLE, "Code": {}, "MemorySize": 1, "Timeout": 0}),
        );
        assert_eq!(
            msg,
            "2 validation errors detected: \
             Value '1' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128; \
             Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
    }

    #[test]
    fn missing_required_members_are_null() {
        let msg = check("CreateFunction", &[], json!({"FunctionName": "f", "Code": {}}));
        assert_eq!(
            msg,
            "1 validation error detected: Value null at 'role' failed to satisfy constraint: Member must not be null"
        );
        let msg = check("CreateFunction", &[], json!({}));
        assert_eq!(
            msg,
            "3 validation errors detected: \
             Value null at 'code' failed to satisfy constraint: Member must not be null; \
             Value null at 'role' failed to satisfy constraint: Member must not be null; \
             Value null at 'functionName' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn nested_members_use_dotted_paths() {
        let msg =
            check("UpdateFunctionConfiguration", &[("FunctionName", "f")], json!({"EphemeralStorage": {"Size": 1}}));
        assert_eq!(
            msg,
            "1 validation error detected: Value '1' at 'ephemeralStorage.size' failed to satisfy constraint: \
             Member must have value greater than or equal to 512"
        );
    }

    #[test]
    fn enums_list_their_values() {
        let msg =
            check("UpdateFunctionConfiguration", &[("FunctionName", "f")], json!({"TracingConfig": {"Mode": "On"}}));
        assert_eq!(
            msg,
            "1 validation error detected: Value 'On' at 'tracingConfig.mode' failed to satisfy constraint: \
             Member must satisfy enum value set: [Active, PassThrough]"
        );
    }

    #[test]
    fn list_elements_are_judged_as_one_list_violation() {
        let body = json!({"AuthType": "NONE", "Cors": {"AllowMethods": ["GET", "POST", "OPTIONS"]}});
        assert_eq!(
            check("CreateFunctionUrlConfig", &[("FunctionName", "f")], body),
            "1 validation error detected: Value '[GET, POST, OPTIONS]' at 'cors.allowMethods' failed to satisfy \
             constraint: Member must satisfy constraint: [Member must have length less than or equal to 6, Member \
             must have length greater than or equal to 0, Member must satisfy regular expression pattern: .*, Member \
             must not be null]"
        );
        let body = json!({"FunctionName": "f", "Role": ROLE, "Code": {}, "Architectures": ["x86_64", "arm64"]});
        assert_eq!(
            check("CreateFunction", &[], body),
            "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: \
             Member must have length less than or equal to 1"
        );
    }

    #[test]
    fn map_keys_and_values() {
        let body = json!({"Environment": {"Variables": {"1BAD": "x"}}});
        assert_eq!(
            check("UpdateFunctionConfiguration", &[("FunctionName", "f")], body),
            "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: \
             Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+, \
             Member must not be null]"
        );
        let body = json!({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 1.5}}});
        assert_eq!(
            check("UpdateAlias", &[("FunctionName", "f"), ("Name", "live")], body),
            "1 validation error detected: Value '{2=1.5}' at 'routingConfig.additionalVersionWeights' failed to \
             satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, \
             Member must have value greater than or equal to 0.0, Member must not be null]"
        );
    }

    #[test]
    fn a_pattern_violation_comes_before_a_length_violation() {
        let msg = check("CreateAlias", &[("FunctionName", "f")], json!({"Name": "", "FunctionVersion": "1"}));
        assert_eq!(
            msg,
            "2 validation errors detected: \
             Value '' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+); \
             Value '' at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
    }

    #[test]
    fn query_and_header_members() {
        let req = Request {
            labels: vec![("FunctionName", "f")],
            query: vec![("Qualifier", "bad qualifier")],
            headers: vec![("x-amz-invocation-type", "Sometimes")],
            body: None,
        };
        let msg = validate(&LAMBDA, "Invoke", &req).unwrap_err().to_string();
        assert!(msg.starts_with("2 validation errors detected: Value 'bad qualifier' at 'qualifier'"), "{msg}");
        assert!(msg.contains("Value 'Sometimes' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"), "{msg}");
        let req = Request { query: vec![("MaxItems", "0")], ..Request::default() };
        assert_eq!(
            validate(&LAMBDA, "ListFunctions", &req).unwrap_err().to_string(),
            "1 validation error detected: Value '0' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
    }

    #[test]
    fn a_mistyped_value_is_reported_whatever_else_the_request_holds() {
        let mistyped = |op, req: &Request<'_>| match validate(&LAMBDA, op, req) {
            Err(Invalid::Mistyped(path)) => path,
            other => panic!("{other:?}"),
        };
        let body = json!({"FunctionName": 5});
        assert_eq!(mistyped("CreateFunction", &Request { body: Some(&body), ..Request::default() }), "functionName");
        // The bad name would be a violation; the mistyped member wins, as AWS's deserialiser fails first.
        let body = json!({"FunctionName": "bad name!", "Timeout": "long"});
        assert_eq!(mistyped("CreateFunction", &Request { body: Some(&body), ..Request::default() }), "timeout");
        let body = json!({"FunctionName": "f", "Architectures": [5]});
        assert_eq!(mistyped("CreateFunction", &Request { body: Some(&body), ..Request::default() }), "architectures");
        let req = Request { query: vec![("MaxItems", "many")], ..Request::default() };
        assert_eq!(mistyped("ListFunctions", &req), "maxItems");
        assert_eq!(check("CreateFunction", &[], json!([1, 2])), "ok");
        assert!(validate(&LAMBDA, "NotAnOperation", &Request::default()).is_ok());
    }

    #[test]
    fn values_render_as_java_does() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.25), "0.25");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(1.5e-4), "1.5E-4");
        let o = json!({"Quem foi?": 1, "o que?": 2, "de onde?": 3});
        let keys: Vec<&str> = java_hash_order(o.as_object().unwrap()).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["de onde?", "Quem foi?", "o que?"]);
    }
}
