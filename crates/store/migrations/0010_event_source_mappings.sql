-- Lambda event source mappings (queue -> function). One mapping per
-- (source, function): CreateEventSourceMapping refuses a second.
CREATE TABLE event_source_mappings (
    uuid             TEXT PRIMARY KEY NOT NULL,
    event_source_arn TEXT NOT NULL,
    function_arn     TEXT NOT NULL,
    doc              TEXT NOT NULL      -- nimbus_core::mappings::EventSourceMapping
);
CREATE UNIQUE INDEX event_source_mappings_pair ON event_source_mappings (event_source_arn, function_arn);
