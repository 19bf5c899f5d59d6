//! `nimbus bench`: starts a private `nimbus serve` (this binary, a free
//! port, a temporary data directory), then measures in one run the floors of
//! this machine and, for each runtime, cold and warm invokes through the
//! signed Invoke API, throughput, scale-out, the memory of idle
//! environments and the server's idle CPU. Prints a table; `--json FILE`
//! writes the same figures. It measures; it never asserts a target.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use base64::Engine;
use nimbus_api::sigv4::Credentials;
use serde_json::{json, Value};

use crate::bench_s3::S3Plan;
use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A run of seconds that keeps the command working (CI): few samples,
    /// no 100/500 scale-out.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Isolation of the measured server (default: namespaces as root, else process).
    #[arg(long)]
    isolation: Option<String>,
    /// MemorySize of the benchmark functions (1769 MB is one full vCPU on AWS's scale).
    #[arg(long, default_value_t = 1769)]
    memory: u32,
    /// The `lambda_runtime` binary used as the `provided.al2023` function
    /// (default: `rust-hello` next to this binary).
    #[arg(long)]
    rust_hello: Option<PathBuf>,
    /// An OCI layout holding the Python image `v1` of
    /// `examples/container-images/build-python-image.sh`: its cold start is
    /// measured against a zip Python function's (images section).
    #[arg(long)]
    python_image: Option<PathBuf>,
    /// Measure only these sections (repeatable; default: all but `warm`).
    /// The floors are always measured.
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

/// The parts of a run, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Cold and warm invokes, throughput, scale-out and density per runtime.
    Functions,
    /// Only warm invokes, the CPU each costs and the throughput at
    /// concurrency 16, per runtime, over more invokes than `functions` makes
    /// (seconds): a repeatable look at the hot path. Never part of a full
    /// run, which measures the same.
    Warm,
    /// The function URL front end against Invoke.
    Urls,
    /// The S3 API: small GETs and PUTs, a large object, PUT to handler.
    S3,
    /// SQS throughput each way, and SendMessage to a mapped handler.
    Queues,
    /// EventBridge Scheduler: a schedule's due time to its handler.
    Schedules,
    /// CloudWatch Logs: PutLogEvents, and FilterLogEvents over many stored lines.
    Logs,
    /// Container images: push, unpack, and image functions' cold starts.
    Images,
    /// The node's CPU at rest, with idle queues, mappings and schedules.
    Idle,
    /// ECS tasks: RunTask to a port answering, 100 at once, idle memory and CPU.
    Tasks,
}

/// Sample counts for a run.
struct Plan {
    floor_samples: usize,
    /// Cold starts spaced apart, and back to back.
    cold: usize,
    cold_back_to_back: usize,
    warm: usize,
    /// Warm invokes of the `warm` section: more than `warm`, for latency
    /// percentiles and a CPU figure that settle from run to run.
    warm_only: usize,
    throughput_secs: f64,
    scale_out: &'static [usize],
    hold_ms: u64,
    idle_cpu_secs: f64,
    /// Queues, mappings and schedules left idle while the idle CPU is measured.
    idle_sources: usize,
    s3: S3Plan,
    /// Lines stored for the logs figures.
    log_lines: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                floor_samples: 100,
                cold: 3,
                cold_back_to_back: 3,
                warm: 50,
                warm_only: 200,
                throughput_secs: 0.3,
                scale_out: &[10],
                hold_ms: 500,
                idle_cpu_secs: 1.0,
                idle_sources: 20,
                s3: S3Plan { secs: 0.5, large_bytes: 64 << 20, notified: 5 },
                log_lines: 100_000,
            }
        } else {
            Self {
                floor_samples: 1000,
                cold: 30,
                cold_back_to_back: 100,
                warm: 1000,
                warm_only: 5000,
                throughput_secs: 3.0,
                scale_out: &[100, 500, 1000],
                hold_ms: 3000,
                idle_cpu_secs: 5.0,
                idle_sources: 1000,
                s3: S3Plan { secs: 3.0, large_bytes: 1 << 30, notified: 100 },
                log_lines: 1_000_000,
            }
        }
    }
}

/// p50 and p99 of samples, in the samples' unit.
pub(crate) fn percentiles(samples: &mut [f64]) -> Value {
    if samples.is_empty() {
        return json!({"p50": null, "p99": null});
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    json!({"p50": round(at(0.5)), "p99": round(at(0.99)), "n": samples.len()})
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A private server, killed when dropped.
struct Server {
    child: std::process::Child,
    endpoint: String,
    data_dir: PathBuf,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so that the server retires every environment before it exits.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub(crate) const COLD_GAP: Duration = Duration::from_millis(250);
/// How long the node is left to reach rest (templates made) before a measurement.
const SETTLE: Duration = Duration::from_secs(3);

const KEY_ID: &str = "NKIABENCHBENCHBENCH0";
const SECRET: &str = "bench/secret/0123456789abcdefghijklmnopq";

fn start_server(isolation: &str) -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path().join("data"))
        .args(["--isolation", isolation, "--max-concurrency", "2000", "--keep-warm", "3600"])
        // Room for the tasks figures' 100 small tasks, whatever the machine.
        .args(["--task-cpu-units", "32768", "--task-memory-mib", "65536"])
        .env("NIMBUS_ACCESS_KEY_ID", KEY_ID)
        .env("NIMBUS_SECRET_ACCESS_KEY", SECRET)
        .env("NIMBUS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting nimbus serve")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(l)) if l.contains("serving") => {}
        other => anyhow::bail!("nimbus serve did not start: {other:?}"),
    }
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, endpoint: format!("http://127.0.0.1:{port}"), data_dir: data.path().join("data"), _data: data })
}

/// The runtimes measured and their code.
pub(crate) struct Runtime {
    pub(crate) id: String,
    pub(crate) handler: &'static str,
    pub(crate) zip: Vec<u8>,
    /// The program whose fork+exec is this runtime's floor.
    pub(crate) spawn: Vec<String>,
}

// Each environment names itself with random bytes from `os`, which the
// runtime has imported: `uuid` brought in `platform`
// and `_uuid`, about 4 ms of every cold start and 1 MB of every idle
// environment, which were the benchmark's and not the platform's. It also
// names its PID namespace, whose processes are its memory (`envs_pss_mb`).
const PY_APP: &str = "import os, time\nENV = os.urandom(16).hex()\nPIDNS = os.readlink('/proc/self/ns/pid')\n\ndef handler(event, context):\n    t = time.perf_counter()\n    if event.get('sleep_ms'):\n        time.sleep(event['sleep_ms'] / 1000)\n    return {'env': ENV, 'pidns': PIDNS, 'self_us': (time.perf_counter() - t) * 1e6}\n";
const NODE_APP: &str = "import { randomUUID } from 'node:crypto';\nimport { readlinkSync } from 'node:fs';\nconst ENV = randomUUID();\nconst PIDNS = readlinkSync('/proc/self/ns/pid');\nexport const handler = async (event) => {\n  const t = process.hrtime.bigint();\n  if (event.sleep_ms) await new Promise((r) => setTimeout(r, event.sleep_ms));\n  return { env: ENV, pidns: PIDNS, self_us: Number(process.hrtime.bigint() - t) / 1000 };\n};\n";

pub(crate) fn zip_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        for (name, data, mode) in files {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            z.start_file(*name, opts)?;
            std::io::Write::write_all(&mut z, data)?;
        }
        z.finish()?;
    }
    Ok(buf.into_inner())
}

fn runtimes(args: &BenchArgs, isolation: &str) -> anyhow::Result<Vec<Runtime>> {
    // The interpreters the measured server will offer.
    let catalog = crate::serve::discover_runtimes(isolation != "process");
    let mut out = Vec::new();
    let newest = |prefix: &str| catalog.ids().filter(|id| id.starts_with(prefix)).max().map(str::to_string);
    if let Some(id) = newest("python3.") {
        let interp = catalog.interpreter(&id).unwrap_or("python3").to_string();
        out.push(Runtime {
            handler: "app.handler",
            zip: zip_of(&[("app.py", PY_APP.as_bytes(), 0o644)])?,
            spawn: vec![interp, "-I".into(), "-S".into(), "-c".into(), "pass".into()],
            id,
        });
    }
    if let Some(id) = newest("nodejs") {
        let interp = catalog.interpreter(&id).unwrap_or("node").to_string();
        out.push(Runtime {
            handler: "index.handler",
            zip: zip_of(&[("index.mjs", NODE_APP.as_bytes(), 0o644)])?,
            spawn: vec![interp, "-e".into(), "0".into()],
            id,
        });
    }
    let rust = rust_hello(args)?;
    match std::fs::read(&rust) {
        Ok(binary) => out.push(Runtime {
            id: "provided.al2023".into(),
            handler: "unused",
            zip: zip_of(&[("bootstrap", &binary, 0o755)])?,
            // A custom runtime has no interpreter: the floor is fork+exec of the smallest program.
            spawn: vec!["/bin/true".into()],
        }),
        Err(e) => eprintln!(
            "skipping provided.al2023: no lambda_runtime binary at {} ({e}); build it with `cargo build --release -p rust-hello`",
            rust.display()
        ),
    }
    Ok(out)
}

fn rust_hello(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    Ok(match &args.rust_hello {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rust-hello"),
    })
}

/// fork+exec+wait of a program, in ms.
fn spawn_floor(argv: &[String], n: usize) -> Value {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if ok {
            samples.push(ms(t.elapsed()));
        }
    }
    percentiles(&mut samples)
}

/// HTTP/1.1 keep-alive round trips to a trivial local server, in µs.
async fn loopback_floor(n: usize) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        http.get(&url).send().await?.bytes().await?;
        if i >= 20 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    server.abort();
    Ok(percentiles(&mut samples))
}

pub(crate) struct Bench {
    pub(crate) client: Arc<Client>,
    memory: u32,
    counter: std::sync::atomic::AtomicUsize,
}

impl Bench {
    pub(crate) async fn create(&self, rt: &Runtime) -> anyhow::Result<String> {
        self.create_sized(rt, self.memory).await
    }

    async fn create_sized(&self, rt: &Runtime, memory: u32) -> anyhow::Result<String> {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("bench-{}-{n}", rt.id.replace('.', "-"));
        let body = json!({
            "FunctionName": name, "Runtime": rt.id, "Handler": rt.handler, "Role": "arn:aws:iam::000000000000:role/bench",
            "MemorySize": memory, "Timeout": 60,
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(&rt.zip)},
        });
        self.client.call("POST", "/2015-03-31/functions", Some(serde_json::to_vec(&body)?)).await?;
        self.client.wait_ready(&name).await?;
        Ok(name)
    }

    pub(crate) async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.client.call("DELETE", &format!("/2015-03-31/functions/{name}"), None).await.map(drop)
    }
}

/// Cold starts of new functions from `make` (given a sample number), each
/// deleted after its invoke, in ms: `spaced` apart, as they arrive in
/// service (the node makes its templates ahead in between), then
/// `back_to_back`, as a deploy script or a test suite meets them (all made,
/// then invoked one after another with no pause for templates).
pub(crate) async fn cold_starts<F, Fut>(
    b: &Bench,
    spaced: usize,
    back_to_back: usize,
    make: F,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut apart = Vec::new();
    for i in 0..spaced {
        let name = make(i).await?;
        apart.push(ms(invoke(&b.client, &name, &json!({})).await?.0));
        b.delete(&name).await?;
        tokio::time::sleep(COLD_GAP).await;
    }
    let mut names = Vec::new();
    for i in 0..back_to_back {
        names.push(make(spaced + i).await?);
    }
    let mut together = Vec::new();
    for name in &names {
        together.push(ms(invoke(&b.client, name, &json!({})).await?.0));
    }
    for name in &names {
        b.delete(name).await?;
    }
    Ok((apart, together))
}

/// One invoke; (client-observed duration, the handler's answer).
async fn invoke(client: &Client, name: &str, event: &Value) -> anyhow::Result<(Duration, Value)> {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let body = serde_json::to_vec(event)?;
    let t = Instant::now();
    let (headers, bytes) = client.send("lambda", "POST", &path, Some(body), &[]).await?;
    let took = t.elapsed();
    let out: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if headers.contains_key("x-amz-function-error") {
        anyhow::bail!("{name} failed: {out}");
    }
    Ok((took, out))
}

/// What [`warm_invokes`] measured.
struct Warm {
    /// Latencies, ms.
    ms: Vec<f64>,
    /// Latency beyond the handler's own time, µs.
    overhead_us: Vec<f64>,
    /// CPU each invoke cost the server's process tree (the node and every
    /// environment), µs.
    cpu_us: f64,
    /// The part of it that was the node's own process, µs: the rest is the
    /// environment's (its runtime and the handler).
    node_cpu_us: f64,
}

/// `n` warm invokes of `name` one after another (after one to warm it).
async fn warm_invokes(b: &Bench, name: &str, server: u32, n: usize) -> anyhow::Result<Warm> {
    invoke(&b.client, name, &json!({})).await?;
    let (mut latencies, mut overhead_us) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let tree = tree_cpu(server);
    let node = tree.get(&server).copied().unwrap_or(0.0);
    for _ in 0..n {
        let (took, out) = invoke(&b.client, name, &json!({})).await?;
        latencies.push(ms(took));
        let own = out.get("self_us").and_then(Value::as_f64).unwrap_or(0.0);
        overhead_us.push(took.as_secs_f64() * 1e6 - own);
    }
    Ok(Warm {
        ms: latencies,
        overhead_us,
        cpu_us: tree_cpu_since(server, &tree) / n as f64,
        node_cpu_us: (cpu_us(server) - node) / n as f64,
    })
}

/// `n` invokes at once, each holding its environment `hold_ms`; returns
/// (seconds until the last completed, less the hold; distinct environments;
/// the PID namespaces they named).
async fn burst(b: &Bench, name: &str, n: usize, hold_ms: u64) -> anyhow::Result<(f64, usize, HashSet<String>)> {
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = b.client.clone();
        let name = name.to_string();
        tasks.spawn(async move { invoke(&client, &name, &json!({"sleep_ms": hold_ms})).await });
    }
    let (mut envs, mut namespaces) = (HashSet::new(), HashSet::new());
    while let Some(r) = tasks.join_next().await {
        let (_, out) = r??;
        envs.insert(out.get("env").map(ToString::to_string).unwrap_or_default());
        namespaces.extend(out.get("pidns").and_then(Value::as_str).map(str::to_string));
    }
    Ok(((t.elapsed().as_secs_f64() - hold_ms as f64 / 1000.0).max(0.0), envs.len(), namespaces))
}

/// Invocations per second of `c` clients looping on a warm function.
async fn throughput(b: &Bench, name: &str, c: usize, secs: f64) -> anyhow::Result<f64> {
    // Warm `c` environments first, so the figure has no cold starts in it.
    for _ in 0..5 {
        if burst(b, name, c, 500).await?.1 >= c {
            break;
        }
    }
    let client = b.client.clone();
    let name = name.to_string();
    loop_for(c, secs, move || {
        let (client, name) = (client.clone(), name.clone());
        async move { invoke(&client, &name, &json!({})).await.map(drop) }
    })
    .await
}

/// Requests per second of `c` clients each looping on `call` for `secs`.
pub(crate) async fn loop_for<F, Fut>(c: usize, secs: f64, call: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let call = call.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                call().await?;
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// One request to a function URL with a keep-alive client.
async fn url_get(http: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let resp = http.get(url).send().await?;
    let status = resp.status();
    resp.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(t.elapsed())
}

/// A warm function behind a NONE function URL against the same function
/// invoked: p50 latencies measured interleaved, then throughput at 16
/// clients, one after the other.
async fn url_figures(b: &Bench, rt: &Runtime, plan: &Plan) -> anyhow::Result<Value> {
    let name = b.create(rt).await?;
    let config = json!({ "AuthType": "NONE" });
    let created =
        b.client.call("POST", &format!("/2021-10-31/functions/{name}/url"), Some(serde_json::to_vec(&config)?)).await?;
    let grant = json!({
        "StatementId": "public", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE",
    });
    b.client.call("POST", &format!("/2015-03-31/functions/{name}/policy"), Some(serde_json::to_vec(&grant)?)).await?;
    let url = created["FunctionUrl"].as_str().context("no FunctionUrl")?.to_string();
    let http = reqwest::Client::new();
    invoke(&b.client, &name, &json!({})).await?;
    url_get(&http, &url).await?;
    let (mut via_invoke, mut via_url) = (Vec::new(), Vec::new());
    for _ in 0..plan.warm {
        via_invoke.push(ms(invoke(&b.client, &name, &json!({})).await?.0));
        via_url.push(ms(url_get(&http, &url).await?));
    }
    let invoke_rps = throughput(b, &name, 16, plan.throughput_secs).await?;
    let url_rps = loop_for(16, plan.throughput_secs, move || {
        let (http, url) = (http.clone(), url.clone());
        async move { url_get(&http, &url).await.map(drop) }
    })
    .await?;
    b.delete(&name).await?;
    Ok(json!({
        "runtime": rt.id,
        "invoke_warm_ms": percentiles(&mut via_invoke),
        "url_warm_ms": percentiles(&mut via_url),
        "invoke_rps_c16": invoke_rps.round(),
        "url_rps_c16": url_rps.round(),
    }))
}

pub(crate) fn meminfo_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix(field)).map(str::to_string))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Every process's parent: pid -> ppid.
fn parents() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // The parent is the second field after the command name, which may contain spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let parent = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        out.insert(pid, parent);
    }
    out
}

/// The pids of `root` and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let all = parents();
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match all.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    all.keys().copied().filter(|p| in_tree(*p)).collect()
}

/// The CPU time of a process and of each of its descendants, µs by pid:
/// each process's CPU clock (all its threads, in nanoseconds;
/// `/proc/<pid>/stat` counts 10 ms ticks, too coarse for a change of tens
/// of µs per invoke).
type TreeCpu = HashMap<u32, f64>;

fn tree_cpu(root: u32) -> TreeCpu {
    tree(root).into_iter().map(|pid| (pid, cpu_us(pid))).collect()
}

/// CPU the tree of `root` has used since `before` was read, µs: each
/// process's growth, and the whole of a new one's. A process gone by now
/// takes what it used since with it, so the figure can fall short but is
/// never negative. (The difference of two sums was: a template retired in
/// between took its whole life's CPU out of the second.)
fn tree_cpu_since(root: u32, before: &TreeCpu) -> f64 {
    tree(root).into_iter().map(|pid| (cpu_us(pid) - before.get(&pid).copied().unwrap_or(0.0)).max(0.0)).sum()
}

/// CPU time one process has used (all its threads), µs; 0 once it is gone.
fn cpu_us(pid: u32) -> f64 {
    use nix::time::ClockId;
    ClockId::pid_cpu_clock_id(nix::unistd::Pid::from_raw(pid as i32))
        .and_then(|c| c.now())
        .map_or(0.0, |t| t.tv_sec() as f64 * 1e6 + t.tv_nsec() as f64 / 1e3)
}

/// Proportional memory of the processes in the given PID namespaces (as
/// `/proc/<pid>/ns/pid` reads, `pid:[inode]`), in MB: the environments that
/// named them, whatever else the node runs (templates it makes or retires
/// while they are measured, the zygotes). None when they are not their own
/// (`--isolation process`: every environment is in the host's).
fn envs_pss_mb(namespaces: &HashSet<String>) -> Option<f64> {
    let own = std::fs::read_link("/proc/self/ns/pid").ok()?;
    if namespaces.is_empty() || namespaces.contains(own.to_str()?) {
        return None;
    }
    let kb: u64 = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/pid"))
                .is_ok_and(|ns| ns.to_str().is_some_and(|ns| namespaces.contains(ns)))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    Some(kb as f64 / 1024.0)
}

fn machine(isolation: &str, memory: u32) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = match nimbus_sandbox::cgroup::Layout::detect(std::path::Path::new("/sys/fs/cgroup")) {
        Ok(nimbus_sandbox::cgroup::Layout::V1 { .. }) => "v1",
        Ok(nimbus_sandbox::cgroup::Layout::V2 { .. }) => "v2",
        Err(_) => "none",
    };
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "memory_mb": meminfo_mb("MemTotal:").round(),
        "kernel": kernel.trim(),
        "cgroups": cgroup,
        "isolation": isolation,
        "function_memory_mb": memory,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|v| v.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    let isolation = args.isolation.clone().unwrap_or_else(|| if root { "namespaces" } else { "process" }.into());
    let runtimes = runtimes(&args, &isolation)?;

    eprintln!("measuring floors ...");
    let mut floors = serde_json::Map::new();
    floors.insert("loopback_rtt_us".into(), loopback_floor(plan.floor_samples).await?);
    for rt in &runtimes {
        let n = (plan.floor_samples / 10).max(10);
        floors.insert(format!("{}_spawn_ms", rt.id), spawn_floor(&rt.spawn, n));
    }

    let server = start_server(&isolation)?;
    // A node in service has its templates made; let this one make them first.
    tokio::time::sleep(SETTLE).await;
    let creds = Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
    let client = Arc::new(Client::with(server.endpoint.clone(), "us-east-1".into(), creds));
    let b = Bench { client, memory: args.memory, counter: Default::default() };
    let wants = |s: Section| (args.only.is_empty() && s != Section::Warm) || args.only.contains(&s);
    let mut results = serde_json::Map::new();
    for rt in runtimes.iter().filter(|_| wants(Section::Warm)) {
        eprintln!("measuring {} warm (server pid {}) ...", rt.id, server.child.id());
        let name = b.create(rt).await?;
        let mut warm = warm_invokes(&b, &name, server.child.id(), plan.warm_only).await?;
        let c16 = throughput(&b, &name, 16, plan.throughput_secs).await?.round();
        b.delete(&name).await?;
        results.insert(
            rt.id.clone(),
            json!({
                "warm_ms": percentiles(&mut warm.ms),
                "cpu_per_invoke_us": warm.cpu_us.round(),
                "node_cpu_per_invoke_us": warm.node_cpu_us.round(),
                "warm_overhead_us": percentiles(&mut warm.overhead_us),
                "throughput_rps": {"c16": c16},
            }),
        );
    }
    for rt in runtimes.iter().filter(|_| wants(Section::Functions)) {
        eprintln!("measuring {} ...", rt.id);
        let (mut cold, mut back_to_back) = cold_starts(&b, plan.cold, plan.cold_back_to_back, |_| b.create(rt)).await?;
        let name = b.create(rt).await?;
        let mut warm = warm_invokes(&b, &name, server.child.id(), plan.warm).await?;
        let mut rps = serde_json::Map::new();
        for c in [1, 16, 64] {
            rps.insert(format!("c{c}"), json!(throughput(&b, &name, c, plan.throughput_secs).await?.round()));
        }
        b.delete(&name).await?;

        // AWS's smallest size: 7% of a CPU, enforced over short periods.
        let small = b.create_sized(rt, 128).await?;
        invoke(&b.client, &small, &json!({})).await?;
        let mut small_warm = Vec::new();
        for _ in 0..plan.warm {
            small_warm.push(ms(invoke(&b.client, &small, &json!({})).await?.0));
        }
        b.delete(&small).await?;

        // Scale-out from zero; the environments it leaves idle give the density.
        let mut scale = serde_json::Map::new();
        for key in ["100", "500", "1000"] {
            scale.insert(key.into(), Value::Null);
        }
        let (mut idle_env_mb, mut max_idle, mut envs_seen) = (Value::Null, Value::Null, 0);
        for &n in plan.scale_out {
            // Each new Node environment costs about 100 ms of CPU: 100 of them make the point.
            if n > 100 && rt.id.starts_with("nodejs") {
                continue;
            }
            let name = b.create(rt).await?;
            let (secs, envs, namespaces) = burst(&b, &name, n, plan.hold_ms).await?;
            // Read at rest, with every environment idle. Proportional set
            // size: shared pages (the zygote's) are split among their users.
            tokio::time::sleep(SETTLE).await;
            scale.insert(n.to_string(), json!(round(secs)));
            if let Some(mb) = envs_pss_mb(&namespaces) {
                let per_env = mb / envs.max(1) as f64;
                idle_env_mb = json!(round(per_env));
                max_idle = json!(if per_env > 0.0 { (16384.0 / per_env).floor() } else { 0.0 });
            }
            envs_seen = envs;
            b.delete(&name).await?;
        }
        results.insert(
            rt.id.clone(),
            json!({
                "cold_ms": percentiles(&mut cold),
                "cold_back_to_back_ms": percentiles(&mut back_to_back),
                "warm_ms": percentiles(&mut warm.ms),
                "cpu_per_invoke_us": warm.cpu_us.round(),
                "node_cpu_per_invoke_us": warm.node_cpu_us.round(),
                "warm_128mb_ms": percentiles(&mut small_warm),
                "warm_overhead_us": percentiles(&mut warm.overhead_us),
                "throughput_rps": rps,
                "scale_out_s": scale,
                "scale_out_envs": envs_seen,
                "idle_env_mb": idle_env_mb,
                "max_idle_envs": max_idle,
            }),
        );
    }

    // The fastest runtime shows the URL front end's own cost best.
    let url_rt = runtimes.iter().find(|r| r.id.starts_with("provided")).or(runtimes.first());
    let urls = match url_rt.filter(|_| wants(Section::Urls)) {
        Some(rt) => {
            eprintln!("measuring function URLs ({}) ...", rt.id);
            url_figures(&b, rt, &plan).await?
        }
        None => Value::Null,
    };

    let s3 = if wants(Section::S3) {
        eprintln!("measuring S3 ...");
        let python = runtimes.iter().find(|r| r.id.starts_with("python"));
        crate::bench_s3::figures(&b, &server.data_dir, python, &plan.s3).await?
    } else {
        Value::Null
    };

    let queues = if wants(Section::Queues) {
        eprintln!("measuring queues ...");
        let mut figures = crate::bench_queues::throughput(&b.client, 32, plan.s3.secs).await?;
        if let Some(rt) = runtimes.iter().find(|r| r.id.starts_with("python")) {
            figures["sent_to_handler_ms"] = crate::bench_queues::sent_to_handler(&b, rt, plan.s3.notified).await?;
        }
        figures
    } else {
        Value::Null
    };

    let schedules = match runtimes.iter().find(|r| r.id.starts_with("python")).filter(|_| wants(Section::Schedules)) {
        Some(rt) => {
            eprintln!("measuring schedules ...");
            let n = plan.s3.notified.min(20);
            json!({"due_to_handler_ms": crate::bench_schedules::due_to_handler(&b, rt, n).await?})
        }
        None => Value::Null,
    };

    let logs = if wants(Section::Logs) {
        eprintln!("measuring CloudWatch Logs ({} lines) ...", plan.log_lines);
        crate::bench_logs::figures(&b.client, plan.log_lines, plan.s3.notified.max(20)).await?
    } else {
        Value::Null
    };

    // Image functions run only in a sandbox, and the static image is the
    // lambda_runtime binary, as the provided.al2023 runtime's code is.
    let rust = rust_hello(&args)?;
    let images = if wants(Section::Images) && isolation == "namespaces" {
        if rust.is_file() {
            eprintln!("measuring container images ...");
            let python = runtimes.iter().find(|r| r.id.starts_with("python")).zip(args.python_image.as_deref());
            let samples = plan.cold.min(20);
            crate::bench_images::figures(&b, &server.endpoint, &server.data_dir, &rust, python, samples, args.quick)
                .await?
        } else {
            eprintln!(
                "skipping container images: no lambda_runtime binary at {} for the static image; build it with `cargo build --release -p rust-hello`",
                rust.display()
            );
            Value::Null
        }
    } else {
        Value::Null
    };

    let tasks = if wants(Section::Tasks) && isolation != "process" {
        eprintln!("measuring ECS tasks ...");
        let plan = crate::bench_tasks::TaskPlan::new(args.quick);
        crate::bench_tasks::figures(&b.client, &server.endpoint, server.child.id(), &plan).await?
    } else {
        Value::Null
    };

    let idle_cpu = if wants(Section::Idle) { idle_cpu(&b, &runtimes, &server, &plan).await? } else { Value::Null };
    drop(server);

    let report = json!({
        "machine": machine(&isolation, args.memory),
        "floors": floors,
        "runtimes": results,
        "function_urls": urls,
        "s3": s3,
        "queues": queues,
        "schedules": schedules,
        "logs": logs,
        "images": images,
        "tasks": tasks,
        "idle_cpu_percent": idle_cpu,
        "idle_sources": plan.idle_sources,
        "quick": args.quick,
    });
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The node's CPU at rest, in percent of one core: environments idle (one
/// per runtime), nothing to do.
async fn idle_cpu(b: &Bench, runtimes: &[Runtime], server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    eprintln!("measuring idle CPU ...");
    let mut last = None;
    for rt in runtimes {
        let name = b.create(rt).await?;
        invoke(&b.client, &name, &json!({})).await?;
        last = Some(name);
    }
    if let Some(function) = last {
        eprintln!("  with {} idle queues, event source mappings and schedules ...", plan.idle_sources);
        crate::bench_queues::idle_sources(b, &function, plan.idle_sources).await?;
    }
    // Let the templates those starts asked for finish, so the figure is the
    // node at rest, not its last cold starts.
    tokio::time::sleep(SETTLE).await;
    let pid = server.child.id();
    let t0 = tree_cpu(pid);
    tokio::time::sleep(Duration::from_secs_f64(plan.idle_cpu_secs)).await;
    Ok(json!(round(tree_cpu_since(pid, &t0) / 1e6 / plan.idle_cpu_secs * 100.0)))
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().map_or_else(|| "-".to_string(), |x| format!("{x}"));
    let p = |v: &Value| format!("{} / {}", f(&v["p50"]), f(&v["p99"]));
    println!("machine: {}", r["machine"]);
    println!("floors (p50 / p99):");
    if let Some(floors) = r["floors"].as_object() {
        for (k, v) in floors {
            println!("  {k:<32} {}", p(v));
        }
    }
    let loopback = r["floors"]["loopback_rtt_us"]["p50"].as_f64().unwrap_or(f64::NAN);
    if let Some(rts) = r["runtimes"].as_object() {
        for (id, v) in rts {
            let spawn = r["floors"][format!("{id}_spawn_ms")]["p50"].as_f64().unwrap_or(f64::NAN);
            let cold = v["cold_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
            let warm = v["warm_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
            println!("{id}:");
            println!(
                "  cold ms (p50 / p99)              {}   ({:.1}x the interpreter's spawn)",
                p(&v["cold_ms"]),
                cold / spawn
            );
            println!("  cold ms back to back (p50 / p99) {}", p(&v["cold_back_to_back_ms"]));
            println!(
                "  warm ms (p50 / p99)              {}   ({:.1}x the loopback round trip)",
                p(&v["warm_ms"]),
                warm * 1000.0 / loopback
            );
            println!("  warm overhead µs (p50 / p99)     {}", p(&v["warm_overhead_us"]));
            println!(
                "  CPU µs per warm invoke           {} ({} the node's)",
                f(&v["cpu_per_invoke_us"]),
                f(&v["node_cpu_per_invoke_us"])
            );
            println!("  128 MB warm ms (p50 / p99)       {}", p(&v["warm_128mb_ms"]));
            let t = &v["throughput_rps"];
            println!("  throughput rps c1 / c16 / c64    {} / {} / {}", f(&t["c1"]), f(&t["c16"]), f(&t["c64"]));
            let s = &v["scale_out_s"];
            println!("  scale-out s to 100 / 500 / 1000  {} / {} / {}", f(&s["100"]), f(&s["500"]), f(&s["1000"]));
            println!("  idle env MB, max idle in 16 GiB  {}, {}", f(&v["idle_env_mb"]), f(&v["max_idle_envs"]));
        }
    }
    let u = &r["function_urls"];
    if !u.is_null() {
        let ratio = u["url_warm_ms"]["p50"].as_f64().unwrap_or(f64::NAN)
            / u["invoke_warm_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
        let share = u["url_rps_c16"].as_f64().unwrap_or(f64::NAN) / u["invoke_rps_c16"].as_f64().unwrap_or(f64::NAN);
        println!("function URL ({}, NONE, keep-alive):", u["runtime"].as_str().unwrap_or("-"));
        println!(
            "  warm ms URL vs Invoke (p50 / p99) {} vs {}   ({ratio:.2}x)",
            p(&u["url_warm_ms"]),
            p(&u["invoke_warm_ms"])
        );
        println!(
            "  rps c16 URL vs Invoke            {} vs {}   ({:.0}%)",
            f(&u["url_rps_c16"]),
            f(&u["invoke_rps_c16"]),
            share * 100.0
        );
    }
    let s = &r["s3"];
    println!("S3 (signed, keep-alive, 32 clients):");
    println!("  4 KiB GET / PUT per s             {} / {}", f(&s["get_4k_rps_c32"]), f(&s["put_4k_rps_c32"]));
    println!(
        "  {} MiB PUT / GET MB/s            {} / {}   ({} / {} of the disk's {} / {})",
        f(&s["large_mib"]),
        f(&s["large_put_mbps"]),
        f(&s["large_get_mbps"]),
        f(&s["large_put_share"]),
        f(&s["large_get_share"]),
        f(&s["disk_write_mbps"]),
        f(&s["disk_read_mbps"])
    );
    println!("  PUT acked -> handler ms (p50 / p99) {}", p(&s["put_to_handler_ms"]));
    let q = &r["queues"];
    println!("queues (SQS JSON protocol, keep-alive, 32 clients):");
    println!(
        "  messages/s: SendMessageBatch {} / ReceiveMessage {} / DeleteMessageBatch {}",
        f(&q["send_batch_msgs_per_s"]),
        f(&q["receive_msgs_per_s"]),
        f(&q["delete_batch_msgs_per_s"])
    );
    println!("  SendMessage called -> mapped handler ms (p50 / p99) {}", p(&q["sent_to_handler_ms"]));
    println!("schedules:");
    println!("  at() due -> handler ms (p50 / p99) {}", p(&r["schedules"]["due_to_handler_ms"]));
    let l = &r["logs"];
    println!("logs ({} lines stored):", f(&l["lines"]));
    println!("  PutLogEvents lines/s              {}", f(&l["put_lines_per_s"]));
    println!(
        "  FilterLogEvents last 5 min, ms (p50 / p99): terms {} / JSON {}",
        p(&l["filter_recent_terms_ms"]),
        p(&l["filter_recent_json_ms"])
    );
    let i = &r["images"];
    println!("container images:");
    println!(
        "  push {} MB: {} MB/s ({} of the disk's {} MB/s)",
        f(&i["push_mb"]),
        f(&i["push_mbps"]),
        f(&i["push_to_floor"]),
        f(&i["disk_write_floor_mbps"])
    );
    println!(
        "  unpack {} MB of rootfs: {} MB/s (CreateFunction to Active)",
        f(&i["unpack_rootfs_mb"]),
        f(&i["unpack_mbps"])
    );
    println!(
        "  static image cold ms (p50 / p99): spaced {}, back to back {}",
        p(&i["static_cold"]["spaced_ms"]),
        p(&i["static_cold"]["back_to_back_ms"])
    );
    println!(
        "    the binary outside any sandbox:      spaced {}, back to back {} ({} / {} of it)",
        p(&i["static_floor"]["spaced_ms"]),
        p(&i["static_floor"]["back_to_back_ms"]),
        f(&i["static_cold_to_floor"]["spaced"]),
        f(&i["static_cold_to_floor"]["back_to_back"])
    );
    println!(
        "  Python image / zip cold p50: spaced {}, back to back {}",
        f(&i["python"]["spaced_p50_ratio"]),
        f(&i["python"]["back_to_back_p50_ratio"])
    );
    let t = &r["tasks"];
    println!("ECS tasks (busybox httpd, 0.25 vCPU / 512 MiB, cached image):");
    println!("  RunTask -> RUNNING, port answering, ms (p50 / p99) {}", p(&t["run_to_answering_ms"]));
    println!("  {} tasks at once, all RUNNING in s          {}", f(&t["burst_tasks"]), f(&t["burst_all_running_s"]));
    let m = &t["idle_task"];
    println!(
        "  idle task KB: cgroup {} - app {} = overhead {}",
        f(&m["cgroup_kb"]),
        f(&m["app_pss_kb"]),
        f(&m["overhead_kb"])
    );
    println!("  server's own CPU % with them idle            {}", f(&t["server_idle_cpu_percent"]));
    println!("idle CPU % (with {} idle queues, mappings, schedules): {}", r["idle_sources"], f(&r["idle_cpu_percent"]));
}
