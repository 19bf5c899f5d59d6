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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use nimbus_core::clock::Clock;
    use nimbus_core::Account;
    use nimbus_store::{SqliteMetadata, TaskUsageMeta};

    use crate::engine::tests::NoImages;
    use crate::{Capacity, Ecs, Platform, SessionKeys, TaskCredentials};

    struct NoKeys;

    impl TaskCredentials for NoKeys {
        fn issue(&self, _: &str) -> SessionKeys {
            SessionKeys {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                session_token: String::new(),
                expiration: 0,
            }
        }
    }

    /// A task whose image is missing stops at once; with an hour of the
    /// clock passing every real second, it is deleted soon after, in the
    /// store too, and its bill stays.
    #[tokio::test]
    async fn a_stopped_task_is_billed_then_deleted_an_hour_later() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let meta = Arc::new(SqliteMetadata::open(&db).await.unwrap());
        let account = Account { id: "000000000000".into(), region: "us-east-1".into() };
        let capacity = Capacity { cpu: 2048, memory_mib: 4096 };
        let ecs = Ecs::open(account.clone(), meta.clone(), Arc::new(NoImages), None, capacity, None).await.unwrap();
        let epoch = chrono::Utc::now().timestamp_millis();
        ecs.set_platform(Platform {
            credentials: Arc::new(NoKeys),
            api: "127.0.0.1:1".parse().unwrap(),
            api_connections: Arc::new(tokio::sync::Semaphore::new(1)),
            logs: nimbus_logs::Logs::open(meta.clone(), "us-east-1", "000000000000"),
            usage: meta.clone(),
            clock: Clock::scaled(epoch, 3600),
        });
        let definition = serde_json::json!({"family": "web", "networkMode": "awsvpc", "cpu": "512", "memory": "2048",
            "requiresCompatibilities": ["FARGATE"], "containerDefinitions": [{"name": "web", "image": "nowhere/x:1"}]});
        ecs.register_task_definition(serde_json::from_value(definition).unwrap()).await.unwrap();
        let run = serde_json::json!({"taskDefinition": "web",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}});
        let arn = ecs.run_task(serde_json::from_value(run).unwrap()).await.unwrap().tasks.remove(0).task_arn;
        tokio::spawn(ecs.clone().run_retention());
        // Stopped within a few minutes of the clock: still describable.
        let stopped = async {
            loop {
                let d = ecs.describe_tasks(None, std::slice::from_ref(&arn)).await.unwrap();
                if d.tasks[0].0.last_status == "STOPPED" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), stopped).await.expect("the task never stopped");
        let gone = async {
            while !ecs.describe_tasks(None, std::slice::from_ref(&arn)).await.unwrap().tasks.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("the stopped task was never deleted");
        let bills = meta.task_usage(0, i64::MAX).await.unwrap();
        assert_eq!(bills.len(), 1);
        assert_eq!((bills[0].task_arn.as_str(), bills[0].billed_seconds), (arn.as_str(), 60));
        assert_eq!((bills[0].vcpu_seconds, bills[0].gb_seconds), (30.0, 120.0));
        let reopened = Ecs::open(account, meta, Arc::new(NoImages), None, capacity, None).await.unwrap();
        assert!(reopened.describe_tasks(None, &[arn]).await.unwrap().tasks.is_empty(), "deleted in the store");
    }
}
