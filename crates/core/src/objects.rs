//! Domain types of the S3-compatible object store: buckets with their
//! notification configuration, objects, and multipart uploads. Object bytes
//! live in files named here; what is in them is the objects crate's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub created_ms: i64,
    /// LambdaFunctionConfigurations of PutBucketNotificationConfiguration.
    #[serde(default)]
    pub notifications: Vec<LambdaNotification>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One LambdaFunctionConfiguration: which events of which keys invoke a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LambdaNotification {
    pub id: String,
    pub function_arn: String,
    /// e.g. `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`.
    pub events: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

impl LambdaNotification {
    /// Whether an event (`s3:ObjectCreated:Put`) on `key` matches this rule.
    pub fn matches(&self, event: &str, key: &str) -> bool {
        let event_ok = self.events.iter().any(|e| match e.strip_suffix('*') {
            Some(stem) => event.starts_with(stem),
            None => e == event,
        });
        event_ok
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }
}

/// The headers an object keeps and returns, as PUT or CreateMultipartUpload gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*`, names lower-cased without the prefix.
    pub metadata: BTreeMap<String, String>,
}

/// An additional checksum (`x-amz-checksum-<algorithm>`), base64 as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1` or `SHA256`.
    pub algorithm: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    /// The data file holding the bytes.
    pub file: String,
    pub size: u64,
    /// Quoted, as S3 returns it: MD5 hex, or `<md5 of md5s>-<parts>`.
    pub etag: String,
    pub modified_ms: i64,
    pub headers: ObjectHeaders,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub checksum: Option<Checksum>,
    /// The bytes of a small object, which the store keeps with its
    /// metadata (one commit, no file); `None` for an object in its data
    /// file, and in listings. `file` still names this version of the object.
    #[serde(skip)]
    pub data: Option<bytes::Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    pub headers: ObjectHeaders,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub checksum_algorithm: Option<String>,
    /// `COMPOSITE` (a checksum of the parts' checksums) or `FULL_OBJECT`.
    #[serde(default)]
    pub checksum_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: u32,
    pub file: String,
    pub size: u64,
    /// Quoted MD5 hex of the part.
    pub etag: String,
    pub modified_ms: i64,
    pub checksum: Option<Checksum>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_rules_match_events_and_key_filters() {
        let rule = LambdaNotification {
            id: "r".into(),
            function_arn: "arn".into(),
            events: vec!["s3:ObjectCreated:*".into(), "s3:ObjectRemoved:Delete".into()],
            prefix: Some("images/".into()),
            suffix: Some(".jpg".into()),
        };
        assert!(rule.matches("s3:ObjectCreated:Put", "images/a.jpg"));
        assert!(rule.matches("s3:ObjectCreated:CompleteMultipartUpload", "images/b.jpg"));
        assert!(rule.matches("s3:ObjectRemoved:Delete", "images/a.jpg"));
        assert!(!rule.matches("s3:ObjectRemoved:DeleteMarkerCreated", "images/a.jpg"));
        assert!(!rule.matches("s3:ObjectCreated:Put", "docs/a.jpg"));
        assert!(!rule.matches("s3:ObjectCreated:Put", "images/a.png"));
    }
}
