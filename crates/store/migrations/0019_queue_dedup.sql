-- A FIFO queue's deduplication ids for their five minutes, apart from the
-- messages: an id whose message was received and deleted within them still
-- answers a retried send after a restart. Rows past the window are removed
-- by the queues' expiry.
CREATE TABLE queue_dedup (
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_ms    INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE INDEX queue_dedup_by_time ON queue_dedup (sent_ms);
INSERT OR REPLACE INTO queue_dedup (queue, dedup_id, message_id, sent_ms)
    SELECT queue, json_extract(doc, '$.dedup_id'), json_extract(doc, '$.id'), json_extract(doc, '$.sent_ms')
      FROM queue_messages WHERE json_extract(doc, '$.dedup_id') IS NOT NULL ORDER BY seq;
