//! The front door's checks of a request's values, before its operation
//! runs, as AWS makes them: first the constraints of AWS's published model
//! for the operation (`nimbus-model`), then the rules AWS applies beyond it
//! (`nimbus_core::service_rules`). Nothing is looked up first, so a request
//! for a missing resource with a bad value gets the validation error.
//!
//! An operation's model is its service's and its model name is its [`Op`]'s
//! name, so a new operation or a newly vendored model needs no code here;
//! operations without a model (Nimbus's own) pass
//! untouched.

use axum::http::HeaderMap;
use nimbus_core::Error as Rule;

use crate::route::{Op, Query};
use crate::ApiError;

pub fn check(op: Op, args: &[String], query: &Query, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let Some(model) = nimbus_model::Model::of(op.service()) else { return Ok(()) };
    let name = format!("{op:?}");
    let Some(operation) = model.operation(&name) else { return Ok(()) };
    // A body that is not JSON is the operation's to refuse (or, for
    // Invoke, its payload); the model only judges JSON bodies.
    let json = if body.iter().all(u8::is_ascii_whitespace) || !operation.takes_json_body(model) {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => Some(v),
            Err(_) => return Ok(()),
        }
    };
    let request = nimbus_model::Request {
        // The route's labels come in path order, which is the model's URI order.
        labels: operation.labels.iter().copied().zip(args.iter().map(String::as_str)).collect(),
        query: query.pairs().collect(),
        headers: headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect(),
        body: json.as_ref(),
    };
    match nimbus_model::validate(model, &name, &request) {
        // Lambda's inputs deserialise every member they take, with serde's
        // own words in AWS's InvalidRequestContentException (`ops.rs`).
        Ok(()) | Err(nimbus_model::Invalid::Mistyped(_)) => {}
        Err(v) => return Err(Rule::Validation(v.to_string()).into()),
    }
    if let Some(body) = &json {
        nimbus_core::service_rules::check(&name, body)?;
    }
    Ok(())
}
