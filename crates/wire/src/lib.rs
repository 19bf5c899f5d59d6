//! Serde mirrors of the AWS Lambda 2015-03-31 JSON wire format, field for
//! field. No logic lives here: `nimbus-api` converts these to and from the
//! domain types of `nimbus-core`.
//!
//! Request types accept unknown fields (newer SDKs send members we do not
//! know yet) and make every member optional, so that a missing required
//! member gets AWS's validation error rather than a parse error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type Map = BTreeMap<String, String>;

macro_rules! wire {
    ($(#[$m:meta])* $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name { $($body)* }
    };
}

// ---------- shared shapes ----------

wire!(Environment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Map>,
});
wire!(TracingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
});
wire!(DeadLetterConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_arn: Option<String>,
});
wire!(EphemeralStorage {
    pub size: i64,
});
wire!(LoggingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
});
wire!(Cors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
});
wire!(AliasRoutingConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
});
wire!(Destination {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
});
wire!(DestinationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Destination>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Destination>,
});

wire!(VpcConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_group_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_allowed_for_dual_stack: Option<bool>,
});
wire!(FileSystemConfig {
    pub arn: Option<String>,
    pub local_mount_path: Option<String>,
});
wire!(SnapStart {
    pub apply_on: Option<String>,
});
wire!(AllowedPublishers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_profile_version_arns: Option<Vec<String>>,
});
wire!(CodeSigningPolicies {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted_artifact_on_deployment: Option<String>,
});

wire!(
    /// A container-image function's overrides of its image's config.
    ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
});
wire!(ImageConfigResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
});

// ---------- requests ----------

wire!(FunctionCode {
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
});

wire!(
    /// The configuration members CreateFunction and
    /// UpdateFunctionConfiguration share.
    FunctionSettings {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub dead_letter_config: Option<DeadLetterConfig>,
    pub environment: Option<Environment>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub tracing_config: Option<TracingConfig>,
    pub layers: Option<Vec<String>>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub logging_config: Option<LoggingConfig>,
    pub vpc_config: Option<VpcConfig>,
    pub file_system_configs: Option<Vec<FileSystemConfig>>,
    pub snap_start: Option<SnapStart>,
    pub image_config: Option<ImageConfig>,
});

wire!(CreateFunctionRequest {
    pub function_name: Option<String>,
    pub role: Option<String>,
    pub code: Option<FunctionCode>,
    pub publish: Option<bool>,
    pub package_type: Option<String>,
    pub tags: Option<Map>,
    pub architectures: Option<Vec<String>>,
    pub code_signing_config_arn: Option<String>,
    #[serde(flatten)]
    pub settings: FunctionSettings,
});

wire!(UpdateFunctionCodeRequest {
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
});

wire!(UpdateFunctionConfigurationRequest {
    pub role: Option<String>,
    pub revision_id: Option<String>,
    #[serde(flatten)]
    pub settings: FunctionSettings,
});

wire!(PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
});

wire!(CreateAliasRequest {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<AliasRoutingConfiguration>,
});

wire!(UpdateAliasRequest {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: Option<String>,
});

wire!(PutFunctionConcurrencyRequest {
    pub reserved_concurrent_executions: Option<i64>,
});

wire!(PutProvisionedConcurrencyConfigRequest {
    pub provisioned_concurrent_executions: Option<i64>,
});

wire!(TagResourceRequest {
    pub tags: Option<Map>,
});

wire!(LayerVersionContentInput {
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub s3_object_version: Option<String>,
    pub zip_file: Option<String>,
});

wire!(PublishLayerVersionRequest {
    pub description: Option<String>,
    pub content: Option<LayerVersionContentInput>,
    pub compatible_runtimes: Option<Vec<String>>,
    pub license_info: Option<String>,
    pub compatible_architectures: Option<Vec<String>>,
});

wire!(FunctionUrlConfigRequest {
    pub auth_type: Option<String>,
    pub cors: Option<Cors>,
    pub invoke_mode: Option<String>,
});

wire!(PutFunctionEventInvokeConfigRequest {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: Option<DestinationConfig>,
});

wire!(AddPermissionRequest {
    pub statement_id: Option<String>,
    pub action: Option<String>,
    pub principal: Option<String>,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    pub event_source_token: Option<String>,
    pub revision_id: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    pub principal_org_id: Option<String>,
    pub function_url_auth_type: Option<String>,
    /// Newer than the vendored model: grants `lambda:InvokeFunction` only through a function URL.
    pub invoked_via_function_url: Option<bool>,
});

wire!(CodeSigningConfigRequest {
    pub description: Option<String>,
    pub allowed_publishers: Option<AllowedPublishers>,
    pub code_signing_policies: Option<CodeSigningPolicies>,
});

wire!(PutFunctionCodeSigningConfigRequest {
    pub code_signing_config_arn: Option<String>,
});

wire!(FunctionRecursionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive_loop: Option<String>,
});

wire!(PutRuntimeManagementConfigRequest {
    pub update_runtime_on: Option<String>,
    pub runtime_version_arn: Option<String>,
});

wire!(AddLayerVersionPermissionRequest {
    pub statement_id: Option<String>,
    pub action: Option<String>,
    pub principal: Option<String>,
    pub organization_id: Option<String>,
});

// ---------- responses ----------

wire!(Layer {
    pub arn: String,
    pub code_size: u64,
});

wire!(SnapStartResponse {
    pub apply_on: String,
    pub optimization_status: String,
});

wire!(VpcConfigResponse {
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub vpc_id: String,
    pub ipv6_allowed_for_dual_stack: bool,
});

wire!(RuntimeVersionConfig {
    pub runtime_version_arn: String,
});

wire!(FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_config: Option<DeadLetterConfig>,
    #[serde(rename = "KMSKeyArn", skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    pub tracing_config: TracingConfig,
    pub revision_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Layer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<VpcConfigResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason_code: Option<String>,
    pub package_type: String,
    pub architectures: Vec<String>,
    pub ephemeral_storage: EphemeralStorage,
    pub snap_start: SnapStartResponse,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_version_config: Option<RuntimeVersionConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config_response: Option<ImageConfigResponse>,
    pub logging_config: LoggingConfig,
});

wire!(FunctionCodeLocation {
    pub repository_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_image_uri: Option<String>,
});

wire!(Concurrency {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_concurrent_executions: Option<u32>,
});

wire!(GetFunctionResponse {
    pub configuration: FunctionConfiguration,
    pub code: FunctionCodeLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
});

wire!(ListFunctionsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub functions: Vec<FunctionConfiguration>,
});

wire!(ListVersionsByFunctionResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub versions: Vec<FunctionConfiguration>,
});

wire!(AliasConfiguration {
    pub alias_arn: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: String,
});

wire!(ListAliasesResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub aliases: Vec<AliasConfiguration>,
});

wire!(ProvisionedConcurrencyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    pub requested_provisioned_concurrent_executions: u32,
    pub allocated_provisioned_concurrent_executions: u32,
    pub available_provisioned_concurrent_executions: u32,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub last_modified: String,
});

wire!(ListProvisionedConcurrencyConfigsResponse {
    pub provisioned_concurrency_configs: Vec<ProvisionedConcurrencyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
});

wire!(ListTagsResponse {
    pub tags: Map,
});

wire!(LayerVersionContentOutput {
    pub location: String,
    pub code_sha256: String,
    pub code_size: u64,
});

wire!(LayerVersionResponse {
    pub content: LayerVersionContentOutput,
    pub layer_arn: String,
    pub layer_version_arn: String,
    pub description: String,
    pub created_date: String,
    pub version: u64,
    pub compatible_runtimes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_info: Option<String>,
    pub compatible_architectures: Vec<String>,
});

wire!(LayerVersionsListItem {
    pub layer_version_arn: String,
    pub version: u64,
    pub description: String,
    pub created_date: String,
    pub compatible_runtimes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_info: Option<String>,
    pub compatible_architectures: Vec<String>,
});

wire!(LayersListItem {
    pub layer_name: String,
    pub layer_arn: String,
    pub latest_matching_version: LayerVersionsListItem,
});

wire!(ListLayersResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub layers: Vec<LayersListItem>,
});

wire!(ListLayerVersionsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub layer_versions: Vec<LayerVersionsListItem>,
});

wire!(FunctionUrlConfig {
    pub function_url: String,
    pub function_arn: String,
    pub auth_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    pub creation_time: String,
    pub last_modified_time: String,
    pub invoke_mode: String,
});

wire!(ListFunctionUrlConfigsResponse {
    pub function_url_configs: Vec<FunctionUrlConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
});

wire!(FunctionEventInvokeConfig {
    pub last_modified: f64,
    pub function_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_retry_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_event_age_in_seconds: Option<u32>,
    pub destination_config: DestinationConfig,
});

wire!(ListFunctionEventInvokeConfigsResponse {
    pub function_event_invoke_configs: Vec<FunctionEventInvokeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
});

wire!(AddPermissionResponse {
    pub statement: String,
});

wire!(GetPolicyResponse {
    pub policy: String,
    pub revision_id: String,
});

wire!(CodeSigningConfig {
    pub code_signing_config_id: String,
    pub code_signing_config_arn: String,
    pub description: String,
    pub allowed_publishers: AllowedPublishers,
    pub code_signing_policies: CodeSigningPolicies,
    pub last_modified: String,
});

wire!(CodeSigningConfigResponse {
    pub code_signing_config: CodeSigningConfig,
});

wire!(ListCodeSigningConfigsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub code_signing_configs: Vec<CodeSigningConfig>,
});

wire!(ListFunctionsByCodeSigningConfigResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub function_arns: Vec<String>,
});

wire!(FunctionCodeSigningConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_signing_config_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_name: Option<String>,
});

wire!(RuntimeManagementConfig {
    pub update_runtime_on: String,
    pub function_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_version_arn: Option<String>,
});

wire!(LayerVersionPolicy {
    pub policy: String,
    pub revision_id: String,
});

wire!(AddLayerVersionPermissionResponse {
    pub statement: String,
    pub revision_id: String,
});

wire!(AccountLimit {
    pub total_code_size: u64,
    pub code_size_unzipped: u64,
    pub code_size_zipped: u64,
    pub concurrent_executions: u32,
    pub unreserved_concurrent_executions: u32,
});

wire!(AccountUsage {
    pub total_code_size: u64,
    pub function_count: u64,
});

wire!(GetAccountSettingsResponse {
    pub account_limit: AccountLimit,
    pub account_usage: AccountUsage,
});

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "message", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "Message", skip_serializing_if = "Option::is_none")]
    pub message_upper: Option<String>,
    /// `TooManyRequestsException` only: AWS's `ThrottleReason`.
    #[serde(rename = "Reason", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------- event source mappings ----------

wire!(Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
});
wire!(FilterCriteria {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<Filter>>,
});
wire!(ScalingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_concurrency: Option<u32>,
});

wire!(
    /// CreateEventSourceMapping and UpdateEventSourceMapping (whose UUID is in the path).
    EventSourceMappingRequest {
    pub event_source_arn: Option<String>,
    pub function_name: Option<String>,
    pub enabled: Option<bool>,
    pub batch_size: Option<u32>,
    pub maximum_batching_window_in_seconds: Option<u32>,
    pub filter_criteria: Option<FilterCriteria>,
    pub function_response_types: Option<Vec<String>>,
    pub scaling_config: Option<ScalingConfig>,
    /// Stream sources only; a number or a date string on the wire.
    pub starting_position: Option<String>,
    pub starting_position_timestamp: Option<serde_json::Value>,
    /// CreateEventSourceMapping only.
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// Every other member given, as given (see [`OTHER_SOURCE_MEMBERS`]).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
});

impl EventSourceMappingRequest {
    /// The first member given that applies to other sources than queues.
    pub fn other_source_member(&self) -> Option<&'static str> {
        OTHER_SOURCE_MEMBERS.into_iter().find(|name| self.other.get(*name).is_some_and(|v| !v.is_null()))
    }
}

/// Members of CreateEventSourceMapping and UpdateEventSourceMapping that
/// apply to streams, Kafka, MQ or DocumentDB only, which a queue mapping
/// refuses by name.
pub const OTHER_SOURCE_MEMBERS: [&str; 13] = [
    "ParallelizationFactor",
    "DestinationConfig",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "Topics",
    "Queues",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig",
    "DocumentDBEventSourceConfig",
];

wire!(EventSourceMappingConfiguration {
    #[serde(rename = "UUID")]
    pub uuid: String,
    pub batch_size: u32,
    pub maximum_batching_window_in_seconds: u32,
    pub event_source_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<FilterCriteria>,
    pub function_arn: String,
    /// Epoch seconds.
    pub last_modified: f64,
    pub state: String,
    pub state_transition_reason: String,
    pub function_response_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_config: Option<ScalingConfig>,
    pub event_source_mapping_arn: String,
});

wire!(ListEventSourceMappingsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub event_source_mappings: Vec<EventSourceMappingConfiguration>,
});
