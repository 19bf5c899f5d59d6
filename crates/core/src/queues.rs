//! Domain types of the SQS-compatible queues: a queue's document and a
//! stored message. The rules (attribute ranges, FIFO, redrive) are
//! `nimbus-queues`'; these are only what the store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A queue as stored: its attributes as AWS names and spells them
/// (`VisibilityTimeout` → `"30"`), so Get/SetQueueAttributes round-trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDoc {
    pub name: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// Settable attributes with their values, defaults filled in.
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One message attribute (`DataType` `String`, `Number`, `Binary` or a
/// custom `String.x` / `Binary.x`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeValue {
    pub data_type: String,
    /// For `String` and `Number` types.
    pub string: Option<String>,
    /// For `Binary` types.
    pub binary: Option<Vec<u8>>,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    /// Empty in the engine's memory for a payload it leaves on disk.
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// System attributes the sender set (`AWSTraceHeader`).
    #[serde(default)]
    pub system_attributes: BTreeMap<String, AttributeValue>,
    pub sent_ms: i64,
    /// When it first becomes visible (sent time plus delay).
    pub visible_ms: i64,
    pub sender_id: String,
    #[serde(default)]
    pub receive_count: u32,
    #[serde(default)]
    pub first_receive_ms: Option<i64>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    /// A FIFO message's SequenceNumber (20 digits, rising per queue).
    #[serde(default)]
    pub sequence_number: Option<String>,
    /// The queue a dead-letter move took it from (its ARN), for move tasks.
    #[serde(default)]
    pub dead_letter_source: Option<String>,
    /// When it entered its queue, where that is not its send: a move to a
    /// FIFO dead-letter queue resets it, as on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_ms: Option<i64>,
}

impl StoredMessage {
    /// What its queue's retention period counts from.
    pub fn retained_from(&self) -> i64 {
        self.enqueued_ms.unwrap_or(self.sent_ms)
    }
}
