//! Stopped tasks are kept describable for an hour, as on AWS, then
//! deleted, so the store does not grow with every task ever run. One tokio
//! task sleeps until the next stopped task expires by the node's clock
//! (a test can run it faster) or until a task stops; nothing polls.
//!
//! At its start it records again the bill of every stopped task still
//! kept (the same figures; see `metering`), so a crash between a task's
//! stop and its bill loses nothing. It must not touch running tasks.

use crate::engine::Ecs;

/// How long a stopped task stays describable.
const KEEP_MS: i64 = 60 * 60 * 1000;

impl Ecs {
    /// Deletes stopped tasks an hour after they stop, for as long as the
    /// node runs. Needs the platform (its clock and usage store).
    pub async fn run_retention(self) {
        let Some(platform) = self.platform().cloned() else { return };
        let mut first = true;
        loop {
            let stopped = self.task_stopped();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            let next = match self.expire_stopped(platform.clock.now_ms(), KEEP_MS).await {
                Ok((kept, next)) => {
                    if std::mem::take(&mut first) {
                        let bills: Vec<_> = kept.iter().filter_map(crate::metering::bill).collect();
                        if let Err(e) = platform.usage.put_task_usage(&bills).await {
                            tracing::error!(error = %e, "recording stopped tasks' usage failed");
                        }
                    }
                    next
                }
                Err(e) => {
                    tracing::error!(error = %e, "deleting expired stopped tasks failed; retrying in a minute");
                    Some(platform.clock.after(std::time::Duration::from_secs(60)))
                }
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep(platform.clock.until(at)) => {}
                        () = stopped => {}
                    }
                }
                None => stopped.await,
            }
        }
    }
}
