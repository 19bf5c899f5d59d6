//! A small signed client of the Nimbus API for the CLI commands. It signs
//! with SigV4 like any AWS SDK, so the CLI has no side door into the server.

use std::io::IsTerminal;
use std::time::SystemTime;

use anyhow::{anyhow, Context};
use nimbus_api::sigv4::{sign_headers, sign_s3_unsigned_payload, Credentials};
use serde_json::Value;

use crate::serve::{KeyFile, KEY_FILE};
use crate::ClientArgs;

pub struct Client {
    endpoint: String,
    region: String,
    creds: Credentials,
    http: reqwest::Client,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Percent-encodes one path label, as AWS SDKs do (nothing kept but unreserved).
pub fn label(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let endpoint = args
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:9070".into())
            .trim_end_matches('/')
            .to_string();
        let region = args
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let creds = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Credentials { access_key_id, secret_access_key },
            _ => match (env("NIMBUS_ACCESS_KEY_ID"), env("NIMBUS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => Credentials { access_key_id, secret_access_key },
                _ => {
                    let path = args.data_dir.join(KEY_FILE);
                    let k: KeyFile = serde_json::from_slice(&std::fs::read(&path).with_context(|| {
                        format!("no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or point --data-dir at a server's data directory ({} not readable)", path.display())
                    })?)
                    .with_context(|| format!("parsing the key file {}", path.display()))?;
                    Credentials { access_key_id: k.access_key_id, secret_access_key: k.secret_access_key }
                }
            },
        };
        Ok(Self { endpoint, region, creds, http: reqwest::Client::new() })
    }

    /// A client of a known endpoint and key pair.
    pub fn with(endpoint: String, region: String, creds: Credentials) -> Self {
        Self { endpoint, region, creds, http: reqwest::Client::new() }
    }

    /// The server's address, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends a signed request and returns the JSON body (`Null` when empty).
    /// Errors carry AWS's error type and message.
    pub async fn call(&self, method: &str, path_and_query: &str, body: Option<Vec<u8>>) -> anyhow::Result<Value> {
        let (_, bytes) = self.send("lambda", method, path_and_query, body, &[]).await?;
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    /// Waits until a function has finished its create or update (`State`
    /// Active, `LastUpdateStatus` Successful), as `aws lambda wait
    /// function-updated-v2` does: Nimbus, like AWS, answers a change before
    /// the new code is ready, and refuses the next change until it is.
    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<Value> {
        let path = format!("/2015-03-31/functions/{}/configuration", label(name));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let cfg = self.call("GET", &path, None).await?;
            match (cfg["State"].as_str(), cfg["LastUpdateStatus"].as_str()) {
                (Some("Active"), Some("Successful")) => return Ok(cfg),
                (Some("Failed"), _) | (_, Some("Failed")) => {
                    anyhow::bail!("function {name} failed to become ready: {}", cfg["StateReason"])
                }
                _ if std::time::Instant::now() > deadline => anyhow::bail!("function {name} did not become ready"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    /// Sends a signed request with extra headers; returns the response
    /// headers and raw body, or AWS's error.
    pub async fn send(
        &self,
        service: &str,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("bad endpoint URL {url}"))?;
        let host = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let body = body.unwrap_or_default();
        let mut headers = vec![("host", host.as_str())];
        if !body.is_empty() && !extra.iter().any(|(k, _)| *k == "content-type") {
            headers.push(("content-type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let signed = sign_headers(&self.creds, &self.region, service, method, &url, &headers, &body, SystemTime::now())
            .map_err(|e| anyhow!("signing failed: {e}"))?;
        let mut req = self.http.request(method.parse()?, parsed);
        for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
            req = req.header(*k, *v);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let len = body.len() as u64;
        let req = if len > 1 << 20 && std::io::stderr().is_terminal() {
            req.body(progress_body(body))
        } else {
            req.body(body)
        };
        let resp = req.send().await.with_context(|| format!("cannot reach Nimbus at {}", self.endpoint))?;
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let header = resp_headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
            let (kind, message) = error_of(header, &bytes);
            return Err(AwsError { kind, status: status.as_u16(), message }.into());
        }
        Ok((resp_headers, bytes))
    }
}

impl Client {
    /// Sends an S3 request with a streamed body (`UNSIGNED-PAYLOAD`) and
    /// hands back the response unread, so large objects stream both ways.
    pub async fn send_s3_streaming(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(reqwest::Body, u64)>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("bad endpoint URL {url}"))?;
        let host = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let signed =
            sign_s3_unsigned_payload(&self.creds, &self.region, method, &url, &[("host", &host)], SystemTime::now())
                .map_err(|e| anyhow!("signing failed: {e}"))?;
        let mut req = self.http.request(method.parse()?, parsed);
        for (k, v) in signed {
            req = req.header(k, v);
        }
        if let Some((body, len)) = body {
            // S3 wants the length up front (no chunked uploads without aws-chunked).
            req = req.header("content-length", len).body(body);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach Nimbus at {}", self.endpoint))?;
        anyhow::ensure!(resp.status().is_success(), "S3 {method} {path_and_query} answered {}", resp.status());
        Ok(resp)
    }
}

/// An error answer's type and message: the JSON protocols' (the type in
/// `x-amzn-ErrorType`, the message in the body), or S3's XML
/// (`<Error><Code>NoSuchBucket</Code><Message>…</Message><BucketName>…`),
/// whose message then names the bucket or key it is about.
fn error_of(header: Option<&str>, body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    if let Some(code) = xml_element(&text, "Code").filter(|_| text.contains("<Error>")) {
        let mut message = xml_element(&text, "Message").unwrap_or_default();
        for (element, what) in [("BucketName", "bucket"), ("Key", "key")] {
            if let Some(name) = xml_element(&text, element) {
                message.push_str(&format!(" ({what} {name})"));
            }
        }
        return (code, message);
    }
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = value.get("message").or_else(|| value.get("Message")).and_then(Value::as_str).unwrap_or_default();
    (header.unwrap_or("Error").to_string(), message.to_string())
}

/// The text of the first `<name>` element of a flat XML document, with
/// XML's five entities decoded.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let text = &xml[start..end];
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// An error answer from the server, in AWS's terms.
#[derive(Debug, thiserror::Error)]
#[error("{kind} ({status}): {message}")]
pub struct AwsError {
    pub kind: String,
    pub status: u16,
    pub message: String,
}

impl AwsError {
    /// Whether `e` is the server saying the named resource does not exist.
    pub fn is_not_found(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Self>().is_some_and(|a| a.kind == "ResourceNotFoundException")
    }

    /// Whether `e` is the server saying the resource (a statement id) exists already.
    pub fn is_conflict(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Self>().is_some_and(|a| a.kind == "ResourceConflictException")
    }
}

/// Streams a large upload in chunks while drawing a progress bar.
fn progress_body(body: Vec<u8>) -> reqwest::Body {
    let bar = indicatif::ProgressBar::new(body.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let chunks: Vec<bytes::Bytes> =
        bytes::Bytes::from(body).chunks(256 * 1024).map(bytes::Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |c| {
        bar.inc(c.len() as u64);
        if bar.position() >= bar.length().unwrap_or(0) {
            bar.finish_and_clear();
        }
        Ok::<_, std::io::Error>(c)
    }));
    reqwest::Body::wrap_stream(stream)
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_are_read_from_json_and_from_s3s_xml() {
        let json = br#"{"Type":"User","message":"Function not found: f"}"#;
        assert_eq!(
            super::error_of(Some("ResourceNotFoundException"), json),
            ("ResourceNotFoundException".into(), "Function not found: f".into())
        );
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchBucket</Code>\
            <Message>The specified bucket does not exist</Message><BucketName>a&amp;b</BucketName></Error>";
        assert_eq!(
            super::error_of(None, xml),
            ("NoSuchBucket".into(), "The specified bucket does not exist (bucket a&b)".into())
        );
        assert_eq!(super::error_of(None, b""), ("Error".into(), String::new()));
    }
}
