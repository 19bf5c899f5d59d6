//! The Lambda control plane: every command of the 2015-03-31 API as a method
//! of [`Control`] (but event source mappings', which are
//! `nimbus-triggers`'), with the rules of the Lambda model (names, qualifiers,
//! versions that never repeat, revision preconditions, limits).
//!
//! Control speaks domain types, never HTTP; `nimbus-api` turns wire requests
//! into calls here. Mutations run one at a time under a single lock: the
//! control plane's write rate is low (AWS caps it at 15 requests/s), and it
//! makes read-check-write sequences and blob garbage collection race-free on
//! one node. Cluster mode will need conditional writes in the store instead.

mod aliases;
mod asynchronous;
mod code;
mod codesigning;
mod destinations;
mod finish;
mod functions;
mod images;
mod invoke;
mod layers;
mod lifecycle;
mod records;
mod settings;
mod triggers;
mod urls;

use std::sync::Arc;

use nimbus_core::function::{Function, FunctionConfig, LATEST};
use nimbus_core::runtime::Catalog;
use nimbus_core::{Account, FunctionRef, Qualifier};
use nimbus_store::{Blobs, Metadata, Write};
use tokio::sync::{Mutex, MutexGuard};

pub use code::{CodeObjectError, CodeObjects, S3Code};
pub use codesigning::CodeSigningInput;
pub use finish::Finish;
pub use functions::{code_sha256, code_sha256_b64, CodeUpdate, NewFunction, Page};
pub use images::{FoundImage, ImageLookupError, ImageResolver};
pub use invoke::{InvokeRequest, Invoked, Prepared};
pub use layers::{NewLayerPermission, NewLayerVersion};
pub use nimbus_worker::{StreamSink, Streamed};
pub use settings::{AccountSettings, EventInvokeChange, NewPermission, ProvisionedReport, UrlConfigInput};
pub use urls::UrlTarget;

pub mod runtimes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rule(#[from] nimbus_core::Error),
    #[error("internal storage error: {0}")]
    Store(#[from] nimbus_store::Error),
    /// The capability exists in the API but this node cannot serve it yet.
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn rule(e: nimbus_core::Error) -> Error {
    Error::Rule(e)
}

fn not_found(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::NotFound(msg.into()))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::InvalidParameter(msg.into()))
}

fn conflict(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::Conflict(msg.into()))
}

use nimbus_core::clock::now_ms;

/// How long an unpacked tree nothing uses stays (see
/// [`Control::run_code_collector`]): longer than an invocation may run.
const CODE_RETENTION: std::time::Duration = std::time::Duration::from_secs(16 * 60);

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn check_revision(expected: Option<&str>, actual: &str) -> Result<()> {
    match expected {
        Some(e) if !e.is_empty() && e != actual => Err(Error::Rule(nimbus_core::Error::PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                .into(),
        ))),
        _ => Ok(()),
    }
}

/// Settings of the node that the rules depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account: Account,
    pub catalog: Catalog,
    /// Account-wide concurrency limit reported by GetAccountSettings.
    pub concurrency_limit: u32,
    /// Wait before the first retry of a failed async event; the second
    /// waits twice as long (AWS: about one and two minutes).
    pub async_retry_delay: std::time::Duration,
    /// How long log lines and invocation records are kept.
    pub log_retention: std::time::Duration,
}

/// A configuration as a request addressed it: the ARN it is reported under
/// carries the alias when the request named one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: FunctionConfig,
    /// The qualifier to put on `FunctionArn`; `None` for the unqualified ARN.
    pub arn_qualifier: Option<String>,
}

pub struct Control {
    settings: Settings,
    meta: Arc<dyn Metadata>,
    blobs: Arc<dyn Blobs>,
    /// Runs functions; `None` when this node has no usable isolation.
    invoker: Option<Arc<dyn nimbus_worker::Invoker>>,
    /// Shared with the tasks that finish a create or update (`lifecycle`).
    writes: Arc<Mutex<()>>,
    /// Wakes the async dispatcher when an event is queued or rescheduled.
    async_wake: tokio::sync::Notify,
    /// Hands invocation records and log lines to the writer task.
    recorder: records::Recorder,
    /// Where `S3Bucket`/`S3Key` code is read; `None` without an object store.
    code_objects: Option<Arc<dyn CodeObjects>>,
    /// Where queue destinations and dead-letter queues are delivered.
    queues: Option<Arc<nimbus_queues::Queues>>,
    /// Where `Code.ImageUri` is looked up; `None` without a registry.
    images: Option<Arc<dyn ImageResolver>>,
    /// Where invocations are counted for CloudWatch metrics (shared with
    /// the record writer, which times its store writes there).
    metrics: Arc<std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>>,
    /// Invocations the node began itself (async events, mappings' batches):
    /// a graceful stop lets them end, as it lets requests end.
    work: tokio_util::task::TaskTracker,
    /// Cancelled when the node begins to stop: nothing new is begun.
    stopping: tokio_util::sync::CancellationToken,
}

impl Control {
    /// Builds the control plane and removes blobs nothing refers to (left by
    /// a crash between a blob write and its metadata commit).
    pub async fn new(
        settings: Settings,
        meta: Arc<dyn Metadata>,
        blobs: Arc<dyn Blobs>,
        invoker: Option<Arc<dyn nimbus_worker::Invoker>>,
    ) -> Result<Self> {
        let retention_ms = settings.log_retention.as_millis() as i64;
        let metrics = Arc::new(std::sync::OnceLock::new());
        let recorder = records::Recorder::start(meta.clone(), retention_ms, metrics.clone());
        let control = Self {
            settings,
            meta,
            blobs,
            invoker,
            writes: Arc::new(Mutex::new(())),
            async_wake: tokio::sync::Notify::new(),
            recorder,
            code_objects: None,
            queues: None,
            images: None,
            metrics,
            work: tokio_util::task::TaskTracker::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
        };
        let guard = control.writes.lock().await;
        control.collect_garbage(&guard).await?;
        // No environment runs yet: roots of images, and unpacked code and
        // layers, that no function uses can go.
        if let Some(invoker) = &control.invoker {
            invoker.retain_images(&control.images_in_use().await?).await;
            invoker.retain_code(&control.meta.unpacked_in_use().await?).await;
        }
        drop(guard);
        control.resume_unsettled().await?;
        Ok(control)
    }

    /// Runs `work`, an invocation the node began itself (an async event's,
    /// a mapping's batch), as one a graceful stop waits for.
    pub fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.work.spawn(work);
    }

    /// Cancelled once the node begins to stop: the loops that begin
    /// invocations (the async dispatcher, mappings' pollers) begin no more.
    pub fn stopping(&self) -> &tokio_util::sync::CancellationToken {
        &self.stopping
    }

    /// Begins no new invocation of the node's own from now on.
    pub fn begin_stop(&self) {
        self.stopping.cancel();
    }

    /// Returns once every invocation begun with [`Control::spawn_work`] has
    /// ended: a graceful stop waits for them, as for requests, so that an
    /// event's or a batch's run is not cut short and run again after the
    /// start (or its messages sent to a dead-letter queue for it).
    pub async fn finish_work(&self) {
        self.begin_stop();
        self.work.close();
        self.work.wait().await;
    }

    /// Removes, while the node runs, the unpacked code and layer trees (and
    /// their read-only mounts) no function or version has used for a whole
    /// [`CODE_RETENTION`]: a tree unused at two passes that far apart can
    /// have no environment left on it (an invocation lasts 15 minutes at
    /// most, an idle environment of a replaced configuration is retired or
    /// expires sooner). Before, they stayed until the next start: a node
    /// deploying for months grew its mount table by one mount a deploy.
    /// A pass holds the write lock, so a create or update committed after
    /// its look prepares its tree again.
    pub async fn run_code_collector(self: Arc<Self>, clock: nimbus_core::clock::Clock) {
        let Some(invoker) = self.invoker.clone() else { return };
        let mut earlier: Option<std::collections::HashSet<String>> = None;
        loop {
            let next = clock.now_ms() + CODE_RETENTION.as_millis() as i64;
            tokio::time::sleep(clock.until(next)).await;
            let guard = self.writes.lock().await;
            let used = match self.meta.unpacked_in_use().await {
                Ok(used) => used,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read which code is in use; none is removed");
                    continue;
                }
            };
            if let Some(earlier) = &earlier {
                invoker.retain_code(&used.union(earlier).cloned().collect()).await;
            }
            drop(guard);
            earlier = Some(used);
        }
    }

    /// Returns once every invocation record and log line handed to the
    /// writer so far is stored: a graceful stop waits for it.
    pub async fn flush_records(&self) {
        self.recorder.flush().await;
    }

    /// Lets CreateFunction, UpdateFunctionCode and PublishLayerVersion take
    /// their code from the object store.
    pub fn with_code_objects(mut self, objects: Arc<dyn CodeObjects>) -> Self {
        self.code_objects = Some(objects);
        self
    }

    /// Delivers queue destinations and dead-letter queues to these queues.
    pub fn with_queues(mut self, queues: Arc<nimbus_queues::Queues>) -> Self {
        self.queues = Some(queues);
        self
    }

    /// Counts invocations, throttles and async events in these metrics
    /// from now on. Set once, before the node serves; later calls are ignored.
    pub fn set_metrics(&self, metrics: Arc<nimbus_metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn metrics(&self) -> Option<&Arc<nimbus_metrics::Metrics>> {
        self.metrics.get()
    }

    /// The node's environments by state; `None` without a worker.
    pub fn environments(&self) -> Option<nimbus_worker::Environments> {
        self.invoker.as_ref().map(|i| i.environments())
    }

    pub fn account(&self) -> &Account {
        &self.settings.account
    }

    /// The account's concurrency limit (GetAccountSettings' `ConcurrentExecutions`),
    /// without the store reads the rest of the settings take.
    pub fn concurrency_limit(&self) -> u32 {
        self.settings.concurrency_limit
    }

    pub fn catalog(&self) -> &Catalog {
        &self.settings.catalog
    }

    async fn lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Deletes unreferenced blobs. Takes the write guard so that no upload
    /// is between its blob write and its metadata commit meanwhile.
    async fn collect_garbage(&self, _guard: &MutexGuard<'_, ()>) -> Result<()> {
        let keep = self.meta.referenced_blobs().await?;
        let removed = self.blobs.retain(&keep).await?;
        if removed > 0 {
            tracing::debug!(removed, "removed unreferenced blobs");
        }
        Ok(())
    }

    async fn function(&self, name: &str) -> Result<Function> {
        self.meta
            .get_function(name)
            .await?
            .ok_or_else(|| not_found(format!("Function not found: {}", self.account().function_arn(name))))
    }

    /// Stops a function's idle environments of `$LATEST` (after an update)
    /// or, with `None`, of every version (after a delete): they run a
    /// configuration that no longer exists.
    /// With `image`, the retired environments ran an image, which may be
    /// no function's now: only then is every function's read to see (a
    /// scan of them all, which made each delete of a zip function slower
    /// the more functions there were).
    async fn retire_environments(&self, name: &str, version: Option<&str>, image: bool) {
        if let Some(invoker) = &self.invoker {
            if version.is_none() {
                invoker.unprovision(name, None).await;
                invoker.set_reserved(name, None);
            }
            invoker.retire(name, version).await;
            if !image {
                return;
            }
            // The image they ran may now be no function's: its root goes
            // once nothing runs there.
            match self.images_in_use().await {
                Ok(keep) => invoker.retain_images(&keep).await,
                Err(e) => tracing::warn!(error = %e, "cannot list the images functions use"),
            }
        }
    }

    async fn save(&self, f: &Function) -> Result<()> {
        self.meta.apply(vec![Write::PutFunction(Box::new(f.clone()))]).await?;
        Ok(())
    }

    fn parse_ref(&self, raw: &str, qualifier: Option<&str>) -> Result<FunctionRef> {
        FunctionRef::parse(self.account(), raw, qualifier).map_err(rule)
    }

    /// The configuration a qualifier names, resolving aliases.
    async fn config_at(&self, f: &Function, q: Option<&Qualifier>) -> Result<Resolved> {
        let name = f.name();
        let missing = |q: &str| not_found(format!("Function not found: {}", self.account().qualified_arn(name, q)));
        match q {
            None => Ok(Resolved { config: f.latest.clone(), arn_qualifier: None }),
            Some(Qualifier::Latest) => Ok(Resolved { config: f.latest.clone(), arn_qualifier: Some(LATEST.into()) }),
            Some(Qualifier::Version(v)) => {
                let config = self.meta.get_version(name, *v).await?.ok_or_else(|| missing(&v.to_string()))?;
                Ok(Resolved { config, arn_qualifier: Some(v.to_string()) })
            }
            Some(Qualifier::Alias(a)) => {
                let alias = f.aliases.get(a).ok_or_else(|| missing(a))?;
                let config = match alias.function_version.parse::<u64>() {
                    Ok(v) => self.meta.get_version(name, v).await?.ok_or_else(|| missing(a))?,
                    Err(_) => f.latest.clone(),
                };
                Ok(Resolved { config, arn_qualifier: Some(a.clone()) })
            }
        }
    }

    /// Checks that a qualifier names something that exists.
    async fn check_qualifier(&self, f: &Function, q: &Qualifier) -> Result<()> {
        self.config_at(f, Some(q)).await.map(|_| ())
    }
}

/// Splits a list, ordered by `key`, into a page of the items after the
/// marker: a marker is the key of the last item handed out, so that items
/// deleted meanwhile (as a script pruning versions page by page does) move
/// nothing that was not yet seen.
pub fn paginate_after<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    marker: Option<&str>,
    max_items: Option<i64>,
) -> Result<(Vec<T>, Option<String>)> {
    let after = marker.filter(|m| !m.is_empty());
    Ok(nimbus_core::paging::after_key(items, key, after, false, page_size(max_items)))
}

/// The page a `MaxItems` asks for, within Nimbus's page limit (the model's
/// minimum of 1 is checked at the front door).
fn page_size(max_items: Option<i64>) -> usize {
    let max = nimbus_core::limits::LIST_MAX_ITEMS;
    max_items.map_or(max, |n| usize::try_from(n).unwrap_or(1).clamp(1, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_the_last_key_until_the_end() {
        assert_eq!(page_size(Some(500)), nimbus_core::limits::LIST_MAX_ITEMS);
        // Key markers: what was deleted behind the marker moves nothing ahead of it.
        let key = |n: &i32| format!("{n:03}");
        let (p, next) = paginate_after((1..=6).collect(), key, None, Some(2)).unwrap();
        assert_eq!((p, next.as_deref()), (vec![1, 2], Some("002")));
        let (p, next) = paginate_after(vec![3, 4, 5, 6], key, next.as_deref(), Some(2)).unwrap();
        assert_eq!((p, next.as_deref()), (vec![3, 4], Some("004")));
        let (p, next) = paginate_after(vec![5, 6], key, next.as_deref(), Some(2)).unwrap();
        assert_eq!((p, next), (vec![5, 6], None));
        assert_eq!(page_size(None), nimbus_core::limits::LIST_MAX_ITEMS);
    }
}
