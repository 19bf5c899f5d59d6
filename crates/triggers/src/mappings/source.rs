//! What a poller needs of a queue, as a trait: the queue engine implements
//! it (`queues.rs`). Receiving must not poll: a receive
//! with a wait returns as soon as a message is visible, or at the wait's end.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::queues::AttributeValue;

/// What CreateEventSourceMapping checks about a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub fifo: bool,
    pub visibility_timeout: Duration,
}

/// A received message: what the Lambda SQS event record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: String,
    /// ApproximateReceiveCount, SentTimestamp, SenderId,
    /// ApproximateFirstReceiveTimestamp, and for FIFO queues
    /// MessageGroupId, MessageDeduplicationId, SequenceNumber.
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, AttributeValue>,
    pub md5_of_message_attributes: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

#[async_trait]
pub trait QueueSource: Send + Sync {
    /// The queue an ARN names, if it exists.
    async fn info(&self, queue_arn: &str) -> Result<Option<QueueInfo>, SourceError>;
    /// Up to `max` messages, waiting up to `wait` for the first one.
    async fn receive(&self, queue_arn: &str, max: u32, wait: Duration) -> Result<Vec<Message>, SourceError>;
    /// Deletes received messages (a handle no longer valid is ignored).
    async fn delete(&self, queue_arn: &str, receipt_handles: &[String]) -> Result<(), SourceError>;
}
