//! ECS's durable state ([`EcsMeta`]): clusters, task definitions, tasks and services
//! as documents the caller has already serialised. `nimbus-containers`
//! owns their types and rules and keeps them in memory; the store only
//! makes each batch of changes durable, in one transaction, and hands
//! everything back at start.

use async_trait::async_trait;
use sqlx::Row;

use crate::sqlite::SqliteMetadata;
use crate::Result;

/// One change in a batch given to [`EcsMeta::ecs_apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsWrite {
    PutCluster { arn: String, doc: String },
    DeleteCluster { arn: String },
    PutTaskDefinition { family: String, revision: u32, doc: String },
    DeleteTaskDefinition { family: String, revision: u32 },
    PutTask { arn: String, doc: String },
    DeleteTask { arn: String },
    PutService { arn: String, doc: String },
    DeleteService { arn: String },
}

/// Every stored document, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EcsDocuments {
    pub clusters: Vec<String>,
    /// In (family, revision) order.
    pub task_definitions: Vec<String>,
    pub tasks: Vec<String>,
    pub services: Vec<String>,
}

#[async_trait]
pub trait EcsMeta: Send + Sync {
    /// Makes the writes durable together, or none of them.
    async fn ecs_apply(&self, writes: &[EcsWrite]) -> Result<()>;
    async fn ecs_load(&self) -> Result<EcsDocuments>;
}

#[async_trait]
impl EcsMeta for SqliteMetadata {
    async fn ecs_apply(&self, writes: &[EcsWrite]) -> Result<()> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for w in writes {
            let q = match w {
                EcsWrite::PutCluster { arn, doc } => {
                    sqlx::query("INSERT OR REPLACE INTO ecs_clusters (arn, doc) VALUES (?, ?)").bind(arn).bind(doc)
                }
                EcsWrite::DeleteCluster { arn } => sqlx::query("DELETE FROM ecs_clusters WHERE arn = ?").bind(arn),
                EcsWrite::PutTaskDefinition { family, revision, doc } => {
                    sqlx::query("INSERT OR REPLACE INTO ecs_task_definitions (family, revision, doc) VALUES (?, ?, ?)")
                        .bind(family)
                        .bind(revision)
                        .bind(doc)
                }
                EcsWrite::DeleteTaskDefinition { family, revision } => {
                    sqlx::query("DELETE FROM ecs_task_definitions WHERE family = ? AND revision = ?")
                        .bind(family)
                        .bind(revision)
                }
                EcsWrite::PutTask { arn, doc } => {
                    sqlx::query("INSERT OR REPLACE INTO ecs_tasks (arn, doc) VALUES (?, ?)").bind(arn).bind(doc)
                }
                EcsWrite::DeleteTask { arn } => sqlx::query("DELETE FROM ecs_tasks WHERE arn = ?").bind(arn),
                EcsWrite::PutService { arn, doc } => {
                    sqlx::query("INSERT OR REPLACE INTO ecs_services (arn, doc) VALUES (?, ?)").bind(arn).bind(doc)
                }
                EcsWrite::DeleteService { arn } => sqlx::query("DELETE FROM ecs_services WHERE arn = ?").bind(arn),
            };
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ecs_load(&self) -> Result<EcsDocuments> {
        let docs = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(self.pool()).await?;
            Ok::<_, crate::Error>(rows.iter().map(|r| r.get::<String, _>("doc")).collect::<Vec<_>>())
        };
        Ok(EcsDocuments {
            clusters: docs("SELECT doc FROM ecs_clusters ORDER BY arn").await?,
            task_definitions: docs("SELECT doc FROM ecs_task_definitions ORDER BY family, revision").await?,
            tasks: docs("SELECT doc FROM ecs_tasks ORDER BY arn").await?,
            services: docs("SELECT doc FROM ecs_services ORDER BY arn").await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_survives_reopening_and_deletes_apply() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let meta = SqliteMetadata::open(&db).await.unwrap();
        let put_td =
            |rev: u32| EcsWrite::PutTaskDefinition { family: "web".into(), revision: rev, doc: format!("{rev}") };
        meta.ecs_apply(&[
            EcsWrite::PutCluster { arn: "c1".into(), doc: "{\"c\":1}".into() },
            EcsWrite::PutCluster { arn: "c2".into(), doc: "{\"c\":2}".into() },
            put_td(2),
            put_td(1),
            EcsWrite::PutTask { arn: "t".into(), doc: "v1".into() },
            EcsWrite::PutService { arn: "s1".into(), doc: "s1".into() },
            EcsWrite::PutService { arn: "s2".into(), doc: "s2".into() },
        ])
        .await
        .unwrap();
        meta.ecs_apply(&[
            EcsWrite::PutTask { arn: "t".into(), doc: "v2".into() },
            EcsWrite::DeleteCluster { arn: "c2".into() },
            EcsWrite::DeleteTaskDefinition { family: "web".into(), revision: 2 },
            EcsWrite::DeleteService { arn: "s2".into() },
        ])
        .await
        .unwrap();
        drop(meta);
        let meta = SqliteMetadata::open(&db).await.unwrap();
        let docs = meta.ecs_load().await.unwrap();
        assert_eq!(docs.clusters, ["{\"c\":1}"]);
        assert_eq!(docs.task_definitions, ["1"]);
        assert_eq!(docs.tasks, ["v2"]);
        assert_eq!(docs.services, ["s1"]);
    }
}
