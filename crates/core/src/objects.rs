//! Domain types of the S3-compatible object store: buckets with their
//! notification and lifecycle configuration, objects, and multipart uploads. Object bytes
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
    /// The rules of PutBucketLifecycleConfiguration.
    #[serde(default)]
    pub lifecycle: Vec<LifecycleRule>,
    #[serde(default)]
    pub settings: BucketSettings,
}

/// What a bucket's access and versioning configurations report. None of it
/// changes what the node does, and each describes it truly: no bucket here
/// can be public, objects have no ACLs, and no versions are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BucketSettings {
    /// PutPublicAccessBlock's BlockPublicAcls, IgnorePublicAcls,
    /// BlockPublicPolicy and RestrictPublicBuckets; `None` once deleted.
    pub public_access_block: Option<[bool; 4]>,
    /// Object ownership is BucketOwnerEnforced (ACLs off) until the
    /// ownership controls are deleted.
    pub owner_enforced: bool,
    /// PutBucketVersioning `Suspended` was called: every object stays the
    /// `null` version, as here always.
    pub versioning_suspended: bool,
}

/// A new bucket's, as S3 makes them since 2023.
impl Default for BucketSettings {
    fn default() -> Self {
        Self { public_access_block: Some([true; 4]), owner_enforced: true, versioning_suspended: false }
    }
}

const DAY_MS: i64 = 86_400_000;

/// One lifecycle rule: which objects it applies to and when they expire,
/// and when incomplete multipart uploads of its prefix are aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    pub id: String,
    pub enabled: bool,
    /// Given as the rule's own `<Prefix>` (the first version of the API)
    /// rather than in a `<Filter>`; GET answers in the form PUT used.
    pub legacy_prefix: bool,
    pub prefix: String,
    pub tags: BTreeMap<String, String>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
    pub expiration: Option<Expiration>,
    /// AbortIncompleteMultipartUpload's DaysAfterInitiation.
    pub abort_upload_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiration {
    Days(u32),
    /// Midnight UTC of a date, in ms.
    Date(i64),
}

impl LifecycleRule {
    /// When the rule expires `o`, if it applies to it.
    pub fn expiry(&self, o: &ObjectInfo) -> Option<i64> {
        let due = match self.expiration? {
            Expiration::Days(d) => after_days(o.modified_ms, d),
            Expiration::Date(at) => at,
        };
        let applies = self.enabled
            && o.key.starts_with(&self.prefix)
            && self.tags.iter().all(|(k, v)| o.tags.get(k) == Some(v))
            && self.size_greater_than.is_none_or(|n| o.size > n)
            && self.size_less_than.is_none_or(|n| o.size < n);
        applies.then_some(due)
    }

    /// Whether the rule expires `o` by `now_ms`.
    pub fn expires(&self, o: &ObjectInfo, now_ms: i64) -> bool {
        self.expiry(o).is_some_and(|due| now_ms >= due)
    }

    /// When the rule aborts an upload of `key` begun at `initiated_ms`, if it does.
    pub fn abort_at(&self, key: &str, initiated_ms: i64) -> Option<i64> {
        let days = self.abort_upload_days.filter(|_| self.enabled && key.starts_with(&self.prefix))?;
        Some(after_days(initiated_ms, days))
    }

    /// Whether the rule aborts `u` by `now_ms`.
    pub fn aborts(&self, u: &Upload, now_ms: i64) -> bool {
        self.abort_at(&u.key, u.initiated_ms).is_some_and(|at| now_ms >= at)
    }
}

/// S3's `x-amz-expiration` for `o` under `rules`: the soonest expiry of
/// those that apply, and that rule's id.
pub fn expiration_header(rules: &[LifecycleRule], o: &ObjectInfo) -> Option<String> {
    let (due, id) = rules.iter().filter_map(|r| Some((r.expiry(o)?, &r.id))).min_by_key(|(due, _)| *due)?;
    let date = chrono::DateTime::from_timestamp_millis(due)?.format("%a, %d %b %Y %H:%M:%S GMT");
    Some(format!("expiry-date=\"{date}\", rule-id=\"{id}\""))
}

/// When an upload of `key` begun at `initiated_ms` is aborted under
/// `rules`, and by which rule (CreateMultipartUpload's `x-amz-abort-date`).
pub fn abort_date<'a>(rules: &'a [LifecycleRule], key: &str, initiated_ms: i64) -> Option<(i64, &'a str)> {
    rules.iter().filter_map(|r| Some((r.abort_at(key, initiated_ms)?, r.id.as_str()))).min_by_key(|(at, _)| *at)
}

/// When something made at `ms` is `days` old by S3's lifecycle reckoning:
/// the time plus the days, rounded up to the next midnight UTC.
pub fn after_days(ms: i64, days: u32) -> i64 {
    (ms + i64::from(days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS + DAY_MS
}

/// The next midnight UTC after `ms`, when S3 applies lifecycle rules.
pub fn next_midnight(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS + DAY_MS
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
    /// Whether an event (`s3:ObjectCreated:Put`) on `key` matches this rule;
    /// `key` as events carry it, URL-encoded (AWS's rules are written so).
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
    /// The sizes of the parts a multipart upload made it of, in order
    /// (GetObject's `partNumber`); empty for an object written whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_sizes: Vec<u64>,
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
    fn lifecycle_days_end_at_the_next_midnight_utc() {
        let noon = 1_764_676_800_000; // 2025-12-02T12:00:00Z
        let midnight = 1_764_633_600_000; // 2025-12-02T00:00:00Z
        assert_eq!(after_days(noon, 1), midnight + 2 * DAY_MS);
        assert_eq!(next_midnight(noon), midnight + DAY_MS);
        assert_eq!(next_midnight(midnight), midnight + DAY_MS);
    }

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
