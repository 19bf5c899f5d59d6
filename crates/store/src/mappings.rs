//! Lambda event source mappings ([`MappingMeta`]) as documents, with the
//! (source, function) pair indexed: AWS allows one mapping per pair.
//! The rules and the pollers live in `nimbus-triggers`.

use async_trait::async_trait;
use nimbus_core::mappings::EventSourceMapping;
use sqlx::Row;

use crate::sqlite::{parse, parse_all, SqliteMetadata};
use crate::Result;

#[async_trait]
pub trait MappingMeta: Send + Sync {
    /// Stores a new mapping, or returns the UUID of the mapping that
    /// already joins its source and function (storing nothing).
    async fn create_mapping(&self, m: &EventSourceMapping) -> Result<Option<String>>;
    async fn get_mapping(&self, uuid: &str) -> Result<Option<EventSourceMapping>>;
    /// Every mapping, by UUID.
    async fn list_mappings(&self) -> Result<Vec<EventSourceMapping>>;
    /// Replaces a mapping's document; false if it is gone.
    async fn put_mapping(&self, m: &EventSourceMapping) -> Result<bool>;
    async fn delete_mapping(&self, uuid: &str) -> Result<()>;
}

#[async_trait]
impl MappingMeta for SqliteMetadata {
    async fn create_mapping(&self, m: &EventSourceMapping) -> Result<Option<String>> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let existing =
            sqlx::query("SELECT uuid FROM event_source_mappings WHERE event_source_arn = ? AND function_arn = ?")
                .bind(&m.event_source_arn)
                .bind(&m.function_arn)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = existing {
            return Ok(Some(row.get("uuid")));
        }
        sqlx::query(
            "INSERT INTO event_source_mappings (uuid, event_source_arn, function_arn, doc) VALUES (?, ?, ?, ?)",
        )
        .bind(&m.uuid)
        .bind(&m.event_source_arn)
        .bind(&m.function_arn)
        .bind(serde_json::to_string(m)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn get_mapping(&self, uuid: &str) -> Result<Option<EventSourceMapping>> {
        let row = sqlx::query("SELECT doc FROM event_source_mappings WHERE uuid = ?")
            .bind(uuid)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| parse(r.get::<&str, _>("doc"))).transpose()
    }

    async fn list_mappings(&self) -> Result<Vec<EventSourceMapping>> {
        let rows = sqlx::query("SELECT doc FROM event_source_mappings ORDER BY uuid").fetch_all(self.pool()).await?;
        parse_all(&rows)
    }

    async fn put_mapping(&self, m: &EventSourceMapping) -> Result<bool> {
        let done = sqlx::query("UPDATE event_source_mappings SET doc = ?, function_arn = ? WHERE uuid = ?")
            .bind(serde_json::to_string(m)?)
            .bind(&m.function_arn)
            .bind(&m.uuid)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_mapping(&self, uuid: &str) -> Result<()> {
        sqlx::query("DELETE FROM event_source_mappings WHERE uuid = ?").bind(uuid).execute(self.pool()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nimbus_core::mappings::MappingState;

    use super::*;

    fn mapping(uuid: &str, function: &str) -> EventSourceMapping {
        EventSourceMapping {
            uuid: uuid.into(),
            event_source_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            function_arn: function.into(),
            batch_size: 10,
            maximum_batching_window_s: 0,
            filters: vec![],
            function_response_types: vec![],
            maximum_concurrency: None,
            enabled: true,
            state: MappingState::Creating,
            last_modified_ms: 1,
            tags: Default::default(),
        }
    }

    #[tokio::test]
    async fn one_mapping_per_source_and_function_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let meta = SqliteMetadata::open(&db).await.unwrap();
        assert_eq!(meta.create_mapping(&mapping("a", "arn:f")).await.unwrap(), None);
        assert_eq!(meta.create_mapping(&mapping("b", "arn:f")).await.unwrap().as_deref(), Some("a"));
        assert_eq!(meta.create_mapping(&mapping("c", "arn:g")).await.unwrap(), None);
        let mut a = mapping("a", "arn:f");
        a.state = MappingState::Enabled;
        assert!(meta.put_mapping(&a).await.unwrap());
        assert!(!meta.put_mapping(&mapping("zz", "arn:h")).await.unwrap());
        drop(meta);
        let meta = SqliteMetadata::open(&db).await.unwrap();
        assert_eq!(meta.get_mapping("a").await.unwrap(), Some(a));
        meta.delete_mapping("c").await.unwrap();
        let uuids: Vec<_> = meta.list_mappings().await.unwrap().into_iter().map(|m| m.uuid).collect();
        assert_eq!(uuids, ["a"]);
    }
}
