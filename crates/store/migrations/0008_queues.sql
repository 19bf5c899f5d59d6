-- SQS-compatible queues. A queue is one document; a message is one row whose
-- seq (the rowid) orders the queue: SQLite assigns it under the single
-- writer's lock, so seq order is commit order (FIFO order, and the point a
-- reader of new rows resumes from). Visibility lives in memory (nimbus-queues);
-- only the receive count is written back, so a restart redelivers what was
-- in flight (at least once).
CREATE TABLE queues (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL                 -- nimbus_core::queues::QueueDoc
);

CREATE TABLE queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_receive_ms INTEGER,
    doc           TEXT NOT NULL        -- nimbus_core::queues::StoredMessage
);
CREATE INDEX queue_messages_by_queue ON queue_messages (queue, seq);
