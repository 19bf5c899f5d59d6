//! AWS STS's one operation that tools call before anything else,
//! GetCallerIdentity: whom a request's signature names. Terraform's AWS
//! provider, `aws sts get-caller-identity` and many scripts ask it first for
//! the account id, and stop when it fails.
//!
//! Nimbus has no IAM: the node's key pair is the account's root, and
//! session credentials are the role of the function or task they were
//! minted for, as AWS names an assumed role. Must not mint or exchange
//! credentials: every other action is refused as AWS refuses an action it
//! does not know (the query protocol's `InvalidAction`).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::sigv4::{AuthError, Caller, SignedParts};
use crate::Api;

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const VERSION: &str = "2011-06-15";
/// A GetCallerIdentity form is a few dozen bytes.
const BODY_LIMIT: usize = 64 << 10;

/// Serves one STS request (the query protocol: a form, answered in XML).
pub async fn serve(api: &Api, req: Request<Body>, request_id: &str) -> Response {
    let (parts, body) = req.into_parts();
    let body =
        match crate::read_signed_body(api, &parts, body, BODY_LIMIT, &crate::access::Action::service("sts")).await {
            Ok(Ok(body)) => body,
            Ok(Err(crate::Unread::TooLarge)) => {
                let message = format!("Request must be smaller than {BODY_LIMIT} bytes.");
                return error(StatusCode::BAD_REQUEST, "ValidationError", &message, request_id);
            }
            Ok(Err(crate::Unread::Busy)) => {
                let message = crate::ApiError::Busy.to_string();
                return error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &message, request_id);
            }
            Ok(Err(_)) => {
                let message = crate::ApiError::Abandoned.to_string();
                return error(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", &message, request_id);
            }
            Err(e) => return auth_error(&e, request_id),
        };
    let caller = match api.verifier.verify(&SignedParts::of(&parts, &body), "sts", std::time::SystemTime::now()) {
        Ok(v) => v.caller,
        Err(e) => return auth_error(&e, request_id),
    };
    let mut pairs = crate::sqs::form_pairs(parts.uri.query().unwrap_or_default().as_bytes());
    pairs.extend(crate::sqs::form_pairs(&body));
    let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(action) = param("Action") else {
        return error(StatusCode::BAD_REQUEST, "MissingAction", "Missing Action", request_id);
    };
    let version = param("Version").unwrap_or_default();
    if action != "GetCallerIdentity" || version != VERSION {
        let message = format!("Could not find operation {action} for version {version}");
        return error(StatusCode::BAD_REQUEST, "InvalidAction", &message, request_id);
    }
    let identity = identity(api, &caller).await;
    tracing::debug!(arn = %identity.arn, "sts GetCallerIdentity");
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId>\
         <Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>{request_id}</RequestId>\
         </ResponseMetadata></GetCallerIdentityResponse>",
        crate::sqs::wire::escape(&identity.arn),
        crate::sqs::wire::escape(&identity.user_id),
        identity.account,
    );
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

/// What GetCallerIdentity answers.
struct Identity {
    arn: String,
    user_id: String,
    account: String,
}

/// The caller as AWS would name it: the root user for the node's key pair;
/// for session credentials, their function's or task's role, assumed under
/// the function's name or the task's id (as Lambda and ECS name their
/// sessions).
async fn identity(api: &Api, caller: &Caller) -> Identity {
    let account = api.control.account();
    let Caller::Session { subject } = caller else {
        return Identity {
            arn: format!("arn:aws:iam::{}:root", account.id),
            user_id: account.id.clone(),
            account: account.id.clone(),
        };
    };
    // Minted for the ARN the function was invoked by, which may be
    // qualified; the session is named after the function alone.
    let function = match subject.contains(":function:") {
        true => nimbus_core::arn::FunctionRef::parse(account, subject, None).ok(),
        false => None,
    };
    let (role, session) = match function {
        Some(f) => {
            let role = api.control.get_function(&f.name, None).await.ok().map(|(_, c)| c.latest.role);
            (role, f.name)
        }
        None => {
            let task_id = subject.rsplit('/').next().unwrap_or(subject);
            let role = match &api.ecs {
                Some(ecs) => ecs.task_role(task_id).await,
                None => None,
            };
            (role, task_id.to_string())
        }
    };
    // A role ARN's name is its last path segment (`role/path/name`); a
    // function whose role is gone still ran as it.
    let role_name = role.as_deref().and_then(|r| r.rsplit('/').next()).unwrap_or("nimbus-session").to_string();
    Identity {
        arn: format!("arn:aws:sts::{}:assumed-role/{role_name}/{session}", account.id),
        user_id: format!("{}:{session}", role_id(&account.id, &role_name)),
        account: account.id.clone(),
    }
}

/// A role's unique id (`AROA` and 17 characters): stable for a role name,
/// as AWS's is for the life of a role.
fn role_id(account: &str, role: &str) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = sha2::Sha256::digest(format!("{account}/{role}").as_bytes());
    let tail: String = digest.iter().take(17).map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect();
    format!("AROA{tail}")
}

fn auth_error(e: &AuthError, request_id: &str) -> Response {
    let (status, code) = crate::sqs::auth_code(e);
    error(status, code, &e.to_string(), request_id)
}

/// STS's error document (the query protocol's `ErrorResponse`).
fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message>\
         </Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        crate::sqs::wire::escape(message)
    );
    (status, [("content-type", "text/xml")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_id_is_stable_and_shaped_as_aws_s() {
        let id = role_id("123456789012", "lambda-role");
        assert_eq!(id, role_id("123456789012", "lambda-role"));
        assert_ne!(id, role_id("123456789012", "other-role"));
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("AROA") && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    }
}
