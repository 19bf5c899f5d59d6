//! ECR's control API (JSON 1.1, SigV4 service `ecr`, `X-Amz-Target:
//! AmazonEC2ContainerRegistry_V20150921.<Op>`): repositories, images
//! (including PutImage, which re-tags),
//! tag mutability and authorization tokens, checked against botocore's ECR
//! model (`nimbus-model`) and answered in ECR's shapes and errors
//! (`{"__type", "message"}`). The rules are `nimbus-registry`'s.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_registry::auth::{Purpose, LOGIN_TTL};
use nimbus_registry::{Image, Registry, RegistryError, Repository};
use serde_json::{json, Value};

use crate::json_front::{Failure, JsonService};
use crate::{Api, ApiError};

const SERVICE: JsonService = JsonService {
    name: "ecr",
    target_prefix: "AmazonEC2ContainerRegistry_V20150921.",
    // PutImage carries a manifest of up to 4 MiB (its model's limit, and
    // the registry's), escaped in a JSON string: at most twice as long,
    // as a manifest is JSON already (no control characters left to escape).
    body_max: 2 * nimbus_registry::manifests::MANIFEST_MAX + (64 << 10),
    invalid: "ValidationException",
    precheck: check_repository_name,
};

/// The model's pattern for repository names (which `check_name` keeps), as ECR quotes it.
const NAME_PATTERN: &str = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*";

/// ECR judges `repositoryName` itself, before the model's other rules, and
/// words it its own way: `InvalidParameterException: Invalid parameter at
/// 'repositoryName' failed to satisfy constraint: '…'` (as quoted from AWS
/// in public issues, 2018–2024), where other members get the model's
/// ValidationException.
fn check_repository_name(input: &serde_json::Value) -> Result<(), Failure> {
    use nimbus_registry::rules::{check_name, NAME_MAX, NAME_MIN};
    let Some(name) = input.get("repositoryName").and_then(serde_json::Value::as_str) else { return Ok(()) };
    let rule = if name.len() < NAME_MIN {
        format!("must have length greater than or equal to {NAME_MIN}")
    } else if name.len() > NAME_MAX {
        format!("must have length less than or equal to {NAME_MAX}")
    } else if check_name(name).is_err() {
        format!("must satisfy regular expression '{NAME_PATTERN}'")
    } else {
        return Ok(());
    };
    Err(Failure::new(
        "InvalidParameterException",
        format!("Invalid parameter at 'repositoryName' failed to satisfy constraint: '{rule}'"),
    ))
}
/// Page size when a request names no maxResults, as ECR.
const PAGE_DEFAULT: usize = 100;

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let kind = match &e {
            E::NameUnknown { .. } => "RepositoryNotFoundException",
            E::RepositoryExists { .. } => "RepositoryAlreadyExistsException",
            E::RepositoryNotEmpty { .. } => "RepositoryNotEmptyException",
            E::ManifestUnknown(_) => "ImageNotFoundException",
            E::TagImmutable { .. } => "ImageTagAlreadyExistsException",
            E::TooManyTags(_) => "TooManyTagsException",
            E::Store(_) | E::Io(_) => return Self::internal("ServerException", &e),
            _ => "InvalidParameterException",
        };
        Self::new(kind, e.to_string())
    }
}

/// Tags a repository may have, as ECR allows.
const TAGS_MAX: usize = 50;

const TOO_MANY_TAGS: &str = "A repository can have no more than 50 tags.";

/// Whether an unsigned request names an ECR operation (so that ECR
/// refuses it, in its own shape).
pub fn is_unsigned_ecr(headers: &axum::http::HeaderMap) -> bool {
    SERVICE.is_target_of(headers)
}

pub async fn serve(api: &Api, req: Request<Body>) -> Response {
    serve_inner(api, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(api: &Api, req: Request<Body>) -> Result<Response, Failure> {
    let call = SERVICE.accept(api, req).await?;
    let registry = api.registry.as_deref().ok_or_else(|| {
        Failure::from(ApiError::Unavailable("the container registry is not served by this node".into()))
    })?;
    let ctx = Ctx { registry, host: host(&call.headers, api.public_port), input: &call.input };
    let out = ctx.execute(&call.op).await?;
    let mut resp = (StatusCode::OK, axum::Json(out)).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    Ok(resp)
}

/// `host:port` as the client reached this node.
fn host(headers: &HeaderMap, port: u16) -> String {
    headers.get("host").and_then(|h| h.to_str().ok()).map_or_else(|| format!("127.0.0.1:{port}"), str::to_string)
}

struct Ctx<'a> {
    registry: &'a Registry,
    host: String,
    input: &'a Value,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Ctx<'_> {
    fn str(&self, key: &str) -> Option<&str> {
        self.input.get(key).and_then(Value::as_str)
    }

    fn name(&self) -> &str {
        self.str("repositoryName").unwrap_or_default()
    }

    fn registry_id(&self) -> &str {
        &self.registry.account().id
    }

    /// The ECR-shaped registry host: `<account>.dkr.ecr.<region>.<host:port>`.
    fn registry_host(&self) -> String {
        let a = self.registry.account();
        format!("{}.dkr.ecr.{}.{}", a.id, a.region, self.host)
    }

    fn repository_json(&self, r: &Repository) -> Value {
        let a = self.registry.account();
        json!({
            "repositoryArn": format!("arn:aws:ecr:{}:{}:repository/{}", a.region, a.id, r.name),
            "registryId": a.id,
            "repositoryName": r.name,
            "repositoryUri": format!("{}/{}", self.registry_host(), r.name),
            "createdAt": secs(r.created_ms),
            "imageTagMutability": r.tag_mutability,
            "imageScanningConfiguration": { "scanOnPush": r.scan_on_push },
            "encryptionConfiguration": { "encryptionType": "AES256" },
        })
    }

    /// The request's `tags` (`[{"Key", "Value"}]`), checked as ECR checks them.
    fn tags(&self) -> Result<BTreeMap<String, String>, Failure> {
        let mut tags = BTreeMap::new();
        for t in self.input.get("tags").and_then(Value::as_array).into_iter().flatten() {
            let (Some(k), Some(v)) = (t["Key"].as_str(), t["Value"].as_str()) else { continue };
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 || k.starts_with("aws:") {
                return Err(Failure::new("InvalidTagParameterException", format!("Invalid tag: {k}")));
            }
            tags.insert(k.to_string(), v.to_string());
        }
        Ok(tags)
    }

    /// The repository a tagging request's `resourceArn` names: one of this
    /// registry's (`arn:aws:ecr:<region>:<account>:repository/<name>`).
    fn tagged_repository(&self) -> Result<String, Failure> {
        let a = self.registry.account();
        let arn = self.str("resourceArn").unwrap_or_default();
        let prefix = format!("arn:aws:ecr:{}:{}:repository/", a.region, a.id);
        match arn.strip_prefix(&prefix).filter(|n| !n.is_empty()) {
            Some(name) => Ok(name.to_string()),
            None => Err(Failure::new(
                "InvalidParameterException",
                format!("Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN': {arn}"),
            )),
        }
    }

    fn page(&self) -> Result<(usize, usize), Failure> {
        let max = self.input.get("maxResults").and_then(Value::as_u64).map_or(PAGE_DEFAULT, |n| n as usize);
        let start = match self.str("nextToken") {
            None => 0,
            Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Failure::new("InvalidParameterException", "Invalid parameter at 'nextToken'"))?,
        };
        Ok((start, max))
    }

    async fn execute(&self, op: &str) -> Result<Value, Failure> {
        let r = self.registry;
        Ok(match op {
            "CreateRepository" => {
                let mutability = self.str("imageTagMutability").unwrap_or("MUTABLE");
                if !matches!(mutability, "MUTABLE" | "IMMUTABLE") {
                    return Err(Failure::new(
                        "InvalidParameterException",
                        format!("imageTagMutability {mutability} is not supported by this registry"),
                    ));
                }
                let scan = self.input.pointer("/imageScanningConfiguration/scanOnPush").and_then(Value::as_bool);
                // Encryption at rest is not offered: refused rather than
                // reported as AES256 (Terraform would replace the repository
                // at every apply).
                if let Some(kind) =
                    self.input.pointer("/encryptionConfiguration/encryptionType").and_then(Value::as_str)
                {
                    if kind != "AES256" {
                        return Err(Failure::new(
                            "InvalidParameterException",
                            format!(
                                "encryptionType {kind} is not offered by this Nimbus node: its repositories are AES256"
                            ),
                        ));
                    }
                }
                let tags = self.tags()?;
                if tags.len() > TAGS_MAX {
                    return Err(Failure::new("TooManyTagsException", TOO_MANY_TAGS));
                }
                let repo = r.create_repository(self.name(), mutability, scan.unwrap_or(false), tags).await?;
                json!({ "repository": self.repository_json(&repo) })
            }
            "DescribeRepositories" => self.describe_repositories().await?,
            "DeleteRepository" => {
                let force = self.input.get("force").and_then(Value::as_bool).unwrap_or(false);
                let repo = r.delete_repository(self.name(), force).await?;
                json!({ "repository": self.repository_json(&repo) })
            }
            "PutImageTagMutability" => {
                let mutability = self.str("imageTagMutability").unwrap_or_default();
                if !matches!(mutability, "MUTABLE" | "IMMUTABLE") {
                    return Err(Failure::new(
                        "InvalidParameterException",
                        format!("imageTagMutability {mutability} is not supported by this registry"),
                    ));
                }
                let change = |r: &mut Repository| {
                    r.tag_mutability = mutability.to_string();
                    Ok(())
                };
                let repo = r.update_repository(self.name(), change).await?;
                json!({ "registryId": self.registry_id(), "repositoryName": repo.name, "imageTagMutability": repo.tag_mutability })
            }
            "PutImageScanningConfiguration" => {
                let scan = self.input.pointer("/imageScanningConfiguration/scanOnPush").and_then(Value::as_bool);
                let change = |r: &mut Repository| {
                    r.scan_on_push = scan.unwrap_or(false);
                    Ok(())
                };
                let repo = r.update_repository(self.name(), change).await?;
                json!({
                    "registryId": self.registry_id(),
                    "repositoryName": repo.name,
                    "imageScanningConfiguration": { "scanOnPush": repo.scan_on_push },
                })
            }
            "ListTagsForResource" => {
                let repo = r.repository(&self.tagged_repository()?).await?;
                json!({ "tags": repo.tags.iter().map(|(k, v)| json!({ "Key": k, "Value": v })).collect::<Vec<_>>() })
            }
            "TagResource" => {
                let (name, add) = (self.tagged_repository()?, self.tags()?);
                r.update_repository(&name, |r| {
                    r.tags.extend(add);
                    match r.tags.len() > TAGS_MAX {
                        true => Err(RegistryError::TooManyTags(TOO_MANY_TAGS.into())),
                        false => Ok(()),
                    }
                })
                .await?;
                json!({})
            }
            "UntagResource" => {
                let name = self.tagged_repository()?;
                let keys: Vec<&str> =
                    self.input["tagKeys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                r.update_repository(&name, |r| {
                    r.tags.retain(|k, _| !keys.contains(&k.as_str()));
                    Ok(())
                })
                .await?;
                json!({})
            }
            "DescribeImages" => self.describe_images().await?,
            "ListImages" => {
                let images = self.filtered(r.images(self.name()).await?);
                let ids: Vec<Value> = images
                    .iter()
                    .flat_map(|i| {
                        let d = &i.manifest.digest;
                        if i.tags.is_empty() {
                            vec![json!({ "imageDigest": d })]
                        } else {
                            i.tags.iter().map(|t| json!({ "imageDigest": d, "imageTag": t })).collect()
                        }
                    })
                    .collect();
                self.paged("imageIds", ids)?
            }
            "BatchGetImage" => self.batch_get_image().await?,
            "PutImage" => self.put_image().await?,
            "BatchDeleteImage" => self.batch_delete_image().await?,
            "GetAuthorizationToken" => {
                let (token, expires) = r.tokens().mint(Purpose::Login, LOGIN_TTL, SystemTime::now());
                let expires_ms = expires.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"));
                json!({ "authorizationData": [{
                    "authorizationToken": encoded,
                    "expiresAt": secs(expires_ms),
                    "proxyEndpoint": format!("http://{}", self.registry_host()),
                }] })
            }
            other => {
                return Err(Failure::new(
                    "UnsupportedOperationException",
                    format!("{other} is not supported by Nimbus"),
                ))
            }
        })
    }

    /// One page of `items` under `key`, with ECR's nextToken.
    fn paged(&self, key: &str, items: Vec<Value>) -> Result<Value, Failure> {
        let (start, max) = self.page()?;
        let end = (start + max).min(items.len());
        let mut out = json!({ key: items.get(start..end).unwrap_or_default() });
        if end < items.len() {
            out["nextToken"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(end.to_string()));
        }
        Ok(out)
    }

    async fn describe_repositories(&self) -> Result<Value, Failure> {
        let names: Vec<&str> = self
            .input
            .get("repositoryNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if names.is_empty() {
            let all = self.registry.repositories(None, u32::MAX).await?;
            return self.paged("repositories", all.iter().map(|r| self.repository_json(r)).collect());
        }
        let mut out = Vec::new();
        for name in names {
            out.push(self.repository_json(&self.registry.repository(name).await?));
        }
        Ok(json!({ "repositories": out }))
    }

    /// Images passing the request's `filter.tagStatus`.
    fn filtered(&self, images: Vec<Image>) -> Vec<Image> {
        let status = self.input.pointer("/filter/tagStatus").and_then(Value::as_str).unwrap_or("ANY");
        images
            .into_iter()
            .filter(|i| match status {
                "TAGGED" => !i.tags.is_empty(),
                "UNTAGGED" => i.tags.is_empty(),
                _ => true,
            })
            .collect()
    }

    fn image_detail(&self, i: &Image) -> Value {
        let m = &i.manifest;
        let mut d = json!({
            "registryId": self.registry_id(),
            "repositoryName": m.repository,
            "imageDigest": m.digest,
            "imageSizeInBytes": m.image_size,
            "imagePushedAt": secs(m.pushed_ms),
            "imageManifestMediaType": m.media_type,
        });
        if !i.tags.is_empty() {
            d["imageTags"] = json!(i.tags);
        }
        if let Some(t) = &m.artifact_type {
            d["artifactMediaType"] = json!(t);
        }
        d
    }

    fn image_ids(&self) -> Vec<(Option<&str>, Option<&str>, &Value)> {
        self.input
            .get("imageIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|id| (id.get("imageDigest").and_then(Value::as_str), id.get("imageTag").and_then(Value::as_str), id))
            .collect()
    }

    /// The image an id names, or the failure code and reason ECR gives.
    fn find<'i>(
        &self,
        images: &'i [Image],
        digest: Option<&str>,
        tag: Option<&str>,
    ) -> Result<&'i Image, (&'static str, String)> {
        if let Some(d) = digest {
            if d.parse::<nimbus_registry::rules::Digest>().is_err() {
                return Err(("InvalidImageDigest", "Invalid image digest".into()));
            }
        }
        let found = match (digest, tag) {
            (None, None) => return Err(("MissingDigestAndTag", "Missing image digest and tag".into())),
            (Some(d), None) => images.iter().find(|i| i.manifest.digest == d),
            (d, Some(t)) => {
                let found = images.iter().find(|i| i.tags.iter().any(|x| x == t));
                if let (Some(d), Some(i)) = (d, found) {
                    if i.manifest.digest != d {
                        return Err(("ImageTagDoesNotMatchDigest", "Invalid tag/digest combination".into()));
                    }
                }
                found
            }
        };
        found.ok_or(("ImageNotFound", "Requested image not found".into()))
    }

    async fn describe_images(&self) -> Result<Value, Failure> {
        let images = self.registry.images(self.name()).await?;
        let ids = self.image_ids();
        if ids.is_empty() {
            let details = self.filtered(images).iter().map(|i| self.image_detail(i)).collect();
            return self.paged("imageDetails", details);
        }
        let mut details = Vec::new();
        for (digest, tag, _) in ids {
            let i = self.find(&images, digest, tag).map_err(|_| {
                Failure::new(
                    "ImageNotFoundException",
                    format!(
                        "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{}' in the registry with id '{}'",
                        digest.unwrap_or("null"),
                        tag.unwrap_or("null"),
                        self.name(),
                        self.registry_id()
                    ),
                )
            })?;
            details.push(self.image_detail(i));
        }
        Ok(json!({ "imageDetails": details }))
    }

    async fn batch_get_image(&self) -> Result<Value, Failure> {
        let images = self.registry.images(self.name()).await?;
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        for (digest, tag, id) in self.image_ids() {
            match self.find(&images, digest, tag) {
                Ok(i) => {
                    let (row, bytes) = self.registry.get_manifest(self.name(), &i.manifest.digest).await?;
                    let mut image_id = json!({ "imageDigest": row.digest });
                    if let Some(t) = tag {
                        image_id["imageTag"] = json!(t);
                    }
                    found.push(json!({
                        "registryId": self.registry_id(),
                        "repositoryName": self.name(),
                        "imageId": image_id,
                        "imageManifest": String::from_utf8_lossy(&bytes),
                        "imageManifestMediaType": row.media_type,
                    }));
                }
                Err((code, reason)) => {
                    failures.push(json!({ "imageId": id, "failureCode": code, "failureReason": reason }))
                }
            }
        }
        Ok(json!({ "images": found, "failures": failures }))
    }

    /// PutImage: a manifest pushed through the API, as `aws ecr put-image`
    /// re-tags an image.
    async fn put_image(&self) -> Result<Value, Failure> {
        let (name, registry) = (self.name(), self.registry);
        let manifest = self.str("imageManifest").unwrap_or_default();
        let (tag, wanted) = (self.str("imageTag"), self.str("imageDigest"));
        let digest = nimbus_registry::rules::Algorithm::Sha256.digest(manifest.as_bytes()).to_string();
        if wanted.is_some_and(|w| w != digest) {
            return Err(Failure::new(
                "ImageDigestDoesNotMatchException",
                format!("Provided digest {} does not match generated digest {digest}", wanted.unwrap_or_default()),
            ));
        }
        let exists = match tag {
            Some(t) => registry
                .images(name)
                .await?
                .iter()
                .any(|i| i.manifest.digest == digest && i.tags.iter().any(|x| x == t)),
            None => registry.images(name).await?.iter().any(|i| i.manifest.digest == digest),
        };
        if exists {
            return Err(Failure::new(
                "ImageAlreadyExistsException",
                format!(
                    "Image with digest '{digest}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                    tag.unwrap_or("null"),
                    self.registry_id()
                ),
            ));
        }
        let reference = tag.unwrap_or(&digest);
        let bytes = bytes::Bytes::copy_from_slice(manifest.as_bytes());
        let pushed = match registry.put_manifest(name, reference, self.str("imageManifestMediaType"), bytes).await {
            // A child manifest of an index is an image, not a layer.
            Err(RegistryError::ManifestBlobUnknown(child)) if lists_manifest(manifest, &child) => {
                return Err(Failure::new(
                    "ReferencedImagesNotFoundException",
                    format!("The manifest list references images that do not exist in the repository: [{child}]"),
                ))
            }
            Err(RegistryError::ManifestBlobUnknown(layer)) => {
                return Err(Failure::new(
                    "LayersNotFoundException",
                    format!(
                        "Layers with digests '[{layer}]' required for pushing image into repository with name '{name}' in registry with id '{}' do not exist",
                        self.registry_id()
                    ),
                ))
            }
            other => other?,
        };
        let (row, _) = registry.get_manifest(name, &pushed.digest).await?;
        let mut image_id = json!({ "imageDigest": pushed.digest });
        if let Some(t) = tag {
            image_id["imageTag"] = json!(t);
        }
        Ok(json!({ "image": {
            "registryId": self.registry_id(),
            "repositoryName": name,
            "imageId": image_id,
            "imageManifest": manifest,
            "imageManifestMediaType": row.media_type,
        } }))
    }

    async fn batch_delete_image(&self) -> Result<Value, Failure> {
        let (mut deleted, mut failures) = (Vec::new(), Vec::new());
        for (digest, tag, id) in self.image_ids() {
            // Each deletion sees the ones before it, as ECR's batch does.
            let images = self.registry.images(self.name()).await?;
            let image = match self.find(&images, digest, tag) {
                Ok(i) => i,
                Err((code, reason)) => {
                    failures.push(json!({ "imageId": id, "failureCode": code, "failureReason": reason }));
                    continue;
                }
            };
            let digest = image.manifest.digest.clone();
            let gone = match tag {
                Some(t) => self.registry.delete_image(self.name(), None, Some(t)).await,
                None => self.registry.delete_image(self.name(), Some(&digest), None).await,
            };
            if let Err(e @ RegistryError::ManifestReferenced { .. }) = gone {
                let reason = e.to_string();
                failures.push(
                    json!({ "imageId": id, "failureCode": "ImageReferencedByManifestList", "failureReason": reason }),
                );
                continue;
            }
            gone?;
            let mut out = json!({ "imageDigest": digest });
            if let Some(t) = tag {
                out["imageTag"] = json!(t);
            }
            deleted.push(out);
        }
        Ok(json!({ "imageIds": deleted, "failures": failures }))
    }
}

/// Whether an index (or manifest list) names `digest` among its manifests.
fn lists_manifest(manifest: &str, digest: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(manifest).ok().is_some_and(|v| {
        v["manifests"].as_array().is_some_and(|list| list.iter().any(|m| m["digest"].as_str() == Some(digest)))
    })
}
