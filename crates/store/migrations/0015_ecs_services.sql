-- ECS services (nimbus-containers' scheduler): each service as a JSON
-- document in AWS's field names (deployments and events included), written
-- through before a change is answered, so that a restarted node
-- reconciles every service back to its desired count.
CREATE TABLE ecs_services (
    arn TEXT PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
);
