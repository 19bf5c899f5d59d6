-- CloudWatch Logs' log groups and streams as objects of their own. Function
-- log groups and streams are created as their lines are stored; those
-- stored before this migration are found here from their lines.
CREATE TABLE log_groups (
    name           TEXT PRIMARY KEY NOT NULL,
    created_ms     INTEGER NOT NULL,
    retention_days INTEGER             -- NULL: kept until the node's own log retention
);

CREATE TABLE log_streams (
    log_group         TEXT NOT NULL,
    name              TEXT NOT NULL,
    created_ms        INTEGER NOT NULL,
    first_event_ms    INTEGER,
    last_event_ms     INTEGER,
    last_ingestion_ms INTEGER,
    PRIMARY KEY (log_group, name)
);
CREATE INDEX log_streams_last_event ON log_streams (log_group, last_event_ms, name);

-- When CloudWatch received the line (function lines: when they were written).
ALTER TABLE log_events ADD COLUMN ingestion_ms INTEGER;

-- Events are read in time order, by group (FilterLogEvents) or by stream
-- (GetLogEvents); the id orders events of the same millisecond.
CREATE INDEX log_events_group_time ON log_events (log_group, timestamp_ms, id);
CREATE INDEX log_events_stream_time ON log_events (log_group, log_stream, timestamp_ms, id);
DROP INDEX log_events_group;

INSERT INTO log_groups (name, created_ms)
    SELECT log_group, MIN(timestamp_ms) FROM log_events GROUP BY log_group;
INSERT INTO log_streams (log_group, name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms)
    SELECT log_group, log_stream, MIN(timestamp_ms), MIN(timestamp_ms), MAX(timestamp_ms), MAX(timestamp_ms)
    FROM log_events GROUP BY log_group, log_stream;
