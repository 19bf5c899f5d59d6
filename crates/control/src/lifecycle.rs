//! The lifecycle of a configuration, as AWS reports it. CreateFunction
//! answers `State: Pending` and an update `LastUpdateStatus: InProgress`;
//! the configuration becomes `Active` / `Successful` once its code is
//! prepared to run (unpacked, layers merged, templates of its runtime
//! started). The transition is stored like any other change, and a node
//! stopped before it happened prepares again at its next start, so nothing
//! stays pending for ever. While a configuration is not ready, the
//! operations AWS refuses answer `ResourceConflictException` with AWS's
//! message.

use nimbus_core::function::{Function, FunctionConfig, Lifecycle, LATEST};
use nimbus_store::{Metadata, Write};
use tokio::sync::Mutex;

use crate::*;

/// A configuration to mark ready: its version (`$LATEST` or a number) and
/// the revision that was prepared. A later change has another revision and
/// is left to its own preparation.
pub(crate) type Target = (String, String);

impl Control {
    /// Prepares `config` in the background, then marks `targets` ready.
    pub(crate) fn prepare_then_settle(&self, config: &FunctionConfig, targets: Vec<Target>) {
        let invoker = self.invoker.clone();
        let meta = self.meta.clone();
        let writes = self.writes.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if let Some(invoker) = &invoker {
                // A failure is logged by the worker; the first invoke
                // prepares again, so the function is usable either way.
                invoker.prepare(&config).await;
            }
            // A store that cannot write now (a full disk) may later: the
            // function must not stay Pending until a restart.
            let mut wait = std::time::Duration::from_secs(1);
            while let Err(e) = settle(meta.as_ref(), &writes, &config, &targets).await {
                tracing::error!(function = %config.name, error = %e, retry_in = ?wait, "cannot record that the function is ready");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }

    /// Prepares whatever a stopped node left pending or in progress.
    pub(crate) async fn resume_unsettled(&self) -> Result<()> {
        let configs = self.meta.list_configs(None, true, usize::MAX).await?;
        for c in configs.into_iter().filter(|c| c.lifecycle != Lifecycle::Ready) {
            tracing::info!(function = %c.name, version = %c.version, "finishing a create or update a stop interrupted");
            let target = (c.version.clone(), c.revision_id.clone());
            self.prepare_then_settle(&c, vec![target]);
        }
        Ok(())
    }

    /// AWS refuses to change code or configuration, or to publish, while
    /// the function is being created or updated.
    pub(crate) fn check_settled(&self, f: &Function) -> Result<()> {
        match f.latest.lifecycle {
            Lifecycle::Ready => Ok(()),
            Lifecycle::Creating => Err(pending()),
            Lifecycle::Updating => Err(conflict(format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {}",
                self.account().function_arn(f.name())
            ))),
        }
    }
}

/// AWS's answer to invoking or changing a function that is still `Pending`.
pub(crate) fn pending() -> Error {
    conflict(
        "The operation cannot be performed at this time. The function is currently in the following state: Pending",
    )
}

/// Marks the targets ready, under the write lock so that no update between
/// the read and the write is lost. As on AWS, `$LATEST` gets a new
/// `RevisionId` when it becomes ready and a published version keeps its own;
/// returns whether `$LATEST` changed.
async fn settle(
    meta: &dyn Metadata,
    writes: &Mutex<()>,
    prepared: &FunctionConfig,
    targets: &[Target],
) -> Result<bool> {
    let name = prepared.name.as_str();
    let _guard = writes.lock().await;
    let mut batch = Vec::new();
    let mut latest = false;
    for (version, revision) in targets {
        if version == LATEST {
            let Some(mut f) = meta.get_function(name).await? else { continue };
            // A change that needs no preparation (a permission added while
            // the function was created) gives `$LATEST` another revision
            // and nothing else: what was prepared is still what it runs.
            let unchanged = f.latest.revision_id == *revision
                || FunctionConfig { revision_id: prepared.revision_id.clone(), ..f.latest.clone() } == *prepared;
            if unchanged && f.latest.lifecycle != Lifecycle::Ready {
                f.latest.lifecycle = Lifecycle::Ready;
                f.latest.revision_id = new_revision();
                latest = true;
                batch.push(Write::PutFunction(Box::new(f)));
            }
        } else if let Ok(n) = version.parse::<u64>() {
            let Some(mut v) = meta.get_version(name, n).await? else { continue };
            if v.revision_id == *revision && v.lifecycle != Lifecycle::Ready {
                v.lifecycle = Lifecycle::Ready;
                batch.push(Write::PutVersion(Box::new(v)));
            }
        }
    }
    if !batch.is_empty() {
        meta.apply(batch).await?;
        tracing::debug!(function = %name, "function ready");
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use nimbus_core::function::Code;
    use nimbus_store::SqliteMetadata;

    use super::*;

    #[tokio::test]
    async fn only_the_prepared_revision_becomes_ready() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("m.db")).await.unwrap();
        let code = Code { sha256_hex: "ab".into(), size: 1, unzipped_size: 1 };
        let latest = FunctionConfig::new("f", "arn:aws:iam::123456789012:role/r".into(), code, 0, "rev-2".into());
        let mut v1 = latest.clone();
        (v1.version, v1.revision_id) = ("1".into(), "rev-v1".into());
        let f = Function::new(latest.clone(), Default::default());
        meta.apply(vec![Write::PutFunction(Box::new(f)), Write::PutVersion(Box::new(v1))]).await.unwrap();
        let writes = Mutex::new(());
        async fn state(m: &SqliteMetadata) -> (Lifecycle, Lifecycle) {
            let f = m.get_function("f").await.unwrap().unwrap();
            (f.latest.lifecycle, m.get_version("f", 1).await.unwrap().unwrap().lifecycle)
        }

        // A preparation of an older revision with another configuration
        // settles nothing: its update replaced it.
        let mut older = latest.clone();
        (older.revision_id, older.timeout) = ("rev-1".into(), latest.timeout + 1);
        assert!(!settle(&meta, &writes, &older, &[(LATEST.into(), "rev-1".into())]).await.unwrap());
        assert_eq!(state(&meta).await, (Lifecycle::Creating, Lifecycle::Creating));
        let both = [(LATEST.to_string(), "rev-2".to_string()), ("1".to_string(), "rev-v1".to_string())];
        assert!(settle(&meta, &writes, &latest, &both).await.unwrap());
        assert_eq!(state(&meta).await, (Lifecycle::Ready, Lifecycle::Ready));
        // A permission added meanwhile changed the revision alone: the
        // preparation of what it runs still settles it.
        let mut f = meta.get_function("f").await.unwrap().unwrap();
        (f.latest.lifecycle, f.latest.revision_id) = (Lifecycle::Creating, "rev-3".into());
        let prepared = FunctionConfig { revision_id: "rev-2".into(), ..f.latest.clone() };
        meta.apply(vec![Write::PutFunction(Box::new(f))]).await.unwrap();
        assert!(settle(&meta, &writes, &prepared, &[(LATEST.into(), "rev-2".into())]).await.unwrap());
        assert_eq!(state(&meta).await.0, Lifecycle::Ready);
        // As on AWS: `$LATEST` gets a new revision when ready, a version keeps its own.
        assert_ne!(meta.get_function("f").await.unwrap().unwrap().latest.revision_id, "rev-3");
        assert_eq!(meta.get_version("f", 1).await.unwrap().unwrap().revision_id, "rev-v1");
    }
}
