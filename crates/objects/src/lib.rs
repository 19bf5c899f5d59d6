//! The S3-compatible object store. `s3s` speaks the S3 protocol (routing,
//! XML, SigV4 and aws-chunked bodies); this crate is its storage backend:
//! bucket and object metadata in the store ([`nimbus_store::ObjectMeta`]),
//! bytes in immutable files ([`files`]), and the notifications a write
//! triggers queued with it as asynchronous invocations (the outbox).
//!
//! It must not invoke functions itself or know the Lambda API: what it
//! needs from there is the [`Functions`] trait.

mod bucket_settings;
mod copy;
mod delete;
mod files;
mod lifecycle;
mod listing;
mod multipart;
mod notify;
mod s3;
mod tagging;
mod whole;

use std::sync::Arc;

use async_trait::async_trait;
use nimbus_store::ObjectMeta;

pub use files::Files;
pub use notify::Requested;
pub use whole::{ReadError, Reader};

/// What the store needs from the Lambda side for notifications.
#[async_trait]
pub trait Functions: Send + Sync {
    /// Whether the function exists and its resource policy lets
    /// `s3.amazonaws.com` invoke it for this bucket.
    async fn may_notify(&self, function_arn: &str, bucket: &str) -> bool;
    /// Events were queued: the dispatcher should look.
    fn queued(&self);
}

/// The S3 backend: give it to `s3s::service::S3ServiceBuilder`. A clone
/// shares its store (for the lifecycle sweep).
#[derive(Clone)]
pub struct Objects {
    meta: Arc<dyn ObjectMeta>,
    files: Files,
    functions: Arc<dyn Functions>,
    region: String,
    account_id: String,
    /// Buckets the account may have ([`BUCKETS_MAX`] unless set).
    max_buckets: usize,
    /// Held from a bucket's read to its write when one part of its
    /// settings changes (see `Objects::edit_bucket`).
    bucket_edits: Arc<tokio::sync::Mutex<()>>,
}

/// Buckets an account may have: AWS's default quota of general purpose buckets.
pub const BUCKETS_MAX: usize = 10_000;

impl Objects {
    /// Opens the store, removing object files no metadata refers to (what a
    /// crash between a file's write and its commit, or its removal, left).
    pub async fn open(
        meta: Arc<dyn ObjectMeta>,
        files: Files,
        functions: Arc<dyn Functions>,
        region: String,
        account_id: String,
    ) -> Result<Self, nimbus_store::Error> {
        let keep = meta.object_files().await?;
        let removed = files.retain(&keep)?;
        if removed > 0 {
            tracing::info!(removed, "removed object files left by an interrupted write");
        }
        Ok(Self { meta, files, functions, region, account_id, max_buckets: BUCKETS_MAX, bucket_edits: Arc::default() })
    }

    /// The account whose buckets these are.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Lets the account have `n` buckets (AWS raises its quota on request).
    pub fn with_max_buckets(mut self, n: usize) -> Self {
        self.max_buckets = n;
        self
    }
}
