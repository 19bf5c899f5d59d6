//! Durable state of every service: Lambda's function, version and layer
//! documents behind the [`Metadata`] trait and each other service's behind a
//! trait of its own (`ObjectMeta`, `QueueMeta`, `LogMeta`, …; SQLite now,
//! PostgreSQL later), and code archives in a content-addressed [`Blobs`]
//! store.
//!
//! The store keeps what it is given and answers what it is asked; the rules
//! of the Lambda model live in `nimbus-control`. A write returns only once it
//! is durable: blobs are fsynced before the metadata that refers to them is
//! committed, and SQLite runs in WAL mode with full synchronisation.

mod blobs;
pub mod direct;
mod ecs;
mod group;
mod logs;
mod mappings;
mod metrics;
mod migrations;
mod object_cache;
mod objects;
mod queues;
mod registry;
mod schedules;
mod space;
mod sqlite;
mod task_usage;

use std::collections::HashSet;

use async_trait::async_trait;
use nimbus_core::function::{CodeSigningConfig, Function, FunctionConfig, LayerVersion};

pub use blobs::{Blobs, FsBlobs};
pub use ecs::{EcsDocuments, EcsMeta, EcsWrite};
pub use logs::{
    EventQuery, LogGroupRow, LogMeta, LogStreamRow, Position, Retagged, StreamCreated, StreamOrder, StreamQuery,
};
pub use mappings::MappingMeta;
pub use metrics::{MetricKey, MetricRow, MetricsMeta, UsageRow};
pub use objects::{BucketDelete, ObjectMeta, Precondition};
pub use queues::{insert_message, DedupId, InFlight, MessageRow, MessageWrite, QueueMeta};
pub use registry::{
    Collect, ManifestDelete, ManifestPut, ManifestRow, PutManifest, RegistryMeta, Repository, RepositoryDelete,
};
pub use schedules::{After, DueTimes, Firing, ScheduleMeta, ScheduleRetry, ScheduleRow};
pub use sqlite::SqliteMetadata;
pub use task_usage::{TaskUsage, TaskUsageMeta};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "{path} was written by a newer Nimbus (its schema is at version {found}; this build knows versions up to \
         {known}): run that version or a later one, or restore a copy of the data directory made before it ran"
    )]
    NewerSchema { path: String, found: i64, known: i64 },
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored document is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("blob {0} is missing")]
    MissingBlob(String),
    /// A batch of writes committed together failed as a whole.
    #[error("committing a batch of writes: {0}")]
    Commit(String),
    /// A conditional write's condition did not hold; nothing was written.
    #[error("the write's precondition does not hold: {0:?}")]
    Unmet(Unmet),
}

/// How a [`objects::Precondition`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    /// It needed an object and there is none.
    Missing,
    /// There is an object it did not want, or not the one it wanted.
    Mismatch,
    /// The bucket was deleted before the write's transaction.
    NoBucket,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One change in an atomic batch given to [`Metadata::apply`].
#[derive(Debug, Clone)]
pub enum Write {
    PutFunction(Box<Function>),
    /// Removes the function and all its versions.
    DeleteFunction(String),
    /// Inserts a version, or replaces it (its lifecycle or runtime
    /// management changed).
    PutVersion(Box<FunctionConfig>),
    DeleteVersion {
        name: String,
        version: u64,
    },
    /// Inserts or replaces a layer version; also records the version as
    /// the layer's highest ever.
    PutLayerVersion(Box<LayerVersion>),
    DeleteLayerVersion {
        name: String,
        version: u64,
    },
    PutCodeSigningConfig(Box<CodeSigningConfig>),
    /// Removes a code signing configuration by id.
    DeleteCodeSigningConfig(String),
}

/// Where a listing of configurations resumes: after this (name, version),
/// `$LATEST` counting as version 0.
pub type ConfigCursor = (String, u64);

/// A queued asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncEvent {
    pub id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub attempts: u32,
    pub not_before_ms: i64,
    pub created_ms: i64,
    /// Invocations in the chain of function writes that caused this event
    /// (0 when none did); see `nimbus_control`'s recursive loop detection.
    pub lineage: u32,
}

/// What finishing an asynchronous event causes, committed in the same
/// transaction that removes the event from the queue (the outbox): once the
/// event is gone, what it caused is durable, across a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// An asynchronous invocation of another function (a Lambda destination).
    Event(AsyncEvent),
    /// A message for a queue (an SQS destination or dead-letter queue).
    QueueMessage(QueueMessage),
}

/// A message an asynchronous result sends to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub queue_arn: String,
    pub body: String,
    /// The body to send instead if the queue refuses `body` as too long
    /// (an invocation record without its payloads, as AWS then sends).
    pub smaller_body: Option<String>,
    pub attributes: Vec<MessageAttribute>,
    /// For a dead-letter queue (the original event), not a destination (a record).
    pub dead_letter: bool,
    /// The row to insert (the queue's name and the message), made by the
    /// queue engine from the fields above once its rules passed; `None`
    /// when the queue cannot take it, and the message is dropped.
    pub stored: Option<Box<(String, nimbus_core::queues::StoredMessage)>>,
}

/// An SQS message attribute with a string value (`String` or `Number`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    pub name: String,
    pub data_type: String,
    pub value: String,
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub id: i64,
    pub log_group: String,
    pub log_stream: String,
    pub timestamp_ms: i64,
    /// When the line reached the store.
    pub ingestion_ms: i64,
    pub message: String,
}

/// The metering record of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationRecord {
    pub request_id: String,
    pub function: String,
    pub version: String,
    pub cold: bool,
    pub init_ms: Option<f64>,
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub memory_mb: u32,
    /// `x86_64` or `arm64`: what usage is priced at.
    pub architecture: String,
    pub max_memory_mb: u64,
    /// `success`, `error` or `timeout`.
    pub outcome: String,
    pub timestamp_ms: i64,
}

/// A function's recent activity, from its metering records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationSummary {
    pub function: String,
    pub last_ms: i64,
    pub invocations: u64,
    /// Invocations whose outcome was not `success`.
    pub errors: u64,
}

/// Figures for GetAccountSettings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub function_count: u64,
    /// Zip bytes of every function version and layer version.
    pub total_code_size: u64,
    /// Sum of every function's reserved concurrency.
    pub reserved_concurrency: u64,
}

#[async_trait]
pub trait Metadata: Send + Sync {
    async fn get_function(&self, name: &str) -> Result<Option<Function>>;
    /// `$LATEST` configurations (and, with `versions`, every published one)
    /// in (name, version) order.
    async fn list_configs(
        &self,
        after: Option<ConfigCursor>,
        versions: bool,
        limit: usize,
    ) -> Result<Vec<FunctionConfig>>;
    async fn get_version(&self, name: &str, version: u64) -> Result<Option<FunctionConfig>>;
    /// Published versions of one function in ascending order.
    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionConfig>>;
    async fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>>;
    /// Versions of one layer, newest first.
    async fn list_layer_versions(&self, name: &str) -> Result<Vec<LayerVersion>>;
    /// The newest version of each layer that has any, in name order.
    async fn list_latest_layer_versions(&self) -> Result<Vec<LayerVersion>>;
    /// The highest version the layer ever had (0 if none).
    async fn last_layer_version(&self, name: &str) -> Result<u64>;
    /// The function and qualifier (`""` for none) a function URL id belongs to.
    async fn function_url(&self, url_id: &str) -> Result<Option<(String, String)>>;
    async fn get_code_signing_config(&self, id: &str) -> Result<Option<CodeSigningConfig>>;
    /// Every code signing configuration, by id.
    async fn list_code_signing_configs(&self) -> Result<Vec<CodeSigningConfig>>;
    /// Applies every write or none.
    async fn apply(&self, writes: Vec<Write>) -> Result<()>;
    /// Hashes of every blob something refers to.
    async fn referenced_blobs(&self) -> Result<HashSet<String>>;
    /// The names of the unpacked trees some function or version runs on:
    /// its code's hash, and its layers' hashes joined by `-`, in order.
    async fn unpacked_in_use(&self) -> Result<HashSet<String>>;
    async fn usage(&self) -> Result<Usage>;

    /// Stores an event durably (the caller answers 202 only after this).
    async fn enqueue_event(&self, event: &AsyncEvent) -> Result<()>;
    /// Events due at `now_ms`, oldest first.
    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<AsyncEvent>>;
    /// When the next event falls due, if any is queued.
    async fn next_event_due(&self) -> Result<Option<i64>>;
    /// Records a failed attempt and when to try again.
    async fn reschedule_event(&self, id: &str, attempts: u32, not_before_ms: i64) -> Result<()>;
    /// Holds an event until `until_ms` for a delivery under way (past it, a
    /// delivery that never ended is taken to have died) or a backoff after
    /// it was not run; a start releases it.
    async fn lease_event(&self, id: &str, until_ms: i64) -> Result<()>;
    /// Removes an event that succeeded or was given up, and queues what its
    /// end causes, in one transaction.
    /// Returns the seqs of the queue messages it stored, in order.
    async fn finish_event(&self, id: &str, follow_ups: &[FollowUp]) -> Result<Vec<i64>>;
    /// Makes every leased event due now (after a restart nothing is in
    /// flight, so leases taken before the crash must not delay redelivery);
    /// events waiting for a retry keep their time.
    async fn release_events(&self, now_ms: i64) -> Result<()>;

    /// Stores invocation records and their log lines (ids are assigned),
    /// creating the lines' log groups and streams as needed.
    async fn record_invocations(&self, records: &[InvocationRecord], lines: &[LogEvent]) -> Result<()>;
    /// Metering records of a function, oldest first.
    async fn invocations(&self, function: &str) -> Result<Vec<InvocationRecord>>;
    /// Deletes log lines and records older than `before_ms` (retention).
    async fn prune_logs(&self, before_ms: i64) -> Result<u64>;
    /// For each of `functions` that was ever invoked: its last invocation,
    /// and its invocations and errors since `since_ms` (the console's list).
    async fn invocation_summaries(&self, functions: &[String], since_ms: i64) -> Result<Vec<InvocationSummary>>;
    /// A function's newest `limit` metering records, newest first.
    async fn recent_invocations(&self, function: &str, limit: usize) -> Result<Vec<InvocationRecord>>;
    /// A function's cold starts per period of `period_ms` from `start_ms`
    /// (period start, count), for periods that have any.
    async fn cold_starts(&self, function: &str, start_ms: i64, end_ms: i64, period_ms: i64) -> Result<Vec<(i64, u64)>>;
}
