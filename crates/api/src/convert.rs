//! Wire ↔ domain conversions. Formats of timestamps differ across the API:
//! strings with `+0000` on configurations, epoch seconds on event-invoke
//! configs, ISO-8601 with `Z` on function URLs.

use base64::Engine;
use chrono::{TimeZone, Utc};
use nimbus_control::{code_sha256, code_sha256_b64, EventInvokeChange, S3Code};
use nimbus_core::function::{
    Alias, CodeSigningConfig, ConfigPatch, Cors, EventInvokeConfig, FunctionConfig, ImageOverrides, LayerVersion,
    Lifecycle, UrlConfig, VpcConfig, LATEST,
};
use nimbus_core::{Account, Error};
use nimbus_wire as w;

use crate::UrlBase;

fn at(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `2020-04-10T19:06:32.563+0000`
pub fn config_time(ms: i64) -> String {
    at(ms).format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// `2019-11-21T19:32:12+0000`
pub fn provisioned_time(ms: i64) -> String {
    at(ms).format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

/// `2021-10-31T19:06:32.563Z`
pub fn url_time(ms: i64) -> String {
    at(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn decode_zip(b64: &str, field: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
        Error::InvalidRequestContent(format!("Could not parse request body into json: {field} is not valid base64."))
    })
}

/// The ARN a configuration is reported under: the qualifier the request
/// used, else the version for published ones, else unqualified.
pub fn function_arn(account: &Account, c: &FunctionConfig, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => account.qualified_arn(&c.name, q),
        None if c.version != LATEST => account.qualified_arn(&c.name, &c.version),
        None => account.function_arn(&c.name),
    }
}

pub fn configuration(account: &Account, c: &FunctionConfig, qualifier: Option<&str>) -> w::FunctionConfiguration {
    // AWS's wording: "being created" is also what an update in progress reports.
    let creating = || Some("The function is being created.".to_string());
    let (state, state_reason, state_reason_code, update, update_reason, update_reason_code) = match c.lifecycle {
        Lifecycle::Creating => ("Pending", creating(), Some("Creating".to_string()), None, None, None),
        Lifecycle::Updating => {
            ("Active", None, None, Some("InProgress".to_string()), creating(), Some("Creating".to_string()))
        }
        Lifecycle::Ready => ("Active", None, None, Some("Successful".to_string()), None, None),
    };
    w::FunctionConfiguration {
        function_name: c.name.clone(),
        function_arn: function_arn(account, c, qualifier),
        runtime: c.runtime.clone(),
        role: c.role.clone(),
        handler: c.handler.clone(),
        code_size: c.code.size,
        description: c.description.clone(),
        timeout: c.timeout,
        memory_size: c.memory_size,
        last_modified: config_time(c.last_modified_ms),
        code_sha256: code_sha256(c),
        version: c.version.clone(),
        // AWS leaves out an environment without variables.
        environment: c
            .environment
            .as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| w::Environment { variables: Some(v.clone()) }),
        dead_letter_config: c.dead_letter_target.as_ref().map(|t| w::DeadLetterConfig { target_arn: Some(t.clone()) }),
        kms_key_arn: c.kms_key_arn.clone(),
        tracing_config: w::TracingConfig { mode: Some(c.tracing_mode.clone()) },
        revision_id: c.revision_id.clone(),
        layers: (!c.layers.is_empty())
            .then(|| c.layers.iter().map(|l| w::Layer { arn: l.arn.clone(), code_size: l.code_size }).collect()),
        vpc_config: c.vpc.as_ref().map(|v| w::VpcConfigResponse {
            subnet_ids: v.subnet_ids.clone(),
            security_group_ids: v.security_group_ids.clone(),
            vpc_id: v.vpc_id(),
            ipv6_allowed_for_dual_stack: v.ipv6_allowed_for_dual_stack,
        }),
        state: Some(state.into()),
        state_reason,
        state_reason_code,
        last_update_status: update,
        last_update_status_reason: update_reason,
        last_update_status_reason_code: update_reason_code,
        package_type: c.package_type.clone(),
        architectures: c.architectures.clone(),
        ephemeral_storage: w::EphemeralStorage { size: i64::from(c.ephemeral_storage) },
        snap_start: w::SnapStartResponse { apply_on: "None".into(), optimization_status: "Off".into() },
        runtime_version_config: c
            .runtime_version_arn(&account.region)
            .map(|runtime_version_arn| w::RuntimeVersionConfig { runtime_version_arn }),
        image_config_response: c.image.as_ref().filter(|i| !i.overrides.is_empty()).map(|i| w::ImageConfigResponse {
            image_config: Some(w::ImageConfig {
                entry_point: i.overrides.entry_point.clone(),
                command: i.overrides.command.clone(),
                working_directory: i.overrides.working_directory.clone(),
            }),
        }),
        logging_config: {
            let (application_log_level, system_log_level) = c.logging.levels();
            w::LoggingConfig {
                log_format: Some(c.logging.log_format.clone()),
                application_log_level,
                system_log_level,
                log_group: Some(c.logging.log_group.clone()),
            }
        },
    }
}

/// A configuration as ListFunctions reports it: AWS leaves out the state
/// and runtime version fields there (GetFunction has them).
pub fn listed(c: w::FunctionConfiguration) -> w::FunctionConfiguration {
    w::FunctionConfiguration {
        state: None,
        state_reason: None,
        state_reason_code: None,
        last_update_status: None,
        last_update_status_reason: None,
        last_update_status_reason_code: None,
        runtime_version_config: None,
        ..c
    }
}

/// The domain patch of a request's configuration members.
pub fn patch(role: Option<String>, s: w::FunctionSettings) -> ConfigPatch {
    let logging = s.logging_config.unwrap_or_default();
    ConfigPatch {
        runtime: s.runtime,
        handler: s.handler,
        role,
        description: s.description,
        timeout: s.timeout,
        memory_size: s.memory_size,
        ephemeral_storage: s.ephemeral_storage.map(|e| e.size),
        // `Environment: {}` (no `Variables`) changes nothing, as on AWS; `{"Variables": {}}` clears.
        environment: s.environment.and_then(|e| e.variables),
        layers: s.layers,
        tracing_mode: s.tracing_config.and_then(|t| t.mode),
        log_format: logging.log_format,
        application_log_level: logging.application_log_level,
        system_log_level: logging.system_log_level,
        log_group: logging.log_group,
        dead_letter_target: s.dead_letter_config.map(|d| d.target_arn.unwrap_or_default()),
        kms_key_arn: s.kms_key_arn,
        vpc: s.vpc_config.map(|v| VpcConfig {
            subnet_ids: v.subnet_ids.unwrap_or_default(),
            security_group_ids: v.security_group_ids.unwrap_or_default(),
            ipv6_allowed_for_dual_stack: v.ipv6_allowed_for_dual_stack.unwrap_or(false),
        }),
        file_systems: s.file_system_configs.map(|l| l.into_iter().map(|f| f.arn.unwrap_or_default()).collect()),
        snap_start: s.snap_start.map(|s| s.apply_on.unwrap_or_else(|| "None".into())),
        image_config: s.image_config.map(|i| ImageOverrides {
            entry_point: i.entry_point,
            command: i.command,
            working_directory: i.working_directory,
        }),
    }
}

pub fn code_signing_config(arn: String, c: &CodeSigningConfig) -> w::CodeSigningConfig {
    w::CodeSigningConfig {
        code_signing_config_id: c.id.clone(),
        code_signing_config_arn: arn,
        description: c.description.clone(),
        allowed_publishers: w::AllowedPublishers {
            signing_profile_version_arns: Some(c.signing_profile_version_arns.clone()),
        },
        code_signing_policies: w::CodeSigningPolicies {
            untrusted_artifact_on_deployment: Some(c.untrusted_artifact_on_deployment.clone()),
        },
        last_modified: config_time(c.modified_ms),
    }
}

/// The object of the built-in store a request named as its code.
pub fn s3_code(bucket: &Option<String>, key: &Option<String>, version: &Option<String>) -> Option<S3Code> {
    (bucket.is_some() || key.is_some() || version.is_some()).then(|| S3Code {
        bucket: bucket.clone(),
        key: key.clone(),
        version: version.clone(),
    })
}

pub fn alias(account: &Account, function: &str, a: &Alias) -> w::AliasConfiguration {
    w::AliasConfiguration {
        alias_arn: account.qualified_arn(function, &a.name),
        name: a.name.clone(),
        function_version: a.function_version.clone(),
        description: a.description.clone(),
        routing_config: (!a.additional_weights.is_empty())
            .then(|| w::AliasRoutingConfiguration { additional_version_weights: Some(a.additional_weights.clone()) }),
        revision_id: a.revision_id.clone(),
    }
}

pub fn layer_version(account: &Account, lv: &LayerVersion, location: String) -> w::LayerVersionResponse {
    w::LayerVersionResponse {
        content: w::LayerVersionContentOutput {
            location,
            code_sha256: code_sha256_b64(&lv.code.sha256_hex),
            code_size: lv.code.size,
        },
        layer_arn: account.layer_arn(&lv.name),
        layer_version_arn: account.layer_version_arn(&lv.name, lv.version),
        description: lv.description.clone(),
        created_date: config_time(lv.created_ms),
        version: lv.version,
        compatible_runtimes: lv.compatible_runtimes.clone(),
        license_info: lv.license_info.clone(),
        compatible_architectures: lv.compatible_architectures.clone(),
    }
}

pub fn layer_list_item(account: &Account, lv: &LayerVersion) -> w::LayerVersionsListItem {
    w::LayerVersionsListItem {
        layer_version_arn: account.layer_version_arn(&lv.name, lv.version),
        version: lv.version,
        description: lv.description.clone(),
        created_date: config_time(lv.created_ms),
        compatible_runtimes: lv.compatible_runtimes.clone(),
        license_info: lv.license_info.clone(),
        compatible_architectures: lv.compatible_architectures.clone(),
    }
}

pub fn cors_in(c: w::Cors) -> Cors {
    Cors {
        allow_credentials: c.allow_credentials,
        allow_headers: c.allow_headers,
        allow_methods: c.allow_methods,
        allow_origins: c.allow_origins,
        expose_headers: c.expose_headers,
        max_age: c.max_age,
    }
}

fn cors_out(c: &Cors) -> w::Cors {
    w::Cors {
        allow_credentials: c.allow_credentials,
        allow_headers: c.allow_headers.clone(),
        allow_methods: c.allow_methods.clone(),
        allow_origins: c.allow_origins.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age,
    }
}

/// `key` is the qualifier the config is stored under (`""` = unqualified).
pub fn url_config(account: &Account, function: &str, key: &str, u: &UrlConfig, base: &UrlBase) -> w::FunctionUrlConfig {
    w::FunctionUrlConfig {
        function_url: base.url(&u.url_id, &account.region),
        function_arn: if key.is_empty() {
            account.function_arn(function)
        } else {
            account.qualified_arn(function, key)
        },
        auth_type: u.auth_type.clone(),
        cors: u.cors.as_ref().map(cors_out),
        creation_time: url_time(u.created_ms),
        last_modified_time: url_time(u.modified_ms),
        invoke_mode: u.invoke_mode.clone(),
    }
}

pub fn event_invoke_in(r: w::PutFunctionEventInvokeConfigRequest) -> Result<EventInvokeChange, Error> {
    let nonneg = |v: Option<i64>, field: &str| -> Result<Option<u32>, Error> {
        v.map(|n| nimbus_core::service_rules::at_most(field, n, i64::from(u32::MAX))).transpose()
    };
    let destination_config = r.destination_config.is_some();
    let dest = r.destination_config.unwrap_or_default();
    let (on_success_given, on_failure_given) = (dest.on_success.is_some(), dest.on_failure.is_some());
    Ok(EventInvokeChange {
        config: EventInvokeConfig {
            maximum_retry_attempts: nonneg(r.maximum_retry_attempts, "MaximumRetryAttempts")?,
            maximum_event_age: nonneg(r.maximum_event_age_in_seconds, "MaximumEventAgeInSeconds")?,
            on_success: dest.on_success.and_then(|d| d.destination),
            on_failure: dest.on_failure.and_then(|d| d.destination),
            modified_ms: 0,
        },
        destination_config,
        on_success_given,
        on_failure_given,
    })
}

pub fn event_invoke_out(
    account: &Account,
    function: &str,
    key: &str,
    c: &EventInvokeConfig,
) -> w::FunctionEventInvokeConfig {
    let dest = |d: &Option<String>| {
        d.as_ref().map(|a| w::Destination { destination: Some(a.clone()) }).or(Some(w::Destination::default()))
    };
    w::FunctionEventInvokeConfig {
        last_modified: c.modified_ms as f64 / 1000.0,
        function_arn: account.qualified_arn(function, key),
        maximum_retry_attempts: c.maximum_retry_attempts,
        maximum_event_age_in_seconds: c.maximum_event_age,
        destination_config: w::DestinationConfig { on_success: dest(&c.on_success), on_failure: dest(&c.on_failure) },
    }
}

/// A Create or Update request as the mapping rules take it.
pub fn mapping_in(req: w::EventSourceMappingRequest) -> nimbus_triggers::mappings::MappingInput {
    let unsupported = req.other_source_member();
    nimbus_triggers::mappings::MappingInput {
        function_name: req.function_name,
        event_source_arn: req.event_source_arn,
        enabled: req.enabled,
        batch_size: req.batch_size,
        maximum_batching_window_s: req.maximum_batching_window_in_seconds,
        filters: req
            .filter_criteria
            .map(|c| c.filters.unwrap_or_default().into_iter().map(|f| f.pattern.unwrap_or_default()).collect()),
        function_response_types: req.function_response_types,
        maximum_concurrency: req.scaling_config.map(|s| s.maximum_concurrency),
        stream_setting: req.starting_position.is_some() || req.starting_position_timestamp.is_some(),
        unsupported,
        tags: req.tags,
    }
}

/// AWS's EventSourceMappingConfiguration; FilterCriteria and ScalingConfig
/// only when set, as AWS leaves them out.
pub fn mapping_out(m: &nimbus_core::mappings::EventSourceMapping, arn: String) -> w::EventSourceMappingConfiguration {
    w::EventSourceMappingConfiguration {
        uuid: m.uuid.clone(),
        batch_size: m.batch_size,
        maximum_batching_window_in_seconds: m.maximum_batching_window_s,
        event_source_arn: m.event_source_arn.clone(),
        filter_criteria: (!m.filters.is_empty()).then(|| w::FilterCriteria {
            filters: Some(m.filters.iter().map(|p| w::Filter { pattern: Some(p.clone()) }).collect()),
        }),
        function_arn: m.function_arn.clone(),
        last_modified: m.last_modified_ms as f64 / 1000.0,
        state: m.state.as_str().into(),
        state_transition_reason: "USER_INITIATED".into(),
        function_response_types: m.function_response_types.clone(),
        scaling_config: m.maximum_concurrency.map(|n| w::ScalingConfig { maximum_concurrency: Some(n) }),
        event_source_mapping_arn: arn,
    }
}

/// A resource policy or one of its statements as AWS writes it: known keys
/// in AWS's order (`Version`, `Id`, `Statement`; `Sid`, `Effect`,
/// `Principal`, `Action`, `Resource`, `Condition`), others after in name
/// order. Stored documents keep keys sorted, as `serde_json` does.
pub fn policy_json(v: &serde_json::Value) -> String {
    const ORDER: [&str; 9] =
        ["Version", "Id", "Statement", "Sid", "Effect", "Principal", "Action", "Resource", "Condition"];
    match v {
        serde_json::Value::Object(map) => {
            let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len());
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| rank(k));
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", serde_json::Value::from(k.as_str()), policy_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => format!("[{}]", items.iter().map(policy_json).collect::<Vec<_>>().join(",")),
        scalar => scalar.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_written_in_aws_order() {
        let statement = serde_json::json!({"Action": "lambda:InvokeFunction", "Condition": {"ArnLike": {"AWS:SourceArn": "a"}},
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Resource": "r", "Sid": "s"});
        let doc = serde_json::json!({"Id": "default", "Statement": [statement], "Version": "2012-10-17"});
        assert_eq!(
            policy_json(&doc),
            r#"{"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"s","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"r","Condition":{"ArnLike":{"AWS:SourceArn":"a"}}}]}"#
        );
        let back: serde_json::Value = serde_json::from_str(&policy_json(&doc)).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn timestamps_use_each_shape_format() {
        let ms = 1_586_545_592_563; // 2020-04-10T19:06:32.563Z
        assert_eq!(config_time(ms), "2020-04-10T19:06:32.563+0000");
        assert_eq!(provisioned_time(ms), "2020-04-10T19:06:32+0000");
        assert_eq!(url_time(ms), "2020-04-10T19:06:32.563Z");
    }
}
