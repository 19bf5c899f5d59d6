-- The S3-compatible object store's metadata. Object bytes are files under
-- <data>/objects; a row names its file. Keys compare as bytes (BINARY), which
-- is S3's order: UTF-8 code units, lexicographically.
CREATE TABLE buckets (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL                 -- nimbus_core::objects::Bucket
);

CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    file   TEXT NOT NULL,
    doc    TEXT NOT NULL,              -- nimbus_core::objects::ObjectInfo
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

CREATE TABLE uploads (
    id     TEXT PRIMARY KEY NOT NULL,
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    doc    TEXT NOT NULL               -- nimbus_core::objects::Upload
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, id);

CREATE TABLE parts (
    upload_id TEXT NOT NULL,
    number    INTEGER NOT NULL,
    file      TEXT NOT NULL,
    doc       TEXT NOT NULL,           -- nimbus_core::objects::Part
    PRIMARY KEY (upload_id, number)
);
