//! The queue engine (`nimbus-queues`) as a poller's [`QueueSource`]. Its
//! receive waits on the queue's wake (a send, a visibility change) and on the
//! next message's visibility, so an idle poller sleeps instead of polling.

use std::time::Duration;

use async_trait::async_trait;
use nimbus_queues::Queues;

use super::source::{Message, QueueInfo, QueueSource, SourceError};

fn failed(e: nimbus_queues::Error) -> SourceError {
    SourceError(e.to_string())
}

#[async_trait]
impl QueueSource for Queues {
    async fn info(&self, queue_arn: &str) -> Result<Option<QueueInfo>, SourceError> {
        let q = self.queue_by_arn(queue_arn).map_err(failed)?;
        Ok(q.map(|q| QueueInfo { fifo: q.fifo, visibility_timeout: q.visibility_timeout }))
    }

    async fn receive(&self, queue_arn: &str, max: u32, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let got = Queues::receive(self, queue_arn, max, None, wait).await.map_err(failed)?;
        Ok(got
            .into_iter()
            .map(|m| Message {
                message_id: m.message_id,
                receipt_handle: m.receipt_handle,
                body: m.body,
                md5_of_body: m.md5_of_body,
                attributes: m.attributes,
                message_attributes: m.message_attributes,
                md5_of_message_attributes: m.md5_of_attributes,
            })
            .collect())
    }

    async fn delete(&self, queue_arn: &str, receipt_handles: &[String]) -> Result<(), SourceError> {
        Queues::delete(self, queue_arn, receipt_handles).await.map_err(failed)?;
        Ok(())
    }
}
