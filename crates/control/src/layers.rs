//! Layers: versioned archives that functions mount at `/opt`. Version
//! numbers only go up, even after deletions.

use nimbus_core::function::{Code, LayerPermission, LayerVersion};
use nimbus_core::limits::UNZIPPED_MAX;
use nimbus_store::Write;

use crate::*;

/// PublishLayerVersion's input.
#[derive(Debug, Clone, Default)]
pub struct NewLayerVersion {
    pub layer_name: String,
    pub zip: Option<Vec<u8>>,
    pub s3: Option<S3Code>,
    pub description: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
}

/// AddLayerVersionPermission's input.
#[derive(Debug, Clone, Default)]
pub struct NewLayerPermission {
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    pub organization_id: Option<String>,
    pub revision_id: Option<String>,
}

fn check_layer_version_number(version: u64) -> Result<()> {
    if version < 1 {
        return Err(invalid("Layer Version Cannot be less than 1"));
    }
    Ok(())
}

fn layer_precondition(expected: Option<&str>, lv: &LayerVersion) -> Result<()> {
    match expected {
        Some(e) if !e.is_empty() && Some(e) != lv.policy_revision_id.as_deref() => {
            Err(Error::Rule(nimbus_core::Error::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. Call the GetLayerPolicy API to retrieve the latest Revision Id".into(),
            )))
        }
        _ => Ok(()),
    }
}

/// One statement as AWS renders it in a layer version's policy.
fn statement_json(arn: &str, p: &LayerPermission) -> serde_json::Value {
    let principal = if p.principal.len() == 12 && p.principal.bytes().all(|b| b.is_ascii_digit()) {
        serde_json::json!({ "AWS": format!("arn:aws:iam::{}:root", p.principal) })
    } else if p.principal == "*" {
        serde_json::json!("*")
    } else {
        serde_json::json!({ "AWS": p.principal })
    };
    let mut s = serde_json::json!({
        "Sid": p.sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": p.action,
        "Resource": arn,
    });
    if let Some(org) = &p.organization_id {
        s["Condition"] = serde_json::json!({ "StringEquals": { "aws:PrincipalOrgID": org } });
    }
    s
}

fn matches(lv: &LayerVersion, runtime: Option<&str>, arch: Option<&str>) -> bool {
    runtime.is_none_or(|r| lv.compatible_runtimes.iter().any(|c| c == r))
        && arch.is_none_or(|a| lv.compatible_architectures.iter().any(|c| c == a))
}

impl Control {
    pub async fn publish_layer_version(&self, req: NewLayerVersion) -> Result<LayerVersion> {
        let name = self.account().layer_name_of(&req.layer_name).map_err(rule)?;
        let description = req.description.unwrap_or_default();
        let zip = self.code_source(req.zip, req.s3, None, "layer content").await?;
        let (zip, info) = Self::inspect_zip(zip, UNZIPPED_MAX).await?;
        let _guard = self.lock().await;
        let version = self.meta.last_layer_version(&name).await? + 1;
        let lv = LayerVersion {
            name,
            version,
            description,
            compatible_runtimes: req.compatible_runtimes,
            compatible_architectures: req.compatible_architectures,
            license_info: req.license_info,
            code: Code { sha256_hex: info.sha256_hex, size: info.size, unzipped_size: info.unzipped_size },
            created_ms: now_ms(),
            permissions: Vec::new(),
            policy_revision_id: None,
        };
        self.blobs.put(zip).await?;
        self.meta.apply(vec![Write::PutLayerVersion(Box::new(lv.clone()))]).await?;
        Ok(lv)
    }

    pub async fn get_layer_version(&self, layer: &str, version: u64) -> Result<LayerVersion> {
        check_layer_version_number(version)?;
        let name = self.account().layer_name_of(layer).map_err(rule)?;
        self.meta
            .get_layer_version(&name, version)
            .await?
            .ok_or_else(|| not_found("The resource you requested does not exist."))
    }

    pub async fn get_layer_version_by_arn(&self, arn: &str) -> Result<LayerVersion> {
        let (name, version) = self.account().parse_layer_version_arn(arn).map_err(rule)?;
        self.get_layer_version(&name, version).await
    }

    /// ListLayers: the newest matching version of each layer.
    pub async fn list_layers(
        &self,
        runtime: Option<&str>,
        arch: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<LayerVersion>> {
        let all = if runtime.is_none() && arch.is_none() {
            self.meta.list_latest_layer_versions().await?
        } else {
            let mut out = Vec::new();
            for latest in self.meta.list_latest_layer_versions().await? {
                let versions = self.meta.list_layer_versions(&latest.name).await?;
                out.extend(versions.into_iter().find(|lv| matches(lv, runtime, arch)));
            }
            out
        };
        // By name, as the store lists them.
        let (items, next_marker) = paginate_after(all, |lv| lv.name.clone(), marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    pub async fn list_layer_versions(
        &self,
        layer: &str,
        runtime: Option<&str>,
        arch: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<LayerVersion>> {
        let name = self.account().layer_name_of(layer).map_err(rule)?;
        let all: Vec<LayerVersion> =
            self.meta.list_layer_versions(&name).await?.into_iter().filter(|lv| matches(lv, runtime, arch)).collect();
        // Newest first: a key that rises as the version falls.
        let (items, next_marker) =
            paginate_after(all, |lv| format!("{:020}", u64::MAX - lv.version), marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    /// Deleting a version that does not exist succeeds, as on AWS.
    pub async fn delete_layer_version(&self, layer: &str, version: u64) -> Result<()> {
        check_layer_version_number(version)?;
        let name = self.account().layer_name_of(layer).map_err(rule)?;
        let guard = self.lock().await;
        self.meta.apply(vec![Write::DeleteLayerVersion { name, version }]).await?;
        self.collect_garbage(&guard).await
    }

    /// The layer version a permission operation names, with its ARN.
    async fn permission_target(&self, layer: &str, version: u64) -> Result<(LayerVersion, String)> {
        check_layer_version_number(version)?;
        let name = self.account().layer_name_of(layer).map_err(rule)?;
        let arn = self.account().layer_version_arn(&name, version);
        let lv = self
            .meta
            .get_layer_version(&name, version)
            .await?
            .ok_or_else(|| not_found(format!("Layer version {arn} does not exist.")))?;
        Ok((lv, arn))
    }

    /// AddLayerVersionPermission: the statement added and the policy's new revision.
    pub async fn add_layer_version_permission(
        &self,
        layer: &str,
        version: u64,
        p: NewLayerPermission,
    ) -> Result<(serde_json::Value, String)> {
        if p.organization_id.is_some() && p.principal != "*" {
            return Err(invalid("OrganizationId can be specified only when the principal is '*'."));
        }
        let _guard = self.lock().await;
        let (mut lv, arn) = self.permission_target(layer, version).await?;
        if lv.permissions.iter().any(|s| s.sid == p.statement_id) {
            return Err(conflict(format!(
                "The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.",
                p.statement_id
            )));
        }
        layer_precondition(p.revision_id.as_deref(), &lv)?;
        let permission = LayerPermission {
            sid: p.statement_id,
            action: p.action,
            principal: p.principal,
            organization_id: p.organization_id,
        };
        let statement = statement_json(&arn, &permission);
        lv.permissions.push(permission);
        let revision = new_revision();
        lv.policy_revision_id = Some(revision.clone());
        self.meta.apply(vec![Write::PutLayerVersion(Box::new(lv))]).await?;
        Ok((statement, revision))
    }

    /// GetLayerVersionPolicy: the policy document and its revision.
    pub async fn get_layer_version_policy(&self, layer: &str, version: u64) -> Result<(serde_json::Value, String)> {
        let (lv, arn) = self.permission_target(layer, version).await?;
        if lv.permissions.is_empty() {
            return Err(not_found("No policy is associated with the given resource."));
        }
        let statements: Vec<serde_json::Value> = lv.permissions.iter().map(|p| statement_json(&arn, p)).collect();
        let doc = serde_json::json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements });
        Ok((doc, lv.policy_revision_id.unwrap_or_default()))
    }

    pub async fn remove_layer_version_permission(
        &self,
        layer: &str,
        version: u64,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<()> {
        let _guard = self.lock().await;
        let (mut lv, _) = self.permission_target(layer, version).await?;
        layer_precondition(revision_id, &lv)?;
        let before = lv.permissions.len();
        lv.permissions.retain(|p| p.sid != sid);
        if lv.permissions.len() == before {
            return Err(not_found(format!("Statement {sid} is not found in resource policy.")));
        }
        lv.policy_revision_id = Some(new_revision());
        self.meta.apply(vec![Write::PutLayerVersion(Box::new(lv))]).await?;
        Ok(())
    }
}
