//! The S3 operations Nimbus serves, as `s3s`'s [`S3`] trait over the store.
//! Each operation checks what AWS checks, in AWS's order, and answers with
//! AWS's error codes; operations left out answer `NotImplemented`.

use std::collections::BTreeMap;

use base64::Engine;
use nimbus_core::objects::{Bucket, Checksum, LambdaNotification, ObjectHeaders, ObjectInfo};
use nimbus_store::{BucketDelete, Precondition};
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::files::WriteError;
use crate::listing;
use crate::notify::{self, Origin};
use crate::Objects;

/// Largest single PUT (5 GiB), as on AWS.
pub(crate) const PUT_MAX: u64 = 5 << 30;
/// Longest key in bytes.
pub(crate) const KEY_MAX: usize = 1024;

pub(crate) fn internal(e: impl std::fmt::Display) -> s3s::S3Error {
    tracing::error!(error = %e, "object store failure");
    s3_error!(InternalError, "We encountered an internal error. Please try again.")
}

/// S3's answer to a conditional write whose condition does not hold.
pub(crate) fn unmet(u: nimbus_store::Unmet) -> s3s::S3Error {
    match u {
        nimbus_store::Unmet::Missing => s3_error!(NoSuchKey, "The specified key does not exist."),
        nimbus_store::Unmet::Mismatch => {
            s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
        }
        nimbus_store::Unmet::NoBucket => s3_error!(NoSuchBucket, "The specified bucket does not exist"),
    }
}

/// S3's answer to a failed store write: a condition's, or an internal error.
pub(crate) fn store_error(e: nimbus_store::Error) -> s3s::S3Error {
    match e {
        nimbus_store::Error::Unmet(u) => unmet(u),
        e => internal(e),
    }
}

/// A conditional write's condition (S3's conditional writes): `If-None-Match`
/// takes only `*` (no object of the key), `If-Match` an ETag or `*` (an
/// object of the key, with that ETag); both at once is no condition S3 has.
pub(crate) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<Precondition>> {
    let not_implemented =
        || s3_error!(NotImplemented, "A header you provided implies functionality that is not implemented");
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (None, Some(c)) if c.is_any() => Ok(Some(Precondition::Absent)),
        (Some(c), None) if c.is_any() => Ok(Some(Precondition::Present(None))),
        (Some(c), None) => match c.as_etag() {
            Some(e) => Ok(Some(Precondition::Present(Some(format!("\"{}\"", e.value()))))),
            None => Err(not_implemented()),
        },
        _ => Err(not_implemented()),
    }
}

/// A file that is gone was deleted or replaced since its metadata was read.
pub(crate) fn gone_or_internal(e: std::io::Error) -> s3s::S3Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        s3_error!(NoSuchKey, "The specified key does not exist.")
    } else {
        internal(e)
    }
}

/// A time as S3 gives it: in whole seconds, in a listing's XML as in a
/// `Last-Modified` header. A listing's milliseconds that the header lacks
/// make `aws s3 sync --exact-timestamps` download every object every time.
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs((ms.max(0) / 1000) as u64))
}

pub(crate) fn millis(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn etag(o: &ObjectInfo) -> ETag {
    ETag::Strong(o.etag.trim_matches('"').to_string())
}

pub(crate) fn check_key(key: &str) -> S3Result<()> {
    if key.len() > KEY_MAX {
        return Err(s3_error!(KeyTooLongError, "Your key is too long"));
    }
    Ok(())
}

/// AWS's naming rules for new buckets: s3s's general ones (3 to 63
/// lower-case letters, digits, dots and hyphens, no IP address, ...) and the
/// prefixes and suffixes AWS reserves.
pub fn valid_bucket_name(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    s3s::path::check_bucket_name(name)
        && !PREFIXES.iter().any(|p| name.starts_with(p))
        && !SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The checksum algorithms a request asks for: by a value sent in a header,
/// or by name (the aws-chunked trailer form names it and sends it last).
pub(crate) fn hasher_for(algorithm: Option<&ChecksumAlgorithm>, sent: &s3s::dto::Checksum) -> ChecksumHasher {
    let named = |n: &str| algorithm.is_some_and(|a| a.as_str().eq_ignore_ascii_case(n));
    let mut h = ChecksumHasher::default();
    if sent.checksum_crc32.is_some() || named(ChecksumAlgorithm::CRC32) {
        h.crc32 = Some(Default::default());
    }
    if sent.checksum_crc32c.is_some() || named(ChecksumAlgorithm::CRC32C) {
        h.crc32c = Some(Default::default());
    }
    if sent.checksum_sha1.is_some() || named(ChecksumAlgorithm::SHA1) {
        h.sha1 = Some(Default::default());
    }
    if sent.checksum_sha256.is_some() || named(ChecksumAlgorithm::SHA256) {
        h.sha256 = Some(Default::default());
    }
    if sent.checksum_crc64nvme.is_some() || named(ChecksumAlgorithm::CRC64NVME) {
        h.crc64nvme = Some(Default::default());
    }
    h
}

/// Refuses, before the body is read, checksum headers S3 refuses: more
/// than one `x-amz-checksum-*`, a value that is not base64 of its
/// algorithm's length, a value of another algorithm than
/// `x-amz-sdk-checksum-algorithm` names, or that name with no value and no
/// trailer to bring one.
pub(crate) fn check_checksum_headers(
    named: Option<ChecksumAlgorithm>,
    sent: &s3s::dto::Checksum,
    trailer: Option<&ChecksumAlgorithm>,
) -> S3Result<()> {
    let given: Vec<(&str, usize, &String)> = [
        ("crc32", 4, &sent.checksum_crc32),
        ("crc32c", 4, &sent.checksum_crc32c),
        ("sha1", 20, &sent.checksum_sha1),
        ("sha256", 32, &sent.checksum_sha256),
        ("crc64nvme", 8, &sent.checksum_crc64nvme),
    ]
    .into_iter()
    .filter_map(|(name, len, v)| Some((name, len, v.as_ref()?)))
    .collect();
    match given[..] {
        [] if named.is_some() && trailer.is_none() => Err(s3_error!(
            InvalidRequest,
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found."
        )),
        [] => Ok(()),
        [(name, len, value)] => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok();
            if decoded.is_none_or(|d| d.len() != len) {
                return Err(s3_error!(InvalidRequest, "Value for x-amz-checksum-{name} header is invalid."));
            }
            if named.is_some_and(|a| !a.as_str().eq_ignore_ascii_case(name)) {
                return Err(s3_error!(InvalidRequest, "Value for x-amz-sdk-checksum-algorithm header is invalid."));
            }
            Ok(())
        }
        _ => Err(s3_error!(
            InvalidRequest,
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        )),
    }
}

/// The algorithm `x-amz-sdk-checksum-algorithm` names (`s3s` reads it
/// for some operations only, and for PutObject from another header).
pub(crate) fn named_algorithm(headers: &http::HeaderMap) -> Option<ChecksumAlgorithm> {
    let name = headers.get("x-amz-sdk-checksum-algorithm")?.to_str().ok()?;
    Some(ChecksumAlgorithm::from(name.trim().to_ascii_uppercase()))
}

/// The algorithm an aws-chunked body's trailer (`x-amz-trailer:
/// x-amz-checksum-crc32`) will send a checksum of, for a client that does
/// not also name it in `x-amz-sdk-checksum-algorithm`.
pub(crate) fn trailer_algorithm(headers: &http::HeaderMap) -> Option<ChecksumAlgorithm> {
    let trailer = headers.get("x-amz-trailer")?.to_str().ok()?.trim().to_ascii_lowercase();
    let name = trailer.strip_prefix("x-amz-checksum-")?;
    Some(ChecksumAlgorithm::from(name.to_ascii_uppercase()))
}

/// Checksums sent in headers, completed by the trailers of an aws-chunked body.
pub(crate) fn sent_checksums(input: s3s::dto::Checksum, trailers: Option<&s3s::TrailingHeaders>) -> s3s::dto::Checksum {
    let mut sent = input;
    if let Some(t) = trailers {
        t.read(|h| {
            let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            sent.checksum_crc32 = sent.checksum_crc32.take().or_else(|| get("x-amz-checksum-crc32"));
            sent.checksum_crc32c = sent.checksum_crc32c.take().or_else(|| get("x-amz-checksum-crc32c"));
            sent.checksum_sha1 = sent.checksum_sha1.take().or_else(|| get("x-amz-checksum-sha1"));
            sent.checksum_sha256 = sent.checksum_sha256.take().or_else(|| get("x-amz-checksum-sha256"));
            sent.checksum_crc64nvme = sent.checksum_crc64nvme.take().or_else(|| get("x-amz-checksum-crc64nvme"));
        });
    }
    sent
}

/// Compares what the client sent with what arrived: Content-MD5 gives
/// `BadDigest`, an additional checksum `BadDigest` naming its algorithm.
/// Returns the object's additional checksum, if one was used.
pub(crate) fn verify(
    content_md5: Option<&str>,
    md5: &[u8; 16],
    sent: &s3s::dto::Checksum,
    got: &s3s::dto::Checksum,
) -> S3Result<Option<Checksum>> {
    if let Some(expected) = content_md5 {
        let decoded = base64::engine::general_purpose::STANDARD.decode(expected).ok();
        if decoded.as_deref() != Some(md5.as_slice()) {
            if decoded.is_none_or(|d| d.len() != 16) {
                return Err(s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."));
            }
            return Err(s3_error!(BadDigest, "The Content-MD5 you specified did not match what we received."));
        }
    }
    let pairs = [
        ("CRC32", &sent.checksum_crc32, &got.checksum_crc32),
        ("CRC32C", &sent.checksum_crc32c, &got.checksum_crc32c),
        ("SHA1", &sent.checksum_sha1, &got.checksum_sha1),
        ("SHA256", &sent.checksum_sha256, &got.checksum_sha256),
        ("CRC64NVME", &sent.checksum_crc64nvme, &got.checksum_crc64nvme),
    ];
    let mut kept = None;
    for (name, sent, got) in pairs {
        if let (Some(s), Some(g)) = (sent, got) {
            if s != g {
                return Err(s3_error!(BadDigest, "The {name} you specified did not match the calculated checksum."));
            }
        }
        if let Some(g) = got {
            kept.get_or_insert(Checksum { algorithm: name.into(), value: g.clone() });
        }
    }
    Ok(kept)
}

pub(crate) fn write_error(e: WriteError) -> s3s::S3Error {
    match e {
        WriteError::TooLarge(_) => {
            s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed object size.")
        }
        // `s3s`'s body streams fail with these (its error types are private:
        // their text is what can be told apart).
        WriteError::Body(m) if m.ends_with("AwsChunkedStreamError: SignatureMismatch") => s3_error!(
            SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        ),
        WriteError::Body(m) if m.ends_with("UploadStreamError: Sha256Mismatch") => {
            let mut e = s3s::S3Error::with_message(
                s3s::S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            );
            e.set_status_code(http::StatusCode::BAD_REQUEST);
            e
        }
        WriteError::Body(m) => s3_error!(
            IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header: {m}"
        ),
        WriteError::Io(e) => internal(e),
    }
}

/// An object's checksum in an answer, with its type: a composite one (of a
/// multipart upload's parts) ends in `-<parts>`, which base64 never has.
pub(crate) fn put_checksums(c: &Option<Checksum>, out: &mut s3s::dto::Checksum) {
    if let Some(c) = c {
        let kind = if c.value.contains('-') { ChecksumType::COMPOSITE } else { ChecksumType::FULL_OBJECT };
        out.checksum_type = Some(ChecksumType::from_static(kind));
        let v = Some(c.value.clone());
        match c.algorithm.as_str() {
            "CRC32" => out.checksum_crc32 = v,
            "CRC32C" => out.checksum_crc32c = v,
            "SHA1" => out.checksum_sha1 = v,
            "SHA256" => out.checksum_sha256 = v,
            _ => out.checksum_crc64nvme = v,
        }
    }
}

/// `x-amz-tagging`: URL-encoded `k=v&k2=v2`.
pub(crate) fn parse_tagging(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for pair in header.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| s3_error!(InvalidArgument, "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates."))
        };
        if tags.insert(decode(k)?, decode(v)?).is_some() {
            return Err(s3_error!(InvalidTag, "Cannot provide multiple Tags with the same key"));
        }
    }
    crate::tagging::check_tags(&tags)?;
    Ok(tags)
}

impl Objects {
    pub(crate) async fn bucket(&self, name: &str) -> S3Result<Bucket> {
        self.meta
            .get_bucket(name)
            .await
            .map_err(internal)?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }

    /// Changes one part of a bucket's settings (notifications, lifecycle).
    /// The store writes the whole bucket, so changes take turns from their
    /// read to their write: two at once (Terraform applies a bucket's
    /// notification and lifecycle resources in parallel) would otherwise
    /// both be acknowledged, and the one whose read came first lost.
    pub(crate) async fn edit_bucket(&self, name: &str, edit: impl FnOnce(&mut Bucket)) -> S3Result<()> {
        let _turn = self.bucket_edits.lock().await;
        let mut bucket = self.bucket(name).await?;
        edit(&mut bucket);
        self.meta.put_bucket(&bucket).await.map_err(internal)
    }

    /// The writer of a request, for the events its write triggers.
    /// CreateBucket of a bucket this account has: in us-east-1 a success,
    /// for legacy compatibility, and BucketAlreadyOwnedByYou elsewhere [S3
    /// API reference, CreateBucket's errors].
    fn already_owned(&self, name: &str) -> S3Result<S3Response<CreateBucketOutput>> {
        if self.region == "us-east-1" {
            return Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }));
        }
        Err(s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        ))
    }

    pub(crate) fn origin<T>(&self, req: &S3Request<T>) -> Origin<'_> {
        let requested = req.extensions.get::<notify::Requested>();
        Origin {
            region: &self.region,
            account: &self.account_id,
            principal: req.credentials.as_ref().map_or("anonymous", |c| c.access_key.as_str()).to_string(),
            source_ip: requested.map_or_else(|| "127.0.0.1".into(), |r| r.source_ip.clone()),
            request_id: requested.map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.request_id.clone()),
            lineage: notify::lineage(&req.headers),
        }
    }

    pub(crate) async fn object(&self, bucket: &str, key: &str) -> S3Result<ObjectInfo> {
        Ok(self.object_in(bucket, key).await?.1)
    }

    /// [`Objects::object`] with its bucket, which it reads first (a GET's
    /// lifecycle headers come from it).
    pub(crate) async fn object_in(&self, bucket: &str, key: &str) -> S3Result<(Bucket, ObjectInfo)> {
        let b = self.bucket(bucket).await?;
        let o = self
            .meta
            .get_object(bucket, key)
            .await
            .map_err(internal)?
            .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
        Ok((b, o))
    }

    /// Stores a written file as `key` with its notifications, then removes
    /// the file it replaced; on failure the new file goes instead.
    pub(crate) async fn commit_object(
        &self,
        bucket: &Bucket,
        o: &ObjectInfo,
        event: &str,
        origin: &Origin<'_>,
        condition: Option<Precondition>,
    ) -> S3Result<()> {
        let events = notify::events(bucket, event, o, origin);
        match self.meta.put_object_if(o, &events, condition).await {
            Ok(replaced) => {
                self.files.remove(replaced).await;
                if !events.is_empty() {
                    self.functions.queued();
                }
                Ok(())
            }
            Err(e) => {
                if o.data.is_none() {
                    self.files.remove([o.file.clone()]).await;
                }
                Err(store_error(e))
            }
        }
    }

    /// The preconditions of GET and HEAD, as RFC 9110 orders them.
    fn check_conditions(
        o: &ObjectInfo,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
        if_modified_since: Option<&Timestamp>,
        if_unmodified_since: Option<&Timestamp>,
    ) -> S3Result<()> {
        let tag = etag(o);
        let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.strong_cmp(&tag));
        let modified_s = o.modified_ms / 1000;
        if let Some(c) = if_match {
            if !matches(c) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        } else if let Some(t) = if_unmodified_since {
            if modified_s > millis(t) / 1000 {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        let unmodified = match (if_none_match, if_modified_since) {
            (Some(c), _) => matches(c),
            (None, Some(t)) => modified_s <= millis(t) / 1000,
            (None, None) => false,
        };
        if unmodified {
            // A 304 names what the client has, as a 200 would (RFC 9110).
            let mut e = s3_error!(NotModified);
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&o.etag) {
                headers.insert(http::header::ETAG, v);
            }
            let mut date = Vec::new();
            if timestamp(o.modified_ms).format(TimestampFormat::HttpDate, &mut date).is_ok() {
                if let Ok(v) = http::HeaderValue::from_bytes(&date) {
                    headers.insert(http::header::LAST_MODIFIED, v);
                }
            }
            e.set_headers(headers);
            return Err(e);
        }
        Ok(())
    }
}

/// AWS's bound on user-defined metadata: the UTF-8 bytes of its keys and
/// values, together.
const METADATA_MAX: usize = 2 << 10;

pub(crate) fn check_metadata(metadata: Option<&Metadata>) -> S3Result<()> {
    let size: usize = metadata.map_or(0, |m| m.iter().map(|(k, v)| k.len() + v.len()).sum());
    if size > METADATA_MAX {
        return Err(s3_error!(MetadataTooLarge, "Your metadata headers exceed the maximum allowed metadata size."));
    }
    Ok(())
}

/// The storage classes S3's model names. Nimbus keeps every object alike
/// (and reports it `STANDARD`); a class S3 does not have is refused as S3
/// refuses it.
const STORAGE_CLASSES: [&str; 12] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
    "FSX_OPENZFS",
];

pub(crate) fn check_storage_class(class: Option<&StorageClass>) -> S3Result<()> {
    match class {
        Some(c) if !STORAGE_CLASSES.contains(&c.as_str()) => {
            Err(s3_error!(InvalidStorageClass, "The storage class you specified is not valid"))
        }
        _ => Ok(()),
    }
}

/// A body declared larger than one request may carry is refused before it
/// is read (it was written to disk up to 5 GiB first).
pub(crate) fn check_declared_size(content_length: Option<i64>) -> S3Result<()> {
    if content_length.is_some_and(|n| u64::try_from(n).unwrap_or(0) > PUT_MAX) {
        return Err(write_error(WriteError::TooLarge(PUT_MAX)));
    }
    Ok(())
}

pub(crate) fn headers_of(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
    metadata: Option<Metadata>,
) -> ObjectHeaders {
    let expires = expires.and_then(|t| {
        let mut buf = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
        String::from_utf8(buf).ok()
    });
    // `aws-chunked` says how the body was sent (SigV4 streaming), not how the
    // object is encoded: S3 keeps only the other codings (`gzip`).
    let content_encoding = content_encoding.and_then(|e| {
        let kept: Vec<&str> =
            e.split(',').map(str::trim).filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked")).collect();
        (!kept.is_empty()).then(|| kept.join(","))
    });
    ObjectHeaders {
        // What AWS records for an upload that names no type.
        content_type: content_type.or_else(|| Some("binary/octet-stream".into())),
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires,
        metadata: metadata.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
    }
}

pub(crate) fn expires_of(h: &ObjectHeaders) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, h.expires.as_deref()?).ok()
}

#[async_trait::async_trait]
impl S3 for Objects {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        if !valid_bucket_name(&name) {
            return Err(s3_error!(InvalidBucketName, "The specified bucket is not valid."));
        }
        // us-east-1 is the absence of a constraint, and S3 refuses it named.
        let constraint = req.input.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref());
        if constraint.is_some_and(|c| c.as_str() == "us-east-1") {
            return Err(s3_error!(InvalidLocationConstraint, "The specified location-constraint is not valid"));
        }
        // A node serves its own region only; AWS's regional endpoints refuse another's.
        if let Some(c) = constraint.filter(|c| c.as_str() != self.region) {
            return Err(s3_error!(
                IllegalLocationConstraintException,
                "The {} location constraint is incompatible for the region specific endpoint this request was sent to.",
                c.as_str()
            ));
        }
        if self.meta.get_bucket(&name).await.map_err(internal)?.is_some() {
            return self.already_owned(&name);
        }
        let bucket = Bucket {
            name: name.clone(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            notifications: vec![],
            tags: BTreeMap::new(),
            lifecycle: vec![],
            settings: Default::default(),
        };
        if !self.meta.create_bucket(&bucket, self.max_buckets).await.map_err(internal)? {
            if self.meta.get_bucket(&name).await.map_err(internal)?.is_none() {
                return Err(s3_error!(TooManyBuckets, "You have attempted to create more buckets than allowed"));
            }
            return self.already_owned(&name);
        }
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        match self.meta.delete_bucket(&req.input.bucket).await.map_err(internal)? {
            BucketDelete::Deleted => Ok(S3Response::new(DeleteBucketOutput {})),
            BucketDelete::Missing => Err(s3_error!(NoSuchBucket, "The specified bucket does not exist")),
            BucketDelete::NotEmpty => Err(s3_error!(BucketNotEmpty, "The bucket you tried to delete is not empty")),
        }
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        // us-east-1 is the empty constraint, as on AWS.
        let constraint = (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint: constraint }))
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let input = req.input;
        // Without max-buckets, every bucket on one page (as AWS answers a
        // general-purpose account); with it, pages in name order, the token
        // being the page's last name.
        let max = match input.max_buckets {
            None => usize::MAX,
            Some(n @ 1..=10_000) => n as usize,
            Some(_) => {
                return Err(s3_error!(InvalidArgument, "Argument max-buckets must be an integer between 1 and 10000."))
            }
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input.continuation_token.unwrap_or_default();
        let mut buckets = self.meta.list_buckets().await.map_err(internal)?;
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        let named = buckets.into_iter().filter(|b| b.name.starts_with(&prefix));
        let (page, continuation_token) =
            nimbus_core::paging::after_key(named, |b| b.name.clone(), Some(after.as_str()), false, max);
        let list: Vec<s3s::dto::Bucket> = page
            .into_iter()
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(list),
            owner: Some(self.owner().1),
            continuation_token,
            prefix: input.prefix,
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers.clone();
        let origin = self.origin(&req);
        let input = req.input;
        check_key(&input.key)?;
        check_metadata(input.metadata.as_ref())?;
        check_storage_class(input.storage_class.as_ref())?;
        check_declared_size(input.content_length)?;
        let bucket = self.bucket(&input.bucket).await?;
        let tags = parse_tagging(input.tagging.as_deref())?;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
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
        let trailer = trailer_algorithm(&req.headers);
        check_checksum_headers(named_algorithm(&req.headers), &header_sums, trailer.as_ref())?;
        let named = input.checksum_algorithm.clone().or(trailer);
        let hasher = hasher_for(named.as_ref(), &header_sums);
        let written = self.files.receive(body, hasher, PUT_MAX).await.map_err(write_error)?;
        if let Some(expected) = input.content_length {
            if expected as u64 != written.size {
                self.files.discard(written).await;
                return Err(s3_error!(
                    IncompleteBody,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header."
                ));
            }
        }
        let sent = sent_checksums(header_sums, trailers.as_ref());
        let checksum = match verify(input.content_md5.as_deref(), &written.md5, &sent, &written.checksums) {
            Ok(c) => c,
            Err(e) => {
                self.files.discard(written).await;
                return Err(e);
            }
        };
        let object = ObjectInfo {
            bucket: bucket.name.clone(),
            key: input.key,
            file: written.file,
            size: written.size,
            etag: format!("\"{}\"", hex::encode(written.md5)),
            modified_ms: chrono::Utc::now().timestamp_millis(),
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
            checksum,
            part_sizes: vec![],
            data: written.data,
        };
        self.commit_object(&bucket, &object, "ObjectCreated:Put", &origin, condition).await?;
        let mut sums = s3s::dto::Checksum::default();
        put_checksums(&object.checksum, &mut sums);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&object)),
            expiration: nimbus_core::objects::expiration_header(&bucket.lifecycle, &object),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_type: sums.checksum_type,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let overrides = [
            ("response-content-type", &input.response_content_type),
            ("response-content-encoding", &input.response_content_encoding),
            ("response-content-disposition", &input.response_content_disposition),
            ("response-content-language", &input.response_content_language),
            ("response-cache-control", &input.response_cache_control),
        ];
        for (name, value) in overrides {
            latin1_header(name, value.as_deref())?;
        }
        check_version(input.version_id.as_deref())?;
        let (bucket, o, span, stream) = self
            .open_object(&input.bucket, &input.key, |o| {
                Self::check_conditions(
                    o,
                    input.if_match.as_ref(),
                    input.if_none_match.as_ref(),
                    input.if_modified_since.as_ref(),
                    input.if_unmodified_since.as_ref(),
                )?;
                span(o, input.range.as_ref(), input.part_number)
            })
            .await?;
        let len = span.map_or(o.size, |(_, len)| len);
        let mut sums = s3s::dto::Checksum::default();
        if span.is_none() && input.checksum_mode.is_some() {
            put_checksums(&o.checksum, &mut sums);
        }
        let h = &o.headers;
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len as i64),
            content_range: span.map(|(start, len)| content_range(start, len, o.size)),
            expiration: nimbus_core::objects::expiration_header(&bucket.lifecycle, &o),
            parts_count: parts_count(&o, input.part_number),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&o)),
            last_modified: Some(timestamp(o.modified_ms)),
            content_type: input.response_content_type.or_else(|| h.content_type.clone()),
            content_encoding: input.response_content_encoding.or_else(|| h.content_encoding.clone()),
            content_disposition: input.response_content_disposition.or_else(|| h.content_disposition.clone()),
            content_language: input.response_content_language.or_else(|| h.content_language.clone()),
            cache_control: input.response_cache_control.or_else(|| h.cache_control.clone()),
            expires: input.response_expires.or_else(|| expires_of(h)),
            metadata: (!h.metadata.is_empty()).then(|| h.metadata.clone().into_iter().collect()),
            tag_count: (!o.tags.is_empty()).then_some(o.tags.len() as i32),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_type: sums.checksum_type,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        check_version(input.version_id.as_deref())?;
        let (bucket, o) = self.object_in(&input.bucket, &input.key).await?;
        Self::check_conditions(
            &o,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let mut sums = s3s::dto::Checksum::default();
        if input.checksum_mode.is_some() {
            put_checksums(&o.checksum, &mut sums);
        }
        let span = span(&o, input.range.as_ref(), input.part_number)?;
        let h = &o.headers;
        Ok(S3Response::new(HeadObjectOutput {
            expiration: nimbus_core::objects::expiration_header(&bucket.lifecycle, &o),
            content_length: Some(span.map_or(o.size, |(_, len)| len) as i64),
            content_range: span.map(|(start, len)| content_range(start, len, o.size)),
            parts_count: parts_count(&o, input.part_number),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&o)),
            last_modified: Some(timestamp(o.modified_ms)),
            content_type: h.content_type.clone(),
            content_encoding: h.content_encoding.clone(),
            content_disposition: h.content_disposition.clone(),
            content_language: h.content_language.clone(),
            cache_control: h.cache_control.clone(),
            expires: expires_of(h),
            metadata: (!h.metadata.is_empty()).then(|| h.metadata.clone().into_iter().collect()),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_type: sums.checksum_type,
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        check_version(req.input.version_id.as_deref())?;
        let origin = self.origin(&req);
        let condition = write_condition(req.input.if_match.as_ref(), None)?;
        self.remove_object(&bucket, &req.input.key, condition, &origin).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        check_listing(input.encoding_type.as_ref(), input.max_keys)?;
        // Version 2 names owners only when asked to (version 1 always does).
        let owner = (input.fetch_owner == Some(true)).then(|| self.owner().1);
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match &input.continuation_token {
            Some(t) => decode_token(t)?,
            None => input.start_after.clone().unwrap_or_default(),
        };
        let page = listing::list(self.meta.as_ref(), &input.bucket, &prefix, input.delimiter.as_deref(), &after, max)
            .await
            .map_err(internal)?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let count = page.objects.len() + page.prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            key_count: Some(count as i32),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(enc),
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.map(|n| encode_token(&n)),
            contents: Some(page.objects.into_iter().map(|o| listed(o, &enc, owner.as_ref())).collect()),
            common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let owner = self.owner().1;
        let prefix = input.prefix.clone().unwrap_or_default();
        let marker = input.marker.clone().unwrap_or_default();
        let (page, max) = self
            .marker_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &marker,
                input.max_keys,
                input.encoding_type.as_ref(),
            )
            .await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        // NextMarker is given only with a delimiter (clients use the last key otherwise).
        let next_marker = match (&page.next, &input.delimiter) {
            (Some(n), Some(_)) => Some(enc(listing::before_past(n).to_string())),
            _ => None,
        };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            marker: Some(enc(marker)),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            is_truncated: Some(page.next.is_some()),
            next_marker,
            contents: Some(page.objects.into_iter().map(|o| listed(o, &enc, Some(&owner))).collect()),
            common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    /// A bucket that was never versioned, as S3 lists one: each object is
    /// its one version, `null` and latest (what `aws s3 rb --force` and
    /// Terraform's `force_destroy` page through to empty a bucket).
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        self.bucket(&input.bucket).await?;
        if input.version_id_marker.is_some() && input.key_marker.is_none() {
            return Err(s3_error!(InvalidArgument, "A version-id marker cannot be specified without a key marker."));
        }
        let owner = self.owner().1;
        let prefix = input.prefix.clone().unwrap_or_default();
        let marker = input.key_marker.clone().unwrap_or_default();
        let (page, max) = self
            .marker_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &marker,
                input.max_keys,
                input.encoding_type.as_ref(),
            )
            .await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let next_key_marker = page.next.as_deref().map(|n| enc(listing::before_past(n).to_string()));
        let versions = page
            .objects
            .into_iter()
            .map(|o| ObjectVersion {
                owner: Some(owner.clone()),
                e_tag: Some(etag(&o)),
                last_modified: Some(timestamp(o.modified_ms)),
                size: Some(o.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                key: Some(enc(o.key)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            key_marker: Some(enc(marker)),
            version_id_marker: input.version_id_marker,
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            is_truncated: Some(next_key_marker.is_some()),
            next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_string()),
            next_key_marker,
            versions: Some(versions),
            common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        Objects::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        Objects::put_bucket_versioning(self, req).await
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        Objects::put_public_access_block(self, req).await
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        Objects::get_public_access_block(self, req).await
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        Objects::delete_public_access_block(self, req).await
    }

    async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        Objects::put_bucket_ownership_controls(self, req).await
    }

    async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        Objects::get_bucket_ownership_controls(self, req).await
    }

    async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        Objects::delete_bucket_ownership_controls(self, req).await
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let config = input.notification_configuration;
        if config.queue_configurations.as_ref().is_some_and(|q| !q.is_empty())
            || config.topic_configurations.as_ref().is_some_and(|t| !t.is_empty())
        {
            return Err(s3_error!(
                InvalidArgument,
                "Nimbus delivers bucket notifications to Lambda functions only (LambdaFunctionConfigurations)."
            ));
        }
        let mut rules = Vec::new();
        for c in config.lambda_function_configurations.unwrap_or_default() {
            let (mut prefix, mut suffix) = (None, None);
            for rule in c.filter.and_then(|f| f.key).and_then(|k| k.filter_rules).unwrap_or_default() {
                let name = rule.name.as_ref().map(|n| n.as_str().to_ascii_lowercase());
                let slot = match name.as_deref() {
                    Some("prefix") => &mut prefix,
                    Some("suffix") => &mut suffix,
                    _ => return Err(s3_error!(InvalidArgument, "filter rule name must be either prefix or suffix")),
                };
                if slot.replace(rule.value.unwrap_or_default()).is_some() {
                    return Err(s3_error!(InvalidArgument, "Cannot specify more than one prefix rule in a filter."));
                }
            }
            rules.push(LambdaNotification {
                id: c.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                function_arn: c.lambda_function_arn,
                events: c.events.into_iter().map(String::from).collect(),
                prefix,
                suffix,
            });
        }
        crate::notify::check_overlaps(&rules)?;
        if input.skip_destination_validation != Some(true) {
            let mut unreachable = Vec::new();
            for r in &rules {
                if !self.functions.may_notify(&r.function_arn, &bucket.name).await {
                    unreachable.push(r.function_arn.clone());
                }
            }
            if !unreachable.is_empty() {
                return Err(s3_error!(
                    InvalidArgument,
                    "Unable to validate the following destination configurations: {}",
                    unreachable.join(", ")
                ));
            }
        }
        self.edit_bucket(&bucket.name, |b| b.notifications = rules).await?;
        Ok(S3Response::new(PutBucketNotificationConfigurationOutput {}))
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        let list = bucket
            .notifications
            .into_iter()
            .map(|n| {
                let rules: Vec<FilterRule> = [("Prefix", n.prefix), ("Suffix", n.suffix)]
                    .into_iter()
                    .filter_map(|(name, v)| {
                        v.map(|v| FilterRule { name: Some(FilterRuleName::from(name.to_string())), value: Some(v) })
                    })
                    .collect();
                LambdaFunctionConfiguration {
                    id: Some(n.id),
                    lambda_function_arn: n.function_arn,
                    events: n.events.into_iter().map(Event::from).collect(),
                    filter: (!rules.is_empty()).then_some(NotificationConfigurationFilter {
                        key: Some(S3KeyFilter { filter_rules: Some(rules) }),
                    }),
                }
            })
            .collect::<Vec<_>>();
        Ok(S3Response::new(GetBucketNotificationConfigurationOutput {
            lambda_function_configurations: (!list.is_empty()).then_some(list),
            ..Default::default()
        }))
    }

    // Multipart uploads, copies, batch deletes, tagging and lifecycle: see their modules.
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        Objects::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        Objects::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        Objects::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        Objects::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        Objects::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        Objects::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Objects::list_multipart_uploads(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        Objects::copy_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        Objects::delete_objects(self, req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        Objects::put_bucket_lifecycle_configuration(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        Objects::get_bucket_lifecycle_configuration(self, req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        Objects::delete_bucket_lifecycle(self, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        Objects::put_object_tagging(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        Objects::get_object_tagging(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        Objects::delete_object_tagging(self, req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        Objects::put_bucket_tagging(self, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        Objects::get_bucket_tagging(self, req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        Objects::delete_bucket_tagging(self, req).await
    }
}

impl Objects {
    /// Deletes an object (absent keys are not an error, as on AWS, unless
    /// its condition, S3's `If-Match`, names one) with its notifications.
    pub(crate) async fn remove_object(
        &self,
        bucket: &Bucket,
        key: &str,
        condition: Option<Precondition>,
        origin: &Origin<'_>,
    ) -> S3Result<()> {
        self.remove(bucket, key, None, condition, "ObjectRemoved:Delete", origin).await
    }

    /// Deletes `key` if it still has the bytes of `only_file` (when given),
    /// queuing the notifications of `event`.
    pub(crate) async fn remove(
        &self,
        bucket: &Bucket,
        key: &str,
        only_file: Option<&str>,
        condition: Option<Precondition>,
        event: &str,
        origin: &Origin<'_>,
    ) -> S3Result<()> {
        let events = |o: &ObjectInfo| notify::events(bucket, event, o, origin);
        let gone = self
            .meta
            .delete_object(&bucket.name, key, only_file, condition.as_ref(), &events)
            .await
            .map_err(store_error)?;
        if let Some(o) = gone {
            if bucket.notifications.iter().any(|n| n.matches(&format!("s3:{event}"), &o.key)) {
                self.functions.queued();
            }
            if o.data.is_none() {
                self.files.remove([o.file]).await;
            }
        }
        Ok(())
    }
}

/// The bytes of `o` a GET or HEAD asks for, by `Range` or `?partNumber=`,
/// as (start, length); `None` for the whole object.
fn span(o: &ObjectInfo, range: Option<&Range>, part_number: Option<i32>) -> S3Result<Option<(u64, u64)>> {
    match (range, part_number) {
        (Some(_), Some(_)) => {
            Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"))
        }
        (Some(r), None) => {
            let r = r.check(o.size).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            Ok(Some((r.start, r.end - r.start)))
        }
        (None, Some(n)) => part_span(o, n).map(Some),
        (None, None) => Ok(None),
    }
}

/// The bytes of part `n` of `o` (`?partNumber=`) as (start, length); an
/// object that was not uploaded in parts is its own one part.
fn part_span(o: &ObjectInfo, n: i32) -> S3Result<(u64, u64)> {
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
    }
    let whole = [o.size];
    let sizes = if o.part_sizes.is_empty() { &whole[..] } else { &o.part_sizes[..] };
    let i = n as usize - 1;
    let Some(&len) = sizes.get(i) else {
        let mut e = s3s::S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(e);
    };
    Ok((sizes[..i].iter().sum(), len))
}

fn content_range(start: u64, len: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", (start + len).saturating_sub(1))
}

/// `x-amz-mp-parts-count`: sent when a part of a multipart object is asked for.
fn parts_count(o: &ObjectInfo, part_number: Option<i32>) -> Option<i32> {
    part_number.and((!o.part_sizes.is_empty()).then_some(o.part_sizes.len() as i32))
}

/// What S3 refuses of a listing's parameters: an encoding other than
/// `url`, a negative `max-keys`.
fn check_listing(encoding: Option<&EncodingType>, max_keys: Option<i32>) -> S3Result<()> {
    if encoding.is_some_and(|e| e.as_str() != EncodingType::URL) {
        return Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request"));
    }
    if max_keys.is_some_and(|n| n < 0) {
        return Err(s3_error!(InvalidArgument, "Provided max-keys not an integer or within integer range"));
    }
    Ok(())
}

impl Objects {
    /// A page of a listing that resumes after a marker (ListObjects v1,
    /// ListObjectVersions), and its size.
    async fn marker_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        marker: &str,
        max_keys: Option<i32>,
        encoding: Option<&EncodingType>,
    ) -> S3Result<(listing::Page, usize)> {
        self.bucket(bucket).await?;
        check_listing(encoding, max_keys)?;
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = resume_after(marker, prefix, delimiter);
        let page = listing::list(self.meta.as_ref(), bucket, prefix, delimiter, &after, max).await.map_err(internal)?;
        Ok((page, max))
    }
}

/// Versions are not kept: each object is its one version, `null`, as
/// ListObjectVersions lists it. Another id names no version here, and is
/// refused (a delete naming it must not remove the object).
pub(crate) fn check_version(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

/// Where a listing resumes after `marker`: past all the keys of a common
/// prefix it gave (one longer than `prefix`, ending in the delimiter), else
/// after the key itself (a "folder" object named as the prefix is a key).
fn resume_after(marker: &str, prefix: &str, delimiter: Option<&str>) -> String {
    let rolled_up = delimiter.is_some_and(|d| !d.is_empty() && marker.ends_with(d) && marker.len() > prefix.len());
    if rolled_up {
        listing::past(marker)
    } else {
        marker.to_string()
    }
}

fn listed(o: ObjectInfo, enc: &impl Fn(String) -> String, owner: Option<&Owner>) -> Object {
    Object {
        owner: owner.cloned(),
        e_tag: Some(etag(&o)),
        last_modified: Some(timestamp(o.modified_ms)),
        size: Some(o.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        key: Some(enc(o.key)),
        ..Default::default()
    }
}

/// What `encoding-type=url` asks for: keys percent-encoded, `/` kept.
pub(crate) fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn encode_token(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

/// A header value S3 can send: one in ISO-8859-1 (a response override
/// beyond it is refused, as S3 refuses it, rather than sent as UTF-8 bytes
/// that browsers would read as Latin-1).
fn latin1_header(name: &str, value: Option<&str>) -> S3Result<()> {
    match value {
        Some(v) if v.chars().any(|c| u32::from(c) > 0xff) => {
            Err(s3_error!(InvalidArgument, "Header value cannot be represented using ISO-8859-1. ({name})"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_junk_is_refused() {
        let t = encode_token(&listing::past("photos/"));
        assert_eq!(decode_token(&t).unwrap(), listing::past("photos/"));
        assert!(decode_token("!!!").is_err());
    }

    #[test]
    fn tagging_headers_parse() {
        let tags = parse_tagging(Some("a=1&b=x%20y")).unwrap();
        assert_eq!(tags["a"], "1");
        assert_eq!(tags["b"], "x y");
        assert!(parse_tagging(Some("a=1&a=2")).is_err());
    }

    #[test]
    fn a_trailer_names_its_algorithm() {
        let mut h = http::HeaderMap::new();
        assert!(trailer_algorithm(&h).is_none());
        h.insert("x-amz-trailer", http::HeaderValue::from_static("x-amz-checksum-crc32c"));
        assert_eq!(trailer_algorithm(&h).unwrap().as_str(), ChecksumAlgorithm::CRC32C);
    }

    #[test]
    fn bucket_names_follow_aws_rules() {
        for ok in ["abc", "my.bucket-1", &"a".repeat(63), "123"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "Caps", "a_b", "-ab", "ab-", "a..b", "10.0.0.1", "xn--ab", "sthree-x", "x-s3alias", "x.mrap"]
        {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b+c/d.txt"), "a%20b%2Bc/d.txt");
    }
}
