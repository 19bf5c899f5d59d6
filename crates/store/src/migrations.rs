//! The database schema's migrations, embedded in the binary.
//!
//! They are listed here rather than found by `sqlx::migrate!`: that macro
//! needs sqlx's `macros` feature, which builds sqlx and SQLite a second
//! time for the host (90 of a clean release build's 506 units, about 20 s
//! of CPU, measured with `cargo build --timings`). Each migration is what `migrate!` would make of its file (the
//! version and description from its name, the checksum from its text), so
//! databases migrated either way agree; a unit test holds this list to the
//! directory.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

macro_rules! embed {
    ($file:literal) => {
        ($file, include_str!(concat!("../migrations/", $file)))
    };
}

/// File name and SQL of each migration, in order.
const MIGRATIONS: &[(&str, &str)] = &[
    embed!("0001_initial.sql"),
    embed!("0002_async_events.sql"),
    embed!("0003_logs_and_metering.sql"),
    embed!("0004_code_signing_configs.sql"),
    embed!("0005_function_urls.sql"),
    embed!("0006_objects.sql"),
    embed!("0007_async_lineage.sql"),
    embed!("0008_queues.sql"),
    embed!("0009_schedules.sql"),
    embed!("0010_event_source_mappings.sql"),
    embed!("0011_object_data.sql"),
    embed!("0012_registry.sql"),
    embed!("0013_ecs.sql"),
    embed!("0014_log_groups.sql"),
    embed!("0015_ecs_services.sql"),
    embed!("0016_task_usage.sql"),
    embed!("0017_metrics.sql"),
    embed!("0018_invocation_attempts.sql"),
    embed!("0019_queue_dedup.sql"),
    embed!("0020_async_leases.sql"),
    embed!("0021_queue_in_flight.sql"),
    embed!("0022_log_group_tags.sql"),
];

/// A migration's version and description from its file name, as
/// `migrate!` reads them: `0001_initial.sql` is 1, "initial".
fn version_and_description(file: &str) -> Option<(i64, String)> {
    let (version, rest) = file.split_once('_')?;
    Some((version.parse().ok()?, rest.strip_suffix(".sql")?.replace('_', " ")))
}

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            MIGRATIONS
                .iter()
                .map(|&(file, sql)| {
                    let (version, description) =
                        version_and_description(file).ok_or_else(|| format!("migration file name {file}"))?;
                    let no_tx = sql.starts_with("-- no-transaction");
                    Ok(Migration::new(
                        version,
                        Cow::Owned(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        no_tx,
                    ))
                })
                .collect()
        })
    }
}

/// Refuses a database that a newer build has migrated: its schema has
/// steps this build does not know (sqlx would say only that a migration
/// "was previously applied but is missing"), and it is left as it is.
pub(crate) async fn refuse_newer(pool: &sqlx::SqlitePool, path: &std::path::Path) -> Result<(), crate::Error> {
    let tracked: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            .fetch_optional(pool)
            .await?;
    if tracked.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(pool).await?;
    let known = MIGRATIONS.last().and_then(|(file, _)| version_and_description(file)).map_or(0, |(v, _)| v);
    match found {
        Some(found) if found > known => {
            Err(crate::Error::NewerSchema { path: path.display().to_string(), found, known })
        }
        _ => Ok(()),
    }
}

/// The migrator for the embedded migrations.
pub(crate) async fn migrator() -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_migrations_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let sql = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
                (name, sql)
            })
            .collect();
        files.sort();
        let listed: Vec<(String, String)> = MIGRATIONS.iter().map(|&(f, s)| (f.to_string(), s.to_string())).collect();
        assert_eq!(listed, files);
        assert_eq!(
            version_and_description("0010_event_source_mappings.sql"),
            Some((10, "event source mappings".into()))
        );
    }
}
