-- How many invocations of a chain of function writes and the events they
-- caused led to this event (0: none, e.g. a client's own invoke or write).
-- Lambda's recursive loop detection stops a chain at its limit.
ALTER TABLE async_events ADD COLUMN lineage INTEGER NOT NULL DEFAULT 0;
