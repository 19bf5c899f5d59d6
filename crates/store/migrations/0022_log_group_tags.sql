-- A log group's tags (CreateLogGroup's `tags`, TagResource, TagLogGroup), as
-- a JSON object of key to value.
ALTER TABLE log_groups ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
