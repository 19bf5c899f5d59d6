-- Documents are JSON of the nimbus-core types; the other columns exist so
-- that listing, ordering and blob reference counting can be done in SQL.
CREATE TABLE functions (
    name      TEXT PRIMARY KEY NOT NULL,
    doc       TEXT NOT NULL,            -- nimbus_core::function::Function
    latest    TEXT NOT NULL,            -- its $LATEST FunctionConfig, for listings
    code_sha  TEXT NOT NULL,
    code_size INTEGER NOT NULL,
    layer_shas TEXT NOT NULL,           -- blobs of the layers it uses, space-separated
    reserved  INTEGER                   -- reserved concurrency, if set
);

CREATE TABLE versions (
    name      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    doc       TEXT NOT NULL,            -- FunctionConfig
    code_sha  TEXT NOT NULL,
    code_size INTEGER NOT NULL,
    layer_shas TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- Kept after the last version is deleted: layer version numbers never repeat.
CREATE TABLE layers (
    name         TEXT PRIMARY KEY NOT NULL,
    last_version INTEGER NOT NULL
);

CREATE TABLE layer_versions (
    name      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    doc       TEXT NOT NULL,            -- LayerVersion
    code_sha  TEXT NOT NULL,
    code_size INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
