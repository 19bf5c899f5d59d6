//! Domain types of Lambda event source mappings: which queue feeds which
//! function, with what batching, filtering and scaling, and the state AWS
//! reports for it. The rules and the pollers are `nimbus-triggers`'s.

use serde::{Deserialize, Serialize};

/// The `State` AWS reports. Creating, Updating, Enabling, Disabling and
/// Deleting are transitions the node settles in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MappingState {
    Creating,
    Enabling,
    Enabled,
    Disabling,
    Disabled,
    Updating,
    Deleting,
}

impl MappingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Enabling => "Enabling",
            Self::Enabled => "Enabled",
            Self::Disabling => "Disabling",
            Self::Disabled => "Disabled",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
        }
    }

    /// Whether the node still has to act on the mapping.
    pub fn settled(self) -> bool {
        matches!(self, Self::Enabled | Self::Disabled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSourceMapping {
    pub uuid: String,
    pub event_source_arn: String,
    /// The function ARN, qualified when the request named a version or alias.
    pub function_arn: String,
    pub batch_size: u32,
    pub maximum_batching_window_s: u32,
    /// `FilterCriteria.Filters[].Pattern`, as given.
    pub filters: Vec<String>,
    /// `ReportBatchItemFailures` or nothing.
    pub function_response_types: Vec<String>,
    /// `ScalingConfig.MaximumConcurrency`.
    pub maximum_concurrency: Option<u32>,
    /// What the user asked for (`Enabled`); `state` is where the node is.
    pub enabled: bool,
    pub state: MappingState,
    pub last_modified_ms: i64,
    /// CreateEventSourceMapping's `Tags`, TagResource and UntagResource.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl EventSourceMapping {
    pub fn reports_item_failures(&self) -> bool {
        self.function_response_types.iter().any(|t| t == "ReportBatchItemFailures")
    }
}
