//! Container `dependsOn` (conditions START, COMPLETE, SUCCESS, HEALTHY):
//! the rules a task definition must follow, and whether a waiting
//! container may start given what its task's other containers have done.
//!
//! The task's driver (`engine`) starts the containers with no conditions
//! but START first, and asks [`readiness`] after every exit and health
//! change; this module only decides.

use std::collections::HashMap;

use crate::types::ContainerDefinition;

const CONDITIONS: [&str; 4] = ["START", "COMPLETE", "SUCCESS", "HEALTHY"];

/// One `dependsOn` entry.
fn entries(def: &ContainerDefinition) -> Vec<(String, String)> {
    def.depends_on
        .iter()
        .flatten()
        .map(|v| {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
            (field("containerName"), field("condition"))
        })
        .collect()
}

/// RegisterTaskDefinition's rules: known containers and conditions, a
/// health check behind HEALTHY, no essential container behind COMPLETE or
/// SUCCESS (its exit would stop the task), and no cycles.
pub fn check(defs: &[ContainerDefinition]) -> Result<(), String> {
    for def in defs {
        for (name, condition) in entries(def) {
            let Some(target) = defs.iter().find(|d| d.name == name) else {
                return Err(format!(
                    "Container '{}' depends on '{name}', which is not in the task definition.",
                    def.name
                ));
            };
            if !CONDITIONS.contains(&condition.as_str()) {
                return Err(format!(
                    "Invalid dependency condition '{condition}': it must be one of START, COMPLETE, SUCCESS, HEALTHY."
                ));
            }
            if condition == "HEALTHY" && target.health_check.is_none() {
                return Err(format!("Container '{name}' must have a health check to be a HEALTHY dependency."));
            }
            if (condition == "COMPLETE" || condition == "SUCCESS") && target.essential {
                return Err(format!(
                    "Container '{name}' is a {condition} dependency of '{}' and so must not be essential.",
                    def.name
                ));
            }
        }
    }
    // Kahn's algorithm: whatever cannot be ordered is in a cycle.
    let mut left: Vec<&ContainerDefinition> = defs.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        let names: Vec<String> = left.iter().map(|d| d.name.clone()).collect();
        left.retain(|d| entries(d).iter().any(|(n, _)| names.contains(n)));
        if left.len() == before {
            return Err(format!("The containers' dependencies form a cycle ({}).", names.join(", ")));
        }
    }
    Ok(())
}

/// Whether a container starts with the task: none of its conditions waits
/// for another container to exit or become healthy.
pub fn starts_at_once(def: &ContainerDefinition) -> bool {
    entries(def).iter().all(|(_, c)| c == "START")
}

/// The order in which the containers starting at once are started: each
/// after those it depends on.
pub fn start_order(defs: &[&ContainerDefinition]) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::new();
    while order.len() < defs.len() {
        let before = order.len();
        for (i, d) in defs.iter().enumerate() {
            let placed = |n: &String| order.iter().any(|&j| defs[j].name == *n) || !defs.iter().any(|x| x.name == *n);
            if !order.contains(&i) && entries(d).iter().all(|(n, _)| placed(n)) {
                order.push(i);
            }
        }
        if order.len() == before {
            // A cycle (refused at registration); start the rest as listed.
            order.extend((0..defs.len()).filter(|i| !order.contains(i)).collect::<Vec<_>>());
        }
    }
    order
}

#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting,
    /// A condition that can no longer be met, and why.
    Never(String),
}

/// Whether `def` may start, given the exit codes and health statuses of
/// the task's containers so far and which have started.
pub fn readiness(
    def: &ContainerDefinition,
    started: &[String],
    exits: &HashMap<String, i32>,
    health: &HashMap<String, &str>,
) -> Readiness {
    let mut ready = true;
    for (name, condition) in entries(def) {
        let exit = exits.get(&name);
        let never = |what: &str| {
            Readiness::Never(format!("dependency of container {} on {name} ({condition}): {what}", def.name))
        };
        let met = match condition.as_str() {
            "START" => started.contains(&name),
            "COMPLETE" => exit.is_some(),
            "SUCCESS" => match exit {
                Some(0) => true,
                Some(code) => return never(&format!("it exited with {code}")),
                None => false,
            },
            _ => match (health.get(&name).copied(), exit) {
                (Some("HEALTHY"), _) => true,
                (Some("UNHEALTHY"), _) => return never("it is unhealthy"),
                (_, Some(_)) => return never("it exited"),
                _ => false,
            },
        };
        ready &= met;
    }
    if ready {
        Readiness::Ready
    } else {
        Readiness::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, essential: bool, depends: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(serde_json::json!({"name": name, "image": "x", "essential": essential,
            "dependsOn": depends, "healthCheck": {"command": ["CMD", "true"]}}))
        .unwrap()
    }

    #[test]
    fn registration_rules() {
        let init = def("init", false, serde_json::json!([]));
        let web = def("web", true, serde_json::json!([{"containerName": "init", "condition": "SUCCESS"}]));
        assert_eq!(check(&[init.clone(), web.clone()]), Ok(()));
        let essential_init = def("init", true, serde_json::json!([]));
        assert!(check(&[essential_init, web.clone()]).unwrap_err().contains("must not be essential"));
        let a = def("a", true, serde_json::json!([{"containerName": "b", "condition": "START"}]));
        let b = def("b", true, serde_json::json!([{"containerName": "a", "condition": "START"}]));
        assert!(check(&[a, b]).unwrap_err().contains("cycle"));
        let odd = def("web", true, serde_json::json!([{"containerName": "init", "condition": "LATER"}]));
        assert!(check(&[init, odd]).is_err());
    }

    #[test]
    fn conditions() {
        let web = def(
            "web",
            true,
            serde_json::json!([{"containerName": "init", "condition": "SUCCESS"},
                               {"containerName": "db", "condition": "HEALTHY"}]),
        );
        assert!(!starts_at_once(&web));
        let (mut exits, mut health) = (HashMap::new(), HashMap::new());
        let started = vec!["init".to_string(), "db".to_string()];
        assert_eq!(readiness(&web, &started, &exits, &health), Readiness::Waiting);
        exits.insert("init".to_string(), 0);
        health.insert("db".to_string(), "HEALTHY");
        assert_eq!(readiness(&web, &started, &exits, &health), Readiness::Ready);
        exits.insert("init".to_string(), 2);
        assert!(matches!(readiness(&web, &started, &exits, &health), Readiness::Never(_)));
        let first = def("first", true, serde_json::json!([]));
        let second = def("second", true, serde_json::json!([{"containerName": "first", "condition": "START"}]));
        assert_eq!(start_order(&[&second, &first]), [1, 0]);
    }
}
