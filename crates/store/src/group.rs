//! Group commit for object writes, the store's hot write path: every PUT
//! that arrives while a commit is being made durable joins the next one, so
//! a burst of PUTs pays one WAL fsync rather than one each. A lone write
//! commits at once; nothing waits for company.
//!
//! A batch commits whole; if one of its writes fails, each is retried in a
//! transaction of its own, so that only the failing one fails. A write
//! whose precondition does not hold writes nothing and fails alone. This module owns only
//! the batching; what a write does is `objects::upsert_object`'s.

use nimbus_core::objects::ObjectInfo;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::objects::{current_etag, upsert_object, Precondition};
use crate::sqlite::insert_events;
use crate::{AsyncEvent, Error, Result, Unmet};

/// Writes taken into one transaction at most: bounds the time the
/// database's write lock is held.
const MAX_BATCH: usize = 256;

/// An object to store with the notifications it queues; answered with the
/// data file it replaced.
pub(crate) struct Job {
    pub object: ObjectInfo,
    pub events: Vec<AsyncEvent>,
    pub condition: Option<Precondition>,
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
    let all = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut replaced = Vec::with_capacity(batch.len());
        for job in &batch {
            replaced.push(write(&mut tx, job).await?);
        }
        tx.commit().await?;
        Ok::<_, Error>(replaced)
    }
    .await;
    match all {
        Ok(replaced) => {
            for (job, r) in batch.into_iter().zip(replaced) {
                let _ = job.done.send(r.map_err(Error::Unmet));
            }
        }
        // One write failed and the batch was rolled back: each is tried
        // alone, so that only the failing one fails.
        Err(_) if batch.len() > 1 => {
            for job in batch {
                let alone = async {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let r = write(&mut tx, &job).await?;
                    tx.commit().await?;
                    r.map_err(Error::Unmet)
                }
                .await;
                let _ = job.done.send(alone);
            }
        }
        Err(e) => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.done.send(Err(e));
            }
        }
    }
}

/// Stores one job's object, unless its precondition does not hold.
async fn write(tx: &mut sqlx::SqliteConnection, job: &Job) -> Result<Result<Option<String>, Unmet>> {
    // Checked where the object is stored: a DeleteBucket between the
    // request's own look and this commit would leave the object in no
    // bucket, and in a later bucket of the same name.
    if !crate::objects::bucket_exists(tx, &job.object.bucket).await? {
        return Ok(Err(Unmet::NoBucket));
    }
    if let Some(condition) = &job.condition {
        if let Err(unmet) = condition.check(current_etag(tx, &job.object.bucket, &job.object.key).await?.as_deref()) {
            return Ok(Err(unmet));
        }
    }
    let replaced = upsert_object(tx, &job.object).await?;
    insert_events(tx, &job.events).await?;
    Ok(Ok(replaced))
}
