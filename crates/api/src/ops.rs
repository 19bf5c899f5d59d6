//! One function per operation group: parse the wire request, call control,
//! shape the wire response. No rule of the Lambda model is decided here.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_control::{
    CodeSigningInput, CodeUpdate, InvokeRequest, NewFunction, NewLayerPermission, NewLayerVersion, NewPermission,
    ProvisionedReport, UrlConfigInput,
};
use nimbus_core::Error as Rule;
use nimbus_wire as w;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::convert::{self, configuration};
use crate::route::{Op, Query};
use crate::streaming;
use crate::{sigv4, Api, ApiError};

/// Everything an operation may read of its request.
pub struct Ctx<'a> {
    pub api: &'a Api,
    pub args: Vec<String>,
    pub query: Query,
    pub headers: &'a HeaderMap,
    pub body: bytes::Bytes,
    /// Also the invocation's request id, as on AWS.
    pub request_id: &'a str,
}

type R = Result<Response, ApiError>;

fn json<T: Serialize>(status: StatusCode, v: &T) -> R {
    Ok((status, axum::Json(v)).into_response())
}

fn empty(status: StatusCode) -> R {
    Ok(status.into_response())
}

/// Unwraps a required member. The front door (`validation`) has already
/// refused a request missing one that its model requires; this answers the
/// same for members the model leaves optional but Nimbus needs.
fn required<T>(v: Option<T>, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        Rule::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
        .into()
    })
}

impl Ctx<'_> {
    fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or_default()
    }

    fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).filter(|v| !v.is_empty())
    }

    fn max_items(&self) -> Result<Option<i64>, ApiError> {
        self.q("MaxItems")
            .map(|m| {
                m.parse::<i64>().map_err(|_| {
                    ApiError::Rule(Rule::Validation(format!(
                        "1 validation error detected: Value '{m}' at 'maxItems' failed to satisfy constraint: Member must be a number"
                    )))
                })
            })
            .transpose()
    }

    /// Parses the JSON body; an empty body is an empty input.
    fn input<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            Rule::InvalidRequestContent(format!(
                "Could not parse request body into json: Could not parse payload into json: {e}"
            ))
            .into()
        })
    }

    fn control(&self) -> &nimbus_control::Control {
        &self.api.control
    }

    fn account(&self) -> &nimbus_core::Account {
        self.api.control.account()
    }

    /// A presigned URL on this node that downloads a stored archive. It is
    /// signed with the node's key, so its host must be only a host: a
    /// `Host` header carrying a path and query (hyper lets `/` and `?`
    /// through) had the node sign another request of the caller's choosing.
    fn code_location(&self, sha256_hex: &str) -> Result<String, ApiError> {
        let host = self
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_authority(h))
            .map(str::to_string)
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.api.public_port));
        let base = format!("http://{host}/_nimbus/code/{sha256_hex}");
        let region = &self.account().region;
        sigv4::presign_get(&self.api.credentials, region, &base, &host, Duration::from_secs(600), SystemTime::now())
            .map_err(ApiError::Internal)
    }
}

/// Whether `host` is a host and optional port, nothing more (no user, path,
/// query or fragment).
fn is_authority(host: &str) -> bool {
    !host.contains('@') && host.parse::<axum::http::uri::Authority>().is_ok_and(|a| a.as_str() == host)
}

pub async fn execute(op: Op, c: Ctx<'_>) -> R {
    use Op::*;
    match op {
        ListFunctions
        | CreateFunction
        | GetFunction
        | DeleteFunction
        | GetFunctionConfiguration
        | UpdateFunctionConfiguration
        | UpdateFunctionCode
        | ListVersionsByFunction
        | PublishVersion
        | DownloadCode => functions(op, c).await,
        Invoke => invoke(c).await,
        Usage => crate::monitoring::usage(c.api, &c.query).await,
        InvokeWithResponseStream => invoke_with_response_stream(c).await,
        InvokeAsync => invoke_async(c).await,
        ListAliases | CreateAlias | GetAlias | UpdateAlias | DeleteAlias => aliases(op, c).await,
        ListLayers
        | GetLayerVersionByArn
        | ListLayerVersions
        | PublishLayerVersion
        | GetLayerVersion
        | DeleteLayerVersion
        | AddLayerVersionPermission
        | GetLayerVersionPolicy
        | RemoveLayerVersionPermission => layers(op, c).await,
        CreateCodeSigningConfig
        | GetCodeSigningConfig
        | UpdateCodeSigningConfig
        | DeleteCodeSigningConfig
        | ListCodeSigningConfigs
        | ListFunctionsByCodeSigningConfig
        | PutFunctionCodeSigningConfig
        | GetFunctionCodeSigningConfig
        | DeleteFunctionCodeSigningConfig => code_signing(op, c).await,
        CreateEventSourceMapping
        | GetEventSourceMapping
        | UpdateEventSourceMapping
        | DeleteEventSourceMapping
        | ListEventSourceMappings => event_source_mappings(op, c).await,
        _ => settings(op, c).await,
    }
}

async fn functions(op: Op, c: Ctx<'_>) -> R {
    let ctl = c.control();
    let acct = c.account();
    match op {
        Op::CreateFunction => {
            let req: w::CreateFunctionRequest = c.input()?;
            let code = required(req.code.clone(), "code")?;
            let zip = code.zip_file.as_deref().map(|z| convert::decode_zip(z, "Code.ZipFile")).transpose()?;
            let cfg = ctl
                .create_function(NewFunction {
                    name: required(req.function_name.clone(), "functionName")?,
                    role: required(req.role.clone(), "role")?,
                    patch: convert::patch(None, req.settings),
                    architectures: req.architectures,
                    package_type: req.package_type,
                    zip,
                    s3: convert::s3_code(&code.s3_bucket, &code.s3_key, &code.s3_object_version),
                    image_uri: code.image_uri.clone(),
                    publish: req.publish.unwrap_or(false),
                    tags: req.tags.unwrap_or_default(),
                    code_signing_config_arn: req.code_signing_config_arn,
                })
                .await?;
            json(StatusCode::CREATED, &configuration(acct, &cfg, None))
        }
        Op::GetFunction => {
            let (resolved, f) = ctl.get_function(c.arg(0), c.q("Qualifier")).await?;
            let unqualified = resolved.arn_qualifier.is_none();
            json(
                StatusCode::OK,
                &w::GetFunctionResponse {
                    code: match &resolved.config.image {
                        Some(image) => w::FunctionCodeLocation {
                            repository_type: "ECR".into(),
                            image_uri: Some(image.uri.clone()),
                            resolved_image_uri: Some(image.resolved_uri.clone()),
                            location: None,
                        },
                        None => w::FunctionCodeLocation {
                            repository_type: "S3".into(),
                            location: Some(c.code_location(&resolved.config.code.sha256_hex)?),
                            ..Default::default()
                        },
                    },
                    configuration: configuration(acct, &resolved.config, resolved.arn_qualifier.as_deref()),
                    // AWS leaves `Tags` out when there are none.
                    tags: (unqualified && !f.tags.is_empty()).then_some(f.tags),
                    concurrency: f
                        .reserved_concurrency
                        .map(|n| w::Concurrency { reserved_concurrent_executions: Some(n) }),
                },
            )
        }
        Op::GetFunctionConfiguration => {
            let (resolved, _) = ctl.get_function(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &configuration(acct, &resolved.config, resolved.arn_qualifier.as_deref()))
        }
        Op::DeleteFunction => {
            ctl.delete_function(c.arg(0), c.q("Qualifier")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::UpdateFunctionConfiguration => {
            let req: w::UpdateFunctionConfigurationRequest = c.input()?;
            let cfg =
                ctl.update_configuration(c.arg(0), convert::patch(req.role, req.settings), req.revision_id).await?;
            json(StatusCode::OK, &configuration(acct, &cfg, None))
        }
        Op::UpdateFunctionCode => {
            let req: w::UpdateFunctionCodeRequest = c.input()?;
            let zip = req.zip_file.as_deref().map(|z| convert::decode_zip(z, "ZipFile")).transpose()?;
            let cfg = ctl
                .update_code(
                    c.arg(0),
                    CodeUpdate {
                        zip,
                        s3: convert::s3_code(&req.s3_bucket, &req.s3_key, &req.s3_object_version),
                        image_uri: req.image_uri,
                        architectures: req.architectures,
                        publish: req.publish.unwrap_or(false),
                        dry_run: req.dry_run.unwrap_or(false),
                        revision_id: req.revision_id,
                    },
                )
                .await?;
            json(StatusCode::OK, &configuration(acct, &cfg, None))
        }
        Op::ListFunctions => {
            // The model's enum (ALL) is checked at the front door.
            let all = c.q("FunctionVersion") == Some("ALL");
            let page = ctl.list_functions(c.q("Marker"), c.max_items()?, all).await?;
            let functions = page
                .items
                .iter()
                .map(|cfg| {
                    convert::listed(configuration(acct, cfg, (all && cfg.version == "$LATEST").then_some("$LATEST")))
                })
                .collect();
            json(StatusCode::OK, &w::ListFunctionsResponse { next_marker: page.next_marker, functions })
        }
        Op::ListVersionsByFunction => {
            let page = ctl.list_versions(c.arg(0), c.q("Marker"), c.max_items()?).await?;
            let versions = page.items.iter().map(|cfg| configuration(acct, cfg, Some(&cfg.version))).collect();
            json(StatusCode::OK, &w::ListVersionsByFunctionResponse { next_marker: page.next_marker, versions })
        }
        Op::PublishVersion => {
            let req: w::PublishVersionRequest = c.input()?;
            let cfg = ctl
                .publish_version(c.arg(0), req.code_sha256.as_deref(), req.description, req.revision_id.as_deref())
                .await?;
            json(StatusCode::CREATED, &configuration(acct, &cfg, None))
        }
        Op::DownloadCode => {
            let bytes = ctl.code_blob(c.arg(0)).await?;
            Ok(([(http::header::CONTENT_TYPE, "application/zip")], bytes).into_response())
        }
        _ => unreachable_op(op),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The tail of a log that `X-Amz-Log-Result` carries: its last 4 KB.
pub(crate) fn log_tail(log: &str) -> String {
    let mut start = log.len().saturating_sub(4096);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&log[start..])
}

/// An invoke request as Invoke and InvokeWithResponseStream take it: the
/// invocation type, whether the log tail is wanted, and the invocation.
fn invoke_request(c: &Ctx<'_>) -> Result<(String, bool, InvokeRequest), ApiError> {
    // Both headers have passed the model's enums at the front door.
    let invocation_type = header(c.headers, "x-amz-invocation-type").unwrap_or("RequestResponse").to_string();
    let tail = header(c.headers, "x-amz-log-type") == Some("Tail");
    let payload =
        if c.body.iter().all(u8::is_ascii_whitespace) { bytes::Bytes::from_static(b"{}") } else { c.body.clone() };
    // Checked as UTF-8 first: serde skips an ignored string's bytes unread.
    let parsed = match std::str::from_utf8(&payload) {
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| e.to_string()),
        Err(e) => Err(format!("Invalid UTF-8 start byte 0x{:02x}", payload[e.valid_up_to()])),
    };
    if let Err(e) = parsed {
        return Err(Rule::InvalidRequestContent(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        ))
        .into());
    }
    let client_context = match header(c.headers, "x-amz-client-context") {
        None => None,
        Some(b64) => {
            if b64.len() > 3583 {
                return Err(Rule::invalid("Client context must be 3583 bytes or less.").into());
            }
            // The runtimes parse it as a JSON object: anything else is refused here.
            let not_json =
                || Rule::InvalidRequestContent("Client context must be a valid Base64-encoded JSON object.".into());
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| not_json())?;
            match serde_json::from_slice::<serde_json::Value>(&raw) {
                Ok(serde_json::Value::Object(_)) => Some(String::from_utf8(raw).map_err(|_| not_json())?),
                _ => return Err(not_json().into()),
            }
        }
    };
    let req = InvokeRequest {
        request_id: c.request_id.to_string(),
        function: c.arg(0).to_string(),
        qualifier: c.q("Qualifier").map(str::to_string),
        payload,
        client_context,
        stream: None,
        lineage: 0,
    };
    Ok((invocation_type, tail, req))
}

fn put_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Names the function on the request's span, for a trace collector only
/// (the log's span fields stay as they were, with nothing to format).
fn trace_function(c: &Ctx<'_>) {
    if nimbus_metrics::traces::exporting() {
        tracing::Span::current().record("function", c.arg(0));
    }
}

async fn invoke(c: Ctx<'_>) -> R {
    trace_function(&c);
    let (invocation_type, tail, req) = invoke_request(&c)?;
    match invocation_type.as_str() {
        "DryRun" => {
            c.control().resolve_invocation(c.arg(0), c.q("Qualifier")).await?;
            return empty(StatusCode::NO_CONTENT);
        }
        "Event" => {
            c.control().invoke_async(c.request_id, c.arg(0), c.q("Qualifier"), req.payload).await?;
            return empty(StatusCode::ACCEPTED);
        }
        _ => {}
    }
    let done = c.control().invoke(req).await?;
    let _reply = tracing::debug_span!("reply").entered();
    let mut resp = (StatusCode::OK, [(http::header::CONTENT_TYPE, "application/json")], done.outcome.payload.clone())
        .into_response();
    put_header(&mut resp, "x-amz-executed-version", &done.executed_version);
    if let Some(fe) = &done.outcome.function_error {
        put_header(&mut resp, "x-amz-function-error", fe);
    }
    if tail {
        put_header(&mut resp, "x-amz-log-result", &log_tail(&done.outcome.log_text()));
    }
    Ok(resp)
}

/// InvokeAsync, the deprecated form of an `Event` invoke (the body is the
/// event, the function unqualified), answered as AWS answers it.
async fn invoke_async(c: Ctx<'_>) -> R {
    trace_function(&c);
    let (_, _, req) = invoke_request(&c)?;
    c.control().invoke_async(c.request_id, c.arg(0), None, req.payload).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "Status": 202 }))).into_response())
}

/// InvokeWithResponseStream: the response as an event stream of
/// PayloadChunk events while the function writes, then InvokeComplete
/// with its error and log tail. A function that does not stream sends its
/// whole response as one chunk; refusals (throttling, a missing function)
/// are ordinary errors, answered before any event.
async fn invoke_with_response_stream(c: Ctx<'_>) -> R {
    trace_function(&c);
    let (invocation_type, tail, req) = invoke_request(&c)?;
    if invocation_type == "DryRun" {
        c.control().resolve_invocation(c.arg(0), c.q("Qualifier")).await?;
        return empty(StatusCode::NO_CONTENT);
    }
    let (version, first) = match streaming::start(c.api.control.clone(), req).await {
        streaming::Started::Finished(done) => {
            let invoked = done?;
            (invoked.executed_version.clone(), Err(Box::new(invoked)))
        }
        streaming::Started::Streaming { executed_version, chunks, .. } => (executed_version, Ok(chunks)),
    };
    let mut resp = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
        streaming::event_stream(first, tail),
    )
        .into_response();
    put_header(&mut resp, "x-amz-executed-version", &version);
    Ok(resp)
}

fn unreachable_op(op: Op) -> R {
    Err(ApiError::Internal(format!("operation {op:?} was dispatched to the wrong group")))
}

async fn aliases(op: Op, c: Ctx<'_>) -> R {
    let ctl = c.control();
    let acct = c.account();
    let name = || nimbus_core::FunctionRef::parse_unqualified(acct, c.arg(0)).map(|r| r.name).map_err(ApiError::from);
    match op {
        Op::CreateAlias => {
            let req: w::CreateAliasRequest = c.input()?;
            let weights = req.routing_config.and_then(|r| r.additional_version_weights).unwrap_or_default();
            let a = ctl
                .create_alias(
                    c.arg(0),
                    &required(req.name, "name")?,
                    &required(req.function_version, "functionVersion")?,
                    req.description,
                    weights,
                )
                .await?;
            json(StatusCode::CREATED, &convert::alias(acct, &name()?, &a))
        }
        Op::GetAlias => {
            let a = ctl.get_alias(c.arg(0), c.arg(1)).await?;
            json(StatusCode::OK, &convert::alias(acct, &name()?, &a))
        }
        Op::UpdateAlias => {
            let req: w::UpdateAliasRequest = c.input()?;
            let weights = req.routing_config.map(|r| r.additional_version_weights.unwrap_or_default());
            let a = ctl
                .update_alias(
                    c.arg(0),
                    c.arg(1),
                    req.function_version,
                    req.description,
                    weights,
                    req.revision_id.as_deref(),
                )
                .await?;
            json(StatusCode::OK, &convert::alias(acct, &name()?, &a))
        }
        Op::DeleteAlias => {
            ctl.delete_alias(c.arg(0), c.arg(1)).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListAliases => {
            let page = ctl.list_aliases(c.arg(0), c.q("FunctionVersion"), c.q("Marker"), c.max_items()?).await?;
            let n = name()?;
            let aliases = page.items.iter().map(|a| convert::alias(acct, &n, a)).collect();
            json(StatusCode::OK, &w::ListAliasesResponse { next_marker: page.next_marker, aliases })
        }
        _ => unreachable_op(op),
    }
}

fn layer_version_number(s: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| {
        ApiError::Rule(Rule::Validation(format!(
            "1 validation error detected: Value '{s}' at 'versionNumber' failed to satisfy constraint: Member must be a number"
        )))
    })
}

async fn layers(op: Op, c: Ctx<'_>) -> R {
    let ctl = c.control();
    let acct = c.account();
    match op {
        Op::PublishLayerVersion => {
            let req: w::PublishLayerVersionRequest = c.input()?;
            let content = required(req.content, "content")?;
            let lv = ctl
                .publish_layer_version(NewLayerVersion {
                    layer_name: c.arg(0).to_string(),
                    zip: content.zip_file.as_deref().map(|z| convert::decode_zip(z, "Content.ZipFile")).transpose()?,
                    s3: convert::s3_code(&content.s3_bucket, &content.s3_key, &content.s3_object_version),
                    description: req.description,
                    compatible_runtimes: req.compatible_runtimes.unwrap_or_default(),
                    compatible_architectures: req.compatible_architectures.unwrap_or_default(),
                    license_info: req.license_info,
                })
                .await?;
            let location = c.code_location(&lv.code.sha256_hex)?;
            json(StatusCode::CREATED, &convert::layer_version(acct, &lv, location))
        }
        Op::GetLayerVersion | Op::GetLayerVersionByArn => {
            let lv = if op == Op::GetLayerVersion {
                ctl.get_layer_version(c.arg(0), layer_version_number(c.arg(1))?).await?
            } else {
                ctl.get_layer_version_by_arn(&required(c.q("Arn").map(str::to_string), "arn")?).await?
            };
            let location = c.code_location(&lv.code.sha256_hex)?;
            json(StatusCode::OK, &convert::layer_version(acct, &lv, location))
        }
        Op::DeleteLayerVersion => {
            ctl.delete_layer_version(c.arg(0), layer_version_number(c.arg(1))?).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::AddLayerVersionPermission => {
            let req: w::AddLayerVersionPermissionRequest = c.input()?;
            let (statement, revision_id) = ctl
                .add_layer_version_permission(
                    c.arg(0),
                    layer_version_number(c.arg(1))?,
                    NewLayerPermission {
                        statement_id: required(req.statement_id, "statementId")?,
                        action: required(req.action, "action")?,
                        principal: required(req.principal, "principal")?,
                        organization_id: req.organization_id,
                        revision_id: c.q("RevisionId").map(str::to_string),
                    },
                )
                .await?;
            json(
                StatusCode::CREATED,
                &w::AddLayerVersionPermissionResponse { statement: convert::policy_json(&statement), revision_id },
            )
        }
        Op::GetLayerVersionPolicy => {
            let (doc, revision_id) = ctl.get_layer_version_policy(c.arg(0), layer_version_number(c.arg(1))?).await?;
            json(StatusCode::OK, &w::LayerVersionPolicy { policy: convert::policy_json(&doc), revision_id })
        }
        Op::RemoveLayerVersionPermission => {
            ctl.remove_layer_version_permission(c.arg(0), layer_version_number(c.arg(1))?, c.arg(2), c.q("RevisionId"))
                .await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListLayers => {
            let page = ctl
                .list_layers(c.q("CompatibleRuntime"), c.q("CompatibleArchitecture"), c.q("Marker"), c.max_items()?)
                .await?;
            let layers = page
                .items
                .iter()
                .map(|lv| w::LayersListItem {
                    layer_name: lv.name.clone(),
                    layer_arn: acct.layer_arn(&lv.name),
                    latest_matching_version: convert::layer_list_item(acct, lv),
                })
                .collect();
            json(StatusCode::OK, &w::ListLayersResponse { next_marker: page.next_marker, layers })
        }
        Op::ListLayerVersions => {
            let page = ctl
                .list_layer_versions(
                    c.arg(0),
                    c.q("CompatibleRuntime"),
                    c.q("CompatibleArchitecture"),
                    c.q("Marker"),
                    c.max_items()?,
                )
                .await?;
            let layer_versions = page.items.iter().map(|lv| convert::layer_list_item(acct, lv)).collect();
            json(StatusCode::OK, &w::ListLayerVersionsResponse { next_marker: page.next_marker, layer_versions })
        }
        _ => unreachable_op(op),
    }
}

pub(crate) fn provisioned(function_arn: Option<String>, p: &ProvisionedReport) -> w::ProvisionedConcurrencyConfig {
    w::ProvisionedConcurrencyConfig {
        function_arn,
        requested_provisioned_concurrent_executions: p.config.requested,
        allocated_provisioned_concurrent_executions: p.ready,
        available_provisioned_concurrent_executions: p.ready,
        status: p.status.into(),
        status_reason: p.reason.clone(),
        last_modified: convert::provisioned_time(p.config.modified_ms),
    }
}

fn url_input(req: w::FunctionUrlConfigRequest) -> UrlConfigInput {
    UrlConfigInput { auth_type: req.auth_type, cors: req.cors.map(convert::cors_in), invoke_mode: req.invoke_mode }
}

async fn settings(op: Op, c: Ctx<'_>) -> R {
    let ctl = c.control();
    let acct = c.account();
    let fname = || nimbus_core::FunctionRef::parse(acct, c.arg(0), None).map(|r| r.name).map_err(ApiError::from);
    match op {
        Op::PutFunctionConcurrency => {
            let req: w::PutFunctionConcurrencyRequest = c.input()?;
            let n = ctl
                .put_function_concurrency(
                    c.arg(0),
                    required(req.reserved_concurrent_executions, "reservedConcurrentExecutions")?,
                )
                .await?;
            json(StatusCode::OK, &w::Concurrency { reserved_concurrent_executions: Some(n) })
        }
        Op::GetFunctionConcurrency => {
            let n = ctl.get_function_concurrency(c.arg(0)).await?;
            json(StatusCode::OK, &w::Concurrency { reserved_concurrent_executions: n })
        }
        Op::DeleteFunctionConcurrency => {
            ctl.delete_function_concurrency(c.arg(0)).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::PutProvisionedConcurrencyConfig => {
            let req: w::PutProvisionedConcurrencyConfigRequest = c.input()?;
            let n = required(req.provisioned_concurrent_executions, "provisionedConcurrentExecutions")?;
            let p = ctl.put_provisioned_concurrency(c.arg(0), c.q("Qualifier"), n).await?;
            json(StatusCode::ACCEPTED, &provisioned(None, &p))
        }
        Op::GetProvisionedConcurrencyConfig => {
            let p = ctl.get_provisioned_concurrency(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &provisioned(None, &p))
        }
        Op::DeleteProvisionedConcurrencyConfig => {
            ctl.delete_provisioned_concurrency(c.arg(0), c.q("Qualifier")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListProvisionedConcurrencyConfigs => {
            let page = ctl.list_provisioned_concurrency(c.arg(0), c.q("Marker"), c.max_items()?).await?;
            let name = fname()?;
            let configs = page.items.iter().map(|(q, p)| provisioned(Some(acct.qualified_arn(&name, q)), p)).collect();
            json(
                StatusCode::OK,
                &w::ListProvisionedConcurrencyConfigsResponse {
                    provisioned_concurrency_configs: configs,
                    next_marker: page.next_marker,
                },
            )
        }
        Op::TagResource | Op::UntagResource | Op::ListTags => tagging(op, c).await,
        Op::AddPermission => {
            let req: w::AddPermissionRequest = c.input()?;
            let statement = ctl
                .add_permission(
                    c.arg(0),
                    c.q("Qualifier"),
                    NewPermission {
                        statement_id: required(req.statement_id, "statementId")?,
                        action: required(req.action, "action")?,
                        principal: required(req.principal, "principal")?,
                        source_arn: req.source_arn,
                        source_account: req.source_account,
                        principal_org_id: req.principal_org_id,
                        event_source_token: req.event_source_token,
                        function_url_auth_type: req.function_url_auth_type,
                        invoked_via_function_url: req.invoked_via_function_url == Some(true),
                        revision_id: req.revision_id,
                    },
                )
                .await?;
            json(StatusCode::CREATED, &w::AddPermissionResponse { statement: convert::policy_json(&statement) })
        }
        Op::GetPolicy => {
            let (doc, revision_id) = ctl.get_policy(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &w::GetPolicyResponse { policy: convert::policy_json(&doc), revision_id })
        }
        Op::RemovePermission => {
            ctl.remove_permission(c.arg(0), c.q("Qualifier"), c.arg(1), c.q("RevisionId")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::CreateFunctionUrlConfig => {
            let req: w::FunctionUrlConfigRequest = c.input()?;
            let u = ctl.create_url_config(c.arg(0), c.q("Qualifier"), url_input(req)).await?;
            let key = c.q("Qualifier").unwrap_or_default();
            json(StatusCode::CREATED, &convert::url_config(acct, &fname()?, key, &u, &c.api.url_base))
        }
        Op::GetFunctionUrlConfig => {
            let (u, key) = ctl.get_url_config(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &convert::url_config(acct, &fname()?, &key, &u, &c.api.url_base))
        }
        Op::UpdateFunctionUrlConfig => {
            let req: w::FunctionUrlConfigRequest = c.input()?;
            let (u, key) = ctl.update_url_config(c.arg(0), c.q("Qualifier"), url_input(req)).await?;
            json(StatusCode::OK, &convert::url_config(acct, &fname()?, &key, &u, &c.api.url_base))
        }
        Op::DeleteFunctionUrlConfig => {
            ctl.delete_url_config(c.arg(0), c.q("Qualifier")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListFunctionUrlConfigs => {
            let page = ctl.list_url_configs(c.arg(0), c.q("Marker"), c.max_items()?).await?;
            let name = fname()?;
            let list =
                page.items.iter().map(|(k, u)| convert::url_config(acct, &name, k, u, &c.api.url_base)).collect();
            json(
                StatusCode::OK,
                &w::ListFunctionUrlConfigsResponse { function_url_configs: list, next_marker: page.next_marker },
            )
        }
        Op::PutFunctionEventInvokeConfig | Op::UpdateFunctionEventInvokeConfig => {
            let req: w::PutFunctionEventInvokeConfigRequest = c.input()?;
            let input = convert::event_invoke_in(req)?;
            let merge = op == Op::UpdateFunctionEventInvokeConfig;
            let (cfg, key) = ctl.put_event_invoke_config(c.arg(0), c.q("Qualifier"), input, merge).await?;
            json(StatusCode::OK, &convert::event_invoke_out(acct, &fname()?, &key, &cfg))
        }
        Op::GetFunctionEventInvokeConfig => {
            let (cfg, key) = ctl.get_event_invoke_config(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &convert::event_invoke_out(acct, &fname()?, &key, &cfg))
        }
        Op::DeleteFunctionEventInvokeConfig => {
            ctl.delete_event_invoke_config(c.arg(0), c.q("Qualifier")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListFunctionEventInvokeConfigs => {
            let page = ctl.list_event_invoke_configs(c.arg(0), c.q("Marker"), c.max_items()?).await?;
            let name = fname()?;
            let list = page.items.iter().map(|(k, cfg)| convert::event_invoke_out(acct, &name, k, cfg)).collect();
            json(
                StatusCode::OK,
                &w::ListFunctionEventInvokeConfigsResponse {
                    function_event_invoke_configs: list,
                    next_marker: page.next_marker,
                },
            )
        }
        Op::GetFunctionRecursionConfig => {
            let r = ctl.get_recursion_config(c.arg(0)).await?;
            json(StatusCode::OK, &w::FunctionRecursionConfig { recursive_loop: Some(r) })
        }
        Op::PutFunctionRecursionConfig => {
            let req: w::FunctionRecursionConfig = c.input()?;
            let r = ctl.put_recursion_config(c.arg(0), &required(req.recursive_loop, "recursiveLoop")?).await?;
            json(StatusCode::OK, &w::FunctionRecursionConfig { recursive_loop: Some(r) })
        }
        Op::GetRuntimeManagementConfig => {
            let (m, function_arn) = ctl.get_runtime_management(c.arg(0), c.q("Qualifier")).await?;
            json(StatusCode::OK, &runtime_management(m, function_arn))
        }
        Op::PutRuntimeManagementConfig => {
            let req: w::PutRuntimeManagementConfigRequest = c.input()?;
            let setting = nimbus_core::function::RuntimeManagement {
                update_runtime_on: required(req.update_runtime_on, "updateRuntimeOn")?,
                runtime_version_arn: req.runtime_version_arn,
            };
            let (m, function_arn) = ctl.put_runtime_management(c.arg(0), c.q("Qualifier"), setting).await?;
            json(StatusCode::OK, &runtime_management(m, function_arn))
        }
        Op::GetAccountSettings => {
            let s = ctl.account_settings().await?;
            json(
                StatusCode::OK,
                &w::GetAccountSettingsResponse {
                    account_limit: w::AccountLimit {
                        total_code_size: nimbus_core::limits::TOTAL_CODE_SIZE,
                        code_size_unzipped: nimbus_core::limits::UNZIPPED_MAX,
                        code_size_zipped: nimbus_core::limits::ZIPPED_MAX,
                        concurrent_executions: s.concurrency_limit,
                        unreserved_concurrent_executions: s.unreserved_concurrency,
                    },
                    account_usage: w::AccountUsage {
                        total_code_size: s.total_code_size,
                        function_count: s.function_count,
                    },
                },
            )
        }
        _ => unreachable_op(op),
    }
}

fn code_signing_input(req: w::CodeSigningConfigRequest) -> CodeSigningInput {
    CodeSigningInput {
        description: req.description,
        signing_profile_version_arns: req
            .allowed_publishers
            .map(|a| a.signing_profile_version_arns.unwrap_or_default()),
        untrusted_artifact_on_deployment: req.code_signing_policies.and_then(|p| p.untrusted_artifact_on_deployment),
    }
}

async fn code_signing(op: Op, c: Ctx<'_>) -> R {
    let ctl = c.control();
    let one = |csc: &nimbus_core::function::CodeSigningConfig| w::CodeSigningConfigResponse {
        code_signing_config: convert::code_signing_config(ctl.code_signing_config_arn(&csc.id), csc),
    };
    match op {
        Op::CreateCodeSigningConfig => {
            let req: w::CodeSigningConfigRequest = c.input()?;
            let csc = ctl.create_code_signing_config(code_signing_input(req)).await?;
            json(StatusCode::CREATED, &one(&csc))
        }
        Op::GetCodeSigningConfig => json(StatusCode::OK, &one(&ctl.get_code_signing_config(c.arg(0)).await?)),
        Op::UpdateCodeSigningConfig => {
            let req: w::CodeSigningConfigRequest = c.input()?;
            let csc = ctl.update_code_signing_config(c.arg(0), code_signing_input(req)).await?;
            json(StatusCode::OK, &one(&csc))
        }
        Op::DeleteCodeSigningConfig => {
            ctl.delete_code_signing_config(c.arg(0)).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::ListCodeSigningConfigs => {
            let page = ctl.list_code_signing_configs(c.q("Marker"), c.max_items()?).await?;
            let code_signing_configs = page
                .items
                .iter()
                .map(|csc| convert::code_signing_config(ctl.code_signing_config_arn(&csc.id), csc))
                .collect();
            json(
                StatusCode::OK,
                &w::ListCodeSigningConfigsResponse { next_marker: page.next_marker, code_signing_configs },
            )
        }
        Op::ListFunctionsByCodeSigningConfig => {
            let page = ctl.list_functions_by_code_signing_config(c.arg(0), c.q("Marker"), c.max_items()?).await?;
            json(
                StatusCode::OK,
                &w::ListFunctionsByCodeSigningConfigResponse {
                    next_marker: page.next_marker,
                    function_arns: page.items,
                },
            )
        }
        Op::PutFunctionCodeSigningConfig => {
            let req: w::PutFunctionCodeSigningConfigRequest = c.input()?;
            let arn = required(req.code_signing_config_arn, "codeSigningConfigArn")?;
            let name = ctl.put_function_code_signing_config(c.arg(0), &arn).await?;
            json(
                StatusCode::OK,
                &w::FunctionCodeSigningConfig { code_signing_config_arn: Some(arn), function_name: Some(name) },
            )
        }
        Op::GetFunctionCodeSigningConfig => {
            // A function without one gets an empty object, as on AWS.
            let (name, arn) = ctl.get_function_code_signing_config(c.arg(0)).await?;
            let body = match arn {
                Some(arn) => {
                    w::FunctionCodeSigningConfig { code_signing_config_arn: Some(arn), function_name: Some(name) }
                }
                None => w::FunctionCodeSigningConfig::default(),
            };
            json(StatusCode::OK, &body)
        }
        Op::DeleteFunctionCodeSigningConfig => {
            ctl.delete_function_code_signing_config(c.arg(0)).await?;
            empty(StatusCode::NO_CONTENT)
        }
        _ => unreachable_op(op),
    }
}

/// Tags of a function, or of an event source mapping (which lives with
/// the triggers, above control).
async fn tagging(op: Op, c: Ctx<'_>) -> R {
    let (ctl, arn) = (&c.api.control, c.arg(0));
    let mapping = c.api.mappings.as_deref().and_then(|m| Some((m, m.tagged_uuid(arn)?)));
    match (op, mapping) {
        (Op::TagResource, None) => {
            let req: w::TagResourceRequest = c.input()?;
            ctl.tag_resource(arn, required(req.tags, "tags")?).await?;
        }
        (Op::TagResource, Some((mappings, uuid))) => {
            let req: w::TagResourceRequest = c.input()?;
            mappings.retag(uuid?, required(req.tags, "tags")?, &[]).await?;
        }
        (Op::UntagResource, None) => ctl.untag_resource(arn, &c.query.all("tagKeys")).await?,
        (Op::UntagResource, Some((mappings, uuid))) => {
            mappings.retag(uuid?, Default::default(), &c.query.all("tagKeys")).await?;
        }
        (Op::ListTags, None) => return json(StatusCode::OK, &w::ListTagsResponse { tags: ctl.list_tags(arn).await? }),
        (Op::ListTags, Some((mappings, uuid))) => {
            let tags = mappings.get(uuid?).await?.tags;
            return json(StatusCode::OK, &w::ListTagsResponse { tags });
        }
        _ => return unreachable_op(op),
    }
    empty(StatusCode::NO_CONTENT)
}

async fn event_source_mappings(op: Op, c: Ctx<'_>) -> R {
    let Some(mappings) = c.api.mappings.as_deref() else {
        return Err(ApiError::Unavailable("Event source mappings are not available on this Nimbus node.".into()));
    };
    let out = |m: &nimbus_core::mappings::EventSourceMapping| convert::mapping_out(m, mappings.mapping_arn(&m.uuid));
    match op {
        Op::CreateEventSourceMapping => {
            let req: w::EventSourceMappingRequest = c.input()?;
            let m = mappings.create(convert::mapping_in(req)).await?;
            json(StatusCode::ACCEPTED, &out(&m))
        }
        Op::GetEventSourceMapping => json(StatusCode::OK, &out(&mappings.get(c.arg(0)).await?)),
        Op::UpdateEventSourceMapping => {
            let req: w::EventSourceMappingRequest = c.input()?;
            let m = mappings.update(c.arg(0), convert::mapping_in(req)).await?;
            json(StatusCode::ACCEPTED, &out(&m))
        }
        Op::DeleteEventSourceMapping => json(StatusCode::ACCEPTED, &out(&mappings.delete(c.arg(0)).await?)),
        Op::ListEventSourceMappings => {
            let page = mappings.list(c.q("EventSourceArn"), c.q("FunctionName"), c.q("Marker"), c.max_items()?).await?;
            let event_source_mappings = page.items.iter().map(out).collect();
            json(
                StatusCode::OK,
                &w::ListEventSourceMappingsResponse { next_marker: page.next_marker, event_source_mappings },
            )
        }
        _ => unreachable_op(op),
    }
}

/// Get and Put RuntimeManagementConfig answer alike.
fn runtime_management(m: nimbus_core::function::RuntimeManagement, function_arn: String) -> w::RuntimeManagementConfig {
    w::RuntimeManagementConfig {
        update_runtime_on: m.update_runtime_on,
        function_arn,
        runtime_version_arn: m.runtime_version_arn,
    }
}

#[cfg(test)]
mod tests {
    use super::is_authority;

    #[test]
    fn a_host_is_a_host_and_a_port_only() {
        for ok in ["127.0.0.1:9070", "localhost", "node.example:80", "[::1]:9070"] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in ["h:1/2015-03-31/functions/x/configuration?a=", "h?a=b", "h#f", "user@h", "h 1", ""] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}
