-- Function log lines, as CloudWatch Logs would hold them.
CREATE TABLE log_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the event id and the paging cursor
    log_group    TEXT NOT NULL,
    log_stream   TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    message      TEXT NOT NULL
);
CREATE INDEX log_events_group ON log_events (log_group, id);
CREATE INDEX log_events_time ON log_events (timestamp_ms);

-- One row per invocation: the basis of usage reports.
CREATE TABLE invocations (
    request_id    TEXT PRIMARY KEY NOT NULL,
    function      TEXT NOT NULL,
    version       TEXT NOT NULL,
    cold          INTEGER NOT NULL,
    init_ms       REAL,
    duration_ms   REAL NOT NULL,
    billed_ms     INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    max_memory_mb INTEGER NOT NULL,
    outcome       TEXT NOT NULL,      -- success | error | timeout
    timestamp_ms  INTEGER NOT NULL
);
CREATE INDEX invocations_function ON invocations (function, timestamp_ms);
