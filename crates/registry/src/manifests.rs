//! What a pushed manifest must be: one of the four manifest formats (OCI
//! manifest and index, Docker schema 2 manifest and manifest list), parsed
//! with `oci-spec`, with known layer media types for images, and what it
//! refers to. Pure; whether the referenced blobs exist is checked in the
//! store's transaction.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;

use crate::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The formats the registry accepts, in the order `Accept` lists are built.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Manifests may be up to 4 MiB, as ECR and the spec's guidance allow.
pub const MANIFEST_MAX: usize = 4 << 20;

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    /// Blobs that must exist (config, layers), with their declared sizes.
    pub blobs: Vec<(String, u64)>,
    /// Manifests an index lists.
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// The layers' bytes (for an index, 0: filled from its children).
    pub layers_size: u64,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

/// The media type of a `Content-Type` header, without parameters.
fn bare(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Parses and checks a manifest sent with `content_type`.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, RegistryError> {
    if body.len() > MANIFEST_MAX {
        return Err(invalid(format!("manifest is larger than {MANIFEST_MAX} bytes")));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("manifest is not JSON: {e}")))?;
    let obj = doc.as_object().ok_or_else(|| invalid("manifest is not a JSON object"))?;
    let declared = match obj.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let header = content_type.map(bare).filter(|t| MANIFEST_TYPES.contains(t));
    let media_type = match (header, declared) {
        (Some(h), Some(d)) if h != d => {
            return Err(invalid(format!("Content-Type {h} does not match the manifest's mediaType {d}")))
        }
        (Some(h), _) => h,
        (None, Some(d)) => d,
        // An OCI manifest may omit mediaType; its shape says which it is.
        (None, None) if obj.contains_key("manifests") => OCI_INDEX,
        (None, None) => OCI_MANIFEST,
    }
    .to_string();
    if content_type.map(bare).is_some_and(|t| !t.is_empty() && !MANIFEST_TYPES.contains(&t) && t != "application/json")
    {
        return Err(invalid(format!("unsupported manifest media type {}", bare(content_type.unwrap_or_default()))));
    }
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => image(&media_type, doc),
        OCI_INDEX | DOCKER_LIST => index(&media_type, doc),
        other => Err(invalid(format!("unsupported manifest media type {other}"))),
    }
}

fn image(media_type: &str, doc: Value) -> Result<Parsed, RegistryError> {
    let m: ImageManifest = serde_json::from_value(doc).map_err(|e| invalid(format!("invalid image manifest: {e}")))?;
    let config_type = m.config().media_type().to_string();
    let mut blobs = vec![descriptor_ref(m.config())];
    let mut layers_size = 0u64;
    // Any layer media type is stored, as the image spec asks ("MUST NOT
    // error on ... a mediaType that is unknown") and ECR does: build
    // attestations and signatures are image manifests with JSON layers.
    // What cannot be unpacked is refused when an image is run.
    for layer in m.layers() {
        layers_size = layers_size.saturating_add(layer.size());
        // Layers with URLs are fetched from elsewhere (foreign layers).
        if layer.urls().as_ref().is_none_or(Vec::is_empty) {
            blobs.push(descriptor_ref(layer));
        }
    }
    let artifact_type = m.artifact_type().as_ref().map(ToString::to_string).or(Some(config_type));
    Ok(Parsed {
        media_type: media_type.to_string(),
        blobs,
        manifests: vec![],
        subject: m.subject().as_ref().map(|s| s.digest().to_string()),
        artifact_type,
        annotations: m.annotations().as_ref().map(|a| a.clone().into_iter().collect()),
        layers_size,
    })
}

fn index(media_type: &str, doc: Value) -> Result<Parsed, RegistryError> {
    let i: ImageIndex = serde_json::from_value(doc).map_err(|e| invalid(format!("invalid image index: {e}")))?;
    let mut manifests = Vec::new();
    for child in i.manifests() {
        let t = child.media_type().to_string();
        if !MANIFEST_TYPES.contains(&t.as_str()) {
            return Err(invalid(format!("index lists a descriptor of media type {t}, not a manifest")));
        }
        manifests.push(child.digest().to_string());
    }
    Ok(Parsed {
        media_type: media_type.to_string(),
        blobs: vec![],
        manifests,
        subject: i.subject().as_ref().map(|s| s.digest().to_string()),
        artifact_type: i.artifact_type().as_ref().map(ToString::to_string),
        annotations: i.annotations().as_ref().map(|a| a.clone().into_iter().collect()),
        layers_size: 0,
    })
}

fn descriptor_ref(d: &Descriptor) -> (String, u64) {
    (d.digest().to_string(), d.size())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(layer_type: &str) -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 7},
            "layers": [{"mediaType": layer_type, "digest": D2, "size": 100}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": D1, "size": 3},
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn image_manifests_list_their_blobs() {
        for layer in
            ["application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip"]
        {
            let p = parse(Some(OCI_MANIFEST), &bytes(&manifest(layer))).unwrap();
            assert_eq!(p.blobs, [(D1.to_string(), 7), (D2.to_string(), 100)]);
            assert_eq!(p.subject.as_deref(), Some(D1));
            assert_eq!(p.layers_size, 100);
        }
        // Without a Content-Type the body's mediaType decides.
        assert_eq!(
            parse(None, &bytes(&manifest("application/vnd.oci.image.layer.v1.tar"))).unwrap().media_type,
            OCI_MANIFEST
        );
    }

    #[test]
    fn bad_manifests_are_manifest_invalid() {
        let good = manifest("application/vnd.oci.image.layer.v1.tar");
        let mut wrong_version = good.clone();
        wrong_version["schemaVersion"] = json!(1);
        let mut no_config = good.clone();
        no_config.as_object_mut().unwrap().remove("config");
        let mut bad_digest = good.clone();
        bad_digest["layers"][0]["digest"] = json!("sha256:nothex");
        let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
            (Some(OCI_MANIFEST), b"{not json".to_vec()),
            (Some(OCI_MANIFEST), b"[]".to_vec()),
            (Some(OCI_MANIFEST), bytes(&wrong_version)),
            (Some(OCI_MANIFEST), bytes(&no_config)),
            (Some(OCI_MANIFEST), bytes(&bad_digest)),
            (Some(DOCKER_MANIFEST), bytes(&good)),
            (Some("application/vnd.example.unknown+json"), bytes(&good)),
        ];
        // A layer of a type no runtime unpacks is still a manifest to store.
        assert!(parse(Some(OCI_MANIFEST), &bytes(&manifest("application/vnd.in-toto+json"))).is_ok());
        for (ct, body) in cases {
            assert!(
                matches!(parse(ct, &body), Err(RegistryError::ManifestInvalid(_))),
                "{ct:?} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn artifacts_may_carry_any_layer_type() {
        let mut v = manifest("application/x-anything");
        v["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json");
        v["artifactType"] = json!("application/vnd.example.sbom");
        let p = parse(Some(OCI_MANIFEST), &bytes(&v)).unwrap();
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.example.sbom"));
    }

    #[test]
    fn indexes_list_manifests_only() {
        let v = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": D1, "size": 5,
                           "platform": {"architecture": "amd64", "os": "linux"}}]});
        let p = parse(Some(DOCKER_LIST), &bytes(&v)).unwrap();
        assert_eq!(p.manifests, [D1]);
        let mut layer = v.clone();
        layer["manifests"][0]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
        assert!(parse(Some(DOCKER_LIST), &bytes(&layer)).is_err());
    }
}
