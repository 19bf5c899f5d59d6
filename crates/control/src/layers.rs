//! Layers: versioned archives that functions mount at `/opt`. Version
//! numbers only go up, even after deletions.

use nimbus_core::function::{Code, LayerVersion};
use nimbus_core::limits::UNZIPPED_MAX;
use nimbus_store::Write;

use crate::*;

/// PublishLayerVersion's input.
#[derive(Debug, Clone, Default)]
pub struct NewLayerVersion {
    pub layer_name: String,
    pub zip: Option<Vec<u8>>,
    pub other_source: Option<String>,
    pub description: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
}

fn matches(lv: &LayerVersion, runtime: Option<&str>, arch: Option<&str>) -> bool {
    runtime.is_none_or(|r| lv.compatible_runtimes.iter().any(|c| c == r))
        && arch.is_none_or(|a| lv.compatible_architectures.iter().any(|c| c == a))
}

impl Control {
    pub async fn publish_layer_version(&self, req: NewLayerVersion) -> Result<LayerVersion> {
        let name = self.account().layer_name_of(&req.layer_name).map_err(rule)?;
        let description = req.description.unwrap_or_default();
        let zip = crate::functions::code_source(req.zip, req.other_source, "Content.ZipFile")?;
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
        };
        self.blobs.put(zip).await?;
        self.meta.apply(vec![Write::PutLayerVersion(Box::new(lv.clone()))]).await?;
        Ok(lv)
    }

    pub async fn get_layer_version(&self, layer: &str, version: u64) -> Result<LayerVersion> {
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
        let (items, next_marker) = paginate(all, marker, max_items)?;
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
        let (items, next_marker) = paginate(all, marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    /// Deleting a version that does not exist succeeds, as on AWS.
    pub async fn delete_layer_version(&self, layer: &str, version: u64) -> Result<()> {
        let name = self.account().layer_name_of(layer).map_err(rule)?;
        let guard = self.lock().await;
        self.meta.apply(vec![Write::DeleteLayerVersion { name, version }]).await?;
        self.collect_garbage(&guard).await
    }
}
