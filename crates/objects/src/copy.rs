//! CopyObject, and what UploadPartCopy shares with it: naming the source
//! (`x-amz-copy-source`), its preconditions (`x-amz-copy-source-if-*`) and
//! streaming its bytes into a new file. A copy never reads an object whole
//! into memory, and never shares a file between two objects: files stay
//! owned by exactly one object or part, so removing one frees it.

use nimbus_core::objects::{Bucket, ObjectInfo};
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::files::{ByteStream, Written};
use crate::s3::{
    check_key, etag, gone_or_internal, hasher_for, headers_of, millis, parse_tagging, put_checksums, timestamp,
    write_error, PUT_MAX,
};
use crate::Objects;

/// The bucket and key `x-amz-copy-source` names (its version, if named,
/// must be the one each object is: `null`).
pub(crate) fn source(copy_source: &CopySource) -> S3Result<(&str, &str)> {
    match copy_source {
        CopySource::Bucket { bucket, key, version_id } => {
            crate::s3::check_version(version_id.as_deref())?;
            Ok((bucket, key))
        }
        _ => Err(s3_error!(NotImplemented, "Copying from an access point or an Outposts bucket is not supported.")),
    }
}

fn precondition_failed() -> s3s::S3Error {
    s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
}

/// The `x-amz-copy-source-if-*` preconditions. Unlike GET's, every failure
/// is 412; if-match that holds overrides if-unmodified-since, and
/// if-none-match that holds overrides if-modified-since, as on AWS.
pub(crate) fn check_source_conditions(
    o: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let tag = etag(o);
    let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.strong_cmp(&tag));
    let modified_s = o.modified_ms / 1000;
    match (if_match, if_unmodified_since) {
        (Some(c), _) if !matches(c) => return Err(precondition_failed()),
        (None, Some(t)) if modified_s > millis(t) / 1000 => return Err(precondition_failed()),
        _ => {}
    }
    match (if_none_match, if_modified_since) {
        (Some(c), _) if matches(c) => return Err(precondition_failed()),
        (None, Some(t)) if modified_s <= millis(t) / 1000 => return Err(precondition_failed()),
        _ => {}
    }
    Ok(())
}

/// Checks a copy source's conditions as CopyObject's and UploadPartCopy's
/// inputs name them (`copy_source_if_*`).
macro_rules! check_source {
    ($src:expr, $input:expr) => {
        $crate::copy::check_source_conditions(
            $src,
            $input.copy_source_if_match.as_ref(),
            $input.copy_source_if_none_match.as_ref(),
            $input.copy_source_if_modified_since.as_ref(),
            $input.copy_source_if_unmodified_since.as_ref(),
        )
    };
}
pub(crate) use check_source;

/// What a copy may take of its source.
pub(crate) fn check_copy_size(len: u64) -> S3Result<()> {
    if len > PUT_MAX {
        return Err(s3_error!(
            InvalidRequest,
            "The specified copy source is larger than the maximum allowable size for a copy source: {PUT_MAX}"
        ));
    }
    Ok(())
}

/// Whether a `x-amz-{metadata,tagging}-directive` says REPLACE (COPY is the default).
fn replaces(directive: Option<&str>, what: &str) -> S3Result<bool> {
    match directive {
        None | Some("COPY") => Ok(false),
        Some("REPLACE") => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "Unknown {what} directive.")),
    }
}

impl Objects {
    /// The object at `key` (with its bucket) and a stream of the bytes `pick` chooses of it
    /// (after its checks; `None`: all of it). Looked up again if it was
    /// replaced between the lookup and the open (its file went with the
    /// version it replaced): a key that exists is never NoSuchKey.
    pub(crate) async fn open_object(
        &self,
        bucket: &str,
        key: &str,
        pick: impl Fn(&ObjectInfo) -> S3Result<Option<(u64, u64)>>,
    ) -> S3Result<(Bucket, ObjectInfo, Option<(u64, u64)>, ByteStream)> {
        let mut tries = 0;
        loop {
            let (b, o) = self.object_in(bucket, key).await?;
            let span = pick(&o)?;
            let (start, len) = span.unwrap_or((0, o.size));
            match self.files.read(&o, start, len).await {
                Ok(stream) => return Ok((b, o, span, stream)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                Err(e) => return Err(gone_or_internal(e)),
            }
        }
    }

    /// Streams an object's bytes into a new file, or, for an `object` copy
    /// that is small, into memory (see [`Files::receive`]).
    pub(crate) async fn copy_bytes(
        &self,
        stream: ByteStream,
        hasher: ChecksumHasher,
        object: bool,
    ) -> S3Result<Written> {
        let written = match object {
            true => self.files.receive(stream, hasher, u64::MAX).await,
            false => self.files.write(stream, hasher, u64::MAX).await,
        };
        written.map_err(write_error)
    }

    pub(crate) async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let origin = self.origin(&req);
        // The destination's conditions (S3's conditional writes); this
        // model's input has no members for them, so from the headers.
        let header = |name: &str| {
            req.headers.get(name).map(|v| {
                ETagCondition::parse_http_header(v.as_bytes())
                    .map_err(|_| s3_error!(InvalidArgument, "The {name} header is not a valid entity tag"))
            })
        };
        let (if_match, if_none_match) = (header("if-match").transpose()?, header("if-none-match").transpose()?);
        let condition = crate::s3::write_condition(if_match.as_ref(), if_none_match.as_ref())?;
        let input = req.input;
        check_key(&input.key)?;
        crate::s3::check_metadata(input.metadata.as_ref())?;
        crate::s3::check_storage_class(input.storage_class.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let (source_bucket, source_key) = source(&input.copy_source)?;
        let (_, src, _, stream) = self
            .open_object(source_bucket, source_key, |src| {
                check_source!(src, input)?;
                check_copy_size(src.size)?;
                Ok(None)
            })
            .await?;
        let replace_metadata = replaces(input.metadata_directive.as_ref().map(MetadataDirective::as_str), "metadata")?;
        let replace_tags = replaces(input.tagging_directive.as_ref().map(TaggingDirective::as_str), "tagging")?;
        // A storage class, redirect or encryption asked for is a change (S3's
        // way to change an object's class); Nimbus stores every class as
        // STANDARD, so the copy is then a new write of the same bytes.
        let changes = input.storage_class.is_some()
            || input.website_redirect_location.is_some()
            || input.server_side_encryption.is_some();
        if source_bucket == bucket.name && source_key == input.key && !replace_metadata && !changes {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let headers = if replace_metadata {
            headers_of(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.expires.as_ref(),
                input.metadata,
            )
        } else {
            src.headers.clone()
        };
        let tags = if replace_tags { parse_tagging(input.tagging.as_deref())? } else { src.tags.clone() };
        // The copy keeps the source's checksum algorithm unless another is
        // asked for; a composite (multipart) one becomes a whole-object one.
        let algorithm = input
            .checksum_algorithm
            .or_else(|| src.checksum.as_ref().map(|c| ChecksumAlgorithm::from(c.algorithm.clone())));
        let hasher = hasher_for(algorithm.as_ref(), &Default::default());
        let written = self.copy_bytes(stream, hasher, true).await?;
        let checksum = algorithm.and_then(|a| crate::multipart::checksum_of(&written.checksums, a.as_str()));
        let object = ObjectInfo {
            bucket: bucket.name.clone(),
            key: input.key,
            file: written.file,
            size: written.size,
            etag: format!("\"{}\"", hex::encode(written.md5)),
            modified_ms: chrono::Utc::now().timestamp_millis(),
            headers,
            tags,
            checksum,
            part_sizes: vec![],
            data: written.data,
        };
        self.commit_object(&bucket, &object, "ObjectCreated:Copy", &origin, condition).await?;
        let mut sums = s3s::dto::Checksum::default();
        put_checksums(&object.checksum, &mut sums);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&object)),
                last_modified: Some(timestamp(object.modified_ms)),
                checksum_crc32: sums.checksum_crc32,
                checksum_crc32c: sums.checksum_crc32c,
                checksum_sha1: sums.checksum_sha1,
                checksum_sha256: sums.checksum_sha256,
                checksum_crc64nvme: sums.checksum_crc64nvme,
                checksum_type: sums.checksum_type,
            }),
            expiration: nimbus_core::objects::expiration_header(&bucket.lifecycle, &object),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_name_a_bucket_and_key_without_version() {
        let s = CopySource::parse("/src/a%20b.txt").unwrap();
        assert_eq!(source(&s).unwrap(), ("src", "a b.txt"));
        let versioned = CopySource::parse("src/k?versionId=abc").unwrap();
        assert!(source(&versioned).is_err());
    }

    #[test]
    fn directives_copy_by_default() {
        assert!(!replaces(None, "metadata").unwrap());
        assert!(!replaces(Some("COPY"), "metadata").unwrap());
        assert!(replaces(Some("REPLACE"), "tagging").unwrap());
        assert_eq!(replaces(Some("replace"), "tagging").unwrap_err().code(), &s3s::S3ErrorCode::InvalidArgument);
    }
}
