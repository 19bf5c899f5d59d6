//! The registry end to end over a real store: uploads, manifests, resolve
//! and garbage collection.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::rules::Algorithm;

fn body(parts: &[&[u8]]) -> impl BodyStream {
    let chunks: Vec<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> =
        parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    futures_util::stream::iter(chunks)
}

async fn registry(dir: &std::path::Path) -> Registry {
    let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.join("m.db")).await.unwrap());
    let account = Account { id: "123456789012".into(), region: "us-east-1".into() };
    Registry::open(dir.join("registry"), meta, account, "secret").await.unwrap()
}

struct Holding(HashSet<String>);

#[async_trait]
impl ImageUsers for Holding {
    async fn manifests_in_use(&self) -> HashSet<String> {
        self.0.clone()
    }
}

/// Pushes a one-layer image; (manifest digest, config digest, layer digest).
async fn push_image(r: &Registry, repo: &str, tag: &str, layer: &[u8]) -> (String, String, String) {
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app"]}, "rootfs": {"type": "layers", "diff_ids": []}}))
    .unwrap();
    let c = Algorithm::Sha256.digest(&config).to_string();
    let l = Algorithm::Sha256.digest(layer).to_string();
    r.put_blob(repo, &c, body(&[&config])).await.unwrap();
    r.put_blob(repo, &l, body(&[layer])).await.unwrap();
    let manifest = json!({"schemaVersion": 2, "mediaType": manifests::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": layer.len()}]});
    let pushed = r
        .put_manifest(repo, tag, Some(manifests::OCI_MANIFEST), Bytes::from(serde_json::to_vec(&manifest).unwrap()))
        .await
        .unwrap();
    (pushed.digest, c, l)
}

#[tokio::test]
async fn chunked_uploads_verify_order_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    assert!(matches!(r.start_upload("app").await, Err(RegistryError::NameUnknown { .. })));
    r.create_repository("app", "MUTABLE", false, BTreeMap::new()).await.unwrap();
    let id = r.start_upload("app").await.unwrap();
    assert_eq!(r.append("app", &id, Some((0, 4)), body(&[b"hello"])).await.unwrap(), 5);
    // Overlap, gap, and a body longer than its range: 416, nothing kept.
    for range in [(3, 7), (6, 9)] {
        assert!(matches!(
            r.append("app", &id, Some(range), body(&[b"wxyz"])).await,
            Err(RegistryError::RangeInvalid { size: 5 })
        ));
    }
    assert!(matches!(
        r.append("app", &id, Some((5, 6)), body(&[b"abc"])).await,
        Err(RegistryError::RangeInvalid { .. })
    ));
    assert_eq!(r.upload_size("app", &id).await.unwrap(), 5);
    assert!(matches!(r.upload_size("other", &id).await, Err(RegistryError::BlobUploadUnknown)));
    let want = Algorithm::Sha512.digest(b"hello world").to_string();
    let got = r.finish_upload("app", &id, &want, Some((5, 10)), body(&[b" world"])).await.unwrap();
    assert_eq!(got.to_string(), want);
    assert_eq!(r.stat_blob("app", &want).await.unwrap(), 11);
    // A wrong digest discards the upload and stores nothing.
    let id = r.start_upload("app").await.unwrap();
    let wrong = Algorithm::Sha256.digest(b"other").to_string();
    assert!(matches!(
        r.finish_upload("app", &id, &wrong, None, body(&[b"data"])).await,
        Err(RegistryError::DigestInvalid(_))
    ));
    assert!(matches!(r.stat_blob("app", &wrong).await, Err(RegistryError::BlobUnknown(_))));
    assert!(matches!(r.upload_size("app", &id).await, Err(RegistryError::BlobUploadUnknown)));
    assert_eq!(std::fs::read_dir(dir.path().join("registry/uploads")).unwrap().count(), 0);
}

#[tokio::test]
async fn manifests_resolve_and_collect() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    r.create_repository("team/app", "IMMUTABLE", false, BTreeMap::new()).await.unwrap();
    r.create_repository("other", "MUTABLE", false, BTreeMap::new()).await.unwrap();
    let (m1, c1, l1) = push_image(&r, "team/app", "v1", b"layer one").await;
    let img = r.resolve("123456789012.dkr.ecr.us-east-1.localhost:9000/team/app:v1").await.unwrap();
    assert_eq!(img.digest, m1);
    assert_eq!(img.resolved_uri, format!("123456789012.dkr.ecr.us-east-1.localhost:9000/team/app@{m1}"));
    assert_eq!(img.layers.len(), 1);
    assert_eq!(std::fs::read(&img.layers[0].path).unwrap(), b"layer one");
    assert_eq!(r.resolve(&format!("127.0.0.1:9000/team/app@{m1}")).await.unwrap().digest, m1);
    assert!(r.resolve("999999999999.dkr.ecr.us-east-1.localhost/team/app:v1").await.is_err());
    assert!(matches!(r.resolve("127.0.0.1:9000/team/app:nope").await, Err(RegistryError::ManifestUnknown(_))));

    // Immutable: v1 cannot move to another image.
    let moved = async {
        let config = b"{}";
        let c = Algorithm::Sha256.digest(config).to_string();
        r.put_blob("team/app", &c, body(&[config])).await.unwrap();
        let m = json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": c, "size": 2}, "layers": []});
        r.put_manifest("team/app", "v1", None, Bytes::from(serde_json::to_vec(&m).unwrap())).await
    };
    assert!(matches!(moved.await, Err(RegistryError::TagImmutable { .. })));

    // A manifest naming a blob the repository lacks.
    let missing = json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c1, "size": 1}, "layers": []});
    assert!(matches!(
        r.put_manifest("other", "x", None, Bytes::from(serde_json::to_vec(&missing).unwrap())).await,
        Err(RegistryError::ManifestBlobUnknown(_))
    ));

    // Held by a function: deleting the image keeps its blobs.
    r.set_users(Arc::new(Holding(HashSet::from([m1.clone()]))));
    r.delete_image("team/app", None, Some("v1")).await.unwrap();
    assert!(r.images("team/app").await.unwrap().iter().all(|i| i.manifest.digest != m1));
    assert!(img.layers[0].path.exists());
    // Released: the next collection takes them; the blob of another image stays.
    let (_, _, l2) = push_image(&r, "other", "latest", b"layer two").await;
    r.set_users(Arc::new(Holding(HashSet::new())));
    r.collect("team/app", vec![m1.clone(), c1.clone(), l1.clone()]).await.unwrap();
    assert!(!img.layers[0].path.exists());
    assert!(r.resolve("127.0.0.1:1/other").await.unwrap().layers[0].path.exists());
    assert!(r.stat_blob("other", &l2).await.is_ok());
    assert!(matches!(r.delete_repository("other", false).await, Err(RegistryError::RepositoryNotEmpty { .. })));
    r.delete_repository("other", true).await.unwrap();
    let left: usize = walk(&dir.path().join("registry/blobs"));
    // What team/app still holds without a manifest stays for its grace: the
    // empty config ("{}") of the refused push, and c1, pushed there too.
    assert_eq!(left, 2);
    assert!(r.stat_blob("team/app", &c1).await.is_ok());
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}

#[tokio::test]
async fn a_crash_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    r.create_repository("app", "MUTABLE", false, BTreeMap::new()).await.unwrap();
    let id = r.start_upload("app").await.unwrap();
    r.append("app", &id, None, body(&[b"partial"])).await.unwrap();
    // A blob file renamed into place whose commit never happened.
    let orphan = Algorithm::Sha256.digest(b"orphan");
    let path = r.files.blob(&orphan);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"orphan").unwrap();
    drop(r);
    let r = registry(dir.path()).await;
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path().join("registry/uploads")).unwrap().count(), 0);
    assert!(matches!(r.upload_size("app", &id).await, Err(RegistryError::BlobUploadUnknown)));
}

#[tokio::test]
async fn collection_spares_pushes_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    r.create_repository("app", "MUTABLE", false, BTreeMap::new()).await.unwrap();
    // A push that has uploaded a blob but not yet its manifest, and one still uploading.
    let early = r.put_blob("app", &Algorithm::Sha256.digest(b"early").to_string(), body(&[b"early"])).await.unwrap();
    let id = r.start_upload("app").await.unwrap();
    r.append("app", &id, None, body(&[b"still "])).await.unwrap();
    // Even a collection told the blob was released spares one committed after it started.
    let late_digest = Algorithm::Sha256.digest(b"late").to_string();
    let collecting = r.collect("app", vec![late_digest.clone()]);
    let (collected, late) = tokio::join!(collecting, r.put_blob("app", &late_digest, body(&[b"late"])));
    assert_eq!(collected.unwrap(), 0);
    late.unwrap();
    assert_eq!(r.stat_blob("app", &early.to_string()).await.unwrap(), 5);
    let whole = Algorithm::Sha256.digest(b"still going").to_string();
    r.finish_upload("app", &id, &whole, None, body(&[b"going"])).await.unwrap();
    assert_eq!(r.stat_blob("app", &whole).await.unwrap(), 11);
    assert_eq!(r.stat_blob("app", &late_digest).await.unwrap(), 4);
}
