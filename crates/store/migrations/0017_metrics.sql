-- CloudWatch metrics of the AWS/Lambda namespace at one-minute resolution.
-- A row is the statistic set of one metric, one dimension set and one
-- minute as one flush saw it; a minute may have several rows (a node that
-- restarts within a minute flushes it twice) and readers merge them.
-- Dimensions absent from the set are ''.
CREATE TABLE metric_minutes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    metric           TEXT NOT NULL,
    function         TEXT NOT NULL,
    resource         TEXT NOT NULL,
    executed_version TEXT NOT NULL,
    minute_ms        INTEGER NOT NULL,
    sample_count     REAL NOT NULL,
    sum              REAL NOT NULL,
    minimum          REAL NOT NULL,
    maximum          REAL NOT NULL,
    histogram        TEXT NOT NULL      -- JSON [[bucket, count], ...]; '[]' for counters
);
CREATE INDEX metric_minutes_series ON metric_minutes (metric, function, resource, executed_version, minute_ms);
CREATE INDEX metric_minutes_time ON metric_minutes (minute_ms);

-- Usage prices requests and GB-seconds by architecture.
ALTER TABLE invocations ADD COLUMN architecture TEXT NOT NULL DEFAULT 'x86_64';
CREATE INDEX invocations_time ON invocations (timestamp_ms);
