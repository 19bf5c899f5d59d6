//! CloudWatch Logs' rules over the one log store that functions' lines (and
//! containers' `awslogs` lines) go to: log groups and streams, PutLogEvents'
//! batch rules, GetLogEvents' forward and backward tokens, FilterLogEvents
//! with AWS's filter patterns ([`pattern`]), and retention, enforced by one
//! task that sleeps until the next event expires.
//!
//! This crate owns those rules and the wording of their errors. It does not
//! speak HTTP (the `logs` front in `nimbus-api` does) and keeps nothing but
//! through [`nimbus_store::LogMeta`]. Values the model constrains (name
//! patterns, lengths, limits' ranges) are checked by the front from AWS's
//! model before they get here.

pub mod pattern;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use nimbus_store::{EventQuery, LogMeta, Position, Retagged, StreamCreated, StreamOrder};
use tokio::sync::Notify;

pub use nimbus_store::{LogEvent, LogGroupRow, LogStreamRow, StreamOrder as OrderBy};
pub use pattern::{InvalidPattern, Pattern};

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The retention periods AWS accepts, in days.
pub const RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
/// PutLogEvents: at most this many bytes, counting each message in UTF-8
/// plus [`EVENT_OVERHEAD`].
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD: usize = 26;
/// PutLogEvents: events older than this are rejected.
const TOO_OLD_MS: i64 = 14 * DAY_MS;
/// PutLogEvents: events further in the future than this are rejected.
const TOO_NEW_MS: i64 = 2 * HOUR_MS;
/// PutLogEvents: the accepted events of a batch span at most this.
const MAX_SPAN_MS: i64 = DAY_MS;
/// A page of GetLogEvents or FilterLogEvents holds at most this many
/// events and [`MAX_BATCH_BYTES`].
const MAX_EVENTS: usize = 10_000;
/// FilterLogEvents reads the store in chunks of this many events and stops
/// after the chunk that ends [`SCAN_BUDGET`] with a token, as AWS answers
/// partial pages.
const SCAN_CHUNK: usize = 2_000;
/// ... or of this many bytes of messages, whichever comes first.
const SCAN_CHUNK_BYTES: usize = 4 << 20;
const SCAN_BUDGET: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("log store: {0}")]
    Store(#[from] nimbus_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidParameter(message.into())
}

fn no_group() -> Error {
    Error::NotFound("The specified log group does not exist.".into())
}

fn no_stream() -> Error {
    Error::NotFound("The specified log stream does not exist.".into())
}

fn bad_token() -> Error {
    invalid("The specified nextToken is invalid.")
}

/// A page of a Describe operation.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// DescribeLogStreams' question.
#[derive(Debug, Default)]
pub struct StreamsQuery<'a> {
    pub group: &'a str,
    pub prefix: Option<&'a str>,
    pub order_by: Option<OrderBy>,
    pub descending: bool,
    pub next_token: Option<&'a str>,
    pub limit: Option<usize>,
}

/// An event as PutLogEvents receives it.
#[derive(Debug, Clone)]
pub struct InputEvent {
    pub timestamp_ms: i64,
    pub message: String,
}

/// What PutLogEvents refused of a batch; indexes are into the batch, the
/// end indexes exclusive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub too_new_start: Option<usize>,
    pub too_old_end: Option<usize>,
    pub expired_end: Option<usize>,
}

#[derive(Debug)]
pub struct PutOutcome {
    pub rejected: Rejected,
    /// Ignored by the next call, as AWS ignores sequence tokens now.
    pub next_sequence_token: String,
}

/// GetLogEvents' question.
#[derive(Debug, Default)]
pub struct GetQuery<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub next_token: Option<&'a str>,
    pub limit: Option<usize>,
    pub start_from_head: bool,
}

#[derive(Debug)]
pub struct GetPage {
    pub events: Vec<LogEvent>,
    pub next_forward_token: String,
    pub next_backward_token: String,
}

/// FilterLogEvents' question.
#[derive(Debug, Default)]
pub struct FilterQuery<'a> {
    pub group: &'a str,
    pub streams: Option<&'a [String]>,
    pub stream_prefix: Option<&'a str>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub pattern: Option<&'a str>,
    pub next_token: Option<&'a str>,
    pub limit: Option<usize>,
}

#[derive(Debug)]
pub struct FilterPage {
    pub events: Vec<LogEvent>,
    pub next_token: Option<String>,
}

/// The CloudWatch Logs engine of a node.
pub struct Logs {
    meta: Arc<dyn LogMeta>,
    region: String,
    account: String,
    /// Wakes the retention task when an earlier expiry may exist.
    expiry: Arc<Notify>,
    /// Live tail sessions that may be open at once (each is woken, and
    /// reads the store, at every commit of events).
    tails: Arc<tokio::sync::Semaphore>,
}

/// Live tail sessions open at once, per account, as AWS allows.
pub const LIVE_TAILS_MAX: usize = 15;

/// Tags a log group may have, as AWS allows.
pub const TAGS_MAX: usize = 50;

/// AWS's rules for a log group's tags: keys of 1 to 128 characters not
/// starting with `aws:`, values of up to 256.
fn check_tags<'a>(keys: impl Iterator<Item = &'a String>, values: impl Iterator<Item = &'a String>) -> Result<()> {
    for k in keys {
        if k.is_empty() || k.chars().count() > 128 || k.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!("Invalid tag key: {k}")));
        }
    }
    match values.into_iter().find(|v| v.chars().count() > 256) {
        Some(v) => Err(invalid(format!("Invalid tag value: {v}"))),
        None => Ok(()),
    }
}

/// The name a log group identifier (its name, or its ARN with or without
/// `:*`) names.
pub fn group_name(identifier: &str) -> &str {
    match identifier.split_once(":log-group:") {
        Some((_, rest)) => rest.strip_suffix(":*").unwrap_or(rest),
        None => identifier,
    }
}

impl Logs {
    /// The engine, with its retention task running.
    pub fn open(meta: Arc<dyn LogMeta>, region: &str, account: &str) -> Arc<Self> {
        let expiry = Arc::new(Notify::new());
        tokio::spawn(enforce_retention(meta.clone(), expiry.clone()));
        let tails = Arc::new(tokio::sync::Semaphore::new(LIVE_TAILS_MAX));
        Arc::new(Self { meta, region: region.into(), account: account.into(), expiry, tails })
    }

    /// `arn:aws:logs:<region>:<account>:log-group:<name>` (Describe adds `:*`).
    pub fn group_arn(&self, name: &str) -> String {
        format!("arn:aws:logs:{}:{}:log-group:{name}", self.region, self.account)
    }

    pub fn stream_arn(&self, group: &str, stream: &str) -> String {
        format!("{}:log-stream:{stream}", self.group_arn(group))
    }

    /// The group a tagging request's `resourceArn` names: one of this
    /// node's log groups (`…:log-group:<name>`, with or without `:*`).
    pub fn group_of_arn(&self, arn: &str) -> Result<String> {
        let prefix = format!("arn:aws:logs:{}:{}:log-group:", self.region, self.account);
        match arn.strip_prefix(&prefix) {
            Some(rest) if !rest.is_empty() => Ok(rest.strip_suffix(":*").unwrap_or(rest).to_string()),
            _ if arn.starts_with("arn:") && arn.split(':').count() >= 6 => {
                Err(Error::NotFound(format!("The specified resource does not exist: {arn}")))
            }
            _ => Err(invalid(format!("Invalid resource arn: {arn}"))),
        }
    }

    /// A log group's tags.
    pub async fn tags(&self, group: &str) -> Result<BTreeMap<String, String>> {
        Ok(self.meta.log_group(group).await?.ok_or_else(no_group)?.tags)
    }

    /// Adds `add` to a log group's tags and removes `remove`, at once.
    pub async fn retag(&self, group: &str, add: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        check_tags(add.keys(), add.values())?;
        match self.meta.retag_log_group(group, add, remove, TAGS_MAX).await? {
            None => Err(no_group()),
            Some(Retagged::TooMany) => {
                Err(Error::TooManyTags(format!("A resource can have no more than {TAGS_MAX} tags: {group}")))
            }
            Some(Retagged::Done(_)) => Ok(()),
        }
    }

    /// The group a request names, by `logGroupName` or `logGroupIdentifier`
    /// (a name or an ARN, with or without `:*`): exactly one of them.
    pub fn group_of(&self, name: Option<String>, identifier: Option<String>) -> Result<String> {
        match (name, identifier) {
            (Some(_), Some(_)) => Err(invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")),
            (Some(n), None) => Ok(n),
            (None, Some(id)) => Ok(group_name(&id).to_string()),
            (None, None) => Err(invalid("Should provide either a log group name or a log group ARN.")),
        }
    }

    pub async fn create_log_group(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        check_tags(tags.keys(), tags.values())?;
        if tags.len() > TAGS_MAX {
            return Err(Error::TooManyTags(format!("A resource can have no more than {TAGS_MAX} tags: {name}")));
        }
        if !self.meta.create_log_group(name, now_ms(), tags).await? {
            return Err(Error::AlreadyExists("The specified log group already exists".into()));
        }
        Ok(())
    }

    pub async fn delete_log_group(&self, name: &str) -> Result<()> {
        self.meta.delete_log_group(name).await?.then_some(()).ok_or_else(no_group)
    }

    pub async fn describe_log_groups(
        &self,
        prefix: Option<&str>,
        pattern: Option<&str>,
        next_token: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page<LogGroupRow>> {
        if prefix.is_some() && pattern.is_some() {
            return Err(invalid("LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."));
        }
        let after = next_token.map(|t| decode_token(t).ok_or_else(bad_token)).transpose()?;
        // The model's minimum is 1; a 0 that reached here must not index before the first item.
        let limit = limit.unwrap_or(50).max(1);
        let mut items = self.meta.list_log_groups(prefix, pattern, after.as_deref(), limit + 1).await?;
        let next_token = (items.len() > limit).then(|| {
            items.truncate(limit);
            encode_token(&items[limit - 1].name)
        });
        Ok(Page { items, next_token })
    }

    pub async fn put_retention_policy(&self, group: &str, days: i64) -> Result<()> {
        if !RETENTION_DAYS.iter().any(|d| i64::from(*d) == days) {
            let values: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
            return Err(invalid(format!(
                "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: \
                 Member must satisfy enum value set: [{}]",
                values.join(", ")
            )));
        }
        self.meta.set_retention(group, Some(days as u32)).await?.then_some(()).ok_or_else(no_group)?;
        self.expiry.notify_one();
        Ok(())
    }

    pub async fn delete_retention_policy(&self, group: &str) -> Result<()> {
        self.meta.set_retention(group, None).await?.then_some(()).ok_or_else(no_group)
    }

    pub async fn create_log_stream(&self, group: &str, stream: &str) -> Result<()> {
        match self.meta.create_log_stream(group, stream, now_ms()).await? {
            StreamCreated::Created => Ok(()),
            StreamCreated::Exists => Err(Error::AlreadyExists("The specified log stream already exists".into())),
            StreamCreated::NoGroup => Err(no_group()),
        }
    }

    pub async fn delete_log_stream(&self, group: &str, stream: &str) -> Result<()> {
        self.meta.log_group(group).await?.ok_or_else(no_group)?;
        self.meta.delete_log_stream(group, stream).await?.then_some(()).ok_or_else(no_stream)
    }

    pub async fn describe_log_streams(&self, q: StreamsQuery<'_>) -> Result<Page<LogStreamRow>> {
        let order = q.order_by.unwrap_or(StreamOrder::Name);
        if order == StreamOrder::LastEvent && q.prefix.is_some() {
            return Err(invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
        }
        self.meta.log_group(q.group).await?.ok_or_else(no_group)?;
        let after = match q.next_token {
            None => None,
            Some(t) => {
                let raw = decode_token(t).ok_or_else(bad_token)?;
                let (key, name) = raw.split_once('\n').ok_or_else(bad_token)?;
                Some((key.parse::<i64>().map_err(|_| bad_token())?, name.to_string()))
            }
        };
        let limit = q.limit.unwrap_or(50).max(1);
        let query = nimbus_store::StreamQuery {
            group: q.group,
            prefix: q.prefix,
            order,
            descending: q.descending,
            after,
            limit: limit + 1,
        };
        let mut items = self.meta.list_log_streams(query).await?;
        let next_token = (items.len() > limit).then(|| {
            items.truncate(limit);
            let last = &items[limit - 1];
            let key = match order {
                StreamOrder::Name => 0,
                StreamOrder::LastEvent => last.last_event_ms.unwrap_or(-1),
            };
            encode_token(&format!("{key}\n{}", last.name))
        });
        Ok(Page { items, next_token })
    }

    /// PutLogEvents: checks the batch as AWS does, then stores the events
    /// that are neither too old, expired nor too new, in one transaction.
    pub async fn put_log_events(&self, group: &str, stream: &str, events: &[InputEvent]) -> Result<PutOutcome> {
        let bytes: usize = events.iter().map(|e| e.message.len() + EVENT_OVERHEAD).sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(invalid(format!("Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}")));
        }
        if events.windows(2).any(|w| w[1].timestamp_ms < w[0].timestamp_ms) {
            return Err(invalid("Log events in a single PutLogEvents request must be in chronological order."));
        }
        let retention = self.meta.log_group(group).await?.ok_or_else(no_group)?.retention_days;
        self.meta.log_stream(group, stream).await?.ok_or_else(no_stream)?;
        let now = now_ms();
        let too_old = events.partition_point(|e| e.timestamp_ms < now - TOO_OLD_MS);
        let expired = retention.map_or(0, |d| events.partition_point(|e| e.timestamp_ms < now - i64::from(d) * DAY_MS));
        let too_new = events.partition_point(|e| e.timestamp_ms <= now + TOO_NEW_MS);
        let accepted = events.get(too_old.max(expired)..too_new).unwrap_or_default();
        if let (Some(first), Some(last)) = (accepted.first(), accepted.last()) {
            if last.timestamp_ms - first.timestamp_ms > MAX_SPAN_MS {
                return Err(invalid(
                    "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
                ));
            }
            let rows: Vec<(i64, String)> = accepted.iter().map(|e| (e.timestamp_ms, e.message.clone())).collect();
            // Deleted since the checks above: as if it had been before.
            if !self.meta.append_log_events(group, stream, &rows, now).await? {
                return Err(no_stream());
            }
            if retention.is_some() {
                self.expiry.notify_one();
            }
        }
        let rejected = Rejected {
            too_new_start: (too_new < events.len()).then_some(too_new),
            too_old_end: (too_old > 0).then_some(too_old),
            expired_end: (expired > too_old).then_some(expired),
        };
        Ok(PutOutcome { rejected, next_sequence_token: format!("{now:056}") })
    }

    /// What the `awslogs` driver of containers does before writing: makes
    /// the stream (and, with `create_group`, its group) if missing.
    pub async fn ensure_stream(&self, group: &str, stream: &str, create_group: bool) -> Result<()> {
        if create_group {
            self.meta.create_log_group(group, now_ms(), &BTreeMap::new()).await?;
        }
        match self.meta.create_log_stream(group, stream, now_ms()).await? {
            StreamCreated::Created | StreamCreated::Exists => Ok(()),
            StreamCreated::NoGroup => Err(no_group()),
        }
    }

    /// GetLogEvents: a page of one stream, in time order. Without a token
    /// it is the stream's first events (`startFromHead`) or its last; a
    /// forward token (`f/…`) reads on after the page it came with, a
    /// backward token (`b/…`) the events before it. At either end the token
    /// given is the token returned.
    pub async fn get_log_events(&self, q: GetQuery<'_>) -> Result<GetPage> {
        self.meta.log_group(q.group).await?.ok_or_else(no_group)?;
        self.meta.log_stream(q.group, q.stream).await?.ok_or_else(no_stream)?;
        let start: Position = (q.start_ms.unwrap_or(0), 0);
        let end: Position = (q.end_ms.unwrap_or(i64::MAX), 0);
        let (backward, from) = match q.next_token {
            None if q.start_from_head => (false, start),
            None => (true, end),
            Some(t) => match (t.strip_prefix("f/"), t.strip_prefix("b/")) {
                (Some(p), _) => (false, decode_position(p).ok_or_else(bad_token)?.max(start)),
                (_, Some(p)) => (true, decode_position(p).ok_or_else(bad_token)?.min(end)),
                _ => return Err(bad_token()),
            },
        };
        let streams = [q.stream.to_string()];
        let (after, before) = if backward { (start, from) } else { (from, end) };
        let query = EventQuery {
            group: q.group,
            streams: Some(&streams),
            stream_prefix: None,
            after,
            before,
            backward,
            contains: &[],
            limit: q.limit.unwrap_or(MAX_EVENTS),
            max_bytes: MAX_BATCH_BYTES,
        };
        let mut events = self.meta.read_log_events(query).await?;
        if backward {
            // Keep the newest of what fits in a page.
            events.reverse();
            cap_bytes(&mut events);
            events.reverse();
        } else {
            cap_bytes(&mut events);
        }
        let first = events.first().map_or(from, position);
        // Nothing before the end: reading forward later starts at the
        // beginning (an end-of-time position would never see new events).
        let last = events.last().map_or(if backward { start } else { from }, position);
        Ok(GetPage {
            events,
            next_forward_token: format!("f/{}", encode_position(last)),
            next_backward_token: format!("b/{}", encode_position(first)),
        })
    }

    /// FilterLogEvents: a group's events in time order (startTime and
    /// endTime inclusive) that match the pattern. A page ends when it is
    /// full or its time budget is spent; the token then reads on from the
    /// last event looked at, so a page may be empty and still have a token.
    pub async fn filter_log_events(&self, q: FilterQuery<'_>) -> Result<FilterPage> {
        self.filter_within(q, SCAN_BUDGET).await
    }

    async fn filter_within(&self, q: FilterQuery<'_>, budget: Duration) -> Result<FilterPage> {
        if q.streams.is_some() && q.stream_prefix.is_some() {
            return Err(invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters."));
        }
        let pattern = Pattern::parse(q.pattern.unwrap_or_default()).map_err(|e| invalid(e.to_string()))?;
        let pattern = Arc::new(pattern);
        self.meta.log_group(q.group).await?.ok_or_else(no_group)?;
        let start: Position = (q.start_ms.unwrap_or(0), 0);
        let end: Position = (q.end_ms.unwrap_or(i64::MAX - 1), i64::MAX);
        let cursor = match q.next_token {
            Some(t) => decode_position(t).ok_or_else(bad_token)?.max(start),
            None => start,
        };
        let limit = q.limit.unwrap_or(MAX_EVENTS);
        let deadline = std::time::Instant::now() + budget;
        let mut page = Scanned { events: Vec::new(), bytes: 0, cursor };
        loop {
            let query = EventQuery {
                group: q.group,
                streams: q.streams,
                stream_prefix: q.stream_prefix,
                after: page.cursor,
                before: end,
                backward: false,
                contains: pattern.required(),
                limit: SCAN_CHUNK,
                max_bytes: SCAN_CHUNK_BYTES,
            };
            let chunk = self.meta.read_log_events(query).await?;
            let read: usize = chunk.iter().map(|e| e.message.len()).sum();
            let exhausted = chunk.len() < SCAN_CHUNK && read < SCAN_CHUNK_BYTES;
            // Matching is CPU work the pattern sizes: off the async
            // workers. A chunk is matched whole before the page's time is
            // looked at: its read may have spent that time by itself (a
            // term the store looks for reads to the group's end), and
            // stopping after its first match made a page of one event,
            // each page reading the group again.
            let p = pattern.clone();
            let (scanned, full) = tokio::task::spawn_blocking(move || {
                let full = page.scan(&p, chunk, limit);
                (page, full)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            page = scanned;
            if full || exhausted || std::time::Instant::now() > deadline {
                let next_token = (full || !exhausted).then(|| encode_position(page.cursor));
                return Ok(FilterPage { events: page.events, next_token });
            }
        }
    }
}

/// A FilterLogEvents page being filled, and the last event looked at.
struct Scanned {
    events: Vec<LogEvent>,
    bytes: usize,
    cursor: Position,
}

impl Scanned {
    /// Looks at `chunk`'s events in order; true once the page is full (the
    /// rest of the chunk is read again next page).
    fn scan(&mut self, pattern: &Pattern, chunk: Vec<LogEvent>, limit: usize) -> bool {
        for e in chunk {
            self.cursor = position(&e);
            if pattern.matches(&e.message) {
                self.bytes += e.message.len() + EVENT_OVERHEAD;
                self.events.push(e);
                if self.events.len() >= limit || self.bytes >= MAX_BATCH_BYTES {
                    return true;
                }
            }
        }
        false
    }
}

/// StartLiveTail's question.
#[derive(Debug, Default)]
pub struct TailQuery<'a> {
    /// Group names (resolved from the identifiers).
    pub groups: Vec<String>,
    pub streams: Option<&'a [String]>,
    pub stream_prefixes: Option<&'a [String]>,
    pub pattern: Option<&'a str>,
}

/// A live tail: the matching events stored after it started, as they come.
pub struct LiveTail {
    meta: Arc<dyn LogMeta>,
    groups: Vec<String>,
    streams: Option<Vec<String>>,
    prefixes: Option<Vec<String>>,
    pattern: Pattern,
    after_id: i64,
    writes: tokio::sync::watch::Receiver<u64>,
    /// A StartLiveTail session's place among [`LIVE_TAILS_MAX`], given back when it ends.
    _session: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A live tail update holds at most this many events, as AWS's does.
const TAIL_BATCH: usize = 500;

impl Logs {
    /// StartLiveTail: checks the question and starts following.
    pub async fn start_live_tail(&self, q: TailQuery<'_>) -> Result<LiveTail> {
        if q.streams.is_some() && q.stream_prefixes.is_some() {
            return Err(invalid("logStreamNames and logStreamNamePrefixes are mutually exclusive parameters."));
        }
        let pattern = Pattern::parse(q.pattern.unwrap_or_default()).map_err(|e| invalid(e.to_string()))?;
        for group in &q.groups {
            self.meta.log_group(group).await?.ok_or_else(no_group)?;
        }
        let session = self.tails.clone().try_acquire_owned().map_err(|_| {
            Error::LimitExceeded(format!(
                "You have reached the maximum of {LIVE_TAILS_MAX} concurrent Live Tail sessions; end one before starting another."
            ))
        })?;
        let mut tail = self.follow(q.groups).await?;
        tail._session = Some(session);
        tail.streams = q.streams.map(<[String]>::to_vec);
        tail.prefixes = q.stream_prefixes.map(<[String]>::to_vec);
        tail.pattern = pattern;
        Ok(tail)
    }

    /// Follows every event stored in these groups from now on, whether or
    /// not they exist yet (the console tails a function before its first
    /// line, whose group appears with it).
    pub async fn follow(&self, groups: Vec<String>) -> Result<LiveTail> {
        // Subscribe before reading where to start, so no commit falls between.
        let writes = self.meta.log_writes();
        let after_id = self.meta.last_log_event_id().await?;
        Ok(LiveTail {
            meta: self.meta.clone(),
            groups,
            streams: None,
            prefixes: None,
            pattern: Pattern::All,
            after_id,
            writes,
            _session: None,
        })
    }
}

impl LiveTail {
    /// The next matching events, in the order they were stored, waiting
    /// (without polling: on the store's commit signal) until there are some.
    pub async fn next(&mut self) -> Result<Vec<LogEvent>> {
        loop {
            self.writes.borrow_and_update();
            let batch = self.meta.log_events_after(&self.groups, self.after_id, TAIL_BATCH).await?;
            let Some(last) = batch.last() else {
                if self.writes.changed().await.is_err() {
                    // The store is gone (the node is stopping).
                    std::future::pending::<()>().await;
                }
                continue;
            };
            self.after_id = last.id;
            let matched: Vec<LogEvent> = batch.into_iter().filter(|e| self.wants(e)).collect();
            if !matched.is_empty() {
                return Ok(matched);
            }
        }
    }

    fn wants(&self, e: &LogEvent) -> bool {
        self.streams.as_ref().is_none_or(|s| s.contains(&e.log_stream))
            && self.prefixes.as_ref().is_none_or(|p| p.iter().any(|p| e.log_stream.starts_with(p.as_str())))
            && self.pattern.matches(&e.message)
    }
}

/// Drops the events past the page's byte budget.
fn cap_bytes(events: &mut Vec<LogEvent>) {
    let mut bytes = 0;
    let keep = events
        .iter()
        .position(|e| {
            bytes += e.message.len() + EVENT_OVERHEAD;
            bytes > MAX_BATCH_BYTES
        })
        .unwrap_or(events.len());
    events.truncate(keep.max(1).min(events.len()));
}

fn position(e: &LogEvent) -> Position {
    (e.timestamp_ms, e.id)
}

/// Positions are tokens of 40 digits: the timestamp, then the event id.
fn encode_position((ts, id): Position) -> String {
    format!("{ts:020}{id:020}")
}

fn decode_position(t: &str) -> Option<Position> {
    if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((t[..20].parse().ok()?, t[20..].parse().ok()?))
}

fn encode_token(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(t: &str) -> Option<String> {
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok()?).ok()
}

use nimbus_core::clock::now_ms;

/// Deletes expired events, then sleeps until the next event expires (or a
/// retention or an old event may make one expire sooner).
async fn enforce_retention(meta: Arc<dyn LogMeta>, wake: Arc<Notify>) {
    loop {
        let now = now_ms();
        match meta.expire_log_events(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "expired log events removed"),
            Err(e) => tracing::error!(error = %e, "cannot remove expired log events"),
        }
        let next = match meta.next_log_expiry(now).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "cannot read when log events expire");
                None
            }
        };
        match next {
            Some(due) => {
                // Events expire strictly after their due millisecond.
                let wait = Duration::from_millis((due - now).max(0) as u64 + 1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine() -> (tempfile::TempDir, Arc<Logs>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        (dir, Logs::open(Arc::new(meta), "us-east-1", "000000000000"))
    }

    fn ev(timestamp_ms: i64, message: &str) -> InputEvent {
        InputEvent { timestamp_ms, message: message.into() }
    }

    #[tokio::test]
    async fn put_rejects_the_ends_of_a_batch_and_refuses_bad_batches_whole() {
        let (_d, logs) = engine().await;
        logs.create_log_group("g", &BTreeMap::new()).await.unwrap();
        logs.create_log_stream("g", "s").await.unwrap();
        let now = now_ms();
        let batch = [ev(now - 15 * DAY_MS, "old"), ev(now, "a"), ev(now + 1, "b"), ev(now + 3 * HOUR_MS, "new")];
        let out = logs.put_log_events("g", "s", &batch).await.unwrap();
        assert_eq!(out.rejected, Rejected { too_new_start: Some(3), too_old_end: Some(1), expired_end: None });
        for bad in [vec![ev(now, "b"), ev(now - 1, "a")], vec![ev(now - 2 * DAY_MS, "a"), ev(now, "b")]] {
            assert!(matches!(logs.put_log_events("g", "s", &bad).await, Err(Error::InvalidParameter(_))));
        }
        let q = GetQuery { group: "g", stream: "s", start_from_head: true, ..Default::default() };
        let page = logs.get_log_events(q).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[tokio::test]
    async fn get_tokens_return_themselves_at_either_end() {
        let (_d, logs) = engine().await;
        logs.create_log_group("g", &BTreeMap::new()).await.unwrap();
        logs.create_log_stream("g", "s").await.unwrap();
        let now = now_ms();
        let events: Vec<InputEvent> = (0..5).map(|i| ev(now + i, &format!("e{i}"))).collect();
        logs.put_log_events("g", "s", &events).await.unwrap();
        let get = |token: Option<String>, head| {
            let logs = logs.clone();
            async move {
                let q = GetQuery {
                    group: "g",
                    stream: "s",
                    next_token: token.as_deref(),
                    limit: Some(2),
                    start_from_head: head,
                    ..Default::default()
                };
                logs.get_log_events(q).await.unwrap()
            }
        };
        let last = get(None, false).await;
        assert_eq!(last.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["e3", "e4"]);
        let end = get(Some(last.next_forward_token.clone()), true).await;
        assert!(end.events.is_empty() && end.next_forward_token == last.next_forward_token);
        let before = get(Some(last.next_backward_token.clone()), false).await;
        assert_eq!(before.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
        let first = get(Some(before.next_backward_token.clone()), false).await;
        assert_eq!(first.events.len(), 1);
        let start = get(Some(first.next_backward_token.clone()), false).await;
        assert!(start.events.is_empty() && start.next_backward_token == first.next_backward_token);
    }

    #[tokio::test]
    async fn a_page_whose_time_is_spent_keeps_every_match_its_read_found() {
        // A page's time can be spent by its first read alone (a term the
        // store looks for reads to the group's end): it still gives what
        // that read found, not one event a page.
        let (_d, logs) = engine().await;
        logs.ensure_stream("g", "s", true).await.unwrap();
        let now = now_ms();
        let events: Vec<InputEvent> =
            (0..100).map(|i| ev(now + i, if i % 10 == 0 { "an ERROR" } else { "fine" })).collect();
        logs.put_log_events("g", "s", &events).await.unwrap();
        let q = FilterQuery { group: "g", pattern: Some("ERROR"), ..Default::default() };
        let page = logs.filter_within(q, Duration::ZERO).await.unwrap();
        assert_eq!(page.events.len(), 10);
        assert!(page.next_token.is_none(), "the read reached the end");
    }

    #[tokio::test]
    async fn a_live_tail_sees_what_is_stored_after_it_started() {
        let (_d, logs) = engine().await;
        logs.ensure_stream("g", "s", true).await.unwrap();
        logs.put_log_events("g", "s", &[ev(now_ms(), "before ERROR")]).await.unwrap();
        let q = TailQuery { groups: vec!["g".into()], pattern: Some("ERROR"), ..Default::default() };
        let mut tail = logs.start_live_tail(q).await.unwrap();
        let now = now_ms();
        logs.put_log_events("g", "s", &[ev(now, "INFO"), ev(now, "after ERROR")]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap();
        assert_eq!(got.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["after ERROR"]);
    }
}
