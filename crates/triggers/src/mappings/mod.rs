//! Lambda event source mappings from queues: the rules of Create, Get,
//! Update, Delete and ListEventSourceMappings (AWS's checks and messages),
//! and the one task that settles each mapping's state by starting and
//! stopping its poller (`poller.rs`). Filter patterns are `filter.rs`'s.
//!
//! Commands store the transitional state AWS reports (Creating, Updating,
//! Enabling, Disabling, Deleting), answer, and wake the settling task, which
//! brings the mapping to Enabled or Disabled (or removes it). At start every
//! mapping is settled again, so enabled mappings poll after a restart.
//!
//! This module speaks domain types; the API converts the wire shapes.

pub mod filter;
mod poller;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nimbus_control::{Control, Error, Page};
use nimbus_core::mappings::{EventSourceMapping, MappingState};
use nimbus_core::{Error as Rule, FunctionRef};
use nimbus_queues::Queues;
use nimbus_store::MappingMeta;
use tokio::sync::{Mutex, Notify};

type Result<T, E = Error> = std::result::Result<T, E>;

/// SQS's default batch size, and the most one receive (and a FIFO batch) takes.
const DEFAULT_BATCH: u32 = 10;

/// The settings of Create and Update; `None` leaves a setting as it is
/// (Update) or takes the default (Create).
#[derive(Debug, Clone, Default)]
pub struct MappingInput {
    pub function_name: Option<String>,
    pub event_source_arn: Option<String>,
    pub enabled: Option<bool>,
    pub batch_size: Option<u32>,
    pub maximum_batching_window_s: Option<u32>,
    pub filters: Option<Vec<String>>,
    pub function_response_types: Option<Vec<String>>,
    /// `ScalingConfig`: `Some(None)` clears MaximumConcurrency.
    pub maximum_concurrency: Option<Option<u32>>,
    /// StartingPosition or StartingPositionTimestamp was given (stream sources only).
    pub stream_setting: bool,
    /// The first setting given that applies to other sources than queues
    /// (MaximumRetryAttempts, DestinationConfig, Topics…), by its wire name.
    pub unsupported: Option<&'static str>,
    /// CreateEventSourceMapping's `Tags` (an update takes none).
    pub tags: Option<BTreeMap<String, String>>,
}

pub struct Mappings {
    meta: Arc<dyn MappingMeta>,
    control: Arc<Control>,
    queues: Arc<Queues>,
    /// Commands and the settling task take turns, so that neither writes
    /// over a state the other just stored.
    writes: Mutex<()>,
    wake: Notify,
    /// The receiving task of each enabled mapping.
    pollers: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Rule(Rule::InvalidParameter(msg.into()))
}

fn missing() -> Error {
    Error::Rule(Rule::NotFound("The resource you requested does not exist.".into()))
}

/// At most as many tags as a function may have.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    nimbus_core::service_rules::tag_count(tags.len()).map_err(Error::Rule)
}

/// AWS's answer to a second mapping of the same queue and function.
fn duplicate(source: &str, function: &str, existing: &str) -> Error {
    Error::Rule(Rule::Conflict(format!(
        "An event source mapping with SQS arn (\" {source} \") and function (\" {function} \") already exists. Please update or delete the existing mapping with UUID {existing}"
    )))
}

use nimbus_core::clock::now_ms;

impl Mappings {
    pub fn new(meta: Arc<dyn MappingMeta>, control: Arc<Control>, queues: Arc<Queues>) -> Arc<Self> {
        Arc::new(Self {
            meta,
            control,
            queues,
            writes: Mutex::new(()),
            wake: Notify::new(),
            pollers: Default::default(),
        })
    }

    /// `arn:aws:lambda:<region>:<account>:event-source-mapping:<uuid>`.
    pub fn mapping_arn(&self, uuid: &str) -> String {
        let a = self.control.account();
        format!("arn:aws:lambda:{}:{}:event-source-mapping:{uuid}", a.region, a.id)
    }

    pub async fn create(&self, input: MappingInput) -> Result<EventSourceMapping> {
        let Some(source) = input.event_source_arn.clone() else {
            return Err(invalid("Unrecognized event source."));
        };
        let function = input.function_name.clone().unwrap_or_default();
        let enabled = input.enabled.unwrap_or(true);
        let mut m = EventSourceMapping {
            uuid: uuid::Uuid::new_v4().to_string(),
            event_source_arn: source,
            function_arn: String::new(),
            batch_size: DEFAULT_BATCH,
            maximum_batching_window_s: 0,
            filters: vec![],
            function_response_types: vec![],
            maximum_concurrency: None,
            enabled,
            // AWS answers a mapping created disabled as Disabled at once.
            state: if enabled { MappingState::Creating } else { MappingState::Disabled },
            last_modified_ms: now_ms(),
            tags: input.tags.clone().unwrap_or_default(),
        };
        check_tags(&m.tags)?;
        let (function_arn, name) = self.function_arn(&function).await?;
        m.function_arn = function_arn;
        apply(&mut m, &input);
        self.check(&m, &input).await?;
        let _turn = self.writes.lock().await;
        if let Some(existing) = self.meta.create_mapping(&m).await? {
            return Err(duplicate(&m.event_source_arn, &name, &existing));
        }
        self.wake.notify_one();
        Ok(m)
    }

    pub async fn get(&self, uuid: &str) -> Result<EventSourceMapping> {
        self.meta.get_mapping(uuid).await?.ok_or_else(missing)
    }

    /// The mapping a tagging request's ARN names, if it names one
    /// (`…:event-source-mapping:<uuid>`); `None` for any other resource.
    pub fn tagged_uuid<'a>(&self, arn: &'a str) -> Option<Result<&'a str>> {
        let (_, uuid) = arn.split_once(":event-source-mapping:")?;
        Some(if arn == self.mapping_arn(uuid) { Ok(uuid) } else { Err(missing()) })
    }

    /// Adds `add` to a mapping's tags and removes `remove`.
    pub async fn retag(&self, uuid: &str, add: BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        let _turn = self.writes.lock().await;
        let mut m = self.get(uuid).await?;
        m.tags.extend(add);
        for k in remove {
            m.tags.remove(k);
        }
        check_tags(&m.tags)?;
        if !self.meta.put_mapping(&m).await? {
            return Err(missing());
        }
        Ok(())
    }

    pub async fn update(&self, uuid: &str, input: MappingInput) -> Result<EventSourceMapping> {
        let _turn = self.writes.lock().await;
        let mut m = self.get(uuid).await?;
        // AWS takes no change of a mapping between states (Creating, Updating, ...).
        if !m.state.settled() {
            return Err(Error::Rule(Rule::InUse(
                "Cannot update the event source mapping because it is in use.".into(),
            )));
        }
        let was_on = switched_on(&m);
        if let Some(f) = &input.function_name {
            let (function_arn, name) = self.function_arn(f).await?;
            let taken = self.meta.list_mappings().await?.into_iter().find(|o| {
                o.uuid != m.uuid && o.event_source_arn == m.event_source_arn && o.function_arn == function_arn
            });
            if let Some(other) = taken {
                return Err(duplicate(&m.event_source_arn, &name, &other.uuid));
            }
            m.function_arn = function_arn;
        }
        apply(&mut m, &input);
        self.check(&m, &input).await?;
        m.state = match input.enabled {
            Some(true) if !was_on => MappingState::Enabling,
            Some(false) => MappingState::Disabling,
            _ => MappingState::Updating,
        };
        m.last_modified_ms = now_ms();
        if !self.meta.put_mapping(&m).await? {
            return Err(missing());
        }
        self.wake.notify_one();
        Ok(m)
    }

    /// Marks the mapping Deleting (the answer AWS gives); the settling task
    /// stops its poller and removes it.
    pub async fn delete(&self, uuid: &str) -> Result<EventSourceMapping> {
        let _turn = self.writes.lock().await;
        let mut m = self.get(uuid).await?;
        if !m.state.settled() {
            return Err(Error::Rule(Rule::InUse(
                "Cannot delete the event source mapping because it is in use.".into(),
            )));
        }
        m.state = MappingState::Deleting;
        if !self.meta.put_mapping(&m).await? {
            return Err(missing());
        }
        self.wake.notify_one();
        Ok(m)
    }

    /// Mappings of a source and/or a function (a name matches its every
    /// qualifier; a qualified name or ARN only itself), a page at a time.
    pub async fn list(
        &self,
        source: Option<&str>,
        function: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<Page<EventSourceMapping>> {
        let account = self.control.account();
        let wanted = function.map(|f| FunctionRef::parse(account, f, None)).transpose().map_err(Error::Rule)?;
        let items = self
            .meta
            .list_mappings()
            .await?
            .into_iter()
            .filter(|m| source.is_none_or(|s| m.event_source_arn == s))
            .filter(|m| {
                wanted.as_ref().is_none_or(|w| match &w.qualifier {
                    None => FunctionRef::parse(account, &m.function_arn, None).is_ok_and(|r| r.name == w.name),
                    Some(q) => m.function_arn == account.qualified_arn(&w.name, &q.to_string()),
                })
            })
            .collect();
        // By UUID, as the store lists them.
        let (items, next_marker) = nimbus_control::paginate_after(items, |m| m.uuid.clone(), marker, max_items)?;
        Ok(Page { items, next_marker })
    }

    /// The ARN a mapping stores for a function name (qualified if it was),
    /// and the bare name; the function (and its qualifier) must exist.
    async fn function_arn(&self, raw: &str) -> Result<(String, String)> {
        let (resolved, f) = self.control.get_function(raw, None).await?;
        let name = f.name().to_string();
        let account = self.control.account();
        let arn = match resolved.arn_qualifier {
            Some(q) => account.qualified_arn(&name, &q),
            None => account.function_arn(&name),
        };
        Ok((arn, name))
    }

    /// AWS's rules for a queue source, on the settings as they would be stored.
    async fn check(&self, m: &EventSourceMapping, input: &MappingInput) -> Result<()> {
        if !m.event_source_arn.starts_with("arn:aws:sqs:") {
            return Err(invalid(format!(
                "Unsupported event source {}: this Nimbus node maps SQS queues only.",
                m.event_source_arn
            )));
        }
        if input.stream_setting {
            return Err(invalid("StartingPosition is not valid for SQS event sources."));
        }
        if let Some(name) = input.unsupported {
            return Err(invalid(format!("Unsupported '{name}' parameter for given event source mapping type")));
        }
        let queue = self
            .queues
            .queue_by_arn(&m.event_source_arn)
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .ok_or_else(|| invalid("Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified queue does not exist or you do not have access to it."))?;
        if queue.fifo {
            if m.maximum_batching_window_s > 0 {
                return Err(invalid("Batching window is not supported for FIFO queues"));
            }
            if m.batch_size > DEFAULT_BATCH {
                return Err(invalid("Batch size must not exceed 10 for FIFO queues"));
            }
        } else if m.batch_size > DEFAULT_BATCH && m.maximum_batching_window_s == 0 {
            return Err(invalid(
                "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
            ));
        }
        let (resolved, _) = self.control.get_function(&m.function_arn, None).await?;
        let timeout = resolved.config.timeout;
        let visibility = queue.visibility_timeout.as_secs();
        if visibility < u64::from(timeout) {
            return Err(invalid(format!(
                "Queue visibility timeout: {visibility} seconds is less than Function timeout: {timeout} seconds"
            )));
        }
        if m.filters.len() > filter::MAX_FILTERS {
            return Err(invalid(format!(
                "The number of filters ({}) exceeds the limit of {} per event source mapping.",
                m.filters.len(),
                filter::MAX_FILTERS
            )));
        }
        filter::Filters::compile(&m.filters).map_err(|e| invalid(e.to_string()))?;
        Ok(())
    }

    /// Settles every mapping whenever a command changes one; runs for the
    /// life of the node and sleeps on its wake in between.
    pub async fn run(self: Arc<Self>) {
        loop {
            let woken = self.wake.notified();
            match self.settle().await {
                Ok(()) => woken.await,
                // Tried again soon: a mapping left between states takes no
                // update or delete, so no change may come to retry it.
                Err(e) => {
                    tracing::warn!(error = %e, "event source mappings could not be settled; retrying in a second");
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn settle(&self) -> Result<()> {
        let _turn = self.writes.lock().await;
        for mut m in self.meta.list_mappings().await? {
            let running = self.pollers().get(&m.uuid).is_some_and(|h| !h.is_finished());
            let settled = match m.state {
                MappingState::Deleting => {
                    self.stop(&m.uuid);
                    self.meta.delete_mapping(&m.uuid).await?;
                    continue;
                }
                MappingState::Enabled if running => continue,
                MappingState::Disabled => {
                    self.stop(&m.uuid);
                    continue;
                }
                _ if m.enabled => {
                    // A changed mapping gets a poller with its new settings.
                    self.stop(&m.uuid);
                    self.start(&m)?;
                    MappingState::Enabled
                }
                _ => {
                    self.stop(&m.uuid);
                    MappingState::Disabled
                }
            };
            if m.state != settled {
                m.state = settled;
                self.meta.put_mapping(&m).await?;
            }
        }
        Ok(())
    }

    fn pollers(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::JoinHandle<()>>> {
        self.pollers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, m: &EventSourceMapping) -> Result<()> {
        let filters = filter::Filters::compile(&m.filters).map_err(|e| invalid(e.to_string()))?;
        let poller =
            poller::Poller { mapping: m.clone(), filters, control: self.control.clone(), queues: self.queues.clone() };
        tracing::debug!(uuid = %m.uuid, source = %m.event_source_arn, function = %m.function_arn, "polling");
        self.pollers().insert(m.uuid.clone(), tokio::spawn(poller.run()));
        Ok(())
    }

    /// Stops receiving; batches already handed to the function finish.
    fn stop(&self, uuid: &str) {
        if let Some(h) = self.pollers().remove(uuid) {
            h.abort();
        }
    }
}

/// Whether a mapping is on, or on its way there.
fn switched_on(m: &EventSourceMapping) -> bool {
    m.enabled && !matches!(m.state, MappingState::Disabling | MappingState::Disabled)
}

/// Copies the settings a request gave onto a mapping.
fn apply(m: &mut EventSourceMapping, input: &MappingInput) {
    if let Some(e) = input.enabled {
        m.enabled = e;
    }
    if let Some(b) = input.batch_size {
        m.batch_size = b;
    }
    if let Some(w) = input.maximum_batching_window_s {
        m.maximum_batching_window_s = w;
    }
    if let Some(f) = &input.filters {
        m.filters = f.clone();
    }
    if let Some(t) = &input.function_response_types {
        m.function_response_types = t.clone();
    }
    if let Some(c) = input.maximum_concurrency {
        m.maximum_concurrency = c;
    }
}

/// How long an idle poller's receive waits: the queue wakes it when a
/// message arrives, so this only bounds how long one call lasts.
pub(crate) const IDLE_WAIT: Duration = Duration::from_secs(3600);
