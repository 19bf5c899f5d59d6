//! A task definition's volumes as Fargate has them: bind mounts of the
//! task's own scratch space, named in `volumes`, mounted by containers'
//! `mountPoints` and shared whole with `volumesFrom`. What registration
//! refuses, with AWS's messages, and which volumes each container mounts.
//! Pure functions; the runtime makes and mounts the volumes.

use serde_json::Value;

use crate::types::ContainerDefinition;
use crate::Error;

/// A volume a container mounts: which, where inside, and whether read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

/// The volumes Fargate takes (a bind mount with no host path) and the
/// containers' references to them. Other kinds are refused: AWS's own
/// message where Fargate refuses them, Nimbus's where it lacks the service
/// behind them (EFS, FSx, EBS).
pub fn check(volumes: &[Value], containers: &[ContainerDefinition]) -> Result<(), Error> {
    let mut names: Vec<&str> = Vec::new();
    for v in volumes {
        let name = v["name"].as_str().unwrap_or_default();
        if crate::rules::check_name("Volume name", name).is_err() {
            return Err(Error::Client("volume.name contains invalid characters.".into()));
        }
        if names.contains(&name) {
            return Err(Error::Client(format!("Duplicate volume name '{name}' in the task definition.")));
        }
        names.push(name);
        if v["host"]["sourcePath"].as_str().is_some_and(|p| !p.is_empty()) {
            return Err(Error::Client("Fargate compatible task definitions do not support sourcePath".into()));
        }
        if !v["dockerVolumeConfiguration"].is_null() {
            return Err(Error::Client(
                "Fargate compatible task definitions do not support dockerVolumeConfiguration".into(),
            ));
        }
        let unavailable = ["efsVolumeConfiguration", "fsxWindowsFileServerVolumeConfiguration"]
            .into_iter()
            .find(|k| !v[k].is_null())
            .or(v["configuredAtLaunch"].as_bool().unwrap_or(false).then_some("configuredAtLaunch"));
        if let Some(kind) = unavailable {
            return Err(Error::Client(format!(
                "Volume '{name}': {kind} is not supported by Nimbus (it has no EFS, FSx or EBS); use a bind mount (a volume with a name only)."
            )));
        }
    }
    for c in containers {
        let mut paths: Vec<&str> = Vec::new();
        for m in &c.mount_points {
            let volume = m["sourceVolume"].as_str().unwrap_or("null");
            if !names.contains(&volume) {
                return Err(Error::Client(format!("Unknown volume '{volume}'.")));
            }
            if !m["containerPath"].as_str().is_some_and(|p| p.starts_with('/')) {
                return Err(Error::Client(format!(
                    "Invalid 'mountPoints' setting for container '{}': containerPath must be an absolute path.",
                    c.name
                )));
            }
            // Docker refuses two mounts at one path (the later would hide the earlier).
            let path = m["containerPath"].as_str().unwrap_or_default().trim_end_matches('/');
            if paths.contains(&path) {
                return Err(Error::Client(format!(
                    "Invalid 'mountPoints' setting for container '{}': Duplicate mount point: {path}",
                    c.name
                )));
            }
            paths.push(path);
        }
        for from in &c.volumes_from {
            let source = from["sourceContainer"].as_str().unwrap_or("null");
            if source == c.name || !containers.iter().any(|o| o.name == source) {
                return Err(Error::Client(format!("Invalid 'volumesFrom' setting. Unknown container: '{source}'.")));
            }
        }
    }
    Ok(())
}

/// What `def` mounts: its own mount points, then those of each container it
/// takes volumes from (read-only if either says so). Sources that take
/// from others again are followed once each.
pub fn mounts(def: &ContainerDefinition, all: &[ContainerDefinition]) -> Vec<Mount> {
    let own = |c: &ContainerDefinition, forced_ro: bool| -> Vec<Mount> {
        c.mount_points
            .iter()
            .filter_map(|m| {
                Some(Mount {
                    volume: m["sourceVolume"].as_str()?.to_string(),
                    path: m["containerPath"].as_str()?.to_string(),
                    read_only: forced_ro || m["readOnly"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    };
    let mut out = own(def, false);
    let mut seen = vec![def.name.as_str()];
    let mut queue: Vec<(&str, bool)> = from_list(def, false);
    while let Some((name, ro)) = queue.pop() {
        let Some(source) = all.iter().find(|c| c.name == name) else { continue };
        if seen.contains(&source.name.as_str()) {
            continue;
        }
        seen.push(&source.name);
        for m in own(source, ro) {
            if !out.iter().any(|o| o.path == m.path) {
                out.push(m);
            }
        }
        queue.extend(from_list(source, ro));
    }
    // Shallower first, as Docker mounts them: `/data` before `/data/sub`,
    // which would otherwise be hidden under it.
    out.sort_by_key(|m| std::path::Path::new(&m.path).components().count());
    out
}

fn from_list(c: &ContainerDefinition, ro: bool) -> Vec<(&str, bool)> {
    c.volumes_from
        .iter()
        .filter_map(|f| Some((f["sourceContainer"].as_str()?, ro || f["readOnly"].as_bool().unwrap_or(false))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(value: Value) -> ContainerDefinition {
        let mut v = json!({"name": "c", "image": "i"});
        v.as_object_mut().unwrap().extend(value.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fargate_takes_bind_mounts_only() {
        let app =
            container(json!({"name": "app", "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}));
        let app = [app];
        assert!(check(&[json!({"name": "data"}), json!({"name": "more", "host": {}})], &app).is_ok());
        let err = |volumes: &[Value], cs: &[ContainerDefinition]| check(volumes, cs).unwrap_err().to_string();
        assert_eq!(err(&[], &app), "Unknown volume 'data'.");
        assert_eq!(
            err(&[json!({"name": "data", "host": {"sourcePath": "/etc"}})], &[]),
            "Fargate compatible task definitions do not support sourcePath"
        );
        assert!(err(&[json!({"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}})], &[])
            .contains("efsVolumeConfiguration is not supported by Nimbus"));
        assert!(err(&[json!({"name": "data"}), json!({"name": "data"})], &[]).starts_with("Duplicate volume name"));
        let relative = container(json!({"mountPoints": [{"sourceVolume": "data", "containerPath": "data"}]}));
        assert!(err(&[json!({"name": "data"})], &[relative]).contains("absolute path"));
        let lonely = container(json!({"volumesFrom": [{"sourceContainer": "nobody"}]}));
        assert_eq!(err(&[], &[lonely]), "Invalid 'volumesFrom' setting. Unknown container: 'nobody'.");
        assert_eq!(err(&[json!({"name": "my.vol"})], &[]), "volume.name contains invalid characters.");
        let twice = container(json!({"mountPoints": [{"sourceVolume": "data", "containerPath": "/x"},
                                                     {"sourceVolume": "data", "containerPath": "/x/"}]}));
        assert!(err(&[json!({"name": "data"})], &[twice]).ends_with("Duplicate mount point: /x"));
    }

    #[test]
    fn volumes_from_shares_a_containers_mount_points_read_only_if_asked() {
        let app = container(json!({"name": "app", "mountPoints": [
            {"sourceVolume": "data", "containerPath": "/data"},
            {"sourceVolume": "logs", "containerPath": "/logs", "readOnly": true}]}));
        let reader =
            container(json!({"name": "reader", "volumesFrom": [{"sourceContainer": "app", "readOnly": true}]}));
        let chain = container(json!({"name": "chain", "volumesFrom": [{"sourceContainer": "reader"}]}));
        let all = [app.clone(), reader.clone(), chain.clone()];
        let m = |volume: &str, path: &str, read_only| Mount { volume: volume.into(), path: path.into(), read_only };
        assert_eq!(mounts(&app, &all), [m("data", "/data", false), m("logs", "/logs", true)]);
        assert_eq!(mounts(&reader, &all), [m("data", "/data", true), m("logs", "/logs", true)]);
        // The reader mounts nothing of its own: the chain reaches the app's, read-only as the reader took them.
        assert_eq!(mounts(&chain, &all), [m("data", "/data", true), m("logs", "/logs", true)]);
        let nested = container(json!({"name": "n", "mountPoints": [
            {"sourceVolume": "w", "containerPath": "/data/sub"}, {"sourceVolume": "v", "containerPath": "/data"}]}));
        assert_eq!(mounts(&nested, &[]), [m("v", "/data", false), m("w", "/data/sub", false)]);
    }
}
