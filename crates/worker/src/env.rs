//! One execution environment: a runtime process, its Runtime API listener,
//! the invocation it is serving, and the log lines it writes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_core::function::FunctionConfig;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::Instrument;

use crate::logs::{Platform, Report};
use crate::{Error, Invocation};

/// What every environment of a runtime starts from, before it knows its function.
#[derive(Clone)]
pub struct Base {
    pub runtime: String,
    /// The interpreter of a managed runtime; `None` for `provided`.
    pub interpreter: Option<String>,
    pub runtime_dir: PathBuf,
    pub region: String,
    pub api_endpoint: String,
    /// Run inside namespaces (`None`: a plain child process).
    pub sandbox: Option<crate::SandboxConfig>,
    /// Shared host mount points a sandbox binds read-only, `(host, inside)`:
    /// the runtime's SDK, published on them once installed.
    pub shared: Vec<(PathBuf, PathBuf)>,
    /// Symbolic links a sandbox's root has, `(inside, target)`: a Node.js
    /// runtime's `/node_modules`, its SDK, where Node's own resolution
    /// finds it from every module, ES modules included (which do not read
    /// `NODE_PATH`). Not for a function whose layers hold Node.js packages:
    /// a root's `node_modules` would come before theirs.
    pub links: Vec<(PathBuf, PathBuf)>,
    /// A container image's flattened root: the environment runs the
    /// image's entrypoint there instead of a runtime (and holds the root
    /// against garbage collection while it lives).
    pub image: Option<nimbus_images::Root>,
    /// For an image whose entrypoint is AWS's Python runtime interface
    /// client: its templates start the client ahead.
    pub image_preload: Option<ImagePreload>,
    /// The runtime's zygote, which an environment started ahead is forked
    /// from instead of starting an interpreter: set only for a sandboxed
    /// Python runtime (an image function has no runtime).
    pub zygote: Option<Arc<crate::zygote::Zygote>>,
    /// For Node.js: the runtime registers its ES module resolution hooks
    /// (`runtimes/nodejs/esm-paths.mjs`) before its function is known.
    /// Node 20 runs them on a thread of their own, which costs a template
    /// about 80 ms of CPU, so only the templates of functions that may
    /// import (see [`node_imports`]) and have no `/node_modules` (see
    /// `links`) have them.
    pub esm_hooks: bool,
}

/// A Python image's interpreter and `Env`, which its templates start
/// `runtimes/python/image-preload.py` with: the client's modules are
/// imported before the function is known, as a zip runtime's are.
#[derive(Clone)]
pub struct ImagePreload {
    pub interpreter: String,
    pub env: Vec<(String, String)>,
    /// The memory of the function whose deploy made the template: a
    /// template that runs the image's code (its client, its `site`) runs it
    /// within that function's memory and CPU share, not a template's.
    pub memory_mb: u32,
}

impl ImagePreload {
    /// Set for `python… -m awslambdaric …` (after ImageConfig overrides).
    pub fn of(image: &nimbus_core::function::FunctionImage, memory_mb: u32) -> Option<Self> {
        let argv = image.argv();
        let python = argv
            .first()
            .and_then(|p| std::path::Path::new(p).file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("python"));
        (python && argv.get(1..3) == Some(&["-m".to_string(), "awslambdaric".to_string()][..])).then(|| Self {
            interpreter: argv[0].clone(),
            env: image_env(image).into_iter().collect(),
            memory_mb,
        })
    }
}

/// The image config's `Env` (`K=V` entries).
fn image_env(image: &nimbus_core::function::FunctionImage) -> std::collections::BTreeMap<String, String> {
    image.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Started with `-c` by a Python image's templates.
const IMAGE_PRELOAD: &str = include_str!("../../../runtimes/python/image-preload.py");

impl Base {
    /// A custom runtime (`provided*`): the function brings its own bootstrap.
    pub fn custom(&self) -> bool {
        self.runtime.starts_with("provided")
    }

    /// Whether an environment can be started before its function is known:
    /// all but a custom runtime outside a sandbox, whose process is the
    /// function's own bootstrap.
    pub fn starts_ahead(&self) -> bool {
        self.sandbox.is_some() || !self.custom()
    }
}

/// The function an environment is for.
#[derive(Clone)]
pub struct Spec {
    pub base: Base,
    /// The pool key of the configuration.
    pub key: String,
    pub config: FunctionConfig,
    pub code_dir: PathBuf,
    pub keys: crate::SessionKeys,
    /// The function's layers, merged, mounted at `/opt` in a sandbox.
    pub layers: Option<PathBuf>,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE`: `on-demand` or `provisioned-concurrency`.
    pub init_type: &'static str,
}

/// The result of one invocation, as the caller and the log see it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub payload: Bytes,
    /// `Unhandled` when the function or the platform failed.
    pub function_error: Option<String>,
    /// This invocation's log lines (epoch ms, text): START, the function's
    /// output, END, REPORT.
    pub lines: Vec<(i64, String)>,
    /// How many of `lines` (the first) went to the invocation's log sink
    /// while it ran.
    pub lines_sent: usize,
    /// The environment's log stream, e.g. `2026/01/01/[$LATEST]<32 hex>`.
    pub log_stream: String,
    /// `success`, `error` or `timeout`.
    pub status: &'static str,
    pub billed_ms: u64,
    pub duration_ms: f64,
    pub init_ms: Option<f64>,
    pub max_memory_mb: u64,
    /// What ran at once when the invocation was admitted.
    pub concurrency: nimbus_core::Concurrency,
    /// Whether the environment may serve again.
    pub(crate) reusable: bool,
    /// Whether the runtime was gone before it asked for this invocation,
    /// which it never saw (it is then served elsewhere).
    pub(crate) undelivered: bool,
}

impl Outcome {
    /// A failure of the platform before the function ran.
    pub(crate) fn platform_failure(inv: &Invocation, error_type: &str, message: &str) -> Self {
        let id = &inv.request_id;
        let now = chrono::Utc::now().timestamp_millis();
        let message = format!("RequestId: {id} Error: {message}");
        let platform = Platform::of(&inv.config.logging);
        let report = Report {
            request_id: id,
            duration_ms: 0.0,
            billed_ms: 0,
            memory_mb: inv.config.memory_size,
            max_memory_mb: 0,
            init_ms: None,
            status: Some("error"),
            error_type: Some(error_type),
        };
        let lines = [
            platform.start(id, &inv.config.version),
            platform.failure(error_type, &message),
            platform.end(&report, 0),
            platform.report(&report),
        ];
        Self {
            payload: platform_error(error_type, message.clone()),
            function_error: Some("Unhandled".into()),
            lines: lines.into_iter().flatten().map(|l| (now, l)).collect(),
            lines_sent: 0,
            log_stream: log_stream_name(&inv.config.version),
            status: "error",
            billed_ms: 0,
            duration_ms: 0.0,
            init_ms: None,
            max_memory_mb: 0,
            concurrency: Default::default(),
            reusable: false,
            undelivered: false,
        }
    }

    /// The log as text, one line each, as `X-Amz-Log-Result` carries it.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for (_, line) in &self.lines {
            text.push_str(line);
            if !line.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }
}

pub(crate) struct Job {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub invoked_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
}

pub(crate) enum Reply {
    Response(Bytes),
    Error(Bytes),
    /// The response went to the stream sink; an error the runtime reported
    /// in the stream's trailers, if any.
    Streamed(Option<Bytes>),
    InitError(Bytes),
    Exited(String),
}

/// The invocation an environment is serving.
struct Current {
    id: String,
    reply: oneshot::Sender<Reply>,
    stream: Option<crate::StreamSink>,
}

/// State shared between the invoke path, the Runtime API and the process watcher.
pub(crate) struct Shared {
    pub jobs_rx: Mutex<mpsc::Receiver<Job>>,
    current: SyncMutex<Option<Current>>,
    logs: SyncMutex<Held>,
    alive: AtomicBool,
    ready_at: SyncMutex<Option<Instant>>,
    /// The runtime's stdout and stderr (one pipe), read by the log reader
    /// as output arrives and by the invoke path once the response is in.
    output: tokio::net::unix::pipe::Receiver,
    /// What has been read of a line not yet ended.
    partial: SyncMutex<Vec<u8>>,
    /// Notified when the process has exited and been reaped.
    exited: tokio::sync::Notify,
    /// Whether a local channel serves the runtime (`Some(true)` while it
    /// reads, `Some(false)` once it stopped): an exit is reported only after
    /// the channel has read what the runtime wrote before it, so that an
    /// error posted just before exiting is not overtaken by the exit.
    pub channel_open: tokio::sync::watch::Sender<Option<bool>>,
    /// Notified when the runtime first asks for an invocation (init done).
    ready: tokio::sync::Notify,
    /// An init error reported before any invocation was handed over.
    init_error: SyncMutex<Option<Bytes>>,
    /// How the process ended, once it has.
    exit_status: SyncMutex<Option<String>>,
    /// Set when a template is given its function.
    specialized: AtomicBool,
    /// The function's `ApplicationLogLevel` under JSON logging, as a
    /// [`level_rank`] (0: nothing is filtered here).
    app_level: std::sync::atomic::AtomicU8,
    /// Set when the node stops the process itself (retiring it, at a
    /// timeout, at shutdown): its exit is then no news.
    stopping: AtomicBool,
    /// One body the runtime posts is read at a time: each is held in the
    /// node's memory (up to 6 MiB), not the function's cgroup.
    pub posting: tokio::sync::Semaphore,
}

/// How often a running invocation's log lines go to its sink: CloudWatch
/// shows a Lambda function's output within seconds of its writing it.
const LOG_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The most output one [`Shared::read_output`] takes: a runtime that
/// writes without pause leaves the rest to the log reader.
const READ_OUTPUT_MAX: usize = 1 << 20;

/// The longest log line: CloudWatch Logs' largest event (256 KiB, less its
/// 26 bytes of overhead). A longer line is split into lines of this size.
const LINE_MAX: usize = (256 << 10) - 26;
/// The most output held in the node between two invocations' ends (the
/// lines, and what each costs to hold). The function's output is in the
/// node's memory, not its cgroup's, so a function printing without end
/// must not grow it: the rest is dropped, and a line says how much.
const HELD_MAX: usize = 32 << 20;

/// Opens a line of Nimbus's own runtimes that is one log record of several
/// lines (a logged traceback, a multi-line message), whose newlines they
/// write as `\r` to keep it one line on the pipe: the record is stored
/// with its newlines, as AWS's runtimes keep them (they write records to a
/// log descriptor of their own). Other output is stored as written.
const RECORD_MARK: u8 = 0x1e;
/// AWS's log levels in order, 1 (TRACE) to 6 (FATAL); 0 for another word.
fn level_rank(level: &str) -> u8 {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level)).map_or(0, |i| i as u8 + 1)
}

/// Whether a line of the function's output is a JSON object whose `level`
/// is below `min` (a [`level_rank`]): under JSON logging, Lambda drops such
/// lines whoever wrote them (a library's own logger, a `print`), not only
/// those of the runtime's logger, which filters its own.
fn below_level(line: &str, min: u8) -> bool {
    if min <= 1 || !line.trim_start().starts_with('{') || !line.contains("\"level\"") {
        return false;
    }
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) else { return false };
    o.get("level").and_then(serde_json::Value::as_str).map(level_rank).is_some_and(|r| r > 0 && r < min)
}

/// What a line costs beyond its text, here and until it is stored (its
/// log event's strings and slots: an empty line held about 200 bytes).
pub const HELD_PER_LINE: usize = 256;

/// The output lines read since the last invocation ended.
#[derive(Default)]
struct Held {
    lines: Vec<(i64, String)>,
    bytes: usize,
    dropped: usize,
}

impl Shared {
    pub fn mark_ready(&self) {
        let mut r = self.ready_at.lock().unwrap_or_else(|e| e.into_inner());
        r.get_or_insert_with(Instant::now);
        self.ready.notify_waiters();
    }

    fn is_ready(&self) -> bool {
        self.ready_at.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Whether `id` is the invocation under way.
    pub fn is_current(&self, id: &str) -> bool {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|c| c.id == id)
    }

    /// Completes the current invocation if `id` names it.
    pub fn complete(&self, id: &str, reply: Reply) -> bool {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match cur.take() {
            Some(c) if c.id == id => {
                let _ = c.reply.send(reply);
                true
            }
            other => {
                *cur = other;
                false
            }
        }
    }

    /// The stream sink of the current invocation: `None` when `id` is not
    /// current, `Some(None)` when its caller takes no stream.
    pub fn stream_of(&self, id: &str) -> Option<Option<crate::StreamSink>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().filter(|c| c.id == id).map(|c| c.stream.clone())
    }

    /// Fails whatever invocation is current (init errors, process exit).
    pub fn fail_current(&self, reply: Reply) {
        if let Some(c) = self.current.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.reply.send(reply);
        }
    }

    /// An init error goes to the current invocation, or waits for the next.
    pub fn init_failed(&self, body: Bytes) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match cur.take() {
            Some(c) => {
                let _ = c.reply.send(Reply::InitError(body));
            }
            None => {
                *self.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
                // Init is over, failed: whoever waits for it need not wait
                // for its time limit (the runtime may never exit).
                self.ready.notify_waiters();
            }
        }
    }

    /// Whether init is over: the runtime asked for work, or reported an init error.
    fn init_over(&self) -> bool {
        self.is_ready() || self.init_error.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Puts `line` before every line the environment has logged: its
    /// runtime may have written before it was given its function.
    fn open_log(&self, line: String) {
        let mut held = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        held.bytes += line.len() + HELD_PER_LINE;
        // First in time as well as in order: readers sort by time.
        let now = chrono::Utc::now().timestamp_millis();
        let at = held.lines.first().map_or(now, |(t, _)| (*t).min(now));
        held.lines.insert(0, (at, line));
    }

    fn push_log(&self, bytes: &[u8]) {
        let mut held = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let cost = bytes.len() + HELD_PER_LINE;
        if held.bytes + cost > HELD_MAX {
            held.dropped += bytes.len();
            return;
        }
        let line = match bytes.strip_prefix(&[RECORD_MARK]) {
            Some(record) => String::from_utf8_lossy(record).replace('\r', "\n"),
            None => String::from_utf8_lossy(bytes).into_owned(),
        };
        if below_level(&line, self.app_level.load(Ordering::Relaxed)) {
            return;
        }
        held.bytes += cost;
        held.lines.push((chrono::Utc::now().timestamp_millis(), line));
    }

    /// Reads what the runtime has written so far, without waiting, and logs
    /// each whole line (with its newline, as in AWS's log events). True once
    /// the pipe is closed. An unended line is logged as it is when the pipe
    /// closes or at an invocation's end (`now`): output without a newline
    /// (`print(end="")`, `process.stdout.write`) belongs to the invocation
    /// that wrote it, not to the next one.
    ///
    /// Called once a response is in (`now`), this reads everything the
    /// runtime wrote before it: its writes to the pipe had returned before
    /// it sent the response. It reads the pipe itself then, not as tokio's
    /// readiness says: the IO driver may not have seen the pipe's event yet
    /// when it has seen the response's. The log reader (not `now`) goes by
    /// readiness, which a read that finds nothing clears. Neither waits:
    /// tokio made the pipe non-blocking.
    fn read_output(&self, now: bool) -> bool {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; 16 << 10];
        let mut taken = 0;
        let closed = loop {
            let read = match now {
                true => rustix::io::read(&self.output, &mut buf).map_err(std::io::Error::from),
                false => self.output.try_read(&mut buf),
            };
            match read {
                Ok(0) => break true,
                Ok(n) => {
                    partial.extend_from_slice(&buf[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
            if taken >= READ_OUTPUT_MAX {
                break false;
            }
        };
        let mut start = 0;
        while let Some(end) = partial[start..].iter().take(LINE_MAX).position(|&b| b == b'\n') {
            self.push_log(&partial[start..=start + end]);
            start += end + 1;
        }
        // A line too long for one event goes as several, as it arrives.
        while partial.len() - start >= LINE_MAX {
            self.push_log(&partial[start..start + LINE_MAX]);
            start += LINE_MAX;
        }
        partial.drain(..start);
        if (closed || now) && !partial.is_empty() {
            self.push_log(&partial);
            partial.clear();
        }
        closed
    }

    /// The lines logged so far, for an invocation still running: the bytes
    /// they cost stay counted until its end ([`Shared::drain_logs`]), so that
    /// the invocation keeps within [`HELD_MAX`] however often it is asked
    /// (the invocation holds them until its end too).
    fn take_logs(&self) -> Vec<(i64, String)> {
        std::mem::take(&mut self.logs.lock().unwrap_or_else(|e| e.into_inner()).lines)
    }

    fn drain_logs(&self) -> Vec<(i64, String)> {
        let Held { mut lines, dropped, .. } = std::mem::take(&mut *self.logs.lock().unwrap_or_else(|e| e.into_inner()));
        if dropped > 0 {
            let mb = HELD_MAX >> 20;
            let line = format!("[Nimbus] {dropped} bytes of output were dropped: more than {mb} MiB arrived between two invocations' ends.\n");
            lines.push((chrono::Utc::now().timestamp_millis(), line));
        }
        lines
    }
}

pub(crate) struct Env {
    key: String,
    /// Where the function's environment line goes (a runtime started ahead
    /// waits for it); dropped once sent.
    control: Option<std::os::unix::net::UnixStream>,
    /// The sandbox's mount points for code, layers and `/tmp`.
    slots: Option<nimbus_sandbox::namespaces::Slots>,
    /// Serves the local channel of our own runtimes.
    channel: Option<tokio::task::JoinHandle<()>>,
    /// The Runtime API as the runtime reaches it.
    runtime_api: String,
    shared: Arc<Shared>,
    jobs_tx: mpsc::Sender<Job>,
    kill: SyncMutex<Option<oneshot::Sender<()>>>,
    api_task: tokio::task::JoinHandle<()>,
    pid: Option<u32>,
    /// The runtime's own process where it is not `pid` (forked by a zygote).
    runtime_pid: Option<u32>,
    /// Holds invocations to the CPU share; set with the share, after init.
    pacer: Option<crate::pace::Pacer>,
    /// What the runtime holds resident but its cgroup was never charged
    /// for, measured after init; see [`Env::after_init`].
    uncharged_bytes: u64,
    spawned_at: Instant,
    memory_mb: u32,
    timeout: Duration,
    version: String,
    log_stream: String,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE` of its function.
    init_type: &'static str,
    /// How the platform's lines read in the function's log.
    platform: Platform,
    cgroup: Option<Arc<nimbus_sandbox::cgroup::Cgroup>>,
    /// Made with a CPU limit (an image template running the image's code
    /// ahead), lifted when a function takes it.
    cpu_limited_ahead: bool,
    /// Forwards the sandbox's API listener to the real API.
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// The image root the sandbox runs on, held while it lives.
    _image: Option<nimbus_images::Root>,
    /// The host user the sandbox runs as, its own while it lives.
    _user: Option<nimbus_sandbox::users::User>,
}

/// Inside every sandbox the Runtime API is here, as on AWS.
const SANDBOX_RUNTIME_API: &str = "127.0.0.1:9001";
/// Inside every sandbox the Nimbus API is forwarded from here.
const SANDBOX_API: &str = "127.0.0.1:9070";

/// How many connections one environment may hold open to each listener
/// the node serves it (the Runtime API, the forwarded API): a runtime uses
/// one or two; the rest wait in the listener's backlog. Without a bound a
/// function could hold the node's descriptors, or (forwarded) the node's
/// ports to its own API, which every other environment's SDK needs.
const SANDBOX_CONNECTIONS: usize = 64;

/// Forwards connections from the sandbox's API listener to the real API,
/// each within the sandbox's own bound and the node's for all sandboxes.
async fn forward_api(listener: tokio::net::TcpListener, api: String, node: Arc<tokio::sync::Semaphore>) {
    let open = Arc::new(tokio::sync::Semaphore::new(SANDBOX_CONNECTIONS));
    while let Ok(permit) = open.clone().acquire_owned().await {
        let Ok((mut inside, _)) = listener.accept().await else { return };
        let (api, node) = (api.clone(), node.clone());
        tokio::spawn(async move {
            let Ok(_shared) = node.acquire_owned().await else { return };
            if let Ok(mut outside) = tokio::net::TcpStream::connect(&api).await {
                let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
            }
            drop(permit);
        });
    }
}

/// How an environment's process is started: spawned as a plain child, or
/// as a sandbox's stage one, cloned by the node's sandbox factory with the
/// control socket as its stdin.
enum Start<'a> {
    Plain(Command),
    Sandbox(&'a nimbus_sandbox::factory::Factory, Box<nimbus_sandbox::namespaces::Spec>, std::os::fd::OwnedFd),
}

/// A sandbox stage one has made, ready for its runtime.
struct Prepared {
    /// The Runtime API listener, bound inside the sandbox's network namespace.
    runtime_api: tokio::net::TcpListener,
    cgroup: Option<nimbus_sandbox::cgroup::Cgroup>,
    /// Forwards the sandbox's API listener to the real API.
    forwarder: tokio::task::JoinHandle<()>,
    /// The control socket, handed back for the function's environment line.
    control: std::os::unix::net::UnixStream,
}

/// Waits for stage one's namespaces, puts it in its cgroup, binds the
/// Runtime API inside its network namespace, and lets it go on.
async fn prepare_sandbox(
    control: std::os::unix::net::UnixStream,
    pid: u32,
    sb: &crate::SandboxConfig,
    id: &str,
    api_endpoint: &str,
    limits: nimbus_sandbox::cgroup::Limits,
) -> Result<Prepared, Error> {
    use std::io::{Read, Write};
    let layout = sb.cgroups.clone();
    let (id, group) = (id.to_string(), sb.cgroup_group.clone());
    let work = tokio::task::spawn_blocking(
        move || -> std::io::Result<(
            [std::net::TcpListener; 2],
            Option<nimbus_sandbox::cgroup::Cgroup>,
            std::os::unix::net::UnixStream,
        )> {
            let mut control = control;
            control.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut ready = [0u8; 1];
            control.read_exact(&mut ready)?;
            let cgroup = match &layout {
                Some(l) => {
                    let cg = nimbus_sandbox::cgroup::Cgroup::create(l, &group, &id, limits)?;
                    cg.attach(pid)?;
                    Some(cg)
                }
                None => None,
            };
            // setns changes only the calling thread; this thread ends right after.
            let listeners = std::thread::spawn(move || -> std::io::Result<[std::net::TcpListener; 2]> {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
                let bound =
                    [std::net::TcpListener::bind(SANDBOX_RUNTIME_API)?, std::net::TcpListener::bind(SANDBOX_API)?];
                for l in &bound {
                    l.set_nonblocking(true)?;
                }
                Ok(bound)
            })
            .join()
            .map_err(|_| std::io::Error::other("listener thread panicked"))??;
            control.write_all(b"g")?;
            control.set_read_timeout(None)?;
            Ok((listeners, cgroup, control))
        },
    );
    let ([runtime_api, api], cgroup, control) = work
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("preparing the sandbox: {e}")))?;
    let to_tokio = |l| tokio::net::TcpListener::from_std(l).map_err(|e: std::io::Error| Error::Internal(e.to_string()));
    let (runtime_api, api) = (to_tokio(runtime_api)?, to_tokio(api)?);
    let target = api_endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let forwarder = tokio::spawn(forward_api(api, target, sb.api_connections.clone()));
    Ok(Prepared { runtime_api, cgroup, forwarder, control })
}

/// Waits for a paused sandbox (stage one's pid `stage_one`) to be built,
/// then has the zygote fork an environment into it as the sandbox's user
/// `uid`, with `log` as its output: the environment's control socket and
/// host pid.
async fn join_from_zygote(
    zygote: Arc<crate::zygote::Zygote>,
    control: std::os::unix::net::UnixStream,
    stage_one: u32,
    uid: u32,
    log: std::os::fd::OwnedFd,
) -> Result<(std::os::unix::net::UnixStream, u32), Error> {
    use std::io::Read;
    let work = tokio::task::spawn_blocking(move || -> std::io::Result<(std::os::unix::net::UnixStream, u32)> {
        let mut control = control;
        control.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut said = [0u8; 1];
        control.read_exact(&mut said)?;
        if &said != b"p" {
            // Stage two's error, which it writes before closing.
            let mut rest = String::new();
            let _ = control.read_to_string(&mut rest);
            return Err(std::io::Error::other(format!("{}{rest}", String::from_utf8_lossy(&said))));
        }
        let sandbox = crate::zygote::first_child(stage_one)?
            .ok_or_else(|| std::io::Error::other("the paused sandbox is gone"))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let forked = zygote.fork(sandbox, uid, theirs.into(), log)?;
        Ok((ours, forked))
    });
    work.await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("forking from the zygote: {e}")))
}

/// A sandbox's cgroup before its function is known (the largest Lambda size).
const TEMPLATE_MEMORY_MB: u64 = 10_240;

/// A sandbox's limits until its function is known. Generous: specialisation
/// sets the function's memory, and its CPU share once its init is done
/// (AWS boosts CPU during init). But a template (`ahead`) that runs an
/// image's code runs it within the deploying function's memory and share.
/// What AWS refuses of an image's launch before it runs: a working
/// directory that is not an absolute path to an entry of the image, and an
/// entrypoint given by path that the image does not have (a program
/// without a `/` is found on the image's `PATH` at exec).
fn check_image_launch(root: &Path, program: &str, dir: &str) -> Result<(), Error> {
    if !dir.starts_with('/') {
        return Err(Error::InvalidWorkingDir(format!(
            "the working directory '{dir}' is invalid, it needs to be an absolute path"
        )));
    }
    if !in_image(root, dir) {
        return Err(Error::InvalidWorkingDir(format!("the working directory '{dir}' does not exist in the image")));
    }
    let path = if program.starts_with('/') { program.to_string() } else { format!("{dir}/{program}") };
    if program.contains('/') && !in_image(root, &path) {
        return Err(Error::InvalidEntrypoint(format!("fork/exec {program}: no such file or directory")));
    }
    Ok(())
}

/// Whether `path` names an entry of the image rooted at `root`, its links
/// resolved as the sandbox would resolve them: inside the root, never on
/// the host.
fn in_image(root: &Path, path: &str) -> bool {
    let parts = |p: &str| p.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect::<Vec<_>>();
    let mut todo: std::collections::VecDeque<String> = parts(path).into();
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        let Ok(meta) = std::fs::symlink_metadata(root.join(&next)) else { return false };
        if !meta.file_type().is_symlink() {
            at = next;
            continue;
        }
        links += 1;
        let Ok(target) = std::fs::read_link(root.join(&next)) else { return false };
        let target = target.to_string_lossy().into_owned();
        if links > 40 {
            return false;
        }
        if target.starts_with('/') {
            at = PathBuf::new();
        }
        for p in parts(&target).into_iter().rev() {
            todo.push_front(p);
        }
    }
    true
}

fn template_limits(base: &Base, ahead: bool) -> nimbus_sandbox::cgroup::Limits {
    match &base.image_preload {
        Some(p) if ahead && base.image.is_some() => {
            nimbus_sandbox::cgroup::Limits::for_memory_mb(u64::from(p.memory_mb))
        }
        _ => nimbus_sandbox::cgroup::Limits {
            cpu_millis: None,
            ..nimbus_sandbox::cgroup::Limits::for_memory_mb(TEMPLATE_MEMORY_MB)
        },
    }
}

/// Kills what is left in a cgroup and removes it once the kernel has let
/// its last process go.
async fn remove_cgroup(cg: &nimbus_sandbox::cgroup::Cgroup) {
    for _ in 0..100 {
        cg.kill_all();
        if cg.remove().is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(?cg, "cgroup still busy; left behind");
}

fn log_stream_name(version: &str) -> String {
    format!("{}/[{version}]{}", chrono::Utc::now().format("%Y/%m/%d"), uuid::Uuid::new_v4().simple())
}

/// Where the environment sees its code and runtime.
struct Paths {
    task_root: String,
    runtime_dir: String,
}

impl Paths {
    /// In a sandbox, AWS's paths; a plain process sees the host's (no code yet: empty).
    fn of(base: &Base, code_dir: Option<&std::path::Path>) -> Self {
        match base.sandbox {
            Some(_) => Self { task_root: "/var/task".into(), runtime_dir: "/var/runtime".into() },
            None => Self {
                task_root: code_dir.map(|d| d.display().to_string()).unwrap_or_default(),
                runtime_dir: base.runtime_dir.display().to_string(),
            },
        }
    }
}

/// The function's `AWS_LAMBDA_EXEC_WRAPPER`, for a managed runtime: the
/// runtime is started through it (`wrapper interpreter args...`), as AWS does.
pub(crate) fn exec_wrapper(spec: &Spec) -> Option<String> {
    if spec.base.custom() {
        return None;
    }
    spec.config.environment.as_ref()?.get("AWS_LAMBDA_EXEC_WRAPPER").filter(|w| !w.is_empty()).cloned()
}

/// Where a runtime's modules are looked up, as on AWS: layers, then the
/// runtime's own (its SDK), for Python's `PYTHONPATH` or Node's `NODE_PATH`.
fn module_path(runtime: &str, paths: &Paths) -> Option<(&'static str, String)> {
    let rt = &paths.runtime_dir;
    if runtime.starts_with("python") {
        return Some(("PYTHONPATH", rt.clone()));
    }
    let major = runtime.strip_prefix("nodejs")?.trim_end_matches(".x");
    Some(("NODE_PATH", format!("/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:{rt}/node_modules:{rt}")))
}

/// What a runtime needs from its first instruction, before it knows its
/// function: a subset of its function's environment, with the same values.
fn base_environment(base: &Base, paths: &Paths) -> Vec<(String, String)> {
    let mut env = vec![
        ("LANG".to_string(), "en_US.UTF-8".to_string()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/opt/bin".into()),
        ("LAMBDA_RUNTIME_DIR".into(), paths.runtime_dir.clone()),
        ("TZ".into(), ":UTC".into()),
    ];
    // Node reads NODE_PATH at start (for its ES module resolution too).
    if let Some((k, v)) = module_path(&base.runtime, paths) {
        env.push((k.into(), v));
    }
    env
}

/// Whether a Node.js function's handler may `import` a bare specifier,
/// which only the runtime's resolution hooks find in `NODE_PATH` (the SDK,
/// layers): its module is an ES module (`.mjs`, or `.js` under a
/// `package.json` of `"type": "module"`), or its source calls `import(`.
/// Asked only where the sandbox has no `/node_modules` (see `Base::links`).
/// The runtime is told (`--esm-hooks`) by its template's family or, started
/// for its function, by its command line. Only the handler's own file is
/// read: a CommonJS module it requires that imports a bare specifier from
/// `NODE_PATH` goes unseen. Resolved as the bootstrap resolves the handler:
/// `.js`, then `.mjs`, then `.cjs`.
pub fn node_imports(code_dir: &Path, handler: &str) -> bool {
    let Some((module, _)) = handler.rsplit_once('.') else { return false };
    let Some(file) =
        ["js", "mjs", "cjs"].iter().map(|ext| code_dir.join(format!("{module}.{ext}"))).find(|f| f.is_file())
    else {
        return false;
    };
    let es_module = match file.extension().and_then(|e| e.to_str()) {
        Some("mjs") => true,
        Some("js") => file
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(code_dir))
            .find_map(|d| std::fs::read(d.join("package.json")).ok())
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .is_some_and(|p| p["type"] == "module"),
        _ => false,
    };
    es_module || std::fs::read(&file).is_ok_and(|src| src.windows(7).any(|w| w == b"import("))
}

/// The environment of a runtime started ahead of its function. No Nimbus
/// variable: it knows it is one by its stdin, the worker's socket.
fn ahead_environment(base: &Base, paths: &Paths, runtime_api: &str) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = base_environment(base, paths).into_iter().collect();
    // Known already, and lets a runtime warm its HTTP client up.
    env.insert("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.to_string());
    env.extend(base.image_preload.iter().flat_map(|p| p.env.iter().cloned()));
    env.into_iter().collect()
}

/// What a sandboxed Python runtime's zygote starts with: the environment
/// its templates would have, as they see it inside.
pub(crate) fn zygote_environment(base: &Base) -> Vec<(String, String)> {
    ahead_environment(base, &Paths::of(base, None), SANDBOX_RUNTIME_API)
}

/// The address AWS's X-Ray SDKs send segments to. No daemon listens inside
/// a sandbox; loopback drops them quietly where AWS's link-local address
/// would fail every send.
const XRAY_DAEMON: (&str, &str) = ("127.0.0.1", "2000");

/// The function's whole environment, as AWS sets it: the platform's
/// variables, then the function's own (which may change the unreserved
/// ones, such as `PATH`; the API refuses the reserved ones).
///
/// An image's own `Env` comes first, over a runtime's defaults, then the
/// platform's variables (its `LAMBDA_TASK_ROOT` and `LD_LIBRARY_PATH` win
/// over the platform's guesses), then the function's.
fn environment(spec: &Spec, paths: &Paths, runtime_api: &str, log_stream: &str) -> Vec<(String, String)> {
    let c = &spec.config;
    let mut env: std::collections::BTreeMap<String, String> = base_environment(&spec.base, paths).into_iter().collect();
    let image = c.image.as_ref();
    let task_root = paths.task_root.clone();
    let image_env = image.map(image_env).unwrap_or_default();
    env.extend(image_env.clone());
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    if spec.base.runtime.starts_with("nodejs") {
        let (k, v) = module_path(&spec.base.runtime, paths).unwrap_or_default();
        set(k, format!("{v}:{task_root}"));
    }
    set("LD_LIBRARY_PATH", format!("/lib64:/usr/lib64:{task_root}:{task_root}/lib:/opt/lib"));
    // Not for an image: its client takes the handler from its CMD, as on AWS.
    if image.is_none() {
        set("_HANDLER", c.handler.clone().unwrap_or_default());
    }
    set("LAMBDA_TASK_ROOT", task_root);
    set("AWS_REGION", spec.base.region.clone());
    set("AWS_DEFAULT_REGION", spec.base.region.clone());
    set("AWS_LAMBDA_FUNCTION_NAME", c.name.clone());
    set("AWS_LAMBDA_FUNCTION_VERSION", c.version.clone());
    set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_size.to_string());
    set("AWS_LAMBDA_LOG_GROUP_NAME", c.logging.log_group.clone());
    set("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_string());
    set("AWS_LAMBDA_INITIALIZATION_TYPE", spec.init_type.into());
    set("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
    // AWS's advanced logging controls: the level only applies to JSON.
    set("AWS_LAMBDA_LOG_FORMAT", c.logging.log_format.clone());
    if let (Some(level), _) = c.logging.levels() {
        set("AWS_LAMBDA_LOG_LEVEL", level);
    }
    set("AWS_XRAY_CONTEXT_MISSING", "LOG_ERROR".into());
    set("AWS_XRAY_DAEMON_ADDRESS", format!("{}:{}", XRAY_DAEMON.0, XRAY_DAEMON.1));
    set("_AWS_XRAY_DAEMON_ADDRESS", XRAY_DAEMON.0.into());
    set("_AWS_XRAY_DAEMON_PORT", XRAY_DAEMON.1.into());
    // In a sandbox the API is forwarded from the same address inside its
    // network namespace.
    set(
        "AWS_ENDPOINT_URL",
        if spec.base.sandbox.is_some() { format!("http://{SANDBOX_API}") } else { spec.base.api_endpoint.clone() },
    );
    set("AWS_ACCESS_KEY_ID", spec.keys.access_key_id.clone());
    set("AWS_SECRET_ACCESS_KEY", spec.keys.secret_access_key.clone());
    set("AWS_SESSION_TOKEN", spec.keys.session_token.clone());
    if image.is_some() {
        set("AWS_EXECUTION_ENV", "AWS_Lambda_Image".into());
    } else if let Some(r) = c.runtime.as_deref().filter(|r| !r.starts_with("provided")) {
        set("AWS_EXECUTION_ENV", format!("AWS_Lambda_{r}"));
    }
    // The platform's guesses at the image's layout yield to what it says.
    for k in ["LD_LIBRARY_PATH", "LAMBDA_TASK_ROOT"] {
        if let Some(v) = image_env.get(k) {
            env.insert(k.into(), v.clone());
        }
    }
    for (k, v) in c.environment.iter().flatten() {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// Peak resident memory of a process in MB, from /proc.
fn peak_memory_mb(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.div_ceil(1024))
}

/// A process's resident size now, from /proc/<pid>/statm (its second
/// field, in pages).
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * u64::try_from(page).ok()?)
}

/// An exit status as AWS words it: `exit status 1`, `signal: killed`.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(9)) => "signal: killed".into(),
        (None, Some(sig)) => format!("signal: {sig}"),
        (None, None) => status.to_string(),
    }
}

pub(crate) fn platform_error(error_type: &str, message: String) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

/// How a managed runtime's interpreter runs Nimbus's bootstrap.
fn runtime_command(base: &Base, paths: &Paths) -> Option<Vec<String>> {
    let interpreter = base.interpreter.clone()?;
    let rt = &paths.runtime_dir;
    match base.runtime.as_str() {
        // -I keeps the host's PYTHON* settings and user site out, -S its
        // site-packages (the bootstrap builds the path AWS's runtime has);
        // -u keeps output unbuffered so log lines arrive as written.
        r if r.starts_with("python") => {
            Some(vec![interpreter, "-I".into(), "-S".into(), "-u".into(), format!("{rt}/bootstrap.py")])
        }
        // An argument, not a variable: no Nimbus variable is ever in a
        // function's environment (not even its initial one).
        r if r.starts_with("nodejs") => {
            let mut argv = vec![interpreter, format!("{rt}/bootstrap.mjs")];
            argv.extend(base.esm_hooks.then(|| "--esm-hooks".to_string()));
            Some(argv)
        }
        _ => None,
    }
}

impl Env {
    /// Starts an environment for `spec`'s function: a template, specialised
    /// at once. A runtime behind an exec wrapper starts with its function
    /// (in a sandbox, a bare one that executes the wrapper once told).
    pub async fn spawn(spec: Spec) -> Result<Self, Error> {
        let now = (!spec.base.starts_ahead() || exec_wrapper(&spec).is_some()).then_some(&spec);
        Self::launch(&spec.base, now).await?.specialize(&spec).await
    }

    /// Starts a runtime, in its sandbox, that waits for its function (see
    /// [`Env::specialize`]); with `now`, one that runs that function at once.
    pub async fn launch(base: &Base, now: Option<&Spec>) -> Result<Self, Error> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let runtime = base.runtime.as_str();
        let paths = Paths::of(base, now.map(|s| s.code_dir.as_path()));
        let wrapper = now.and_then(exec_wrapper);
        // Started ahead: forked from the runtime's zygote into a sandbox
        // that runs no program of its own.
        let zygote = base.zygote.clone().filter(|_| now.is_none());
        // An empty program: the sandbox waits for its function's bootstrap
        // (or exec wrapper), which it runs with its function's environment.
        let (program, args): (String, Vec<String>) = match (runtime_command(base, &paths), &wrapper) {
            _ if zygote.is_some() => (String::new(), vec![]),
            (Some(_), Some(_)) if base.sandbox.is_some() => (String::new(), vec![]),
            // An image's entrypoint arrives with its function (it may differ
            // per function); a Python client's interpreter can start ahead.
            _ if base.image.is_some() => match &base.image_preload {
                Some(p) if base.sandbox.is_some() => (p.interpreter.clone(), vec!["-c".into(), IMAGE_PRELOAD.into()]),
                _ => (String::new(), vec![]),
            },
            (Some(argv), Some(w)) => (w.clone(), argv),
            (Some(mut argv), None) => {
                let program = argv.remove(0);
                (program, argv)
            }
            (None, _) if base.custom() => match now {
                Some(_) => (format!("{}/bootstrap", paths.task_root), vec![]),
                None => (String::new(), vec![]),
            },
            (None, _) => {
                return Err(Error::Unavailable(format!("The {runtime} runtime cannot run on this worker yet.")))
            }
        };
        // A plain process reaches a listener on the host; a sandbox gets one
        // bound inside its network namespace once that exists.
        let (listener, runtime_api) = match base.sandbox {
            None => {
                let l =
                    tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::Internal(e.to_string()))?;
                let addr = l.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
                (Some(l), addr.to_string())
            }
            Some(_) => (None, SANDBOX_RUNTIME_API.to_string()),
        };
        let log_stream = now.map(|spec| log_stream_name(&spec.config.version)).unwrap_or_default();
        let env = match now {
            Some(spec) => environment(spec, &paths, &runtime_api, &log_stream),
            None => ahead_environment(base, &paths, &runtime_api),
        };
        // stdout and stderr share one pipe, as in AWS's log stream.
        let io_err = |e: std::io::Error| Error::Internal(format!("creating a pipe: {e}"));
        let (reader, writer) = std::io::pipe().map_err(io_err)?;
        let stderr = writer.try_clone().map_err(io_err)?;
        // The zygote's child writes to the same pipe.
        let zygote = match zygote {
            Some(z) => Some((z, std::os::fd::OwnedFd::from(writer.try_clone().map_err(io_err)?))),
            None => None,
        };
        let output =
            tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader)).map_err(io_err)?;
        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            jobs_rx: Mutex::new(jobs_rx),
            current: SyncMutex::new(None),
            logs: SyncMutex::default(),
            alive: AtomicBool::new(true),
            ready_at: SyncMutex::new(None),
            output,
            partial: SyncMutex::new(Vec::new()),
            exited: tokio::sync::Notify::new(),
            channel_open: tokio::sync::watch::Sender::new(None),
            ready: tokio::sync::Notify::new(),
            init_error: SyncMutex::new(None),
            exit_status: SyncMutex::new(None),
            specialized: AtomicBool::new(now.is_some()),
            stopping: AtomicBool::new(false),
            posting: tokio::sync::Semaphore::new(1),
            app_level: std::sync::atomic::AtomicU8::new(0),
        });

        let mut control = None;
        let mut slots = None;
        let mut user = None;
        let (start, socket) = match &base.sandbox {
            None => {
                let mut c = Command::new(&program);
                nimbus_sandbox::own_process_group(c.as_std_mut());
                c.args(&args).env_clear().envs(env);
                match now {
                    Some(spec) => {
                        c.current_dir(&spec.code_dir).stdin(std::process::Stdio::null());
                    }
                    None => {
                        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io_err)?;
                        c.current_dir("/").stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)));
                        control = Some(ours);
                    }
                }
                (Start::Plain(c), None)
            }
            Some(sb) => {
                let own = sb.users.take().ok_or_else(|| {
                    Error::Unavailable("Every sandbox user id of this node is in use (see --sandbox-uids).".into())
                })?;
                let slot_set = nimbus_sandbox::namespaces::Slots::under(&sb.roots.join(format!("{id}.slots")));
                slot_set
                    .create()
                    .map_err(|e| Error::Internal(format!("preparing {}: {e}", slot_set.task.display())))?;
                let inner = nimbus_sandbox::namespaces::Spec {
                    // Every sandbox's root is built here, each in its own
                    // mount namespace.
                    root: sb.roots.clone(),
                    runtime: base.runtime_dir.clone(),
                    slots: slot_set.clone(),
                    shared: base.shared.clone(),
                    links: base.links.clone(),
                    uid: own.id(),
                    gid: own.id(),
                    image: base.image.as_ref().map(|r| r.path().to_path_buf()),
                    argv: if program.is_empty() {
                        vec![]
                    } else {
                        std::iter::once(program.clone()).chain(args.iter().cloned()).collect()
                    },
                    // A bare sandbox gets its environment with its program, on
                    // the socket, not in the spec the sandbox starts with.
                    env: if program.is_empty() { vec![] } else { env },
                    parent: std::process::id(),
                    network_of: None,
                    inside_ids: (0, 0),
                    writable_mb: None,
                    rlimits: Vec::new(),
                    pause: zygote.is_some(),
                    volumes: Vec::new(),
                };
                slots = Some(slot_set);
                user = Some(own);
                let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io_err)?;
                (Start::Sandbox(&sb.factory, Box::new(inner), theirs.into()), Some(ours))
            }
        };
        // Until stage one has attached its trees: it does before it says
        // its namespaces exist, which `prepare_sandbox` waits for.
        let publishing = match &base.sandbox {
            Some(sb) => Some(sb.publishing.clone().read_owned().await),
            None => None,
        };
        let spawned = match start {
            Start::Plain(mut c) => c
                .stdout(std::process::Stdio::from(writer))
                .stderr(std::process::Stdio::from(stderr))
                .kill_on_drop(true)
                .spawn()
                .map(crate::process::Process::Child),
            Start::Sandbox(factory, spec, stdin) => factory
                .spawn(&spec, [stdin, writer.into(), stderr.into()])
                .and_then(crate::process::Stage::of)
                .map(crate::process::Process::Stage),
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(s) = &slots {
                    s.remove();
                }
                return Err(match e.kind() {
                    // A missing or non-executable bootstrap, or a bad interpreter line.
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        Error::InvalidEntrypoint(format!("Couldn't find valid bootstrap(s): [{program}]: {e}"))
                    }
                    _ => Error::Internal(format!("starting {program}: {e}")),
                });
            }
        };
        let pid = child.id();
        let mut cgroup = None;
        let mut forwarder = None;
        let mut runtime_pid = None;
        let limits = template_limits(base, now.is_none());
        let listener = match (listener, socket, &base.sandbox, &user) {
            (Some(l), ..) => l,
            (None, Some(socket), Some(sb), Some(user)) => {
                let pid = pid.ok_or_else(|| Error::Internal("sandbox exited at once".into()))?;
                let prepared = prepare_sandbox(socket, pid, sb, &id, &base.api_endpoint, limits).await?;
                drop(publishing);
                cgroup = prepared.cgroup;
                forwarder = Some(prepared.forwarder);
                control = Some(match zygote {
                    Some((z, log)) => {
                        let (control, forked) = join_from_zygote(z, prepared.control, pid, user.id(), log).await?;
                        runtime_pid = Some(forked);
                        if let Some(cg) = &cgroup {
                            cg.attach(forked)
                                .map_err(|e| Error::Internal(format!("attaching the environment: {e}")))?;
                        }
                        control
                    }
                    None => prepared.control,
                });
                prepared.runtime_api
            }
            _ => return Err(Error::Internal("sandbox without a control socket".into())),
        };
        let cgroup = cgroup.map(Arc::new);
        let router = crate::runtime_api::router(shared.clone());
        let api_task = tokio::spawn(async move {
            // No head timeout: a runtime's connection idles between
            // invokes for as long as the environment stays warm.
            // Header names as AWS's Runtime API (Go) writes them.
            let limits = nimbus_http::Limits {
                connections: SANDBOX_CONNECTIONS,
                header_read: None,
                body_idle: None,
                write_stall: None,
                headers_max: None,
                title_case_headers: true,
            };
            nimbus_http::serve(listener, router, std::future::pending(), limits).await;
        });
        let logs = shared.clone();
        tokio::spawn(async move {
            while logs.output.readable().await.is_ok() {
                if logs.read_output(false) {
                    break;
                }
            }
        });
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let watch = shared.clone();
        let runtime_name = base.runtime.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => {
                    let status = s.map(describe_exit).unwrap_or_else(|e| e.to_string());
                    // A template has no invocation to report its death: say it here,
                    // or a runtime that cannot start fails every cold start unexplained.
                    // Not when the node stopped it (every template at shutdown).
                    if !watch.specialized.load(Ordering::SeqCst) && !watch.stopping.load(Ordering::SeqCst) {
                        watch.read_output(true);
                        let output: Vec<String> = watch.drain_logs().into_iter().map(|(_, l)| l).collect();
                        tracing::warn!(runtime = %runtime_name, %status, output = %output.join("\n"), "a template exited before it was used");
                    }
                    status
                }
                _ = kill_rx => {
                    let _ = child.kill().await;
                    "signal: killed".to_string()
                }
            };
            *watch.exit_status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status.clone());
            watch.alive.store(false, Ordering::SeqCst);
            // Bounded: a process the function forked may hold the channel open.
            let mut channel = watch.channel_open.subscribe();
            if *channel.borrow() == Some(true) {
                let _ = tokio::time::timeout(Duration::from_millis(500), channel.wait_for(|o| *o != Some(true))).await;
            }
            watch.fail_current(Reply::Exited(status));
            watch.exited.notify_waiters();
        });
        Ok(Self {
            key: String::new(),
            control,
            slots,
            channel: None,
            runtime_api,
            shared,
            jobs_tx,
            kill: SyncMutex::new(Some(kill_tx)),
            api_task,
            pid,
            runtime_pid,
            pacer: None,
            uncharged_bytes: 0,
            spawned_at: Instant::now(),
            memory_mb: 0,
            timeout: Duration::ZERO,
            version: String::new(),
            log_stream,
            init_type: now.map_or("on-demand", |s| s.init_type),
            platform: now.map(|s| Platform::of(&s.config.logging)).unwrap_or_default(),
            cpu_limited_ahead: cgroup.is_some() && limits.cpu_millis.is_some(),
            cgroup,
            forwarder,
            _image: base.image.clone(),
            _user: user,
        })
    }

    /// Gives a runtime started ahead its function: the code, layers and a
    /// `/tmp` of its size on the sandbox's slots, the memory limit, and the
    /// whole environment, on the control channel. The init phase (and
    /// `Init Duration`) starts here.
    pub async fn specialize(mut self, spec: &Spec) -> Result<Self, Error> {
        let c = &spec.config;
        self.shared.specialized.store(true, Ordering::SeqCst);
        let (app_level, _) = c.logging.levels();
        let rank = app_level.as_deref().filter(|_| c.logging.log_format == "JSON").map_or(0, level_rank);
        self.shared.app_level.store(rank, Ordering::SeqCst);
        self.key = spec.key.clone();
        self.memory_mb = c.memory_size;
        self.timeout = Duration::from_secs(u64::from(c.timeout));
        self.version = c.version.clone();
        self.init_type = spec.init_type;
        self.platform = Platform::of(&c.logging);
        self.spawned_at = Instant::now();
        if let (Some(runtime), Some(arn)) = (&c.runtime, c.runtime_version_arn(&spec.base.region)) {
            if let Some(line) = self.platform.init_start(self.init_type, runtime, &arn, &c.name, &c.version) {
                self.shared.open_log(line);
            }
        }
        let Some(mut control) = self.control.take() else {
            // Started with its function already (and its log stream named).
            return Ok(self);
        };
        // (With a control channel, a custom runtime is in a sandbox, waiting in stage two.)
        if spec.base.custom() {
            let found = [spec.code_dir.join("bootstrap"), spec.layers.clone().unwrap_or_default().join("bootstrap")]
                .iter()
                .any(|p| p.is_file());
            if !found {
                self.retire().await;
                return Err(Error::InvalidEntrypoint(
                    "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]".into(),
                ));
            }
        }
        let paths = Paths::of(&spec.base, Some(&spec.code_dir));
        let prepared = (|| -> std::io::Result<()> {
            if let Some(slots) = &self.slots {
                slots.fill(&spec.code_dir, spec.layers.as_deref(), c.ephemeral_storage)?;
            }
            if let Some(cg) = &self.cgroup {
                cg.limit_memory(u64::from(c.memory_size) << 20)?;
                // Its init runs unthrottled, as every function's does.
                if self.cpu_limited_ahead {
                    cg.lift_cpu_limit()?;
                }
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            self.retire().await;
            return Err(Error::Internal(format!("specialising an environment: {e}")));
        }
        self.log_stream = log_stream_name(&c.version);
        let wrapper = exec_wrapper(spec);
        let image = c.image.as_ref().filter(|_| spec.base.image.is_some());
        let (programs, args, cwd) = match (image, &wrapper, runtime_command(&spec.base, &paths)) {
            (Some(image), _, _) => {
                let mut argv = image.argv();
                if argv.is_empty() {
                    self.retire().await;
                    return Err(Error::InvalidEntrypoint("The image has no ENTRYPOINT or CMD to run.".into()));
                }
                let program = argv.remove(0);
                let root = spec.base.image.as_ref().map(|r| r.path().to_path_buf()).unwrap_or_default();
                if let Err(e) = check_image_launch(&root, &program, &image.working_directory()) {
                    self.retire().await;
                    return Err(e);
                }
                (vec![program], argv, Some(image.working_directory()))
            }
            (None, Some(w), Some(argv)) => (vec![w.clone()], argv, None),
            _ => (vec!["/var/task/bootstrap".into(), "/opt/bootstrap".into()], vec![], None),
        };
        let launch = nimbus_sandbox::namespaces::Launch {
            programs,
            args,
            env: environment(spec, &paths, &self.runtime_api, &self.log_stream),
            cwd,
        };
        let mut line = serde_json::to_vec(&launch).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        // One small write into an idle socket buffer: it does not block.
        if let Err(e) = control.write_all(&line) {
            self.retire().await;
            return Err(Error::Internal(format!("handing the environment its function: {e}")));
        }
        // Our own runtimes go on over the same socket (see channel.rs); a
        // custom runtime, or one behind a wrapper (started bare), is done
        // with it and uses the HTTP Runtime API.
        if !spec.base.custom() && wrapper.is_none() && image.is_none() {
            let socket = crate::channel::Socket::new(control)
                .map_err(|e| Error::Internal(format!("the runtime channel: {e}")))?;
            self.channel = Some(tokio::spawn(crate::channel::serve(socket, self.shared.clone())));
        }
        Ok(self)
    }

    /// After init: the CPU share of the function's memory (init itself runs
    /// unthrottled, as AWS boosts CPU during the init phase), and what its
    /// runtime holds that its cgroup does not count.
    ///
    /// A runtime forked from a zygote shares the zygote's pages, and one
    /// made ahead maps the interpreter's files that another sandbox read
    /// first: resident in it, but charged to another cgroup. `Max Memory
    /// Used` counts them, as AWS's does (a no-op Python function would
    /// otherwise report 2 MB). Measured once, as the runtime's resident
    /// size beyond its cgroup's usage (two small reads on a cold start's path).
    pub fn after_init(&mut self) {
        let Some(cg) = &self.cgroup else { return };
        // A sandbox's runtime is its PID 1 (stage two) unless a zygote forked it.
        let runtime = self.runtime_pid.or_else(|| crate::zygote::first_child(self.pid?).ok().flatten());
        if let Some(resident) = runtime.and_then(resident_bytes) {
            self.uncharged_bytes = resident.saturating_sub(cg.memory_bytes());
        }
        let share = nimbus_sandbox::cgroup::cpu_share(u64::from(self.memory_mb));
        if let Err(e) = cg.limit_cpu(share) {
            tracing::warn!(error = %e, "cannot set the CPU limit");
        }
        if crate::pace::Pacer::paces(share) {
            let (quota_us, _) = nimbus_sandbox::cgroup::cpu_bandwidth(share);
            self.pacer = runtime.and_then(|pid| crate::pace::Pacer::new(pid, share, Duration::from_micros(quota_us)));
        }
    }

    pub fn alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// The pool key of its configuration.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn born(&self) -> Instant {
        self.spawned_at
    }

    pub fn age(&self) -> Duration {
        self.spawned_at.elapsed()
    }

    /// Why init failed, if it did (an init error, or the runtime exited).
    pub fn init_failure(&self) -> Option<String> {
        if let Some(body) = self.shared.init_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Some(String::from_utf8_lossy(body).into_owned());
        }
        (!self.alive()).then(|| {
            let status = self.shared.exit_status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            format!("Runtime exited with error: {}", status.unwrap_or_default())
        })
    }

    /// Serves one invocation.
    pub async fn run(&self, inv: &Invocation, cold: bool) -> Outcome {
        let id = inv.request_id.clone();
        let (tx, rx) = oneshot::channel();
        *self.shared.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Current { id: id.clone(), reply: tx, stream: inv.stream.clone() });
        // Init may have failed, or the runtime died, before this invocation arrived.
        if let Some(body) = self.shared.init_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.shared.fail_current(Reply::InitError(body));
        } else if !self.alive() || *self.shared.channel_open.borrow() == Some(false) {
            // Its status is set before it is marked dead: none means alive,
            // with its channel closed.
            let status = self.shared.exit_status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.shared.fail_current(Reply::Exited(status.unwrap_or_else(|| crate::channel::HUNG_UP.into())));
        }
        if let Some(wait) = self.pacer.as_ref().and_then(|p| p.delay()) {
            tokio::time::sleep(wait).instrument(tracing::debug_span!("paced")).await;
        }
        // Lines the log sink has taken (`log[..sent]`), with START among
        // them once it went.
        let mut log = self.shared.drain_logs();
        let (mut sent, mut start_logged) = (0, false);
        let start = Instant::now();
        let started_ms = chrono::Utc::now().timestamp_millis();
        let deadline_ms = started_ms + self.timeout.as_millis() as i64;
        let job = Job {
            request_id: id.clone(),
            payload: inv.payload.clone(),
            deadline_ms,
            invoked_arn: inv.invoked_arn.clone(),
            trace_id: trace_id(&inv.invoked_arn, inv.lineage),
            client_context: inv.client_context.clone(),
        };
        let reply = async {
            if self.jobs_tx.send(job).await.is_err() {
                return Some(Reply::Exited("environment closed".into()));
            }
            let waited = tokio::time::timeout(self.timeout, rx);
            tokio::pin!(waited);
            // On the stack: no allocation on the warm path.
            let flush = tokio::time::sleep(LOG_FLUSH_EVERY);
            tokio::pin!(flush);
            let waited = loop {
                tokio::select! {
                    biased;
                    r = &mut waited => break r,
                    // Not before init is over: its output precedes START.
                    () = &mut flush, if inv.log_sink.is_some() => {
                        flush.as_mut().reset(tokio::time::Instant::now() + LOG_FLUSH_EVERY);
                        if let (Some(sink), true) = (&inv.log_sink, self.shared.init_over()) {
                            if !start_logged {
                                log.extend(self.platform.start(&id, &self.version).map(|l| (started_ms, l)));
                                start_logged = true;
                            }
                            log.extend(self.shared.take_logs());
                            if log.len() > sent {
                                (sink.0)(&self.log_stream, &log[sent..]);
                                sent = log.len();
                            }
                        }
                    }
                }
            };
            match waited {
                Ok(Ok(r)) => Some(r),
                Ok(Err(_)) => Some(Reply::Exited("environment closed".into())),
                Err(_) => None,
            }
        }
        .instrument(tracing::debug_span!("runtime"))
        .await;
        // Still queued once the runtime is gone: it died between invocations
        // without asking for this one (a Node.js runtime exits after
        // reporting an error nothing caught, as AWS's does).
        let undelivered = matches!(reply, Some(Reply::Exited(_)))
            && self.shared.jobs_rx.try_lock().is_ok_and(|mut jobs| jobs.try_recv().is_ok());
        let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        if let Some(p) = &self.pacer {
            p.charge();
        }
        let max_memory_mb = match &self.cgroup {
            // Never past its size: the kernel stops its own charges there.
            Some(cg) => {
                (self.uncharged_bytes + cg.peak_memory_bytes()).div_ceil(1 << 20).min(u64::from(self.memory_mb))
            }
            None => peak_memory_mb(self.pid),
        };
        // Only an exit can be the kernel's out-of-memory kill.
        let oom = matches!(reply, Some(Reply::Exited(_))) && self.cgroup.as_ref().is_some_and(|cg| cg.oom_killed());
        let exit_status = match &reply {
            Some(Reply::Exited(status)) => Some(status.clone()),
            _ => None,
        };
        let init_failed = matches!(reply, Some(Reply::InitError(_)));
        // The failure's type, as the caller, REPORT and a failed init's
        // INIT_REPORT name it: an exit's (current runtimes' words for an
        // out-of-memory kill), or what the runtime said
        // its init failed with (`Runtime.ImportModuleError`…).
        let error_type: Option<String> = match &reply {
            Some(Reply::Exited(_)) => Some(if oom { "Runtime.OutOfMemory" } else { "Runtime.ExitError" }.into()),
            Some(Reply::InitError(b)) => Some(
                serde_json::from_slice::<serde_json::Value>(b)
                    .ok()
                    .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "Runtime.Unknown".to_string()),
            ),
            _ => None,
        };
        let (payload, function_error, reusable, status) = match reply {
            Some(Reply::Response(b)) => (b, None, true, None),
            Some(Reply::Error(b)) => (b, Some("Unhandled".to_string()), true, Some("error")),
            Some(Reply::Streamed(None)) => (Bytes::new(), None, true, None),
            Some(Reply::Streamed(Some(b))) => (b, Some("Unhandled".to_string()), true, Some("error")),
            Some(Reply::InitError(b)) => {
                tracing::warn!(function = %inv.config.name, request_id = %id, error = %String::from_utf8_lossy(&b), "function init failed");
                (b, Some("Unhandled".to_string()), false, Some("error"))
            }
            Some(Reply::Exited(status)) => {
                let why = if oom { "out of memory" } else { "runtime exited" };
                tracing::warn!(function = %inv.config.name, request_id = %id, %status, "function failed: {why}");
                (
                    platform_error(
                        error_type.as_deref().unwrap_or("Runtime.ExitError"),
                        format!("RequestId: {id} Error: Runtime exited with error: {status}"),
                    ),
                    Some("Unhandled".to_string()),
                    false,
                    Some("error"),
                )
            }
            None => {
                tracing::warn!(function = %inv.config.name, request_id = %id, timeout_s = self.timeout.as_secs(), "function timed out");
                self.stop();
                let secs = self.timeout.as_secs_f64();
                (
                    platform_error(
                        "Sandbox.Timedout",
                        format!("RequestId: {id} Error: Task timed out after {secs:.2} seconds"),
                    ),
                    Some("Unhandled".to_string()),
                    false,
                    Some("timeout"),
                )
            }
        };
        let init_ms = if cold {
            let ready = *self.shared.ready_at.lock().unwrap_or_else(|e| e.into_inner());
            Some(ready.unwrap_or(start).saturating_duration_since(self.spawned_at).as_secs_f64() * 1000.0)
        } else {
            None
        };
        tracing::debug_span!("drain_logs").in_scope(|| self.shared.read_output(true));
        let now = || chrono::Utc::now().timestamp_millis();
        let billed = (duration_ms + init_ms.unwrap_or(0.0)).ceil() as u64;
        let report = Report {
            request_id: &id,
            duration_ms,
            billed_ms: billed,
            memory_mb: self.memory_mb,
            max_memory_mb,
            init_ms,
            status,
            error_type: error_type.as_deref(),
        };
        if let (true, Some(ms)) = (init_failed, init_ms) {
            log.extend(
                self.platform.init_report(self.init_type, ms, "error", error_type.as_deref()).map(|l| (now(), l)),
            );
        }
        let printed = self.shared.drain_logs();
        // START is worded now but dated when the invocation began, before
        // anything it printed (readers of the log sort by time).
        if !start_logged {
            let started = printed.first().map_or(started_ms, |(t, _)| (*t).min(started_ms));
            log.extend(self.platform.start(&id, &self.version).map(|l| (started, l)));
        }
        log.extend(printed);
        if status == Some("timeout") {
            log.extend(self.platform.timed_out(&id, self.timeout.as_secs_f64()).map(|l| (now(), l)));
        }
        if let Some(exit) = &exit_status {
            log.extend(self.platform.exited(&id, exit).map(|l| (now(), l)));
        }
        log.extend(self.platform.end(&report, payload.len()).map(|l| (now(), l)));
        log.extend(self.platform.report(&report).map(|l| (now(), l)));
        for (_, line) in &log {
            tracing::debug!(target: "function", request_id = %id, "{}", line.trim_end());
        }
        Outcome {
            payload,
            function_error,
            lines: log,
            lines_sent: sent,
            log_stream: self.log_stream.clone(),
            status: status.unwrap_or("success"),
            billed_ms: billed,
            duration_ms,
            init_ms,
            max_memory_mb,
            concurrency: Default::default(),
            reusable,
            undelivered,
        }
    }

    /// Waits up to `limit` for the runtime to finish init (its first `next`,
    /// or an init error). True when it did, or when it already failed (the
    /// run reports that).
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let ready = self.shared.ready.notified();
        let exited = self.shared.exited.notified();
        tokio::pin!(ready, exited);
        ready.as_mut().enable();
        exited.as_mut().enable();
        if self.shared.init_over() || !self.alive() {
            return true;
        }
        tokio::select! {
            _ = ready => true,
            _ = exited => true,
            _ = tokio::time::sleep(limit) => self.shared.init_over() || !self.alive(),
        }
    }

    /// Notes in the log of the next invocation that init overran `limit`
    /// and runs again.
    pub fn note_init_timeout(&self, init_type: &str, limit: Duration) {
        if let Some(line) = self.platform.init_report(init_type, limit.as_secs_f64() * 1000.0, "timeout", None) {
            self.shared.push_log(line.as_bytes());
        }
    }

    fn kill(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(k) = self.kill.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = k.send(());
        }
    }

    /// Stops the environment. In a sandbox, its processes but its stage
    /// one, which reaps its PID 1 and follows: killed first, it would leave
    /// PID 1 a zombie for the host's init (the node itself when it is a
    /// container's PID 1, which never reaps it). Returns whether stage one
    /// was spared (and is to be waited for).
    fn stop(&self) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        match (&self.cgroup, self.pid) {
            (Some(cg), Some(stage_one)) => {
                cg.kill_all_but(&[stage_one]);
                true
            }
            _ => {
                self.kill();
                false
            }
        }
    }

    /// Stops the runtime and its Runtime API, then removes its cgroup and root.
    pub async fn retire(self) {
        let exited = self.shared.exited.notified();
        tokio::pin!(exited);
        exited.as_mut().enable();
        if self.alive() && self.stop() {
            let _ = tokio::time::timeout(Duration::from_secs(1), exited.as_mut()).await;
        }
        self.kill();
        self.api_task.abort();
        for task in [&self.forwarder, &self.channel].into_iter().flatten() {
            task.abort();
        }
        if self.alive() {
            // Bounded: the kill is already sent.
            let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
        }
        if let Some(cg) = &self.cgroup {
            remove_cgroup(cg).await;
        }
        if let Some(slots) = &self.slots {
            slots.remove();
        }
    }
}

/// The invocation's `Lambda-Runtime-Trace-Id`: an X-Ray root and, for an
/// invocation that function writes led to, AWS's `Lineage=<hash>:<count>`
/// (the hash names the function), which the runtime exposes as
/// `_X_AMZN_TRACE_ID` and AWS's SDKs send as `X-Amzn-Trace-Id` on the
/// function's own requests, so the events those cause count one more.
fn trace_id(invoked_arn: &str, lineage: u32) -> String {
    use std::hash::{Hash, Hasher};
    // AWS's always names a parent segment and a sampling decision; this node
    // sends no segments to X-Ray, so it never samples.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let root = format!("Root=1-{:08x}-{};Parent={};Sampled=0", chrono::Utc::now().timestamp(), &id[..24], &id[16..]);
    if lineage == 0 {
        return root;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    invoked_arn.split(':').take(7).collect::<Vec<_>>().hash(&mut h);
    format!("{root};Lineage={:08x}:{lineage}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_resolve_inside_the_image() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/app"), b"").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", r.join("abs")).unwrap();
        // Links that would name host files name the image's instead.
        std::os::unix::fs::symlink("/etc", r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        for found in ["/usr/bin/app", "/bin/app", "/abs/app", "/bin/../bin/app", "/"] {
            assert!(in_image(r, found), "{found}");
        }
        for missing in ["/usr/bin/nope", "/etc/passwd", "/up/passwd", "/etc"] {
            assert!(!in_image(r, missing), "{missing}");
        }
        assert!(check_image_launch(r, "/bin/app", "/usr").is_ok());
        assert!(check_image_launch(r, "sh", "/usr").is_ok(), "found on PATH at exec");
        assert!(matches!(check_image_launch(r, "/nonexistent", "/"), Err(Error::InvalidEntrypoint(_))));
        assert!(matches!(check_image_launch(r, "/bin/app", "rel"), Err(Error::InvalidWorkingDir(_))));
        assert!(matches!(check_image_launch(r, "/bin/app", "/nowhere"), Err(Error::InvalidWorkingDir(_))));
    }

    #[test]
    fn a_chained_invocation_carries_its_lineage_in_the_trace_id() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        let plain = trace_id(arn, 0);
        assert!(!plain.contains("Lineage"));
        let fields: Vec<&str> = plain.split(';').collect();
        assert!(fields[0].starts_with("Root=1-") && fields[0].len() == 7 + 8 + 1 + 24, "{plain}");
        assert!(fields[1].starts_with("Parent=") && fields[1].len() == 7 + 16 && fields[2] == "Sampled=0", "{plain}");
        let t = trace_id(arn, 3);
        assert!(t.starts_with("Root=1-") && t.ends_with(":3"), "{t}");
        let hash = |t: &str| t.split("Lineage=").nth(1).map(|l| l[..8].to_string());
        assert_eq!(hash(&t), hash(&trace_id(&format!("{arn}:live"), 4)), "the hash names the function");
    }

    #[test]
    fn node_handlers_that_may_import_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        put("esm.mjs", "export const handler = async () => 1;");
        put("cjs.js", "exports.handler = async () => require('x');");
        put("both.js", "exports.handler = async () => (await import('x')).default;");
        put("pkg/index.js", "export const handler = async () => 1;");
        put("pkg/package.json", r#"{"type": "module"}"#);
        put("plain/index.js", "exports.handler = async () => 1;");
        put("plain/package.json", r#"{"type": "commonjs"}"#);
        let imports = |handler: &str| node_imports(dir.path(), handler);
        assert!(imports("esm.handler") && imports("both.handler") && imports("pkg/index.handler"));
        assert!(!imports("cjs.handler") && !imports("plain/index.handler") && !imports("missing.handler"));
        assert!(!imports("nodot"));
    }

    fn spec(runtime: &str, vars: &[(&str, &str)]) -> Spec {
        let code = nimbus_core::function::Code { sha256_hex: "00".into(), size: 1, unzipped_size: 1 };
        let mut config = FunctionConfig::new("f", "arn:aws:iam::000000000000:role/r".into(), code, 0, "rev".into());
        config.runtime = Some(runtime.into());
        config.handler = Some("app.handler".into());
        config.environment = Some(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Spec {
            base: Base {
                runtime: runtime.into(),
                interpreter: Some("/usr/bin/interp".into()),
                runtime_dir: "/data/runtime".into(),
                region: "us-east-1".into(),
                api_endpoint: "http://127.0.0.1:9070".into(),
                sandbox: None,
                shared: vec![],
                links: vec![],
                image: None,
                image_preload: None,
                zygote: None,
                esm_hooks: false,
            },
            key: String::new(),
            config,
            code_dir: "/data/code/00".into(),
            keys: crate::SessionKeys {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                session_token: "t".into(),
            },
            layers: None,
            init_type: "on-demand",
        }
    }

    fn env_of(spec: &Spec) -> std::collections::BTreeMap<String, String> {
        let paths = Paths::of(&spec.base, Some(&spec.code_dir));
        environment(spec, &paths, "127.0.0.1:1", "stream").into_iter().collect()
    }

    #[test]
    fn each_language_gets_its_own_module_path_only() {
        let py = env_of(&spec("python3.11", &[]));
        assert_eq!(py.get("PYTHONPATH").map(String::as_str), Some("/data/runtime"));
        assert!(!py.contains_key("NODE_PATH"));
        let node = env_of(&spec("nodejs20.x", &[]));
        assert_eq!(
            node.get("NODE_PATH").map(String::as_str),
            Some("/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/data/runtime/node_modules:/data/runtime:/data/code/00")
        );
        assert!(!node.contains_key("PYTHONPATH"));
        let custom = env_of(&spec("provided.al2023", &[]));
        assert!(!custom.contains_key("NODE_PATH") && !custom.contains_key("AWS_EXECUTION_ENV"));
    }

    #[test]
    fn the_functions_own_variables_come_last_and_no_nimbus_ones_at_all() {
        let env = env_of(&spec("python3.11", &[("PATH", "/mine"), ("MY_SETTING", "1")]));
        assert_eq!((env["PATH"].as_str(), env["MY_SETTING"].as_str()), ("/mine", "1"));
        assert_eq!((env["AWS_LAMBDA_LOG_FORMAT"].as_str(), env.get("AWS_LAMBDA_LOG_LEVEL")), ("Text", None));
        assert!(env.keys().all(|k| !k.starts_with("NIMBUS")), "{env:?}");
    }

    #[test]
    fn an_images_env_lies_under_the_platforms_and_the_functions() {
        let mut s = spec("", &[("FROM_IMAGE", "function")]);
        s.config.runtime = None;
        s.config.image = Some(nimbus_core::function::FunctionImage {
            env: [
                "PATH=/img/bin",
                "FROM_IMAGE=image",
                "ONLY_IMAGE=1",
                "LAMBDA_TASK_ROOT=/app",
                "AWS_LAMBDA_RUNTIME_API=x:1",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        });
        let env = env_of(&s);
        assert_eq!((env["PATH"].as_str(), env["ONLY_IMAGE"].as_str()), ("/img/bin", "1"));
        assert_eq!((env["FROM_IMAGE"].as_str(), env["LAMBDA_TASK_ROOT"].as_str()), ("function", "/app"));
        assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_Image");
        assert_ne!(env["AWS_LAMBDA_RUNTIME_API"], "x:1");
        assert!(!env.contains_key("_HANDLER"));
    }

    #[test]
    fn json_lines_below_the_application_level_are_dropped() {
        let warn = level_rank("WARN");
        assert!(below_level("{\"level\": \"debug\", \"msg\": \"x\"}\n", warn));
        assert!(below_level("  {\"level\":\"INFO\"}", warn));
        assert!(!below_level("{\"level\": \"ERROR\"}", warn));
        assert!(!below_level("{\"level\": \"debug\"}", 0), "no filter");
        assert!(!below_level("{\"level\": 30}", warn), "numbers are not AWS's levels");
        assert!(!below_level("{\"level\": \"verbose\"}", warn));
        assert!(!below_level("plain text at any level\n", warn));
        assert!(!below_level("{\"level\": \"debug\"", warn), "not JSON");
    }

    #[test]
    fn json_logging_sets_the_level_the_runtime_filters_at() {
        let mut s = spec("nodejs20.x", &[]);
        s.config.logging.log_format = "JSON".into();
        assert_eq!(env_of(&s)["AWS_LAMBDA_LOG_LEVEL"], "INFO");
        s.config.logging.application_log_level = Some("DEBUG".into());
        assert_eq!(env_of(&s)["AWS_LAMBDA_LOG_LEVEL"], "DEBUG");
    }

    #[test]
    fn an_exec_wrapper_applies_to_managed_runtimes_only() {
        let wrapped = [("AWS_LAMBDA_EXEC_WRAPPER", "/opt/wrap")];
        assert_eq!(exec_wrapper(&spec("python3.11", &wrapped)).as_deref(), Some("/opt/wrap"));
        assert_eq!(exec_wrapper(&spec("provided.al2023", &wrapped)), None);
        assert_eq!(exec_wrapper(&spec("nodejs20.x", &[])), None);
    }
}
