-- Asynchronous (InvocationType Event) invocations, durable from the moment
-- the 202 is sent until they succeed or are given up.
CREATE TABLE async_events (
    id            TEXT PRIMARY KEY NOT NULL,  -- the request id returned with the 202
    function      TEXT NOT NULL,
    qualifier     TEXT,
    payload       BLOB NOT NULL,
    attempts      INTEGER NOT NULL,           -- invocations that ran and failed
    not_before_ms INTEGER NOT NULL,           -- not delivered before this time
    created_ms    INTEGER NOT NULL
);
CREATE INDEX async_events_due ON async_events (not_before_ms);
