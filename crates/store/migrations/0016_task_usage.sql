-- ECS task metering (nimbus-containers), as Fargate bills it: one row per
-- stopped task, from the start of its image pull to its stop, billed per
-- second with a one-minute minimum. Written again (same figures) at every
-- start for the stopped tasks still kept, so a crash between a task's stop
-- and its row loses nothing. Rows outlive the task documents, which are
-- deleted an hour after the task stops.
CREATE TABLE ecs_task_usage (
    task_arn       TEXT PRIMARY KEY NOT NULL,
    cluster_arn    TEXT NOT NULL,
    family         TEXT NOT NULL,
    cpu_units      INTEGER NOT NULL,   -- 1024 per vCPU
    memory_mib     INTEGER NOT NULL,
    started_ms     INTEGER NOT NULL,   -- pull start (or creation, if it never pulled)
    stopped_ms     INTEGER NOT NULL,
    billed_seconds INTEGER NOT NULL,
    vcpu_seconds   REAL NOT NULL,
    gb_seconds     REAL NOT NULL
);
CREATE INDEX ecs_task_usage_stopped ON ecs_task_usage (stopped_ms);
