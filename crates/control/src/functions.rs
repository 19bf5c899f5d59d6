//! Functions, their code and their versions: create, read, update, delete,
//! list, publish.

use std::collections::BTreeMap;

use base64::Engine;
use nimbus_core::function::{Code, ConfigPatch, Function, FunctionConfig, LayerRef, Lifecycle};
use nimbus_core::limits::UNZIPPED_MAX;
use nimbus_core::{zipcheck, Qualifier};
use nimbus_store::Write;

use crate::*;

/// What CreateFunction carries once parsed.
#[derive(Debug, Clone, Default)]
pub struct NewFunction {
    pub name: String,
    pub role: String,
    pub patch: ConfigPatch,
    pub architectures: Option<Vec<String>>,
    pub package_type: Option<String>,
    /// The zip archive (decoded from base64).
    pub zip: Option<Vec<u8>>,
    /// An object of the built-in store holding the zip.
    pub s3: Option<S3Code>,
    /// `Code.ImageUri`, for `PackageType: Image`.
    pub image_uri: Option<String>,
    pub publish: bool,
    pub tags: BTreeMap<String, String>,
    pub code_signing_config_arn: Option<String>,
}

/// What UpdateFunctionCode carries once parsed.
#[derive(Debug, Clone, Default)]
pub struct CodeUpdate {
    pub zip: Option<Vec<u8>>,
    pub s3: Option<S3Code>,
    pub image_uri: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub publish: bool,
    pub dry_run: bool,
    pub revision_id: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

impl Control {
    /// Resolves layer version ARNs to what the function records of them.
    async fn resolve_layers(&self, arns: &[String]) -> Result<Vec<LayerRef>> {
        let mut seen = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(arns.len());
        let account = self.account();
        for arn in arns {
            // AWS's answers for a layer of another region, and of another
            // account (which would need that account's permission).
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.len() == 8 && parts[3] != account.region {
                return Err(invalid(format!(
                    "Layers are not in the same region as the function. Layers are expected to be in region {}.",
                    account.region
                )));
            }
            if parts.len() == 8 && parts[4] != account.id {
                return Err(rule(nimbus_core::Error::AccessDenied(format!(
                    "User: arn:aws:iam::{}:root is not authorized to perform: lambda:GetLayerVersion on resource: {arn} because no resource-based policy allows the lambda:GetLayerVersion action",
                    account.id
                ))));
            }
            let (name, version) = account.parse_layer_version_arn(arn).map_err(rule)?;
            if let Some(other) = seen.insert(name.clone(), arn) {
                return Err(invalid(format!(
                    "Two different versions of the same layer are not allowed to be referenced in the same function. {other} and {arn} are versions of the same layer."
                )));
            }
            let lv = self
                .meta
                .get_layer_version(&name, version)
                .await?
                .ok_or_else(|| invalid(format!("Layer version {arn} does not exist.")))?;
            out.push(LayerRef {
                arn: arn.clone(),
                sha256_hex: lv.code.sha256_hex,
                code_size: lv.code.size,
                unzipped_size: lv.code.unzipped_size,
            });
        }
        Ok(out)
    }

    /// Runs the zip gate off the async threads.
    pub(crate) async fn inspect_zip(zip: Vec<u8>, budget: u64) -> Result<(Vec<u8>, zipcheck::ZipInfo)> {
        tokio::task::spawn_blocking(move || zipcheck::inspect(&zip, budget).map(|info| (zip, info)))
            .await
            .map_err(|e| Error::Unavailable(format!("zip inspection failed: {e}")))?
            .map_err(rule)
    }

    pub async fn create_function(&self, req: NewFunction) -> Result<FunctionConfig> {
        let (zip, image) = match req.package_type.as_deref() == Some("Image") {
            true => (None, Some(self.resolve_image(req.image_uri, req.zip.is_some() || req.s3.is_some()).await?)),
            false => (Some(self.code_source(req.zip, req.s3, req.image_uri, "function code").await?), None),
        };
        if let Some(arn) = &req.code_signing_config_arn {
            let csc = self.code_signing_config_named(arn).await?;
            Self::check_signature(&csc, &req.name)?;
        }
        let layers = self.resolve_layers(req.patch.layers.as_deref().unwrap_or_default()).await?;
        let layer_bytes: u64 = layers.iter().map(|l| l.unzipped_size).sum();
        let mut config = FunctionConfig::new(
            &req.name,
            req.role.clone(),
            Code { sha256_hex: String::new(), size: 0, unzipped_size: 0 },
            now_ms(),
            new_revision(),
        );
        if let Some(image) = image {
            config.package_type = "Image".into();
            config.code = Code { sha256_hex: image_code_sha(&image), size: 0, unzipped_size: 0 };
            config.image = Some(image);
        }
        req.patch.apply(&mut config, self.catalog()).map_err(rule)?;
        config.layers = layers;
        if let Some(a) = req.architectures {
            config.architectures = a;
        }
        config.check_package().map_err(rule)?;
        if self.meta.get_function(&req.name).await?.is_some() {
            return Err(conflict(format!("Function already exist: {}", req.name)));
        }
        let zip = match zip {
            Some(zip) => {
                let (zip, info) = Self::inspect_zip(zip, UNZIPPED_MAX.saturating_sub(layer_bytes)).await?;
                config.code = Code { sha256_hex: info.sha256_hex, size: info.size, unzipped_size: info.unzipped_size };
                Some(zip)
            }
            None => None,
        };

        let guard = self.lock().await;
        if self.meta.get_function(&req.name).await?.is_some() {
            return Err(conflict(format!("Function already exist: {}", req.name)));
        }
        if let Some(zip) = zip {
            self.blobs.put(zip).await?;
        }
        let mut function = Function::new(config, req.tags);
        function.code_signing_config_arn = req.code_signing_config_arn;
        let mut targets = vec![(LATEST.to_string(), function.latest.revision_id.clone())];
        let mut writes = Vec::new();
        let mut result = function.latest.clone();
        if req.publish {
            function.last_version = 1;
            result = Self::version_of(&function.latest, 1, None);
            targets.push((result.version.clone(), result.revision_id.clone()));
            writes.push(Write::PutVersion(Box::new(result.clone())));
        }
        writes.insert(0, Write::PutFunction(Box::new(function)));
        self.meta.apply(writes).await?;
        drop(guard);
        tracing::info!(function = %req.name, "function created");
        self.prepare_then_settle(&result, targets);
        Ok(result)
    }

    fn version_of(latest: &FunctionConfig, n: u64, description: Option<String>) -> FunctionConfig {
        FunctionConfig {
            version: n.to_string(),
            description: description.unwrap_or_else(|| latest.description.clone()),
            revision_id: new_revision(),
            last_modified_ms: now_ms(),
            ..latest.clone()
        }
    }

    /// GetFunction / GetFunctionConfiguration.
    pub async fn get_function(&self, raw: &str, qualifier: Option<&str>) -> Result<(Resolved, Function)> {
        let r = self.parse_ref(raw, qualifier)?;
        let f = self.function(&r.name).await?;
        Ok((self.config_at(&f, r.qualifier.as_ref()).await?, f))
    }

    /// The bytes of a stored archive, for the signed download URL.
    pub async fn code_blob(&self, sha256_hex: &str) -> Result<Vec<u8>> {
        self.blobs.get(sha256_hex).await.map_err(|e| match e {
            nimbus_store::Error::MissingBlob(_) => not_found("The resource you requested does not exist."),
            other => other.into(),
        })
    }

    pub async fn update_code(&self, raw: &str, req: CodeUpdate) -> Result<FunctionConfig> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let current = self.function(&r.name).await?;
        check_revision(req.revision_id.as_deref(), &current.latest.revision_id)?;
        self.check_settled(&current)?;
        self.check_deployment_signature(&current).await?;
        // The package type stays what it was created with, as on AWS.
        let (zip, code, image) = match current.latest.package_type == "Image" {
            true => {
                let mut image = self.resolve_image(req.image_uri, req.zip.is_some() || req.s3.is_some()).await?;
                image.overrides = current.latest.image.clone().unwrap_or_default().overrides;
                (None, Code { sha256_hex: image_code_sha(&image), size: 0, unzipped_size: 0 }, Some(image))
            }
            false => {
                let zip = self.code_source(req.zip, req.s3, req.image_uri, "function code").await?;
                let layer_bytes: u64 = current.latest.layers.iter().map(|l| l.unzipped_size).sum();
                let (zip, info) = Self::inspect_zip(zip, UNZIPPED_MAX.saturating_sub(layer_bytes)).await?;
                let code = Code { sha256_hex: info.sha256_hex, size: info.size, unzipped_size: info.unzipped_size };
                (Some(zip), code, None)
            }
        };

        let guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        check_revision(req.revision_id.as_deref(), &f.latest.revision_id)?;
        self.check_settled(&f)?;
        let mut latest = f.latest.clone();
        latest.code = code;
        if image.is_some() {
            latest.image = image;
        }
        if let Some(a) = req.architectures {
            latest.architectures = a;
        }
        latest.check_package().map_err(rule)?;
        if req.dry_run {
            return Ok(latest);
        }
        latest.revision_id = new_revision();
        latest.last_modified_ms = now_ms();
        latest.lifecycle = Lifecycle::Updating;
        if let Some(zip) = zip {
            self.blobs.put(zip).await?;
        }
        f.latest = latest;
        let result = if req.publish {
            self.publish_locked(&mut f, None).await?
        } else {
            self.save(&f).await?;
            f.latest.clone()
        };
        let mut targets = vec![(LATEST.to_string(), f.latest.revision_id.clone())];
        if result.version != LATEST {
            targets.push((result.version.clone(), result.revision_id.clone()));
        }
        self.collect_garbage(&guard).await?;
        drop(guard);
        let image = f.latest.package_type == "Image";
        self.retire_environments(&r.name, Some(LATEST), image).await;
        self.prepare_then_settle(&result, targets);
        Ok(result)
    }

    pub async fn update_configuration(
        &self,
        raw: &str,
        patch: ConfigPatch,
        revision_id: Option<String>,
    ) -> Result<FunctionConfig> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let layers = match &patch.layers {
            Some(arns) => Some(self.resolve_layers(arns).await?),
            None => None,
        };
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        check_revision(revision_id.as_deref(), &f.latest.revision_id)?;
        self.check_settled(&f)?;
        let mut latest = f.latest.clone();
        patch.apply(&mut latest, self.catalog()).map_err(rule)?;
        if let Some(layers) = layers {
            if !layers.is_empty() {
                // Layers are deployed code too: a signing policy covers them.
                self.check_deployment_signature(&f).await?;
            }
            latest.layers = layers;
        }
        latest.check_package().map_err(rule)?;
        if latest.unzipped_total() > UNZIPPED_MAX {
            return Err(rule(zipcheck::too_big()));
        }
        latest.revision_id = new_revision();
        latest.last_modified_ms = now_ms();
        latest.lifecycle = Lifecycle::Updating;
        f.latest = latest;
        self.save(&f).await?;
        // The image (if any) is the same: still the function's.
        self.retire_environments(&r.name, Some(LATEST), false).await;
        self.prepare_then_settle(&f.latest, vec![(LATEST.to_string(), f.latest.revision_id.clone())]);
        Ok(f.latest)
    }

    pub async fn delete_function(&self, raw: &str, qualifier: Option<&str>) -> Result<()> {
        let r = self.parse_ref(raw, qualifier)?;
        let guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        match r.qualifier {
            None => {
                self.meta.apply(vec![Write::DeleteFunction(r.name.clone())]).await?;
                self.retire_environments(&r.name, None, f.latest.package_type == "Image").await;
                tracing::info!(function = %r.name, "function deleted");
            }
            Some(Qualifier::Latest) => {
                return Err(invalid("$LATEST version cannot be deleted without deleting the function."));
            }
            Some(Qualifier::Alias(_)) => {
                return Err(invalid("Deletion of aliases is not currently supported."));
            }
            Some(Qualifier::Version(v)) => {
                self.check_qualifier(&f, &Qualifier::Version(v)).await?;
                let users: Vec<&str> = f
                    .aliases
                    .values()
                    .filter(|a| {
                        a.function_version == v.to_string() || a.additional_weights.contains_key(&v.to_string())
                    })
                    .map(|a| a.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(conflict(format!(
                        "Unable to delete version because the following aliases reference it: [{}]",
                        users.join(", ")
                    )));
                }
                let key = v.to_string();
                f.event_invoke_configs.remove(&key);
                f.provisioned.remove(&key);
                f.policy.retain(|s| s.qualifier.as_deref() != Some(key.as_str()));
                self.meta
                    .apply(vec![
                        Write::PutFunction(Box::new(f)),
                        Write::DeleteVersion { name: r.name.clone(), version: v },
                    ])
                    .await?;
                if let Some(invoker) = &self.invoker {
                    invoker.unprovision(&r.name, Some(&key)).await;
                    invoker.retire(&r.name, Some(&key)).await;
                }
            }
        }
        self.collect_garbage(&guard).await
    }

    /// ListFunctions: `$LATEST` of each function, or every version with `all`.
    pub async fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: Option<i64>,
        all: bool,
    ) -> Result<Page<FunctionConfig>> {
        let limit = crate::page_size(max_items);
        let after = match marker.filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => {
                let (name, v) = m.rsplit_once('/').ok_or_else(|| invalid(format!("Invalid marker: {m}")))?;
                Some((name.to_string(), v.parse().map_err(|_| invalid(format!("Invalid marker: {m}")))?))
            }
        };
        let mut items = self.meta.list_configs(after, all, limit + 1).await?;
        let next_marker = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| format!("{}/{}", c.name, c.version.parse::<u64>().unwrap_or(0)))
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    pub async fn publish_version(
        &self,
        raw: &str,
        code_sha256: Option<&str>,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> Result<FunctionConfig> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let _guard = self.lock().await;
        let mut f = self.function(&r.name).await?;
        self.check_settled(&f)?;
        if let Some(sha) = code_sha256.filter(|s| !s.is_empty()) {
            let actual = self::code_sha256(&f.latest);
            if sha != actual {
                return Err(invalid(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({actual}). Please try again with the CodeSHA256 in $LATEST."
                )));
            }
        }
        check_revision(revision_id, &f.latest.revision_id)?;
        self.publish_locked(&mut f, description).await
    }

    /// Publishes `f.latest` (saving `f`), or returns the newest version when
    /// nothing changed since it was published.
    async fn publish_locked(&self, f: &mut Function, description: Option<String>) -> Result<FunctionConfig> {
        if f.last_version > 0 {
            if let Some(newest) = self.meta.get_version(f.name(), f.last_version).await? {
                if f.latest.same_content(&newest) {
                    self.save(f).await?;
                    return Ok(newest);
                }
            }
        }
        f.last_version += 1;
        let version = Self::version_of(&f.latest, f.last_version, description);
        // Publishing is a change of `$LATEST` too, as on AWS.
        f.latest.revision_id = new_revision();
        self.meta
            .apply(vec![Write::PutFunction(Box::new(f.clone())), Write::PutVersion(Box::new(version.clone()))])
            .await?;
        Ok(version)
    }

    /// ListVersionsByFunction: `$LATEST` first, then versions in order.
    pub async fn list_versions(
        &self,
        raw: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<FunctionConfig>> {
        let r = FunctionRef::parse_unqualified(self.account(), raw).map_err(rule)?;
        let f = self.function(&r.name).await?;
        let mut all = vec![f.latest];
        all.extend(self.meta.list_versions(&r.name).await?);
        // `$LATEST` (no number) first, then by number.
        let key = |c: &FunctionConfig| format!("{:020}", c.version.parse::<u64>().unwrap_or(0));
        let (items, next_marker) = crate::paginate_after(all, key, marker, max_items)?;
        Ok(Page { items, next_marker })
    }
}

/// `CodeSha256` as AWS reports it: base64 of the raw digest.
pub fn code_sha256_b64(hex_digest: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_digest).unwrap_or_default())
}

/// A function's `CodeSha256` as AWS reports it: a zip's digest in base64,
/// an image's manifest digest in hex (without `sha256:`).
pub fn code_sha256(c: &FunctionConfig) -> String {
    if c.package_type == "Image" {
        c.code.sha256_hex.clone()
    } else {
        code_sha256_b64(&c.code.sha256_hex)
    }
}

/// An image function's `CodeSha256`: its manifest digest, as AWS reports it.
fn image_code_sha(image: &nimbus_core::function::FunctionImage) -> String {
    image.digest.trim_start_matches("sha256:").to_string()
}
