//! The route table: method and path to an [`Op`]. Lambda's paths carry a
//! date that differs between operations (Put and Get of function
//! concurrency even differ from each other), so every route is spelled out.

use axum::http::Method;
use nimbus_core::limits::{CODE_REQUEST_MAX, REQUEST_MAX};

use crate::ApiError;

/// One operation of the API; requests end here before any logic runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListFunctions,
    CreateFunction,
    GetFunction,
    DeleteFunction,
    GetFunctionConfiguration,
    UpdateFunctionConfiguration,
    UpdateFunctionCode,
    Invoke,
    InvokeAsync,
    InvokeWithResponseStream,
    ListVersionsByFunction,
    PublishVersion,
    ListAliases,
    CreateAlias,
    GetAlias,
    UpdateAlias,
    DeleteAlias,
    GetPolicy,
    AddPermission,
    RemovePermission,
    GetAccountSettings,
    TagResource,
    ListTags,
    UntagResource,
    PutFunctionConcurrency,
    DeleteFunctionConcurrency,
    GetFunctionConcurrency,
    ListLayers,
    GetLayerVersionByArn,
    ListLayerVersions,
    PublishLayerVersion,
    GetLayerVersion,
    DeleteLayerVersion,
    PutFunctionEventInvokeConfig,
    UpdateFunctionEventInvokeConfig,
    GetFunctionEventInvokeConfig,
    DeleteFunctionEventInvokeConfig,
    ListFunctionEventInvokeConfigs,
    PutProvisionedConcurrencyConfig,
    GetProvisionedConcurrencyConfig,
    DeleteProvisionedConcurrencyConfig,
    ListProvisionedConcurrencyConfigs,
    CreateFunctionUrlConfig,
    GetFunctionUrlConfig,
    UpdateFunctionUrlConfig,
    DeleteFunctionUrlConfig,
    ListFunctionUrlConfigs,
    CreateCodeSigningConfig,
    GetCodeSigningConfig,
    UpdateCodeSigningConfig,
    DeleteCodeSigningConfig,
    ListCodeSigningConfigs,
    ListFunctionsByCodeSigningConfig,
    PutFunctionCodeSigningConfig,
    GetFunctionCodeSigningConfig,
    DeleteFunctionCodeSigningConfig,
    GetFunctionRecursionConfig,
    PutFunctionRecursionConfig,
    AddLayerVersionPermission,
    GetLayerVersionPolicy,
    RemoveLayerVersionPermission,
    GetRuntimeManagementConfig,
    PutRuntimeManagementConfig,
    CreateEventSourceMapping,
    GetEventSourceMapping,
    UpdateEventSourceMapping,
    DeleteEventSourceMapping,
    ListEventSourceMappings,
    /// Nimbus's own: the target of `Code.Location` presigned URLs.
    DownloadCode,
    /// Nimbus's own: requests, GB-seconds and cost (`monitoring::usage`).
    Usage,
}

impl Op {
    /// The service name a request's SigV4 scope must carry.
    pub fn service(self) -> &'static str {
        "lambda"
    }

    /// Whether the operation's first path label names a function (or, for
    /// tags, may be a function's ARN).
    pub fn names_function(self) -> bool {
        use Op::*;
        !matches!(
            self,
            ListLayerVersions
                | PublishLayerVersion
                | GetLayerVersion
                | DeleteLayerVersion
                | AddLayerVersionPermission
                | GetLayerVersionPolicy
                | RemoveLayerVersionPermission
                | GetCodeSigningConfig
                | UpdateCodeSigningConfig
                | DeleteCodeSigningConfig
                | ListFunctionsByCodeSigningConfig
                | GetEventSourceMapping
                | UpdateEventSourceMapping
                | DeleteEventSourceMapping
                | DownloadCode
        )
    }

    /// The largest request body the operation accepts.
    pub fn body_limit(self) -> usize {
        match self {
            Self::CreateFunction | Self::UpdateFunctionCode | Self::PublishLayerVersion => CODE_REQUEST_MAX,
            _ => REQUEST_MAX,
        }
    }
}

/// Decoded query parameters, in order, repeats kept.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Finds the operation and its path labels (decoded). JSON-protocol
/// services (CloudWatch Logs) name the operation in `X-Amz-Target`.
pub fn route(
    method: &Method,
    raw_path: &str,
    query: &Query,
    target: Option<&str>,
) -> Result<(Op, Vec<String>), ApiError> {
    use Op::*;
    let segs: Vec<String> = raw_path.split('/').skip(1).map(decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    let one = |op: Op, a: &str| Ok((op, vec![a.to_string()]));
    let two = |op: Op, a: &str, b: &str| Ok((op, vec![a.to_string(), b.to_string()]));
    let three = |op: Op, a: &str, b: &str, c: &str| Ok((op, vec![a.to_string(), b.to_string(), c.to_string()]));
    match (m, s.as_slice()) {
        ("GET", ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => Ok((ListFunctions, vec![])),
        ("POST", ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => Ok((CreateFunction, vec![])),
        ("GET", ["2015-03-31", "functions", f]) => one(GetFunction, f),
        ("DELETE", ["2015-03-31", "functions", f]) => one(DeleteFunction, f),
        ("GET", ["2015-03-31", "functions", f, "configuration"]) => one(GetFunctionConfiguration, f),
        ("PUT", ["2015-03-31", "functions", f, "configuration"]) => one(UpdateFunctionConfiguration, f),
        ("PUT", ["2015-03-31", "functions", f, "code"]) => one(UpdateFunctionCode, f),
        ("POST", ["2015-03-31", "functions", f, "invocations"]) => one(Invoke, f),
        ("POST", ["2014-11-13", "functions", f, "invoke-async"]) => one(InvokeAsync, f),
        ("POST", ["2021-11-15", "functions", f, "response-streaming-invocations"]) => one(InvokeWithResponseStream, f),
        ("GET", ["2015-03-31", "functions", f, "versions"]) => one(ListVersionsByFunction, f),
        ("POST", ["2015-03-31", "functions", f, "versions"]) => one(PublishVersion, f),
        ("GET", ["2015-03-31", "functions", f, "aliases"]) => one(ListAliases, f),
        ("POST", ["2015-03-31", "functions", f, "aliases"]) => one(CreateAlias, f),
        ("GET", ["2015-03-31", "functions", f, "aliases", a]) => two(GetAlias, f, a),
        ("PUT", ["2015-03-31", "functions", f, "aliases", a]) => two(UpdateAlias, f, a),
        ("DELETE", ["2015-03-31", "functions", f, "aliases", a]) => two(DeleteAlias, f, a),
        ("GET", ["2015-03-31", "functions", f, "policy"]) => one(GetPolicy, f),
        ("POST", ["2015-03-31", "functions", f, "policy"]) => one(AddPermission, f),
        ("DELETE", ["2015-03-31", "functions", f, "policy", sid]) => two(RemovePermission, f, sid),
        ("GET", ["2016-08-19", "account-settings"] | ["2016-08-19", "account-settings", ""]) => {
            Ok((GetAccountSettings, vec![]))
        }
        ("POST", ["2017-03-31", "tags", arn]) => one(TagResource, arn),
        ("GET", ["2017-03-31", "tags", arn]) => one(ListTags, arn),
        ("DELETE", ["2017-03-31", "tags", arn]) => one(UntagResource, arn),
        ("PUT", ["2017-10-31", "functions", f, "concurrency"]) => one(PutFunctionConcurrency, f),
        ("DELETE", ["2017-10-31", "functions", f, "concurrency"]) => one(DeleteFunctionConcurrency, f),
        ("GET", ["2019-09-30", "functions", f, "concurrency"]) => one(GetFunctionConcurrency, f),
        ("GET", ["2018-10-31", "layers"] | ["2018-10-31", "layers", ""]) => {
            if query.get("find") == Some("LayerVersion") {
                Ok((GetLayerVersionByArn, vec![]))
            } else {
                Ok((ListLayers, vec![]))
            }
        }
        ("GET", ["2018-10-31", "layers", l, "versions"]) => one(ListLayerVersions, l),
        ("POST", ["2018-10-31", "layers", l, "versions"]) => one(PublishLayerVersion, l),
        ("GET", ["2018-10-31", "layers", l, "versions", v]) => two(GetLayerVersion, l, v),
        ("DELETE", ["2018-10-31", "layers", l, "versions", v]) => two(DeleteLayerVersion, l, v),
        ("PUT", ["2019-09-25", "functions", f, "event-invoke-config"]) => one(PutFunctionEventInvokeConfig, f),
        ("POST", ["2019-09-25", "functions", f, "event-invoke-config"]) => one(UpdateFunctionEventInvokeConfig, f),
        ("GET", ["2019-09-25", "functions", f, "event-invoke-config"]) => one(GetFunctionEventInvokeConfig, f),
        ("DELETE", ["2019-09-25", "functions", f, "event-invoke-config"]) => one(DeleteFunctionEventInvokeConfig, f),
        ("GET", ["2019-09-25", "functions", f, "event-invoke-config", "list"]) => {
            one(ListFunctionEventInvokeConfigs, f)
        }
        ("PUT", ["2019-09-30", "functions", f, "provisioned-concurrency"]) => one(PutProvisionedConcurrencyConfig, f),
        ("GET", ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            if query.get("List") == Some("ALL") {
                one(ListProvisionedConcurrencyConfigs, f)
            } else {
                one(GetProvisionedConcurrencyConfig, f)
            }
        }
        ("DELETE", ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            one(DeleteProvisionedConcurrencyConfig, f)
        }
        ("POST", ["2021-10-31", "functions", f, "url"]) => one(CreateFunctionUrlConfig, f),
        ("GET", ["2021-10-31", "functions", f, "url"]) => one(GetFunctionUrlConfig, f),
        ("PUT", ["2021-10-31", "functions", f, "url"]) => one(UpdateFunctionUrlConfig, f),
        ("DELETE", ["2021-10-31", "functions", f, "url"]) => one(DeleteFunctionUrlConfig, f),
        ("GET", ["2021-10-31", "functions", f, "urls"]) => one(ListFunctionUrlConfigs, f),
        ("POST", ["2020-04-22", "code-signing-configs"] | ["2020-04-22", "code-signing-configs", ""]) => {
            Ok((CreateCodeSigningConfig, vec![]))
        }
        ("GET", ["2020-04-22", "code-signing-configs"] | ["2020-04-22", "code-signing-configs", ""]) => {
            Ok((ListCodeSigningConfigs, vec![]))
        }
        ("GET", ["2020-04-22", "code-signing-configs", arn]) => one(GetCodeSigningConfig, arn),
        ("PUT", ["2020-04-22", "code-signing-configs", arn]) => one(UpdateCodeSigningConfig, arn),
        ("DELETE", ["2020-04-22", "code-signing-configs", arn]) => one(DeleteCodeSigningConfig, arn),
        ("GET", ["2020-04-22", "code-signing-configs", arn, "functions"]) => one(ListFunctionsByCodeSigningConfig, arn),
        ("PUT", ["2020-06-30", "functions", f, "code-signing-config"]) => one(PutFunctionCodeSigningConfig, f),
        ("GET", ["2020-06-30", "functions", f, "code-signing-config"]) => one(GetFunctionCodeSigningConfig, f),
        ("DELETE", ["2020-06-30", "functions", f, "code-signing-config"]) => one(DeleteFunctionCodeSigningConfig, f),
        ("GET", ["2024-08-31", "functions", f, "recursion-config"]) => one(GetFunctionRecursionConfig, f),
        ("PUT", ["2024-08-31", "functions", f, "recursion-config"]) => one(PutFunctionRecursionConfig, f),
        ("POST", ["2018-10-31", "layers", l, "versions", v, "policy"]) => two(AddLayerVersionPermission, l, v),
        ("GET", ["2018-10-31", "layers", l, "versions", v, "policy"]) => two(GetLayerVersionPolicy, l, v),
        ("DELETE", ["2018-10-31", "layers", l, "versions", v, "policy", sid]) => {
            three(RemoveLayerVersionPermission, l, v, sid)
        }
        ("GET", ["2021-07-20", "functions", f, "runtime-management-config"]) => one(GetRuntimeManagementConfig, f),
        ("PUT", ["2021-07-20", "functions", f, "runtime-management-config"]) => one(PutRuntimeManagementConfig, f),
        ("POST", ["2015-03-31", "event-source-mappings"] | ["2015-03-31", "event-source-mappings", ""]) => {
            Ok((CreateEventSourceMapping, vec![]))
        }
        ("GET", ["2015-03-31", "event-source-mappings"] | ["2015-03-31", "event-source-mappings", ""]) => {
            Ok((ListEventSourceMappings, vec![]))
        }
        ("GET", ["2015-03-31", "event-source-mappings", u]) => one(GetEventSourceMapping, u),
        ("PUT", ["2015-03-31", "event-source-mappings", u]) => one(UpdateEventSourceMapping, u),
        ("DELETE", ["2015-03-31", "event-source-mappings", u]) => one(DeleteEventSourceMapping, u),
        ("GET", ["_nimbus", "code", sha]) => one(DownloadCode, sha),
        ("GET", ["_nimbus", "usage"]) => Ok((Usage, vec![])),
        ("POST", [""]) => {
            Err(ApiError::UnknownOperation(format!("Unknown operation {}", target.unwrap_or("(no X-Amz-Target)"))))
        }
        _ => Err(ApiError::UnknownOperation(format!("No operation matches {m} {raw_path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(m: Method, path: &str, q: Option<&str>) -> Option<(Op, Vec<String>)> {
        route(&m, path, &Query::parse(q), None).ok()
    }

    #[test]
    fn dated_prefixes_and_fixed_query_parameters_pick_the_operation() {
        assert_eq!(
            op(Method::PUT, "/2017-10-31/functions/f/concurrency", None).map(|r| r.0),
            Some(Op::PutFunctionConcurrency)
        );
        assert_eq!(
            op(Method::GET, "/2019-09-30/functions/f/concurrency", None).map(|r| r.0),
            Some(Op::GetFunctionConcurrency)
        );
        assert!(op(Method::GET, "/2017-10-31/functions/f/concurrency", None).is_none());
        assert_eq!(
            op(Method::GET, "/2018-10-31/layers", Some("find=LayerVersion&Arn=x")).map(|r| r.0),
            Some(Op::GetLayerVersionByArn)
        );
        assert_eq!(op(Method::GET, "/2018-10-31/layers", None).map(|r| r.0), Some(Op::ListLayers));
        assert_eq!(
            op(Method::GET, "/2019-09-30/functions/f/provisioned-concurrency", Some("List=ALL")).map(|r| r.0),
            Some(Op::ListProvisionedConcurrencyConfigs)
        );
    }

    #[test]
    fn every_operation_of_the_model_groups_added_later_routes() {
        let csc = "/2020-04-22/code-signing-configs/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Acode-signing-config%3Acsc-0123456789abcdefg";
        let cases = [
            (Method::POST, "/2020-04-22/code-signing-configs".to_string(), Op::CreateCodeSigningConfig),
            (Method::GET, "/2020-04-22/code-signing-configs".to_string(), Op::ListCodeSigningConfigs),
            (Method::PUT, csc.to_string(), Op::UpdateCodeSigningConfig),
            (Method::GET, format!("{csc}/functions"), Op::ListFunctionsByCodeSigningConfig),
            (Method::DELETE, "/2020-06-30/functions/f/code-signing-config".into(), Op::DeleteFunctionCodeSigningConfig),
            (Method::PUT, "/2024-08-31/functions/f/recursion-config".into(), Op::PutFunctionRecursionConfig),
            (Method::DELETE, "/2018-10-31/layers/l/versions/1/policy/s".into(), Op::RemoveLayerVersionPermission),
            (Method::GET, "/2021-07-20/functions/f/runtime-management-config".into(), Op::GetRuntimeManagementConfig),
            (Method::POST, "/2015-03-31/event-source-mappings/".into(), Op::CreateEventSourceMapping),
            (Method::GET, "/2015-03-31/event-source-mappings".into(), Op::ListEventSourceMappings),
            (Method::PUT, "/2015-03-31/event-source-mappings/u".into(), Op::UpdateEventSourceMapping),
            (Method::DELETE, "/2015-03-31/event-source-mappings/u".into(), Op::DeleteEventSourceMapping),
        ];
        for (m, path, expected) in cases {
            assert_eq!(op(m, &path, None).map(|r| r.0), Some(expected), "{path}");
        }
        let (_, args) = op(Method::GET, csc, None).unwrap();
        assert_eq!(args, ["arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0123456789abcdefg"]);
    }

    #[test]
    fn json_protocol_targets_are_not_lambda_operations() {
        // CloudWatch Logs has its own front (`logs`), chosen before the table.
        assert!(route(&Method::POST, "/", &Query::default(), Some("Logs_20140328.FilterLogEvents")).is_err());
    }

    #[test]
    fn labels_are_decoded_after_routing() {
        let (o, args) = op(
            Method::GET,
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af/configuration",
            None,
        )
        .unwrap();
        assert_eq!(o, Op::GetFunctionConfiguration);
        assert_eq!(args, ["arn:aws:lambda:us-east-1:123456789012:function:f"]);
        let q = Query::parse(Some("tagKeys=a&tagKeys=b%20c&Qualifier=%24LATEST"));
        assert_eq!(q.all("tagKeys"), ["a", "b c"]);
        assert_eq!(q.get("Qualifier"), Some("$LATEST"));
    }
}
