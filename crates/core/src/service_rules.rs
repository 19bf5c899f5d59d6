//! The rules AWS applies to a request beyond its published model, in one
//! table, each with AWS's answer.
//!
//! The model's own constraints (lengths, patterns, ranges, enums, required
//! members) are checked first, from the model itself, by `nimbus-model`; a
//! request reaching [`check`] already satisfies them. What is left here is
//! what AWS enforces although its model allows it: the published model lets
//! `MemorySize` go to 32768 and `Timeout` to 5400, but Lambda answers
//! `InvalidParameterValueException` above 10240 and 900.
//!
//! Rules that need stored state (reserved concurrency against the account's
//! unreserved minimum, the tag count after a merge, code storage) stay with
//! the commands in `nimbus-control`, using the helpers here for their messages.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::limits::*;

/// One rule: the operations whose input it reads, the input member (a path
/// of JSON keys) and the check, which sees the member only when present.
pub struct ServiceRule {
    pub operations: &'static [&'static str],
    pub member: &'static [&'static str],
    pub check: fn(&Value) -> Result<()>,
}

const CONFIGURE: &[&str] = &["CreateFunction", "UpdateFunctionConfiguration"];
const EVENT_INVOKE: &[&str] = &["PutFunctionEventInvokeConfig", "UpdateFunctionEventInvokeConfig"];

/// Every rule beyond the model, in the order they are checked.
pub static RULES: &[ServiceRule] = &[
    // CreateFunction takes a bare name of at most 64 characters; the model's
    // FunctionName shape (shared with other operations) allows ARNs of 140.
    ServiceRule { operations: &["CreateFunction"], member: &["FunctionName"], check: new_function_name },
    ServiceRule {
        operations: CONFIGURE,
        member: &["MemorySize"],
        check: |v| number_at_most("MemorySize", v, MEMORY_MAX),
    },
    ServiceRule { operations: CONFIGURE, member: &["Timeout"], check: |v| number_at_most("Timeout", v, TIMEOUT_MAX) },
    ServiceRule {
        operations: CONFIGURE,
        member: &["EphemeralStorage", "Size"],
        check: |v| number_at_most("EphemeralStorage.Size", v, EPHEMERAL_MAX),
    },
    ServiceRule { operations: CONFIGURE, member: &["Environment", "Variables"], check: environment },
    ServiceRule { operations: CONFIGURE, member: &["Layers"], check: layers },
    ServiceRule {
        operations: &["CreateFunction", "CreateEventSourceMapping", "TagResource"],
        member: &["Tags"],
        check: tags,
    },
    ServiceRule {
        operations: EVENT_INVOKE,
        member: &["DestinationConfig", "OnSuccess", "Destination"],
        check: |v| destination(v, false),
    },
    ServiceRule {
        operations: EVENT_INVOKE,
        member: &["DestinationConfig", "OnFailure", "Destination"],
        check: |v| destination(v, true),
    },
    ServiceRule { operations: CONFIGURE, member: &["DeadLetterConfig", "TargetArn"], check: dead_letter_target },
];

/// Applies every rule of `operation` to its JSON input (the body).
pub fn check(operation: &str, input: &Value) -> Result<()> {
    for rule in RULES.iter().filter(|r| r.operations.contains(&operation)) {
        let member = rule.member.iter().try_fold(input, |v, key| v.get(key));
        if let Some(v) = member.filter(|v| !v.is_null()) {
            (rule.check)(v)?;
        }
    }
    Ok(())
}

/// The service's own maximum of a number the model bounds more loosely (or
/// not at all), as AWS words it; the value as the domain keeps it.
pub fn at_most(field: &str, value: i64, max: i64) -> Result<u32> {
    if value > max {
        return Err(Error::invalid(format!(
            "'{field}' value failed to satisfy constraint: Member must have value less than or equal to {max}"
        )));
    }
    u32::try_from(value).map_err(|_| Error::invalid(format!("'{field}' value is out of range")))
}

/// A resource holds at most 50 tags (checked again after a merge).
pub fn tag_count(n: usize) -> Result<()> {
    if n > TAGS_MAX {
        return Err(Error::invalid(format!("A resource can have at most {TAGS_MAX} tags.")));
    }
    Ok(())
}

fn number_at_most(field: &str, v: &Value, max: i64) -> Result<()> {
    v.as_i64().map_or(Ok(()), |n| at_most(field, n, max).map(drop))
}

fn new_function_name(v: &Value) -> Result<()> {
    let s = v.as_str().unwrap_or_default();
    let ident = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let rule = if !ident {
        "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+".to_string()
    } else if s.len() > FUNCTION_NAME_MAX {
        format!("Member must have length less than or equal to {FUNCTION_NAME_MAX}")
    } else {
        return Ok(());
    };
    Err(Error::Validation(format!(
        "1 validation error detected: Value '{s}' at 'functionName' failed to satisfy constraint: {rule}"
    )))
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

/// No reserved keys, and at most 4 KB measured as AWS measures it: the JSON
/// of the map.
fn environment(v: &Value) -> Result<()> {
    let Some(vars) = v.as_object() else { return Ok(()) };
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| RESERVED_ENV_KEYS.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(Error::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    let sorted: BTreeMap<&String, &Value> = vars.iter().collect();
    let measured = serde_json::to_string(&sorted).unwrap_or_default();
    if measured.len() > ENV_MAX_BYTES {
        return Err(Error::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(())
}

fn layers(v: &Value) -> Result<()> {
    if v.as_array().is_some_and(|l| l.len() > LAYERS_MAX) {
        return Err(Error::invalid(format!("Cannot reference more than {LAYERS_MAX} layers.")));
    }
    Ok(())
}

/// At most 50 in one request, and no key in AWS's own `aws:` namespace.
fn tags(v: &Value) -> Result<()> {
    let Some(tags) = v.as_object() else { return Ok(()) };
    tag_count(tags.len())?;
    if let Some(k) = tags.keys().find(|k| k.starts_with("aws:")) {
        return Err(Error::invalid(format!(
            "Tag key '{k}' is invalid: keys are 1-{TAG_KEY_MAX} characters and may not start with 'aws:'."
        )));
    }
    Ok(())
}

/// Destinations Lambda can deliver to: SQS, SNS, Lambda, EventBridge, and
/// S3 for failures only. This node delivers to functions and queues; the
/// others are refused when configured rather than dropped when used.
fn destination(v: &Value, on_failure: bool) -> Result<()> {
    let arn = v.as_str().unwrap_or_default();
    let refused = |what: &str| {
        Err(Error::invalid(format!(
            "{what} destinations are not supported: this Nimbus node does not offer {what} \
             (destination {arn}). Use an Amazon SQS queue or a Lambda function."
        )))
    };
    match service_of(arn) {
        Some("sqs") if arn.split(':').count() == 6 => Ok(()),
        Some("lambda") if is_function_arn(arn) => Ok(()),
        Some("sns") => refused("Amazon SNS"),
        Some("events") => refused("Amazon EventBridge"),
        Some("s3") if !on_failure => Err(Error::invalid(format!(
            "The provided destination config is invalid: an S3 bucket ({arn}) can be an OnFailure destination only."
        ))),
        Some("s3") => Err(Error::invalid(format!(
            "S3 bucket destinations are not supported: this Nimbus node does not write invocation records \
             to buckets (destination {arn}). Use an Amazon SQS queue or a Lambda function."
        ))),
        _ => Err(Error::invalid(format!("The destination ARN {arn} is invalid."))),
    }
}

/// A function's dead-letter queue: an SQS queue or an SNS topic on AWS
/// (which this node does not offer); empty removes it.
fn dead_letter_target(v: &Value) -> Result<()> {
    let arn = v.as_str().unwrap_or_default();
    match service_of(arn) {
        _ if arn.is_empty() => Ok(()),
        Some("sqs") if arn.split(':').count() == 6 => Ok(()),
        Some("sns") => Err(Error::invalid(format!(
            "Amazon SNS dead-letter queues are not supported: this Nimbus node does not offer Amazon SNS \
             (target {arn}). Use an Amazon SQS queue."
        ))),
        _ => Err(Error::invalid(format!(
            "Invalid dead letter queue ARN: {arn} is neither an Amazon SQS queue nor an Amazon SNS topic."
        ))),
    }
}

/// The service of an ARN (`arn:partition:service:…`).
fn service_of(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(4, ':').collect();
    (parts.len() == 4 && parts[0] == "arn").then(|| parts[2])
}

/// `arn:aws:lambda:region:account:function:name[:qualifier]`.
fn is_function_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.len(), 7 | 8) && parts[5] == "function" && parts[6..].iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn limits_beyond_the_model_are_invalid_parameters() {
        assert!(check("CreateFunction", &json!({"FunctionName": "f", "MemorySize": 10240, "Timeout": 900})).is_ok());
        let e = check("UpdateFunctionConfiguration", &json!({"MemorySize": 10241})).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidParameter(
                "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to 10240"
                    .into()
            )
        );
        assert!(matches!(check("CreateFunction", &json!({"Timeout": 901})), Err(Error::InvalidParameter(_))));
        let e = check("CreateFunction", &json!({"EphemeralStorage": {"Size": 10241}})).unwrap_err();
        assert!(e.to_string().contains("'EphemeralStorage.Size'"), "{e}");
        assert!(check("GetFunction", &json!({"MemorySize": 99999})).is_ok(), "rules apply to their operations only");
    }

    #[test]
    fn new_function_names_are_bare_and_short() {
        assert!(check("CreateFunction", &json!({"FunctionName": "my-fn_1"})).is_ok());
        let e = check("CreateFunction", &json!({"FunctionName": "a".repeat(65)})).unwrap_err();
        assert!(matches!(&e, Error::Validation(m) if m.ends_with("Member must have length less than or equal to 64")));
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        assert!(matches!(check("CreateFunction", &json!({"FunctionName": arn})), Err(Error::Validation(_))));
    }

    #[test]
    fn environment_rules() {
        let ok = json!({"Environment": {"Variables": {"GREETING": "hi"}}});
        assert!(check("CreateFunction", &ok).is_ok());
        let e = check("CreateFunction", &json!({"Environment": {"Variables": {"AWS_REGION": "x", "A1": "y"}}}));
        assert!(e.unwrap_err().to_string().ends_with("Reserved keys used in this request: AWS_REGION"));
        let big = json!({"Environment": {"Variables": {"BIG": "x".repeat(4090)}}});
        assert!(check("CreateFunction", &big).unwrap_err().to_string().contains("4KB"));
        let fits = json!({"Environment": {"Variables": {"BIG": "x".repeat(4096 - 10)}}});
        assert!(check("CreateFunction", &fits).is_ok(), "{{\"BIG\":\"...\"}} is exactly 4096 bytes");
    }

    #[test]
    fn layers_tags_and_destinations() {
        let six: Vec<String> = (1..=6).map(|i| format!("arn:aws:lambda:us-east-1:123456789012:layer:l:{i}")).collect();
        assert!(check("CreateFunction", &json!({"Layers": six})).is_err());
        assert!(check("TagResource", &json!({"Tags": {"aws:x": "1"}})).is_err());
        assert!(check("CreateEventSourceMapping", &json!({"Tags": {"aws:x": "1"}})).is_err());
        let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(check("CreateFunction", &json!({"Tags": many})).is_err());
        let dest = |member: &str, arn: &str| {
            let input = json!({"DestinationConfig": {member: {"Destination": arn}}});
            check("PutFunctionEventInvokeConfig", &input).map_err(|e| e.to_string())
        };
        assert!(dest("OnSuccess", "arn:aws:sqs:us-east-1:123456789012:q").is_ok());
        assert!(dest("OnFailure", "arn:aws:lambda:us-east-1:123456789012:function:f").is_ok());
        assert!(dest("OnFailure", "arn:aws:lambda:us-east-1:123456789012:function:f:live").is_ok());
        assert!(dest("OnFailure", "arn:aws:lambda:us-east-1:123456789012:layer:l:1")
            .unwrap_err()
            .contains("is invalid"));
        let bad =
            json!({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:dynamodb:us-east-1:123456789012:t"}}});
        assert!(check("UpdateFunctionEventInvokeConfig", &bad).is_err());
        let sns = dest("OnFailure", "arn:aws:sns:us-east-1:123456789012:t").unwrap_err();
        assert!(sns.contains("does not offer Amazon SNS"), "{sns}");
        let bus = dest("OnSuccess", "arn:aws:events:us-east-1:123456789012:event-bus/default").unwrap_err();
        assert!(bus.contains("does not offer Amazon EventBridge"), "{bus}");
        assert!(dest("OnSuccess", "arn:aws:s3:::bucket").unwrap_err().contains("OnFailure destination only"));
        assert!(dest("OnFailure", "arn:aws:s3:::bucket").unwrap_err().contains("not supported"));

        let dlq = |arn: &str| check("CreateFunction", &json!({"DeadLetterConfig": {"TargetArn": arn}}));
        assert!(dlq("arn:aws:sqs:us-east-1:123456789012:dlq").is_ok() && dlq("").is_ok());
        assert!(dlq("arn:aws:sns:us-east-1:123456789012:t")
            .unwrap_err()
            .to_string()
            .contains("does not offer Amazon SNS"));
        assert!(dlq("arn:aws:lambda:us-east-1:123456789012:function:f").is_err());
    }

    #[test]
    fn the_service_maximum_converts() {
        assert_eq!(at_most("ProvisionedConcurrentExecutions", 5, 10), Ok(5));
        assert!(at_most("ProvisionedConcurrentExecutions", 11, 10).is_err());
        assert!(at_most("ReservedConcurrentExecutions", -1, i64::from(u32::MAX)).is_err());
    }
}
