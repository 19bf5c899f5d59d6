//! Multipart uploads, from CreateMultipartUpload to Complete or Abort, with
//! their listings. An upload is a store row keeping the headers, tags and
//! checksum algorithm the object will have; each part is an immutable file
//! like an object's. Completing concatenates the listed parts into a new
//! file and commits the object, its notifications and the upload's removal
//! in one transaction; aborting removes the upload and its part files, so
//! nothing is left behind. Nothing expires an upload on its own but a
//! bucket lifecycle rule's AbortIncompleteMultipartUpload (`lifecycle.rs`),
//! as on AWS.

use std::collections::BTreeMap;

use base64::Engine;
use md5::{Digest, Md5};
use nimbus_core::objects::{Bucket, Checksum, ObjectInfo, Part, Upload};
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use crate::copy::source;
use crate::notify;
use crate::s3::{
    check_key, etag, hasher_for, headers_of, internal, parse_tagging, put_checksums, sent_checksums, store_error,
    timestamp, unmet, verify, write_condition, write_error, PUT_MAX,
};
use crate::Objects;

/// Every part but the last must be at least this large (5 MiB), as on AWS.
const PART_MIN: u64 = 5 << 20;
const PART_NUMBER_MAX: i32 = 10_000;
/// The most parts or uploads one listing gives.
const LIST_MAX: i32 = 1000;

fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

fn part_number(n: i32) -> S3Result<u32> {
    if !(1..=PART_NUMBER_MAX).contains(&n) {
        return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
    }
    Ok(n as u32)
}

/// The value of one algorithm among computed checksums.
pub(crate) fn checksum_of(sums: &s3s::dto::Checksum, algorithm: &str) -> Option<Checksum> {
    let value = match algorithm.to_ascii_uppercase().as_str() {
        "CRC32" => sums.checksum_crc32.clone(),
        "CRC32C" => sums.checksum_crc32c.clone(),
        "SHA1" => sums.checksum_sha1.clone(),
        "SHA256" => sums.checksum_sha256.clone(),
        "CRC64NVME" => sums.checksum_crc64nvme.clone(),
        _ => None,
    }?;
    Some(Checksum { algorithm: algorithm.to_ascii_uppercase(), value })
}

fn hasher(algorithm: Option<&str>) -> ChecksumHasher {
    hasher_for(algorithm.map(|a| ChecksumAlgorithm::from(a.to_string())).as_ref(), &Default::default())
}

/// A composite checksum: the checksum of the parts' binary checksums, then
/// `-<parts>`. None if a part has none of that algorithm.
fn composite(algorithm: &str, parts: &[&Part]) -> Option<Checksum> {
    let mut h = hasher(Some(algorithm));
    for p in parts {
        let c = p.checksum.as_ref().filter(|c| c.algorithm == algorithm)?;
        h.update(&base64::engine::general_purpose::STANDARD.decode(&c.value).ok()?);
    }
    let mut c = checksum_of(&h.finalize(), algorithm)?;
    c.value = format!("{}-{}", c.value, parts.len());
    Some(c)
}

/// `bytes=first-last` of `x-amz-copy-source-range`, within an object of `size`.
fn copy_range(range: &str, size: u64) -> S3Result<(u64, u64)> {
    let parsed = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')).and_then(|(a, b)| {
        let (first, last) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
        (first <= last).then_some((first, last))
    });
    let Some((first, last)) = parsed else {
        return Err(s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        ));
    };
    if last >= size {
        return Err(s3_error!(InvalidArgument, "Range specified is not valid for source object of size: {size}"));
    }
    Ok((first, last - first + 1))
}

/// CompleteMultipartUpload's answer for the object it made: its absolute
/// URL (path style, as the client reached this node), ETag and checksums.
/// `base`: where the client reached the bucket (`host/bucket`, or a virtual host).
fn completed(base: &str, object: &ObjectInfo, checksum_type: Option<ChecksumType>) -> CompleteMultipartUploadOutput {
    let mut sums = s3s::dto::Checksum::default();
    put_checksums(&object.checksum, &mut sums);
    CompleteMultipartUploadOutput {
        location: Some(format!("http://{base}/{}", crate::s3::url_encode(&object.key))),
        e_tag: Some(etag(object)),
        checksum_type,
        checksum_crc32: sums.checksum_crc32,
        checksum_crc32c: sums.checksum_crc32c,
        checksum_sha1: sums.checksum_sha1,
        checksum_sha256: sums.checksum_sha256,
        checksum_crc64nvme: sums.checksum_crc64nvme,
        bucket: Some(object.bucket.clone()),
        key: Some(object.key.clone()),
        ..Default::default()
    }
}

fn checksum_type(u: &Upload) -> Option<ChecksumType> {
    u.checksum_algorithm.as_ref()?;
    u.checksum_type.clone().map(ChecksumType::from)
}

impl Objects {
    /// The upload `id` of `key` in `bucket`: an id of another key is as
    /// unknown as a made-up one.
    async fn upload(&self, bucket: &str, key: &str, id: &str) -> S3Result<(Bucket, Upload)> {
        let b = self.bucket(bucket).await?;
        match self.meta.get_upload(id).await.map_err(internal)? {
            Some(u) if u.bucket == bucket && u.key == key => Ok((b, u)),
            _ => Err(no_such_upload()),
        }
    }

    /// The account as S3 names an object's owner and an upload's initiator.
    pub(crate) fn owner(&self) -> (Initiator, Owner) {
        let id = Some(self.account_id.clone());
        let name = Some("nimbus".to_string());
        (Initiator { id: id.clone(), display_name: name.clone() }, Owner { id, display_name: name })
    }

    pub(crate) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        crate::s3::check_metadata(input.metadata.as_ref())?;
        crate::s3::check_storage_class(input.storage_class.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let tags = parse_tagging(input.tagging.as_deref())?;
        let algorithm = input.checksum_algorithm.map(|a| a.as_str().to_ascii_uppercase());
        let kind = match (&algorithm, input.checksum_type.as_ref().map(|t| t.as_str().to_ascii_uppercase())) {
            (None, Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
                ))
            }
            (None, None) => None,
            // CRC64NVME exists only as a whole-object checksum.
            (Some(a), None) if a == "CRC64NVME" => Some(ChecksumType::FULL_OBJECT.to_string()),
            (Some(_), None) => Some(ChecksumType::COMPOSITE.to_string()),
            (Some(a), Some(t)) if t == ChecksumType::FULL_OBJECT && (a == "SHA1" || a == "SHA256") => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
                    a.to_ascii_lowercase()
                ))
            }
            (Some(a), Some(t)) if t == ChecksumType::COMPOSITE && a == "CRC64NVME" => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm."
                ))
            }
            (Some(_), Some(t)) => Some(t),
        };
        let upload = Upload {
            id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: input.bucket,
            key: input.key,
            initiated_ms: chrono::Utc::now().timestamp_millis(),
            headers: headers_of(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.expires.as_ref(),
                input.metadata,
            ),
            tags,
            checksum_algorithm: algorithm,
            checksum_type: kind,
        };
        self.meta.create_upload(&upload).await.map_err(store_error)?;
        let abort = nimbus_core::objects::abort_date(&bucket.lifecycle, &upload.key, upload.initiated_ms);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            abort_date: abort.map(|(at, _)| crate::s3::timestamp(at)),
            abort_rule_id: abort.map(|(_, rule)| rule.to_string()),
            checksum_algorithm: upload.checksum_algorithm.clone().map(ChecksumAlgorithm::from),
            checksum_type: checksum_type(&upload),
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    /// Stores a written part, removing the one it replaces.
    async fn commit_part(&self, upload: &Upload, part: &Part) -> S3Result<()> {
        match self.meta.put_part(&upload.id, part).await {
            Ok(Some(replaced)) => {
                self.files.remove(replaced).await;
                Ok(())
            }
            // Completed or aborted while the part was arriving.
            Ok(None) => {
                self.files.remove([part.file.clone()]).await;
                Err(no_such_upload())
            }
            Err(e) => {
                self.files.remove([part.file.clone()]).await;
                Err(internal(e))
            }
        }
    }

    pub(crate) async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers.clone();
        let input = req.input;
        let number = part_number(input.part_number)?;
        crate::s3::check_declared_size(input.content_length)?;
        let (_, upload) = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        if let (Some(want), Some(got)) = (&upload.checksum_algorithm, &input.checksum_algorithm) {
            if !want.eq_ignore_ascii_case(got.as_str()) {
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    want.to_ascii_lowercase(),
                    got.as_str().to_ascii_lowercase()
                ));
            }
        }
        let Some(body) = input.body else {
            return Err(s3_error!(IncompleteBody, "The request body is missing"));
        };
        let header_sums = s3s::dto::Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            checksum_crc64nvme: input.checksum_crc64nvme,
            checksum_type: None,
        };
        let trailer = crate::s3::trailer_algorithm(&req.headers);
        crate::s3::check_checksum_headers(crate::s3::named_algorithm(&req.headers), &header_sums, trailer.as_ref())?;
        let algorithm = input
            .checksum_algorithm
            .or_else(|| upload.checksum_algorithm.clone().map(ChecksumAlgorithm::from))
            .or(trailer);
        let written =
            self.files.write(body, hasher_for(algorithm.as_ref(), &header_sums), PUT_MAX).await.map_err(write_error)?;
        if input.content_length.is_some_and(|n| n as u64 != written.size) {
            self.files.remove([written.file]).await;
            return Err(s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header."
            ));
        }
        let sent = sent_checksums(header_sums, trailers.as_ref());
        let checksum = match verify(input.content_md5.as_deref(), &written.md5, &sent, &written.checksums) {
            Ok(kept) => match &upload.checksum_algorithm {
                Some(a) => checksum_of(&written.checksums, a),
                None => kept,
            },
            Err(e) => {
                self.files.remove([written.file]).await;
                return Err(e);
            }
        };
        let part = Part {
            number,
            file: written.file,
            size: written.size,
            etag: format!("\"{}\"", hex::encode(written.md5)),
            modified_ms: chrono::Utc::now().timestamp_millis(),
            checksum,
        };
        self.commit_part(&upload, &part).await?;
        let mut sums = s3s::dto::Checksum::default();
        put_checksums(&part.checksum, &mut sums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let (_, upload) = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let (source_bucket, source_key) = source(&input.copy_source)?;
        let (_, _, _, stream) = self
            .open_object(source_bucket, source_key, |src| {
                crate::copy::check_source!(src, input)?;
                let (start, len) = match &input.copy_source_range {
                    Some(r) => copy_range(r, src.size)?,
                    None => (0, src.size),
                };
                crate::copy::check_copy_size(len)?;
                Ok(Some((start, len)))
            })
            .await?;
        let algorithm = upload.checksum_algorithm.as_deref();
        let written = self.copy_bytes(stream, hasher(algorithm), false).await?;
        let part = Part {
            number,
            file: written.file,
            size: written.size,
            etag: format!("\"{}\"", hex::encode(written.md5)),
            modified_ms: chrono::Utc::now().timestamp_millis(),
            checksum: algorithm.and_then(|a| checksum_of(&written.checksums, a)),
        };
        self.commit_part(&upload, &part).await?;
        let mut sums = s3s::dto::Checksum::default();
        put_checksums(&part.checksum, &mut sums);
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag.trim_matches('"').to_string())),
                last_modified: Some(timestamp(part.modified_ms)),
                checksum_crc32: sums.checksum_crc32,
                checksum_crc32c: sums.checksum_crc32c,
                checksum_sha1: sums.checksum_sha1,
                checksum_sha256: sums.checksum_sha256,
                checksum_crc64nvme: sums.checksum_crc64nvme,
            }),
            ..Default::default()
        }))
    }

    pub(crate) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let origin = self.origin(&req);
        // The object's URL as the client reached this node: AWS answers an
        // absolute URL, which SDKs hand on as the object's address. A
        // virtual-hosted request's host names the bucket, its path does not.
        let host = req.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        let path_style = req.uri.path().starts_with(&format!("/{}/", req.input.bucket));
        let host = if path_style { format!("{host}/{}", req.input.bucket) } else { host.to_string() };
        let mut input = req.input;
        let listed = input.multipart_upload.take().and_then(|m| m.parts).unwrap_or_default();
        let (bucket, upload) = match self.upload(&input.bucket, &input.key, &input.upload_id).await {
            Ok(found) => found,
            Err(e) => return self.completed_before(&host, &input.bucket, &input.key, &listed).await.ok_or(e),
        };
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let invalid_part = || {
            s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
            )
        };
        let stored: BTreeMap<u32, Part> = self
            .meta
            .list_parts(&upload.id, 0, usize::MAX)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        let full = upload.checksum_type.as_deref() == Some(ChecksumType::FULL_OBJECT);
        let mut parts: Vec<&Part> = Vec::with_capacity(listed.len());
        for l in &listed {
            let number = part_number(l.part_number.unwrap_or(0))?;
            if parts.last().is_some_and(|p| p.number >= number) {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order. The parts list must be specified in order by part number."
                ));
            }
            let Some(p) = stored.get(&number) else {
                return self.unless_completed(&host, &input.bucket, &upload, &listed, invalid_part()).await;
            };
            if l.e_tag.as_ref().is_none_or(|e| e.value() != p.etag.trim_matches('"')) {
                return Err(invalid_part());
            }
            let claimed = s3s::dto::Checksum {
                checksum_crc32: l.checksum_crc32.clone(),
                checksum_crc32c: l.checksum_crc32c.clone(),
                checksum_sha1: l.checksum_sha1.clone(),
                checksum_sha256: l.checksum_sha256.clone(),
                checksum_crc64nvme: l.checksum_crc64nvme.clone(),
                checksum_type: None,
            };
            if let Some(mine) = &p.checksum {
                if checksum_of(&claimed, &mine.algorithm).is_some_and(|c| c.value != mine.value) {
                    return Err(invalid_part());
                }
            }
            // A composite checksum is made of the parts' as the request names them.
            if let Some(a) = upload.checksum_algorithm.as_deref().filter(|_| !full) {
                if checksum_of(&claimed, a).is_none() {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request.",
                        a.to_ascii_lowercase()
                    ));
                }
            }
            parts.push(p);
        }
        if parts[..parts.len() - 1].iter().any(|p| p.size < PART_MIN) {
            return Err(s3_error!(EntityTooSmall, "Your proposed upload is smaller than the minimum allowed size"));
        }
        // Checked now, to spare concatenating the parts for a write that
        // cannot be, and again in the write's own transaction.
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        if let Some(c) = &condition {
            let current = self.meta.get_object(&bucket.name, &upload.key).await.map_err(internal)?;
            c.check(current.as_ref().map(|o| o.etag.as_str())).map_err(unmet)?;
        }

        let algorithm = upload.checksum_algorithm.as_deref();
        let files: Vec<String> = parts.iter().map(|p| p.file.clone()).collect();
        let (file, size, sums) = match self.files.concat(&files, hasher(algorithm.filter(|_| full))).await {
            Ok(done) => done,
            // A part file goes when its upload ends (another request ended
            // it), or when the part is uploaded again meanwhile: then the
            // part named is not the part stored, and the upload remains.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.unless_completed(&host, &input.bucket, &upload, &listed, invalid_part()).await;
            }
            Err(e) => return Err(internal(e)),
        };
        let checksum = match algorithm {
            Some(a) if full => checksum_of(&sums, a),
            Some(a) => composite(a, &parts),
            None => None,
        };
        if let (Some(c), true) = (&checksum, full) {
            let claimed = s3s::dto::Checksum {
                checksum_crc32: input.checksum_crc32,
                checksum_crc32c: input.checksum_crc32c,
                checksum_sha1: input.checksum_sha1,
                checksum_sha256: input.checksum_sha256,
                checksum_crc64nvme: input.checksum_crc64nvme,
                checksum_type: None,
            };
            if checksum_of(&claimed, &c.algorithm).is_some_and(|claim| claim.value != c.value) {
                self.files.remove([file]).await;
                return Err(s3_error!(
                    BadDigest,
                    "The {} you specified did not match the calculated checksum.",
                    c.algorithm
                ));
            }
        }
        // The ETag of a multipart object: the MD5 of its parts' binary MD5s, and their count.
        let mut md5 = Md5::new();
        for p in &parts {
            md5.update(hex::decode(p.etag.trim_matches('"')).map_err(internal)?);
        }
        let object = ObjectInfo {
            bucket: bucket.name.clone(),
            key: upload.key.clone(),
            file,
            size,
            etag: format!("\"{}-{}\"", hex::encode(md5.finalize()), parts.len()),
            modified_ms: chrono::Utc::now().timestamp_millis(),
            headers: upload.headers.clone(),
            tags: upload.tags.clone(),
            checksum,
            part_sizes: parts.iter().map(|p| p.size).collect(),
            data: None,
        };
        let events = notify::events(&bucket, "ObjectCreated:CompleteMultipartUpload", &object, &origin);
        match self.meta.finish_upload(&upload.id, Some((&object, &events)), condition.as_ref()).await {
            Ok(Some(freed)) => {
                self.files.remove(freed).await;
                if !events.is_empty() {
                    self.functions.queued();
                }
            }
            // Another completion or an abort ended it first.
            Ok(None) => {
                self.files.remove([object.file.clone()]).await;
                return self
                    .completed_before(&host, &bucket.name, &upload.key, &listed)
                    .await
                    .ok_or_else(no_such_upload);
            }
            Err(e) => {
                self.files.remove([object.file.clone()]).await;
                return Err(store_error(e));
            }
        }
        let mut done = completed(&host, &object, checksum_type(&upload));
        done.expiration = nimbus_core::objects::expiration_header(&bucket.lifecycle, &object);
        Ok(S3Response::new(done))
    }

    /// `error` (a part gone), unless the upload itself is gone meanwhile:
    /// a completion racing this one ended it and freed its parts, and this
    /// one is answered as that completion was (see `completed_before`).
    async fn unless_completed(
        &self,
        host: &str,
        bucket: &str,
        upload: &Upload,
        listed: &[s3s::dto::CompletedPart],
        error: S3Error,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        match self.upload(bucket, &upload.key, &upload.id).await {
            Ok(_) => Err(error),
            Err(_) => self.completed_before(host, bucket, &upload.key, listed).await.ok_or_else(no_such_upload),
        }
    }

    /// A completion asked again (an SDK's retry after a lost answer, or one
    /// racing another) whose upload is gone: if the key holds the object
    /// those parts made (its ETag is theirs), it is answered as the first
    /// was, as S3 answers a repeated completion with the same parts.
    async fn completed_before(
        &self,
        host: &str,
        bucket: &str,
        key: &str,
        listed: &[s3s::dto::CompletedPart],
    ) -> Option<S3Response<CompleteMultipartUploadOutput>> {
        let mut md5 = Md5::new();
        for l in listed {
            md5.update(hex::decode(l.e_tag.as_ref()?.value()).ok()?);
        }
        let wanted = format!("\"{}-{}\"", hex::encode(md5.finalize()), listed.len());
        let object = self.meta.get_object(bucket, key).await.ok()??;
        (!listed.is_empty() && object.etag == wanted).then(|| S3Response::new(completed(host, &object, None)))
    }

    pub(crate) async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let (_, upload) = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let freed = self.meta.finish_upload(&upload.id, None, None).await.map_err(internal)?;
        self.files.remove(freed.ok_or_else(no_such_upload)?).await;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let (_, upload) = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let max = input.max_parts.unwrap_or(LIST_MAX).clamp(0, LIST_MAX);
        let marker = input.part_number_marker.unwrap_or(0).max(0);
        let mut parts = self.meta.list_parts(&upload.id, marker as u32, max as usize + 1).await.map_err(internal)?;
        let truncated = parts.len() > max as usize;
        parts.truncate(max as usize);
        let (initiator, owner) = self.owner();
        Ok(S3Response::new(ListPartsOutput {
            next_part_number_marker: parts.last().map(|p| p.number as i32),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| {
                        let mut sums = s3s::dto::Checksum::default();
                        put_checksums(&p.checksum, &mut sums);
                        s3s::dto::Part {
                            part_number: Some(p.number as i32),
                            e_tag: Some(ETag::Strong(p.etag.trim_matches('"').to_string())),
                            last_modified: Some(timestamp(p.modified_ms)),
                            size: Some(p.size as i64),
                            checksum_crc32: sums.checksum_crc32,
                            checksum_crc32c: sums.checksum_crc32c,
                            checksum_sha1: sums.checksum_sha1,
                            checksum_sha256: sums.checksum_sha256,
                            checksum_crc64nvme: sums.checksum_crc64nvme,
                        }
                    })
                    .collect(),
            ),
            is_truncated: Some(truncated),
            part_number_marker: Some(marker),
            max_parts: Some(max),
            initiator: Some(initiator),
            owner: Some(owner),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: upload.checksum_algorithm.clone().map(ChecksumAlgorithm::from),
            checksum_type: checksum_type(&upload),
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max = input.max_uploads.unwrap_or(LIST_MAX).clamp(0, LIST_MAX) as usize;
        // The upload-id-marker counts only with a key-marker; without one,
        // listing starts after every upload of the key-marker.
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let mut cursor = match &input.upload_id_marker {
            Some(id) if !key_marker.is_empty() && !id.is_empty() => (key_marker.clone(), id.clone()),
            // A common prefix given as NextKeyMarker: go past what it holds.
            _ if delimiter.as_deref().is_some_and(|d| key_marker.ends_with(d)) => {
                (crate::listing::past(&key_marker), String::new())
            }
            _ => (key_marker.clone(), char::MAX.to_string()),
        };
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut next: Option<(String, String)> = None;
        'read: loop {
            let batch = self
                .meta
                .list_uploads(&input.bucket, &prefix, (&cursor.0, &cursor.1), LIST_MAX as usize)
                .await
                .map_err(internal)?;
            let full = batch.len() == LIST_MAX as usize;
            // Uploads under a common prefix are skipped: this batch's one by
            // one, the rest by reading on from past it (as `listing::list`).
            let mut skipping: Option<String> = None;
            for u in batch {
                if let Some(common) = &skipping {
                    if u.key.starts_with(common.as_str()) {
                        continue;
                    }
                    skipping = None;
                }
                if uploads.len() + prefixes.len() == max {
                    next = Some(cursor);
                    break 'read;
                }
                let rest = &u.key[prefix.len()..];
                if let Some(i) = delimiter.as_deref().and_then(|d| rest.find(d).map(|i| i + d.len())) {
                    let common = format!("{prefix}{}", &rest[..i]);
                    cursor = (crate::listing::past(&common), String::new());
                    prefixes.push(common.clone());
                    skipping = Some(common);
                    continue;
                }
                cursor = (u.key.clone(), u.id.clone());
                uploads.push(u);
            }
            if !full {
                break;
            }
        }
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { crate::s3::url_encode(&s) } else { s };
        let (initiator, owner) = self.owner();
        let (next_key, next_id) = match next {
            // The cursor's ids that stand for "past every upload of the key" are not markers.
            Some((k, id)) => (
                Some(crate::listing::before_past(&k).to_string()),
                Some(id).filter(|i| !i.is_empty() && !i.starts_with(char::MAX)),
            ),
            None => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: delimiter.map(enc),
            key_marker: Some(enc(key_marker)),
            upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
            max_uploads: Some(max as i32),
            is_truncated: Some(next_key.is_some()),
            next_key_marker: next_key.map(enc),
            next_upload_id_marker: next_id,
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        checksum_algorithm: u.checksum_algorithm.clone().map(ChecksumAlgorithm::from),
                        checksum_type: checksum_type(&u),
                        initiated: Some(timestamp(u.initiated_ms)),
                        initiator: Some(initiator.clone()),
                        owner: Some(owner.clone()),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        key: Some(enc(u.key)),
                        upload_id: Some(u.id),
                    })
                    .collect(),
            ),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use nimbus_core::objects::LambdaNotification;
    use nimbus_store::{Metadata, ObjectMeta, SqliteMetadata};

    use super::*;
    use crate::{Files, Functions};

    #[derive(Default)]
    struct Queued(AtomicUsize);

    #[async_trait::async_trait]
    impl Functions for Queued {
        async fn may_notify(&self, _: &str, _: &str) -> bool {
            true
        }
        fn queued(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn request<T>(input: T) -> S3Request<T> {
        S3Request {
            input,
            method: http::Method::POST,
            uri: http::Uri::from_static("/"),
            headers: Default::default(),
            extensions: Default::default(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        }
    }

    #[tokio::test]
    async fn completions_copies_and_batch_deletes_queue_their_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        let queued = Arc::new(Queued::default());
        let files = Files::open(dir.path().join("objects")).unwrap();
        let s3 = Objects::open(meta.clone(), files, queued.clone(), "us-east-1".into(), "123456789012".into())
            .await
            .unwrap();
        let rule = LambdaNotification {
            id: "all".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            events: vec!["s3:ObjectCreated:*".into(), "s3:ObjectRemoved:*".into()],
            prefix: None,
            suffix: None,
        };
        let bucket = Bucket {
            name: "b".into(),
            created_ms: 0,
            notifications: vec![rule],
            tags: BTreeMap::new(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        meta.create_bucket(&bucket, usize::MAX).await.unwrap();

        let create = CreateMultipartUploadInput::builder().bucket("b".into()).key("k".into()).build().unwrap();
        let id = s3.create_multipart_upload(request(create)).await.unwrap().output.upload_id.unwrap();
        let part = UploadPartInput::builder()
            .bucket("b".into())
            .key("k".into())
            .upload_id(id.clone())
            .part_number(1)
            .body(Some(StreamingBlob::from(s3s::Body::from(bytes::Bytes::from_static(b"data")))))
            .build()
            .unwrap();
        let etag = s3.upload_part(request(part)).await.unwrap().output.e_tag;
        let done = CompletedPart { e_tag: etag, part_number: Some(1), ..Default::default() };
        let complete = CompleteMultipartUploadInput::builder()
            .bucket("b".into())
            .key("k".into())
            .upload_id(id)
            .multipart_upload(Some(CompletedMultipartUpload { parts: Some(vec![done]) }))
            .build()
            .unwrap();
        s3.complete_multipart_upload(request(complete)).await.unwrap();
        let copy = CopyObjectInput::builder()
            .bucket("b".into())
            .key("c".into())
            .copy_source(CopySource::Bucket { bucket: "b".into(), key: "k".into(), version_id: None })
            .build()
            .unwrap();
        s3.copy_object(request(copy)).await.unwrap();
        let gone =
            ObjectIdentifier { key: "k".into(), e_tag: None, last_modified_time: None, size: None, version_id: None };
        let delete = DeleteObjectsInput::builder()
            .bucket("b".into())
            .delete(Delete { objects: vec![gone], quiet: None })
            .build()
            .unwrap();
        s3.delete_objects(request(delete)).await.unwrap();

        let mut names: Vec<String> = meta
            .due_events(i64::MAX, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| {
                let payload: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                payload["Records"][0]["eventName"].as_str().unwrap().to_string()
            })
            .collect();
        // Events of the same millisecond come in no set order.
        names.sort();
        assert_eq!(names, ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy", "ObjectRemoved:Delete"]);
        assert_eq!(queued.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn copy_ranges_are_inclusive_and_within_the_source() {
        assert_eq!(copy_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert_eq!(copy_range("bytes=5-5", 10).unwrap(), (5, 1));
        assert!(copy_range("bytes=5-10", 10).is_err());
        assert!(copy_range("bytes=5-", 10).is_err());
        assert!(copy_range("bytes=6-5", 10).is_err());
        assert!(copy_range("0-5", 10).is_err());
    }

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        let part = |value: &str| Part {
            number: 1,
            file: "f".into(),
            size: 1,
            etag: "\"e\"".into(),
            modified_ms: 0,
            checksum: Some(Checksum { algorithm: "SHA256".into(), value: value.into() }),
        };
        // sha256 of "a" and of "b", base64.
        let a = part("ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=");
        let b = part("PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0=");
        let c = composite("SHA256", &[&a, &b]).unwrap();
        let mut h = hasher(Some("SHA256"));
        h.update(&hex::decode("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb").unwrap());
        h.update(&hex::decode("3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d").unwrap());
        assert_eq!(c.value, format!("{}-2", h.finalize().checksum_sha256.unwrap()));
        let without = Part { checksum: None, ..a.clone() };
        assert!(composite("SHA256", &[&a, &without]).is_none());
    }
}
