//! Echoes the event with the request id and function name, using AWS's
//! `lambda_runtime` client unmodified. `nimbus bench` uses it as its
//! `provided.al2023` function: `sleep_ms` holds the invocation, `env`
//! names the process so that environments can be counted, and `pidns` its
//! PID namespace, whose processes are the environment's memory.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

static ENV_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static PID_NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    if event.payload.get("fail").is_some() {
        return Err("asked to fail".into());
    }
    if let Some(ms) = event.payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    Ok(json!({
        "echo": event.payload,
        "request_id": event.context.request_id,
        "arn": event.context.invoked_function_arn,
        "function": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
        "env": ENV_ID.get(),
        "pidns": PID_NS.get(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ENV_ID.get_or_init(|| format!("{}-{}", std::process::id(), started.as_nanos()));
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    PID_NS.get_or_init(|| ns);
    lambda_runtime::run(service_fn(handler)).await
}
