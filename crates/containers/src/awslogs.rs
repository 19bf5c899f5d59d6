//! The `awslogs` log driver: a container whose `logConfiguration` names it
//! has its stdout and stderr read by the node (one tokio task per
//! container, reading both pipes) and each line stored as a CloudWatch Logs
//! event in `awslogs-group`, stream `prefix/container-name/task-id`, in
//! batches (a batch is sent when it is full, 200 ms after its first line,
//! or when the pipes close).
//!
//! It owns the driver's options and the line splitting; the log store's
//! rules are `nimbus-logs`'. It must not decide when a task stops.

use std::sync::Arc;
use std::time::Duration;

use nimbus_logs::{InputEvent, Logs, EVENT_OVERHEAD, MAX_BATCH_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::types::ContainerDefinition;

/// Docker's awslogs driver cuts lines longer than this into several events.
const MAX_LINE: usize = 16 * 1024;
/// A batch is sent at most this long after its first line.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// PutLogEvents' limit on events per call.
const MAX_EVENTS: usize = 10_000;

/// A container's `awslogs` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub group: String,
    pub prefix: String,
    pub create_group: bool,
}

/// The container's `awslogs` options, if its log driver is `awslogs`; its
/// other drivers are kept in the definition and not acted on.
pub fn options(def: &ContainerDefinition) -> Result<Option<Options>, String> {
    let Some(config) = def.log_configuration.as_ref() else { return Ok(None) };
    if config["logDriver"].as_str() != Some("awslogs") {
        return Ok(None);
    }
    let option = |k: &str| config["options"][k].as_str().map(str::to_string);
    let group = option("awslogs-group").ok_or("the awslogs log driver needs the option awslogs-group")?;
    // Fargate requires a prefix; the stream is prefix/container/task-id.
    let prefix =
        option("awslogs-stream-prefix").ok_or("the awslogs log driver needs awslogs-stream-prefix on Fargate")?;
    Ok(Some(Options { group, prefix, create_group: option("awslogs-create-group").as_deref() == Some("true") }))
}

/// Where one container's lines go: its group and stream, made ready.
#[derive(Clone)]
pub struct LogSink {
    logs: Arc<Logs>,
    pub group: String,
    pub stream: String,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").field("group", &self.group).field("stream", &self.stream).finish()
    }
}

impl LogSink {
    /// Makes the container's stream (and group, with `awslogs-create-group`);
    /// the error is the reason the task fails to start, as AWS words it.
    pub async fn prepare(logs: Arc<Logs>, o: &Options, container: &str, task_id: &str) -> Result<Self, String> {
        let stream = format!("{}/{container}/{task_id}", o.prefix);
        logs.ensure_stream(&o.group, &stream, o.create_group).await.map_err(|e| {
            format!(
                "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: \
                 failed to create Cloudwatch log stream: {e}"
            )
        })?;
        Ok(Self { logs, group: o.group.clone(), stream })
    }

    /// Reads both pipes until they close, sending their lines in batches.
    pub async fn forward(self, stdout: impl AsyncRead + Unpin, stderr: impl AsyncRead + Unpin) {
        let (mut out, mut err) = (Pipe::new(stdout), Pipe::new(stderr));
        let mut batch = Batch::default();
        let mut lost = Lost::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        while !(out.closed && err.closed) {
            let flush_at = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let lines = tokio::select! {
                lines = out.read(), if !out.closed => lines,
                lines = err.read(), if !err.closed => lines,
                () = flush_at => {
                    self.send(&mut batch, &mut lost).await;
                    deadline = None;
                    continue;
                }
            };
            for line in lines {
                if batch.full_with(&line) {
                    self.send(&mut batch, &mut lost).await;
                }
                batch.push(line);
            }
            if !batch.events.is_empty() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_AFTER);
            }
        }
        self.send(&mut batch, &mut lost).await;
        if lost.lines > 0 {
            tracing::warn!(group = %self.group, stream = %self.stream, lines = lost.lines, "awslogs: lines lost");
        }
    }

    async fn send(&self, batch: &mut Batch, lost: &mut Lost) {
        let events = std::mem::take(&mut batch.events);
        batch.bytes = 0;
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.logs.put_log_events(&self.group, &self.stream, &events).await {
            lost.lines += events.len();
            // At most once a minute: a task printing without end while the
            // store refuses (its disk nearly full) must not flood the node's log.
            if lost.warned.is_none_or(|at| at.elapsed() >= LOST_WARN_EVERY) {
                tracing::warn!(group = %self.group, stream = %self.stream, error = %e, lines = lost.lines, "awslogs: lines lost");
                *lost = Lost { lines: 0, warned: Some(std::time::Instant::now()) };
            }
        }
    }
}

/// How often lost lines are reported while they are lost.
const LOST_WARN_EVERY: Duration = Duration::from_secs(60);

/// Lines the store refused since the last warning.
#[derive(Default)]
struct Lost {
    lines: usize,
    warned: Option<std::time::Instant>,
}

#[derive(Default)]
struct Batch {
    events: Vec<InputEvent>,
    bytes: usize,
}

impl Batch {
    fn full_with(&self, line: &str) -> bool {
        self.events.len() >= MAX_EVENTS || self.bytes + line.len() + EVENT_OVERHEAD > MAX_BATCH_BYTES
    }

    fn push(&mut self, message: String) {
        self.bytes += message.len() + EVENT_OVERHEAD;
        // PutLogEvents refuses a batch out of time order, so a clock that
        // steps back does not take a line's time before the last one's.
        let last = self.events.last().map_or(i64::MIN, |e| e.timestamp_ms);
        let timestamp_ms = chrono::Utc::now().timestamp_millis().max(last);
        self.events.push(InputEvent { timestamp_ms, message });
    }
}

/// One pipe and the start of a line not yet ended.
struct Pipe<R> {
    reader: R,
    pending: Vec<u8>,
    closed: bool,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: R) -> Self {
        Self { reader, pending: Vec::new(), closed: false }
    }

    /// The lines the next read completes; at the end, what is left.
    async fn read(&mut self) -> Vec<String> {
        let mut buf = [0u8; 8192];
        match self.reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.closed = true;
                let rest = std::mem::take(&mut self.pending);
                if rest.is_empty() {
                    Vec::new()
                } else {
                    vec![String::from_utf8_lossy(&rest).into_owned()]
                }
            }
            Ok(n) => split_lines(&mut self.pending, &buf[..n]),
        }
    }
}

/// Appends `data` to `pending` and takes out every complete line (without
/// its newline), cutting lines longer than [`MAX_LINE`].
fn split_lines(pending: &mut Vec<u8>, data: &[u8]) -> Vec<String> {
    pending.extend_from_slice(data);
    let mut lines = Vec::new();
    loop {
        let cut = match pending.iter().position(|b| *b == b'\n') {
            Some(i) if i <= MAX_LINE => Some((i, 1)),
            _ if pending.len() >= MAX_LINE => Some((MAX_LINE, 0)),
            _ => None,
        };
        let Some((at, skip)) = cut else { return lines };
        let line: Vec<u8> = pending.drain(..at + skip).take(at).collect();
        let line = String::from_utf8_lossy(&line);
        lines.push(line.strip_suffix('\r').unwrap_or(&line).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let mut pending = Vec::new();
        assert_eq!(split_lines(&mut pending, b"one\ntw"), ["one"]);
        assert_eq!(split_lines(&mut pending, b"o\r\n\nthree"), ["two", ""]);
        assert_eq!(pending, b"three");
        let long = vec![b'x'; MAX_LINE + 5];
        let lines = split_lines(&mut Vec::new(), &long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
    }

    #[test]
    fn options_need_a_group_and_a_prefix() {
        let def = |options: serde_json::Value| -> ContainerDefinition {
            serde_json::from_value(serde_json::json!({"name": "web", "image": "x",
                "logConfiguration": {"logDriver": "awslogs", "options": options}}))
            .unwrap()
        };
        let o = options(&def(serde_json::json!({"awslogs-group": "g", "awslogs-stream-prefix": "p",
            "awslogs-create-group": "true"})))
        .unwrap()
        .unwrap();
        assert_eq!(o, Options { group: "g".into(), prefix: "p".into(), create_group: true });
        assert!(options(&def(serde_json::json!({"awslogs-group": "g"}))).is_err());
        let plain: ContainerDefinition =
            serde_json::from_value(serde_json::json!({"name": "w", "image": "x"})).unwrap();
        assert_eq!(options(&plain).unwrap(), None);
    }

    #[tokio::test]
    async fn both_pipes_are_read_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(nimbus_store::SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap());
        let logs = Logs::open(meta, "us-east-1", "000000000000");
        let o = Options { group: "g".into(), prefix: "p".into(), create_group: false };
        let missing = LogSink::prepare(logs.clone(), &o, "web", "t1").await.unwrap_err();
        assert!(missing.starts_with("ResourceInitializationError: "), "{missing}");
        let o = Options { create_group: true, ..o };
        let sink = LogSink::prepare(logs.clone(), &o, "web", "t1").await.unwrap();
        assert_eq!(sink.stream, "p/web/t1");
        sink.forward(&b"out 1\nout 2\n"[..], &b"err 1\npartial"[..]).await;
        let q = nimbus_logs::FilterQuery { group: "g", ..Default::default() };
        let mut got: Vec<String> =
            logs.filter_log_events(q).await.unwrap().events.into_iter().map(|e| e.message).collect();
        got.sort();
        assert_eq!(got, ["err 1", "out 1", "out 2", "partial"]);
    }
}
