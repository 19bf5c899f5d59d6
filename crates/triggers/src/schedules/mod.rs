//! EventBridge Scheduler: the rules of schedules and schedule groups (what
//! a valid schedule is, AWS's defaults and messages), and the one timer
//! that fires them (`timer`). Expressions and due times are `expr`'s.
//!
//! Every change and every firing runs under one lock, so a firing never
//! races a change of its schedule; a change wakes the timer. This module
//! speaks domain types, never HTTP (`nimbus-api` has the wire), and queues
//! invocations only through the store's outbox (`ScheduleMeta::record_firing`).

mod expr;
mod timer;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;
use nimbus_control::Control;
use nimbus_core::schedules::{Schedule, ScheduleGroup, Target, DEFAULT_GROUP};
use nimbus_store::{DueTimes, ScheduleMeta, ScheduleRow};
use tokio::sync::{Mutex, Notify};

pub use expr::{Expression, Missed, Timing};
use nimbus_core::clock::Clock;

/// RetryPolicy defaults (AWS: 24 hours, 185 attempts).
const DEFAULT_MAX_AGE_SECONDS: u32 = 86_400;
const DEFAULT_RETRY_ATTEMPTS: u32 = 185;
/// A recurring schedule's StartDate may lie this far in the past.
const START_DATE_SLACK_MS: i64 = 5 * 60_000;
const LIST_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Validation`, `NotFound` and `Conflict` are the AWS errors
    /// ValidationException, ResourceNotFoundException and ConflictException.
    #[error(transparent)]
    Rule(#[from] nimbus_core::Error),
    #[error("internal storage error: {0}")]
    Store(#[from] nimbus_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Schedule groups an account may have, the default one among them
/// (EventBridge Scheduler's quota, which AWS raises on request).
const GROUPS_MAX: usize = 500;

fn validation(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::Validation(msg.into()))
}

fn not_found(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::NotFound(msg.into()))
}

fn conflict(msg: impl Into<String>) -> Error {
    Error::Rule(nimbus_core::Error::Conflict(msg.into()))
}

/// Whether a create is a retry of the one that made what exists: both
/// carry the same `ClientToken`.
fn same_token(existing: &Option<String>, retry: &Option<String>) -> bool {
    existing.is_some() && existing == retry
}

/// CreateSchedule's and UpdateSchedule's input, after the model's checks.
#[derive(Debug, Clone, Default)]
pub struct ScheduleInput {
    pub group: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub expression: String,
    pub timezone: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// `ENABLED` (the default) or `DISABLED`.
    pub state: Option<String>,
    /// `OFF` or `FLEXIBLE`.
    pub flexible_mode: String,
    pub flexible_window_minutes: Option<u32>,
    pub action_after_completion: Option<String>,
    pub target: TargetInput,
    /// CreateSchedule's idempotency token (the SDKs send one, and the same
    /// one again when they retry).
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TargetInput {
    pub arn: String,
    pub role_arn: String,
    pub input: Option<String>,
    pub max_event_age_seconds: Option<u32>,
    pub max_retry_attempts: Option<u32>,
    pub dead_letter_arn: Option<String>,
}

/// ListSchedules' filters and page.
#[derive(Debug, Clone, Default)]
pub struct ScheduleQuery {
    pub group: Option<String>,
    pub name_prefix: Option<String>,
    /// `ENABLED` or `DISABLED`.
    pub state: Option<String>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

/// A page of a listing and the token of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

pub struct Schedules {
    meta: Arc<dyn ScheduleMeta>,
    control: Arc<Control>,
    /// Where given-up firings go (a schedule's DeadLetterConfig).
    queues: Arc<nimbus_queues::Queues>,
    clock: Clock,
    /// When this node began (on `clock`): due times before it fell while
    /// the node was down.
    started_ms: i64,
    writes: Mutex<()>,
    /// Wakes the timer when a schedule changes.
    wake: Notify,
}

impl Schedules {
    pub fn new(
        meta: Arc<dyn ScheduleMeta>,
        control: Arc<Control>,
        queues: Arc<nimbus_queues::Queues>,
        clock: Clock,
    ) -> Self {
        let started_ms = clock.now_ms();
        Self { meta, control, queues, clock, started_ms, writes: Mutex::new(()), wake: Notify::new() }
    }

    fn arn_prefix(&self) -> String {
        let a = self.control.account();
        format!("arn:aws:scheduler:{}:{}", a.region, a.id)
    }

    fn group_arn(&self, name: &str) -> String {
        format!("{}:schedule-group/{name}", self.arn_prefix())
    }

    /// The group named (the implicit `default` included), or AWS's error.
    async fn group(&self, name: &str) -> Result<ScheduleGroup> {
        if name == DEFAULT_GROUP {
            return Ok(ScheduleGroup {
                name: name.into(),
                arn: self.group_arn(name),
                created_ms: 0,
                modified_ms: 0,
                tags: BTreeMap::new(),
                client_token: None,
            });
        }
        self.meta
            .get_schedule_group(name)
            .await?
            .ok_or_else(|| not_found(format!("Schedule group {name} does not exist.")))
    }

    fn timing(&self, s: &Schedule) -> Result<Timing> {
        Ok(Timing {
            expression: Expression::parse(&s.expression).map_err(validation)?,
            tz: parse_tz(&s.timezone)?,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
            anchor_ms: s.modified_ms,
        })
    }

    /// The schedule's first due time from now, when it is enabled.
    fn first_times(&self, s: &Schedule, now: i64) -> Result<DueTimes> {
        let due = if s.enabled { self.timing(s)?.first_due(now) } else { None };
        Ok(times(s, due))
    }

    /// Checks an input against AWS's rules beyond the model and builds the
    /// schedule it describes (as of `now`, created at `created_ms`).
    fn build(&self, input: ScheduleInput, group: String, now: i64, created_ms: i64) -> Result<Schedule> {
        let expression = Expression::parse(&input.expression).map_err(validation)?;
        let timezone = input.timezone.unwrap_or_else(|| "UTC".into());
        parse_tz(&timezone)?;
        if !expression.is_one_time() {
            if input.start_ms.is_some_and(|s| s < now - START_DATE_SLACK_MS) {
                return Err(validation("The StartDate you specify cannot be earlier than 5 minutes ago."));
            }
            if let (Some(start), Some(end)) = (input.start_ms, input.end_ms) {
                if end <= start {
                    return Err(validation("The EndDate you specify must be after the StartDate."));
                }
            }
            if input.end_ms.is_some_and(|e| e <= now) {
                return Err(validation("The EndDate you specify cannot be earlier than the current time."));
            }
        }
        let flexible_window_minutes = match (input.flexible_mode.as_str(), input.flexible_window_minutes) {
            ("FLEXIBLE", None) => {
                return Err(validation("MaximumWindowInMinutes is required when FlexibleTimeWindow Mode is FLEXIBLE."))
            }
            ("FLEXIBLE", window) => window,
            (_, Some(_)) => {
                return Err(validation(
                    "MaximumWindowInMinutes is only allowed when FlexibleTimeWindow Mode is FLEXIBLE.",
                ))
            }
            _ => None,
        };
        let t = input.target;
        if !is_lambda_function_arn(&t.arn) {
            return Err(validation(format!(
                "Invalid target ARN {}: this node invokes Lambda function targets only \
                 (arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]).",
                t.arn
            )));
        }
        Ok(Schedule {
            arn: format!("{}:schedule/{group}/{}", self.arn_prefix(), input.name),
            group,
            name: input.name,
            description: input.description,
            expression: input.expression,
            timezone,
            start_ms: input.start_ms,
            end_ms: input.end_ms,
            enabled: input.state.as_deref() != Some("DISABLED"),
            flexible_window_minutes,
            action_after_completion: input.action_after_completion,
            target: Target {
                arn: t.arn,
                role_arn: t.role_arn,
                input: t.input,
                max_event_age_seconds: t.max_event_age_seconds.unwrap_or(DEFAULT_MAX_AGE_SECONDS),
                max_retry_attempts: t.max_retry_attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
                dead_letter_arn: t.dead_letter_arn,
            },
            created_ms,
            modified_ms: now,
            client_token: input.client_token,
        })
    }

    pub async fn create_schedule(&self, input: ScheduleInput) -> Result<String> {
        let group = input.group.clone().unwrap_or_else(|| DEFAULT_GROUP.into());
        let name = input.name.clone();
        let now = self.clock.now_ms();
        let s = self.build(input, group.clone(), now, now)?;
        let _w = self.writes.lock().await;
        self.group(&group).await?;
        let row = ScheduleRow { times: self.first_times(&s, now)?, schedule: s };
        if !self.meta.create_schedule(&row).await? {
            // A retry of the create that made it (its answer was lost) answers as that one did.
            let existing = self.meta.get_schedule(&group, &name).await?;
            return match existing.filter(|e| same_token(&e.schedule.client_token, &row.schedule.client_token)) {
                Some(e) => Ok(e.schedule.arn),
                None => Err(conflict(format!("Schedule {name} already exists."))),
            };
        }
        self.wake.notify_one();
        Ok(row.schedule.arn)
    }

    /// Replaces every setting of a schedule (UpdateSchedule is not a patch).
    pub async fn update_schedule(&self, input: ScheduleInput) -> Result<String> {
        let group = input.group.clone().unwrap_or_else(|| DEFAULT_GROUP.into());
        let now = self.clock.now_ms();
        let _w = self.writes.lock().await;
        let old = self.row(&group, &input.name).await?;
        let mut s = self.build(input, group, now, old.schedule.created_ms)?;
        // The token that made it answers a retried create; an update's is its own.
        s.client_token = old.schedule.client_token;
        let row = ScheduleRow { times: self.first_times(&s, now)?, schedule: s };
        self.meta.replace_schedule(&row).await?;
        self.wake.notify_one();
        Ok(row.schedule.arn)
    }

    async fn row(&self, group: &str, name: &str) -> Result<ScheduleRow> {
        self.group(group).await?;
        self.meta.get_schedule(group, name).await?.ok_or_else(|| not_found(format!("Schedule {name} does not exist.")))
    }

    pub async fn get_schedule(&self, group: Option<&str>, name: &str) -> Result<Schedule> {
        Ok(self.row(group.unwrap_or(DEFAULT_GROUP), name).await?.schedule)
    }

    pub async fn delete_schedule(&self, group: Option<&str>, name: &str) -> Result<()> {
        let group = group.unwrap_or(DEFAULT_GROUP);
        let _w = self.writes.lock().await;
        self.group(group).await?;
        if !self.meta.delete_schedule(group, name).await? {
            return Err(not_found(format!("Schedule {name} does not exist.")));
        }
        self.wake.notify_one();
        Ok(())
    }

    pub async fn list_schedules(&self, q: ScheduleQuery) -> Result<Page<Schedule>> {
        if let Some(g) = &q.group {
            self.group(g).await?;
        }
        let after = match &q.next_token {
            Some(t) => t.split_once('/').ok_or_else(|| validation("Invalid NextToken."))?,
            None => ("", ""),
        };
        let limit = q.max_results.unwrap_or(LIST_MAX);
        let enabled = q.state.as_deref().map(|s| s == "ENABLED");
        let prefix = q.name_prefix.as_deref().unwrap_or("");
        let mut items = self.meta.list_schedules(q.group.as_deref(), prefix, enabled, after, limit + 1).await?;
        let next_token = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|s| format!("{}/{}", s.group, s.name)).unwrap_or_default()
        });
        Ok(Page { items, next_token })
    }

    pub async fn create_schedule_group(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
        client_token: Option<String>,
    ) -> Result<String> {
        let now = self.clock.now_ms();
        let arn = self.group_arn(name);
        let g = ScheduleGroup { name: name.into(), arn, created_ms: now, modified_ms: now, tags, client_token };
        if name == DEFAULT_GROUP {
            return Err(conflict(format!("Schedule group {name} already exists.")));
        }
        // Counted and made under the lock, so that two creates at the quota's edge cannot both pass it.
        let _w = self.writes.lock().await;
        // The default group is not stored, and counts.
        let groups = 1 + self.meta.list_schedule_groups("", "", GROUPS_MAX).await?.len();
        if groups >= GROUPS_MAX && self.meta.get_schedule_group(name).await?.is_none() {
            return Err(Error::Rule(nimbus_core::Error::QuotaExceeded(format!(
                "You have reached the maximum number of schedule groups ({GROUPS_MAX}) for this account."
            ))));
        }
        if !self.meta.create_schedule_group(&g).await? {
            let existing = self.meta.get_schedule_group(name).await?;
            return match existing.filter(|e| same_token(&e.client_token, &g.client_token)) {
                Some(e) => Ok(e.arn),
                None => Err(conflict(format!("Schedule group {name} already exists."))),
            };
        }
        Ok(g.arn)
    }

    pub async fn get_schedule_group(&self, name: &str) -> Result<ScheduleGroup> {
        self.group(name).await
    }

    /// Deletes a group and every schedule in it (AWS does this in the
    /// background, reporting the group as DELETING meanwhile; here it is one
    /// transaction, so the group is simply gone).
    pub async fn delete_schedule_group(&self, name: &str) -> Result<()> {
        if name == DEFAULT_GROUP {
            return Err(validation("The default schedule group cannot be deleted."));
        }
        let _w = self.writes.lock().await;
        if !self.meta.delete_schedule_group(name).await? {
            return Err(not_found(format!("Schedule group {name} does not exist.")));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Groups by name, the implicit `default` among them.
    pub async fn list_schedule_groups(
        &self,
        prefix: Option<&str>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Page<ScheduleGroup>> {
        let prefix = prefix.unwrap_or("");
        // A token is the last name handed out and a slash (which no group's
        // name has): anything else is none of ours.
        let after = match next_token {
            Some(t) => {
                t.strip_suffix('/').filter(|n| !n.contains('/')).ok_or_else(|| validation("Invalid NextToken."))?
            }
            None => "",
        };
        let limit = max_results.unwrap_or(LIST_MAX);
        let mut items = self.meta.list_schedule_groups(prefix, after, limit + 1).await?;
        if DEFAULT_GROUP.starts_with(prefix) && DEFAULT_GROUP > after {
            let at = items.partition_point(|g| g.name.as_str() < DEFAULT_GROUP);
            items.insert(at, self.group(DEFAULT_GROUP).await?);
        }
        let next_token = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|g| format!("{}/", g.name)).unwrap_or_default()
        });
        Ok(Page { items, next_token })
    }

    /// The stored group a tagging request's ARN names (only groups have tags).
    async fn tagged_group(&self, arn: &str) -> Result<ScheduleGroup> {
        let name = arn
            .strip_prefix(&format!("{}:schedule-group/", self.arn_prefix()))
            .ok_or_else(|| not_found(format!("Schedule group {arn} does not exist.")))?;
        if name == DEFAULT_GROUP {
            return Err(validation("The default schedule group cannot be tagged."));
        }
        self.group(name).await
    }

    pub async fn tag_resource(&self, arn: &str, tags: BTreeMap<String, String>) -> Result<()> {
        let _w = self.writes.lock().await;
        let mut g = self.tagged_group(arn).await?;
        g.tags.extend(tags);
        if g.tags.len() > 200 {
            return Err(validation("A schedule group can have at most 200 tags."));
        }
        g.modified_ms = self.clock.now_ms();
        Ok(self.meta.put_schedule_group(&g).await?)
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        let _w = self.writes.lock().await;
        let mut g = self.tagged_group(arn).await?;
        g.tags.retain(|k, _| !keys.contains(k));
        g.modified_ms = self.clock.now_ms();
        Ok(self.meta.put_schedule_group(&g).await?)
    }

    pub async fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        Ok(self.tagged_group(arn).await?.tags)
    }
}

fn parse_tz(tz: &str) -> Result<Tz> {
    tz.parse().map_err(|_| validation(format!("Invalid ScheduleExpressionTimezone {tz}.")))
}

/// When a schedule due at `due` fires: at once, or at a random moment of
/// its flexible time window.
fn times(s: &Schedule, due: Option<i64>) -> DueTimes {
    let spread = |d: i64| match s.flexible_window_minutes {
        Some(m) => d + rand::Rng::gen_range(&mut rand::thread_rng(), 0..i64::from(m) * 60_000),
        None => d,
    };
    DueTimes { due_ms: due, fire_ms: due.map(spread) }
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
fn is_lambda_function_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    matches!(parts[..], ["arn", p, "lambda", region, account, "function", name, ..]
        if p.starts_with("aws") && word(region) && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
            && (word(name) || name.contains('.')) && parts.len() <= 8 && parts.get(7).is_none_or(|q| word(q) || *q == "$LATEST"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lambda_function_arns_are_targets() {
        assert!(is_lambda_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f"));
        assert!(is_lambda_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f:live"));
        assert!(is_lambda_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"));
        assert!(!is_lambda_function_arn("arn:aws:sqs:us-east-1:123456789012:q"));
        assert!(!is_lambda_function_arn("arn:aws:lambda:us-east-1:123456789012:layer:l:1"));
        assert!(!is_lambda_function_arn("arn:aws:lambda:us-east-1:1234:function:f"));
        assert!(!is_lambda_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f:a:b"));
    }
}
