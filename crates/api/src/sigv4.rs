//! AWS Signature Version 4: verifying what clients send (header and
//! presigned-query forms) and signing what Nimbus itself sends (the CLI's
//! requests, presigned code-download URLs).
//!
//! Canonicalisation follows AWS's published algorithm; the cryptographic
//! steps (signing-key derivation, HMAC) are `aws-sigv4`'s, and signatures are
//! compared in constant time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
pub(crate) const MAX_PRESIGN_EXPIRY: u64 = 7 * 24 * 3600;

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Why a request was not authenticated. Each is one AWS error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("{0}")]
    InvalidSignature(String),
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("The security token included in the request is expired")]
    ExpiredToken,
    /// The caller's key may not do this (`crate::access`).
    #[error("{0}")]
    Denied(String),
}

/// Whose key signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The node's own key pair: the operator.
    Node,
    /// Session credentials minted for `subject` (a function's ARN, a task's).
    Session { subject: String },
}

/// Prefix of the access key ids of session credentials.
const SESSION_PREFIX: &str = "NSIA";

/// Whether an access key id is of session credentials (which need their token).
pub(crate) fn is_session_key(access_key: &str) -> bool {
    access_key.starts_with(SESSION_PREFIX)
}

/// Temporary credentials for one execution environment, as Lambda injects
/// them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
///
/// They are stateless: the token carries the key id, expiry and subject,
/// MAC'd with the node's secret, and the session secret is derived from the
/// same fields, so any node holding the secret can verify them after a
/// restart without a lookup.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

fn mac(secret: &str, purpose: &str, payload: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    m.update(purpose.as_bytes());
    m.update(b"\n");
    m.update(payload.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn session_secret(node: &Credentials, payload: &str) -> String {
    b64url(&mac(&node.secret_access_key, "nimbus-session-secret", payload))
}

/// Mints session credentials for `subject` (e.g. a function ARN) valid for `ttl`.
pub fn mint_session(node: &Credentials, subject: &str, ttl: Duration, now: SystemTime) -> SessionCredentials {
    let access_key_id = format!("{SESSION_PREFIX}{}", &uuid::Uuid::new_v4().simple().to_string()[..16].to_uppercase());
    let expires = (now + ttl).duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let payload = format!("{access_key_id}|{expires}|{subject}");
    let token = format!(
        "{}.{}",
        b64url(payload.as_bytes()),
        b64url(&mac(&node.secret_access_key, "nimbus-session-token", &payload))
    );
    SessionCredentials { secret_access_key: session_secret(node, &payload), access_key_id, session_token: token }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The parts of a request that a signature covers, exactly as received.
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// The path still percent-encoded, as it came over the wire.
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl<'a> SignedParts<'a> {
    /// A request's parts as they came over the wire, with its body.
    pub fn of(parts: &'a axum::http::request::Parts, body: &'a [u8]) -> Self {
        Self {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query(),
            headers: &parts.headers,
            body,
        }
    }
}

/// What the parsed `Authorization` header or presigned query says.
struct Claim<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    amz_date: String,
    /// Seconds a presigned URL stays valid; `None` for the header form.
    expires: Option<u64>,
}

pub(crate) fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// RFC 3986 encoding: everything but unreserved characters (and `/` when asked).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI: the raw path normalised and encoded once more
/// (so `%3A` is signed as `%253A`, as every service but S3 does).
fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in raw_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if raw_path.ends_with('/') && path.len() > 1 {
        path.push('/');
    }
    encode(&path, true)
}

fn canonical_query(raw: Option<&str>, skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw.unwrap_or_default())
        .into_iter()
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .map(|(k, v)| (encode(&k, false), encode(&v, false)))
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn canonical_headers(headers: &HeaderMap, signed: &[&str]) -> String {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// `YYYYMMDDTHHMMSSZ`, ISO 8601's basic format, the one SigV4 allows; read
/// by hand, as chrono's format-string parser cost more than the rest of the
/// time check.
pub(crate) fn parse_amz_date(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(n(0, 4)?).ok()?, n(4, 6)?, n(6, 8)?)?;
    let time = date.and_hms_opt(n(9, 11)?, n(11, 13)?, n(13, 15)?)?;
    Some(Utc.from_utc_datetime(&time))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_credential(cred: &str) -> Result<(&str, &str, &str, &str), AuthError> {
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"] => Ok((key, date, region, service)),
        _ => Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region, service and terminated with 'aws4_request'. Received: {cred}"
        ))),
    }
}

/// The service a request is signed for, read from the credential scope of
/// its `Authorization` header or presigned query (`X-Amz-Credential`),
/// without checking anything: the router picks a front by it, and that
/// front verifies the signature.
pub fn signed_service(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let scope_service = |cred: &str| cred.split('/').nth(3).map(str::to_string);
    if let Some(auth) = header(headers, "authorization") {
        let cred = auth.split(',').find_map(|f| f.trim().split_once("Credential=").map(|(_, v)| v))?;
        return scope_service(cred);
    }
    let cred = query?.split('&').find_map(|p| p.strip_prefix("X-Amz-Credential="))?;
    scope_service(&decode(cred))
}

fn parse_header_claim<'a>(auth: &'a str, headers: &'a HeaderMap) -> Result<Claim<'a>, AuthError> {
    let rest = auth
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| AuthError::Incomplete(format!("Unsupported authorization type; expected {ALGORITHM}.")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing: Vec<&str> = [("Credential", credential), ("SignedHeaders", signed), ("Signature", signature)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(AuthError::Incomplete(format!(
            "Authorization header requires {} parameter(s). Authorization={auth}",
            missing.join(", ")
        )));
    }
    let (access_key, date, region, service) = parse_credential(credential.unwrap_or_default())?;
    let amz_date = match (header(headers, "x-amz-date"), header(headers, "date")) {
        (Some(d), _) => d.to_string(),
        (None, Some(d)) => DateTime::parse_from_rfc2822(d)
            .map(|d| d.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ").to_string())
            .map_err(|_| AuthError::Incomplete("Date must be in ISO-8601 'basic format'.".into()))?,
        (None, None) => {
            return Err(AuthError::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
            ))
        }
    };
    Ok(Claim {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.unwrap_or_default().split(';').collect(),
        signature: signature.unwrap_or_default(),
        amz_date,
        expires: None,
    })
}

fn parse_query_claim(pairs: &[(String, String)]) -> Result<Claim<'_>, AuthError> {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let need = |name: &'static str| {
        get(name).ok_or_else(|| AuthError::Incomplete(format!("AWS query-string parameters must include '{name}'.")))
    };
    if need("X-Amz-Algorithm")? != ALGORITHM {
        return Err(AuthError::Incomplete(format!("X-Amz-Algorithm only supports '{ALGORITHM}'.")));
    }
    let (access_key, date, region, service) = parse_credential(need("X-Amz-Credential")?)?;
    let expires = need("X-Amz-Expires")?
        .parse::<u64>()
        .ok()
        .filter(|e| *e <= MAX_PRESIGN_EXPIRY)
        .ok_or_else(|| AuthError::Incomplete("X-Amz-Expires must be a number of seconds up to 604800.".into()))?;
    Ok(Claim {
        access_key,
        date,
        region,
        service,
        signed_headers: need("X-Amz-SignedHeaders")?.split(';').collect(),
        signature: need("X-Amz-Signature")?,
        amz_date: need("X-Amz-Date")?.to_string(),
        expires: Some(expires),
    })
}

/// A request whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
    pub caller: Caller,
}

/// Session credentials as their token vouches for them.
pub(crate) struct Session {
    pub(crate) secret: String,
    pub(crate) until: SystemTime,
    /// Whom they were minted for.
    pub(crate) subject: String,
}

/// Checks requests against the node's one key pair and its region.
#[derive(Debug, Clone)]
pub struct Verifier {
    credentials: Credentials,
    region: String,
    /// Signing keys derived (four HMACs each) by (secret, date, region,
    /// service): a client signs every request of a day with the same one.
    keys: std::sync::Arc<std::sync::Mutex<HashMap<KeyScope, [u8; 32]>>>,
}

/// What a signing key is derived from: secret, date, region, service.
type KeyScope = (String, String, String, String);

/// Derived keys kept before the cache starts over (a day's keys of every
/// live session, with room to spare).
const KEYS_MAX: usize = 1024;

impl Verifier {
    pub fn new(credentials: Credentials, region: impl Into<String>) -> Self {
        Self { credentials, region: region.into(), keys: Default::default() }
    }

    /// The node's region, which every scope must name.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn signing_key(&self, secret: &str, when: DateTime<Utc>, claim: &Claim<'_>) -> [u8; 32] {
        let id = (secret.to_string(), claim.date.to_string(), claim.region.to_string(), claim.service.to_string());
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = keys.get(&id) {
            return *key;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(generate_signing_key(secret, SystemTime::from(when), claim.region, claim.service).as_ref());
        if keys.len() >= KEYS_MAX {
            keys.clear();
        }
        keys.insert(id, key);
        key
    }

    /// Checks what a request's signature claims without its body: the
    /// key, the scope and the time. A request that fails here is refused
    /// before its body is read, so nobody without a key makes the node
    /// hold one (up to 70 MB for code).
    pub fn precheck(
        &self,
        headers: &HeaderMap,
        raw_query: Option<&str>,
        service: &str,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let pairs = query_pairs(raw_query.unwrap_or_default());
        self.authorize(headers, &pairs, service, now).map(|(_, _, _, caller)| caller)
    }

    /// The request's claim, the secret of its key, its time and its caller,
    /// once everything but the signature itself holds. The caller is known
    /// here already: a session's subject is in its token, under the node's MAC.
    fn authorize<'a>(
        &self,
        headers: &'a HeaderMap,
        pairs: &'a [(String, String)],
        service: &str,
        now: SystemTime,
    ) -> Result<(Claim<'a>, String, DateTime<Utc>, Caller), AuthError> {
        let claim = match header(headers, "authorization") {
            Some(auth) => parse_header_claim(auth, headers)?,
            None if pairs.iter().any(|(k, _)| k == "X-Amz-Signature" || k == "X-Amz-Credential") => {
                parse_query_claim(pairs)?
            }
            None => return Err(AuthError::Missing),
        };
        if !claim.signed_headers.contains(&"host") {
            return Err(AuthError::Incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.".into()));
        }
        if claim.service != service {
            return Err(AuthError::InvalidSignature(format!(
                "Credential should be scoped to correct service: '{service}'. "
            )));
        }
        // AWS's regional endpoints refuse a scope naming another region.
        if claim.region != self.region {
            return Err(AuthError::InvalidSignature(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                claim.region
            )));
        }
        let (secret, caller) = if claim.access_key == self.credentials.access_key_id {
            (self.credentials.secret_access_key.clone(), Caller::Node)
        } else if is_session_key(claim.access_key) {
            let token = header(headers, "x-amz-security-token")
                .map(str::to_string)
                .or_else(|| pairs.iter().find(|(k, _)| k == "X-Amz-Security-Token").map(|(_, v)| v.clone()))
                .ok_or(AuthError::UnknownKey)?;
            let session = self.session(claim.access_key, &token, now)?;
            (session.secret, Caller::Session { subject: session.subject })
        } else {
            return Err(AuthError::UnknownKey);
        };
        let when = parse_amz_date(&claim.amz_date).ok_or_else(|| {
            AuthError::Incomplete(format!("Date must be in ISO-8601 'basic format'. Got '{}'.", claim.amz_date))
        })?;
        if !claim.amz_date.starts_with(claim.date) {
            return Err(AuthError::InvalidSignature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                claim.date,
                &claim.amz_date[..8.min(claim.amz_date.len())],
                claim.amz_date
            )));
        }
        check_time(when, claim.expires, now)?;
        Ok((claim, secret, when, caller))
    }

    /// Checks a request signed for `service` (the scope must name it);
    /// returns the access key id that signed it, and whose it is.
    pub fn verify(&self, req: &SignedParts<'_>, service: &str, now: SystemTime) -> Result<Verified, AuthError> {
        let pairs = query_pairs(req.raw_query.unwrap_or_default());
        let (claim, secret, when, caller) = self.authorize(req.headers, &pairs, service, now)?;
        let hashes = self.payload_hashes(req)?;
        let key = self.signing_key(&secret, when, &claim);
        let scope = format!("{}/{}/{}/aws4_request", claim.date, claim.region, claim.service);
        for payload_hash in hashes {
            let canonical = [
                req.method.to_string(),
                canonical_uri(req.raw_path),
                canonical_query(req.raw_query, claim.expires.is_some()),
                canonical_headers(req.headers, &claim.signed_headers),
                claim.signed_headers.join(";"),
                payload_hash,
            ]
            .join("\n");
            let to_sign =
                format!("{ALGORITHM}\n{}\n{scope}\n{}", claim.amz_date, hex::encode(Sha256::digest(&canonical)));
            let expected = calculate_signature(key, to_sign.as_bytes());
            if bool::from(expected.as_bytes().ct_eq(claim.signature.as_bytes())) {
                return Ok(Verified { access_key: claim.access_key.to_string(), caller });
            }
        }
        Err(AuthError::InvalidSignature(MISMATCH.into()))
    }

    /// Session credentials whose token is genuine and current.
    pub(crate) fn session(&self, access_key: &str, token: &str, now: SystemTime) -> Result<Session, AuthError> {
        use base64::Engine;
        let (payload_b64, tag_b64) = token.split_once('.').ok_or(AuthError::UnknownKey)?;
        let decode =
            |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::UnknownKey);
        let payload = String::from_utf8(decode(payload_b64)?).map_err(|_| AuthError::UnknownKey)?;
        let expected = mac(&self.credentials.secret_access_key, "nimbus-session-token", &payload);
        if !bool::from(expected.as_slice().ct_eq(decode(tag_b64)?.as_slice())) {
            return Err(AuthError::UnknownKey);
        }
        let mut fields = payload.splitn(3, '|');
        let (key, expires) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        let subject = fields.next().unwrap_or_default().to_string();
        if key != access_key {
            return Err(AuthError::UnknownKey);
        }
        let expires: u64 = expires.parse().map_err(|_| AuthError::UnknownKey)?;
        if now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= expires {
            return Err(AuthError::ExpiredToken);
        }
        let until = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(expires);
        Ok(Session { secret: session_secret(&self.credentials, &payload), until, subject })
    }

    /// The payload hashes a valid signature may have used: the declared
    /// `x-amz-content-sha256` (checked against the body, unless it is
    /// `UNSIGNED-PAYLOAD`, which the signature then covers), else the
    /// body's hash. Never `UNSIGNED-PAYLOAD` undeclared: S3 presigns URLs
    /// so, but this verifier serves no S3 request, and a presigned URL for
    /// another service covers its (usually empty) body, so that whoever
    /// holds the URL cannot send another body (an SQS query's body fields
    /// override its query's `Action`).
    fn payload_hashes(&self, req: &SignedParts<'_>) -> Result<Vec<String>, AuthError> {
        let actual = hex::encode(Sha256::digest(req.body));
        match header(req.headers, "x-amz-content-sha256") {
            Some(UNSIGNED_PAYLOAD) => Ok(vec![UNSIGNED_PAYLOAD.into()]),
            Some(declared) if declared.eq_ignore_ascii_case(&actual) => Ok(vec![declared.to_string()]),
            Some(_) => Err(AuthError::ContentSha256Mismatch),
            None => Ok(vec![actual]),
        }
    }
}

/// AWS's clock rule: a request may be at most 5 minutes from the server's
/// clock either way; a presigned URL lives until its date plus its expiry.
fn check_time(when: DateTime<Utc>, expires: Option<u64>, now: SystemTime) -> Result<(), AuthError> {
    let now: DateTime<Utc> = now.into();
    let fmt = |d: DateTime<Utc>| d.format("%Y%m%dT%H%M%SZ").to_string();
    let skew = chrono::Duration::from_std(MAX_SKEW).unwrap_or_default();
    if when > now + skew {
        return Err(AuthError::InvalidSignature(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            fmt(when),
            fmt(now + skew),
            fmt(now)
        )));
    }
    match expires {
        Some(secs) if now > when + chrono::Duration::seconds(secs as i64) => Err(AuthError::InvalidSignature(format!(
            "Signature expired: {} is now later than {} ({} + {secs} sec.)",
            fmt(now),
            fmt(when + chrono::Duration::seconds(secs as i64)),
            fmt(when)
        ))),
        None if when < now - skew => Err(AuthError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            fmt(when),
            fmt(now - skew),
            fmt(now)
        ))),
        _ => Ok(()),
    }
}

fn signing_params<'a>(
    identity: &'a aws_smithy_runtime_api::client::identity::Identity,
    region: &'a str,
    service: &'a str,
    settings: SigningSettings,
    time: SystemTime,
) -> Result<aws_sigv4::http_request::SigningParams<'a>, String> {
    aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn identity(c: &Credentials) -> aws_smithy_runtime_api::client::identity::Identity {
    aws_credential_types::Credentials::new(&c.access_key_id, &c.secret_access_key, None, None, "nimbus").into()
}

/// Signs a request for `service` as an AWS client would; returns the headers to add.
/// For S3 that is S3's variant: the path encoded once and not normalised,
/// and the payload's hash sent as `x-amz-content-sha256`.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    creds: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    sign_with(creds, region, service, method, url, headers, SignableBody::Bytes(body), time)
}

/// Signs an S3 request whose body is streamed, as SDKs may over TLS:
/// `x-amz-content-sha256: UNSIGNED-PAYLOAD`.
pub fn sign_s3_unsigned_payload(
    creds: &Credentials,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    sign_with(creds, region, "s3", method, url, headers, SignableBody::UnsignedPayload, time)
}

#[allow(clippy::too_many_arguments)]
fn sign_with(
    creds: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: SignableBody<'_>,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = identity(creds);
    let mut settings = SigningSettings::default();
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = signing_params(&identity, region, service, settings, time)?;
    let request = SignableRequest::new(method, url, headers.iter().copied(), body).map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A presigned GET URL for `base` (scheme, host and path, already encoded).
pub fn presign_get(
    creds: &Credentials,
    region: &str,
    base: &str,
    host: &str,
    expires: Duration,
    time: SystemTime,
) -> Result<String, String> {
    let identity = identity(creds);
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = signing_params(&identity, region, "lambda", settings, time)?;
    let request = SignableRequest::new("GET", base, [("host", host)].into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    let query: Vec<String> =
        instructions.params().iter().map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false))).collect();
    Ok(format!("{base}?{}", query.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midnight UTC of `yyyymmdd`, the date of AWS's signing-key examples.
    fn date_time(yyyymmdd: &str) -> Option<SystemTime> {
        let d = NaiveDate::parse_from_str(yyyymmdd, "%Y%m%d").ok()?;
        Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?).into())
    }

    #[test]
    fn only_the_basic_iso_8601_date_is_an_amz_date() {
        let at = |s: &str| parse_amz_date(s).map(|d| d.to_rfc3339());
        assert_eq!(at("20261204T171503Z").as_deref(), Some("2026-12-04T17:15:03+00:00"));
        for bad in [
            "2026-12-04T17:15:03Z",
            "20261204T171503",
            "20261304T171503Z",
            "20261204T246000Z",
            "2026120 T171503Z",
            "+0261204T171503Z",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_signed_service_is_read_from_the_scope() {
        let mut h = HeaderMap::new();
        assert_eq!(
            signed_service(&h, Some("X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request")),
            Some("s3".into())
        );
        assert_eq!(signed_service(&h, Some("a=b")), None);
        h.insert(
            "authorization",
            http::HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(signed_service(&h, None), Some("logs".into()));
        h.insert("authorization", http::HeaderValue::from_static("AWS AK:c2ln"));
        assert_eq!(signed_service(&h, None), None);
    }
    use http::HeaderValue;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap().into()
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // The IAM user guide's derived-key example: 20150830 / us-east-1 / iam.
        let key = generate_signing_key(
            &example_creds().secret_access_key,
            date_time("20150830").unwrap(),
            "us-east-1",
            "iam",
        );
        assert_eq!(hex::encode(key.as_ref()), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    }

    /// AWS SigV4 test suite, "get-vanilla": GET / with host and x-amz-date,
    /// service "service", signed 2015-08-30T12:36:00Z.
    #[test]
    fn verifies_the_get_vanilla_test_vector() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert("authorization", HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ));
        let parts = SignedParts { method: "GET", raw_path: "/", raw_query: None, headers: &headers, body: b"" };
        let v = Verifier::new(example_creds(), "us-east-1");
        assert_eq!(v.verify(&parts, "service", at("20150830T123900Z")).map(|_| ()), Ok(()));
        // One minute past the allowed skew, the same request has expired.
        let late = v.verify(&parts, "service", at("20150830T124200Z"));
        assert!(matches!(late, Err(AuthError::InvalidSignature(m)) if m.starts_with("Signature expired")));
        let wrong = Verifier::new(Credentials { secret_access_key: "other".into(), ..example_creds() }, "us-east-1");
        assert_eq!(
            wrong.verify(&parts, "service", at("20150830T123600Z")),
            Err(AuthError::InvalidSignature(MISMATCH.into()))
        );
        assert!(
            matches!(Verifier::new(example_creds(), "us-east-1").verify(&parts, "lambda", at("20150830T123600Z")), Err(AuthError::InvalidSignature(m)) if m.contains("correct service"))
        );
        // A node of another region refuses the scope, whatever the signature.
        assert_eq!(
            Verifier::new(example_creds(), "eu-west-1").verify(&parts, "service", at("20150830T123600Z")),
            Err(AuthError::InvalidSignature("Credential should be scoped to a valid region, not 'us-east-1'. ".into()))
        );
    }

    /// AWS SigV4 test suite, "get-vanilla-query-order-key-case": query
    /// parameters are sorted after encoding.
    #[test]
    fn verifies_the_query_order_test_vector() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert("authorization", HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ));
        let parts = SignedParts {
            method: "GET",
            raw_path: "/",
            raw_query: Some("Param2=value2&Param1=value1"),
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            Verifier::new(example_creds(), "us-east-1").verify(&parts, "service", at("20150830T123600Z")),
            Ok(Verified { access_key: "AKIDEXAMPLE".into(), caller: Caller::Node })
        );
    }

    #[test]
    fn accepts_what_the_aws_signer_produces_including_encoded_arns() {
        let creds = example_creds();
        let now = SystemTime::now();
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af/invocations";
        let url = format!("http://127.0.0.1:9070{path}?Qualifier=%24LATEST");
        let body = br#"{"a":1}"#;
        let signed =
            sign_headers(&creds, "us-east-1", "lambda", "POST", &url, &[("host", "127.0.0.1:9070")], body, now)
                .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:9070"));
        for (k, v) in &signed {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let v = Verifier::new(creds.clone(), "us-east-1");
        let parts = SignedParts {
            method: "POST",
            raw_path: path,
            raw_query: Some("Qualifier=%24LATEST"),
            headers: &headers,
            body,
        };
        assert_eq!(v.verify(&parts, "lambda", now).map(|_| ()), Ok(()));
        let tampered = SignedParts { body: br#"{"a":2}"#, ..parts };
        assert!(v.verify(&tampered, "lambda", now).is_err());
        let none = HeaderMap::new();
        let bare = SignedParts { method: "GET", raw_path: "/", raw_query: None, headers: &none, body: b"" };
        assert_eq!(v.verify(&bare, "lambda", now), Err(AuthError::Missing));
    }

    #[test]
    fn presigned_urls_verify_until_they_expire() {
        let creds = example_creds();
        let t0 = SystemTime::now();
        let url = presign_get(&creds, "us-east-1", "http://h:1/_nimbus/code/ab", "h:1", Duration::from_secs(600), t0)
            .unwrap();
        let query = url.split_once('?').unwrap().1;
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("h:1"));
        let parts = SignedParts {
            method: "GET",
            raw_path: "/_nimbus/code/ab",
            raw_query: Some(query),
            headers: &headers,
            body: b"",
        };
        let v = Verifier::new(creds, "us-east-1");
        assert_eq!(v.verify(&parts, "lambda", t0 + Duration::from_secs(599)).map(|_| ()), Ok(()));
        assert!(
            matches!(v.verify(&parts, "lambda", t0 + Duration::from_secs(601)), Err(AuthError::InvalidSignature(m)) if m.contains("expired"))
        );
    }

    #[test]
    fn session_credentials_verify_until_they_expire_and_resist_tampering() {
        let node = example_creds();
        let t0 = SystemTime::now();
        let session =
            mint_session(&node, "arn:aws:lambda:us-east-1:123456789012:function:f", Duration::from_secs(60), t0);
        let sign_at = |creds: &Credentials, token: &str, t: SystemTime| {
            let url = "http://h:1/2015-03-31/functions";
            let signed = sign_headers(
                creds,
                "us-east-1",
                "lambda",
                "GET",
                url,
                &[("host", "h:1"), ("x-amz-security-token", token)],
                b"",
                t,
            )
            .unwrap();
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("h:1"));
            headers.insert("x-amz-security-token", HeaderValue::from_str(token).unwrap());
            for (k, v) in &signed {
                headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            headers
        };
        let creds = Credentials {
            access_key_id: session.access_key_id.clone(),
            secret_access_key: session.secret_access_key.clone(),
        };
        let v = Verifier::new(node.clone(), "us-east-1");
        let check = |headers: &HeaderMap, t| {
            v.verify(
                &SignedParts { method: "GET", raw_path: "/2015-03-31/functions", raw_query: None, headers, body: b"" },
                "lambda",
                t,
            )
        };
        assert_eq!(
            check(&sign_at(&creds, &session.session_token, t0), t0).map(|v| v.caller),
            Ok(Caller::Session { subject: "arn:aws:lambda:us-east-1:123456789012:function:f".into() })
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(check(&sign_at(&creds, &session.session_token, later), later), Err(AuthError::ExpiredToken));
        let forged = format!("{}x", session.session_token);
        assert_eq!(check(&sign_at(&creds, &forged, t0), t0), Err(AuthError::UnknownKey));
        let other = mint_session(
            &Credentials { secret_access_key: "another node".into(), ..node },
            "s",
            Duration::from_secs(60),
            t0,
        );
        let theirs = Credentials { access_key_id: other.access_key_id, secret_access_key: other.secret_access_key };
        assert_eq!(check(&sign_at(&theirs, &other.session_token, t0), t0), Err(AuthError::UnknownKey));
    }

    #[test]
    fn s3_requests_carry_their_payload_hash() {
        let creds = example_creds();
        let (url, host, now) = ("http://127.0.0.1:9070/b/a%20key", [("host", "127.0.0.1:9070")], SystemTime::now());
        let hash_of = |signed: Vec<(String, String)>| {
            signed.into_iter().find(|(k, _)| k == "x-amz-content-sha256").map(|(_, v)| v)
        };
        let s3 = sign_headers(&creds, "us-east-1", "s3", "PUT", url, &host, b"data", now).unwrap();
        assert_eq!(hash_of(s3), Some(hex::encode(Sha256::digest(b"data"))));
        let lambda = sign_headers(&creds, "us-east-1", "lambda", "PUT", url, &host, b"data", now).unwrap();
        assert_eq!(hash_of(lambda), None);
        let streamed = sign_s3_unsigned_payload(&creds, "us-east-1", "PUT", url, &host, now).unwrap();
        assert_eq!(hash_of(streamed).as_deref(), Some("UNSIGNED-PAYLOAD"));
    }

    #[test]
    fn canonical_uri_double_encodes_and_normalises() {
        assert_eq!(canonical_uri("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(canonical_uri("/f/arn%3Ax"), "/f/arn%253Ax");
        assert_eq!(canonical_uri(""), "/");
    }
}
