-- The container registry (nimbus-registry). Blob and manifest bytes are
-- files under <data>/registry/blobs, named by digest; these tables say which
-- exist and who refers to them.

-- One row per repository; doc = nimbus_store::Repository (JSON).
CREATE TABLE registry_repositories (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL
);

-- Committed blobs (layers, configs and manifests' own bytes). touched_ms is
-- when a push last committed or mounted it: garbage collection spares blobs
-- touched after it started or recently (a push between blobs and manifest).
CREATE TABLE registry_blobs (
    digest     TEXT PRIMARY KEY NOT NULL,
    size       INTEGER NOT NULL,
    touched_ms INTEGER NOT NULL
);

-- Which repositories a blob was pushed to or mounted into: a repository
-- serves only its own blobs, as the distribution spec has it.
CREATE TABLE registry_repo_blobs (
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX registry_repo_blobs_digest ON registry_repo_blobs (digest);

-- Manifests (images, indexes, artifacts) per repository; doc =
-- nimbus_store::ManifestRow's other fields. subject is the OCI-Subject the
-- referrers API looks up.
CREATE TABLE registry_manifests (
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    subject    TEXT,
    doc        TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX registry_manifests_subject ON registry_manifests (repository, subject) WHERE subject IS NOT NULL;

-- What each manifest refers to (config, layers, child manifests): the live
-- set of garbage collection.
CREATE TABLE registry_manifest_refs (
    repository TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (repository, manifest, digest)
);
CREATE INDEX registry_manifest_refs_digest ON registry_manifest_refs (digest);

CREATE TABLE registry_tags (
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (repository, tag)
);
CREATE INDEX registry_tags_digest ON registry_tags (repository, digest);
