//! `nimbus bench`'s S3 figures, against the measured server: 4 KiB GET and
//! PUT rates through the signed S3 API, one large PUT and GET against this
//! disk's own sequential throughput and the MD5 rate measured in the same
//! run, and the time from an acknowledged PUT to the start of the notified
//! function's handler.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::bench::{loop_for, percentiles, round, Bench, Runtime};
use crate::client::Client;

/// Sizes and counts of a run.
pub struct S3Plan {
    pub secs: f64,
    pub large_bytes: u64,
    pub notified: usize,
}

const CHUNK: usize = 1 << 20;
/// The handler notes when it starts (wall clock, shared with the bench on
/// this machine) and the key that woke it.
const NOTIFIED_APP: &str = "import time\n\ndef handler(event, context):\n    t = time.time_ns()\n    print(f\"STARTED {t} {event['Records'][0]['s3']['object']['key']}\")\n";

async fn put(client: &Client, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
    client.send("s3", "PUT", path, Some(body), &[("content-type", "application/octet-stream")]).await.map(drop)
}

/// MB/s of `bytes` in `d`.
fn mbps(bytes: u64, d: Duration) -> f64 {
    round(bytes as f64 / (1 << 20) as f64 / d.as_secs_f64())
}

/// Drops a file's pages from the page cache, so the next read comes from
/// the disk (the file is clean: it was fsynced).
fn uncache(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    Ok(())
}

/// The disk's sequential write (fsynced) and read rates, MB/s, with plain
/// std::fs in the server's data directory.
fn disk_floor(dir: &Path, bytes: u64, chunk: &[u8]) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("bench-disk-floor");
    let t = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let write = mbps(bytes, t.elapsed());
    drop(f);
    uncache(&path)?;
    let t = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; chunk.len()];
    while f.read(&mut buf)? > 0 {}
    let read = mbps(bytes, t.elapsed());
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

/// The rate, MB/s, at which this machine computes MD5 (one core, the
/// `md-5` crate the store uses): a single-part PUT's ETag is the MD5 of its
/// body, which no parallelism can split, so it bounds a large PUT as the
/// disk does.
fn md5_floor(bytes: u64, chunk: &[u8]) -> f64 {
    use md5::Digest;
    let t = Instant::now();
    let mut md5 = md5::Md5::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        md5.update(&chunk[..n]);
        left -= n as u64;
    }
    std::hint::black_box(md5.finalize());
    mbps(bytes, t.elapsed())
}

/// One large object PUT then GET (from the disk, not the page cache);
/// MB/s of each.
async fn large_object(client: &Client, data_dir: &Path, bytes: u64, chunk: bytes::Bytes) -> anyhow::Result<(f64, f64)> {
    let chunks = bytes.div_ceil(CHUNK as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let n = (bytes - i * CHUNK as u64).min(CHUNK as u64) as usize;
        Ok::<_, std::io::Error>(chunk.slice(..n))
    }));
    let t = Instant::now();
    client.send_s3_streaming("PUT", "/bench/large", Some((reqwest::Body::wrap_stream(stream), bytes))).await?;
    let put = mbps(bytes, t.elapsed());
    for e in std::fs::read_dir(data_dir.join("objects").join("data"))? {
        uncache(&e?.path())?;
    }
    let t = Instant::now();
    let mut body = client.send_s3_streaming("GET", "/bench/large", None).await?.bytes_stream();
    let mut got = 0u64;
    while let Some(c) = body.next().await {
        got += c?.len() as u64;
    }
    anyhow::ensure!(got == bytes, "GET returned {got} of {bytes} bytes");
    Ok((put, mbps(bytes, t.elapsed())))
}

/// The handler's start lines logged so far: key -> start, ns since the epoch.
pub(crate) async fn started(client: &Client, function: &str) -> anyhow::Result<Vec<(String, u128)>> {
    let query = json!({"logGroupName": format!("/aws/lambda/{function}"), "filterPattern": "STARTED"});
    let sent = client
        .send(
            "logs",
            "POST",
            "/",
            Some(serde_json::to_vec(&query)?),
            &[("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "Logs_20140328.FilterLogEvents")],
        )
        .await;
    let body = match sent {
        Ok((_, body)) => body,
        // The function has not logged yet.
        Err(e) if crate::client::AwsError::is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let page: Value = serde_json::from_slice(&body)?;
    Ok(page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let mut words = e["message"].as_str()?.split_whitespace().skip_while(|w| *w != "STARTED").skip(1);
            let t = words.next()?.parse().ok()?;
            Some((words.next()?.to_string(), t))
        })
        .collect())
}

/// PUT acknowledged → the notified handler starts, ms; one PUT at a time on
/// a warm function.
async fn notified(b: &Bench, python: &Runtime, n: usize) -> anyhow::Result<Value> {
    let zip = crate::bench::zip_of(&[("app.py", NOTIFIED_APP.as_bytes(), 0o644)])?;
    let rt = Runtime { id: python.id.clone(), handler: "app.handler", zip, spawn: Vec::new() };
    let name = b.create(&rt).await?;
    let arn = b.client.call("GET", &format!("/2015-03-31/functions/{name}/configuration"), None).await?["FunctionArn"]
        .as_str()
        .context("no FunctionArn")?
        .to_string();
    let grant = json!({
        "StatementId": "s3", "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com",
        "SourceArn": "arn:aws:s3:::bench-notified",
    });
    b.client.call("POST", &format!("/2015-03-31/functions/{name}/policy"), Some(serde_json::to_vec(&grant)?)).await?;
    put(&b.client, "/bench-notified", Vec::new()).await?;
    let config = format!(
        "<NotificationConfiguration><CloudFunctionConfiguration><Id>bench</Id><CloudFunction>{arn}</CloudFunction><Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration></NotificationConfiguration>"
    );
    b.client
        .send(
            "s3",
            "PUT",
            "/bench-notified?notification",
            Some(config.into_bytes()),
            &[("content-type", "application/xml")],
        )
        .await?;
    let mut samples = Vec::new();
    // The first wakes the environment; it is not counted.
    for i in 0..=n {
        let key = format!("k{i}");
        put(&b.client, &format!("/bench-notified/{key}"), vec![b'x'; 16]).await?;
        let acked = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = loop {
            if let Some((_, t)) = started(&b.client, &name).await?.into_iter().find(|(k, _)| *k == key) {
                break t;
            }
            anyhow::ensure!(Instant::now() < deadline, "the notification of {key} never reached {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The notification is queued with the PUT's commit, before its answer
        // is sent: a handler may start before the client has the answer,
        // which is no wait at all.
        if i > 0 {
            samples.push(((start as f64 - acked as f64) / 1e6).max(0.0));
        }
    }
    b.delete(&name).await?;
    Ok(percentiles(&mut samples))
}

/// The S3 section of the report.
pub async fn figures(b: &Bench, data_dir: &Path, python: Option<&Runtime>, plan: &S3Plan) -> anyhow::Result<Value> {
    let client = b.client.clone();
    put(&client, "/bench", Vec::new()).await?;
    let small = vec![b'x'; 4096];
    put(&client, "/bench/small", small.clone()).await?;
    let get_rps = loop_for(32, plan.secs, {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                let (_, body) = client.send("s3", "GET", "/bench/small", None, &[]).await?;
                anyhow::ensure!(body.len() == 4096, "short GET");
                Ok(())
            }
        }
    })
    .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let put_rps = loop_for(32, plan.secs, {
        let client = client.clone();
        move || {
            let (client, small, next) = (client.clone(), small.clone(), next.clone());
            async move { put(&client, &format!("/bench/put-{}", next.fetch_add(1, Ordering::Relaxed)), small).await }
        }
    })
    .await?;

    let chunk: Vec<u8> = (0..CHUNK).map(|_| rand::random::<u8>()).collect();
    let (disk_write, disk_read) = disk_floor(data_dir, plan.large_bytes, &chunk)?;
    let md5 = md5_floor(plan.large_bytes, &chunk);
    let (large_put, large_get) = large_object(&client, data_dir, plan.large_bytes, chunk.into()).await?;
    let notify = match python {
        Some(rt) => notified(b, rt, plan.notified).await?,
        None => Value::Null,
    };
    Ok(json!({
        "get_4k_rps_c32": get_rps.round(),
        "put_4k_rps_c32": put_rps.round(),
        "large_mib": plan.large_bytes >> 20,
        "disk_write_mbps": disk_write,
        "disk_read_mbps": disk_read,
        "large_put_mbps": large_put,
        "large_get_mbps": large_get,
        "md5_mbps": md5,
        "large_put_share": round(large_put / disk_write),
        "large_put_share_of_md5": round(large_put / md5),
        "large_get_share": round(large_get / disk_read),
        "put_to_handler_ms": notify,
    }))
}
