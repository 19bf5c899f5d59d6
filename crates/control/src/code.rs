//! Where a function's or a layer's archive comes from: inline (`ZipFile`,
//! base64 in the request) or an object of the built-in store (`S3Bucket`,
//! `S3Key`, `S3ObjectVersion`), which is how deployment tools upload code and
//! the only way to deploy packages over the 50 MB inline limit.
//!
//! Control does not speak S3: it reads objects through [`CodeObjects`],
//! which the wiring implements over the object store.

use async_trait::async_trait;
use nimbus_core::limits::UNZIPPED_MAX;
use nimbus_core::zipcheck;

use crate::*;

/// An object named as a code source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Code {
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub version: Option<String>,
}

/// Why an object could not be read, in S3's terms (Lambda quotes S3's error
/// code and message back to the caller).
#[derive(Debug, thiserror::Error)]
pub enum CodeObjectError {
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the key does not exist")]
    NoSuchKey,
    #[error("the version does not exist")]
    NoSuchVersion,
    /// Larger than the limit the read was given.
    #[error("the object is too large")]
    TooLarge,
    #[error("{0}")]
    Failed(String),
}

/// Reads whole objects from the built-in store.
#[async_trait]
pub trait CodeObjects: Send + Sync {
    /// The bytes of `bucket`/`key` (at `version` when given), refusing
    /// objects over `limit` bytes before reading them.
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        limit: u64,
    ) -> std::result::Result<Vec<u8>, CodeObjectError>;
}

/// AWS's answer when Lambda's own GetObject fails: S3's code and message,
/// quoted.
fn get_object_failed(code: &str, message: &str) -> Error {
    invalid(format!("Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}"))
}

impl Control {
    /// The archive a request carries, inline or from the store; `what` is
    /// what it is (`function code`, `layer content`), for the messages.
    pub(crate) async fn code_source(
        &self,
        zip: Option<Vec<u8>>,
        s3: Option<S3Code>,
        image_uri: Option<String>,
        what: &str,
    ) -> Result<Vec<u8>> {
        match (zip, s3, image_uri) {
            (Some(z), None, None) => Ok(z),
            (None, Some(s3), None) => self.read_code_object(s3).await,
            (None, None, Some(_)) => {
                Err(invalid("Please don't provide ImageUri when updating a function with packageType Zip."))
            }
            // AWS's words for a function: "Please provide a source for function code."
            (None, None, None) => Err(invalid(format!("Please provide a source for {what}."))),
            _ => Err(invalid("Please provide only one source for the code.")),
        }
    }

    async fn read_code_object(&self, s3: S3Code) -> Result<Vec<u8>> {
        let (Some(bucket), Some(key)) = (s3.bucket, s3.key) else {
            return Err(invalid("Please provide both S3Bucket and S3Key for the code."));
        };
        let objects = self
            .code_objects
            .as_ref()
            .ok_or_else(|| invalid("Code from S3 is not supported by this Nimbus node: it has no object store."))?;
        // No archive that unzips within the limit is larger than it.
        objects.read(&bucket, &key, s3.version.as_deref(), UNZIPPED_MAX).await.map_err(|e| match e {
            CodeObjectError::NoSuchBucket => get_object_failed("NoSuchBucket", "The specified bucket does not exist"),
            CodeObjectError::NoSuchKey => get_object_failed("NoSuchKey", "The specified key does not exist."),
            CodeObjectError::NoSuchVersion => {
                get_object_failed("NoSuchVersion", "The specified version does not exist.")
            }
            CodeObjectError::TooLarge => rule(zipcheck::too_big()),
            CodeObjectError::Failed(why) => Error::Unavailable(format!("reading the code object failed: {why}")),
        })
    }
}
