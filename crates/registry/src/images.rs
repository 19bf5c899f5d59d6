//! Manifests, tags, referrers and the catalog, the ECR view of images, and
//! [`Registry::resolve`]. A manifest's bytes are stored as a blob of the
//! repository (so a manifest is also fetchable as a blob, as the spec allows).

use bytes::Bytes;
use nimbus_store::{ManifestDelete, ManifestPut, ManifestRow, PutManifest};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::manifests::{self, DOCKER_LIST, OCI_INDEX};
use crate::rules::{self, Algorithm, Digest, Reference};
use crate::{now_ms, LayerBlob, Registry, RegistryError, ResolvedImage, Result};

/// The largest image configuration read: the manifest's own limit (an
/// image's configuration is a few KB; its history makes it larger).
const CONFIG_MAX: u64 = crate::manifests::MANIFEST_MAX as u64;

/// A stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
    /// The subject's digest, for the `OCI-Subject` header.
    pub subject: Option<String>,
}

/// An image as ECR lists it: a manifest and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest: ManifestRow,
    pub tags: Vec<String>,
}

impl Registry {
    /// The digest a reference (tag or digest) names in the repository.
    async fn digest_of(&self, repository: &str, reference: &str) -> Result<String> {
        match Reference::parse(reference)? {
            Reference::Digest(d) => Ok(d.to_string()),
            Reference::Tag(t) => self
                .meta
                .tag(repository, &t)
                .await?
                .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repository}:{t}"))),
        }
    }

    /// Stores a manifest under a tag or digest reference.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Pushed> {
        let repo = self.repository(repository).await?;
        let reference = Reference::parse(reference)?;
        let parsed = manifests::parse(content_type, &body)?;
        let algorithm = match &reference {
            Reference::Digest(d) => d.algorithm,
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = algorithm.digest(&body);
        if let Reference::Digest(d) = &reference {
            if *d != digest {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest digest {digest} does not match the reference {d}"
                )));
            }
        }
        for (blob, size) in &parsed.blobs {
            match self.meta.repo_blob(repository, blob).await? {
                None => return Err(RegistryError::ManifestBlobUnknown(blob.clone())),
                Some(stored) if stored != *size => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "descriptor of {blob} says {size} bytes, the blob has {stored}"
                    )))
                }
                Some(_) => {}
            }
        }
        // Refusals are found before the manifest's bytes are written; the
        // store's transaction checks again, and a push that loses a race
        // there leaves a file the next start removes.
        if let (Reference::Tag(t), "IMMUTABLE") = (&reference, repo.tag_mutability.as_str()) {
            if self.meta.tag(repository, t).await?.is_some_and(|d| d != digest.to_string()) {
                return Err(RegistryError::TagImmutable { tag: t.clone(), repository: repository.into() });
            }
        }
        let mut image_size = parsed.layers_size;
        for child in &parsed.manifests {
            child.parse::<Digest>()?;
            let row = self
                .meta
                .get_manifest(repository, child)
                .await?
                .ok_or_else(|| RegistryError::ManifestBlobUnknown(child.clone()))?;
            image_size = image_size.max(row.image_size);
        }
        let now = now_ms();
        let row = ManifestRow {
            repository: repository.to_string(),
            digest: digest.to_string(),
            media_type: parsed.media_type,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.clone(),
            size: body.len() as u64,
            image_size,
            pushed_ms: now,
            annotations: parsed.annotations,
        };
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let put = PutManifest {
            row,
            blobs: parsed.blobs.into_iter().map(|(d, _)| d).collect(),
            manifests: parsed.manifests,
            tag: tag.clone(),
            now_ms: now,
        };
        let staged = self.staged(&body).await?;
        let _shared = self.gc.read().await;
        let files = self.files.clone();
        let d = digest.clone();
        tokio::task::spawn_blocking(move || files.commit(&staged, &d)).await.map_err(std::io::Error::other)??;
        match self.meta.put_manifest(&put).await? {
            ManifestPut::Stored => Ok(Pushed { digest: digest.to_string(), subject: parsed.subject }),
            ManifestPut::NoRepository => Err(self.name_unknown(repository)),
            ManifestPut::MissingBlob(d) | ManifestPut::MissingManifest(d) => Err(RegistryError::ManifestBlobUnknown(d)),
            ManifestPut::TagImmutable => {
                Err(RegistryError::TagImmutable { tag: tag.unwrap_or_default(), repository: repository.into() })
            }
        }
    }

    /// A manifest by tag or digest, with its bytes.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<(ManifestRow, Bytes)> {
        self.repository(repository).await?;
        let digest = self.digest_of(repository, reference).await?;
        let row = self
            .meta
            .get_manifest(repository, &digest)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repository}@{digest}")))?;
        let bytes = tokio::fs::read(self.files.blob(&digest.parse()?)).await?;
        Ok((row, Bytes::from(bytes)))
    }

    /// Deletes a manifest by digest (with its tags), or only a tag.
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<()> {
        self.repository(repository).await?;
        match Reference::parse(reference)? {
            Reference::Tag(t) => {
                self.meta
                    .delete_tag(repository, &t)
                    .await?
                    .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repository}:{t}")))?;
            }
            Reference::Digest(d) => self.delete_digest(repository, &d.to_string()).await?,
        }
        Ok(())
    }

    /// Deletes a manifest and its tags, unless an index refers to it.
    async fn delete_digest(&self, repository: &str, digest: &str) -> Result<()> {
        match self.meta.delete_manifest(repository, digest).await? {
            ManifestDelete::Missing => Err(RegistryError::ManifestUnknown(format!("{repository}@{digest}"))),
            ManifestDelete::ReferencedBy(by) => {
                Err(RegistryError::ManifestReferenced { digest: digest.to_string(), by })
            }
            ManifestDelete::Deleted(released) => self.collect(repository, released).await.map(drop),
        }
    }

    /// ECR's image deletion: by digest, the image and its tags; by tag, the
    /// tag, and the image with it once it has no tag left. The digest
    /// deleted, if the image went.
    pub async fn delete_image(&self, repository: &str, digest: Option<&str>, tag: Option<&str>) -> Result<String> {
        self.repository(repository).await?;
        let digest = match (digest, tag) {
            (Some(d), _) => d.parse::<Digest>()?.to_string(),
            (None, Some(t)) => {
                let d = self
                    .meta
                    .tag(repository, t)
                    .await?
                    .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repository}:{t}")))?;
                // Its last tag takes the image with it (and is refused with
                // it, if an index refers to the image); another only the tag.
                let other_tags =
                    self.images(repository).await?.iter().any(|i| i.manifest.digest == d && i.tags.len() > 1);
                if other_tags {
                    self.meta.delete_tag(repository, t).await?;
                    return Ok(d);
                }
                d
            }
            (None, None) => return Err(RegistryError::ManifestInvalid("no image digest or tag given".into())),
        };
        self.delete_digest(repository, &digest).await?;
        Ok(digest)
    }

    /// The repository's images with their tags, oldest push first.
    pub async fn images(&self, repository: &str) -> Result<Vec<Image>> {
        self.repository(repository).await?;
        let rows = self.meta.manifests(repository).await?;
        Ok(rows.into_iter().map(|(manifest, tags)| Image { manifest, tags }).collect())
    }

    /// Tags in lexical order after `last`, at most `n`, and whether more follow.
    pub async fn tags(&self, repository: &str, last: Option<&str>, n: u32) -> Result<(Vec<String>, bool)> {
        self.repository(repository).await?;
        let mut tags = self.meta.list_tags(repository, last, n.saturating_add(1)).await?;
        let more = tags.len() > n as usize;
        tags.truncate(n as usize);
        Ok((tags, more))
    }

    /// Repository names after `last`, at most `n`, and whether more follow.
    pub async fn catalog(&self, last: Option<&str>, n: u32) -> Result<(Vec<String>, bool)> {
        let mut names: Vec<String> =
            self.meta.list_repositories(last, n.saturating_add(1)).await?.into_iter().map(|r| r.name).collect();
        let more = names.len() > n as usize;
        names.truncate(n as usize);
        Ok((names, more))
    }

    /// The manifests whose subject is `digest`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRow>> {
        self.repository(repository).await?;
        let d: Digest = digest.parse()?;
        let rows = self.meta.referrers(repository, &d.to_string()).await?;
        Ok(rows.into_iter().filter(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t))).collect())
    }

    /// Finds an image by URI: `<acct>.dkr.ecr.<region>.<host>:<port>/<repo>[:tag|@digest]`
    /// or `<host>:<port>/<repo>[:tag|@digest]` (no tag means `latest`). For
    /// an index, the linux/amd64 manifest is chosen.
    pub async fn resolve(&self, image_uri: &str) -> Result<ResolvedImage> {
        let (host, repository, reference) = self.split_uri(image_uri)?;
        let (mut row, mut bytes) = self.get_manifest(&repository, &reference).await?;
        if row.media_type == OCI_INDEX || row.media_type == DOCKER_LIST {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
            let child = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform()
                        .as_ref()
                        .is_some_and(|p| p.architecture().to_string() == "amd64" && p.os().to_string() == "linux")
                })
                .ok_or_else(|| RegistryError::ManifestUnknown(format!("{image_uri} has no linux/amd64 image")))?;
            (row, bytes) = self.get_manifest(&repository, child.digest().as_ref()).await?;
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let config_digest: Digest = manifest.config().digest().as_ref().parse()?;
        // The configuration is a blob like any other, of any size its pusher
        // chose, and every pull (a function's deploy, each task) reads it whole.
        let config_path = self.files.blob(&config_digest);
        let config_size = tokio::fs::metadata(&config_path).await?.len();
        if config_size > CONFIG_MAX {
            return Err(RegistryError::ManifestInvalid(format!(
                "image configuration {config_digest} is {config_size} bytes, over the limit of {CONFIG_MAX}"
            )));
        }
        let config_bytes = tokio::fs::read(config_path).await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| RegistryError::ManifestInvalid(format!("image configuration: {e}")))?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| {
                let d: Digest = l.digest().as_ref().parse()?;
                Ok(LayerBlob {
                    digest: d.to_string(),
                    media_type: l.media_type().to_string(),
                    size: l.size(),
                    path: self.files.blob(&d),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResolvedImage {
            resolved_uri: format!("{host}/{repository}@{}", row.digest),
            repository,
            digest: row.digest,
            config,
            layers,
        })
    }

    /// (registry host, repository, reference) of an image URI.
    fn split_uri(&self, uri: &str) -> Result<(String, String, String)> {
        let bad = || RegistryError::NameInvalid(format!("invalid image URI {uri:?}"));
        let (host, rest) = uri.split_once('/').ok_or_else(bad)?;
        if let Some(ecr) = host.split_once(".dkr.ecr.") {
            let region_ok =
                ecr.1.strip_prefix(&self.account.region).is_some_and(|r| r.is_empty() || r.starts_with(['.', ':']));
            if ecr.0 != self.account.id || !region_ok {
                return Err(RegistryError::NameInvalid(format!(
                    "{uri:?} is not in this registry ({}, {})",
                    self.account.id, self.account.region
                )));
            }
        }
        let (repository, reference) = match rest.split_once('@') {
            Some((r, d)) => (r, d),
            None => match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (rest, "latest"),
            },
        };
        rules::check_name(repository)?;
        Ok((host.to_string(), repository.to_string(), reference.to_string()))
    }
}
