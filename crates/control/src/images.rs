//! Container-image functions (`PackageType: Image`): the image a
//! CreateFunction or UpdateFunctionCode names is looked up in the built-in
//! registry and pinned to its manifest digest, as AWS resolves a tag at
//! deploy time. This module owns that lookup's seam ([`ImageResolver`]) and
//! AWS's rules for it; it must not unpack or run images (the worker does).

use async_trait::async_trait;
use nimbus_core::function::{FunctionImage, ImageLayer};

use crate::*;

/// Lambda's limit on an image (its layers; AWS counts them uncompressed,
/// which the image store enforces again while unpacking).
pub const IMAGE_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// An image as the registry describes it.
#[derive(Debug, Clone)]
pub struct FoundImage {
    /// Digest, resolved URI, the config's entrypoint, command, workdir,
    /// env and the layers (the overrides are left empty).
    pub image: FunctionImage,
    /// The config's `architecture` (OCI's names: `amd64`, `arm64`).
    pub architecture: String,
    /// The layers' sizes together, as stored.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageLookupError {
    /// No such repository, tag or digest.
    #[error("not found")]
    Missing,
    /// Not a URI of this registry.
    #[error("invalid")]
    Invalid,
    #[error("{0}")]
    Failed(String),
}

/// Where control finds images: the built-in registry.
#[async_trait]
pub trait ImageResolver: Send + Sync {
    async fn resolve(&self, image_uri: &str) -> Result<FoundImage, ImageLookupError>;
}

#[async_trait]
impl ImageResolver for nimbus_registry::Registry {
    async fn resolve(&self, image_uri: &str) -> Result<FoundImage, ImageLookupError> {
        use nimbus_registry::RegistryError as E;
        let r = nimbus_registry::Registry::resolve(self, image_uri).await.map_err(|e| match e {
            E::ManifestUnknown(_) | E::NameUnknown { .. } | E::BlobUnknown(_) => ImageLookupError::Missing,
            E::NameInvalid(_) | E::DigestInvalid(_) | E::ManifestInvalid(_) => ImageLookupError::Invalid,
            other => ImageLookupError::Failed(other.to_string()),
        })?;
        let config = r.config.config().clone().unwrap_or_default();
        let diff_ids = r.config.rootfs().diff_ids();
        let layers = r
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| ImageLayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                path: l.path.display().to_string(),
                diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        Ok(FoundImage {
            architecture: r.config.architecture().to_string(),
            size: r.layers.iter().map(|l| l.size).sum(),
            image: FunctionImage {
                uri: image_uri.to_string(),
                resolved_uri: r.resolved_uri,
                digest: r.digest,
                overrides: Default::default(),
                entry_point: config.entrypoint().clone().unwrap_or_default(),
                command: config.cmd().clone().unwrap_or_default(),
                working_directory: config.working_dir().clone().unwrap_or_default(),
                env: config.env().clone().unwrap_or_default(),
                layers,
            },
        })
    }
}

/// The registry's garbage collection keeps what functions and their
/// versions were deployed with.
#[async_trait]
impl nimbus_registry::ImageUsers for Control {
    async fn manifests_in_use(&self) -> std::collections::HashSet<String> {
        // The trait cannot fail; a store that cannot be read here is logged
        // loudly (its collection could take blobs a function holds).
        self.images_in_use().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list the images functions use");
            Default::default()
        })
    }
}

impl Control {
    /// Manifest digests of every configuration's image: an image
    /// function's code digest is its manifest's, so the store's list of
    /// code in use names them (zip digests among them name no manifest).
    pub(crate) async fn images_in_use(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self.meta.referenced_blobs().await?.into_iter().map(|hex| format!("sha256:{hex}")).collect())
    }

    /// Lets functions be made from images of this registry.
    pub fn with_images(mut self, images: Arc<dyn ImageResolver>) -> Self {
        self.images = Some(images);
        self
    }

    /// The image `uri` names, pinned to its digest, with AWS's answers for
    /// one that is missing, malformed, too large or of another architecture.
    pub(crate) async fn resolve_image(&self, uri: Option<String>, other_source: bool) -> Result<FunctionImage> {
        if other_source {
            return Err(invalid("Please don't provide ZipFile or S3 code for a function with packageType Image."));
        }
        let uri =
            uri.ok_or_else(|| invalid("Please provide ImageUri when updating a function with packageType Image."))?;
        let resolver = self
            .images
            .as_ref()
            .ok_or_else(|| invalid("PackageType Image is not supported by this Nimbus node: it has no registry."))?;
        let found = resolver.resolve(&uri).await.map_err(|e| match e {
            ImageLookupError::Missing => {
                invalid(format!("Source image {uri} does not exist. Provide a valid source image."))
            }
            ImageLookupError::Invalid => {
                invalid(format!("Source image {uri} is not valid. Provide a valid source image."))
            }
            ImageLookupError::Failed(why) => Error::Unavailable(format!("looking up {uri}: {why}")),
        })?;
        if found.architecture != "amd64" {
            return Err(invalid(format!(
                "The image manifest, config or layer media type for the source image {uri} is not supported: its architecture is {}, and Nimbus runs x86_64 images.",
                found.architecture
            )));
        }
        if found.size > IMAGE_MAX_BYTES {
            return Err(invalid(format!(
                "Image size must be smaller than {IMAGE_MAX_BYTES} bytes. Provide a smaller source image."
            )));
        }
        Ok(found.image)
    }
}
