//! Field rules of the Lambda API. Breaking a pattern, length or minimum of
//! the API model is a `ValidationException` (the AWS front door rejects it);
//! breaking a limit of the service itself is an `InvalidParameterValueException`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Result};
use crate::limits::*;

fn constraint(value: &str, field: &str, rule: &str) -> Error {
    Error::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

fn pattern(value: &str, field: &str, re: &str) -> Error {
    constraint(value, field, &format!("Member must satisfy regular expression pattern: {re}"))
}

fn is_ident(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn is_function_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= FUNCTION_NAME_MAX && is_ident(s)
}

/// The name given to CreateFunction: a bare name, no qualifier.
pub fn function_name(s: &str) -> Result<()> {
    if is_function_name(s) {
        Ok(())
    } else if s.len() > FUNCTION_NAME_MAX && is_ident(s) {
        Err(constraint(
            s,
            "functionName",
            &format!("Member must have length less than or equal to {FUNCTION_NAME_MAX}"),
        ))
    } else {
        Err(pattern(s, "functionName", "[a-zA-Z0-9-_]+"))
    }
}

pub fn layer_name(s: &str) -> Result<()> {
    if !s.is_empty() && s.len() <= LAYER_NAME_MAX && is_ident(s) {
        Ok(())
    } else {
        Err(pattern(s, "layerName", "[a-zA-Z0-9-_]+"))
    }
}

pub fn alias_name(s: &str) -> Result<()> {
    let ok = !s.is_empty() && s.len() <= ALIAS_NAME_MAX && is_ident(s) && !s.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(pattern(s, "name", "(?!^[0-9]+$)([a-zA-Z0-9-_]+)"))
    }
}

pub fn statement_id(s: &str) -> Result<()> {
    if !s.is_empty() && s.len() <= 100 && is_ident(s) {
        Ok(())
    } else {
        Err(pattern(s, "statementId", "([a-zA-Z0-9-_]+)"))
    }
}

static ROLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$").expect("static regex")
});

pub fn role(s: &str) -> Result<()> {
    if ROLE.is_match(s) {
        Ok(())
    } else {
        Err(pattern(s, "role", r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"))
    }
}

pub fn handler(s: &str) -> Result<()> {
    if s.len() > HANDLER_MAX {
        return Err(constraint(s, "handler", &format!("Member must have length less than or equal to {HANDLER_MAX}")));
    }
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(pattern(s, "handler", r"[^\s]+"));
    }
    Ok(())
}

pub fn description(s: &str) -> Result<()> {
    if s.chars().count() > DESCRIPTION_MAX {
        return Err(constraint(
            s,
            "description",
            &format!("Member must have length less than or equal to {DESCRIPTION_MAX}"),
        ));
    }
    Ok(())
}

/// A bounded integer: below the model's minimum is a validation error, above
/// the service's maximum an invalid parameter, as AWS answers.
pub fn range(field: &str, value: i64, min: i64, max: i64) -> Result<u32> {
    if value < min {
        let lower = {
            let mut c = field.chars();
            c.next().map(|f| f.to_lowercase().chain(c).collect::<String>()).unwrap_or_default()
        };
        return Err(constraint(
            &value.to_string(),
            &lower,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(Error::invalid(format!(
            "'{field}' value failed to satisfy constraint: Member must have value less than or equal to {max}"
        )));
    }
    u32::try_from(value).map_err(|_| Error::invalid(format!("'{field}' value is out of range")))
}

/// Keys that Lambda sets itself and refuses in `Environment.Variables`.
pub const RESERVED_ENV_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "TZ",
];

pub fn environment(vars: &BTreeMap<String, String>) -> Result<()> {
    let bad_key = vars.keys().find(|k| {
        let mut b = k.bytes();
        !(k.len() >= 2
            && b.next().is_some_and(|c| c.is_ascii_alphabetic())
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_'))
    });
    if let Some(k) = bad_key {
        return Err(pattern(k, "environment.variables", "[a-zA-Z]([a-zA-Z0-9_])+"));
    }
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| RESERVED_ENV_KEYS.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(Error::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    let measured = serde_json::to_string(vars).unwrap_or_default();
    if measured.len() > ENV_MAX_BYTES {
        return Err(Error::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(())
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(constraint(value, field, &format!("Member must satisfy enum value set: [{}]", allowed.join(", "))))
    }
}

pub fn architectures(list: &[String]) -> Result<()> {
    if list.len() != 1 {
        return Err(constraint(
            &format!("{list:?}"),
            "architectures",
            "Member must have length less than or equal to 1",
        ));
    }
    one_of("architectures", &list[0], &["x86_64", "arm64"])
}

pub fn tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > TAGS_MAX {
        return Err(Error::invalid(format!("A resource can have at most {TAGS_MAX} tags.")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > TAG_KEY_MAX || k.starts_with("aws:") {
            return Err(Error::invalid(format!(
                "Tag key '{k}' is invalid: keys are 1-{TAG_KEY_MAX} characters and may not start with 'aws:'."
            )));
        }
        if v.chars().count() > TAG_VALUE_MAX {
            return Err(Error::invalid(format!("Tag value for key '{k}' is longer than {TAG_VALUE_MAX} characters.")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(function_name("my-fn_1").is_ok());
        assert!(matches!(function_name("bad.name"), Err(Error::Validation(_))));
        assert!(matches!(function_name(&"a".repeat(65)), Err(Error::Validation(_))));
        assert!(alias_name("live").is_ok());
        assert!(alias_name("123").is_err(), "aliases cannot be all digits");
        assert!(layer_name(&"l".repeat(140)).is_ok());
        assert!(layer_name(&"l".repeat(141)).is_err());
    }

    #[test]
    fn ranges_split_model_and_service_limits() {
        assert_eq!(range("MemorySize", 128, MEMORY_MIN, MEMORY_MAX), Ok(128));
        assert!(
            matches!(range("MemorySize", 127, MEMORY_MIN, MEMORY_MAX), Err(Error::Validation(m)) if m.contains("'memorySize'"))
        );
        assert!(
            matches!(range("MemorySize", 10_241, MEMORY_MIN, MEMORY_MAX), Err(Error::InvalidParameter(m)) if m.contains("10240"))
        );
        assert!(range("Timeout", 901, TIMEOUT_MIN, TIMEOUT_MAX).is_err());
        assert!(range("Timeout", 0, TIMEOUT_MIN, TIMEOUT_MAX).is_err());
    }

    #[test]
    fn environment_rules() {
        let mut env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        assert!(environment(&env).is_ok());
        env.insert("AWS_REGION".into(), "x".into());
        let e = environment(&env).unwrap_err().to_string();
        assert!(e.contains("AWS_REGION"), "{e}");
        let big = BTreeMap::from([("BIG".to_string(), "x".repeat(4090))]);
        assert!(environment(&big).unwrap_err().to_string().contains("4KB"));
        let fits = BTreeMap::from([("BIG".to_string(), "x".repeat(4096 - 10))]);
        assert!(environment(&fits).is_ok(), "{{\"BIG\":\"...\"}} is exactly 4096 bytes");
        assert!(environment(&BTreeMap::from([("1X".to_string(), String::new())])).is_err());
    }

    #[test]
    fn roles_and_handlers() {
        assert!(role("arn:aws:iam::123456789012:role/lambda-role").is_ok());
        assert!(role("arn:aws:iam::1234:role/x").is_err());
        assert!(handler("app.handler").is_ok());
        assert!(handler("app handler").is_err());
        assert!(handler(&"h".repeat(129)).is_err());
    }
}
