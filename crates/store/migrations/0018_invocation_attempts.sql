-- One row per run, not per request id: an asynchronous event's retries
-- keep its request id (as on AWS), and each is a run that is billed, so
-- the request id is no longer the key. Rows keep their order.
CREATE TABLE invocations_by_run (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL,
    function      TEXT NOT NULL,
    version       TEXT NOT NULL,
    cold          INTEGER NOT NULL,
    init_ms       REAL,
    duration_ms   REAL NOT NULL,
    billed_ms     INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    max_memory_mb INTEGER NOT NULL,
    outcome       TEXT NOT NULL,      -- success | error | timeout
    timestamp_ms  INTEGER NOT NULL,
    architecture  TEXT NOT NULL DEFAULT 'x86_64'
);
INSERT INTO invocations_by_run (request_id, function, version, cold, init_ms, duration_ms, billed_ms, memory_mb,
                                max_memory_mb, outcome, timestamp_ms, architecture)
    SELECT request_id, function, version, cold, init_ms, duration_ms, billed_ms, memory_mb, max_memory_mb, outcome,
           timestamp_ms, architecture
      FROM invocations ORDER BY timestamp_ms, rowid;
DROP TABLE invocations;
ALTER TABLE invocations_by_run RENAME TO invocations;
CREATE INDEX invocations_function ON invocations (function, timestamp_ms);
CREATE INDEX invocations_time ON invocations (timestamp_ms);
