//! Message move tasks (StartMessageMoveTask and friends): redrive a
//! dead-letter queue's messages back to where they came from, or to a
//! given queue. A task is a Tokio task moving batches of 100 messages in
//! one transaction each, at the requested rate; its record lives in memory
//! (a restart ends running tasks, as their messages are still in the
//! dead-letter queue, ready for a new one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::{lock, now_ms, Error, Queues, Result};

/// One task as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    pub handle: String,
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub status: String,
    pub source_arn: String,
    pub destination_arn: Option<String>,
    pub max_per_second: Option<u32>,
    pub moved: u64,
    pub to_move: u64,
    pub failure: Option<String>,
    pub started_ms: i64,
}

struct Entry {
    task: MoveTask,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
pub(crate) struct Tasks(Mutex<Vec<Entry>>);

/// Tasks kept per source queue (ListMessageMoveTasks shows at most ten).
const TASKS_KEPT: usize = 10;

impl Tasks {
    fn update(&self, handle: &str, f: impl FnOnce(&mut MoveTask)) {
        if let Some(e) = lock(&self.0).iter_mut().find(|e| e.task.handle == handle) {
            f(&mut e.task);
        }
    }
}

impl Queues {
    /// Starts moving the messages of dead-letter queue `source_arn`.
    pub fn start_move_task(
        self: &Arc<Self>,
        source_arn: &str,
        destination_arn: Option<&str>,
        max_per_second: Option<u32>,
    ) -> Result<String> {
        let source = self.by_arn(source_arn).map_err(|_| {
            Error::ResourceNotFound("The resource that you specified for the SourceArn parameter doesn't exist.".into())
        })?;
        if self.dead_letter_sources(source_arn)?.is_empty() {
            return Err(Error::InvalidParameterValue("Source queue must be configured as a Dead Letter Queue.".into()));
        }
        if destination_arn == Some(source_arn) {
            // Moved into itself, a message is there to move again: the task would never end.
            return Err(Error::InvalidParameterValue("The source and destination queues must be different.".into()));
        }
        if let Some(d) = destination_arn {
            self.by_arn(d).map_err(|_| {
                Error::ResourceNotFound(
                    "The resource that you specified for the DestinationArn parameter doesn't exist.".into(),
                )
            })?;
        }
        if max_per_second.is_some_and(|r| !(1..=500).contains(&r)) {
            return Err(Error::InvalidParameterValue(
                "Value for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: Must be between 1 and 500."
                    .into(),
            ));
        }
        let mut tasks = lock(&self.moves.0);
        if tasks.iter().any(|e| e.task.source_arn == source_arn && e.task.status == "RUNNING") {
            return Err(Error::UnsupportedOperation(
                "There is already a task running. Only one active task is allowed for a source queue arn at a given time."
                    .into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let handle = base64::engine::general_purpose::STANDARD
            .encode(serde_json::json!({"taskId": id, "sourceArn": source_arn}).to_string());
        let to_move = lock(&source.messages).len() as u64;
        let cancel = Arc::new(AtomicBool::new(false));
        // AWS lists a source's ten latest tasks; older ones are forgotten.
        let mine: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].task.source_arn == source_arn).collect();
        for &i in mine.iter().rev().skip(TASKS_KEPT - 1) {
            tasks.remove(i);
        }
        tasks.push(Entry {
            task: MoveTask {
                handle: handle.clone(),
                status: "RUNNING".into(),
                source_arn: source_arn.to_string(),
                destination_arn: destination_arn.map(str::to_string),
                max_per_second,
                moved: 0,
                to_move,
                failure: None,
                started_ms: now_ms(),
            },
            cancel: cancel.clone(),
        });
        let (this, h, source, dest) =
            (self.clone(), handle.clone(), source_arn.to_string(), destination_arn.map(str::to_string));
        tokio::spawn(async move {
            let run = this.run_move(source, dest.as_deref(), max_per_second, to_move, &cancel, &h).await;
            let (status, failure) = match run {
                Ok(()) if cancel.load(Ordering::Relaxed) => ("CANCELLED", None),
                Ok(()) => ("COMPLETED", None),
                Err(e) => ("FAILED", Some(e.to_string())),
            };
            this.moves.update(&h, |t| {
                t.status = status.into();
                t.failure = failure;
            });
        });
        Ok(handle)
    }

    async fn run_move(
        &self,
        source_arn: String,
        dest: Option<&str>,
        rate: Option<u32>,
        to_move: u64,
        cancel: &AtomicBool,
        handle: &str,
    ) -> Result<()> {
        // Each message may be 1 MiB, read from the store and written again:
        // a batch holds about twice its bytes while it moves.
        const BATCH: usize = 10;
        // At most what the queue held at the start, as AWS's task does: two
        // tasks moving between two queues would otherwise never end.
        let mut left = to_move;
        while !cancel.load(Ordering::Relaxed) && left > 0 {
            let source = self.by_arn(&source_arn)?;
            let n = rate.map_or(BATCH, |r| (r as usize).min(BATCH)).min(usize::try_from(left).unwrap_or(BATCH));
            let batch = lock(&source.messages).drain(now_ms(), n);
            if batch.is_empty() {
                return Ok(());
            }
            let count = batch.len() as u64;
            left = left.saturating_sub(count);
            // Each message goes back to its own source unless a destination
            // was given. A batch with a message that has nowhere to go is put
            // back whole: the task fails and the messages stay, as on AWS.
            let mut by_dest: std::collections::BTreeMap<Option<String>, Vec<_>> = Default::default();
            for l in batch {
                by_dest
                    .entry(dest.map(str::to_string).or_else(|| l.message.dead_letter_source.clone()))
                    .or_default()
                    .push(l);
            }
            let put_back = |groups: Vec<Vec<crate::state::Live>>| {
                let mut m = lock(&source.messages);
                groups.into_iter().flatten().for_each(|l| m.insert(l));
            };
            if by_dest.contains_key(&None) {
                put_back(by_dest.into_values().collect());
                return Err(Error::InvalidParameterValue("A message has no source queue to move to.".into()));
            }
            // Every target first: none missing, nothing moved yet.
            let mut targets = Vec::with_capacity(by_dest.len());
            for (to, moving) in by_dest {
                match self.by_arn(to.as_deref().unwrap_or_default()) {
                    Ok(target) => targets.push((target, moving)),
                    Err(e) => {
                        put_back(targets.into_iter().map(|(_, g)| g).chain([moving]).collect());
                        return Err(e);
                    }
                }
            }
            let reset = |m: &mut crate::StoredMessage| {
                m.receive_count = 0;
                m.first_receive_ms = None;
                m.dead_letter_source = None;
            };
            let mut targets = targets.into_iter();
            while let Some((target, moving)) = targets.next() {
                if let Err(e) = self.transfer(&target, moving, reset).await {
                    put_back(targets.map(|(_, g)| g).collect());
                    return Err(e);
                }
            }
            self.moves.update(handle, |t| t.moved += count);
            if let Some(r) = rate {
                tokio::time::sleep(Duration::from_secs_f64(count as f64 / f64::from(r))).await;
            }
        }
        Ok(())
    }

    /// Asks a running task to stop; returns how many messages it moved.
    pub fn cancel_move_task(&self, handle: &str) -> Result<u64> {
        let tasks = lock(&self.moves.0);
        let entry = tasks
            .iter()
            .find(|e| e.task.handle == handle)
            .ok_or_else(|| Error::ResourceNotFound("Task does not exist.".into()))?;
        if entry.task.status != "RUNNING" {
            return Err(Error::UnsupportedOperation("Only active tasks can be cancelled.".into()));
        }
        entry.cancel.store(true, Ordering::Relaxed);
        Ok(entry.task.moved)
    }

    /// The most recent tasks of a source queue, newest first.
    pub fn list_move_tasks(&self, source_arn: &str, max: usize) -> Result<Vec<MoveTask>> {
        self.by_arn(source_arn).map_err(|_| {
            Error::ResourceNotFound("The resource that you specified for the SourceArn parameter doesn't exist.".into())
        })?;
        let tasks = lock(&self.moves.0);
        Ok(tasks.iter().rev().filter(|e| e.task.source_arn == source_arn).take(max).map(|e| e.task.clone()).collect())
    }
}
