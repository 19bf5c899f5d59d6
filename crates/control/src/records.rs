//! Invocation records and log lines: handed off the invoke path to one
//! writer task that stores them in batches (CloudWatch Logs, `nimbus-logs`,
//! reads the lines back).
//! A second task prunes every log line (functions', tasks' and
//! PutLogEvents') and record older than the node's retention, at start and
//! hourly: not as records arrive, or a node whose logs come only from
//! PutLogEvents and tasks would never prune.

use std::sync::Arc;

use nimbus_store::{InvocationRecord, InvocationSummary, LogEvent, Metadata};
use nimbus_worker::{Outcome, HELD_PER_LINE};
use tokio::sync::mpsc;

use crate::*;

pub(crate) type Batch = (InvocationRecord, Vec<LogEvent>);

/// The most log text (at its cost to hold) waiting for the writer. Past it
/// an invocation's lines are dropped, and one line says so: a function
/// printing millions of lines must not hold the node's memory, whoever's
/// lines wait meanwhile.
const BACKLOG_MAX: usize = 256 << 20;
/// Lines written in one transaction at most: SQLite has one writer, and
/// every other write (a PUT, a send) waits for this one's commit.
const LINES_PER_TRANSACTION: usize = 20_000;

fn cost(lines: &[LogEvent]) -> usize {
    lines.iter().map(|l| l.message.len() + HELD_PER_LINE).sum()
}

/// What the writer task is handed: a batch with what it holds of the
/// backlog, or a wait for all before it.
enum Item {
    /// An invocation's record and lines, or (no record) lines of one still running.
    Batch((Option<InvocationRecord>, Vec<LogEvent>), usize),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Hands invocation records and their lines to the writer task, within
/// [`BACKLOG_MAX`].
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::UnboundedSender<Item>,
    backlog: Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    /// Starts the writer task.
    pub(crate) fn start(
        meta: Arc<dyn Metadata>,
        retention_ms: i64,
        metrics: Arc<std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backlog_of_writer = backlog.clone();
        // The pruner ends with the writer, which ends with the node.
        let (writing, ended) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run_pruner(meta.clone(), retention_ms, ended));
        tokio::spawn(async move {
            run_recorder(meta, rx, backlog_of_writer, metrics).await;
            drop(writing);
        });
        Self { tx, backlog }
    }

    /// Queues a batch; fails only at shutdown, when the writer is gone.
    pub(crate) fn send(&self, (record, lines): Batch) -> Result<(), ()> {
        self.queue(Some(record), lines)
    }

    /// Queues lines of an invocation still running.
    pub(crate) fn send_lines(&self, lines: Vec<LogEvent>) -> Result<(), ()> {
        self.queue(None, lines)
    }

    fn queue(&self, record: Option<InvocationRecord>, mut lines: Vec<LogEvent>) -> Result<(), ()> {
        use std::sync::atomic::Ordering;
        let mut held = cost(&lines);
        if self.backlog.load(Ordering::Relaxed) + held > BACKLOG_MAX {
            let dropped = lines.len();
            lines.truncate(1);
            if let Some(first) = lines.first_mut() {
                first.message = format!(
                    "[Nimbus] {dropped} log lines of this invocation were dropped: the node's log writer is behind\n"
                );
            }
            held = cost(&lines);
        }
        self.backlog.fetch_add(held, Ordering::Relaxed);
        self.tx.send(Item::Batch((record, lines), held)).map_err(|_| ())
    }

    /// Returns once everything sent before is stored (a graceful stop).
    pub(crate) async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Prunes lines and records older than `retention_ms`, at start and then
/// every [`PRUNE_EVERY`], until the writer has ended (`ended` resolves).
async fn run_pruner(meta: Arc<dyn Metadata>, retention_ms: i64, mut ended: tokio::sync::oneshot::Receiver<()>) {
    loop {
        if let Err(e) = meta.prune_logs(now_ms() - retention_ms).await {
            tracing::error!(error = %e, "cannot prune old logs");
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = &mut ended => return,
        }
    }
}

/// How long the writer gathers records after the first one arrives. Each
/// batch is a transaction: a WAL write of every page it touches (a log
/// line goes into four B-trees) and a disk sync. At 100 ms rather than 20
/// the SQLite thread's CPU per warm invoke halved (63–77 µs to 32–44, a
/// no-op Python function driven by boto3, `BENCHMARKS.md`); lines and
/// records are readable that much later (CloudWatch's own delay is seconds).
const GATHER: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes batches until every sender is gone.
async fn run_recorder(
    meta: Arc<dyn Metadata>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    backlog: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Arc<std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>>,
) {
    while let Some(item) = rx.recv().await {
        let ((record, mut lines), mut held) = match item {
            Item::Batch(batch, held) => (batch, held),
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        // Gather what arrives shortly after: one transaction (and one disk
        // sync) per window rather than per invocation keeps the writer off
        // the CPU the invocations need.
        tokio::time::sleep(GATHER).await;
        let mut records: Vec<InvocationRecord> = record.into_iter().collect();
        let mut flushed = None;
        while records.len() < 4096 && lines.len() < LINES_PER_TRANSACTION {
            match rx.try_recv() {
                Ok(Item::Batch((r, l), h)) => {
                    records.extend(r);
                    lines.extend(l);
                    held += h;
                }
                // Answered once what came before it is written, below.
                Ok(Item::Flush(done)) => {
                    flushed = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        // The records with the first lines; the rest of a flood's lines in
        // transactions of their own, so that other writes take turns.
        let mut chunks = lines.chunks(LINES_PER_TRANSACTION);
        if let Err(e) = meta.record_invocations(&records, chunks.next().unwrap_or_default()).await {
            tracing::error!(error = %e, records = records.len(), lines = lines.len(), "cannot store invocation records");
        } else {
            for chunk in chunks {
                if let Err(e) = meta.record_invocations(&[], chunk).await {
                    tracing::error!(error = %e, lines = chunk.len(), "cannot store log lines");
                }
            }
        }
        backlog.fetch_sub(held, std::sync::atomic::Ordering::Relaxed);
        if let Some(m) = metrics.get() {
            m.platform().store_write("invocation_records", began.elapsed());
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

pub(crate) fn batch_of(config: &nimbus_core::function::FunctionConfig, request_id: &str, o: &Outcome) -> Batch {
    let record = InvocationRecord {
        request_id: request_id.to_string(),
        function: config.name.clone(),
        version: config.version.clone(),
        cold: o.init_ms.is_some(),
        init_ms: o.init_ms,
        duration_ms: o.duration_ms,
        billed_ms: o.billed_ms,
        memory_mb: config.memory_size,
        architecture: config.architectures.first().cloned().unwrap_or_else(|| "x86_64".into()),
        max_memory_mb: o.max_memory_mb,
        outcome: o.status.to_string(),
        timestamp_ms: now_ms(),
    };
    // Those the invocation's log sink took as it ran are stored already.
    (record, log_events(&config.logging.log_group, &o.log_stream, &o.lines[o.lines_sent..]))
}

/// Lines (epoch ms, text) of a function's log stream as stored.
pub(crate) fn log_events(group: &str, stream: &str, lines: &[(i64, String)]) -> Vec<LogEvent> {
    lines
        .iter()
        .map(|(ts, message)| LogEvent {
            id: 0,
            log_group: group.to_string(),
            log_stream: stream.to_string(),
            timestamp_ms: *ts,
            ingestion_ms: *ts,
            message: message.clone(),
        })
        .collect()
}

impl Control {
    /// The metering records of a function, oldest first.
    pub async fn invocation_records(&self, function: &str) -> Result<Vec<InvocationRecord>> {
        Ok(self.meta.invocations(function).await?)
    }

    /// Each invoked function's last invocation, and its invocations and
    /// errors since `since_ms`.
    pub async fn invocation_summaries(&self, functions: &[String], since_ms: i64) -> Result<Vec<InvocationSummary>> {
        Ok(self.meta.invocation_summaries(functions, since_ms).await?)
    }

    /// A function's cold starts per period (period start, count).
    pub async fn cold_starts(
        &self,
        function: &str,
        start_ms: i64,
        end_ms: i64,
        period_ms: i64,
    ) -> Result<Vec<(i64, u64)>> {
        Ok(self.meta.cold_starts(function, start_ms, end_ms, period_ms).await?)
    }

    /// A function's newest metering records, newest first.
    pub async fn recent_invocations(&self, function: &str, limit: usize) -> Result<Vec<InvocationRecord>> {
        Ok(self.meta.recent_invocations(function, limit).await?)
    }
}
