//! Invocation records and log lines: handed off the invoke path to one
//! writer task that stores them in batches, and read back for log queries.
//! Lines older than the retention period are pruned as new ones arrive.

use std::sync::Arc;

use nimbus_store::{InvocationRecord, LogEvent, Metadata};
use nimbus_worker::Outcome;
use tokio::sync::mpsc;

use crate::*;

pub(crate) type Batch = (InvocationRecord, Vec<LogEvent>);

const PRUNE_EVERY_MS: i64 = 60 * 60 * 1000;

/// Writes batches until every sender is gone.
/// How long the writer gathers records after the first one arrives.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) async fn run_recorder(meta: Arc<dyn Metadata>, mut rx: mpsc::UnboundedReceiver<Batch>, retention_ms: i64) {
    let mut last_prune = 0i64;
    while let Some(first) = rx.recv().await {
        // Gather what arrives shortly after: one transaction (and one disk
        // sync) per window rather than per invocation keeps the writer off
        // the CPU the invocations need.
        tokio::time::sleep(GATHER).await;
        let mut records = vec![first.0];
        let mut lines = first.1;
        while let Ok((r, l)) = rx.try_recv() {
            records.push(r);
            lines.extend(l);
            if records.len() >= 4096 {
                break;
            }
        }
        if let Err(e) = meta.record_invocations(&records, &lines).await {
            tracing::error!(error = %e, records = records.len(), "cannot store invocation records");
        }
        let now = now_ms();
        if now - last_prune > PRUNE_EVERY_MS {
            last_prune = now;
            if let Err(e) = meta.prune_logs(now - retention_ms).await {
                tracing::error!(error = %e, "cannot prune old logs");
            }
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
        max_memory_mb: o.max_memory_mb,
        outcome: o.status.to_string(),
        timestamp_ms: now_ms(),
    };
    let lines = o
        .lines
        .iter()
        .map(|(ts, message)| LogEvent {
            id: 0,
            log_group: config.logging.log_group.clone(),
            log_stream: o.log_stream.clone(),
            timestamp_ms: *ts,
            message: message.clone(),
        })
        .collect();
    (record, lines)
}

/// What FilterLogEvents asks for.
pub struct LogQuery<'a> {
    pub group: &'a str,
    pub stream: Option<&'a str>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Terms that must all appear in a line.
    pub terms: Vec<String>,
    pub token: Option<&'a str>,
    pub limit: Option<i64>,
}

/// A page of FilterLogEvents.
pub struct LogPage {
    pub events: Vec<LogEvent>,
    pub next_token: Option<String>,
}

impl Control {
    /// Log lines of a group, oldest first.
    pub async fn filter_log_events(&self, q: LogQuery<'_>) -> Result<LogPage> {
        let LogQuery { group, stream, start_ms, end_ms, terms, token, limit } = q;
        let after = match token {
            Some(t) => t.parse::<i64>().map_err(|_| invalid(format!("Invalid nextToken: {t}")))?,
            None => 0,
        };
        let limit = limit.unwrap_or(10_000).clamp(1, 10_000) as usize;
        let mut events = Vec::new();
        let mut cursor = after;
        let mut exhausted = false;
        while events.len() < limit {
            let page = self.meta.log_events(group, stream, cursor, start_ms.unwrap_or(0), limit).await?;
            let Some(last) = page.last() else {
                exhausted = true;
                break;
            };
            cursor = last.id;
            let fetched = page.len();
            events.extend(
                page.into_iter()
                    .filter(|e| end_ms.is_none_or(|end| e.timestamp_ms <= end))
                    .filter(|e| terms.iter().all(|t| e.message.contains(t.as_str()))),
            );
            if fetched < limit {
                exhausted = true;
                break;
            }
        }
        events.truncate(limit);
        let next_token = (!exhausted).then(|| events.last().map_or(cursor, |e| e.id).to_string());
        Ok(LogPage { events, next_token })
    }

    /// The metering records of a function, oldest first.
    pub async fn invocation_records(&self, function: &str) -> Result<Vec<InvocationRecord>> {
        Ok(self.meta.invocations(function).await?)
    }
}
