//! CloudWatch Logs' filter pattern syntax, parsed once per request and
//! matched against each event's message:
//!
//! - terms (`ERROR Exception`): every term appears (case-sensitive);
//!   `"quoted phrases"` are one term; `?A ?B`: at least one of the `?` terms
//!   appears; `-A`: A does not appear;
//! - JSON patterns (`{ $.level = "ERROR" && $.latency > 100 }`): selectors
//!   `$.a.b[0]`, `=`/`!=` with strings (`*` is a wildcard) or numbers,
//!   `<`, `>`, `<=`, `>=` with numbers, `IS TRUE|FALSE|NULL`, `NOT EXISTS`,
//!   `&&`, `||` and parentheses; an event that is not a JSON object matches
//!   nothing;
//! - space-delimited patterns (`[ip, user, ..., status = 4*, bytes > 1000]`):
//!   the event's fields are split on spaces, text in `""` or `[]` being one
//!   field; `...` stands for any number of fields; conditions as above,
//!   combined with `&&` and `||` within a field;
//! - regular expressions between `%` signs (`%ERROR|WARN%`).
//!
//! Anything else is refused, as AWS refuses it, with "Invalid filter pattern".
//! This module only parses and matches; it does not read the store.

use serde_json::Value;

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    All,
    Terms { all: Vec<String>, any: Vec<String>, none: Vec<String> },
    Json(Expr),
    Delimited(Vec<Field>),
    Regex(regex::Regex),
}

/// A boolean expression over conditions (on a JSON selector or a named field).
#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Cond),
}

#[derive(Debug, Clone)]
pub struct Cond {
    /// JSON: the selector's steps; delimited: the field name.
    target: Vec<Step>,
    test: Test,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
enum Test {
    Compare(Op, Literal),
    IsTrue,
    IsFalse,
    IsNull,
    NotExists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
enum Literal {
    Number(f64),
    /// A string, possibly with `*` wildcards.
    Text(String),
    Regex(regex::Regex),
}

/// One field of a space-delimited pattern.
#[derive(Debug, Clone)]
pub enum Field {
    /// `...`: any number of fields.
    Any,
    /// A named field, with its conditions if any.
    Named(String, Option<Expr>),
}

/// The refusal, worded as AWS words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter pattern")]
pub struct InvalidPattern;

type Parsed<T> = Result<T, InvalidPattern>;

impl Pattern {
    pub fn parse(text: &str) -> Parsed<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(Pattern::All);
        }
        if let Some(inner) = t.strip_prefix('{') {
            let inner = inner.strip_suffix('}').ok_or(InvalidPattern)?;
            let mut p = Lexer::new(inner);
            let expr = p.expr(Mode::Json)?;
            p.end()?;
            return Ok(Pattern::Json(expr));
        }
        if let Some(inner) = t.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(InvalidPattern)?;
            return delimited(inner).map(Pattern::Delimited);
        }
        if t.len() >= 2 && t.starts_with('%') && t.ends_with('%') {
            return regex(&t[1..t.len() - 1]).map(Pattern::Regex);
        }
        terms(t)
    }

    /// Substrings every matching message contains (for the store to narrow
    /// its scan; the match itself is still [`Pattern::matches`]).
    pub fn required(&self) -> &[String] {
        match self {
            Pattern::Terms { all, .. } => all,
            _ => &[],
        }
    }

    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms { all, any, none } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
                    && !none.iter().any(|t| message.contains(t.as_str()))
            }
            Pattern::Json(expr) => match serde_json::from_str::<Value>(message.trim()) {
                Ok(doc @ Value::Object(_)) => expr.eval(&|steps: &[Step]| select(&doc, steps)),
                _ => false,
            },
            Pattern::Delimited(fields) => match_fields(fields, &split_fields(message)),
            Pattern::Regex(re) => re.is_match(message),
        }
    }
}

/// AWS's regular expressions: no groups, and only these characters.
fn regex(body: &str) -> Parsed<regex::Regex> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":_#=@/;,-^$?[]{}|\\*+. ".contains(c);
    if body.is_empty() || !body.chars().all(allowed) {
        return Err(InvalidPattern);
    }
    regex::Regex::new(body).map_err(|_| InvalidPattern)
}

fn terms(text: &str) -> Parsed<Pattern> {
    let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(first) = rest.chars().next() else { break };
        let (list, body) = match first {
            '?' => (&mut any, &rest[1..]),
            '-' => (&mut none, &rest[1..]),
            _ => (&mut all, rest),
        };
        let (term, after) = if let Some(quoted) = body.strip_prefix('"') {
            let end = closing_quote(quoted).ok_or(InvalidPattern)?;
            let after = &quoted[end + 1..];
            if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                return Err(InvalidPattern);
            }
            (quoted[..end].replace("\\\"", "\""), after)
        } else {
            let end = body.find(char::is_whitespace).unwrap_or(body.len());
            let word = &body[..end];
            if word.is_empty() || word.contains(['"', '{', '}', '[', ']', '(', ')']) {
                return Err(InvalidPattern);
            }
            (word.to_string(), &body[end..])
        };
        if !term.is_empty() {
            list.push(term);
        }
        rest = after;
    }
    Ok(Pattern::Terms { all, any, none })
}

/// The index of the `"` closing a quoted string (after its opening quote).
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn delimited(inner: &str) -> Parsed<Vec<Field>> {
    let mut fields = Vec::new();
    for part in split_top_level_commas(inner) {
        let part = part.trim();
        if part == "..." {
            fields.push(Field::Any);
            continue;
        }
        if part.is_empty() {
            return Err(InvalidPattern);
        }
        let mut lx = Lexer::new(part);
        let name = lx.word()?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InvalidPattern);
        }
        if lx.at_end() {
            fields.push(Field::Named(name, None));
            continue;
        }
        let mut lx = Lexer::new(part);
        let expr = lx.expr(Mode::Delimited)?;
        lx.end()?;
        fields.push(Field::Named(name, Some(expr)));
    }
    if fields.is_empty() {
        return Err(InvalidPattern);
    }
    Ok(fields)
}

/// Splits on commas outside quotes.
fn split_top_level_commas(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    parts.push(&s[start..]);
    parts
}

/// An event's fields: split on spaces, with `"…"` and `[…]` kept whole
/// (without their delimiters).
fn split_fields(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = message.trim();
    while !rest.is_empty() {
        let (field, after) = match rest.as_bytes()[0] {
            b'"' => match rest[1..].find('"') {
                Some(end) => (&rest[1..end + 1], &rest[end + 2..]),
                None => (rest, ""),
            },
            b'[' => match rest[1..].find(']') {
                Some(end) => (&rest[1..end + 1], &rest[end + 2..]),
                None => (rest, ""),
            },
            _ => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        out.push(field);
        rest = after.trim_start();
    }
    out
}

/// How many (condition, field) pairs one event's space-delimited match may try.
const DELIMITED_TRIES_MAX: usize = 2_000_000;

/// Whether the pattern's fields line up with the event's, `...` taking
/// any number, and each field's conditions hold for its value.
///
/// By table rather than by trying each split: a pattern of several `...`
/// tried every way to share an event's fields among them (about 10^13 ways
/// for eight over 200 fields), and a tenant chooses the pattern. `rest[j]`
/// says whether the fields after the current one match `values[j..]`.
fn match_fields(fields: &[Field], values: &[&str]) -> bool {
    let n = values.len();
    let named = fields.iter().filter(|f| matches!(f, Field::Named(..))).count();
    let open = named < fields.len();
    if n < named || (!open && n != named) {
        return false;
    }
    // Each condition is tried at most at every field of the event: past
    // this many tries the event is taken as not matching, so that no one
    // event costs a scan more than about a tenth of a second.
    let mut tries = 0usize;
    let mut rest: Vec<bool> = (0..=n).map(|j| j == n).collect();
    for field in fields.iter().rev() {
        let mut here = vec![false; n + 1];
        match field {
            Field::Any => {
                let mut any = false;
                for j in (0..=n).rev() {
                    any |= rest[j];
                    here[j] = any;
                }
            }
            Field::Named(name, expr) => {
                for (j, value) in values.iter().enumerate() {
                    let lookup = |steps: &[Step]| match steps {
                        [Step::Key(n)] if n == name => Some(Value::String(value.to_string())),
                        _ => None,
                    };
                    here[j] = rest[j + 1]
                        && expr.as_ref().is_none_or(|e| {
                            tries += 1;
                            e.eval(&lookup)
                        });
                }
                if tries > DELIMITED_TRIES_MAX {
                    return false;
                }
            }
        }
        rest = here;
    }
    rest[0]
}

fn select(doc: &Value, steps: &[Step]) -> Option<Value> {
    let mut at = doc;
    for s in steps {
        at = match s {
            Step::Key(k) => at.get(k)?,
            Step::Index(i) => at.get(*i)?,
        };
    }
    Some(at.clone())
}

impl Expr {
    fn eval(&self, lookup: &dyn Fn(&[Step]) -> Option<Value>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(lookup) && b.eval(lookup),
            Expr::Or(a, b) => a.eval(lookup) || b.eval(lookup),
            Expr::Cond(c) => c.eval(lookup(&c.target)),
        }
    }
}

impl Cond {
    fn eval(&self, value: Option<Value>) -> bool {
        match (&self.test, value) {
            (Test::NotExists, v) => v.is_none(),
            (_, None) => false,
            (Test::IsTrue, Some(v)) => v == Value::Bool(true),
            (Test::IsFalse, Some(v)) => v == Value::Bool(false),
            (Test::IsNull, Some(v)) => v.is_null(),
            (Test::Compare(op, lit), Some(v)) => compare(*op, lit, &v),
        }
    }
}

fn compare(op: Op, lit: &Literal, v: &Value) -> bool {
    match lit {
        Literal::Number(n) => {
            // A space-delimited field is text; it compares as the number it reads as.
            let Some(x) = v.as_f64().or_else(|| v.as_str()?.parse().ok()) else { return false };
            match op {
                Op::Eq => x == *n,
                Op::Ne => x != *n,
                Op::Lt => x < *n,
                Op::Gt => x > *n,
                Op::Le => x <= *n,
                Op::Ge => x >= *n,
            }
        }
        Literal::Text(t) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return false,
            };
            let hit = glob(t, &text);
            if op == Op::Ne {
                !hit
            } else {
                hit
            }
        }
        Literal::Regex(re) => {
            let Value::String(s) = v else { return false };
            re.is_match(s) != (op == Op::Ne)
        }
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Targets are `$.selectors`.
    Json,
    /// Targets are field names.
    Delimited,
}

/// A hand-written recursive descent over the inside of `{…}` or of one
/// `[…]` field.
struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self { rest: s }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.rest.is_empty()
    }

    fn end(&mut self) -> Parsed<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(InvalidPattern)
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    /// A keyword, matched whole and case-insensitively (`IS`, `NOT`, ...).
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let end = self.rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(self.rest.len());
        if self.rest[..end].eq_ignore_ascii_case(word) {
            self.rest = &self.rest[end..];
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> Parsed<String> {
        self.skip_ws();
        let end = self.rest.find(|c: char| c.is_whitespace() || "=!<>()&|,".contains(c)).unwrap_or(self.rest.len());
        if end == 0 {
            return Err(InvalidPattern);
        }
        let w = self.rest[..end].to_string();
        self.rest = &self.rest[end..];
        Ok(w)
    }

    fn expr(&mut self, mode: Mode) -> Parsed<Expr> {
        let mut left = self.and(mode)?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and(mode)?));
        }
        Ok(left)
    }

    fn and(&mut self, mode: Mode) -> Parsed<Expr> {
        let mut left = self.unary(mode)?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary(mode)?));
        }
        Ok(left)
    }

    fn unary(&mut self, mode: Mode) -> Parsed<Expr> {
        if self.eat("(") {
            let e = self.expr(mode)?;
            return if self.eat(")") { Ok(e) } else { Err(InvalidPattern) };
        }
        let target = match mode {
            Mode::Json => self.selector()?,
            Mode::Delimited => vec![Step::Key(self.word()?)],
        };
        let test = if mode == Mode::Json && self.keyword("IS") {
            if self.keyword("TRUE") {
                Test::IsTrue
            } else if self.keyword("FALSE") {
                Test::IsFalse
            } else if self.keyword("NULL") {
                Test::IsNull
            } else {
                return Err(InvalidPattern);
            }
        } else if mode == Mode::Json && self.keyword("NOT") {
            if !self.keyword("EXISTS") {
                return Err(InvalidPattern);
            }
            Test::NotExists
        } else {
            let op = self.op()?;
            let lit = self.literal()?;
            if matches!(op, Op::Lt | Op::Gt | Op::Le | Op::Ge) && !matches!(lit, Literal::Number(_)) {
                return Err(InvalidPattern);
            }
            Test::Compare(op, lit)
        };
        Ok(Expr::Cond(Cond { target, test }))
    }

    fn selector(&mut self) -> Parsed<Vec<Step>> {
        self.skip_ws();
        let mut rest = self.rest.strip_prefix('$').ok_or(InvalidPattern)?;
        let mut steps = Vec::new();
        loop {
            if let Some(r) = rest.strip_prefix('.') {
                let end =
                    r.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '@')).unwrap_or(r.len());
                if end == 0 {
                    return Err(InvalidPattern);
                }
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or(InvalidPattern)?;
                steps.push(Step::Index(r[..end].trim().parse().map_err(|_| InvalidPattern)?));
                rest = &r[end + 1..];
            } else {
                break;
            }
        }
        if steps.is_empty() {
            return Err(InvalidPattern);
        }
        self.rest = rest;
        Ok(steps)
    }

    fn op(&mut self) -> Parsed<Op> {
        for (token, op) in [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)]
        {
            if self.eat(token) {
                return Ok(op);
            }
        }
        Err(InvalidPattern)
    }

    fn literal(&mut self) -> Parsed<Literal> {
        self.skip_ws();
        if let Some(q) = self.rest.strip_prefix('"') {
            let end = closing_quote(q).ok_or(InvalidPattern)?;
            let text = q[..end].replace("\\\"", "\"");
            self.rest = &q[end + 1..];
            return Ok(Literal::Text(text));
        }
        if let Some(r) = self.rest.strip_prefix('%') {
            let end = r.find('%').ok_or(InvalidPattern)?;
            let re = regex(&r[..end])?;
            self.rest = &r[end + 1..];
            return Ok(Literal::Regex(re));
        }
        let w = self.word()?;
        Ok(match w.parse::<f64>() {
            Ok(n) if n.is_finite() => Literal::Number(n),
            _ => Literal::Text(w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(pattern: &str, message: &str) -> bool {
        Pattern::parse(pattern).unwrap_or_else(|_| panic!("{pattern} parses")).matches(message)
    }

    #[test]
    fn terms_all_must_appear_case_sensitively() {
        assert!(hits("", "anything"));
        assert!(hits("ERROR", "[ERROR 400] BAD REQUEST"));
        assert!(!hits("ERROR", "error 400"));
        assert!(hits("ERROR BAD", "[ERROR 400] BAD REQUEST"));
        assert!(!hits("ERROR GOOD", "[ERROR 400] BAD REQUEST"));
    }

    #[test]
    fn quoted_phrases_are_one_term() {
        assert!(hits("\"BAD REQUEST\"", "[ERROR 400] BAD REQUEST"));
        assert!(!hits("\"REQUEST BAD\"", "[ERROR 400] BAD REQUEST"));
        assert!(hits(r#""say \"hi\"""#, r#"they say "hi" now"#));
    }

    #[test]
    fn question_marks_are_or_and_minus_excludes() {
        assert!(hits("?ERROR ?WARN", "WARN disk"));
        assert!(hits("?ERROR ?WARN", "ERROR disk"));
        assert!(!hits("?ERROR ?WARN", "INFO disk"));
        assert!(hits("ERROR -Exiting", "ERROR retrying"));
        assert!(!hits("ERROR -Exiting", "ERROR Exiting now"));
        assert!(hits("-DEBUG", "INFO"));
        assert!(!hits("-DEBUG", "DEBUG x"));
    }

    #[test]
    fn json_patterns_compare_strings_numbers_and_booleans() {
        let ev = r#"{"level":"ERROR","latency":150,"user":{"id":"u-1","admin":true},"tags":["a","b"],"gone":null}"#;
        assert!(hits(r#"{ $.level = "ERROR" }"#, ev));
        assert!(hits("{ $.level = ERROR }", ev));
        assert!(!hits(r#"{ $.level = "WARN" }"#, ev));
        assert!(hits(r#"{ $.level != "WARN" }"#, ev));
        assert!(hits("{ $.latency > 100 }", ev));
        assert!(!hits("{ $.latency < 100 }", ev));
        assert!(hits("{ $.latency >= 150 && $.latency <= 150 }", ev));
        assert!(hits(r#"{ $.user.id = "u-*" }"#, ev));
        assert!(hits("{ $.user.admin IS TRUE }", ev));
        assert!(hits("{ $.gone IS NULL }", ev));
        assert!(hits("{ $.missing NOT EXISTS }", ev));
        assert!(!hits("{ $.level NOT EXISTS }", ev));
        assert!(hits(r#"{ $.tags[1] = "b" }"#, ev));
        assert!(hits(r#"{ ($.level = "WARN") || ($.latency > 100 && $.user.admin IS TRUE) }"#, ev));
        assert!(!hits(r#"{ $.level = "WARN" || $.latency > 1000 }"#, ev));
        assert!(!hits(r#"{ $.level = "ERROR" }"#, "level=ERROR, not JSON"));
        assert!(!hits("{ $.missing != 3 }", ev), "a missing field fails every comparison");
    }

    #[test]
    fn space_delimited_patterns_line_fields_up() {
        let ev = r#"127.0.0.1 frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#;
        assert!(hits("[ip, user, timestamp, request, status_code, bytes]", ev));
        assert!(!hits("[ip, user, timestamp, request, status_code]", ev));
        assert!(hits("[ip, user, timestamp, request, status_code = 404, bytes > 1000]", ev));
        assert!(hits("[ip, user, ..., status_code = 4*, bytes]", ev));
        assert!(hits("[..., status_code = 404 || status_code = 500, bytes]", ev));
        assert!(!hits("[..., status_code = 200, bytes]", ev));
        assert!(hits(r#"[ip = "127.0.0.*", ...]"#, ev));
        assert!(hits("[..., request = *index*, status, bytes < 2000]", ev));
        assert!(hits("[..., ..., ip, ..., bytes, ...]", ev));
        assert!(!hits("[..., status = 404, ..., user = frank]", ev), "fields keep their order");
    }

    /// Eight `...` over 200 fields: about 10^13 ways to share the fields
    /// among them, which the search before the table tried one by one (for
    /// hours; this test did not end).
    #[test]
    fn many_ellipses_over_many_fields_end() {
        let ev = vec!["b"; 200].join(" ");
        assert!(!hits("[..., ..., ..., ..., ..., ..., ..., ..., a = zz]", &ev));
        assert!(hits("[..., ..., ..., ..., ..., ..., ..., ..., a = b]", &ev));
    }

    #[test]
    fn a_match_past_its_tries_is_no_match() {
        // 40 conditions each holding at 100,000 fields: 4,000,000 tries.
        let ev = vec!["a"; 100_000].join(" ");
        let conditions: Vec<String> = (0..40).map(|i| format!("f{i} = a")).collect();
        assert!(!hits(&format!("[{}, ...]", conditions.join(", ")), &ev));
        // Ten of them fit, and match.
        assert!(hits(&format!("[{}, ...]", conditions[..10].join(", ")), &ev));
        // A pattern of fixed width matches only an event of its width.
        assert!(!hits("[a, b]", &ev));
        assert!(hits("[a, b]", "a b"));
    }

    #[test]
    fn regular_expressions_between_percent_signs() {
        assert!(hits("%ERROR|WARN%", "a WARN b"));
        assert!(!hits("%^ERROR%", "a ERROR"));
        assert!(hits(r#"{ $.level = %ERR.*% }"#, r#"{"level":"ERROR"}"#));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "\"unterminated",
            "{ $.level = \"ERROR\"",
            "{ level = 1 }",
            "{ $.level }",
            "{ $.level == 1 }",
            "{ $.level > \"x\" }",
            "{ $.a = 1 && }",
            "{ ($.a = 1 }",
            "{ $.a IS MAYBE }",
            "[a, b",
            "[a, , b]",
            "[a = ]",
            "%(group)%",
            "ERR\"OR",
            "}",
        ] {
            assert_eq!(Pattern::parse(bad).err(), Some(InvalidPattern), "{bad}");
        }
    }

    #[test]
    fn required_terms_narrow_the_scan() {
        assert_eq!(Pattern::parse("A ?B -C \"D E\"").unwrap().required(), ["A", "D E"]);
        assert!(Pattern::parse("{ $.a = 1 }").unwrap().required().is_empty());
    }
}
