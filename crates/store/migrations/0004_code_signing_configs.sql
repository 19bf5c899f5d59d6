-- Code signing configurations are account-level documents of their own:
-- functions refer to them by ARN, and one may serve many functions.
CREATE TABLE code_signing_configs (
    id  TEXT PRIMARY KEY NOT NULL,      -- csc-... (the ARN's last part)
    doc TEXT NOT NULL                   -- nimbus_core::function::CodeSigningConfig
);
