//! `nimbus serve`: opens the data directory, builds the control plane and
//! serves the API until SIGINT or SIGTERM, finishing in-flight requests
//! (or not, at a second signal).

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use nimbus_api::sigv4::Credentials;
use nimbus_control::{Control, Settings};
use nimbus_core::clock::Clock;
use nimbus_core::Account;
use nimbus_store::{FsBlobs, SqliteMetadata};
use nimbus_triggers::schedules::Schedules;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT (`127.0.0.1:9070`, `0.0.0.0:9070`,
    /// `[::1]:9070`), `localhost:PORT`, or a PORT alone (both on 127.0.0.1).
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:9070", value_parser = listen_address)]
    listen: SocketAddr,
    /// Domain function URLs are handed out under, as
    /// `http://<url-id>.lambda-url.<region>.<domain>:<port>/`; every such
    /// name must resolve to this node (a wildcard DNS record, or `localhost`
    /// where the resolver maps `*.localhost` to loopback). Without it, URLs
    /// use the path form `http://<listen>/lambda-url/<url-id>/`, which
    /// needs no DNS. Both forms are always served.
    #[arg(long, env = "NIMBUS_URL_DOMAIN")]
    url_domain: Option<String>,
    /// Directory for metadata, code and keys.
    #[arg(long, env = "NIMBUS_DATA_DIR", default_value = ".nimbus")]
    data_dir: PathBuf,
    /// Region used in ARNs.
    #[arg(long, env = "NIMBUS_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id used in ARNs (12 digits).
    #[arg(long, env = "NIMBUS_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "plain")]
    log_format: LogFormat,
    /// How functions are isolated. `namespaces` needs root; `process` runs
    /// functions as plain child processes with no isolation (development only).
    #[arg(long, value_enum, env = "NIMBUS_ISOLATION", default_value = "namespaces")]
    isolation: Isolation,
    /// Host uids the sandboxes run as, `FIRST-LAST`: one per function
    /// environment or ECS task, each with a group of the same number, so
    /// that per-user kernel limits (processes, inotify instances) are each
    /// sandbox's own; no host user or other node may use them. Default: a
    /// range of 65,536 from 1879048192 (0x70000000) to 1895825407 that no
    /// other node of the host holds (a lock file each, in /run/nimbus).
    #[arg(long, env = "NIMBUS_SANDBOX_UIDS", value_parser = nimbus_sandbox::users::parse_range)]
    sandbox_uids: Option<std::ops::RangeInclusive<u32>>,
    /// The most memory (MB) all of this node's sandboxes (environments and
    /// ECS tasks) may use together; past it the kernel reclaims and then
    /// kills within them, never the node. Default: the host's memory less a
    /// reserve of an eighth (at least 1 GiB, at most half).
    #[arg(long, env = "NIMBUS_SANDBOX_MEMORY_MB")]
    sandbox_memory_mb: Option<u64>,
    /// The most processes and threads all of this node's sandboxes may have
    /// together. Default: the host's `pid_max` (or `threads-max`, if less)
    /// less a reserve of an eighth (at least 4,096, at most half).
    #[arg(long, env = "NIMBUS_SANDBOX_PIDS")]
    sandbox_pids: Option<u64>,
    /// The most client connections the listener holds open at once; the
    /// next waits in the kernel's backlog until one closes, so that clients
    /// cannot take the descriptors the node's own work needs. Default: a
    /// quarter of the node's open-files limit.
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// MB of request bodies the node reads into memory at once, all clients
    /// together (S3 objects and registry blobs go to disk and are not
    /// counted); a request whose body would pass it is refused with a 503,
    /// which SDKs retry. Below 67, the largest CreateFunction is always refused.
    #[arg(long, env = "NIMBUS_BODY_BUDGET_MB", default_value_t = nimbus_api::BODY_BUDGET_DEFAULT >> 20)]
    body_budget_mb: usize,
    /// Buckets the account may have; CreateBucket past it answers S3's
    /// `TooManyBuckets` (AWS's default quota, which AWS raises on request).
    #[arg(long, env = "NIMBUS_MAX_BUCKETS", default_value_t = nimbus_objects::BUCKETS_MAX)]
    max_buckets: usize,
    /// Seconds a client may take to send a request's head, or pause while
    /// sending its body or reading a response; an idle keep-alive connection
    /// is closed after as long.
    #[arg(long, env = "NIMBUS_HEADER_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds before the first retry of a failed async invocation; the
    /// second retry waits twice as long (AWS: about 60).
    #[arg(long, env = "NIMBUS_ASYNC_RETRY_DELAY", default_value_t = 60)]
    async_retry_delay: u64,
    /// Days every log line (functions', tasks', PutLogEvents') and invocation
    /// record is kept, whatever a log group's own retention: pruned at start
    /// and hourly.
    #[arg(long, env = "NIMBUS_LOG_RETENTION_DAYS", default_value_t = 30)]
    log_retention_days: u64,
    /// Free space (MiB) on the data directory's disk below which log lines
    /// (functions', tasks', PutLogEvents') are no longer stored, so that
    /// objects, messages and functions keep the room left.
    #[arg(long, env = "NIMBUS_LOG_DISK_FLOOR_MB", default_value_t = 1024)]
    log_disk_floor_mb: u64,
    /// Days CloudWatch metrics (one-minute statistics) are kept.
    #[arg(long, env = "NIMBUS_METRICS_RETENTION_DAYS", default_value_t = 15)]
    metrics_retention_days: u64,
    /// A JSON price table for usage reports (`nimbus usage`), in the shape
    /// `GET /_nimbus/usage` reports under `prices`. Default: AWS's list
    /// prices for US East (N. Virginia).
    #[arg(long, env = "NIMBUS_PRICES")]
    prices: Option<PathBuf>,
    /// Invocations in flight at once across all functions (the account's
    /// concurrency). Default: one per 16 MiB of the node's memory.
    #[arg(long, env = "NIMBUS_MAX_CONCURRENCY")]
    max_concurrency: Option<u32>,
    /// New environments a function may start per 10 seconds (AWS: 1,000).
    #[arg(long, env = "NIMBUS_BURST_LIMIT", default_value_t = 1000)]
    burst_limit: u32,
    /// Seconds an idle environment is kept warm before it is reclaimed.
    #[arg(long, env = "NIMBUS_KEEP_WARM", default_value_t = 300)]
    keep_warm: u64,
    /// Seconds an environment may live in all before it is replaced.
    #[arg(long, env = "NIMBUS_MAX_LIFETIME", default_value_t = 7200)]
    max_lifetime: u64,
    /// Templates (a sandbox with its runtime started, waiting for a function)
    /// kept ready per runtime from the start; cold starts take one. 0: none.
    #[arg(long, env = "NIMBUS_PREWARM", default_value_t = 2)]
    prewarm: usize,
    /// The most templates kept per runtime when cold starts come fast: a
    /// runtime's pool holds as many as cold starts took in the busiest second
    /// of the last minute, between --prewarm and this.
    #[arg(long, env = "NIMBUS_PREWARM_MAX", default_value_t = 32)]
    prewarm_max: usize,
    /// Below this much available memory (MB), starting an environment first
    /// reclaims the least recently used idle one. Default: 5% of the node's memory.
    #[arg(long, env = "NIMBUS_MIN_FREE_MEMORY_MB")]
    min_free_memory_mb: Option<u64>,
    /// Where the AWS SDKs the managed runtimes ship (boto3, the SDK for
    /// JavaScript v3) are installed, shared by every node of the host.
    /// Default: `$XDG_CACHE_HOME/nimbus/sdk`, else `~/.cache/nimbus/sdk`.
    #[arg(long, env = "NIMBUS_SDK_DIR")]
    sdk_dir: Option<PathBuf>,
    /// For tests only (hidden): schedules and bucket lifecycle rules run on
    /// a clock this many times as fast as real time from
    /// --test-clock-epoch-ms on, so that `rate(1 minute)` fires every second
    /// at 60. A fixed epoch keeps that clock continuous across restarts.
    #[arg(long, hide = true, requires = "test_clock_epoch_ms")]
    test_clock_scale: Option<u32>,
    /// For tests only (hidden): the epoch, in Unix milliseconds, from
    /// which --test-clock-scale runs the clock faster.
    #[arg(long, hide = true, requires = "test_clock_scale")]
    test_clock_epoch_ms: Option<i64>,
    /// Send traces of the invoke path to this OpenTelemetry collector, over
    /// OTLP/HTTP protobuf (`/v1/traces` is added), e.g. `http://localhost:4318`.
    /// The standard OTEL_* variables apply too (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    /// OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS...).
    /// Off when neither this nor an OTLP endpoint variable is set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// CPU units (1024 per core) this node offers ECS tasks. Default: all its cores.
    #[arg(long, env = "NIMBUS_TASK_CPU_UNITS")]
    task_cpu_units: Option<u32>,
    /// Memory (MiB) this node offers ECS tasks. Default: all its memory.
    #[arg(long, env = "NIMBUS_TASK_MEMORY_MIB")]
    task_memory_mib: Option<u32>,
    /// Threads that run the node's async work (the APIs, the runtimes'
    /// channels). Default: one per core. Fewer make a warm invoke cheaper
    /// in CPU (fewer hand-overs between threads) and S3 writes slower
    /// (BENCHMARKS.md, session 19).
    #[arg(long, env = "NIMBUS_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// `--listen`: an IP address and port, or `localhost:PORT` or a bare port
/// for loopback (what people type first, and what the default is).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let port = text.strip_prefix("localhost:").unwrap_or(text);
    match port.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))),
        Err(_) => Err(format!(
            "{text:?} is not an address to listen on: give IP:PORT (127.0.0.1:9070, or 0.0.0.0:9070 for every \
             interface), localhost:PORT or a port alone"
        )),
    }
}

impl ServeArgs {
    /// What ECS tasks are placed against: the flags, else the whole node.
    fn task_capacity(&self) -> nimbus_containers::Capacity {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        nimbus_containers::Capacity {
            cpu: self.task_cpu_units.unwrap_or(cores * 1024),
            memory_mib: self.task_memory_mib.unwrap_or(crate::bench::meminfo_mb("MemTotal:") as u32),
        }
    }

    /// The SDK cache: the flag, else the user's cache directory (`None` when
    /// there is no home to find it in).
    fn sdk_dir(&self) -> Option<PathBuf> {
        let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .and_then(nonempty)
            .or_else(|| std::env::var_os("HOME").and_then(nonempty).map(|h| h.join(".cache")));
        self.sdk_dir.clone().or_else(|| cache.map(|c| c.join("nimbus").join("sdk")))
    }

    fn scaling(&self) -> nimbus_worker::ScalingLimits {
        let node = nimbus_worker::ScalingLimits::for_node();
        nimbus_worker::ScalingLimits {
            max_concurrency: self.max_concurrency.unwrap_or(node.max_concurrency),
            burst: self.burst_limit,
            keep_warm: std::time::Duration::from_secs(self.keep_warm),
            max_lifetime: std::time::Duration::from_secs(self.max_lifetime),
            min_free_memory_mb: self.min_free_memory_mb.unwrap_or(node.min_free_memory_mb),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    Namespaces,
    Process,
}

/// The effective uid, from /proc (no unsafe libc call needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The cgroup parent of this node: one per (absolute) data directory, so
/// that nodes sharing a host never touch each other's environments.
fn node_group(data_dir: &std::path::Path) -> String {
    format!("nimbus-{}", &hex::encode(data_dir_digest(data_dir))[..12])
}

/// What names a node's own things on a shared host: a digest of its
/// (absolute) data directory.
fn data_dir_digest(data_dir: &std::path::Path) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes()).into()
}

/// The host users this node's sandboxes run as: the range given, or one no
/// other node of the host holds, tried from one its data directory picks.
fn sandbox_users(
    range: Option<std::ops::RangeInclusive<u32>>,
    data_dir: &std::path::Path,
) -> anyhow::Result<nimbus_sandbox::users::Users> {
    use nimbus_sandbox::users::{Users, SLOTS};
    let users = match range {
        Some(range) => Users::new(range),
        None => {
            let from = u32::from(data_dir_digest(data_dir)[0]) % SLOTS;
            Users::claim(std::path::Path::new("/run/nimbus/sandbox-uids"), from)
        }
    }
    .map_err(anyhow::Error::msg)?;
    tracing::info!(uids = ?users.range(), "sandboxes run as users of their own");
    Ok(users)
}

/// The runtimes a node can run: in a sandbox, only interpreters it sees.
pub fn discover_runtimes(sandboxed: bool) -> nimbus_core::runtime::Catalog {
    use nimbus_control::runtimes::{discover, Visible};
    match sandboxed {
        true => discover(Visible::Under(nimbus_sandbox::namespaces::HOST_DIRS)),
        false => discover(Visible::Host),
    }
}

/// Mints environment credentials from the node's key pair.
struct NodeKeys(Credentials);

impl nimbus_worker::CredentialSource for NodeKeys {
    fn issue(&self, function_arn: &str) -> nimbus_worker::SessionKeys {
        // Lambda's execution-role credentials last hours; environments are
        // reclaimed well before.
        let ttl = std::time::Duration::from_secs(12 * 3600);
        let s = nimbus_api::sigv4::mint_session(&self.0, function_arn, ttl, std::time::SystemTime::now());
        nimbus_worker::SessionKeys {
            access_key_id: s.access_key_id,
            secret_access_key: s.secret_access_key,
            session_token: s.session_token,
        }
    }
}

impl nimbus_containers::TaskCredentials for NodeKeys {
    fn issue(&self, subject: &str) -> nimbus_containers::SessionKeys {
        // Fargate's task-role credentials last hours and are refreshed by
        // the SDK before they expire.
        let ttl = std::time::Duration::from_secs(6 * 3600);
        let now = std::time::SystemTime::now();
        let s = nimbus_api::sigv4::mint_session(&self.0, subject, ttl, now);
        let expiration = (now + ttl).duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        nimbus_containers::SessionKeys {
            access_key_id: s.access_key_id,
            secret_access_key: s.secret_access_key,
            session_token: s.session_token,
            expiration,
        }
    }
}

/// Lets the worker read code archives from the blob store.
struct BlobCode(Arc<dyn nimbus_store::Blobs>);

#[async_trait::async_trait]
impl nimbus_worker::CodeSource for BlobCode {
    async fn archive(&self, sha256_hex: &str) -> Result<Vec<u8>, nimbus_worker::Error> {
        self.0.get(sha256_hex).await.map_err(|e| nimbus_worker::Error::Internal(e.to_string()))
    }
}

/// Lets control read code deployed from the object store.
struct StoreCode(nimbus_objects::Reader);

#[async_trait::async_trait]
impl nimbus_control::CodeObjects for StoreCode {
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, nimbus_control::CodeObjectError> {
        use nimbus_control::CodeObjectError as E;
        use nimbus_objects::ReadError as R;
        self.0.read(bucket, key, version, limit).await.map_err(|e| match e {
            R::NoSuchBucket => E::NoSuchBucket,
            R::NoSuchKey => E::NoSuchKey,
            R::NoSuchVersion => E::NoSuchVersion,
            R::TooLarge(_) => E::TooLarge,
            other => E::Failed(other.to_string()),
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Plain,
    Json,
}

/// The key file kept in the data directory (mode 0600).
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub const KEY_FILE: &str = "credentials.json";

/// Installs the log (stderr, filtered by `NIMBUS_LOG`) and, when an OTLP
/// endpoint is configured, the trace export beside it, whose returned
/// handle sends the last spans at shutdown.
fn init_tracing(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<nimbus_metrics::traces::Export>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // Unless asked for by name (`s3s::…=debug`, or a span's directive):
        // s3s's debug lines carry each request's credentials (Authorization,
        // session tokens, presigned signatures) and, for a wrong signature,
        // the right one, so that a reader of the log could sign as the node.
        .add_directive("s3s=info".parse().expect("a valid directive"));
    // NIMBUS_LOG_SPANS=1 logs each span's time as it closes: with
    // NIMBUS_LOG=debug, where an invocation's time goes (resolve, worker,
    // cold_start, run, runtime, drain_logs).
    let spans = if std::env::var_os("NIMBUS_LOG_SPANS").is_some() {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    // Colour codes only for a person at a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_span_events(spans).with_ansi(ansi).with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Plain => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // Each layer has its own filter: the trace export sees the invoke
    // path's debug spans whatever NIMBUS_LOG lets the log print.
    let (otlp, export) = nimbus_metrics::traces::layer(otlp_endpoint)?.unzip();
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otlp).init();
    Ok(export)
}

fn random(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// Where the node's key pair came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    /// `NIMBUS_ACCESS_KEY_ID` and `NIMBUS_SECRET_ACCESS_KEY`.
    Environment,
    /// The key file of an earlier start.
    File,
    /// Made now and written to the key file.
    Generated,
}

/// The node's key pair: from the environment, else the key file, else a
/// new pair written to the key file.
fn credentials(data_dir: &Path) -> anyhow::Result<(Credentials, KeySource)> {
    let env_id = std::env::var("NIMBUS_ACCESS_KEY_ID").ok().filter(|s| !s.is_empty());
    let env_secret = std::env::var("NIMBUS_SECRET_ACCESS_KEY").ok().filter(|s| !s.is_empty());
    match (env_id, env_secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok((Credentials { access_key_id, secret_access_key }, KeySource::Environment))
        }
        (None, None) => {}
        _ => anyhow::bail!("set both NIMBUS_ACCESS_KEY_ID and NIMBUS_SECRET_ACCESS_KEY, or neither"),
    }
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading the key file {}", path.display()))?;
        let k: KeyFile =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing the key file {}", path.display()))?;
        let creds = Credentials { access_key_id: k.access_key_id, secret_access_key: k.secret_access_key };
        return Ok((creds, KeySource::File));
    }
    let key = KeyFile {
        access_key_id: format!("NKIA{}", random(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        secret_access_key: random(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
    };
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&key)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })()
    .with_context(|| format!("writing the key file {}", path.display()))?;
    let creds = Credentials { access_key_id: key.access_key_id, secret_access_key: key.secret_access_key };
    Ok((creds, KeySource::Generated))
}

/// Creates the data directory if it is missing, its owner's alone (0700):
/// it holds functions' environment variables and code, their logs, queue
/// bodies, objects and the node's key, none of it for other local users.
/// Returns it absolute: mount tables and cgroup names speak in absolute paths.
fn open_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => anyhow::bail!("the data directory {} is not a directory", dir.display()),
        Ok(_) => {}
        Err(_) => {
            let made = (|| -> std::io::Result<()> {
                // Only the data directory itself is private: its parents are
                // made as any directory would be.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                    _ => Ok(()),
                }
            })();
            made.with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
    }
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving the data directory {}", dir.display()))?;
    // Another user's directory (made ahead under /tmp, or in a directory
    // they may write) is theirs to fill: they could plant the key file the
    // node would use, or links its lock and key writes would follow, and
    // open it to themselves again once the node had made it 0700.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&dir).with_context(|| format!("reading the data directory {}", dir.display()))?.uid();
    let me = nix::unistd::geteuid().as_raw();
    if owner != me {
        anyhow::bail!(
            "the data directory {} belongs to uid {owner}, not to this user (uid {me}): its owner could read and change \
             what the node keeps there; pass a --data-dir of your own, or make this one yours (chown)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Makes a data directory that other users may enter (one made before
/// Nimbus made it 0700, or by hand) its owner's alone, and says so: its
/// files were made readable by all.
fn keep_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let was = format!("{:o}", mode & 0o7777);
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Ok(()) => tracing::warn!(
                data_dir = %dir.display(),
                %was,
                "the data directory was open to other users; it is now 0700"
            ),
            // Its owner, but the mode cannot change (a read-only mount): say so, and go on.
            Err(e) => tracing::warn!(
                data_dir = %dir.display(),
                %was,
                error = %e,
                "the data directory is open to other users, who can read its functions' settings, logs and data"
            ),
        }
    }
    Ok(())
}

/// The lock that makes a data directory one server's: held for the life of
/// the process (the kernel drops it when the process ends, however it ends).
struct DataDirLock {
    file: nix::fcntl::Flock<std::fs::File>,
    /// When the previous server on this directory was last known alive
    /// (the lock file's modification time, which a server touches while it
    /// runs); `None` for a new directory.
    previous_alive: Option<std::time::SystemTime>,
}

/// How often a running server touches its lock file, so that after a
/// kill -9 the next start knows, to within this, when the node went down.
const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

const LOCK_FILE: &str = "nimbus.lock";

/// Header fields a request to the API may have. AWS counts none (S3 bounds
/// metadata by its 2 KB, which 90 short `x-amz-meta-` fields are within);
/// hyper's default of 100 refused such a PutObject with a bare 431.
const HEADERS_MAX: usize = 256;

impl DataDirLock {
    /// Takes the lock, or names the server that holds it. Nothing in the
    /// directory is touched before this succeeds: another live server's
    /// mounts, cgroups and files are its own.
    fn take(data_dir: &Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = data_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let mut file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
                anyhow::bail!(
                    "another nimbus server{holder} is using the data directory {}; stop it, or pass a different --data-dir",
                    data_dir.display()
                );
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        };
        let previous_alive = file.metadata().ok().filter(|m| m.len() > 0).and_then(|m| m.modified().ok());
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        })()
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { file, previous_alive })
    }

    /// Records that the server is alive now (see [`ALIVE_EVERY`]).
    fn touch(&self) {
        if let Err(e) = self.file.set_modified(std::time::SystemTime::now()) {
            tracing::debug!(error = %e, "cannot touch the lock file");
        }
    }

    /// When the previous server was last alive, in seconds since the epoch.
    fn previous_alive_secs(&self) -> Option<f64> {
        let since = self.previous_alive?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(since.as_secs_f64())
    }
}

/// The stop signals, SIGTERM, SIGINT and SIGHUP (a closed terminal): the
/// first resolves the first future (a graceful stop, which finishes the
/// requests in flight and says how many), the second the second (a stop at
/// once, which still takes down the sandboxes), and a third exits there and
/// then. The handlers are installed when this is called, not when the
/// futures are first awaited: a signal that arrives while the node is still
/// starting must stop it gracefully too, not kill it where it stands.
fn stop_signals(
    requests: nimbus_http::Requests,
    tasks: tokio_util::task::TaskTracker,
) -> anyhow::Result<(impl std::future::Future<Output = ()>, impl std::future::Future<Output = ()>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let (seen, signals) = tokio::sync::watch::channel(0u8);
    tokio::spawn(async move {
        for n in 1..=3 {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            let in_flight = in_flight(&requests, &tasks);
            if n == 3 {
                tracing::error!(signal = name, "a third signal: exiting now, sandboxes and mounts as they are");
                std::process::exit(130);
            }
            if n == 1 {
                tracing::info!(
                    signal = name,
                    in_flight,
                    "shutting down: finishing {in_flight} in-flight request(s); a second signal stops at once"
                );
            } else {
                tracing::warn!(signal = name, in_flight, "stopping at once: {in_flight} request(s) left unfinished");
            }
            let _ = seen.send(n);
        }
    });
    // A sender gone (the runtime ending) counts as the signal.
    let after = |n: u8| {
        let mut signals = signals.clone();
        async move {
            let _ = signals.wait_for(|seen| *seen >= n).await;
        }
    };
    Ok((after(1), after(2)))
}

/// Requests in flight: those still read or answered, and those running on
/// after their client left (which the listener no longer counts).
fn in_flight(requests: &nimbus_http::Requests, tasks: &tokio_util::task::TaskTracker) -> usize {
    requests.in_flight() + tasks.len()
}

/// Where clients reach function URLs. An unspecified listen address
/// (`0.0.0.0`) is reached on loopback from this machine.
fn url_base(args: &ServeArgs, addr: SocketAddr) -> nimbus_api::UrlBase {
    match &args.url_domain {
        Some(domain) => nimbus_api::UrlBase::Domain { domain: domain.clone(), port: addr.port() },
        None => {
            let mut reach = addr;
            if reach.ip().is_unspecified() {
                reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            nimbus_api::UrlBase::Path { authority: reach.to_string() }
        }
    }
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does
/// (sandboxes set their own): each client connection, environment and
/// published port of an ECS task holds descriptors in the node. Returns the
/// limit in force.
fn raise_open_files() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => usize::try_from(hard).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            usize::try_from(soft).unwrap_or(usize::MAX)
        }
    }
}

/// Binds the address without listening yet: a port that is taken fails
/// the start before the store is opened, and clients are refused (not left
/// waiting) until the node is ready to serve.
fn reserve(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let traces = init_tracing(args.log_format, args.otlp_endpoint.as_deref())?;
    let requests = nimbus_http::Requests::default();
    let tasks = tokio_util::task::TaskTracker::new();
    let (stop, abort) = stop_signals(requests.clone(), tasks.clone())?;
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits, got {:?}", args.account_id);
    }
    // Below one whole request the budget refuses the largest (a
    // CreateFunction carrying a 50 MB zip) with a 503 on every retry: said
    // once here, where the operator looks, not only in each 503.
    let body_min_mb = nimbus_core::limits::CODE_REQUEST_MAX.div_ceil(1 << 20);
    if args.body_budget_mb < body_min_mb {
        tracing::warn!(
            "--body-budget-mb {} is below {body_min_mb}, what one CreateFunction with a 50 MB zip reads into \
             memory: requests that large will be refused (503) however often they are retried",
            args.body_budget_mb
        );
    }
    if args.isolation == Isolation::Namespaces && effective_uid() != Some(0) {
        anyhow::bail!(
            "--isolation namespaces (the default) needs root to build sandboxes. Run as root, or pass \
             --isolation process to run functions as plain child processes with NO isolation (development only)."
        );
    }
    // The data directory's lock before the port: a second server on the
    // same directory (and so, most often, the same port) names the first.
    let data_dir = open_data_dir(&args.data_dir)?;
    let lock = Arc::new(DataDirLock::take(&data_dir)?);
    let alive = lock.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ALIVE_EVERY);
        loop {
            every.tick().await;
            alive.touch();
        }
    });
    keep_private(&data_dir)?;
    let socket = reserve(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let open_files = raise_open_files();
    let limits = nimbus_http::Limits {
        connections: args.max_connections.unwrap_or(open_files / 4).max(1),
        header_read: Some(std::time::Duration::from_secs(args.header_timeout)),
        body_idle: Some(std::time::Duration::from_secs(args.header_timeout)),
        write_stall: Some(std::time::Duration::from_secs(args.header_timeout)),
        headers_max: Some(HEADERS_MAX),
        title_case_headers: false,
    };
    // What all sandboxes (functions' and tasks') may hold of the listener's
    // connections: half, so that the operator and outside clients keep the rest.
    let api_connections = Arc::new(tokio::sync::Semaphore::new((limits.connections / 2).max(1)));
    let (creds, key_source) = credentials(&data_dir)?;

    let sandboxed = args.isolation == Isolation::Namespaces;
    let catalog = tokio::task::spawn_blocking(move || discover_runtimes(sandboxed));
    let db = data_dir.join("metadata.db");
    let meta = Arc::new(
        SqliteMetadata::open(&db).await.with_context(|| format!("opening the metadata store {}", db.display()))?,
    );
    meta.set_log_floor(args.log_disk_floor_mb.saturating_mul(1 << 20));
    let blob_dir = data_dir.join("blobs");
    let blobs: Arc<dyn nimbus_store::Blobs> =
        Arc::new(FsBlobs::open(&blob_dir).with_context(|| format!("opening the blob store {}", blob_dir.display()))?);
    let catalog = catalog.await?;
    tracing::info!(runtimes = ?catalog.ids().collect::<Vec<_>>(), "runtime catalog");
    let scaling = args.scaling();
    let settings = Settings {
        account: Account { id: args.account_id.clone(), region: args.region.clone() },
        catalog,
        concurrency_limit: scaling.max_concurrency,
        async_retry_delay: std::time::Duration::from_secs(args.async_retry_delay),
        log_retention: std::time::Duration::from_secs(args.log_retention_days * 86_400),
    };
    let addr = socket.local_addr()?;
    let sandbox = match args.isolation {
        Isolation::Process => {
            tracing::warn!(
                "--isolation process: functions run as plain child processes with NO isolation; never use this with untrusted code"
            );
            None
        }
        Isolation::Namespaces => {
            let cgroups = nimbus_sandbox::cgroup::Layout::detect(std::path::Path::new("/sys/fs/cgroup"));
            if let Err(e) = &cgroups {
                tracing::warn!(error = %e, "no usable cgroups: memory, CPU and pids limits are NOT enforced");
            }
            let exe = std::env::current_exe().context("locating the nimbus binary")?;
            let mut ceiling =
                nimbus_sandbox::cgroup::Ceiling::of_host().context("reading the host's memory and pid limits")?;
            if let Some(mb) = args.sandbox_memory_mb {
                ceiling.memory_bytes = mb << 20;
            }
            if let Some(pids) = args.sandbox_pids {
                ceiling.pids = pids;
            }
            // Checked before the factory starts: a refused range ends the
            // start, and a factory whose node has gone says so.
            let users = sandbox_users(args.sandbox_uids.clone(), &data_dir)?;
            Some(nimbus_worker::SandboxConfig {
                factory: nimbus_sandbox::factory::Factory::start(&exe, &data_dir.join("worker"))
                    .context("starting the sandbox factory")?,
                exe,
                roots: data_dir.join("worker").join("roots"),
                publishing: Default::default(),
                cgroups: cgroups.ok(),
                cgroup_group: node_group(&data_dir),
                users,
                ceiling,
                api_connections: api_connections.clone(),
            })
        }
    };
    // ECS tasks run in the functions' kind of sandbox (none with process
    // isolation). Under the worker's directory, so that the mounts a killed
    // node left are cleared with the worker's at the next start.
    let task_runtime = sandbox.as_ref().map(|sb| {
        Arc::new(nimbus_containers::SandboxRuntime {
            exe: sb.exe.clone(),
            dir: data_dir.join("worker").join("tasks"),
            cgroups: sb.cgroups.clone(),
            cgroup_group: sb.cgroup_group.clone(),
            users: sb.users.clone(),
            mesh: Default::default(),
        }) as Arc<dyn nimbus_containers::runtime::TaskRuntime>
    });
    // One image store per data directory: image functions' and tasks' roots.
    let image_store = Arc::new(nimbus_images::Images::open(data_dir.join("images"), nimbus_images::Limits::default()));
    let worker = nimbus_worker::Worker::new(
        nimbus_worker::Settings {
            root: data_dir.join("worker"),
            catalog: settings.catalog.clone(),
            region: args.region.clone(),
            api_endpoint: format!("http://{addr}"),
            credentials: Arc::new(NodeKeys(creds.clone())),
            sandbox,
            scaling,
            prewarm: args.prewarm,
            prewarm_max: args.prewarm_max,
            sdk_dir: args.sdk_dir(),
            images: image_store.clone(),
        },
        Arc::new(BlobCode(blobs.clone())),
    )?;
    let worker = Arc::new(worker);
    // What a killed node left of its tasks' directories, now that the worker
    // has unmounted what it left under its own: no task runs yet.
    if task_runtime.is_some() {
        nimbus_sandbox::namespaces::remove_unmounted(&data_dir.join("worker").join("tasks"));
    }
    // Whatever fails from here on, the worker takes down what it made
    // (mounts, cgroups, templates) before the process ends.
    let served = async {
        let invoker: Option<Arc<dyn nimbus_worker::Invoker>> = Some(worker.clone());
        let object_dir = data_dir.join("objects");
        let files = nimbus_objects::Files::open(&object_dir)
            .with_context(|| format!("opening the object store {}", object_dir.display()))?;
        let code_objects = Arc::new(StoreCode(nimbus_objects::Reader::new(meta.clone(), files.clone())));
        let queues = nimbus_queues::Queues::open(meta.clone(), &args.region, &args.account_id)
            .await
            .context("loading the queues")?;
        let registry_dir = data_dir.join("registry");
        let account = Account { id: args.account_id.clone(), region: args.region.clone() };
        let registry = nimbus_registry::Registry::open(
            registry_dir.clone(),
            meta.clone(),
            account.clone(),
            &creds.secret_access_key,
        )
        .await
        .with_context(|| format!("opening the container registry {}", registry_dir.display()))?;
        let registry = Arc::new(registry);
        let control = Arc::new(
            Control::new(settings, meta.clone(), blobs, invoker)
                .await?
                .with_code_objects(code_objects)
                .with_queues(queues.clone())
                .with_images(registry.clone()),
        );
        registry.set_users(control.clone());
        let targets = nimbus_api::S3Front::targets(control.clone());
        let objects =
            nimbus_objects::Objects::open(meta.clone(), files, targets, args.region.clone(), args.account_id.clone())
                .await?
                .with_max_buckets(args.max_buckets);
        let clock = match (args.test_clock_scale, args.test_clock_epoch_ms) {
            (Some(scale), Some(epoch)) => {
                tracing::warn!(
                    scale,
                    epoch,
                    "schedules and lifecycle rules run on a test clock, {scale} times as fast as real time"
                );
                Clock::scaled(epoch, scale)
            }
            _ => Clock::real(),
        };
        tokio::spawn(objects.clone().run_lifecycle(clock));
        let prices = match &args.prices {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing the price table {}", path.display()))?
            }
            None => nimbus_metrics::Prices::default(),
        };
        let metrics_settings = nimbus_metrics::Settings {
            retention: std::time::Duration::from_secs(args.metrics_retention_days * 86_400),
            clock,
            prices,
        };
        let metrics = nimbus_metrics::Metrics::start(meta.clone(), metrics_settings);
        control.set_metrics(metrics.clone());
        let s3 = nimbus_api::S3Front::new(objects, creds.clone());
        tokio::spawn(control.clone().run_async_dispatcher());
        tokio::spawn(control.clone().run_code_collector(clock));
        control.restore_scaling().await?;
        let schedules = Arc::new(Schedules::new(meta.clone(), control.clone(), queues.clone(), clock));
        tokio::spawn(schedules.clone().run_timer());
        // Enabled mappings start polling as the settling task's first pass.
        let mappings = nimbus_triggers::mappings::Mappings::new(meta.clone(), control.clone(), queues.clone());
        tokio::spawn(mappings.clone().run());
        let logs = nimbus_logs::Logs::open(meta.clone(), &args.region, &args.account_id);
        let images = Arc::new(RegistryImages { registry: registry.clone(), images: image_store });
        let ecs = nimbus_containers::Ecs::open(
            account,
            meta.clone(),
            images,
            task_runtime,
            args.task_capacity(),
            lock.previous_alive_secs(),
        )
        .await
        .context("loading the ECS state")?;
        ecs.set_platform(nimbus_containers::Platform {
            credentials: Arc::new(NodeKeys(creds.clone())),
            api: addr,
            api_connections,
            logs: logs.clone(),
            usage: meta.clone(),
            clock,
        });
        tokio::spawn(ecs.clone().run_retention());
        let api = Arc::new(
            nimbus_api::Api::new(control.clone(), creds.clone(), addr.port(), url_base(&args, addr), s3, queues.clone())
                .with_schedules(schedules)
                .with_mappings(mappings)
                .with_registry(registry)
                .with_logs(logs)
                .with_metrics(metrics.clone())
                .with_ecs(ecs.clone())
                .with_body_budget(args.body_budget_mb.saturating_mul(1 << 20))
                .with_tasks(tasks.clone())
                .with_requests(requests.clone()),
        );

        let listener = socket.listen(1024).with_context(|| format!("listening on {addr}"))?;
        println!("Nimbus is serving the Lambda API on http://{addr}");
        println!("Use it with the aws CLI, boto3 or any AWS SDK:");
        println!("export AWS_ENDPOINT_URL=http://{addr}");
        println!("export AWS_REGION={0} AWS_DEFAULT_REGION={0}", args.region);
        println!("export AWS_ACCESS_KEY_ID={}", creds.access_key_id);
        // The secret is shown once, when it is made; after that it stays where it is kept.
        match key_source {
            KeySource::Generated => println!("export AWS_SECRET_ACCESS_KEY={}", creds.secret_access_key),
            KeySource::File => println!(
                "# AWS_SECRET_ACCESS_KEY: the secret_access_key in {} (shown only when it was made)",
                data_dir.join(KEY_FILE).display()
            ),
            KeySource::Environment => println!("# AWS_SECRET_ACCESS_KEY: as set in NIMBUS_SECRET_ACCESS_KEY"),
        }
        println!("Web console: http://{addr}/console/ (sign in with this key pair, or run `nimbus console` for a one-time link)");
        tracing::info!(%addr, data_dir = %data_dir.display(), "ready");

        // The streams that end only with their sessions (live tails) end
        // when the stop begins, and so do long polls (no message can
        // arrive); every other request is finished. The node begins no
        // invocation of its own (async events, mappings' batches) from then.
        let (closing, stopping_control, stopping_queues) = (api.clone(), control.clone(), queues.clone());
        let stop = async move {
            stop.await;
            closing.close_streams();
            stopping_control.begin_stop();
            stopping_queues.close();
        };
        // The peer address becomes function URL events' `sourceIp`.
        let served = nimbus_http::serve_counting(listener, nimbus_api::router(api), stop, limits, requests.clone());
        // Then the requests whose clients left before their answers, which
        // run on, the node's own invocations under way, and ECS tasks, each
        // stopped as StopTask stops it (SIGTERM, its stopTimeout, SIGKILL).
        let finished = async {
            served.await;
            tasks.close();
            tokio::join!(tasks.wait(), control.finish_work(), ecs.stop_all());
        };
        let abandoned = tokio::select! {
            () = finished => None,
            () = abort => Some(in_flight(&requests, &tasks)),
        };
        // The invocation records and lines not yet stored, the queues'
        // receives and deletes, then the minute under way, which the
        // flusher would write when it ends.
        control.flush_records().await;
        queues.flush().await;
        if let Err(e) = metrics.flush().await {
            tracing::error!(error = %e, "cannot store the last minute's metrics");
        }
        match abandoned {
            None => anyhow::Ok(()),
            Some(n) => anyhow::bail!("stopped at a second signal, {n} request(s) unfinished"),
        }
    }
    .await;
    worker.shutdown().await;
    if let Err(e) = meta.checkpoint().await {
        tracing::warn!(error = %e, "cannot move the write-ahead log into metadata.db; it stays beside it");
    }
    tracing::info!("stopped");
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    served
}

/// Tasks' images from this node's registry, flattened by the image store:
/// a reference the registry cannot resolve (or an image that cannot be
/// unpacked) ends the task with `CannotPullContainerError`, as on AWS.
struct RegistryImages {
    registry: Arc<nimbus_registry::Registry>,
    images: Arc<nimbus_images::Images>,
}

#[async_trait::async_trait]
impl nimbus_containers::TaskImages for RegistryImages {
    async fn pull(&self, image: &str) -> Result<nimbus_containers::PulledImage, nimbus_containers::PullError> {
        let failed = |e: &dyn std::fmt::Display| nimbus_containers::PullError(e.to_string());
        let resolved = self.registry.resolve(image).await.map_err(|e| failed(&e))?;
        let diff_ids = resolved.config.rootfs().diff_ids();
        let layers: Vec<nimbus_images::Layer> = resolved
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| nimbus_images::Layer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                path: l.path.clone(),
                diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        let root = self.images.root(&resolved.digest, &layers).await.map_err(|e| failed(&e))?;
        let config = resolved.config.config().clone().unwrap_or_default();
        Ok(nimbus_containers::PulledImage {
            root,
            digest: resolved.digest,
            entrypoint: config.entrypoint().clone().unwrap_or_default(),
            cmd: config.cmd().clone().unwrap_or_default(),
            env: config.env().clone().unwrap_or_default(),
            working_dir: config.working_dir().clone(),
            user: config.user().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listen_takes_an_address_localhost_or_a_port() {
        let at = |s: &str| super::listen_address(s).map(|a| a.to_string());
        assert_eq!(at("127.0.0.1:9070").as_deref(), Ok("127.0.0.1:9070"));
        assert_eq!(at("0.0.0.0:80").as_deref(), Ok("0.0.0.0:80"));
        assert_eq!(at("[::1]:9070").as_deref(), Ok("[::1]:9070"));
        assert_eq!(at("localhost:9071").as_deref(), Ok("127.0.0.1:9071"));
        assert_eq!(at("9072").as_deref(), Ok("127.0.0.1:9072"));
        for bad in ["", "localhost", "example.com:9070", "127.0.0.1:99999", ":9070"] {
            let e = at(bad).unwrap_err();
            assert!(e.contains("127.0.0.1:9070"), "{bad}: {e}");
        }
    }
}
