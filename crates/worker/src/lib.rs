//! Execution environments and the invoke path. An environment is one
//! runtime process serving one request at a time through its own Runtime API
//! (2018-06-01) listener; environments are pooled per function
//! configuration (name, version, revision) and reused while warm.
//!
//! The worker knows domain types (`nimbus-core`) and code archives
//! (`nimbus-store` blobs), never the control API's wire types or routing.
//! Isolation today is `process` only (plain child processes); the
//! namespace sandbox plugs in where `env::spawn` builds the command.

mod env;
mod runtime_api;
mod unpack;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::function::FunctionConfig;
use nimbus_core::runtime::Catalog;
use tokio::sync::Mutex;

pub use env::Outcome;

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
}

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
}

/// What control needs from the execution side.
#[async_trait]
pub trait Invoker: Send + Sync {
    async fn invoke(&self, inv: Invocation) -> Result<Outcome, Error>;
    /// Stops every idle environment of a function (after an update or delete).
    async fn retire(&self, function: &str);
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
    /// Where each environment's root is built.
    pub roots: PathBuf,
    /// The host's cgroup hierarchy, when usable.
    pub cgroups: Option<nimbus_sandbox::cgroup::Layout>,
    /// This node's cgroup parent (one per data directory).
    pub cgroup_group: String,
    pub uid: u32,
    pub gid: u32,
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
}

pub struct Worker {
    settings: Settings,
    code: Arc<dyn CodeSource>,
    /// Idle environments per configuration key.
    idle: Mutex<HashMap<String, Vec<env::Env>>>,
    /// Serialises unpacking of one archive.
    unpacking: Mutex<()>,
}

/// How long the init phase may take before it is retried within the invoke.
const INIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/nodejs/bootstrap.mjs");

impl Worker {
    pub fn new(settings: Settings, code: Arc<dyn CodeSource>) -> Result<Self, Error> {
        let runtime_dir = settings.root.join("runtime");
        std::fs::create_dir_all(&runtime_dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", runtime_dir.display())))?;
        if let Some(sb) = &settings.sandbox {
            // Leftovers of a previous run that was killed before retiring its environments.
            if let Some(layout) = &sb.cgroups {
                nimbus_sandbox::cgroup::Cgroup::remove_leftovers(layout, &sb.cgroup_group);
            }
            for e in std::fs::read_dir(&sb.roots).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        for (file, text) in [("bootstrap.py", PYTHON_BOOTSTRAP), ("bootstrap.mjs", NODE_BOOTSTRAP)] {
            std::fs::write(runtime_dir.join(file), text)
                .map_err(|e| Error::Internal(format!("writing the runtime bootstrap {file}: {e}")))?;
        }
        Ok(Self { settings, code, idle: Mutex::new(HashMap::new()), unpacking: Mutex::new(()) })
    }

    /// Retires every idle environment (graceful shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<env::Env> = self.idle.lock().await.drain().flat_map(|(_, v)| v).collect();
        for e in all {
            e.retire().await;
        }
        if let Some(SandboxConfig { cgroups: Some(layout), cgroup_group, .. }) = &self.settings.sandbox {
            nimbus_sandbox::cgroup::Cgroup::remove_group(layout, cgroup_group);
        }
    }

    fn key(c: &FunctionConfig) -> String {
        format!("{}\u{0}{}\u{0}{}", c.name, c.version, c.revision_id)
    }

    /// The unpacked code of an archive.
    async fn code_dir(&self, sha: &str) -> Result<PathBuf, Error> {
        self.unpacked(self.settings.root.join("code").join(sha), &[sha]).await
    }

    /// The function's layers merged in order, one directory per combination.
    async fn layers_dir(&self, config: &FunctionConfig) -> Result<Option<PathBuf>, Error> {
        if config.layers.is_empty() {
            return Ok(None);
        }
        let shas: Vec<&str> = config.layers.iter().map(|l| l.sha256_hex.as_str()).collect();
        self.unpacked(self.settings.root.join("layers").join(shas.join("-")), &shas).await.map(Some)
    }

    /// `dir` holding the archives unpacked one over another, made once.
    async fn unpacked(&self, dir: PathBuf, shas: &[&str]) -> Result<PathBuf, Error> {
        if dir.exists() {
            return Ok(dir);
        }
        let _guard = self.unpacking.lock().await;
        if dir.exists() {
            return Ok(dir);
        }
        let mut archives = Vec::with_capacity(shas.len());
        for sha in shas {
            archives.push(self.code.archive(sha).await?);
        }
        let target = dir.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = archives.iter().map(Vec::as_slice).collect();
            unpack::unpack_merged(&refs, &target)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("unpacking {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Starts an environment. An init that overruns AWS's 10 s limit is
    /// abandoned and run again with no limit of its own: the invocation's
    /// timeout then covers it (AWS's "suppressed init").
    async fn start(&self, spec: env::Spec) -> Result<env::Env, Error> {
        let first = env::Env::spawn(spec.clone()).await?;
        if first.wait_ready(INIT_LIMIT).await {
            return Ok(first);
        }
        first.retire().await;
        let second = env::Env::spawn(env::Spec { id: uuid::Uuid::new_v4().simple().to_string(), ..spec }).await?;
        second.note(format!(
            "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: timeout",
            INIT_LIMIT.as_secs_f64() * 1000.0
        ));
        Ok(second)
    }

    /// A live idle environment for `key`; dead ones met on the way are retired.
    async fn take_idle(&self, key: &str) -> Option<env::Env> {
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.idle.lock().await;
            let list = idle.get_mut(key)?;
            let mut found = None;
            while let Some(e) = list.pop() {
                if e.alive() {
                    found = Some(e);
                    break;
                }
                dead.push(e);
            }
            found
        };
        for e in dead {
            e.retire().await;
        }
        found
    }
}

#[async_trait]
impl Invoker for Worker {
    async fn invoke(&self, inv: Invocation) -> Result<Outcome, Error> {
        let key = Self::key(&inv.config);
        let (environment, cold) = match self.take_idle(&key).await {
            Some(e) => (e, false),
            None => {
                let code = self.code_dir(&inv.config.code.sha256_hex).await?;
                let layers = self.layers_dir(&inv.config).await?;
                let spec = env::Spec {
                    config: inv.config.clone(),
                    code_dir: code,
                    runtime_dir: self.settings.root.join("runtime"),
                    interpreter: inv
                        .config
                        .runtime
                        .as_deref()
                        .and_then(|r| self.settings.catalog.interpreter(r))
                        .map(str::to_string),
                    region: self.settings.region.clone(),
                    api_endpoint: self.settings.api_endpoint.clone(),
                    keys: self.settings.credentials.issue(&inv.invoked_arn),
                    sandbox: self.settings.sandbox.clone(),
                    layers,
                    id: uuid::Uuid::new_v4().simple().to_string(),
                };
                match self.start(spec).await {
                    Ok(e) => (e, true),
                    Err(Error::InvalidEntrypoint(message)) => {
                        return Ok(Outcome::platform_failure(&inv, "Runtime.InvalidEntrypoint", &message))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let outcome = environment.run(&inv, cold).await;
        if environment.alive() && outcome.reusable {
            self.idle.lock().await.entry(key).or_default().push(environment);
        } else {
            environment.retire().await;
        }
        Ok(outcome)
    }

    async fn retire(&self, function: &str) {
        let prefix = format!("{function}\u{0}");
        let retired: Vec<env::Env> = {
            let mut idle = self.idle.lock().await;
            let keys: Vec<String> = idle.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
            keys.into_iter().filter_map(|k| idle.remove(&k)).flatten().collect()
        };
        for e in retired {
            e.retire().await;
        }
    }
}
