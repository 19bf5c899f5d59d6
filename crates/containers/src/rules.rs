//! ECS's rules for Fargate task definitions and RunTask, with AWS's
//! messages: the `"1 vCPU"` / `"2GB"` forms, the Fargate CPU and memory
//! table, network modes, port mappings, names, and what Nimbus leaves out.
//! Pure functions; nothing here looks at stored state.

use crate::types::{port_range, ContainerDefinition, KeyValue, PortMapping};
use crate::Error;

/// Fargate's task sizes [botocore ecs `RegisterTaskDefinitionRequest.memory`]:
/// for each CPU value, the memory range in MiB and its step.
const FARGATE: &[(u32, u32, u32, u32)] = &[
    // cpu, min MiB, max MiB, step MiB
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Whether (cpu units, memory MiB) is a Fargate size.
pub fn fargate_size(cpu: u32, memory: u32) -> bool {
    // 256 CPU takes 512 MiB, 1 GB and 2 GB: not 1.5 GB, which its step allows.
    FARGATE.iter().any(|&(c, min, max, step)| {
        c == cpu && (min..=max).contains(&memory) && (memory - min).is_multiple_of(step) && (c, memory) != (256, 1536)
    })
}

/// The task size AWS answers for a combination Fargate does not offer.
pub fn check_fargate_size(cpu: u32, memory: u32) -> Result<(), Error> {
    if fargate_size(cpu, memory) {
        return Ok(());
    }
    Err(Error::Client(format!(
        "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
    )))
}

/// `"1024"`, `"1 vCPU"`, `"0.25 vcpu"` → CPU units (1 vCPU = 1024).
pub fn normalise_cpu(value: &str) -> Result<u32, Error> {
    normalise(value, "vcpu").map_err(|()| invalid("CPU", value))
}

/// `"2048"`, `"2GB"`, `"0.5 GB"` → MiB (1 GB = 1024 MiB, as ECS counts).
pub fn normalise_memory(value: &str) -> Result<u32, Error> {
    normalise(value, "gb").map_err(|()| invalid("memory", value))
}

fn invalid(what: &str, value: &str) -> Error {
    Error::Client(format!(
        "Invalid '{what}' setting for task: '{value}'. Specify a whole number, or a value with a unit."
    ))
}

fn normalise(value: &str, unit: &str) -> Result<u32, ()> {
    let v = value.trim().to_ascii_lowercase();
    if let Ok(n) = v.parse::<u32>() {
        return if n > 0 { Ok(n) } else { Err(()) };
    }
    let number = v.strip_suffix(unit).ok_or(())?.trim();
    let n: f64 = number.parse().map_err(|_| ())?;
    let scaled = n * 1024.0;
    if !(scaled >= 1.0 && scaled <= f64::from(u32::MAX)) || scaled.fract() != 0.0 {
        return Err(());
    }
    Ok(scaled as u32)
}

/// ECS's name rule for families and containers: up to 255 letters
/// (upper and lower case), numbers, underscores and hyphens.
pub fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Client(format!(
            "{kind} '{name}' is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )))
    }
}

/// Cluster names: up to 255 letters, numbers, underscores and hyphens.
pub fn check_cluster_name(name: &str) -> Result<(), Error> {
    check_name("Cluster name", name).map_err(|_| {
        Error::InvalidParameter(
            "Cluster name is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
                .into(),
        )
    })
}

/// A cluster's `settings`: `containerInsights`, `enabled`, `enhanced` or
/// `disabled`, the one setting ECS has.
pub fn check_cluster_settings(settings: &[serde_json::Value]) -> Result<(), Error> {
    for s in settings {
        if s["name"] != "containerInsights" {
            return Err(Error::InvalidParameter(format!("Cluster setting name is invalid: {}", s["name"])));
        }
        if !matches!(s["value"].as_str(), Some("enabled" | "enhanced" | "disabled")) {
            return Err(Error::InvalidParameter(format!(
                "Cluster setting value for containerInsights is invalid: {}; use enabled, enhanced or disabled.",
                s["value"]
            )));
        }
    }
    Ok(())
}

/// The network mode and compatibilities of a Fargate task definition.
pub fn check_fargate_network(network_mode: Option<&str>, fargate: bool) -> Result<(), Error> {
    match network_mode {
        Some("awsvpc") => Ok(()),
        Some(m @ ("bridge" | "host" | "none")) if fargate => {
            Err(Error::Client(format!("Fargate only supports network mode 'awsvpc', not '{m}'.")))
        }
        None if fargate => Err(Error::Client("Fargate only supports network mode 'awsvpc'.".into())),
        Some(m @ ("bridge" | "host" | "none")) => Err(Error::Client(format!(
            "Network mode '{m}' needs the EC2 launch type, which Nimbus does not offer until it runs in cluster mode; use 'awsvpc' with FARGATE."
        ))),
        None => Err(Error::Client("Nimbus runs task definitions with network mode 'awsvpc' only.".into())),
        Some(m) => Err(Error::Client(format!("Network mode '{m}' is not valid. Valid values: awsvpc, bridge, host, none."))),
    }
}

/// The task's IPC and PID modes: Fargate has no `ipcMode`, and Nimbus
/// gives each container its own PID namespace (no `pidMode` `task` yet).
pub fn check_task_modes(ipc_mode: Option<&str>, pid_mode: Option<&str>) -> Result<(), Error> {
    if ipc_mode.is_some() {
        return Err(Error::Client("Tasks using the Fargate launch type do not support ipcMode.".into()));
    }
    match pid_mode {
        None => Ok(()),
        Some("task") => Err(Error::Client(
            "pidMode 'task' is not supported by Nimbus yet: each container has its own PID namespace.".into(),
        )),
        Some(_) => Err(Error::Client("Tasks using the Fargate launch type do not support pidMode 'host'.".into())),
    }
}

/// A container definition as Fargate and Nimbus take it.
pub fn check_container(c: &ContainerDefinition) -> Result<(), Error> {
    check_name("Container name", &c.name)?;
    if c.links.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(Error::Client("Links are not supported when networkMode=awsvpc.".into()));
    }
    if c.privileged == Some(true) {
        return Err(Error::Client("Tasks using the Fargate launch type do not support privileged containers.".into()));
    }
    if c.image.trim().is_empty() {
        return Err(Error::Client(format!("Container.image should not be null or empty (container '{}').", c.name)));
    }
    if c.secrets.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(Error::Client(format!(
            "Container '{}': secrets are not supported by Nimbus yet (there is no Secrets Manager or Parameter Store to read them from); pass the values in environment instead.",
            c.name
        )));
    }
    if let (Some(memory), Some(reservation)) = (c.memory, c.memory_reservation) {
        if reservation > memory {
            return Err(Error::Client(format!(
                "Invalid setting for container '{}'. Container memory reservation must be less than or equal to its memory limit.",
                c.name
            )));
        }
    }
    if c.stop_timeout.is_some_and(|t| t > 120) {
        return Err(Error::Client(format!(
            "Invalid setting for container '{}': stopTimeout is at most 120 seconds on Fargate.",
            c.name
        )));
    }
    check_port_mappings(c)?;
    check_ulimits(c)?;
    check_environment(&c.environment)
}

/// Each mapping names one port or one range, as ECS documents
/// [botocore ecs `PortMapping.containerPortRange`]; Nimbus relays TCP only.
fn check_port_mappings(c: &ContainerDefinition) -> Result<(), Error> {
    let invalid = |why: String| Err(Error::Client(format!("Invalid setting for container '{}': {why}", c.name)));
    let mut ranges = 0;
    for p in &c.port_mappings {
        match (p.container_port, p.container_port_range.as_deref()) {
            (Some(_), Some(_)) => {
                return invalid("a port mapping takes a containerPort or a containerPortRange, not both.".into())
            }
            (None, None) => return invalid("a port mapping needs a containerPort or a containerPortRange.".into()),
            (None, Some(range)) => {
                if port_range(range).is_none() {
                    return invalid(format!(
                        "containerPortRange '{range}' is not a range 'first-last' of ports between 1 and 65535 with first below last."
                    ));
                }
                if p.host_port.is_some() {
                    return invalid(
                        "hostPort cannot be given with a containerPortRange (the host ports are the range's own)."
                            .into(),
                    );
                }
                ranges += 1;
            }
            (Some(port), None) => {
                if p.host_port.is_some_and(|h| h != 0 && h != port) {
                    return Err(Error::Client(
                        "When networkMode=awsvpc, the host ports and container ports in port mappings must match."
                            .into(),
                    ));
                }
            }
        }
        if p.protocol.as_deref().is_some_and(|protocol| protocol != "tcp") {
            return invalid("Nimbus publishes TCP ports only; a udp port mapping is not supported yet.".into());
        }
    }
    if ranges > 100 {
        return invalid(format!("a container takes at most 100 port ranges, and this one has {ranges}."));
    }
    Ok(())
}

/// Each ulimit's soft limit is at most its hard one (the service model
/// checks the names and that both are given).
fn check_ulimits(c: &ContainerDefinition) -> Result<(), Error> {
    let over = |u: &&serde_json::Value| u["softLimit"].as_u64() > u["hardLimit"].as_u64();
    match c.ulimits.iter().flatten().find(over) {
        Some(u) => Err(Error::Client(format!(
            "Invalid setting for container '{}': the softLimit of ulimit '{}' must not exceed its hardLimit.",
            c.name,
            u["name"].as_str().unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

fn check_environment(env: &[KeyValue]) -> Result<(), Error> {
    match env.iter().find(|kv| kv.name.as_deref().is_none_or(str::is_empty)) {
        Some(_) => Err(Error::Client("Environment variable names must not be empty.".into())),
        None => Ok(()),
    }
}

/// The most ports one task publishes: each is a listener on the host and
/// one on the task network, so a range of thousands would hold the node's
/// descriptors.
pub const MAX_TASK_PORTS: usize = 1000;

/// All containers of a task share one network namespace, so a port can be
/// published by one of them only, and once.
pub fn check_ports(containers: &[ContainerDefinition]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for port in containers.iter().flat_map(|c| &c.port_mappings).flat_map(PortMapping::ports) {
        if !seen.insert(port) {
            return Err(Error::Client(format!(
                "Port {port} (tcp) is mapped more than once in the task: its containers share one network namespace, so each port can be used by one container only."
            )));
        }
        if seen.len() > MAX_TASK_PORTS {
            return Err(Error::Client(format!(
                "A task publishes at most {MAX_TASK_PORTS} ports on Nimbus (each is a listener on the node); this one maps more."
            )));
        }
    }
    Ok(())
}

/// Environment overrides carry names, as definitions do.
pub fn check_override_environment(env: &[KeyValue]) -> Result<(), Error> {
    check_environment(env).map_err(|e| Error::InvalidParameter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fargate_table_as_aws_publishes_it() {
        for (cpu, ok, bad) in [
            (256, &[512, 1024, 2048][..], &[256, 1536, 3072, 4096][..]),
            (512, &[1024, 2048, 3072, 4096], &[512, 5120]),
            (1024, &[2048, 5120, 8192], &[1024, 9216]),
            (2048, &[4096, 16384], &[3072, 17408]),
            (4096, &[8192, 30720], &[7168, 31744]),
            (8192, &[16384, 20480, 61440], &[17408, 65536]),
            (16384, &[32768, 40960, 122880], &[33792, 131072]),
        ] {
            for m in ok {
                assert!(fargate_size(cpu, *m), "{cpu}/{m} is a Fargate size");
            }
            for m in bad {
                assert!(!fargate_size(cpu, *m), "{cpu}/{m} is not a Fargate size");
            }
        }
        assert!(!fargate_size(128, 512));
        assert!(!fargate_size(3072, 8192));
        let e = check_fargate_size(256, 4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "No Fargate configuration exists for given values: 256 CPU, 4096 memory. See the Amazon ECS documentation for the valid values."
        );
    }

    #[test]
    fn units_are_normalised_as_ecs_stores_them() {
        assert_eq!(normalise_cpu("1024").unwrap(), 1024);
        assert_eq!(normalise_cpu("1 vCPU").unwrap(), 1024);
        assert_eq!(normalise_cpu("0.25 vcpu").unwrap(), 256);
        assert_eq!(normalise_cpu("2vCPU").unwrap(), 2048);
        assert_eq!(normalise_memory("2GB").unwrap(), 2048);
        assert_eq!(normalise_memory("0.5 GB").unwrap(), 512);
        assert_eq!(normalise_memory(" 3072 ").unwrap(), 3072);
        for bad in ["", "0", "one", "1 GiB", "-1", "0.1 GB", "1 vCPU"] {
            assert!(normalise_memory(bad).is_err(), "{bad:?} is not a memory value");
        }
        assert!(normalise_cpu("2GB").is_err());
    }

    #[test]
    fn names_and_network_modes() {
        assert!(check_name("Family", "web_app-2").is_ok());
        assert!(check_name("Family", "web app").is_err());
        assert!(check_name("Family", &"a".repeat(256)).is_err());
        assert!(check_fargate_network(Some("awsvpc"), true).is_ok());
        for mode in ["bridge", "host"] {
            let e = check_fargate_network(Some(mode), true).unwrap_err();
            assert!(e.to_string().starts_with("Fargate only supports network mode 'awsvpc'"), "{e}");
        }
        assert!(check_fargate_network(None, true).is_err());
    }

    fn with_ports(mappings: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(serde_json::json!({"name": "web", "image": "i", "portMappings": mappings})).unwrap()
    }

    #[test]
    fn port_mappings_name_a_port_or_a_range() {
        for ok in [
            serde_json::json!([{"containerPort": 80, "hostPort": 80}, {"containerPortRange": "8000-8010"}]),
            serde_json::json!([{"containerPortRange": "1-2", "protocol": "tcp"}]),
        ] {
            let c = with_ports(ok);
            assert!(check_container(&c).is_ok() && check_ports(std::slice::from_ref(&c)).is_ok());
        }
        for (bad, says) in [
            (serde_json::json!([{"containerPort": 80, "containerPortRange": "81-82"}]), "not both"),
            (serde_json::json!([{"name": "x"}]), "needs a containerPort"),
            (serde_json::json!([{"containerPortRange": "9-9"}]), "'9-9'"),
            (serde_json::json!([{"containerPortRange": "0-9"}]), "'0-9'"),
            (serde_json::json!([{"containerPortRange": "9-65536"}]), "'9-65536'"),
            (serde_json::json!([{"containerPortRange": "8000"}]), "'8000'"),
            (serde_json::json!([{"containerPortRange": "8-9", "hostPort": 8}]), "hostPort"),
            (serde_json::json!([{"containerPort": 53, "protocol": "udp"}]), "TCP ports only"),
        ] {
            let e = check_container(&with_ports(bad)).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("container 'web'"), "{e}");
        }
        let ranges: Vec<_> = (0..101)
            .map(|i| serde_json::json!({"containerPortRange": format!("{}-{}", 2 * i + 1, 2 * i + 2)}))
            .collect();
        assert!(check_container(&with_ports(ranges.into()))
            .unwrap_err()
            .to_string()
            .contains("at most 100 port ranges"));
        let overlap = with_ports(serde_json::json!([{"containerPortRange": "8000-8010"}, {"containerPort": 8010}]));
        assert!(check_ports(&[overlap])
            .unwrap_err()
            .to_string()
            .starts_with("Port 8010 (tcp) is mapped more than once"));
        let wide = with_ports(serde_json::json!([{"containerPortRange": "2000-3000"}]));
        assert!(check_ports(&[wide]).unwrap_err().to_string().contains("at most 1000 ports"));
        let widest = with_ports(serde_json::json!([{"containerPortRange": "2000-2999"}]));
        assert_eq!(widest.port_mappings[0].ports().count(), MAX_TASK_PORTS);
        assert!(check_ports(&[widest]).is_ok());
    }
}
