//! Bucket lifecycle: PutBucketLifecycleConfiguration and its Get and
//! Delete, and the sweep that applies the rules. Like S3, the sweep runs
//! once a day at midnight UTC: it aborts incomplete multipart uploads
//! (freeing their parts) and deletes expired objects, each with the
//! `s3:LifecycleExpiration:Delete` notification S3 sends. Between sweeps
//! it sleeps; nothing polls.
//!
//! Transitions and noncurrent-version actions are refused: this store has
//! one storage class and no versioning.

use std::collections::{BTreeMap, HashSet};

use nimbus_core::clock::Clock;
use nimbus_core::objects::{next_midnight, Bucket, Expiration, LifecycleRule};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::notify::Origin;
use crate::s3::{internal, millis, timestamp};
use crate::Objects;

/// S3's limits on a configuration.
const RULES_MAX: usize = 1000;
const ID_MAX: usize = 255;
/// Keys or uploads read per store query during a sweep.
const PAGE: usize = 1000;

fn invalid(message: &str) -> s3s::S3Error {
    s3_error!(InvalidArgument, "{message}")
}

/// A configuration as PUT gave it, checked as S3 checks it.
fn rules_of(config: BucketLifecycleConfiguration) -> S3Result<Vec<LifecycleRule>> {
    if config.rules.len() > RULES_MAX {
        return Err(invalid("The number of lifecycle rules must not exceed the allowed limit of 1000 rules."));
    }
    let mut ids = HashSet::new();
    let mut rules = Vec::new();
    for r in config.rules {
        if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
            || r.noncurrent_version_expiration.is_some()
        {
            return Err(s3_error!(
                NotImplemented,
                "Nimbus stores one storage class without versioning: lifecycle rules may expire objects and abort incomplete multipart uploads only."
            ));
        }
        let id = r.id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if id.len() > ID_MAX {
            return Err(invalid("ID length should not exceed allowed limit of 255"));
        }
        if !ids.insert(id.clone()) {
            return Err(invalid("Rule ID must be unique. Found same ID for more than one rule"));
        }
        let (legacy_prefix, prefix, tags, size_greater_than, size_less_than) = match (r.prefix, r.filter) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema"
                ))
            }
            (Some(prefix), None) => (true, prefix, BTreeMap::new(), None, None),
            (None, f) => {
                let f = f.unwrap_or_default();
                let and = f.and.unwrap_or_default();
                let tags: BTreeMap<String, String> = f
                    .tag
                    .into_iter()
                    .chain(and.tags.unwrap_or_default())
                    .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                    .collect();
                let size = |v: Option<i64>| v.map(|n| n.max(0) as u64);
                (
                    false,
                    f.prefix.or(and.prefix).unwrap_or_default(),
                    tags,
                    size(f.object_size_greater_than.or(and.object_size_greater_than)),
                    size(f.object_size_less_than.or(and.object_size_less_than)),
                )
            }
        };
        let expiration = match r.expiration {
            None => None,
            Some(LifecycleExpiration { days: Some(d), date: None, .. }) if d > 0 => Some(Expiration::Days(d as u32)),
            Some(LifecycleExpiration { days: Some(_), date: None, .. }) => {
                return Err(invalid("'Days' for Expiration action must be a positive integer"))
            }
            Some(LifecycleExpiration { days: None, date: Some(date), .. }) => {
                let ms = millis(&date);
                if ms % 86_400_000 != 0 {
                    return Err(invalid("'Date' must be at midnight GMT"));
                }
                Some(Expiration::Date(ms))
            }
            Some(LifecycleExpiration { expired_object_delete_marker: Some(_), days: None, date: None }) => {
                return Err(s3_error!(
                    NotImplemented,
                    "Nimbus keeps no versions, so there are no delete markers to expire."
                ))
            }
            Some(_) => {
                return Err(s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema"
                ))
            }
        };
        let abort_upload_days = match r.abort_incomplete_multipart_upload.and_then(|a| a.days_after_initiation) {
            Some(d) if d <= 0 => {
                return Err(invalid(
                    "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
                ))
            }
            Some(_) if !tags.is_empty() || size_greater_than.is_some() || size_less_than.is_some() => {
                return Err(s3_error!(
                    InvalidRequest,
                    "AbortIncompleteMultipartUpload cannot be specified with Tags or ObjectSize."
                ))
            }
            d => d.map(|d| d as u32),
        };
        if expiration.is_none() && abort_upload_days.is_none() {
            return Err(invalid("At least one action needs to be specified in a rule"));
        }
        let enabled = r.status.as_str() == ExpirationStatus::ENABLED;
        rules.push(LifecycleRule {
            id,
            enabled,
            legacy_prefix,
            prefix,
            tags,
            size_greater_than,
            size_less_than,
            expiration,
            abort_upload_days,
        });
    }
    Ok(rules)
}

/// A stored rule as GET answers it.
fn wire_rule(r: LifecycleRule) -> s3s::dto::LifecycleRule {
    let tags: Vec<Tag> = r.tags.into_iter().map(|(k, v)| Tag { key: Some(k), value: Some(v) }).collect();
    let size = |v: Option<u64>| v.map(|n| n as i64);
    let filter = (!r.legacy_prefix).then(|| {
        let conditions = usize::from(!r.prefix.is_empty())
            + tags.len()
            + usize::from(r.size_greater_than.is_some())
            + usize::from(r.size_less_than.is_some());
        if conditions > 1 {
            LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some(r.prefix.clone()),
                    tags: Some(tags.clone()),
                    object_size_greater_than: size(r.size_greater_than),
                    object_size_less_than: size(r.size_less_than),
                }),
                ..Default::default()
            }
        } else {
            LifecycleRuleFilter {
                prefix: (!r.prefix.is_empty() || conditions == 0).then(|| r.prefix.clone()),
                tag: tags.first().cloned(),
                object_size_greater_than: size(r.size_greater_than),
                object_size_less_than: size(r.size_less_than),
                ..Default::default()
            }
        }
    });
    s3s::dto::LifecycleRule {
        id: Some(r.id),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        prefix: r.legacy_prefix.then_some(r.prefix),
        filter,
        expiration: r.expiration.map(|e| match e {
            Expiration::Days(d) => LifecycleExpiration { days: Some(d as i32), ..Default::default() },
            Expiration::Date(ms) => LifecycleExpiration { date: Some(timestamp(ms)), ..Default::default() },
        }),
        abort_incomplete_multipart_upload: r
            .abort_upload_days
            .map(|d| AbortIncompleteMultipartUpload { days_after_initiation: Some(d as i32) }),
        noncurrent_version_expiration: None,
        noncurrent_version_transitions: None,
        transitions: None,
    }
}

impl Objects {
    pub(crate) async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        self.bucket(&req.input.bucket).await?;
        let config = req.input.lifecycle_configuration.ok_or_else(|| {
            s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            )
        })?;
        let rules = rules_of(config)?;
        self.edit_bucket(&req.input.bucket, |b| b.lifecycle = rules).await?;
        Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
    }

    pub(crate) async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        if bucket.lifecycle.is_empty() {
            return Err(s3_error!(NoSuchLifecycleConfiguration, "The lifecycle configuration does not exist"));
        }
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(bucket.lifecycle.into_iter().map(wire_rule).collect()),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.edit_bucket(&req.input.bucket, |b| b.lifecycle.clear()).await?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput {}))
    }

    /// Applies every bucket's lifecycle rules at each midnight UTC (by
    /// `clock`) until the process ends.
    pub async fn run_lifecycle(self, clock: Clock) {
        loop {
            let at = next_midnight(clock.now_ms());
            tokio::time::sleep(clock.until(at)).await;
            if let Err(e) = self.sweep(clock.now_ms()).await {
                tracing::error!(error = %e.message().unwrap_or_default(), "lifecycle sweep failed; next at midnight");
            }
        }
    }

    /// Aborts the uploads and deletes the objects the rules have made due by `now_ms`.
    async fn sweep(&self, now_ms: i64) -> S3Result<()> {
        for bucket in self.meta.list_buckets().await.map_err(internal)? {
            if bucket.lifecycle.iter().any(|r| r.enabled) {
                self.abort_due_uploads(&bucket, now_ms).await?;
                self.expire_due_objects(&bucket, now_ms).await?;
            }
        }
        Ok(())
    }

    async fn abort_due_uploads(&self, bucket: &Bucket, now_ms: i64) -> S3Result<()> {
        let (mut key, mut id) = (String::new(), String::new());
        loop {
            let page = self.meta.list_uploads(&bucket.name, "", (&key, &id), PAGE).await.map_err(internal)?;
            for u in &page {
                if bucket.lifecycle.iter().any(|r| r.aborts(u, now_ms)) {
                    // An upload completed or aborted meanwhile has nothing to free.
                    if let Some(files) = self.meta.finish_upload(&u.id, None, None).await.map_err(internal)? {
                        self.files.remove(files).await;
                        tracing::info!(bucket = %bucket.name, key = %u.key, upload_id = %u.id, "lifecycle aborted an incomplete multipart upload");
                    }
                }
            }
            match page.last() {
                Some(u) if page.len() == PAGE => (key, id) = (u.key.clone(), u.id.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn expire_due_objects(&self, bucket: &Bucket, now_ms: i64) -> S3Result<()> {
        let origin = Origin {
            region: &self.region,
            account: &self.account_id,
            principal: "s3.amazonaws.com".into(),
            source_ip: "s3.amazonaws.com".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            lineage: 0,
        };
        for rule in bucket.lifecycle.iter().filter(|r| r.enabled && r.expiration.is_some()) {
            let mut after = String::new();
            loop {
                let page = self.meta.list_objects(&bucket.name, &rule.prefix, &after, PAGE).await.map_err(internal)?;
                for o in page.iter().filter(|o| rule.expires(o, now_ms)) {
                    // Only the version the rule judged: a write since then stays.
                    self.remove(bucket, &o.key, Some(&o.file), None, "LifecycleExpiration:Delete", &origin).await?;
                }
                match page.last() {
                    Some(o) if page.len() == PAGE => after = o.key.clone(),
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(xml_like: s3s::dto::LifecycleRule) -> S3Result<Vec<LifecycleRule>> {
        rules_of(BucketLifecycleConfiguration { rules: vec![xml_like] })
    }

    fn base() -> s3s::dto::LifecycleRule {
        s3s::dto::LifecycleRule {
            id: Some("r".into()),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            filter: Some(LifecycleRuleFilter { prefix: Some("tmp/".into()), ..Default::default() }),
            expiration: Some(LifecycleExpiration { days: Some(1), ..Default::default() }),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        }
    }

    #[test]
    fn rules_are_checked_as_s3_checks_them() {
        let r = rule(base()).unwrap();
        assert_eq!((r[0].prefix.as_str(), r[0].expiration), ("tmp/", Some(Expiration::Days(1))));
        let zero = s3s::dto::LifecycleRule {
            expiration: Some(LifecycleExpiration { days: Some(0), ..Default::default() }),
            ..base()
        };
        assert!(rule(zero).unwrap_err().message().unwrap().contains("positive integer"));
        let none = s3s::dto::LifecycleRule { expiration: None, ..base() };
        assert!(rule(none).is_err());
        let twice = BucketLifecycleConfiguration { rules: vec![base(), base()] };
        assert!(rules_of(twice).unwrap_err().message().unwrap().contains("Rule ID must be unique"));
        let tagged_abort = s3s::dto::LifecycleRule {
            filter: Some(LifecycleRuleFilter {
                tag: Some(Tag { key: Some("a".into()), value: Some("b".into()) }),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload { days_after_initiation: Some(1) }),
            ..base()
        };
        assert!(rule(tagged_abort).is_err());
    }

    #[test]
    fn rules_read_back_in_the_form_they_were_put() {
        let legacy = s3s::dto::LifecycleRule { prefix: Some("logs/".into()), filter: None, ..base() };
        let back = wire_rule(rule(legacy).unwrap().remove(0));
        assert_eq!((back.prefix.as_deref(), back.filter.is_none()), (Some("logs/"), true));
        let back = wire_rule(rule(base()).unwrap().remove(0));
        assert_eq!(back.filter.and_then(|f| f.prefix).as_deref(), Some("tmp/"));
    }
}
