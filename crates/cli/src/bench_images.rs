//! `nimbus bench`'s container-image figures (issue 12):
//! - a push of an image of about 170 MB over the registry API, against the
//!   disk's sequential write rate measured in the same run on the same
//!   directory (write and `fsync`, as the registry stores a blob);
//! - the unpack of that new image, as CreateFunction to Active;
//! - cold starts of new functions on an image already unpacked (the
//!   `lambda_runtime` example as a static binary), spaced and back to back;
//! - with `--python-image` (an OCI layout made by
//!   `examples/container-images/build-python-image.sh`), the Python image's
//!   cold start against a zip Python function's, measured alike.
//!
//! Images are pushed the way skopeo pushes them (monolithic blob uploads,
//! then the manifest), with the ECR login password as Basic credentials.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use sha2::Digest;

use crate::bench::{cold_starts, percentiles, round, Bench, Runtime};
use crate::client::Client;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The issue's image size.
const BIG_IMAGE_MB: usize = 170;

/// The registry under `/v2/`, logged in as ECR's `AWS` user.
pub(crate) struct Registry {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
}

impl Registry {
    pub(crate) async fn login(client: &Client, endpoint: &str) -> anyhow::Result<Self> {
        let headers = [
            ("x-amz-target", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let (_, out) = client.send("ecr", "POST", "/", Some(b"{}".to_vec()), &headers).await?;
        let out: Value = serde_json::from_slice(&out)?;
        let token = out["authorizationData"][0]["authorizationToken"].as_str().context("no ECR token")?;
        Ok(Self { http: reqwest::Client::new(), endpoint: endpoint.to_string(), auth: format!("Basic {token}") })
    }

    pub(crate) async fn create_repository(client: &Client, name: &str) -> anyhow::Result<()> {
        let headers = [
            ("x-amz-target", "AmazonEC2ContainerRegistry_V20150921.CreateRepository"),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let body = serde_json::to_vec(&json!({"repositoryName": name}))?;
        client.send("ecr", "POST", "/", Some(body), &headers).await.map(drop)
    }

    /// Uploads a blob from a file (streamed), unless the registry has it.
    async fn blob(&self, repo: &str, file: &Path, digest: &str) -> anyhow::Result<()> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.endpoint);
        if self.http.head(&url).header("authorization", &self.auth).send().await?.status().is_success() {
            return Ok(());
        }
        let started = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.endpoint))
            .header("authorization", &self.auth)
            .send()
            .await?;
        anyhow::ensure!(started.status().as_u16() == 202, "starting an upload answered {}", started.status());
        let location = started.headers().get("location").and_then(|v| v.to_str().ok()).context("no Location")?;
        let location = if location.starts_with('/') { format!("{}{location}", self.endpoint) } else { location.into() };
        let sep = if location.contains('?') { '&' } else { '?' };
        let f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        // Read in large pieces, as skopeo's copy does (reqwest's own file body reads 4 KB at a time).
        let body = futures_util::stream::try_unfold(f, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((n > 0).then(|| (bytes::Bytes::from(buf), f)))
        });
        let done = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .header("authorization", &self.auth)
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        anyhow::ensure!(done.status().as_u16() == 201, "uploading {digest} answered {}", done.status());
        Ok(())
    }

    async fn manifest(&self, repo: &str, tag: &str, media_type: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.endpoint))
            .header("authorization", &self.auth)
            .header("content-type", media_type)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "pushing the manifest answered {}", r.status());
        Ok(())
    }

    /// Pushes a one-image OCI layout's `tag` (as built by the recipes) to `repo:tag`.
    pub(crate) async fn push_layout(&self, layout: &Path, tag: &str, repo: &str) -> anyhow::Result<()> {
        let blob_path = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let entry = index["manifests"]
            .as_array()
            .and_then(|m| m.iter().find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag))
            .with_context(|| format!("{} has no tag {tag}", layout.display()))?;
        let digest = entry["digest"].as_str().context("no manifest digest")?;
        let body = std::fs::read(blob_path(digest))?;
        let manifest: Value = serde_json::from_slice(&body)?;
        let blobs = manifest["layers"].as_array().into_iter().flatten().chain([&manifest["config"]]);
        for b in blobs {
            let d = b["digest"].as_str().context("a blob without digest")?;
            self.blob(repo, &blob_path(d), d).await?;
        }
        let media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
        self.manifest(repo, tag, &media_type, body).await
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// An OCI layout in `dir` with one image `tag`: the given files (path,
/// bytes, mode) as one gzip layer, and `entrypoint`. Returns the layer's
/// uncompressed size.
pub(crate) fn write_layout(
    dir: &Path,
    tag: &str,
    files: &[(String, Vec<u8>, u32)],
    entrypoint: &[&str],
) -> anyhow::Result<u64> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        std::fs::write(blobs.join(&digest[7..]), bytes)?;
        Ok((digest, bytes.len()))
    };
    let staged = dir.join("layer.tar.gz");
    let mut diff = sha2::Sha256::new();
    let mut raw = 0u64;
    {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&staged)?, flate2::Compression::fast());
        // Hashes (for the diff_id) and counts the uncompressed tar on its way.
        let tee = Tee { inner: gz, hash: &mut diff, count: &mut raw };
        let mut tar = tar::Builder::new(tee);
        for (path, bytes, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            tar.append_data(&mut h, path, bytes.as_slice())?;
        }
        tar.into_inner()?.inner.finish()?.sync_all()?;
    }
    let layer_digest = sha256_file(&staged)?;
    let layer_size = std::fs::metadata(&staged)?.len();
    std::fs::rename(&staged, blobs.join(&layer_digest[7..]))?;
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex::encode(diff.finalize()))]},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(raw)
}

/// A writer that hashes and counts what passes through it.
struct Tee<'a, W> {
    inner: W,
    hash: &'a mut sha2::Sha256,
    count: &'a mut u64,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        *self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The binary as `bootstrap`, with the dynamic loader and libraries `ldd`
/// names at their paths (as examples/container-images/build-rust-image.sh
/// does), so that a binary not built for musl runs from scratch too.
fn binary_and_libraries(binary: &Path) -> anyhow::Result<Vec<(String, Vec<u8>, u32)>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut files = vec![("bootstrap".to_string(), read(binary)?, 0o755)];
    let ldd = std::process::Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&ldd.stdout);
    for lib in text.split_whitespace().filter(|w| w.starts_with('/')) {
        let real = std::fs::canonicalize(lib)?;
        files.push((lib.trim_start_matches('/').to_string(), read(&real)?, 0o755));
    }
    Ok(files)
}

/// Sequential write of `bytes` into a new file in `dir`, synced: MB/s.
fn disk_write_floor(dir: &Path, bytes: usize) -> anyhow::Result<f64> {
    let path = dir.join("bench-disk-floor");
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..bytes >> 20 {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let rate = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Creates an image function from `uri`, waiting until it is Active.
async fn create_image_function(b: &Bench, name: &str, uri: &str) -> anyhow::Result<()> {
    let body = json!({
        "FunctionName": name, "PackageType": "Image", "Code": {"ImageUri": uri},
        "Role": "arn:aws:iam::000000000000:role/bench", "MemorySize": 1024, "Timeout": 60,
    });
    b.client.call("POST", "/2015-03-31/functions", Some(serde_json::to_vec(&body)?)).await?;
    b.client.wait_ready(name).await.map(drop)
}

/// Spaced and back-to-back cold starts, as the functions section reports them.
async fn cold_figures<F, Fut>(b: &Bench, n: usize, make: F) -> anyhow::Result<Value>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let (mut spaced, mut back_to_back) = cold_starts(b, n, n, make).await?;
    Ok(json!({"spaced_ms": percentiles(&mut spaced), "back_to_back_ms": percentiles(&mut back_to_back)}))
}

/// The machine's floor under the static image's cold start: the same
/// binary started outside any sandbox (no namespaces, cgroup or image
/// root), from its spawn to its first request (`/next`) on a listener of
/// ours; `n` spaced as the cold starts are, then `n` back to back. On a VM
/// an idle CPU's wake-up is in the spaced figure, as it is in the cold
/// starts'.
async fn bootstrap_floor(binary: &Path, n: usize) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?.to_string();
    let once = || async {
        let t = Instant::now();
        let mut child = tokio::process::Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api)
            .envs([("AWS_LAMBDA_FUNCTION_NAME", "floor"), ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")])
            .envs([("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"), ("AWS_LAMBDA_LOG_STREAM_NAME", "floor")])
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/floor")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        let (mut stream, _) =
            accepted.with_context(|| format!("{} made no request to the Runtime API in 10 s", binary.display()))??;
        let mut first = [0u8; 64];
        tokio::io::AsyncReadExt::read(&mut stream, &mut first).await?;
        let took = t.elapsed().as_secs_f64() * 1000.0;
        child.kill().await?;
        anyhow::Ok(took)
    };
    let (mut spaced, mut together) = (Vec::new(), Vec::new());
    for _ in 0..n {
        tokio::time::sleep(crate::bench::COLD_GAP).await;
        spaced.push(once().await?);
    }
    for _ in 0..n {
        together.push(once().await?);
    }
    Ok(json!({"spaced_ms": percentiles(&mut spaced), "back_to_back_ms": percentiles(&mut together)}))
}

/// The figures; `rust_hello` is the static `lambda_runtime` binary.
pub async fn figures(
    b: &Bench,
    endpoint: &str,
    data_dir: &Path,
    rust_hello: &Path,
    python: Option<(&Runtime, &Path)>,
    samples: usize,
    quick: bool,
) -> anyhow::Result<Value> {
    let reg = Registry::login(&b.client, endpoint).await?;
    let work = tempfile::tempdir()?;

    // Incompressible files, so that the layer is as large as the image.
    let big_mb = if quick { 8 } else { BIG_IMAGE_MB };
    let files: Vec<(String, Vec<u8>, u32)> = (0..big_mb)
        .map(|i| {
            let bytes: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
            (format!("data/f{i}"), bytes, 0o644)
        })
        .collect();
    let big = work.path().join("big");
    let rootfs_bytes = write_layout(&big, "v1", &files, &["/data/f0"])?;
    drop(files);
    let pushed_bytes: u64 = walkdir::WalkDir::new(big.join("blobs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let floor_mbps = disk_write_floor(data_dir, pushed_bytes as usize)?;
    Registry::create_repository(&b.client, "bench-big").await?;
    let t = Instant::now();
    reg.push_layout(&big, "v1", "bench-big").await?;
    let push_mbps = pushed_bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let host = endpoint.trim_start_matches("http://");
    let t = Instant::now();
    create_image_function(b, "bench-image-unpack", &format!("{host}/bench-big:v1")).await?;
    let unpack_s = t.elapsed().as_secs_f64();
    b.delete("bench-image-unpack").await?;

    let small = work.path().join("static");
    write_layout(&small, "v1", &binary_and_libraries(rust_hello)?, &["/bootstrap"])?;
    Registry::create_repository(&b.client, "bench-static").await?;
    reg.push_layout(&small, "v1", "bench-static").await?;
    let uri = format!("{host}/bench-static:v1");
    // Unpacked once, before the cold starts measured.
    create_image_function(b, "bench-static-first", &uri).await?;
    let static_cold = cold_figures(b, samples, |i| {
        let (name, uri) = (format!("bench-static-{i}"), uri.clone());
        async move { create_image_function(b, &name, &uri).await.map(|()| name) }
    })
    .await?;
    b.delete("bench-static-first").await?;
    let floor = bootstrap_floor(rust_hello, samples).await?;
    let over_floor =
        |key: &str| round(static_cold[key]["p50"].as_f64().unwrap_or(0.0) / floor[key]["p50"].as_f64().unwrap_or(1.0));
    let static_to_floor = json!({"spaced": over_floor("spaced_ms"), "back_to_back": over_floor("back_to_back_ms")});

    let python_figures = match python {
        Some((rt, layout)) => {
            Registry::create_repository(&b.client, "bench-python").await?;
            reg.push_layout(layout, "v1", "bench-python").await?;
            let uri = format!("{host}/bench-python:v1");
            create_image_function(b, "bench-python-first", &uri).await?;
            let image = cold_figures(b, samples, |i| {
                let (name, uri) = (format!("bench-python-image-{i}"), uri.clone());
                async move { create_image_function(b, &name, &uri).await.map(|()| name) }
            })
            .await?;
            b.delete("bench-python-first").await?;
            let zip = cold_figures(b, samples, |_| b.create(rt)).await?;
            let ratio =
                |key: &str| round(image[key]["p50"].as_f64().unwrap_or(0.0) / zip[key]["p50"].as_f64().unwrap_or(1.0));
            json!({"image": image, "zip": zip, "spaced_p50_ratio": ratio("spaced_ms"), "back_to_back_p50_ratio": ratio("back_to_back_ms")})
        }
        None => Value::Null,
    };

    Ok(json!({
        "push_mb": round(pushed_bytes as f64 / 1e6),
        "push_mbps": round(push_mbps),
        "disk_write_floor_mbps": round(floor_mbps),
        "push_to_floor": round(push_mbps / floor_mbps),
        "unpack_rootfs_mb": round(rootfs_bytes as f64 / 1e6),
        "unpack_create_to_active_s": round(unpack_s),
        "unpack_mbps": round(rootfs_bytes as f64 / 1e6 / unpack_s),
        "static_cold": static_cold,
        "static_floor": floor,
        "static_cold_to_floor": static_to_floor,
        "python": python_figures,
    }))
}
