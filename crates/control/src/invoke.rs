//! Invoke: resolve the function and qualifier (weighted aliases pick a
//! version at random by weight), then hand the run to the worker.

use bytes::Bytes;
use futures_util::FutureExt;
use nimbus_core::function::{Function, LATEST};
use nimbus_worker::{Invocation, Outcome};
use rand::Rng;
use tracing::Instrument;

use crate::*;

/// A synchronous invocation as the API parsed it.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Bytes,
    pub client_context: Option<String>,
    /// Where a streamed response goes as the function writes it.
    pub stream: Option<StreamSink>,
    /// The invocation's place in a chain of events its functions caused (0: none).
    pub lineage: u32,
}

/// An invocation resolved and allowed, not yet run.
#[derive(Debug)]
pub struct Prepared {
    pub executed_version: String,
    invocation: Invocation,
}

/// What ran, and how it went.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub executed_version: String,
    pub outcome: Outcome,
}

impl Control {
    /// The version an alias sends this request to.
    fn pick_version(f: &Function, alias: &str) -> Option<String> {
        let a = f.aliases.get(alias)?;
        let roll: f64 = rand::thread_rng().gen();
        let mut acc = 0.0;
        for (v, w) in &a.additional_weights {
            acc += w;
            if roll < acc {
                return Some(v.clone());
            }
        }
        Some(a.function_version.clone())
    }

    /// Checks that the function and qualifier exist (DryRun) and returns
    /// the configuration that would run.
    pub async fn resolve_invocation(&self, raw: &str, qualifier: Option<&str>) -> Result<(Resolved, String)> {
        let r = self.parse_ref(raw, qualifier)?;
        let f = self.function(&r.name).await?;
        let q = match &r.qualifier {
            Some(Qualifier::Alias(a)) => {
                let v = Self::pick_version(&f, a).ok_or_else(|| {
                    not_found(format!("Function not found: {}", self.account().qualified_arn(&r.name, a)))
                })?;
                Some(Qualifier::parse(&v).map_err(rule)?)
            }
            other => other.clone(),
        };
        let resolved = self.config_at(&f, q.as_ref()).await?;
        if resolved.config.lifecycle == nimbus_core::function::Lifecycle::Creating {
            return Err(crate::lifecycle::pending());
        }
        let invoked_arn = match &r.qualifier {
            Some(q) => self.account().qualified_arn(&r.name, &q.to_string()),
            None => self.account().function_arn(&r.name),
        };
        Ok((resolved, invoked_arn))
    }

    pub async fn invoke(&self, req: InvokeRequest) -> Result<Invoked> {
        let prepared = self.prepare_invoke(req).await?;
        self.run_invoke(prepared).await
    }

    /// Resolves what an invocation runs, and refuses it when it cannot run.
    pub async fn prepare_invoke(&self, req: InvokeRequest) -> Result<Prepared> {
        let (resolved, invoked_arn) = self
            .resolve_invocation(&req.function, req.qualifier.as_deref())
            .instrument(tracing::debug_span!("resolve"))
            .await?;
        if self.invoker.is_none() {
            return Err(Error::Unavailable(
                "Function execution is not available on this Nimbus node yet: namespace isolation is not built; start the server with --isolation process to run functions without isolation.".into(),
            ));
        }
        let config = resolved.config;
        let log_sink = self.log_sink(&config.logging.log_group);
        debug_assert!(config.version == LATEST || config.version.parse::<u64>().is_ok());
        Ok(Prepared {
            executed_version: config.version.clone(),
            invocation: Invocation {
                request_id: req.request_id,
                config,
                invoked_arn,
                payload: req.payload,
                client_context: req.client_context,
                stream: req.stream,
                lineage: req.lineage,
                log_sink: Some(log_sink),
            },
        })
    }

    /// Stores a running invocation's lines in the function's log group.
    fn log_sink(&self, group: &str) -> nimbus_worker::LogSink {
        let (recorder, group) = (self.recorder.clone(), group.to_string());
        nimbus_worker::LogSink(Arc::new(move |stream, lines| {
            // The writer task outlives every invocation; a send fails only at shutdown.
            let _ = recorder.send_lines(crate::records::log_events(&group, stream, lines));
        }))
    }

    /// Runs a prepared invocation and records it.
    pub async fn run_invoke(&self, prepared: Prepared) -> Result<Invoked> {
        let Some(invoker) = self.invoker.clone() else {
            return Err(Error::Unavailable("Function execution is not available on this Nimbus node.".into()));
        };
        let Prepared { executed_version, invocation } = prepared;
        let config = invocation.config.clone();
        let request_id = invocation.request_id.clone();
        let target = nimbus_metrics::Target {
            function: config.name.clone(),
            qualifier: qualifier_of(&invocation.invoked_arn).map(str::to_string),
            executed_version: executed_version.clone(),
        };
        let span = tracing::debug_span!("worker", function = %config.name, version = %executed_version);
        let (metrics, recorder) = (self.metrics.clone(), self.recorder.clone());
        // Everything from here on is done even if the caller hangs up:
        // the environment's run, its metrics and its record.
        let run = async move {
            let outcome = std::panic::AssertUnwindSafe(invoker.invoke(invocation))
                .catch_unwind()
                .instrument(span)
                .await
                .map_err(|_| Error::Unavailable("The invocation task failed: it panicked".into()))?
                .map_err(|e| match e {
                    nimbus_worker::Error::Throttled(reason) => {
                        if let Some(m) = metrics.get() {
                            m.throttled(&target);
                        }
                        Error::Rule(nimbus_core::Error::Throttled(reason))
                    }
                    nimbus_worker::Error::Unavailable(m) => Error::Unavailable(m),
                    // The node's own trouble names its paths: logged, not told to callers.
                    nimbus_worker::Error::Internal(m) => {
                        tracing::error!(error = %m, "the function could not be run");
                        Error::Unavailable(
                            "The function could not be run because of an error on this node; its log says which."
                                .into(),
                        )
                    }
                    nimbus_worker::Error::InvalidEntrypoint(m) | nimbus_worker::Error::InvalidWorkingDir(m) => {
                        Error::Unavailable(format!("The function could not be run: {m}"))
                    }
                })?;
            if let Some(m) = metrics.get() {
                let error = outcome.function_error.is_some();
                m.invoked(&target, outcome.concurrency, outcome.duration_ms, error, outcome.init_ms);
            }
            // The writer task outlives every invocation; a send fails only at shutdown.
            let _ = recorder.send(crate::records::batch_of(&config, &request_id, &outcome));
            Ok(Invoked { executed_version, outcome })
        };
        // Finished in a task of its own if the caller goes away first, so that
        // an environment is never abandoned mid-invocation, nor its record lost.
        crate::Finish::new(run, None).await
    }
}

/// The alias or version in a qualified function ARN.
pub(crate) fn qualifier_of(arn: &str) -> Option<&str> {
    arn.splitn(8, ':').nth(7)
}
