//! A function and everything that hangs off it: its `$LATEST` configuration,
//! published versions, aliases, resource policy, tags, concurrency and the
//! side configurations (URL, event-invoke, provisioned concurrency); and
//! layer versions. These are the documents the store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::*;
use crate::runtime::Catalog;
use crate::service_rules::at_most;

pub const LATEST: &str = "$LATEST";

/// Stored code: the blob's address and its sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub sha256_hex: String,
    pub size: u64,
    pub unzipped_size: u64,
}

/// A layer version a function uses, with the sizes that count against the
/// function's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub arn: String,
    pub sha256_hex: String,
    pub code_size: u64,
    pub unzipped_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    pub log_format: String,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: String,
}

impl Logging {
    /// The levels in force, application's and system's: under `JSON`, `INFO`
    /// where none is set (AWS's default, which configurations stored before
    /// Nimbus wrote it lack); under `Text`, none.
    pub fn levels(&self) -> (Option<String>, Option<String>) {
        let default = (self.log_format == "JSON").then(|| "INFO".to_string());
        (self.application_log_level.clone().or_else(|| default.clone()), self.system_log_level.clone().or(default))
    }
}

/// Where a configuration is in its lifecycle: AWS's `State` and
/// `LastUpdateStatus`. A create or update is answered at once and the
/// configuration becomes `Ready` when its code is prepared to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Lifecycle {
    /// Created, not prepared yet: `State: Pending` (AWS refuses invokes and
    /// updates meanwhile).
    Creating,
    /// Updated, not prepared yet: `LastUpdateStatus: InProgress` (AWS
    /// refuses further updates and publishing meanwhile).
    Updating,
    /// `State: Active`, `LastUpdateStatus: Successful`. Documents stored
    /// before lifecycles existed read as this.
    #[default]
    Ready,
}

/// A function's network attachment as configured (`VpcConfig`). Nimbus keeps
/// and reports it; environments still get only their loopback network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VpcConfig {
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub ipv6_allowed_for_dual_stack: bool,
}

impl VpcConfig {
    /// The `VpcId` reported with the configuration. AWS reports the VPC of
    /// the subnets; Nimbus has no EC2 to ask, so it names the subnet set
    /// stably (`""` with no subnets, as AWS).
    pub fn vpc_id(&self) -> String {
        use sha2::Digest;
        if self.subnet_ids.is_empty() {
            return String::new();
        }
        let mut subnets = self.subnet_ids.clone();
        subnets.sort();
        let digest = sha2::Sha256::digest(subnets.join(",").as_bytes());
        format!("vpc-{}", &hex::encode(digest)[..17])
    }
}

/// When a configuration's runtime is updated (`PutRuntimeManagementConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeManagement {
    /// `Auto`, `FunctionUpdate` or `Manual`.
    pub update_runtime_on: String,
    /// The pinned runtime version, with `Manual` only.
    pub runtime_version_arn: Option<String>,
}

/// `ImageConfig`: what a function overrides of its image's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageOverrides {
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub working_directory: Option<String>,
}

impl ImageOverrides {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// One layer of a function's image, as the image store unpacks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayer {
    pub digest: String,
    pub media_type: String,
    /// The blob in the registry's content-addressed store.
    pub path: String,
    /// The sha256 of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: String,
}

/// A container-image function's image: the tag resolved to a manifest
/// digest when the code was deployed (later pushes to the tag change
/// nothing until the next UpdateFunctionCode, as on AWS), with what the
/// image's config says about running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FunctionImage {
    /// `Code.ImageUri` as given.
    pub uri: String,
    /// `<registry>/<repository>@sha256:…`.
    pub resolved_uri: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    pub overrides: ImageOverrides,
    /// The image config's `Entrypoint`, `Cmd`, `WorkingDir` and `Env` (`K=V`).
    pub entry_point: Vec<String>,
    pub command: Vec<String>,
    pub working_directory: String,
    pub env: Vec<String>,
    /// Bottom first.
    pub layers: Vec<ImageLayer>,
}

impl FunctionImage {
    /// What runs: ENTRYPOINT then CMD, each replaced by its ImageConfig
    /// override when there is one.
    pub fn argv(&self) -> Vec<String> {
        let o = &self.overrides;
        let entry = o.entry_point.as_ref().unwrap_or(&self.entry_point);
        let command = o.command.as_ref().unwrap_or(&self.command);
        entry.iter().chain(command).cloned().collect()
    }

    /// Where it runs: the override, else the image's `WORKDIR`, else `/`.
    pub fn working_directory(&self) -> String {
        let dir = self.overrides.working_directory.clone().unwrap_or_else(|| self.working_directory.clone());
        if dir.is_empty() {
            "/".into()
        } else {
            dir
        }
    }
}

/// One configuration of a function: `$LATEST` or a published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: String,
    /// `$LATEST` or the version number.
    pub version: String,
    pub description: String,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub ephemeral_storage: u32,
    pub environment: Option<BTreeMap<String, String>>,
    pub layers: Vec<LayerRef>,
    pub architectures: Vec<String>,
    pub package_type: String,
    pub tracing_mode: String,
    pub logging: Logging,
    pub dead_letter_target: Option<String>,
    pub kms_key_arn: Option<String>,
    pub code: Code,
    pub last_modified_ms: i64,
    pub revision_id: String,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub vpc: Option<VpcConfig>,
    /// `None` is AWS's default, `Auto`.
    #[serde(default)]
    pub runtime_management: Option<RuntimeManagement>,
    /// `PackageType: Image`: the image, pinned to a digest at deploy time.
    #[serde(default)]
    pub image: Option<FunctionImage>,
}

impl FunctionConfig {
    /// The ARN of the runtime version this configuration runs (`None` for
    /// an image, which brings its own): the one pinned under `Manual`, else
    /// the node's version of its runtime.
    pub fn runtime_version_arn(&self, region: &str) -> Option<String> {
        let runtime = self.runtime.as_deref().filter(|_| self.package_type == "Zip")?;
        let pinned = self.runtime_management.as_ref().and_then(|m| m.runtime_version_arn.clone());
        Some(pinned.unwrap_or_else(|| crate::runtime::version_arn(region, runtime)))
    }

    /// A new `$LATEST` with AWS's defaults, before a patch is applied.
    pub fn new(name: &str, role: String, code: Code, now_ms: i64, revision_id: String) -> Self {
        Self {
            name: name.to_string(),
            version: LATEST.to_string(),
            description: String::new(),
            runtime: None,
            handler: None,
            role,
            timeout: TIMEOUT_DEFAULT,
            memory_size: MEMORY_DEFAULT,
            ephemeral_storage: EPHEMERAL_DEFAULT,
            environment: None,
            layers: Vec::new(),
            architectures: vec!["x86_64".to_string()],
            package_type: "Zip".to_string(),
            tracing_mode: "PassThrough".to_string(),
            logging: Logging {
                log_format: "Text".to_string(),
                application_log_level: None,
                system_log_level: None,
                log_group: format!("/aws/lambda/{name}"),
            },
            dead_letter_target: None,
            kms_key_arn: None,
            code,
            last_modified_ms: now_ms,
            revision_id,
            lifecycle: Lifecycle::Creating,
            vpc: None,
            runtime_management: None,
            image: None,
        }
    }

    /// Whether publishing `self` would produce a version equal to `published`
    /// (AWS then returns the existing version instead of a new one).
    pub fn same_content(&self, published: &FunctionConfig) -> bool {
        let strip = |c: &FunctionConfig| FunctionConfig {
            version: String::new(),
            description: String::new(),
            last_modified_ms: 0,
            revision_id: String::new(),
            lifecycle: Lifecycle::Ready,
            ..c.clone()
        };
        strip(self) == strip(published)
    }

    /// Unzipped bytes of code plus layers, which must stay within 250 MB.
    pub fn unzipped_total(&self) -> u64 {
        self.code.unzipped_size + self.layers.iter().map(|l| l.unzipped_size).sum::<u64>()
    }

    pub fn check_package(&self) -> Result<()> {
        if self.package_type == "Image" {
            if self.runtime.is_some() || self.handler.is_some() || !self.layers.is_empty() {
                return Err(Error::invalid(
                    "Runtime, Handler and Layers are not supported for functions with package type Image.",
                ));
            }
            if self.architectures.iter().any(|a| a != "x86_64") {
                return Err(Error::invalid("Nimbus runs images for the x86_64 architecture only."));
            }
        }
        if self.package_type == "Zip" && (self.runtime.is_none() || self.handler.is_none()) {
            return Err(Error::invalid(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
            ));
        }
        Ok(())
    }
}

/// Changes to a configuration, as CreateFunction and
/// UpdateFunctionConfiguration carry them. `None` leaves a field alone.
/// Numbers are wide so that negative or huge values get AWS's errors, not a
/// parse error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigPatch {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub ephemeral_storage: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    /// Layer version ARNs; the caller resolves them (they need the store).
    pub layers: Option<Vec<String>>,
    pub tracing_mode: Option<String>,
    pub log_format: Option<String>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
    pub dead_letter_target: Option<String>,
    pub kms_key_arn: Option<String>,
    pub vpc: Option<VpcConfig>,
    /// The `Arn` of each `FileSystemConfigs` entry.
    pub file_systems: Option<Vec<String>>,
    /// `SnapStart.ApplyOn`.
    pub snap_start: Option<String>,
    /// `ImageConfig`, for a container-image function.
    pub image_config: Option<ImageOverrides>,
}

impl ConfigPatch {
    /// Applies every field present, checking what needs the node (the
    /// runtime catalog) or several fields together. The request has passed
    /// the model and `service_rules` already. Layers are left to the caller.
    /// On error `cfg` may be partly changed: apply to a copy.
    pub fn apply(&self, cfg: &mut FunctionConfig, catalog: &Catalog) -> Result<()> {
        if let Some(overrides) = &self.image_config {
            let image = cfg
                .image
                .as_mut()
                .ok_or_else(|| Error::invalid("ImageConfig is not supported for functions with package type Zip."))?;
            image.overrides = overrides.clone();
        }
        if let Some(r) = &self.runtime {
            catalog.check(r)?;
            cfg.runtime = Some(r.clone());
        }
        if let Some(h) = &self.handler {
            cfg.handler = Some(h.clone());
        }
        if let Some(r) = &self.role {
            cfg.role = r.clone();
        }
        if let Some(d) = &self.description {
            cfg.description = d.clone();
        }
        if let Some(t) = self.timeout {
            cfg.timeout = at_most("Timeout", t, TIMEOUT_MAX)?;
        }
        if let Some(m) = self.memory_size {
            cfg.memory_size = at_most("MemorySize", m, MEMORY_MAX)?;
        }
        if let Some(e) = self.ephemeral_storage {
            cfg.ephemeral_storage = at_most("EphemeralStorage.Size", e, EPHEMERAL_MAX)?;
        }
        if let Some(env) = &self.environment {
            cfg.environment = Some(env.clone());
        }
        if let Some(m) = &self.tracing_mode {
            cfg.tracing_mode = m.clone();
        }
        if let Some(f) = &self.log_format {
            cfg.logging.log_format = f.clone();
        }
        if let Some(l) = &self.application_log_level {
            cfg.logging.application_log_level = Some(l.clone());
        }
        if let Some(l) = &self.system_log_level {
            cfg.logging.system_log_level = Some(l.clone());
        }
        if cfg.logging.log_format == "JSON" {
            // AWS reports its defaults for the JSON format.
            cfg.logging.application_log_level.get_or_insert_with(|| "INFO".into());
            cfg.logging.system_log_level.get_or_insert_with(|| "INFO".into());
        } else if self.application_log_level.is_some() || self.system_log_level.is_some() {
            return Err(Error::invalid(
                "ApplicationLogLevel and SystemLogLevel can only be set when LogFormat is JSON.",
            ));
        } else {
            // Back to text: the levels were the JSON format's.
            cfg.logging.application_log_level = None;
            cfg.logging.system_log_level = None;
        }
        if let Some(g) = &self.log_group {
            cfg.logging.log_group = g.clone();
        }
        if let Some(t) = &self.dead_letter_target {
            cfg.dead_letter_target = (!t.is_empty()).then(|| t.clone());
        }
        if let Some(k) = self.kms_key_arn.as_deref().filter(|k| !k.is_empty()) {
            // Nimbus has no KMS to grant it access to a customer key; AWS
            // answers this when it cannot create the grant.
            return Err(Error::invalid(format!(
                "Lambda was unable to configure access to your environment variables because the KMS key is invalid for CreateGrant. Please check your KMS key settings. KMS Exception: NotFoundException KMS Message: Key '{k}' does not exist (this Nimbus node has no KMS)."
            )));
        }
        if self.kms_key_arn.is_some() {
            cfg.kms_key_arn = None;
        }
        if let Some(v) = &self.vpc {
            check_vpc(v)?;
            cfg.vpc = Some(v.clone());
        }
        if let Some(fs) = self.file_systems.as_ref().and_then(|f| f.first()) {
            // No EFS to mount: refused up front rather than at every invoke
            // (AWS's EFSMountConnectivityException).
            return Err(Error::invalid(format!(
                "FileSystemConfigs cannot be honoured: this Nimbus node cannot mount Amazon EFS file systems ({fs})."
            )));
        }
        // The model checks ApplyOn's values at the front door.
        if let Some(apply_on) = &self.snap_start {
            if apply_on == "PublishedVersions" {
                return Err(Error::invalid(format!(
                    "{} is not supported for SnapStart enabled functions on this Nimbus node.",
                    cfg.runtime.as_deref().unwrap_or("This runtime")
                )));
            }
        }
        Ok(())
    }
}

/// AWS's rules for `VpcConfig` beyond the model's: subnets and security
/// groups come together, and dual-stack needs subnets.
/// The VPC rules beyond the model (its counts and id patterns are checked at the front door).
fn check_vpc(v: &VpcConfig) -> Result<()> {
    if v.subnet_ids.is_empty() != v.security_group_ids.is_empty() {
        return Err(Error::invalid("SubnetIds and SecurityGroupIds must coexist or be both empty list."));
    }
    if v.ipv6_allowed_for_dual_stack && v.subnet_ids.is_empty() {
        return Err(Error::invalid("Ipv6AllowedForDualStack is only supported for functions connected to a VPC."));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// Extra version → share of traffic (0.0–1.0).
    pub additional_weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

/// One statement of a resource policy, kept as the JSON AWS returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sid: String,
    /// The qualifier the statement was added for; `None` is the function.
    pub qualifier: Option<String>,
    pub json: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cors {
    pub allow_credentials: Option<bool>,
    pub allow_headers: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_origins: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    pub url_id: String,
    pub auth_type: String,
    pub cors: Option<Cors>,
    pub invoke_mode: String,
    pub created_ms: i64,
    pub modified_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub modified_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedConfig {
    pub requested: u32,
    pub modified_ms: i64,
}

/// A function and all that belongs to it except its published versions,
/// which are kept as separate documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub latest: FunctionConfig,
    pub tags: BTreeMap<String, String>,
    pub reserved_concurrency: Option<u32>,
    pub policy: Vec<Statement>,
    pub aliases: BTreeMap<String, Alias>,
    /// Keyed by qualifier; `""` is the unqualified function.
    pub url_configs: BTreeMap<String, UrlConfig>,
    /// Keyed by qualifier (`$LATEST`, a version or an alias).
    pub event_invoke_configs: BTreeMap<String, EventInvokeConfig>,
    /// Keyed by qualifier (a version or an alias).
    pub provisioned: BTreeMap<String, ProvisionedConfig>,
    /// The highest version number ever published; numbers are never reused.
    pub last_version: u64,
    /// The code signing configuration deployments are checked against.
    #[serde(default)]
    pub code_signing_config_arn: Option<String>,
    /// `Allow` or `Terminate`; `None` is AWS's default, `Terminate`.
    #[serde(default)]
    pub recursive_loop: Option<String>,
}

impl Function {
    pub fn new(latest: FunctionConfig, tags: BTreeMap<String, String>) -> Self {
        Self {
            latest,
            tags,
            reserved_concurrency: None,
            policy: Vec::new(),
            aliases: BTreeMap::new(),
            url_configs: BTreeMap::new(),
            event_invoke_configs: BTreeMap::new(),
            provisioned: BTreeMap::new(),
            last_version: 0,
            code_signing_config_arn: None,
            recursive_loop: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.latest.name
    }
}

/// A published layer version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    pub code: Code,
    pub created_ms: i64,
    /// Who may use the version (`AddLayerVersionPermission`), in order.
    #[serde(default)]
    pub permissions: Vec<LayerPermission>,
    /// Changes with every change of `permissions`.
    #[serde(default)]
    pub policy_revision_id: Option<String>,
}

/// One statement of a layer version's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPermission {
    pub sid: String,
    pub action: String,
    pub principal: String,
    pub organization_id: Option<String>,
}

/// An account's code signing configuration: which signing profiles are
/// trusted, and what happens to a deployment none of them signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSigningConfig {
    /// `csc-` and 17 characters.
    pub id: String,
    pub description: String,
    pub signing_profile_version_arns: Vec<String>,
    /// `Warn` or `Enforce`.
    pub untrusted_artifact_on_deployment: String,
    pub modified_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FunctionConfig {
        let code = Code { sha256_hex: "ab".into(), size: 10, unzipped_size: 20 };
        FunctionConfig::new("f", "arn:aws:iam::123456789012:role/r".into(), code, 1, "rev".into())
    }

    #[test]
    fn patch_applies_and_checks_the_catalog() {
        let catalog = Catalog::new([("python3.11".to_string(), "/usr/bin/python3.11".to_string())]);
        let mut c = cfg();
        let patch = ConfigPatch {
            runtime: Some("python3.11".into()),
            handler: Some("app.handler".into()),
            memory_size: Some(512),
            environment: Some(BTreeMap::from([("KEY".into(), "v".into())])),
            ..Default::default()
        };
        patch.apply(&mut c, &catalog).unwrap();
        assert_eq!((c.memory_size, c.timeout), (512, TIMEOUT_DEFAULT));
        assert!(c.check_package().is_ok());

        let bad = ConfigPatch { runtime: Some("ruby3.3".into()), ..Default::default() };
        assert!(matches!(bad.apply(&mut c, &catalog), Err(Error::InvalidParameter(_))));
        let levels = ConfigPatch { application_log_level: Some("INFO".into()), ..Default::default() };
        assert!(levels.apply(&mut cfg(), &catalog).is_err(), "log levels need JSON format");
    }

    #[test]
    fn json_logging_stored_without_levels_is_at_info() {
        let mut logging = cfg().logging;
        assert_eq!(logging.levels(), (None, None));
        logging.log_format = "JSON".into();
        assert_eq!(logging.levels(), (Some("INFO".into()), Some("INFO".into())));
        logging.system_log_level = Some("WARN".into());
        assert_eq!(logging.levels(), (Some("INFO".into()), Some("WARN".into())));
    }

    #[test]
    fn settings_without_a_service_behind_them_are_refused_and_vpc_rules_hold() {
        let catalog = Catalog::new([]);
        let refused = [
            ConfigPatch { kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()), ..Default::default() },
            ConfigPatch { file_systems: Some(vec!["arn:aws:elasticfilesystem:x".into()]), ..Default::default() },
            ConfigPatch { snap_start: Some("PublishedVersions".into()), ..Default::default() },
            ConfigPatch {
                vpc: Some(VpcConfig { subnet_ids: vec!["subnet-1".into()], ..Default::default() }),
                ..Default::default()
            },
        ];
        for patch in refused {
            assert!(matches!(patch.apply(&mut cfg(), &catalog), Err(Error::InvalidParameter(_))), "{patch:?}");
        }
        let vpc = VpcConfig {
            subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
            security_group_ids: vec!["sg-1".into()],
            ipv6_allowed_for_dual_stack: false,
        };
        let mut c = cfg();
        ConfigPatch { vpc: Some(vpc.clone()), snap_start: Some("None".into()), ..Default::default() }
            .apply(&mut c, &catalog)
            .unwrap();
        let id = c.vpc.as_ref().unwrap().vpc_id();
        assert!(id.starts_with("vpc-") && id.len() == 21);
        let reordered = VpcConfig { subnet_ids: vec!["subnet-a".into(), "subnet-b".into()], ..vpc };
        assert_eq!(reordered.vpc_id(), id, "named by the subnet set");
        assert_eq!(VpcConfig::default().vpc_id(), "");
    }

    #[test]
    fn zip_functions_need_runtime_and_handler() {
        assert!(cfg().check_package().is_err());
    }

    #[test]
    fn same_content_ignores_identity_fields() {
        let a = cfg();
        let mut b = a.clone();
        b.version = "3".into();
        b.revision_id = "other".into();
        b.last_modified_ms = 99;
        assert!(a.same_content(&b));
        b.memory_size = 256;
        assert!(!a.same_content(&b));
    }
}
