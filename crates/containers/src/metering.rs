//! Task metering as Fargate bills it: from the start of the image pull to
//! the task's stop, per second (rounded up) with a one-minute minimum, the
//! task's vCPU and GB multiplied by those seconds. The figures are worked
//! out here from the stopped task; the store only keeps them.

use nimbus_store::TaskUsage;

use crate::types::TaskRecord;

/// Fargate's minimum charge per task.
const MINIMUM_S: i64 = 60;

/// The bill of a stopped task (`None` while it has not stopped).
pub fn bill(r: &TaskRecord) -> Option<TaskUsage> {
    let t = &r.task;
    let stopped_ms = (t.stopped_at? * 1000.0).round() as i64;
    let started_ms = (t.pull_started_at.unwrap_or(t.created_at) * 1000.0).round() as i64;
    let seconds = ((stopped_ms - started_ms).max(0) as u64).div_ceil(1000) as i64;
    let billed_seconds = seconds.max(MINIMUM_S);
    let family = t.task_definition_arn.rsplit('/').next().and_then(|f| f.rsplit_once(':')).map(|(f, _)| f);
    Some(TaskUsage {
        task_arn: t.task_arn.clone(),
        cluster_arn: t.cluster_arn.clone(),
        family: family.unwrap_or_default().to_string(),
        cpu_units: r.cpu,
        memory_mib: r.memory_mib,
        started_ms,
        stopped_ms,
        billed_seconds,
        vcpu_seconds: f64::from(r.cpu) / 1024.0 * billed_seconds as f64,
        gb_seconds: f64::from(r.memory_mib) / 1024.0 * billed_seconds as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pull_started_at: f64, stopped_at: Option<f64>) -> TaskRecord {
        let task = serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:000000000000:task/default/abc",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3",
            "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "launchType": "FARGATE",
            "platformVersion": "1.4.0", "platformFamily": "Linux", "availabilityZone": "us-east-1a",
            "cpu": "512", "memory": "2048", "version": 7, "group": "family:web", "overrides": {},
            "containers": [], "attachments": [], "healthStatus": "UNKNOWN", "ephemeralStorage": {},
            "createdAt": 999.0, "pullStartedAt": pull_started_at, "stoppedAt": stopped_at,
        });
        TaskRecord {
            task: serde_json::from_value(task).unwrap(),
            tags: vec![],
            client_token: None,
            cpu: 512,
            memory_mib: 2048,
        }
    }

    #[test]
    fn seconds_round_up_with_a_one_minute_minimum() {
        assert!(bill(&record(1000.0, None)).is_none());
        let short = bill(&record(1000.0, Some(1012.3))).unwrap();
        assert_eq!((short.billed_seconds, short.vcpu_seconds, short.gb_seconds), (60, 30.0, 120.0));
        let long = bill(&record(1000.0, Some(1090.001))).unwrap();
        assert_eq!(long.billed_seconds, 91);
        assert_eq!((long.vcpu_seconds, long.gb_seconds), (45.5, 182.0));
        assert_eq!((long.started_ms, long.stopped_ms, long.family.as_str()), (1_000_000, 1_090_001, "web"));
    }
}
