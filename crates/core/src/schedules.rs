//! Domain types of EventBridge Scheduler: schedules and schedule groups as
//! the store keeps them. Expressions are kept as the user wrote them; their
//! parsing and the timing rules live in `nimbus-triggers`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The group every account has without creating it.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleGroup {
    pub name: String,
    pub arn: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub tags: BTreeMap<String, String>,
    /// The `ClientToken` it was created with: a create retried with it
    /// answers as the first did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub group: String,
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    /// `at(...)`, `rate(...)` or `cron(...)`, as given.
    pub expression: String,
    /// IANA name; `UTC` when none was given.
    pub timezone: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub enabled: bool,
    /// `FLEXIBLE` window in minutes; `None` for `OFF`.
    pub flexible_window_minutes: Option<u32>,
    /// `NONE` or `DELETE`, when given.
    pub action_after_completion: Option<String>,
    pub target: Target,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// The `ClientToken` it was created with (see [`ScheduleGroup`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub arn: String,
    pub role_arn: String,
    pub input: Option<String>,
    pub max_event_age_seconds: u32,
    pub max_retry_attempts: u32,
    /// An SQS queue ARN.
    pub dead_letter_arn: Option<String>,
}
