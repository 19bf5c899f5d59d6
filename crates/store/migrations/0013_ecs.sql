-- ECS (nimbus-containers): clusters, task definitions and tasks as JSON
-- documents in AWS's own field names. The engine keeps them in memory and
-- writes each change through before it answers.
CREATE TABLE ecs_clusters (
    arn TEXT PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE ecs_task_definitions (
    family   TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc      TEXT NOT NULL,
    PRIMARY KEY (family, revision)
);
CREATE TABLE ecs_tasks (
    arn TEXT PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
);
