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
    ($version:literal, $description:literal, $file:literal) => {
        ($version, $description, include_str!(concat!("../migrations/", $file)))
    };
}

/// Version, description and SQL of each migration, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    embed!(1, "initial", "0001_initial.sql"),
    embed!(2, "async events", "0002_async_events.sql"),
    embed!(3, "logs and metering", "0003_logs_and_metering.sql"),
    embed!(4, "code signing configs", "0004_code_signing_configs.sql"),
    embed!(5, "function urls", "0005_function_urls.sql"),
    embed!(6, "objects", "0006_objects.sql"),
    embed!(7, "async lineage", "0007_async_lineage.sql"),
    embed!(8, "queues", "0008_queues.sql"),
    embed!(9, "schedules", "0009_schedules.sql"),
    embed!(10, "event source mappings", "0010_event_source_mappings.sql"),
    embed!(11, "object data", "0011_object_data.sql"),
    embed!(12, "registry", "0012_registry.sql"),
    embed!(13, "ecs", "0013_ecs.sql"),
    embed!(14, "log groups", "0014_log_groups.sql"),
    embed!(15, "ecs services", "0015_ecs_services.sql"),
    embed!(16, "task usage", "0016_task_usage.sql"),
    embed!(17, "metrics", "0017_metrics.sql"),
];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    let no_tx = sql.starts_with("-- no-transaction");
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        no_tx,
                    )
                })
                .collect())
        })
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
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let (version, rest) = name.split_once('_').unwrap();
                let sql = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
                (version.parse().unwrap(), rest.trim_end_matches(".sql").replace('_', " "), sql)
            })
            .collect();
        files.sort();
        let listed: Vec<(i64, String, String)> =
            MIGRATIONS.iter().map(|&(v, d, s)| (v, d.to_string(), s.to_string())).collect();
        assert_eq!(listed, files);
    }
}
