//! SQS-compatible queues: the rules ([`rules`]) and the engine ([`Queues`]).
//!
//! The engine keeps every queue's messages in memory ([`state`]), all but
//! their payloads over 8 KiB (body and attributes, up to 1 MiB each),
//! which it reads from the store when a message is received or moved: a
//! queue may hold more than the node's memory. It writes what must survive
//! a crash to the store ([`nimbus_store::QueueMeta`]): a send is committed
//! before it is acknowledged, a delete before it is answered, and receive
//! counts, receipts and visibility timeouts are written behind (a crash
//! may lose a count, or a receive's invisibility, never a message). So a
//! message in flight when the node stops is still in flight after it
//! starts, and its receipt handle still deletes it. Writes from concurrent
//! requests are gathered by one writer task into one transaction (group
//! commit), so a batch of sends costs one fsync however many clients send
//! at once.
//!
//! A waiting receive (long polling) sleeps on the queue's
//! [`tokio::sync::Notify`] until a send wakes it or the next in-flight
//! message's timeout passes; it never polls.
//!
//! The interface for other crates (event source mappings, destinations):
//! [`Queues::send`], [`Queues::receive`], [`Queues::delete`],
//! [`Queues::change_visibility`], [`Queues::queue_by_arn`] (a poller's
//! long wait is the receive's own), and for a message a caller inserts in its own
//! transaction, [`Queues::prepare_outbox`], [`nimbus_store::insert_message`]
//! and [`Queues::adopt`].
//! Everything is addressed by queue ARN.
//!
//! This crate must not speak HTTP (the API's `sqs` front does) nor invoke
//! functions.

mod error;
mod moves;
pub mod rules;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nimbus_core::queues::{AttributeValue, QueueDoc, StoredMessage};
use nimbus_store::{DedupId, MessageWrite, QueueMeta};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Notify};

pub use error::{Error, Result};
pub use moves::MoveTask;
use rules::RedrivePolicy;
use state::{Live, Messages, TakeRules};

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub body: String,
    pub attributes: BTreeMap<String, AttributeValue>,
    /// `AWSTraceHeader`, the only system attribute a sender may set.
    pub system_attributes: BTreeMap<String, AttributeValue>,
    /// Per-message delay (standard queues); the queue's DelaySeconds if None.
    pub delay: Option<Duration>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

/// What a send answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub message_id: String,
    pub md5_of_body: String,
    pub md5_of_attributes: Option<String>,
    pub md5_of_system_attributes: Option<String>,
    pub sequence_number: Option<String>,
}

/// A received message, with every system attribute (the caller selects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: String,
    /// ApproximateReceiveCount, SentTimestamp, SenderId,
    /// ApproximateFirstReceiveTimestamp, and for FIFO MessageGroupId,
    /// MessageDeduplicationId, SequenceNumber; AWSTraceHeader and
    /// DeadLetterQueueSourceArn when set.
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, AttributeValue>,
    pub md5_of_attributes: Option<String>,
}

/// A queue's settings as other crates need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub arn: String,
    pub fifo: bool,
    pub visibility_timeout: Duration,
    /// The stored attributes (settable ones, defaults filled in).
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub created_ms: i64,
    pub modified_ms: i64,
}

/// One live queue.
struct Queue {
    arn: String,
    fifo: bool,
    doc: Mutex<QueueDoc>,
    /// Held across an edit of `doc` and its store write, so that edits are
    /// stored in the order they are made (see `Queues::edit_doc`).
    doc_writes: tokio::sync::Mutex<()>,
    messages: Mutex<Messages>,
    /// Woken when messages may have become available.
    notify: Arc<Notify>,
    last_purge: Mutex<Option<Instant>>,
}

/// Settings parsed from a queue's attributes.
struct Settings {
    delay_s: u64,
    visibility_s: u64,
    retention_s: i64,
    max_size: usize,
    content_dedup: bool,
    /// `DeduplicationScope: messageGroup`: an id deduplicates within its group only.
    dedup_per_group: bool,
    redrive: Option<RedrivePolicy>,
}

impl Settings {
    /// What a FIFO message's deduplication id is remembered as: the id, or
    /// under a per-group scope the id within its group.
    fn dedup_key(&self, m: &StoredMessage) -> Option<String> {
        let id = m.dedup_id.as_ref()?;
        Some(match (&m.group_id, self.dedup_per_group) {
            (Some(group), true) => format!("{group}\u{0}{id}"),
            _ => id.clone(),
        })
    }
}

impl Queue {
    fn settings(&self) -> Settings {
        let doc = lock(&self.doc);
        let int = |k: &str, d: i64| doc.attributes.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(d);
        Settings {
            delay_s: int("DelaySeconds", 0).unsigned_abs(),
            visibility_s: int("VisibilityTimeout", 30).unsigned_abs(),
            retention_s: int("MessageRetentionPeriod", 345_600),
            max_size: usize::try_from(int("MaximumMessageSize", rules::MAX_MESSAGE_BYTES as i64))
                .unwrap_or(rules::MAX_MESSAGE_BYTES),
            content_dedup: doc.attributes.get("ContentBasedDeduplication").is_some_and(|v| v == "true"),
            dedup_per_group: doc.attributes.get("DeduplicationScope").is_some_and(|v| v == "messageGroup"),
            redrive: doc.attributes.get("RedrivePolicy").and_then(|p| RedrivePolicy::parse(p).ok()),
        }
    }

    fn info(&self) -> QueueInfo {
        let doc = lock(&self.doc).clone();
        let visibility_s = doc.attributes.get("VisibilityTimeout").and_then(|v| v.parse().ok()).unwrap_or(30);
        QueueInfo {
            name: doc.name,
            arn: self.arn.clone(),
            fifo: self.fifo,
            visibility_timeout: Duration::from_secs(visibility_s),
            attributes: doc.attributes,
            tags: doc.tags,
            created_ms: doc.created_ms,
            modified_ms: doc.modified_ms,
        }
    }
}

/// How long a deleted queue's name cannot be used again (AWS: 60 s).
const DELETED_RECENTLY_MS: i64 = 60_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

use nimbus_core::clock::now_ms;

/// A batch of store writes and, if the caller waits, where its insert seqs go.
struct Job {
    writes: Vec<MessageWrite>,
    done: Option<oneshot::Sender<Result<Vec<i64>>>>,
}

/// How often messages past their queue's retention period are removed.
const EXPIRY_PERIOD: Duration = Duration::from_secs(60);

/// The SQS engine. Cheap to share (`Arc`).
pub struct Queues {
    /// Itself, for the work that must outlive the request that began it.
    me: std::sync::Weak<Queues>,
    meta: Arc<dyn QueueMeta>,
    region: String,
    account: String,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    writer: mpsc::UnboundedSender<Job>,
    sequence: AtomicU64,
    moves: moves::Tasks,
    /// Names of queues deleted in the last minute, and when: AWS refuses
    /// to create a queue of such a name meanwhile.
    deleted: Mutex<HashMap<String, i64>>,
    /// Held from a create's look for an existing queue to its install: two
    /// creates of one name at once are one create and one comparison.
    creating: tokio::sync::Mutex<()>,
    /// Set when the node begins to stop: waits end (see [`Queues::close`]).
    closed: std::sync::atomic::AtomicBool,
    /// What every queue's messages may hold of payloads in memory.
    payloads: Arc<state::PayloadBudget>,
}

impl Queues {
    /// Loads every queue and message and starts the writer task (so it must
    /// run inside a Tokio runtime).
    pub async fn open(meta: Arc<dyn QueueMeta>, region: &str, account: &str) -> Result<Arc<Self>> {
        let (writer, jobs) = mpsc::unbounded_channel();
        tokio::spawn(write_behind(meta.clone(), jobs));
        let this = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            meta: meta.clone(),
            region: region.to_string(),
            account: account.to_string(),
            queues: RwLock::default(),
            writer,
            sequence: AtomicU64::new(0),
            deleted: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
            closed: Default::default(),
            moves: moves::Tasks::default(),
            payloads: state::PayloadBudget::new(PAYLOADS_IN_MEMORY_MAX),
        });
        for doc in meta.list_queues().await? {
            this.install(doc);
        }
        let now = now_ms();
        let mut after = 0;
        let mut orphans = Vec::new();
        loop {
            let rows = meta.messages_after(None, after, 10_000).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in rows {
                let Some(q) = this.named(&row.queue) else {
                    orphans.push(MessageWrite::Delete { seq: row.seq });
                    continue;
                };
                let mut m = lock(&q.messages);
                let seq_no = row.message.sequence_number.as_deref().and_then(|s| s.parse::<u64>().ok());
                this.sequence.fetch_max(seq_no.unwrap_or(0), Ordering::Relaxed);
                m.insert(Live::restored(row.seq, row.message, row.in_flight));
            }
        }
        // A FIFO queue's delay may have changed since its messages were sent.
        for q in this.queues.read().unwrap_or_else(|e| e.into_inner()).values().filter(|q| q.fifo) {
            let delay_ms = i64::try_from(q.settings().delay_s * 1000).unwrap_or(0);
            lock(&q.messages).redelay(delay_ms);
        }
        if !orphans.is_empty() {
            meta.apply_messages(&orphans).await?;
        }
        // Deduplication ids within their window, their messages stored or not.
        for d in meta.dedup_ids(now - rules::DEDUP_WINDOW_MS).await? {
            if let Some(q) = this.named(&d.queue) {
                lock(&q.messages).remember(&d.dedup_id, &d.message_id, d.sent_ms);
            }
        }
        let queues = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(queues) = queues.upgrade() else { return };
                if let Err(e) = queues.expire(now_ms()).await {
                    tracing::warn!(error = %e, "removing expired messages");
                }
            }
        });
        Ok(this)
    }

    /// Removes every queue's messages past its retention period (a receive
    /// drops those it meets, but a queue only sent to would keep them all,
    /// in memory and on disk) and deduplication ids past their window.
    pub async fn expire(&self, now: i64) -> Result<()> {
        let queues: Vec<Arc<Queue>> = self.queues.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut writes = Vec::new();
        // Only FIFO queues have deduplication rows (a deleted one's go with
        // it): a node without them writes nothing here, as before.
        if queues.iter().any(|q| q.fifo) {
            writes.push(MessageWrite::ForgetDedup { before_ms: now - rules::DEDUP_WINDOW_MS });
        }
        for q in queues {
            let retention_ms = q.settings().retention_s * 1000;
            let gone = lock(&q.messages).expire(now, retention_ms);
            writes.extend(gone.into_iter().map(|seq| MessageWrite::Delete { seq }));
        }
        if !writes.is_empty() {
            self.write(writes).await?;
        }
        Ok(())
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The ARN of a queue of this node named `name`.
    pub fn arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account)
    }

    fn install(&self, doc: QueueDoc) -> Arc<Queue> {
        let fifo = doc.attributes.get("FifoQueue").is_some_and(|v| v == "true");
        let q = Arc::new(Queue {
            arn: self.arn(&doc.name),
            fifo,
            doc_writes: tokio::sync::Mutex::new(()),
            messages: Mutex::new(Messages::with_budget(fifo, self.payloads.clone())),
            notify: Arc::new(Notify::new()),
            last_purge: Mutex::new(None),
            doc: Mutex::new(doc.clone()),
        });
        self.queues.write().unwrap_or_else(|e| e.into_inner()).insert(doc.name, q.clone());
        q
    }

    fn named(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn by_arn(&self, arn: &str) -> Result<Arc<Queue>> {
        let prefix = format!("arn:aws:sqs:{}:{}:", self.region, self.account);
        arn.strip_prefix(&prefix).and_then(|n| self.named(n)).ok_or(Error::QueueDoesNotExist)
    }

    /// Writes to the store and waits for the commit; returns insert seqs.
    async fn write(&self, writes: Vec<MessageWrite>) -> Result<Vec<i64>> {
        let (done, answer) = oneshot::channel();
        self.writer.send(Job { writes, done: Some(done) }).map_err(|_| Error::Internal("writer stopped".into()))?;
        answer.await.map_err(|_| Error::Internal("writer stopped".into()))?
    }

    /// Returns once every write handed to the writer so far is stored
    /// (receives, visibility changes, deletes): a graceful stop waits for it.
    pub async fn flush(&self) {
        if let Err(e) = self.write(Vec::new()).await {
            tracing::error!(error = %e, "cannot store the queues' last changes");
        }
    }

    /// Writes to the store without waiting (what a crash may lose).
    fn write_behind(&self, writes: Vec<MessageWrite>) {
        if !writes.is_empty() {
            let _ = self.writer.send(Job { writes, done: None });
        }
    }

    // ---- queues ----

    /// Creates a queue; the same name with the same given attributes answers
    /// the existing queue (AWS's idempotency), other values QueueNameExists.
    pub async fn create_queue(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: &BTreeMap<String, String>,
    ) -> Result<QueueInfo> {
        let fifo_attr = attributes.get("FifoQueue").map(|v| v.to_ascii_lowercase());
        let fifo = match fifo_attr.as_deref() {
            Some("true") => true,
            Some("false") | None => false,
            Some(_) => return Err(Error::InvalidAttributeValue("Invalid value for the parameter FifoQueue.".into())),
        };
        if !fifo && name.ends_with(".fifo") {
            return Err(rules::check_queue_name(name, true).err().unwrap_or_else(|| {
                Error::InvalidParameterValue(
                    "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.".into(),
                )
            }));
        }
        rules::check_queue_name(name, fifo)?;
        let mut given = BTreeMap::new();
        for (k, v) in attributes {
            given.insert(k.clone(), rules::check_attribute(k, v, fifo, true)?);
        }
        self.check_redrive(&self.arn(name), &given, fifo)?;
        check_tags(tags)?;
        {
            let now = now_ms();
            let mut deleted = lock(&self.deleted);
            deleted.retain(|_, at| now - *at < DELETED_RECENTLY_MS);
            if deleted.contains_key(name) {
                return Err(Error::QueueDeletedRecently);
            }
        }
        let _creating = self.creating.lock().await;
        if let Some(existing) = self.named(name) {
            let doc = lock(&existing.doc).clone();
            let differs: Vec<&str> =
                given.iter().filter(|(k, v)| doc.attributes.get(*k) != Some(v)).map(|(k, _)| k.as_str()).collect();
            if differs.is_empty() {
                return Ok(existing.info());
            }
            return Err(Error::QueueNameExists(differs.join(", ")));
        }
        let now = now_ms();
        let mut all = rules::default_attributes(fifo);
        all.extend(given.into_iter().filter(|(_, v)| !v.is_empty()));
        rules::check_together(&all)?;
        let doc =
            QueueDoc { name: name.to_string(), created_ms: now, modified_ms: now, attributes: all, tags: tags.clone() };
        if !self.meta.create_queue(&doc).await? {
            // Created concurrently: answer as for an existing queue.
            return self.named(name).map(|q| q.info()).ok_or(Error::QueueDoesNotExist);
        }
        Ok(self.install(doc).info())
    }

    fn check_redrive(&self, source: &str, attrs: &BTreeMap<String, String>, fifo: bool) -> Result<()> {
        let Some(policy) = attrs.get("RedrivePolicy").filter(|p| !p.is_empty()) else { return Ok(()) };
        let p = RedrivePolicy::parse(policy)?;
        let target = self.by_arn(&p.dead_letter_target_arn).map_err(|_| {
            Error::InvalidParameterValue(format!(
                "Value {policy} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist."
            ))
        })?;
        if target.fifo != fifo {
            return Err(Error::InvalidParameterValue(format!(
                "Value {policy} for parameter RedrivePolicy is invalid. Reason: Dead-letter queue must be same type of queue as the source."
            )));
        }
        // The dead-letter queue's RedriveAllowPolicy says which sources may name it.
        let allow = lock(&target.doc).attributes.get("RedriveAllowPolicy").cloned();
        let allowed = match allow.as_deref().and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok()) {
            None => true,
            Some(a) => match a["redrivePermission"].as_str() {
                Some("denyAll") => false,
                Some("byQueue") => {
                    a["sourceQueueArns"].as_array().is_some_and(|arns| arns.iter().any(|x| x.as_str() == Some(source)))
                }
                _ => true,
            },
        };
        if !allowed {
            return Err(Error::InvalidParameterValue(format!(
                "Value {policy} for parameter RedrivePolicy is invalid. Reason: Queue {source} is not allowed to use {} as its dead-letter queue by its RedriveAllowPolicy.",
                p.dead_letter_target_arn
            )));
        }
        Ok(())
    }

    pub fn queue_by_name(&self, name: &str) -> Result<QueueInfo> {
        self.named(name).map(|q| q.info()).ok_or(Error::QueueDoesNotExist)
    }

    /// The queue an ARN names, if it exists.
    pub fn queue_by_arn(&self, arn: &str) -> Result<Option<QueueInfo>> {
        Ok(self.by_arn(arn).ok().map(|q| q.info()))
    }

    /// Queue names starting with `prefix`, in order, after `after`.
    pub fn list_queues(&self, prefix: &str, after: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|n| n.starts_with(prefix) && after.is_none_or(|a| n.as_str() > a))
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub async fn delete_queue(&self, arn: &str) -> Result<()> {
        let q = self.by_arn(arn)?;
        let name = lock(&q.doc).name.clone();
        self.meta.delete_queue(&name).await?;
        self.queues.write().unwrap_or_else(|e| e.into_inner()).remove(&name);
        lock(&self.deleted).insert(name.clone(), now_ms());
        lock(&q.messages).clear();
        q.notify.notify_waiters();
        Ok(())
    }

    /// Deletes every message (once a minute, as AWS allows).
    pub async fn purge(&self, arn: &str) -> Result<()> {
        let q = self.by_arn(arn)?;
        let name = lock(&q.doc).name.clone();
        {
            let mut last = lock(&q.last_purge);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return Err(Error::PurgeQueueInProgress(name));
            }
            *last = Some(Instant::now());
        }
        lock(&q.messages).clear();
        self.write(vec![MessageWrite::Purge { queue: name }]).await?;
        Ok(())
    }

    /// Every attribute, computed ones included, as GetQueueAttributes names them.
    pub fn attributes(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        let q = self.by_arn(arn)?;
        let info = q.info();
        let counts = lock(&q.messages).counts(now_ms(), q.settings().retention_s * 1000);
        let mut a = info.attributes;
        a.insert("QueueArn".into(), info.arn);
        a.insert("CreatedTimestamp".into(), (info.created_ms / 1000).to_string());
        a.insert("LastModifiedTimestamp".into(), (info.modified_ms / 1000).to_string());
        a.insert("ApproximateNumberOfMessages".into(), counts.visible.to_string());
        a.insert("ApproximateNumberOfMessagesNotVisible".into(), counts.in_flight.to_string());
        a.insert("ApproximateNumberOfMessagesDelayed".into(), counts.delayed.to_string());
        Ok(a)
    }

    /// Sets attributes (all checked first; an empty RedrivePolicy or
    /// RedriveAllowPolicy removes it).
    pub async fn set_attributes(&self, arn: &str, attributes: &BTreeMap<String, String>) -> Result<()> {
        let q = self.by_arn(arn)?;
        let mut checked = BTreeMap::new();
        for (k, v) in attributes {
            checked.insert(k.clone(), rules::check_attribute(k, v, q.fifo, false)?);
        }
        self.check_redrive(&q.arn, &checked, q.fifo)?;
        let redelay = checked.get("DelaySeconds").filter(|_| q.fifo).and_then(|d| d.parse::<i64>().ok());
        self.edit_doc(&q, |doc| {
            let mut all = doc.attributes.clone();
            for (k, v) in checked {
                if v.is_empty() && ["RedrivePolicy", "RedriveAllowPolicy", "Policy"].contains(&k.as_str()) {
                    all.remove(&k);
                } else {
                    all.insert(k, v);
                }
            }
            rules::check_together(&all)?;
            doc.attributes = all;
            doc.modified_ms = now_ms();
            Ok(())
        })
        .await?;
        if let Some(delay_s) = redelay {
            lock(&q.messages).redelay(delay_s * 1000);
            q.notify.notify_waiters();
        }
        Ok(())
    }

    pub async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        check_tags(tags)?;
        let q = self.by_arn(arn)?;
        self.edit_doc(&q, |doc| {
            doc.tags.extend(tags.clone());
            if doc.tags.len() > 50 {
                return Err(Error::InvalidParameterValue("Too many tags added for queue.".into()));
            }
            Ok(())
        })
        .await
    }

    pub async fn untag(&self, arn: &str, keys: &[String]) -> Result<()> {
        let q = self.by_arn(arn)?;
        self.edit_doc(&q, |doc| {
            for k in keys {
                doc.tags.remove(k);
            }
            Ok(())
        })
        .await
    }

    /// Edits a copy of a queue's settings, stores it, and only then shows it.
    /// Edits take turns from the copy to the store, so the store keeps the
    /// last one shown (with each edit storing the whole document, two edits
    /// racing to the store could leave the earlier one stored, and the later
    /// one lost at the next start); a refused or failed edit changes nothing.
    async fn edit_doc(&self, q: &Queue, edit: impl FnOnce(&mut QueueDoc) -> Result<()>) -> Result<()> {
        let _turn = q.doc_writes.lock().await;
        let mut doc = lock(&q.doc).clone();
        edit(&mut doc)?;
        self.meta.put_queue(&doc).await?;
        *lock(&q.doc) = doc;
        Ok(())
    }

    /// ARNs of the queues whose redrive policy targets `arn`, by name.
    pub fn dead_letter_sources(&self, arn: &str) -> Result<Vec<String>> {
        self.by_arn(arn)?;
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = queues
            .values()
            .filter(|q| q.settings().redrive.is_some_and(|p| p.dead_letter_target_arn == arn))
            .map(|q| q.arn.clone())
            .collect();
        out.sort();
        Ok(out)
    }

    // ---- messages ----

    /// Sends one message; committed before it returns.
    pub async fn send(&self, queue_arn: &str, msg: OutgoingMessage) -> Result<SentMessage> {
        self.send_batch(queue_arn, vec![msg]).await?.pop().unwrap_or(Err(Error::Internal("no result".into())))
    }

    /// Sends messages in one transaction; each entry succeeds or fails on
    /// its own (a queue error fails the whole call).
    pub async fn send_batch(&self, queue_arn: &str, msgs: Vec<OutgoingMessage>) -> Result<Vec<Result<SentMessage>>> {
        let q = self.by_arn(queue_arn)?;
        let name = lock(&q.doc).name.clone();
        let settings = q.settings();
        let now = now_ms();
        let mut results: Vec<Result<SentMessage>> = Vec::with_capacity(msgs.len());
        // What is to be stored, with its deduplication key (computed once).
        let mut stored: Vec<(StoredMessage, Option<String>)> = Vec::new();
        for msg in msgs {
            let checked = self.prepare(&q, &settings, msg, now);
            let (sent, message) = match checked {
                Ok(v) => v,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let key = settings.dedup_key(&message);
            if let Some(key) = &key {
                let mut m = lock(&q.messages);
                if let Some(original) = m.duplicate_of(key, now) {
                    results.push(Ok(SentMessage { message_id: original, ..sent }));
                    continue;
                }
                m.remember(key, &message.id, now);
            }
            stored.push((message, key));
            results.push(Ok(sent));
        }
        if stored.is_empty() {
            return Ok(results);
        }
        let mut writes: Vec<MessageWrite> = stored
            .iter()
            .map(|(m, _)| MessageWrite::Insert { queue: name.clone(), message: Box::new(m.clone()) })
            .collect();
        // Its deduplication id outlives the message (received and deleted
        // within the window, it still answers a retry), restarts included.
        writes.extend(stored.iter().filter_map(|(m, key)| {
            let dedup_id = key.clone()?;
            Some(MessageWrite::Dedup(DedupId { queue: name.clone(), dedup_id, message_id: m.id.clone(), sent_ms: now }))
        }));
        let seqs = match self.write(writes).await {
            Ok(seqs) => seqs,
            Err(e) => {
                let mut m = lock(&q.messages);
                for key in stored.iter().filter_map(|(_, key)| key.as_deref()) {
                    m.forget(key);
                }
                return Err(e);
            }
        };
        {
            let mut m = lock(&q.messages);
            for ((message, _), seq) in stored.into_iter().zip(seqs) {
                m.insert(Live::new(seq, without_payload(message)));
            }
        }
        q.notify.notify_waiters();
        Ok(results)
    }

    /// Checks one message against the queue's rules and builds what is stored.
    fn prepare(
        &self,
        q: &Queue,
        settings: &Settings,
        msg: OutgoingMessage,
        now: i64,
    ) -> Result<(SentMessage, StoredMessage)> {
        if msg.body.is_empty() {
            return Err(Error::MissingParameter("MessageBody".into()));
        }
        if !rules::valid_characters(&msg.body) {
            return Err(Error::InvalidMessageContents);
        }
        // An empty group id is a missing one (below, for FIFO).
        let group_id = msg.group_id.as_ref().filter(|g| !g.is_empty());
        for (name, id) in [("MessageGroupId", group_id), ("MessageDeduplicationId", msg.dedup_id.as_ref())] {
            if let Some(id) = id {
                rules::check_message_id_field(name, id)?;
            }
        }
        let size = msg.body.len()
            + rules::check_message_attributes(&msg.attributes)?
            + rules::check_system_attributes(&msg.system_attributes)?;
        if size > settings.max_size {
            return Err(Error::InvalidParameterValue(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                settings.max_size
            )));
        }
        let delay_s = match msg.delay {
            Some(d) if q.fifo => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value {} for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
                    d.as_secs()
                )))
            }
            Some(d) if d.as_secs() > 900 => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value {} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900.",
                    d.as_secs()
                )))
            }
            Some(d) => d.as_secs(),
            None => settings.delay_s,
        };
        let (dedup_id, sequence_number) = if q.fifo {
            if msg.group_id.as_deref().is_none_or(str::is_empty) {
                return Err(Error::MissingParameter("MessageGroupId".into()));
            }
            let dedup = match msg.dedup_id {
                Some(d) => d,
                None if settings.content_dedup => hex::encode(Sha256::digest(msg.body.as_bytes())),
                None => {
                    return Err(Error::InvalidParameterValue(
                        "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly"
                            .into(),
                    ))
                }
            };
            let n = next_sequence(&self.sequence, now);
            (Some(dedup), Some(format!("{n:020}")))
        } else {
            if msg.dedup_id.is_some() {
                return Err(Error::InvalidParameterValue(
                    "The request include parameter MessageDeduplicationId which is not valid for this queue type"
                        .into(),
                ));
            }
            (None, None)
        };
        let id = uuid::Uuid::new_v4().to_string();
        let sent = SentMessage {
            message_id: id.clone(),
            md5_of_body: rules::md5_hex(msg.body.as_bytes()),
            md5_of_attributes: rules::md5_of_attributes(&msg.attributes),
            md5_of_system_attributes: rules::md5_of_attributes(&msg.system_attributes),
            sequence_number: sequence_number.clone(),
        };
        let delay_ms = i64::try_from(delay_s * 1000).unwrap_or(0);
        let message = StoredMessage {
            id,
            body: msg.body,
            attributes: msg.attributes,
            system_attributes: msg.system_attributes,
            sent_ms: now,
            visible_ms: now + delay_ms,
            sender_id: self.account.clone(),
            receive_count: 0,
            first_receive_ms: None,
            group_id: msg.group_id,
            dedup_id,
            sequence_number,
            dead_letter_source: None,
            enqueued_ms: None,
        };
        Ok((sent, message))
    }

    /// Checks a message against a queue's rules and builds the row to store,
    /// for a caller that inserts it in its own transaction (an outbox:
    /// [`nimbus_store::insert_message`], then [`Queues::adopt`]). FIFO
    /// deduplication does not apply to messages sent this way.
    pub fn prepare_outbox(&self, queue_arn: &str, msg: OutgoingMessage) -> Result<(String, StoredMessage)> {
        let q = self.by_arn(queue_arn)?;
        let name = lock(&q.doc).name.clone();
        let (_, message) = self.prepare(&q, &q.settings(), msg, now_ms())?;
        Ok((name, message))
    }

    /// Makes a message another transaction stored (with
    /// [`nimbus_store::insert_message`], as seq `seq`) receivable; call it
    /// after that commit. A crash before the call is covered by the next
    /// start, which loads every stored message.
    pub fn adopt(&self, queue_arn: &str, seq: i64, message: StoredMessage) -> Result<()> {
        let q = self.by_arn(queue_arn)?;
        lock(&q.messages).insert(Live::new(seq, without_payload(message)));
        q.notify.notify_waiters();
        Ok(())
    }

    /// Ends every receive's wait now, and every later one at its first
    /// look: the node is stopping, its listener is closed, so no message
    /// can arrive, and a stop would otherwise wait out each long poll.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for q in self.queues.read().unwrap_or_else(|e| e.into_inner()).values() {
            q.notify.notify_waiters();
        }
    }

    /// Receives up to `max` (1–10) messages, waiting up to `wait` for the
    /// first; `visibility` overrides the queue's VisibilityTimeout.
    pub async fn receive(
        &self,
        queue_arn: &str,
        max: u32,
        visibility: Option<Duration>,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut q = self.by_arn(queue_arn)?;
        loop {
            let notify = q.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, next) = self.take(&q, max, visibility).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline || self.closed.load(Ordering::SeqCst) {
                return Ok(got);
            }
            let wake = next
                .map(|at| {
                    let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                    (tokio::time::Instant::now() + Duration::from_millis(ms)).min(deadline)
                })
                .unwrap_or(deadline);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            match self.by_arn(queue_arn) {
                Ok(again) => q = again,
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    /// One receive attempt; also when the next message becomes visible.
    async fn take(
        &self,
        q: &Queue,
        max: u32,
        visibility: Option<Duration>,
    ) -> Result<(Vec<ReceivedMessage>, Option<i64>)> {
        let settings = q.settings();
        let dlq = settings.redrive.as_ref().and_then(|p| self.by_arn(&p.dead_letter_target_arn).ok());
        let now = now_ms();
        let rules = TakeRules {
            now,
            max: usize::try_from(max).unwrap_or(10),
            visibility_ms: i64::try_from(visibility.map_or(settings.visibility_s * 1000, |d| d.as_millis() as u64))
                .unwrap_or(0),
            retention_ms: settings.retention_s * 1000,
            max_receives: dlq.as_ref().and(settings.redrive.as_ref().map(|p| p.max_receive_count)),
        };
        let (taken, next) = {
            let mut m = lock(&q.messages);
            // Random, so that a receipt handle cannot be made up: one
            // deletes only the message it names as of its latest receive.
            let taken = m.take(rules, rand::random::<u64>);
            let next = m.next_visible(now);
            (taken, next)
        };
        let name = lock(&q.doc).name.clone();
        let mut writes: Vec<MessageWrite> = taken.expired.iter().map(|&seq| MessageWrite::Delete { seq }).collect();
        writes.extend(taken.received.iter().map(|l| MessageWrite::Received {
            seq: l.seq,
            receive_count: l.message.receive_count,
            first_receive_ms: l.message.first_receive_ms.unwrap_or(now),
            in_flight: nimbus_store::InFlight {
                receipt: l.receipt.unwrap_or_default(),
                received_ms: l.received_at,
                until_ms: l.visible_at,
            },
        }));
        self.write_behind(writes);
        if let (Some(dlq), false) = (dlq, taken.dead.is_empty()) {
            let this = self.me.upgrade().expect("the engine is shared from `open`");
            // In a task of its own: the messages are out of the source's
            // memory, and must reach the dead-letter queue's even if this
            // receive is dropped (its client gone).
            let source = q.arn.clone();
            let moving = taken.dead;
            // A FIFO dead-letter queue keeps a message its own retention
            // period from the move; a standard one from the send (AWS).
            let reset = dlq.fifo.then(now_ms);
            tokio::spawn(async move {
                this.transfer(&dlq, moving, |m| {
                    m.dead_letter_source = Some(source.clone());
                    m.enqueued_ms = reset.or(m.enqueued_ms);
                })
                .await
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        }
        let received = self
            .with_payloads(Some(q), taken.received)
            .await?
            .into_iter()
            .map(|l| self.received(&name, q.fifo, l))
            .collect();
        Ok((received, next))
    }

    /// `messages` with their payloads, those memory left out read from the
    /// store. Every message in memory was stored first; one the store no
    /// longer has was removed meanwhile (a purge committed after a send's
    /// commit but before the send put it in memory, its queue's deletion),
    /// and is left out, and taken out of `queue`'s memory, where it would
    /// otherwise be received again at every visibility timeout, never to
    /// be delivered (blocking its FIFO group).
    async fn with_payloads(&self, queue: Option<&Queue>, messages: Vec<Live>) -> Result<Vec<Live>> {
        // A body is never empty (SendMessage refuses one): an empty one was left on disk.
        let seqs: Vec<i64> = messages.iter().filter(|l| l.message.body.is_empty()).map(|l| l.seq).collect();
        if seqs.is_empty() {
            return Ok(messages);
        }
        let mut stored = self.meta.message_payloads(&seqs).await?;
        let mut gone = Vec::new();
        let whole = messages
            .into_iter()
            .filter_map(|mut l| {
                if l.message.body.is_empty() {
                    let Some(payload) = stored.remove(&l.seq) else {
                        gone.push(l.seq);
                        return None;
                    };
                    l.message.body = payload.body;
                    l.message.attributes = payload.attributes;
                    l.message.system_attributes = payload.system_attributes;
                }
                Some(l)
            })
            .collect();
        if let (Some(q), false) = (queue, gone.is_empty()) {
            let mut m = lock(&q.messages);
            for seq in gone {
                m.remove(seq);
            }
        }
        Ok(whole)
    }

    /// Moves messages (already taken out of their queue's memory) to `to`,
    /// in one transaction.
    async fn transfer(&self, to: &Queue, moving: Vec<Live>, edit: impl Fn(&mut StoredMessage)) -> Result<()> {
        let to_name = lock(&to.doc).name.clone();
        let now = now_ms();
        let mut writes = Vec::with_capacity(moving.len() * 2);
        let mut messages = Vec::with_capacity(moving.len());
        for l in self.with_payloads(None, moving).await? {
            let mut m = l.message;
            edit(&mut m);
            m.visible_ms = now;
            writes.push(MessageWrite::Delete { seq: l.seq });
            writes.push(MessageWrite::Insert { queue: to_name.clone(), message: Box::new(m.clone()) });
            messages.push(without_payload(m));
        }
        let seqs = self.write(writes).await?;
        {
            let mut dest = lock(&to.messages);
            for (m, seq) in messages.into_iter().zip(seqs) {
                dest.insert(Live::new(seq, m));
            }
        }
        to.notify.notify_waiters();
        Ok(())
    }

    fn received(&self, queue_name: &str, fifo: bool, l: Live) -> ReceivedMessage {
        let m = l.message;
        let mut attributes = BTreeMap::new();
        attributes.insert("SenderId".to_string(), m.sender_id.clone());
        attributes.insert("SentTimestamp".to_string(), m.sent_ms.to_string());
        attributes.insert("ApproximateReceiveCount".to_string(), m.receive_count.to_string());
        attributes.insert(
            "ApproximateFirstReceiveTimestamp".to_string(),
            m.first_receive_ms.unwrap_or(m.sent_ms).to_string(),
        );
        if fifo {
            attributes.extend(m.group_id.clone().map(|g| ("MessageGroupId".to_string(), g)));
            attributes.extend(m.dedup_id.clone().map(|d| ("MessageDeduplicationId".to_string(), d)));
            attributes.extend(m.sequence_number.clone().map(|s| ("SequenceNumber".to_string(), s)));
        }
        if let Some(trace) = m.system_attributes.get("AWSTraceHeader").and_then(|v| v.string.clone()) {
            attributes.insert("AWSTraceHeader".to_string(), trace);
        }
        if let Some(src) = &m.dead_letter_source {
            attributes.insert("DeadLetterQueueSourceArn".to_string(), src.clone());
        }
        ReceivedMessage {
            message_id: m.id,
            receipt_handle: receipt_handle(queue_name, l.seq, l.receipt.unwrap_or(0)),
            md5_of_body: rules::md5_hex(m.body.as_bytes()),
            body: m.body,
            md5_of_attributes: rules::md5_of_attributes(&m.attributes),
            message_attributes: m.attributes,
            attributes,
        }
    }

    /// Deletes messages by receipt handle, durably, in one transaction;
    /// one result per handle. A handle of a message already gone, or of an
    /// earlier receive of one received again since, succeeds and deletes
    /// nothing, as on AWS ("the request succeeds, but the message might
    /// not be deleted").
    ///
    /// A FIFO queue refuses the handle of a receive whose visibility
    /// timeout has passed (the message may be another consumer's by now),
    /// and a delete there may free the next message of its group, so
    /// waiting receives are woken.
    pub async fn delete(&self, queue_arn: &str, receipt_handles: &[String]) -> Result<Vec<Result<()>>> {
        let q = self.by_arn(queue_arn)?;
        let name = lock(&q.doc).name.clone();
        let now = now_ms();
        let mut results = Vec::with_capacity(receipt_handles.len());
        let mut writes = Vec::new();
        {
            let mut m = lock(&q.messages);
            for h in receipt_handles {
                match parse_receipt(h).filter(|(queue, ..)| *queue == name) {
                    Some((_, seq, receipt)) => {
                        // Only this queue's message, as of this receive:
                        // sequence numbers are the node's, not the queue's.
                        match m.get(seq).filter(|l| l.receipt == Some(receipt)) {
                            Some(l) if q.fifo && !l.in_flight(now) => {
                                results.push(Err(Error::InvalidParameterValue(format!(
                                    "Value {h} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
                                ))));
                                continue;
                            }
                            Some(_) => {
                                m.remove(seq);
                                writes.push(MessageWrite::Delete { seq });
                            }
                            None => {}
                        }
                        results.push(Ok(()));
                    }
                    None => results.push(Err(Error::ReceiptHandleIsInvalid(h.clone()))),
                }
            }
        }
        if !writes.is_empty() {
            self.write(writes).await?;
            if q.fifo {
                q.notify.notify_waiters();
            }
        }
        Ok(results)
    }

    /// Changes an in-flight message's remaining visibility timeout.
    pub async fn change_visibility(&self, queue_arn: &str, receipt_handle: &str, timeout: Duration) -> Result<()> {
        if timeout.as_secs() > 43_200 {
            return Err(Error::InvalidParameterValue(format!(
                "Value {} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200.",
                timeout.as_secs()
            )));
        }
        let q = self.by_arn(queue_arn)?;
        let name = lock(&q.doc).name.clone();
        let Some((_, seq, receipt)) = parse_receipt(receipt_handle).filter(|(queue, ..)| *queue == name) else {
            return Err(Error::ReceiptHandleIsInvalid(receipt_handle.to_string()));
        };
        let now = now_ms();
        let visible_at = {
            let mut m = lock(&q.messages);
            let received_at = match m.get(seq) {
                Some(l) if l.receipt == Some(receipt) && l.in_flight(now) => l.received_at,
                // Its timeout over and not received since: AWS answers OK
                // and changes nothing (the message stays visible).
                Some(l) if l.receipt == Some(receipt) => return Ok(()),
                // Deleted, or received again under another handle. AWS's
                // model names MessageNotInflight, but SQS answers this.
                _ => {
                    return Err(Error::InvalidParameterValue(format!(
                        "Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: Message does not \
                         exist or is not available for visibility timeout change."
                    )))
                }
            };
            let visible_at = now + i64::try_from(timeout.as_millis()).unwrap_or(0);
            // At most 12 hours from the receive in all, as on AWS.
            if visible_at - received_at > 43_200_000 {
                return Err(Error::InvalidParameterValue(format!(
                    "Value {} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]",
                    timeout.as_secs()
                )));
            }
            m.set_visible_at(seq, visible_at);
            visible_at
        };
        self.write_behind(vec![MessageWrite::Invisible { seq, receipt, until_ms: visible_at }]);
        q.notify.notify_waiters();
        Ok(())
    }
}

/// The largest payload (body and attributes) memory keeps; a larger one is
/// only in the store, and read from it when its message is received or
/// moved. Most messages are smaller, and reading theirs would cost a
/// receive a quarter of its throughput (BENCHMARKS "Session 25").
const PAYLOAD_IN_MEMORY_MAX: usize = 8 << 10;

/// The most payload memory holds for all queues (see [`state::PayloadBudget`]).
const PAYLOADS_IN_MEMORY_MAX: usize = 256 << 20;

/// A message as memory keeps it: a payload over [`PAYLOAD_IN_MEMORY_MAX`]
/// (up to 1 MiB) is left out, and its body left empty.
fn without_payload(mut m: StoredMessage) -> StoredMessage {
    if state::payload_size(&m) > PAYLOAD_IN_MEMORY_MAX {
        state::strip_payload(&mut m);
    }
    m
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > 50 {
        return Err(Error::InvalidParameterValue("Too many tags added for queue.".into()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(Error::InvalidParameterValue(format!("Tag key or value is invalid: {k}")));
        }
    }
    Ok(())
}

fn receipt_handle(queue: &str, seq: i64, receipt: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{queue}\n{seq}\n{receipt}"))
}

fn parse_receipt(handle: &str) -> Option<(String, i64, u64)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(handle).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split('\n');
    let (queue, seq, receipt) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then(|| (queue.to_string(), seq, receipt))
}

/// The writer task: gathers every job queued meanwhile into one
/// transaction (group commit), then answers each.
async fn write_behind(meta: Arc<dyn QueueMeta>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let writes: Vec<MessageWrite> = batch.iter().flat_map(|j| j.writes.iter().cloned()).collect();
        let result = meta.apply_messages(&writes).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "writing queue messages");
        }
        let mut seqs = result.as_ref().map(|s| s.iter().copied()).ok();
        for job in batch {
            let inserts = job.writes.iter().filter(|w| matches!(w, MessageWrite::Insert { .. })).count();
            let answer = match (&mut seqs, &result) {
                (Some(it), Ok(_)) => Ok(it.by_ref().take(inserts).collect()),
                (_, Err(e)) => Err(Error::Internal(e.to_string())),
                (None, Ok(_)) => Err(Error::Internal("lost results".into())),
            };
            if let Some(done) = job.done {
                let _ = done.send(answer);
            }
        }
    }
}

/// The next FIFO sequence number: above every number given before, and at
/// least the clock's milliseconds times 1,000, so that numbers keep rising
/// across restarts. One atomic step: two sends in the same millisecond
/// never take the same number.
fn next_sequence(last: &AtomicU64, now_ms: i64) -> u64 {
    let floor = u64::try_from(now_ms).unwrap_or(0) * 1000;
    let next = |n: u64| (n + 1).max(floor);
    let (Ok(before) | Err(before)) = last.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(next(n)));
    next(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine() -> (tempfile::TempDir, Arc<Queues>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        let q = Queues::open(meta, "us-east-1", "123456789012").await.unwrap();
        (dir, q)
    }

    fn text(body: &str) -> OutgoingMessage {
        OutgoingMessage { body: body.into(), ..Default::default() }
    }

    #[test]
    fn sequence_numbers_racing_at_a_new_millisecond_are_unique() {
        // Each round's clock is past every number given: all its threads are
        // raised to it at once (two of them took the same number).
        let last = AtomicU64::new(0);
        let threads = 4;
        let barrier = std::sync::Barrier::new(threads);
        let mut numbers: Vec<u64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        (1..=2_000)
                            .map(|round| {
                                barrier.wait();
                                next_sequence(&last, round * 1_000_000)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        let all = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), all);
    }

    #[tokio::test]
    async fn fifo_deduplicates_by_id_and_by_content() {
        let (_dir, qs) = engine().await;
        let attrs = BTreeMap::from([
            ("FifoQueue".to_string(), "true".to_string()),
            ("ContentBasedDeduplication".to_string(), "true".to_string()),
        ]);
        let q = qs.create_queue("f.fifo", &attrs, &BTreeMap::new()).await.unwrap();
        let msg = |body: &str, dedup: Option<&str>| OutgoingMessage {
            group_id: Some("g".into()),
            dedup_id: dedup.map(str::to_string),
            ..text(body)
        };
        let a = qs.send(&q.arn, msg("one", Some("d1"))).await.unwrap();
        let b = qs.send(&q.arn, msg("other body", Some("d1"))).await.unwrap();
        assert_eq!(a.message_id, b.message_id);
        let c = qs.send(&q.arn, msg("two", None)).await.unwrap();
        let d = qs.send(&q.arn, msg("two", None)).await.unwrap();
        assert_eq!(c.message_id, d.message_id);
        let got = qs.receive(&q.arn, 10, None, Duration::ZERO).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two"]);
        assert!(got[0].attributes["SequenceNumber"] < got[1].attributes["SequenceNumber"]);
    }

    #[tokio::test]
    async fn a_large_payload_is_read_from_disk_and_a_message_gone_from_disk_leaves_memory() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        let qs = Queues::open(meta.clone(), "us-east-1", "123456789012").await.unwrap();
        let attrs = BTreeMap::from([("FifoQueue".to_string(), "true".to_string())]);
        let q = qs.create_queue("f.fifo", &attrs, &BTreeMap::new()).await.unwrap();
        let big = "b".repeat(PAYLOAD_IN_MEMORY_MAX + 1);
        let msg = |body: &str, dedup: &str| OutgoingMessage {
            group_id: Some("g".into()),
            dedup_id: Some(dedup.into()),
            ..text(body)
        };
        qs.send(&q.arn, msg(&big, "1")).await.unwrap();
        qs.send(&q.arn, msg("small", "2")).await.unwrap();
        let queue = qs.by_arn(&q.arn).unwrap();
        let bodies: Vec<usize> = lock(&queue.messages).iter().map(|l| l.message.body.len()).collect();
        assert_eq!(bodies, [0, 5], "the large body is on disk only");
        let got = qs.receive(&q.arn, 1, Some(Duration::ZERO), Duration::ZERO).await.unwrap();
        assert_eq!(got[0].body, big);
        // Gone from disk (as a purge committed after the send's commit
        // leaves it): dropped from memory at its receive, and the group
        // goes on to its next message instead of blocking on it.
        let seq = lock(&queue.messages).iter().next().unwrap().seq;
        meta.apply_messages(&[MessageWrite::Delete { seq }]).await.unwrap();
        let got = qs.receive(&q.arn, 1, Some(Duration::ZERO), Duration::ZERO).await.unwrap();
        assert!(got.is_empty());
        let got = qs.receive(&q.arn, 1, None, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["small"]);
    }

    #[tokio::test]
    async fn messages_past_their_retention_are_removed_though_nobody_receives() {
        let (dir, qs) = engine().await;
        let attrs = BTreeMap::from([("MessageRetentionPeriod".to_string(), "60".to_string())]);
        let q = qs.create_queue("q", &attrs, &BTreeMap::new()).await.unwrap();
        qs.send(&q.arn, text("old")).await.unwrap();
        qs.expire(now_ms() + 59_000).await.unwrap();
        assert_eq!(lock(&qs.named("q").unwrap().messages).len(), 1, "not yet");
        qs.expire(now_ms() + 61_000).await.unwrap();
        assert_eq!(lock(&qs.named("q").unwrap().messages).len(), 0);
        drop(qs);
        let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        assert!(meta.messages_after(None, 0, 10).await.unwrap().is_empty(), "nor kept on disk");
    }

    #[tokio::test]
    async fn a_waiting_receive_wakes_on_send_and_messages_survive_reopening() {
        let (dir, qs) = engine().await;
        let q = qs.create_queue("q", &BTreeMap::new(), &BTreeMap::new()).await.unwrap();
        let waiter = {
            let (qs, arn) = (qs.clone(), q.arn.clone());
            tokio::spawn(async move { qs.receive(&arn, 1, None, Duration::from_secs(20)).await })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        qs.send(&q.arn, text("hello")).await.unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].body, "hello");
        let hello = got[0].receipt_handle.clone();
        assert!(started.elapsed() < Duration::from_secs(5));
        qs.send(&q.arn, text("kept")).await.unwrap();
        drop(qs);
        let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        let again = Queues::open(meta, "us-east-1", "123456789012").await.unwrap();
        let got = again.receive(&q.arn, 10, None, Duration::ZERO).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        // In flight before the restart (the send after it committed its receive) and after, as on AWS.
        assert_eq!(bodies, ["kept"]);
        // Its receipt handle still deletes it.
        assert!(again.delete(&q.arn, &[hello]).await.unwrap()[0].is_ok());
        assert_eq!(again.attributes(&q.arn).unwrap()["ApproximateNumberOfMessagesNotVisible"], "1");
    }
}
