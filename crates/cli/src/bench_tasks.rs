//! `nimbus bench`'s ECS task figures, on an image built here (no skopeo, no
//! network): one layer holding the host's static `/bin/busybox` (Debian's
//! busybox-static), pushed through the registry's `/v2/` API with the
//! token GetAuthorizationToken gives. Then, with a busybox httpd task:
//! RunTask until RUNNING with its port answering on the cached image
//! (p50 / p99), a burst of tasks started at once until all are RUNNING,
//! each idle task's memory beyond the app's own, and the server's own CPU
//! while the burst idles.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{percentiles, round};
use crate::client::Client;

pub(crate) struct TaskPlan {
    starts: usize,
    burst: usize,
    idle_secs: f64,
}

impl TaskPlan {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self { starts: 5, burst: 10, idle_secs: 1.0 }
        } else {
            Self { starts: 20, burst: 100, idle_secs: 5.0 }
        }
    }
}

const REPO: &str = "bench/busybox";
const FAMILY: &str = "bench-httpd";
const NETWORK: &str = r#"{"awsvpcConfiguration": {"subnets": ["subnet-bench"]}}"#;

async fn call(client: &Client, service: &str, target: &str, body: Value) -> anyhow::Result<Value> {
    let headers = [("x-amz-target", target), ("content-type", "application/x-amz-json-1.1")];
    let (_, out) = client.send(service, "POST", "/", Some(serde_json::to_vec(&body)?), &headers).await?;
    Ok(serde_json::from_slice(&out)?)
}

async fn ecs(client: &Client, op: &str, body: Value) -> anyhow::Result<Value> {
    call(client, "ecs", &format!("AmazonEC2ContainerServiceV20141113.{op}"), body).await
}

/// An image of the host's static busybox (`/bin/busybox`, and as `sh`)
/// whose entrypoint is `sh -c`, pushed; its URI.
async fn push_image(client: &Client, endpoint: &str) -> anyhow::Result<String> {
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox (install busybox-static)")?;
    let layout = tempfile::tempdir()?;
    let files = [("bin/busybox".to_string(), busybox.clone(), 0o755), ("bin/sh".to_string(), busybox, 0o755)];
    crate::bench_images::write_layout(layout.path(), "bench", &files, &["/bin/sh", "-c"])?;
    crate::bench_images::Registry::create_repository(client, REPO).await?;
    let registry = crate::bench_images::Registry::login(client, endpoint).await?;
    registry.push_layout(layout.path(), "bench", REPO).await?;
    Ok(format!("{}/{REPO}:bench", endpoint.trim_start_matches("http://")))
}

async fn run_tasks(client: &Client, count: usize) -> anyhow::Result<Vec<String>> {
    let body = json!({"taskDefinition": FAMILY, "count": count, "launchType": "FARGATE",
                      "networkConfiguration": serde_json::from_str::<Value>(NETWORK)?});
    let out = ecs(client, "RunTask", body).await?;
    anyhow::ensure!(out["failures"].as_array().is_none_or(Vec::is_empty), "RunTask failed: {}", out["failures"]);
    Ok(out["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
        .collect())
}

/// Waits until every task is RUNNING; their host ports.
async fn all_running(client: &Client, arns: &[String]) -> anyhow::Result<Vec<u16>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut ports = Vec::new();
        for chunk in arns.chunks(100) {
            let got = ecs(client, "DescribeTasks", json!({"tasks": chunk})).await?;
            for t in got["tasks"].as_array().into_iter().flatten() {
                anyhow::ensure!(t["lastStatus"] != "STOPPED", "a task stopped: {}", t["stoppedReason"]);
                if t["lastStatus"] == "RUNNING" {
                    ports.extend(t["containers"][0]["networkBindings"][0]["hostPort"].as_u64().map(|p| p as u16));
                }
            }
        }
        if ports.len() == arns.len() {
            return Ok(ports);
        }
        anyhow::ensure!(Instant::now() < deadline, "tasks did not all run within 2 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether the task's httpd answers on the host port.
fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut got = String::new();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && s.read_to_string(&mut got).is_ok()
        && got.split_whitespace().nth(1) == Some("200")
}

async fn stop_all(client: &Client, arns: &[String]) -> anyhow::Result<()> {
    for arn in arns {
        ecs(client, "StopTask", json!({"task": arn})).await?;
    }
    Ok(())
}

pub(crate) async fn figures(
    client: &Client,
    endpoint: &str,
    server_pid: u32,
    plan: &TaskPlan,
) -> anyhow::Result<Value> {
    let image = push_image(client, endpoint).await?;
    let page = "busybox mkdir -p /tmp/w && echo ok > /tmp/w/index.html && exec busybox httpd -f -p 8080 -h /tmp/w";
    let web = json!({"name": "web", "image": image, "command": [page], "stopTimeout": 2,
                     "portMappings": [{"containerPort": 8080}]});
    let definition = json!({"family": FAMILY, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
                            "cpu": "256", "memory": "512", "containerDefinitions": [web]});
    ecs(client, "RegisterTaskDefinition", definition).await?;
    // The first task unpacks the image; the figures are on the cached one.
    let first = run_tasks(client, 1).await?;
    all_running(client, &first).await?;
    stop_all(client, &first).await?;

    let mut starts = Vec::new();
    for _ in 0..plan.starts {
        let t = Instant::now();
        let arns = run_tasks(client, 1).await?;
        let port = all_running(client, &arns).await?[0];
        while !answers(port) {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "the task's port never answered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        stop_all(client, &arns).await?;
    }

    // RunTask starts at most 10 tasks a call: the burst is concurrent calls.
    let t = Instant::now();
    let calls: Vec<_> = (0..plan.burst.div_ceil(10))
        .map(|i| {
            let n = (plan.burst - i * 10).min(10);
            async move { run_tasks(client, n).await }
        })
        .collect();
    let arns: Vec<String> = futures_util::future::try_join_all(calls).await?.into_iter().flatten().collect();
    all_running(client, &arns).await?;
    let burst_s = t.elapsed().as_secs_f64();

    // Idle: every task's httpd waiting, the node doing nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = idle_memory(server_pid, arns.len());
    let ticks = own_ticks(server_pid);
    tokio::time::sleep(Duration::from_secs_f64(plan.idle_secs)).await;
    let idle_cpu = (own_ticks(server_pid) - ticks) as f64 / 100.0 / plan.idle_secs * 100.0;
    stop_all(client, &arns).await?;
    Ok(json!({
        "run_to_answering_ms": percentiles(&mut starts),
        "burst_tasks": arns.len(),
        "burst_all_running_s": round(burst_s),
        "idle_task": memory,
        "server_idle_cpu_percent": round(idle_cpu),
    }))
}

/// CPU ticks (user + system) of the server process alone, not its tasks.
fn own_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    // After the command: state is not a number, so utime and stime are 10 and 11.
    fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)
}

fn status_kb(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Per idle task, in KB: its cgroup's memory, its app's (httpd's)
/// proportional set size, and the difference (what the platform costs:
/// the sandbox's stage one, kernel memory, the private `/tmp`).
fn idle_memory(server_pid: u32, tasks: usize) -> Value {
    let httpd: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd.split(|b| *b == 0).any(|a| a == b"httpd") && ancestor(*p, server_pid)
        })
        .collect();
    let app_kb: u64 = httpd.iter().map(|p| status_kb(*p, "smaps_rollup", "Pss:")).sum();
    let cgroup_kb: u64 = httpd.iter().filter_map(|p| cgroup_memory_kb(*p)).sum();
    let n = httpd.len().max(1) as u64;
    json!({
        "tasks_seen": httpd.len(),
        "tasks": tasks,
        "cgroup_kb": cgroup_kb / n,
        "app_pss_kb": app_kb / n,
        "overhead_kb": cgroup_kb.saturating_sub(app_kb) / n,
    })
}

fn ancestor(mut pid: u32, root: u32) -> bool {
    while pid > 1 {
        if pid == root {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        pid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    }
    false
}

/// `memory.current` (v2) or `memory.usage_in_bytes` (v1) of a process's cgroup, in KB.
fn cgroup_memory_kb(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.current"),
            c if c.split(',').any(|c| c == "memory") => format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"),
            _ => continue,
        };
        if let Some(bytes) = std::fs::read_to_string(file).ok().and_then(|b| b.trim().parse::<u64>().ok()) {
            return Some(bytes / 1024);
        }
    }
    None
}
