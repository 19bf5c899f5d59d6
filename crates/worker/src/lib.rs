//! Execution environments and the invoke path. An environment is one
//! runtime process serving one request at a time through its own Runtime API
//! (2018-06-01) listener; environments are pooled per function
//! configuration (name, version, revision) and reused while warm. The pool
//! (`pool.rs`) decides admission and reclamation; this module starts
//! environments and runs invocations on them.
//!
//! The worker knows domain types (`nimbus-core`) and code archives (which
//! it reads through its [`CodeSource`]), never the control API's wire types
//! or routing.

mod bytecode;
mod channel;
mod env;
mod logs;
mod pace;
mod pool;
mod process;
mod runtime_api;
pub mod sdk;
mod templates;
mod unpack;
mod zygote;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::function::FunctionConfig;
use nimbus_core::runtime::Catalog;
use nimbus_core::ThrottleReason;
use tokio::sync::Mutex;
use tracing::Instrument;

pub use env::{Outcome, HELD_PER_LINE};
pub use pool::{ProvisionedStatus, ScalingLimits};
use templates::{retire_all, RefillAfter, Templates};

/// One synchronous invocation, resolved to the configuration that runs it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub config: FunctionConfig,
    pub invoked_arn: String,
    /// The event, already checked to be JSON.
    pub payload: Bytes,
    /// Decoded `X-Amz-Client-Context`, passed on as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// Where a response the function streams goes as it is written
    /// (InvokeWithResponseStream, RESPONSE_STREAM URLs). Without one, a
    /// streamed response is collected within the 6 MB limit, as Invoke's.
    pub stream: Option<StreamSink>,
    /// Invocations in the chain of function writes and events that led to
    /// this one (0: none); the trace id carries it as `Lineage=` (see
    /// `env.rs`), which AWS's SDKs send back with the function's requests.
    pub lineage: u32,
    /// Where the log lines go while the function runs, so that a long
    /// invocation's output can be read before it ends, as on AWS; the
    /// rest go with the outcome (`Outcome::lines_sent` says how many went).
    pub log_sink: Option<LogSink>,
}

/// What a [`LogSink`] calls: with the environment's log stream, and lines
/// (epoch ms, text) in order.
pub type TakeLines = dyn Fn(&str, &[(i64, String)]) + Send + Sync;

/// Takes an invocation's log lines as it runs.
#[derive(Clone)]
pub struct LogSink(pub Arc<TakeLines>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// A streamed response as the function writes it: its content type once,
/// then its bytes. The outcome follows when the invocation ends.
#[derive(Debug)]
pub enum Streamed {
    Start { content_type: String },
    Chunk(Bytes),
}

pub type StreamSink = tokio::sync::mpsc::Sender<Streamed>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The function's entrypoint cannot be started (AWS reports this to
    /// the caller as the function's error, `Runtime.InvalidEntrypoint`).
    #[error("{0}")]
    InvalidEntrypoint(String),
    /// An image's working directory is not an absolute path to a directory
    /// of it (AWS: `Runtime.InvalidWorkingDir`).
    #[error("{0}")]
    InvalidWorkingDir(String),
    /// A concurrency or scaling limit was reached.
    #[error("throttled: {}", .0.as_str())]
    Throttled(ThrottleReason),
}

/// Environments to keep initialized ahead for a version or alias.
#[derive(Debug, Clone)]
pub struct Provision {
    /// The configuration they run (an alias's is its version's).
    pub config: FunctionConfig,
    /// The version or alias the configuration is kept for.
    pub qualifier: String,
    pub invoked_arn: String,
    pub count: u32,
}

/// What control needs from the execution side.
#[async_trait]
pub trait Invoker: Send + Sync {
    async fn invoke(&self, inv: Invocation) -> Result<Outcome, Error>;
    /// Gets a configuration ready ahead of its first invoke: its code and
    /// layers unpacked (Python byte-compiled) and templates of its runtime
    /// started. Called when code is deployed or a version published.
    async fn prepare(&self, config: &FunctionConfig);
    /// Stops the idle environments of a function (after an update, of
    /// `$LATEST` only; after a delete, `None`: every version).
    async fn retire(&self, function: &str, version: Option<&str>);
    /// Sets or clears a function's reserved concurrency.
    fn set_reserved(&self, function: &str, reserved: Option<u32>);
    /// Starts `count` environments and keeps them ready; returns once they
    /// are, or once one failed.
    async fn provision(&self, p: Provision);
    /// Stops keeping environments for a qualifier (`None`: every one).
    async fn unprovision(&self, function: &str, qualifier: Option<&str>);
    fn provisioned_status(&self, function: &str, qualifier: &str) -> Option<ProvisionedStatus>;
    /// Removes the unpacked roots of images whose manifest digest is not in
    /// `keep`, with their templates; a root an environment or task still
    /// runs on stays until a later call.
    async fn retain_images(&self, keep: &HashSet<String>);
    /// Removes the unpacked code and layer trees whose names are not in
    /// `keep` (see `Metadata::unpacked_in_use`), with their read-only
    /// mounts. A sandbox binds its tree, and would lose its files: `keep`
    /// must hold every tree an environment may still run on.
    async fn retain_code(&self, _keep: &HashSet<String>) {}
    /// How many environments are in each state, for the metrics endpoint.
    fn environments(&self) -> Environments {
        Environments::default()
    }
}

/// The node's environments by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environments {
    /// Running an invocation.
    pub busy: u32,
    /// Warm and waiting, provisioned ones included.
    pub idle: u32,
    /// Of the idle, those kept for provisioned concurrency.
    pub provisioned: u32,
    /// Templates ready, per runtime family.
    pub templates: Vec<(String, u32)>,
    /// Invocations running, per function (by name).
    pub running: Vec<(String, u32)>,
}

/// Reads a code archive by its sha256; the store's blobs behind a seam.
#[async_trait]
pub trait CodeSource: Send + Sync {
    async fn archive(&self, sha256_hex: &str) -> Result<Vec<u8>, Error>;
}

/// Credentials an environment gets for calling back into Nimbus.
#[derive(Clone)]
pub struct SessionKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

/// Mints the credentials of one environment, for a function ARN.
pub trait CredentialSource: Send + Sync {
    fn issue(&self, function_arn: &str) -> SessionKeys;
}

/// How sandboxed environments are made.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// This binary, which runs the sandbox stages.
    pub exe: PathBuf,
    /// Starts each sandbox's first stage (a clone of one execution of `exe`).
    pub factory: Arc<nimbus_sandbox::factory::Factory>,
    /// Where each environment's root is built (in its own mount
    /// namespace, so one directory serves all), and where the node keeps
    /// their slots, on a tmpfs of its own.
    pub roots: PathBuf,
    /// Held shared from a sandbox's spawn until its stage one has attached
    /// its mount trees, and exclusively while an SDK is published on its
    /// shared directory: a tree cut before that mount and attached after
    /// would never see it.
    pub publishing: Arc<tokio::sync::RwLock<()>>,
    /// The host's cgroup hierarchy, when usable.
    pub cgroups: Option<nimbus_sandbox::cgroup::Layout>,
    /// This node's cgroup parent (one per data directory).
    pub cgroup_group: String,
    /// The host users sandboxes run as, one each.
    pub users: nimbus_sandbox::users::Users,
    /// What all sandboxes of the node may hold together (`cgroup_group`'s limits).
    pub ceiling: nimbus_sandbox::cgroup::Ceiling,
    /// Connections all sandboxes together may hold to the node's API: part
    /// of the listener's, so that functions scaled out cannot take every
    /// slot from the operator and outside clients.
    pub api_connections: Arc<tokio::sync::Semaphore>,
}

/// Node settings the worker needs.
#[derive(Clone)]
pub struct Settings {
    /// Where unpacked code and runtime bootstraps live.
    pub root: PathBuf,
    pub catalog: Catalog,
    pub region: String,
    /// The Nimbus API as environments reach it (`AWS_ENDPOINT_URL`).
    pub api_endpoint: String,
    pub credentials: Arc<dyn CredentialSource>,
    /// `None` runs plain child processes (`--isolation process`).
    pub sandbox: Option<SandboxConfig>,
    pub scaling: ScalingLimits,
    /// Templates kept started ahead per runtime (sandbox and runtime,
    /// waiting for a function) with no cold starts, and at most when cold
    /// starts come fast (see `templates.rs`).
    pub prewarm: usize,
    pub prewarm_max: usize,
    /// The host's cache of the SDKs the managed runtimes ship (see
    /// `sdk.rs`); `None`: runtimes without them.
    pub sdk_dir: Option<PathBuf>,
    /// The roots of container images (`PackageType: Image`).
    pub images: Arc<nimbus_images::Images>,
}

pub struct Worker {
    settings: Settings,
    code: Arc<dyn CodeSource>,
    pool: Arc<pool::Pool>,
    templates: Arc<Templates>,
    /// Each sandboxed Python interpreter's zygote, started at its first use.
    zygotes: std::sync::Mutex<HashMap<String, Arc<zygote::Zygote>>>,
    /// Code and layer directories made read-only mounts of themselves.
    read_only: std::sync::Mutex<HashSet<PathBuf>>,
    /// Serialises the unpacking of each directory.
    unpacking: std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// Set (under its lock) when shutdown begins: an SDK install finishing
    /// later must not mount anything shutdown would not take down.
    stopping: Arc<std::sync::Mutex<bool>>,
}

/// How long the init phase may take before it is retried within the invoke.
const INIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const PYTHON_ZYGOTE: &str = include_str!("../../../runtimes/python/zygote.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/nodejs/bootstrap.mjs");
const NODE_ESM_PATHS: &str = include_str!("../../../runtimes/nodejs/esm-paths.mjs");

/// Where a runtime finds its SDK, under its runtime directory (the
/// bootstrap's `LAMBDA_RUNTIME_DIR`): in a sandbox a mount point, else a
/// link into the cache.
fn sdk_entry(sdk: sdk::Sdk) -> &'static str {
    match sdk {
        sdk::Sdk::Python => "python",
        sdk::Sdk::Node => "node_modules",
    }
}

/// The SDK a runtime ships, if any.
fn sdk_of(runtime: &str) -> Option<sdk::Sdk> {
    match runtime {
        r if r.starts_with("python") => Some(sdk::Sdk::Python),
        r if r.starts_with("nodejs") => Some(sdk::Sdk::Node),
        _ => None,
    }
}

/// Makes the SDKs of the node's runtimes reachable from their environments,
/// and installs those missing in the background (environments started
/// before an install ends get it as soon as it does, in a sandbox; a plain
/// process sees the cache through a link). Logs `SDK ready` for each.
fn provide_sdks(
    settings: &Settings,
    cache: &std::path::Path,
    stopping: &Arc<std::sync::Mutex<bool>>,
) -> std::io::Result<()> {
    let runtime_dir = settings.root.join("runtime");
    // Each SDK the catalog's runtimes ship, with the client that installs it.
    let mut wanted: Vec<(sdk::Sdk, Option<PathBuf>, Vec<String>)> = Vec::new();
    let pythons: Vec<String> = settings
        .catalog
        .ids()
        .filter(|r| r.starts_with("python"))
        .filter_map(|r| settings.catalog.interpreter(r))
        .map(str::to_string)
        .collect();
    if let Some(python) = pythons.first() {
        wanted.push((sdk::Sdk::Python, Some(PathBuf::from(python)), pythons.clone()));
    }
    if let Some(node) =
        settings.catalog.ids().filter(|r| r.starts_with("nodejs")).find_map(|r| settings.catalog.interpreter(r))
    {
        wanted.push((sdk::Sdk::Node, sdk::npm_for(std::path::Path::new(node)), vec![]));
    }
    for (sdk, tool, pythons) in wanted {
        let entry = runtime_dir.join(sdk_entry(sdk));
        if let Ok(meta) = std::fs::symlink_metadata(&entry) {
            match meta.is_dir() {
                true => std::fs::remove_dir_all(&entry)?,
                false => std::fs::remove_file(&entry)?,
            }
        }
        let slot = settings.root.join("sdk").join(sdk.name());
        match settings.sandbox {
            Some(_) => {
                std::fs::create_dir_all(&entry)?;
                nimbus_sandbox::namespaces::shared_mount_point(&slot)?;
            }
            None => std::os::unix::fs::symlink(sdk.path(cache), &entry)?,
        }
        // `starting`: no sandbox exists yet, and this may be an async context.
        let publish = {
            let (cache, root) = (cache.to_path_buf(), settings.root.clone());
            let gate = settings.sandbox.as_ref().map(|sb| sb.publishing.clone());
            let stopping = stopping.clone();
            move |starting: bool| -> std::io::Result<()> {
                let stopping = stopping.lock().unwrap_or_else(|e| e.into_inner());
                if *stopping {
                    return Ok(());
                }
                if let Some(gate) = &gate {
                    let _published = (!starting).then(|| gate.blocking_write());
                    let via = root.join("sdk").join(format!("{}.ro", sdk.name()));
                    nimbus_sandbox::namespaces::publish_read_only(&sdk.path(&cache), &via, &slot)?;
                }
                tracing::info!(sdk = %sdk.name(), path = %sdk.path(&cache).display(), "SDK ready: {}", sdk.title());
                Ok(())
            }
        };
        if sdk.installed(cache) {
            publish(true)?;
            continue;
        }
        let Some(tool) = tool else {
            tracing::warn!(sdk = %sdk.name(), "npm is missing: cannot install {}; functions run without it", sdk.title());
            continue;
        };
        let cache = cache.to_path_buf();
        // A thread of its own: a stopping node does not wait for an install.
        std::thread::spawn(move || {
            tracing::info!(sdk = %sdk.name(), "installing {} into {}", sdk.title(), cache.display());
            let began = std::time::Instant::now();
            match sdk
                .install(&cache, &tool, &pythons)
                .map_err(|e| e.to_string())
                .and_then(|()| publish(false).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    tracing::info!(sdk = %sdk.name(), "installed {} in {:.1} s", sdk.title(), began.elapsed().as_secs_f64())
                }
                Err(e) => {
                    tracing::warn!(sdk = %sdk.name(), error = %e, "cannot install {}: functions run without it", sdk.title())
                }
            }
        });
    }
    Ok(())
}

impl Worker {
    pub fn new(settings: Settings, code: Arc<dyn CodeSource>) -> Result<Self, Error> {
        let runtime_dir = settings.root.join("runtime");
        std::fs::create_dir_all(&runtime_dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", runtime_dir.display())))?;
        if let Some(sb) = &settings.sandbox {
            // Leftovers of a previous run that was killed before retiring its
            // environments: its mounts (the roots' tmpfs, and with it every
            // root and slot directory) and its cgroups.
            nimbus_sandbox::namespaces::unmount_under(&settings.root);
            if let Some(layout) = &sb.cgroups {
                nimbus_sandbox::cgroup::Cgroup::remove_leftovers(layout, &sb.cgroup_group);
                if let Err(e) = sb.ceiling.apply(layout, &sb.cgroup_group) {
                    tracing::warn!(error = %e, ceiling = ?sb.ceiling, "cannot limit what all sandboxes hold together");
                }
            }
            nimbus_sandbox::namespaces::scratch_tmpfs(&sb.roots)
                .map_err(|e| Error::Internal(format!("preparing {}: {e}", sb.roots.display())))?;
        }
        for (file, text) in [
            ("bootstrap.py", PYTHON_BOOTSTRAP),
            ("zygote.py", PYTHON_ZYGOTE),
            ("bootstrap.mjs", NODE_BOOTSTRAP),
            ("esm-paths.mjs", NODE_ESM_PATHS),
        ] {
            std::fs::write(runtime_dir.join(file), text)
                .map_err(|e| Error::Internal(format!("writing the runtime bootstrap {file}: {e}")))?;
        }
        let stopping = Arc::new(std::sync::Mutex::new(false));
        if let Some(cache) = &settings.sdk_dir {
            provide_sdks(&settings, cache, &stopping)
                .map_err(|e| Error::Internal(format!("preparing the runtimes' SDKs: {e}")))?;
        }
        let pool = pool::Pool::new(settings.scaling.clone());
        let templates = Templates::new(settings.prewarm, settings.prewarm_max);
        let worker = Self {
            settings,
            code,
            pool,
            templates,
            zygotes: Default::default(),
            read_only: Default::default(),
            unpacking: Default::default(),
            stopping,
        };
        // Ready before the first function of each runtime is invoked.
        for runtime in worker.settings.catalog.ids() {
            worker.templates.fill(&worker.base_for(runtime));
        }
        Ok(worker)
    }

    /// Retires every idle environment (graceful shutdown).
    pub async fn shutdown(&self) {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = true;
        retire_all(self.pool.drain()).await;
        retire_all(self.templates.close().await).await;
        if self.settings.sandbox.is_some() {
            nimbus_sandbox::namespaces::unmount_under(&self.settings.root);
        }
        if let Some(SandboxConfig { cgroups: Some(layout), cgroup_group, .. }) = &self.settings.sandbox {
            nimbus_sandbox::cgroup::Cgroup::remove_group(layout, cgroup_group);
        }
    }

    /// An environment serves one configuration and code. Not keyed by the
    /// revision, which a permission change, a publish or the end of an
    /// update also changes: each made every warm environment cold and left
    /// it idle until it expired. Code and configuration updates set
    /// `last_modified_ms` (and retire the environments they replace).
    fn key(c: &FunctionConfig) -> String {
        format!("{}\u{0}{}\u{0}{}\u{0}{}", c.name, c.version, c.last_modified_ms, c.code.sha256_hex)
    }

    fn base(&self, config: &FunctionConfig) -> env::Base {
        self.base_for(config.runtime.as_deref().unwrap_or_default())
    }

    fn base_for(&self, runtime: &str) -> env::Base {
        let sdk = self.sdk_mount(runtime);
        // Node.js's SDK at the root, for the templates of most functions
        // (those whose layers hold no Node.js package: `code_base`).
        let links = match &sdk {
            Some((_, inside)) if runtime.starts_with("nodejs") => {
                vec![(PathBuf::from("/node_modules"), inside.clone())]
            }
            _ => Vec::new(),
        };
        let mut base = env::Base {
            interpreter: self.settings.catalog.interpreter(runtime).map(str::to_string),
            runtime: runtime.to_string(),
            runtime_dir: self.settings.root.join("runtime"),
            region: self.settings.region.clone(),
            api_endpoint: self.settings.api_endpoint.clone(),
            sandbox: self.settings.sandbox.clone(),
            shared: sdk.into_iter().collect(),
            links,
            image: None,
            image_preload: None,
            zygote: None,
            esm_hooks: false,
        };
        base.zygote = self.zygote(&base);
        base
    }

    /// The zygote of a sandboxed Python runtime, started at its first use;
    /// `None` (environments start their own interpreter) if it cannot start.
    fn zygote(&self, base: &env::Base) -> Option<Arc<zygote::Zygote>> {
        let interpreter =
            base.interpreter.as_ref().filter(|_| base.runtime.starts_with("python") && base.sandbox.is_some())?;
        let mut zygotes = self.zygotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(z) = zygotes.get(interpreter).filter(|z| !z.exited()) {
            return Some(z.clone());
        }
        let script = base.runtime_dir.join("zygote.py");
        match zygote::Zygote::start(interpreter, &script, env::zygote_environment(base)) {
            Ok(z) => {
                let z = Arc::new(z);
                zygotes.insert(interpreter.clone(), z.clone());
                Some(z)
            }
            Err(e) => {
                tracing::warn!(%interpreter, error = %e, "cannot start the zygote; environments start their own interpreter");
                None
            }
        }
    }

    /// What environments of a zip function, its code unpacked in `code_dir`
    /// and its layers in `layers`, start from.
    fn code_base(&self, config: &FunctionConfig, code_dir: &Path, layers: Option<&Path>) -> env::Base {
        let mut base = self.base(config);
        if !base.runtime.starts_with("nodejs") {
            return base;
        }
        // Layers' packages come before the SDK (NODE_PATH's order), which
        // a `/node_modules` would not keep.
        if layers.is_some_and(|l| l.join("nodejs").exists()) {
            base.links.clear();
        }
        base.esm_hooks =
            base.links.is_empty() && env::node_imports(code_dir, config.handler.as_deref().unwrap_or_default());
        base
    }

    /// What environments of an image function start from.
    fn image_base(&self, config: &FunctionConfig, root: nimbus_images::Root) -> env::Base {
        env::Base {
            image: Some(root),
            image_preload: config.image.as_ref().and_then(|i| env::ImagePreload::of(i, config.memory_size)),
            ..self.base(config)
        }
    }

    /// Where a sandbox of `runtime` binds the runtime's SDK slot: AWS's
    /// `site-packages` for Python, the runtime's `node_modules` for Node.js.
    fn sdk_mount(&self, runtime: &str) -> Option<(PathBuf, PathBuf)> {
        let sdk = sdk_of(runtime)?;
        if self.settings.sandbox.is_none() || self.settings.sdk_dir.is_none() {
            return None;
        }
        let slot = self.settings.root.join("sdk").join(sdk.name());
        let inside = match sdk {
            sdk::Sdk::Python => PathBuf::from(format!("/var/lang/lib/{runtime}/site-packages")),
            sdk::Sdk::Node => PathBuf::from("/var/runtime").join(sdk_entry(sdk)),
        };
        Some((slot, inside))
    }

    /// What an environment of `config` is built from.
    async fn spec(
        &self,
        config: &FunctionConfig,
        invoked_arn: &str,
        init_type: &'static str,
    ) -> Result<env::Spec, Error> {
        if config.image.is_some() {
            let root = self.image_root(config).await?;
            return Ok(env::Spec {
                code_dir: root.path().to_path_buf(),
                base: self.image_base(config, root),
                key: Self::key(config),
                config: config.clone(),
                keys: self.settings.credentials.issue(invoked_arn),
                layers: None,
                init_type,
            });
        }
        let code_dir = self.code_dir(config).await?;
        let layers = self.layers_dir(config).await?;
        Ok(env::Spec {
            base: self.code_base(config, &code_dir, layers.as_deref()),
            key: Self::key(config),
            config: config.clone(),
            code_dir,
            keys: self.settings.credentials.issue(invoked_arn),
            layers,
            init_type,
        })
    }

    /// The flattened root of an image function's image, unpacked once per digest.
    async fn image_root(&self, config: &FunctionConfig) -> Result<nimbus_images::Root, Error> {
        let image = config.image.as_ref().ok_or_else(|| Error::Internal("not an image function".into()))?;
        if self.settings.sandbox.is_none() {
            return Err(Error::Unavailable("Image functions need a sandbox (`--isolation namespaces`).".into()));
        }
        let layers: Vec<nimbus_images::Layer> = image
            .layers
            .iter()
            .map(|l| nimbus_images::Layer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                path: PathBuf::from(&l.path),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        // An image that cannot be unpacked is the function's failure, as an
        // entrypoint that cannot start is; the node's own I/O errors are not.
        self.settings.images.root(&image.digest, &layers).await.map_err(|e| match e {
            nimbus_images::ImageError::Io(e) => Error::Internal(format!("unpacking the image: {e}")),
            e => Error::InvalidEntrypoint(format!("The image cannot be used: {e}")),
        })
    }

    /// The interpreter that byte-compiles a configuration's code, for Python runtimes.
    fn compiler(&self, config: &FunctionConfig) -> Option<String> {
        let runtime = config.runtime.as_deref().filter(|r| r.starts_with("python"))?;
        self.settings.catalog.interpreter(runtime).map(str::to_string)
    }

    /// The unpacked code of a configuration.
    async fn code_dir(&self, config: &FunctionConfig) -> Result<PathBuf, Error> {
        let sha = config.code.sha256_hex.as_str();
        let dir = self.unpacked(self.settings.root.join("code").join(sha), &[sha], self.compiler(config)).await?;
        self.read_only(dir)
    }

    /// The function's layers merged in order, one directory per combination.
    async fn layers_dir(&self, config: &FunctionConfig) -> Result<Option<PathBuf>, Error> {
        if config.layers.is_empty() {
            return Ok(None);
        }
        let shas: Vec<&str> = config.layers.iter().map(|l| l.sha256_hex.as_str()).collect();
        let dir =
            self.unpacked(self.settings.root.join("layers").join(shas.join("-")), &shas, self.compiler(config)).await?;
        self.read_only(dir).map(Some)
    }

    /// `dir` holding the archives unpacked one over another (and, with an
    /// interpreter, byte-compiled), made once.
    async fn unpacked(&self, dir: PathBuf, shas: &[&str], python: Option<String>) -> Result<PathBuf, Error> {
        if dir.exists() {
            return Ok(dir);
        }
        // One lock per directory: a slow compile holds up no other function's code.
        let lock = self.unpacking.lock().unwrap_or_else(|e| e.into_inner()).entry(dir.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if dir.exists() {
            return Ok(dir);
        }
        let made = self.unpack(&dir, shas, python).await;
        self.unpacking.lock().unwrap_or_else(|e| e.into_inner()).remove(&dir);
        made.map(|()| dir)
    }

    async fn unpack(&self, dir: &Path, shas: &[&str], python: Option<String>) -> Result<(), Error> {
        let mut archives = Vec::with_capacity(shas.len());
        for sha in shas {
            archives.push(self.code.archive(sha).await?);
        }
        let failed = |e: String| Error::Internal(format!("unpacking {}: {e}", dir.display()));
        let target = dir.to_path_buf();
        let staging = tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = archives.iter().map(Vec::as_slice).collect();
            unpack::stage(&refs, &target)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
        if let Some(python) = python {
            // A user of its own while it runs, as a sandbox has; none left:
            // no compiling (imports compile), never as the node's root.
            match &self.settings.sandbox {
                Some(sb) => match sb.users.take() {
                    Some(user) => bytecode::byte_compile(&python, &staging, Some((user.id(), user.id()))).await,
                    None => tracing::warn!(dir = %dir.display(), "no sandbox user left to byte-compile as"),
                },
                None => bytecode::byte_compile(&python, &staging, None).await,
            }
        }
        let target = dir.to_path_buf();
        tokio::task::spawn_blocking(move || unpack::publish(&staging, &target))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))
    }

    /// In a sandbox, code and layers are bound from read-only mounts of
    /// their directories, made once per directory and node run.
    fn read_only(&self, dir: PathBuf) -> Result<PathBuf, Error> {
        if self.settings.sandbox.is_none() {
            return Ok(dir);
        }
        let mut mounted = self.read_only.lock().unwrap_or_else(|e| e.into_inner());
        if !mounted.contains(&dir) {
            nimbus_sandbox::namespaces::read_only_self(&dir).map_err(|e| Error::Internal(e.to_string()))?;
            mounted.insert(dir.clone());
        }
        Ok(dir)
    }

    /// Starts an environment: a template made ahead if one is ready, else a
    /// new one. An init that overruns AWS's 10 s limit is abandoned and run
    /// again with no limit of its own: the invocation's timeout then covers
    /// it (AWS's "suppressed init").
    async fn start(&self, spec: env::Spec) -> Result<env::Env, Error> {
        // A runtime behind an exec wrapper is started through it, not ahead.
        let template = match env::exec_wrapper(&spec) {
            Some(_) => None,
            None => self.templates.take(&spec.base),
        };
        tracing::Span::current().record("template", template.is_some());
        let mut first = match template {
            Some(t) => t.specialize(&spec).instrument(tracing::debug_span!("specialize")).await?,
            None => env::Env::spawn(spec.clone()).instrument(tracing::debug_span!("spawn")).await?,
        };
        if first.wait_ready(INIT_LIMIT).instrument(tracing::debug_span!("init")).await {
            first.after_init();
            return Ok(first);
        }
        first.retire().await;
        let init_type = spec.init_type;
        let mut second = env::Env::spawn(spec).await?;
        second.note_init_timeout(init_type, INIT_LIMIT);
        second.after_init();
        Ok(second)
    }
}

#[async_trait]
impl Invoker for Worker {
    fn environments(&self) -> Environments {
        let (busy, idle, provisioned) = self.pool.counts();
        Environments { busy, idle, provisioned, templates: self.templates.counts(), running: self.pool.running() }
    }

    async fn invoke(&self, inv: Invocation) -> Result<Outcome, Error> {
        let (mut ticket, dead) = tracing::debug_span!("admit")
            .in_scope(|| self.pool.admit(&inv.config.name, &Self::key(&inv.config)))
            .map_err(Error::Throttled)?;
        // Rarely any: a task spawned for none woke an idle worker thread
        // on every invoke (about one context switch of seven).
        if !dead.is_empty() {
            tokio::spawn(retire_all(dead));
        }
        let mut refill = None;
        let mut warm = ticket.warm.take();
        loop {
            let (environment, cold) = match warm.take() {
                Some(e) => (e, false),
                None => {
                    if let Some(old) = self.pool.reclaim_for_memory() {
                        tokio::spawn(old.retire());
                    }
                    let started = async {
                        let spec = self.spec(&inv.config, &inv.invoked_arn, "on-demand").await?;
                        refill = Some(RefillAfter { templates: &self.templates, base: spec.base.clone() });
                        self.start(spec)
                            .instrument(tracing::debug_span!("cold_start", template = tracing::field::Empty))
                            .await
                    };
                    match started.await {
                        Ok(e) => (e, true),
                        Err(e @ (Error::InvalidEntrypoint(_) | Error::InvalidWorkingDir(_))) => {
                            let kind = match e {
                                Error::InvalidWorkingDir(_) => "Runtime.InvalidWorkingDir",
                                _ => "Runtime.InvalidEntrypoint",
                            };
                            let message = e.to_string();
                            tracing::warn!(function = %inv.config.name, request_id = %inv.request_id, %message, "the runtime could not start");
                            let mut outcome = Outcome::platform_failure(&inv, kind, &message);
                            outcome.concurrency = ticket.concurrency;
                            return Ok(outcome);
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let mut outcome = environment.run(&inv, cold).instrument(tracing::debug_span!("run", cold)).await;
            if outcome.undelivered && !cold {
                // A warm environment whose runtime had gone: a new one serves
                // the invocation, as on AWS.
                tracing::debug!(function = %inv.config.name, request_id = %inv.request_id, "the warm runtime had exited; starting another");
                tokio::spawn(environment.retire());
                continue;
            }
            outcome.concurrency = ticket.concurrency;
            ticket.finish(environment, outcome.reusable).await;
            drop(refill);
            return Ok(outcome);
        }
    }

    async fn prepare(&self, config: &FunctionConfig) {
        if config.image.is_some() {
            match self.image_root(config).await {
                Ok(root) => self.templates.ensure(&self.image_base(config, root)).await,
                Err(e) => {
                    tracing::warn!(function = %config.name, error = %e, "cannot unpack the function's image ahead")
                }
            }
            return;
        }
        let ready = async {
            let code_dir = self.code_dir(config).await?;
            let layers = self.layers_dir(config).await?;
            Ok::<_, Error>((code_dir, layers))
        };
        match ready.await {
            Ok((code_dir, layers)) => self.templates.fill(&self.code_base(config, &code_dir, layers.as_deref())),
            Err(e) => tracing::warn!(function = %config.name, error = %e, "cannot prepare the function's code ahead"),
        }
    }

    async fn retire(&self, function: &str, version: Option<&str>) {
        let prefix = match version {
            Some(v) => format!("{function}\u{0}{v}\u{0}"),
            None => format!("{function}\u{0}"),
        };
        retire_all(self.pool.remove_idle(|k| k.starts_with(&prefix))).await;
    }

    fn set_reserved(&self, function: &str, reserved: Option<u32>) {
        self.pool.set_reserved(function, reserved);
    }

    /// Starts the configuration's environments, then keeps their number:
    /// one lost (its runtime crashed, timed out or was killed) is replaced,
    /// as AWS does, until the configuration goes.
    async fn provision(&self, p: Provision) {
        use futures_util::StreamExt;
        let (name, qualifier) = (p.config.name.clone(), p.qualifier.clone());
        let keeper = self.pool.provisioning(&name, &qualifier, p.count);
        let one = || async {
            let spec = self.spec(&p.config, &p.invoked_arn, "provisioned-concurrency").await?;
            let mut env = env::Env::spawn(spec).await?;
            if !env.wait_ready(INIT_LIMIT).await {
                env.retire().await;
                return Err(Error::Unavailable("Init timed out after 10 seconds.".into()));
            }
            if let Some(reason) = env.init_failure() {
                env.retire().await;
                return Err(Error::Unavailable(reason));
            }
            env.after_init();
            Ok(env)
        };
        let mut allocated = false;
        let mut backoff = std::time::Duration::from_secs(1);
        loop {
            // Registered before the count is read, so that a loss between
            // the two is not missed.
            let lost = keeper.lost.notified();
            tokio::pin!(lost);
            lost.as_mut().enable();
            let Some(missing) = self.pool.provisioned_missing(&keeper) else { return };
            if missing == 0 {
                allocated = true;
                backoff = std::time::Duration::from_secs(1);
                lost.await;
                continue;
            }
            // A few at a time: each start is CPU-bound on this node.
            let mut starts = futures_util::stream::iter((0..missing).map(|_| one())).buffer_unordered(4);
            let mut failed = false;
            while let Some(result) = starts.next().await {
                match result {
                    Ok(env) => {
                        if let Some(env) = self.pool.add_provisioned(&keeper, env) {
                            env.retire().await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(function = %name, %qualifier, error = %e, "provisioning failed");
                        failed = true;
                        if !allocated {
                            self.pool.provisioning_failed(&keeper, e.to_string());
                        }
                    }
                }
            }
            match (failed, allocated) {
                // The first allocation failed: AWS reports FAILED until the
                // configuration is put again.
                (true, false) => return,
                // A replacement failed: tried again, less and less often.
                (true, true) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                }
                _ => {}
            }
        }
    }

    async fn unprovision(&self, function: &str, qualifier: Option<&str>) {
        retire_all(self.pool.unprovision(function, qualifier)).await;
    }

    fn provisioned_status(&self, function: &str, qualifier: &str) -> Option<ProvisionedStatus> {
        self.pool.provisioned_status(function, qualifier)
    }

    async fn retain_code(&self, keep: &HashSet<String>) {
        let dirs = [self.settings.root.join("code"), self.settings.root.join("layers")];
        let keep = keep.clone();
        let gone: Vec<PathBuf> = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|entry| !keep.contains(entry.file_name().to_string_lossy().as_ref()))
            .map(|entry| entry.path())
            .collect();
        {
            // Mounted again if the same code comes back.
            let mut mounted = self.read_only.lock().unwrap_or_else(|e| e.into_inner());
            gone.iter().for_each(|dir| {
                mounted.remove(dir);
            });
        }
        let sandboxed = self.settings.sandbox.is_some();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for dir in gone {
                if sandboxed {
                    // Its read-only mount of itself first.
                    nimbus_sandbox::namespaces::remove_unmounted(&dir);
                } else if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove unused code");
                }
                removed += usize::from(!dir.exists());
            }
            removed
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "removed the unpacked code and layers no function uses");
        }
    }

    async fn retain_images(&self, keep: &HashSet<String>) {
        retire_all(self.templates.take_images(keep)).await;
        match self.settings.images.retain(keep).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the unpacked roots of images no function uses"),
            Err(e) => tracing::warn!(error = %e, "cannot remove unused image roots"),
        }
    }
}
