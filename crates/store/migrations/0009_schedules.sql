-- EventBridge Scheduler. Schedules and groups are documents of nimbus-core
-- types; the columns are what the timer orders by. The `default` group is
-- implicit and has no row.
CREATE TABLE schedule_groups (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE schedules (
    group_name TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    -- The next time the schedule is due (its scheduled time), and when the
    -- timer fires it (later within a flexible time window). NULL: nothing
    -- is due (disabled, or no due time is left).
    due_ms INTEGER,
    fire_ms INTEGER,
    PRIMARY KEY (group_name, name)
);
CREATE INDEX schedules_fire ON schedules (fire_ms) WHERE fire_ms IS NOT NULL;

-- Firings whose target could not be invoked yet, retried per the
-- schedule's RetryPolicy. They go with their schedule.
CREATE TABLE schedule_retries (
    execution_id TEXT PRIMARY KEY,
    group_name TEXT NOT NULL,
    name TEXT NOT NULL,
    scheduled_ms INTEGER NOT NULL,
    -- The attempts made so far.
    attempts INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL
);
CREATE INDEX schedule_retries_due ON schedule_retries (not_before_ms);
CREATE INDEX schedule_retries_schedule ON schedule_retries (group_name, name);
