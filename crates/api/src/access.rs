//! What a caller's key may do. The node's key pair (the operator's) may do
//! everything. Session credentials, which the node mints for a function's
//! environments and a task's containers, carry one fixed policy, as an
//! execution role would: the data services (S3, SQS, CloudWatch metrics),
//! writing logs, and invoking functions, plus reading their own function's
//! configuration. Managing compute (Lambda's control plane, layers,
//! usage, ECR, ECS, EventBridge Scheduler) is the operator's: code that
//! could, could read every function's environment and code, or replace
//! them.
//!
//! Checked before a request's body is read (the caller is known from the
//! token, which the node's MAC vouches for), so that a refused session does
//! not make the node hold a 70 MB code upload. Must not decide anything
//! that depends on stored state.

use nimbus_core::arn::{Account, FunctionRef};

use crate::sigv4::{AuthError, Caller};

/// An operation as the policy sees it.
pub(crate) struct Action<'a> {
    /// The signing name (`lambda`, `s3`, `ecs`, …).
    pub(crate) service: &'static str,
    /// The operation's name in the service's model, when it is known before
    /// the body is read (SQS's query protocol names it in the body).
    pub(crate) operation: &'a str,
    /// The function a Lambda operation is on, as the request names it.
    pub(crate) function: Option<&'a str>,
}

impl Action<'_> {
    /// Any operation of a service that decides by service alone.
    pub(crate) fn service(service: &'static str) -> Self {
        Self { service, operation: "", function: None }
    }
}

/// Lambda's operations that anyone with session credentials may call:
/// invoking is what an execution role is usually given.
const LAMBDA_ANY: &[&str] = &["Invoke", "InvokeAsync", "InvokeWithResponseStream", "GetAccountSettings"];

/// Lambda's operations that session credentials may call on their own
/// function: reading it, not changing it.
const LAMBDA_OWN: &[&str] = &[
    "GetFunction",
    "GetFunctionConfiguration",
    "ListVersionsByFunction",
    "ListAliases",
    "GetAlias",
    "GetPolicy",
    "ListTags",
    "GetFunctionConcurrency",
    "GetFunctionEventInvokeConfig",
    "ListFunctionEventInvokeConfigs",
    "GetProvisionedConcurrencyConfig",
    "ListProvisionedConcurrencyConfigs",
    "GetFunctionUrlConfig",
    "ListFunctionUrlConfigs",
    "GetFunctionCodeSigningConfig",
    "GetFunctionRecursionConfig",
    "GetRuntimeManagementConfig",
];

/// Services whose every operation session credentials may call.
const DATA_SERVICES: &[&str] = &["s3", "sqs", "monitoring"];

/// CloudWatch Logs' operations session credentials may call: writing
/// events, as AWS's basic execution role allows, and describing groups and
/// streams. Not reading events: other functions' logs are theirs.
const LOGS_WRITE: &[&str] =
    &["CreateLogGroup", "CreateLogStream", "PutLogEvents", "DescribeLogGroups", "DescribeLogStreams"];

/// Lets `caller` do `action`, or says why not in AWS's words.
pub(crate) fn check(account: &Account, caller: &Caller, action: &Action<'_>) -> Result<(), AuthError> {
    let Caller::Session { subject } = caller else { return Ok(()) };
    // STS serves only GetCallerIdentity, which AWS lets anyone call.
    let allowed = DATA_SERVICES.contains(&action.service)
        || action.service == "sts"
        || (action.service == "logs" && LOGS_WRITE.contains(&action.operation))
        || (action.service == "lambda"
            && (LAMBDA_ANY.contains(&action.operation)
                || (LAMBDA_OWN.contains(&action.operation)
                    && action.function.is_some_and(|f| same_function(account, f, subject)))));
    if allowed {
        return Ok(());
    }
    let name = format!("{}:{}", action.service, action.operation);
    let resource = match action.function.map(|f| FunctionRef::parse(account, f, None)) {
        Some(Ok(f)) => account.function_arn(&f.name),
        Some(Err(_)) | None => "*".into(),
    };
    Err(AuthError::Denied(format!(
        "User: {subject} is not authorized to perform: {name} on resource: {resource} because no identity-based policy allows the {name} action"
    )))
}

/// Lets `caller` do a CloudWatch Logs `operation` on log `group`: a session
/// writes into a Lambda log group (`/aws/lambda/…`) only if it is its own
/// function's, so that it cannot add lines to another function's logs.
pub(crate) fn check_log_group(
    account: &Account,
    caller: &Caller,
    operation: &str,
    group: &str,
) -> Result<(), AuthError> {
    let Caller::Session { subject } = caller else { return Ok(()) };
    let Some(function) = group.strip_prefix("/aws/lambda/") else { return Ok(()) };
    if same_function(account, function, subject) {
        return Ok(());
    }
    let name = format!("logs:{operation}");
    Err(AuthError::Denied(format!(
        "User: {subject} is not authorized to perform: {name} on resource: arn:aws:logs:{}:{}:log-group:{group} because no identity-based policy allows the {name} action",
        account.region, account.id
    )))
}

/// Whether a request's function name (bare, partial or full ARN, qualified
/// or not) names the function whose ARN is `subject`.
fn same_function(account: &Account, named: &str, subject: &str) -> bool {
    match (FunctionRef::parse(account, named, None), FunctionRef::parse(account, subject, None)) {
        (Ok(a), Ok(b)) => a.name == b.name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account { id: "123456789012".into(), region: "us-east-1".into() }
    }

    fn session(subject: &str) -> Caller {
        Caller::Session { subject: subject.into() }
    }

    fn lambda<'a>(operation: &'a str, function: Option<&'a str>) -> Action<'a> {
        Action { service: "lambda", operation, function }
    }

    #[test]
    fn the_node_may_do_anything() {
        for action in [lambda("DeleteFunction", Some("f")), Action::service("ecs")] {
            assert_eq!(check(&account(), &Caller::Node, &action), Ok(()));
        }
    }

    #[test]
    fn a_function_reads_only_itself_and_manages_nothing() {
        let me = session("arn:aws:lambda:us-east-1:123456789012:function:mine:live");
        let ok = |a: Action<'_>| check(&account(), &me, &a).is_ok();
        assert!(ok(lambda("GetFunctionConfiguration", Some("mine"))));
        assert!(ok(lambda("GetFunction", Some("arn:aws:lambda:us-east-1:123456789012:function:mine:3"))));
        assert!(ok(lambda("ListTags", Some("arn:aws:lambda:us-east-1:123456789012:function:mine"))));
        assert!(ok(lambda("Invoke", Some("theirs"))));
        assert!(!ok(lambda("GetFunctionConfiguration", Some("theirs"))));
        assert!(!ok(lambda("GetFunction", Some("123456789012:function:theirs"))));
        assert!(!ok(lambda("UpdateFunctionCode", Some("mine"))));
        assert!(!ok(lambda("ListFunctions", None)));
        assert!(!ok(lambda("DownloadCode", Some("mine"))));
        for service in ["ecr", "ecs", "scheduler", "console"] {
            assert!(!ok(Action::service(service)), "{service}");
        }
        for service in DATA_SERVICES {
            assert!(ok(Action::service(service)), "{service}");
        }
        let logs = |operation| Action { service: "logs", operation, function: None };
        assert!(ok(logs("PutLogEvents")) && ok(logs("DescribeLogStreams")));
        assert!(!ok(logs("FilterLogEvents")) && !ok(logs("GetLogEvents")) && !ok(logs("StartLiveTail")));
        assert!(!ok(logs("DeleteLogGroup")));
    }

    #[test]
    fn a_function_writes_into_its_own_lambda_log_group_only() {
        let me = session("arn:aws:lambda:us-east-1:123456789012:function:mine");
        let task = session("arn:aws:ecs:us-east-1:123456789012:task/default/abc");
        assert!(check_log_group(&account(), &me, "PutLogEvents", "/aws/lambda/mine").is_ok());
        assert!(check_log_group(&account(), &me, "PutLogEvents", "/app/anything").is_ok());
        assert!(check_log_group(&account(), &task, "CreateLogStream", "/ecs/web").is_ok());
        assert!(check_log_group(&account(), &me, "PutLogEvents", "/aws/lambda/theirs").is_err());
        assert!(check_log_group(&account(), &task, "PutLogEvents", "/aws/lambda/mine").is_err());
        assert!(check_log_group(&account(), &Caller::Node, "PutLogEvents", "/aws/lambda/theirs").is_ok());
    }

    #[test]
    fn a_refusal_names_the_caller_the_action_and_the_resource() {
        let task = session("arn:aws:ecs:us-east-1:123456789012:task/default/abc");
        assert_eq!(
            check(&account(), &task, &lambda("GetFunction", Some("f:1"))),
            Err(AuthError::Denied(
                "User: arn:aws:ecs:us-east-1:123456789012:task/default/abc is not authorized to perform: \
                 lambda:GetFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:f because no \
                 identity-based policy allows the lambda:GetFunction action"
                    .into()
            ))
        );
    }
}
