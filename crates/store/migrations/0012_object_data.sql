-- The bytes of small objects, kept with their metadata: one commit makes
-- such an object durable, where a file of its own costs a file and a
-- directory fsync besides. A row here means the object has no data file
-- (`objects.file` then only names the version).
CREATE TABLE object_data (
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
