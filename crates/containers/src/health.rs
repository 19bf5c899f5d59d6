//! Container health checks as ECS defines them (`healthCheck`: a `CMD` or
//! `CMD-SHELL` command, `interval`, `timeout`, `retries`, `startPeriod`):
//! parsing, and each container's probe state (when the next probe is due,
//! consecutive failures, the status they add up to).
//!
//! The task's driver (`engine`) runs the probes through the runtime and
//! records the statuses; a task's health never stops it here. As on AWS,
//! only the service scheduler replaces an unhealthy task.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::types::ContainerDefinition;

/// A parsed `healthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What the probe executes (`CMD-SHELL x` is `/bin/sh -c x`).
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// Parses a container's `healthCheck` with ECS's defaults (30 s interval,
/// 5 s timeout, 3 retries, no start period). Nimbus accepts intervals and
/// timeouts below AWS's minimums (5 s and 2 s) so that tests stay short.
pub fn parse(value: &Value) -> Result<HealthCheck, String> {
    let command: Vec<String> = value
        .get("command")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let argv = match command.split_first() {
        Some((kind, rest)) if kind == "CMD-SHELL" && rest.len() == 1 => {
            vec!["/bin/sh".to_string(), "-c".to_string(), rest[0].clone()]
        }
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        _ => {
            return Err(
                "The healthCheck command must be [\"CMD\", executable, args...] or [\"CMD-SHELL\", command].".into()
            )
        }
    };
    let seconds = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| -> Result<Duration, String> {
        let v = value.get(name).and_then(Value::as_u64).unwrap_or(default);
        if !range.contains(&v) {
            return Err(format!(
                "Invalid healthCheck {name} {v}: it must be between {} and {}.",
                range.start(),
                range.end()
            ));
        }
        Ok(Duration::from_secs(v))
    };
    Ok(HealthCheck {
        argv,
        interval: seconds("interval", 30, 1..=300)?,
        timeout: seconds("timeout", 5, 1..=60)?,
        retries: u32::try_from(seconds("retries", 3, 1..=10)?.as_secs()).unwrap_or(3),
        start_period: seconds("startPeriod", 0, 0..=300)?,
    })
}

/// One container's probes.
pub(crate) struct Probe {
    pub container: String,
    pub check: HealthCheck,
    started: Instant,
    /// `None` while a probe is running.
    next: Option<Instant>,
    failures: u32,
    status: &'static str,
}

impl Probe {
    /// A probe per container with a health check; the first runs at once.
    pub fn for_task(definitions: &[&ContainerDefinition], now: Instant) -> Vec<Probe> {
        definitions
            .iter()
            .filter_map(|d| {
                let check = parse(d.health_check.as_ref()?).ok()?;
                Some(Probe {
                    container: d.name.clone(),
                    check,
                    started: now,
                    next: Some(now),
                    failures: 0,
                    status: "UNKNOWN",
                })
            })
            .collect()
    }

    /// When the earliest of `probes` is due.
    pub fn next_due(probes: &[Probe]) -> Option<Instant> {
        probes.iter().filter_map(|p| p.next).min()
    }

    /// Marks a due probe as running (true if it was due).
    pub fn take_if_due(&mut self, now: Instant) -> bool {
        let due = self.next.is_some_and(|at| at <= now);
        if due {
            self.next = None;
        }
        due
    }

    /// Records a probe's result and schedules the next one; the new status
    /// if it changed. Failures in the start period do not count, as in
    /// Docker.
    pub fn record(&mut self, passed: bool, now: Instant) -> Option<&'static str> {
        self.next = Some(now + self.check.interval);
        let status = if passed {
            self.failures = 0;
            "HEALTHY"
        } else if now < self.started + self.check.start_period {
            return None;
        } else {
            self.failures += 1;
            if self.failures < self.check.retries {
                return None;
            }
            "UNHEALTHY"
        };
        (status != self.status).then(|| {
            self.status = status;
            status
        })
    }
}

/// A task's health from its containers' (AWS's rule): UNHEALTHY if an
/// essential container is, HEALTHY if every essential container with a
/// health check is, otherwise UNKNOWN.
pub(crate) fn task_health<'a>(essential_checked: impl Iterator<Item = &'a str>) -> &'static str {
    let statuses: Vec<&str> = essential_checked.collect();
    if statuses.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if !statuses.is_empty() && statuses.iter().all(|s| *s == "HEALTHY") {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_defaults() {
        let c = parse(&serde_json::json!({"command": ["CMD-SHELL", "wget -q -O- localhost"]})).unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "wget -q -O- localhost"]);
        assert_eq!((c.interval, c.timeout, c.retries), (Duration::from_secs(30), Duration::from_secs(5), 3));
        let c = parse(&serde_json::json!({"command": ["CMD", "/bin/true"], "interval": 1, "retries": 1})).unwrap();
        assert_eq!(c.argv, ["/bin/true"]);
        assert!(parse(&serde_json::json!({"command": ["true"]})).is_err());
        assert!(parse(&serde_json::json!({"command": ["CMD", "x"], "retries": 11})).is_err());
    }

    #[test]
    fn retries_and_the_start_period() {
        let now = Instant::now();
        let def: ContainerDefinition = serde_json::from_value(serde_json::json!({"name": "web", "image": "x",
            "healthCheck": {"command": ["CMD", "x"], "retries": 2, "startPeriod": 10, "interval": 1}}))
        .unwrap();
        let mut p = Probe::for_task(&[&def], now).remove(0);
        assert!(p.take_if_due(now) && !p.take_if_due(now));
        assert_eq!(p.record(false, now), None, "in the start period");
        assert_eq!(p.record(true, now), Some("HEALTHY"));
        let later = now + Duration::from_secs(11);
        assert_eq!(p.record(false, later), None, "one failure of two");
        assert_eq!(p.record(false, later), Some("UNHEALTHY"));
        assert_eq!(task_health(["HEALTHY", "UNHEALTHY"].into_iter()), "UNHEALTHY");
        assert_eq!(task_health(["HEALTHY"].into_iter()), "HEALTHY");
        assert_eq!(task_health([].into_iter()), "UNKNOWN");
    }
}
