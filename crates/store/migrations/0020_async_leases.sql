-- Whether an event is leased by a delivery under way, rather than waiting
-- for a retry: a start releases only leases (a run that died mid-delivery),
-- so a retry's wait outlives a restart. For rows from before: a wait longer
-- than the longest retry backoff (5 minutes) can only be a lease.
ALTER TABLE async_events ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;
UPDATE async_events SET leased = 1 WHERE not_before_ms > CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 360000;
