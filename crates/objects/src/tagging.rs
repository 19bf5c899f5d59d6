//! Object and bucket tagging (Put, Get and Delete of ObjectTagging and
//! BucketTagging) and AWS's limits on tags, which the `x-amz-tagging` header
//! of a write must meet too. An object's tags live in its document: changing
//! them never touches its bytes, and a change made while the object was
//! replaced is not applied to the new one.

use std::collections::BTreeMap;

use nimbus_core::objects::ObjectInfo;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::s3::internal;
use crate::Objects;

const TAGS_MAX: usize = 10;
const BUCKET_TAGS_MAX: usize = 50;
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;

/// A `Tagging` document's tags, each key once.
fn tag_set(tags: Vec<Tag>) -> S3Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (Some(k), Some(v)) = (t.key, t.value) else {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        };
        if out.insert(k, v).is_some() {
            return Err(s3_error!(InvalidTag, "Cannot provide multiple Tags with the same key"));
        }
    }
    Ok(out)
}

/// AWS's limits: 10 tags, keys of 1 to 128 characters not starting with
/// `aws:`, values of up to 256, of the characters tags allow.
pub(crate) fn check_tags(tags: &BTreeMap<String, String>) -> S3Result<()> {
    check_keys_and_values(tags)?;
    if tags.len() > TAGS_MAX {
        let mut e = S3Error::with_message(
            "BadRequest".parse::<S3ErrorCode>().unwrap_or(S3ErrorCode::InvalidTag),
            "Object tags cannot be greater than 10",
        );
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return Err(e);
    }
    Ok(())
}

fn check_keys_and_values(tags: &BTreeMap<String, String>) -> S3Result<()> {
    for (k, v) in tags {
        if k.is_empty() {
            return Err(s3_error!(InvalidTag, "The TagKey you have provided is invalid"));
        }
        if k.chars().count() > TAG_KEY_MAX {
            return Err(s3_error!(InvalidTag, "The TagKey you have provided is too long, max {TAG_KEY_MAX}"));
        }
        if v.chars().count() > TAG_VALUE_MAX {
            return Err(s3_error!(InvalidTag, "The TagValue you have provided is too long, max {TAG_VALUE_MAX}"));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(s3_error!(InvalidTag, "Your TagKey cannot be prefixed with aws:"));
        }
        if !k.chars().all(tag_character) {
            return Err(s3_error!(InvalidTag, "The TagKey you have provided is invalid"));
        }
        if !v.chars().all(tag_character) {
            return Err(s3_error!(InvalidTag, "The TagValue you have provided is invalid"));
        }
    }
    Ok(())
}

/// What a tag may hold: letters, numbers and spaces in any script, and
/// `+ - = . _ : / @`.
fn tag_character(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c)
}

impl Objects {
    /// Applies `change` to the object's tags, again if the object was
    /// replaced between the read and the write.
    async fn retag(&self, bucket: &str, key: &str, change: impl Fn(&mut ObjectInfo)) -> S3Result<()> {
        loop {
            let mut o = self.object(bucket, key).await?;
            change(&mut o);
            if self.meta.update_object(&o).await.map_err(internal)? {
                return Ok(());
            }
        }
    }

    pub(crate) async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        crate::s3::check_version(input.version_id.as_deref())?;
        let tags = tag_set(input.tagging.tag_set)?;
        check_tags(&tags)?;
        self.retag(&input.bucket, &input.key, |o| o.tags.clone_from(&tags)).await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    pub(crate) async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        crate::s3::check_version(req.input.version_id.as_deref())?;
        let o = self.object(&req.input.bucket, &req.input.key).await?;
        let tag_set = o.tags.into_iter().map(|(k, v)| Tag { key: Some(k), value: Some(v) }).collect();
        Ok(S3Response::new(GetObjectTaggingOutput { tag_set, version_id: None }))
    }

    pub(crate) async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        crate::s3::check_version(req.input.version_id.as_deref())?;
        self.retag(&req.input.bucket, &req.input.key, |o| o.tags.clear()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }

    pub(crate) async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let tags = tag_set(req.input.tagging.tag_set)?;
        check_keys_and_values(&tags)?;
        if tags.len() > BUCKET_TAGS_MAX {
            return Err(s3_error!(InvalidTag, "Bucket tag count cannot be greater than {BUCKET_TAGS_MAX}"));
        }
        self.edit_bucket(&req.input.bucket, |b| b.tags = tags).await?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(crate) async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        if bucket.tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        let tag_set = bucket.tags.into_iter().map(|(k, v)| Tag { key: Some(k), value: Some(v) }).collect();
        Ok(S3Response::new(GetBucketTaggingOutput { tag_set }))
    }

    pub(crate) async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.edit_bucket(&req.input.bucket, |b| b.tags.clear()).await?;
        Ok(S3Response::new(DeleteBucketTaggingOutput {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_to_aws_limits() {
        let tags = |n: usize, k: usize, v: usize| -> BTreeMap<String, String> {
            (0..n).map(|i| (format!("{i}{}", "k".repeat(k - 1)), "v".repeat(v))).collect()
        };
        assert!(check_tags(&tags(10, 128, 256)).is_ok());
        let too_many = check_tags(&tags(11, 1, 1)).unwrap_err();
        assert_eq!(too_many.status_code(), Some(http::StatusCode::BAD_REQUEST));
        assert_eq!(check_tags(&tags(1, 129, 1)).unwrap_err().code(), &S3ErrorCode::InvalidTag);
        assert_eq!(check_tags(&tags(1, 1, 257)).unwrap_err().code(), &S3ErrorCode::InvalidTag);
        // Characters count, not bytes.
        assert!(check_tags(&BTreeMap::from([("é".repeat(128), "ü".repeat(256))])).is_ok());
    }
}
