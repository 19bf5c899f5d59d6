//! Echoes the event with the request id and function name, using AWS's
//! `lambda_runtime` client unmodified.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    if event.payload.get("fail").is_some() {
        return Err("asked to fail".into());
    }
    Ok(json!({
        "echo": event.payload,
        "request_id": event.context.request_id,
        "arn": event.context.invoked_function_arn,
        "function": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
