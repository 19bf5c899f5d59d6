//! The queues' persistence ([`QueueMeta`]): queue documents and message
//! rows in the same SQLite database as everything else. Messages are
//! written in batches, one transaction per [`QueueMeta::apply_messages`]
//! call, so that a whole SendMessageBatch (or every send gathered while the
//! previous commit ran) costs one fsync. [`insert_message`] writes one
//! message inside a transaction someone else owns (an outbox: a write that
//! must enqueue a message atomically with its own change).
//!
//! Visibility, receipts and FIFO deduplication are `nimbus-queues`' and live
//! in memory; the store keeps only what must survive a crash.

use std::collections::HashMap;

use async_trait::async_trait;
use nimbus_core::queues::{QueueDoc, StoredMessage};
use sqlx::Row;

use crate::sqlite::{parse, parse_all, SqliteMetadata};
use crate::Result;

/// One change to messages in a batch given to [`QueueMeta::apply_messages`].
#[derive(Debug, Clone)]
pub enum MessageWrite {
    /// Inserts a message; its seq is returned in order.
    Insert {
        queue: String,
        message: Box<StoredMessage>,
    },
    Delete {
        seq: i64,
    },
    /// Records a receive (the count drives dead-letter redrive) and what
    /// keeps it in flight across a restart.
    Received {
        seq: i64,
        receive_count: u32,
        first_receive_ms: i64,
        in_flight: InFlight,
    },
    /// A visibility change of the message in flight under `receipt`.
    Invisible {
        seq: i64,
        receipt: u64,
        until_ms: i64,
    },
    /// Every message of a queue.
    Purge {
        queue: String,
    },
    /// A FIFO send's deduplication id, for its window (see [`DedupId`]).
    Dedup(DedupId),
    /// Deduplication ids sent before `before_ms`: past their window.
    ForgetDedup {
        before_ms: i64,
    },
}

/// A deduplication id a FIFO queue answers with `message_id` until its
/// window, from `sent_ms`, ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupId {
    pub queue: String,
    pub dedup_id: String,
    pub message_id: String,
    pub sent_ms: i64,
}

/// A stored message with its seq and receive state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub seq: i64,
    pub queue: String,
    pub message: StoredMessage,
    /// Its latest receive, if it has one.
    pub in_flight: Option<InFlight>,
}

/// A received message's receipt and visibility timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub receipt: u64,
    pub received_ms: i64,
    pub until_ms: i64,
}

#[async_trait]
pub trait QueueMeta: Send + Sync {
    /// Creates a queue; false if one of that name exists.
    async fn create_queue(&self, q: &QueueDoc) -> Result<bool>;
    async fn put_queue(&self, q: &QueueDoc) -> Result<()>;
    /// Removes a queue and its messages.
    async fn delete_queue(&self, name: &str) -> Result<()>;
    /// Every queue, by name.
    async fn list_queues(&self) -> Result<Vec<QueueDoc>>;
    /// Messages with a seq above `after` (of one queue, or of all), in seq
    /// order, without their payload (body and attributes, left empty): the
    /// engine keeps the rest in memory, and reads payloads when it needs
    /// them, with [`QueueMeta::message_payloads`].
    async fn messages_after(&self, queue: Option<&str>, after: i64, limit: usize) -> Result<Vec<MessageRow>>;
    /// The stored messages of these seqs, payload and all, by seq; a seq
    /// no longer stored is absent.
    async fn message_payloads(&self, seqs: &[i64]) -> Result<HashMap<i64, StoredMessage>>;
    /// Applies every write or none; returns the seqs of the inserts in order.
    async fn apply_messages(&self, writes: &[MessageWrite]) -> Result<Vec<i64>>;
    /// Deduplication ids sent at or after `since_ms`.
    async fn dedup_ids(&self, since_ms: i64) -> Result<Vec<DedupId>>;
}

/// Inserts one message in the caller's transaction; returns its seq.
pub async fn insert_message(tx: &mut sqlx::SqliteConnection, queue: &str, m: &StoredMessage) -> Result<i64> {
    let done =
        sqlx::query("INSERT INTO queue_messages (queue, receive_count, first_receive_ms, doc) VALUES (?, ?, ?, ?)")
            .bind(queue)
            .bind(i64::from(m.receive_count))
            .bind(m.first_receive_ms)
            .bind(serde_json::to_string(m)?)
            .execute(&mut *tx)
            .await?;
    Ok(done.last_insert_rowid())
}

#[async_trait]
impl QueueMeta for SqliteMetadata {
    async fn create_queue(&self, q: &QueueDoc) -> Result<bool> {
        let done = sqlx::query("INSERT INTO queues (name, doc) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(&q.name)
            .bind(serde_json::to_string(q)?)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_queue(&self, q: &QueueDoc) -> Result<()> {
        sqlx::query("UPDATE queues SET doc = ? WHERE name = ?")
            .bind(serde_json::to_string(q)?)
            .bind(&q.name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM queue_messages WHERE queue = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM queue_dedup WHERE queue = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM queues WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_queues(&self) -> Result<Vec<QueueDoc>> {
        let rows = sqlx::query("SELECT doc FROM queues ORDER BY name").fetch_all(self.pool()).await?;
        parse_all(&rows)
    }

    async fn messages_after(&self, queue: Option<&str>, after: i64, limit: usize) -> Result<Vec<MessageRow>> {
        let rows = sqlx::query(
            "SELECT seq, queue, receive_count, first_receive_ms, receipt, received_ms, invisible_until_ms,
                    json_remove(doc, '$.body', '$.attributes', '$.system_attributes') AS doc
             FROM queue_messages WHERE (?1 IS NULL OR queue = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(queue)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let mut message: StoredMessage = parse(r.get::<&str, _>("doc"))?;
                message.receive_count = u32::try_from(r.get::<i64, _>("receive_count")).unwrap_or(u32::MAX);
                message.first_receive_ms = r.get("first_receive_ms");
                let in_flight =
                    match (r.get::<Option<i64>, _>("receipt"), r.get("received_ms"), r.get("invisible_until_ms")) {
                        // The receipt is stored as SQLite's signed integer, bit for bit.
                        (Some(receipt), Some(received_ms), Some(until_ms)) => {
                            Some(InFlight { receipt: receipt as u64, received_ms, until_ms })
                        }
                        _ => None,
                    };
                Ok(MessageRow { seq: r.get("seq"), queue: r.get("queue"), message, in_flight })
            })
            .collect()
    }

    async fn message_payloads(&self, seqs: &[i64]) -> Result<HashMap<i64, StoredMessage>> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = sqlx::QueryBuilder::new("SELECT seq, doc FROM queue_messages WHERE seq IN (");
        let mut list = q.separated(", ");
        for seq in seqs {
            list.push_bind(seq);
        }
        q.push(")");
        let rows = q.build().fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.get("seq"), parse(r.get::<&str, _>("doc"))?))).collect()
    }

    async fn apply_messages(&self, writes: &[MessageWrite]) -> Result<Vec<i64>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut seqs = Vec::new();
        // Runs of inserts and of deletes are one statement each (a statement
        // costs more than a row here); order between runs is kept.
        let mut i = 0;
        while i < writes.len() {
            let run =
                writes[i..].iter().take_while(|w| same_kind(w, &writes[i])).take(ROWS_PER_STATEMENT).count().max(1);
            let chunk = &writes[i..i + run];
            match &writes[i] {
                MessageWrite::Insert { .. } => seqs.extend(insert_rows(&mut tx, chunk).await?),
                MessageWrite::Delete { .. } => {
                    let mut q = sqlx::QueryBuilder::new("DELETE FROM queue_messages WHERE seq IN (");
                    let mut list = q.separated(", ");
                    for w in chunk {
                        if let MessageWrite::Delete { seq } = w {
                            list.push_bind(*seq);
                        }
                    }
                    q.push(")").build().execute(&mut *tx).await?;
                }
                MessageWrite::Received { seq, receive_count, first_receive_ms, in_flight } => {
                    sqlx::query(
                        "UPDATE queue_messages SET receive_count = ?, first_receive_ms = ?, receipt = ?,
                                received_ms = ?, invisible_until_ms = ? WHERE seq = ?",
                    )
                    .bind(i64::from(*receive_count))
                    .bind(first_receive_ms)
                    .bind(in_flight.receipt as i64)
                    .bind(in_flight.received_ms)
                    .bind(in_flight.until_ms)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                }
                MessageWrite::Invisible { seq, receipt, until_ms } => {
                    sqlx::query("UPDATE queue_messages SET invisible_until_ms = ? WHERE seq = ? AND receipt = ?")
                        .bind(until_ms)
                        .bind(seq)
                        .bind(*receipt as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                MessageWrite::Purge { queue } => {
                    sqlx::query("DELETE FROM queue_messages WHERE queue = ?").bind(queue).execute(&mut *tx).await?;
                }
                MessageWrite::Dedup(d) => {
                    sqlx::query(
                        "INSERT OR REPLACE INTO queue_dedup (queue, dedup_id, message_id, sent_ms) VALUES (?, ?, ?, ?)",
                    )
                    .bind(&d.queue)
                    .bind(&d.dedup_id)
                    .bind(&d.message_id)
                    .bind(d.sent_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                MessageWrite::ForgetDedup { before_ms } => {
                    sqlx::query("DELETE FROM queue_dedup WHERE sent_ms < ?").bind(before_ms).execute(&mut *tx).await?;
                }
            }
            i += run;
        }
        tx.commit().await?;
        Ok(seqs)
    }

    async fn dedup_ids(&self, since_ms: i64) -> Result<Vec<DedupId>> {
        let rows = sqlx::query(
            "SELECT queue, dedup_id, message_id, sent_ms FROM queue_dedup WHERE sent_ms >= ? ORDER BY sent_ms",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| DedupId {
                queue: r.get("queue"),
                dedup_id: r.get("dedup_id"),
                message_id: r.get("message_id"),
                sent_ms: r.get("sent_ms"),
            })
            .collect())
    }
}

/// Rows per multi-row statement (4 parameters each, well under SQLite's
/// 32,766).
const ROWS_PER_STATEMENT: usize = 500;

fn same_kind(a: &MessageWrite, b: &MessageWrite) -> bool {
    matches!(
        (a, b),
        (MessageWrite::Insert { .. }, MessageWrite::Insert { .. })
            | (MessageWrite::Delete { .. }, MessageWrite::Delete { .. })
    )
}

/// Inserts a run of messages in one statement; their seqs in the run's order
/// (AUTOINCREMENT gives each row the next number, so ascending is the
/// order of the VALUES; RETURNING's own order is unspecified).
async fn insert_rows(tx: &mut sqlx::SqliteConnection, run: &[MessageWrite]) -> Result<Vec<i64>> {
    let mut q = sqlx::QueryBuilder::new("INSERT INTO queue_messages (queue, receive_count, first_receive_ms, doc) ");
    let mut rows = Vec::with_capacity(run.len());
    for w in run {
        if let MessageWrite::Insert { queue, message } = w {
            rows.push((queue, message, serde_json::to_string(message)?));
        }
    }
    q.push_values(rows, |mut b, (queue, m, doc)| {
        b.push_bind(queue.as_str()).push_bind(i64::from(m.receive_count)).push_bind(m.first_receive_ms).push_bind(doc);
    });
    q.push(" RETURNING seq");
    let mut seqs: Vec<i64> = q.build().fetch_all(&mut *tx).await?.iter().map(|r| r.get("seq")).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> StoredMessage {
        StoredMessage {
            id: id.into(),
            body: "b".into(),
            attributes: Default::default(),
            system_attributes: Default::default(),
            sent_ms: 1,
            visible_ms: 1,
            sender_id: "s".into(),
            receive_count: 0,
            first_receive_ms: None,
            group_id: None,
            dedup_id: None,
            sequence_number: None,
            dead_letter_source: None,
            enqueued_ms: None,
        }
    }

    #[tokio::test]
    async fn a_batch_commits_in_order_and_receives_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let insert = |id: &str| MessageWrite::Insert { queue: "q".into(), message: Box::new(message(id)) };
        let seqs = m.apply_messages(&[insert("a"), insert("b"), insert("c")]).await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        m.apply_messages(&[
            MessageWrite::Delete { seq: seqs[1] },
            MessageWrite::Received {
                seq: seqs[2],
                receive_count: 3,
                first_receive_ms: 7,
                in_flight: InFlight { receipt: u64::MAX - 1, received_ms: 9, until_ms: 30 },
            },
            // A change under another receipt (an older handle) changes nothing.
            MessageWrite::Invisible { seq: seqs[2], receipt: 5, until_ms: 99 },
            MessageWrite::Invisible { seq: seqs[2], receipt: u64::MAX - 1, until_ms: 40 },
        ])
        .await
        .unwrap();
        let rows = m.messages_after(Some("q"), 0, 10).await.unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.message.id.as_str(), r.message.receive_count, r.in_flight)).collect();
        let kept = InFlight { receipt: u64::MAX - 1, received_ms: 9, until_ms: 40 };
        assert_eq!(got, [("a", 0, None), ("c", 3, Some(kept))]);
        assert_eq!(m.messages_after(Some("q"), seqs[0], 10).await.unwrap().len(), 1);
        m.apply_messages(&[MessageWrite::Purge { queue: "q".into() }]).await.unwrap();
        assert!(m.messages_after(None, 0, 10).await.unwrap().is_empty());
    }
}
