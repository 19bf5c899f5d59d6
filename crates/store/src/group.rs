//! Group commit for object writes, the store's hot write path: every PUT
//! that arrives while a commit is being made durable joins the next one, so
//! a burst of PUTs pays one WAL fsync rather than one each. A lone write
//! commits at once; nothing waits for company.
//!
//! Each write runs in a savepoint of its own, so one that fails is undone
//! alone and the others of its batch still commit. This module owns only
//! the batching; what a write does is `objects::upsert_object`'s.

use nimbus_core::objects::ObjectInfo;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::objects::upsert_object;
use crate::sqlite::insert_events;
use crate::{AsyncEvent, Error, Result};

/// Writes taken into one transaction at most: bounds the time the
/// database's write lock is held.
const MAX_BATCH: usize = 256;

/// An object to store with the notifications it queues; answered with the
/// data file it replaced.
pub(crate) struct Job {
    pub object: ObjectInfo,
    pub events: Vec<AsyncEvent>,
    pub done: oneshot::Sender<Result<Option<String>>>,
}

/// Starts the committer; it ends when the sender is dropped.
pub(crate) fn start(pool: SqlitePool) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            commit(&pool, std::mem::take(&mut batch)).await;
        }
    });
    tx
}

async fn commit(pool: &SqlitePool, batch: Vec<Job>) {
    let outcome = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(batch.len());
        for job in &batch {
            sqlx::query("SAVEPOINT one").execute(&mut *tx).await?;
            let result = async {
                let replaced = upsert_object(&mut tx, &job.object).await?;
                insert_events(&mut tx, &job.events).await?;
                Ok(replaced)
            }
            .await;
            if result.is_err() {
                sqlx::query("ROLLBACK TO one").execute(&mut *tx).await?;
            }
            sqlx::query("RELEASE one").execute(&mut *tx).await?;
            results.push(result);
        }
        tx.commit().await?;
        Ok::<_, Error>(results)
    }
    .await;
    match outcome {
        Ok(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.done.send(result);
            }
        }
        Err(e) => {
            let reason = e.to_string();
            for job in batch {
                let _ = job.done.send(Err(Error::Commit(reason.clone())));
            }
        }
    }
}
