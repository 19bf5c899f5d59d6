//! Function URLs on the data plane: which function and qualifier a URL id
//! serves, and whether its resource policy lets anyone call it. The HTTP
//! front end (payload format 2.0, CORS, response mapping) is `nimbus-api`'s;
//! the invocation itself is the ordinary [`Control::invoke`].

use nimbus_core::function::{Statement, UrlConfig};

use crate::*;

/// The URL a request addressed, as stored.
#[derive(Debug, Clone)]
pub struct UrlTarget {
    pub function: String,
    /// The alias the URL belongs to; `None` is the unqualified function.
    pub qualifier: Option<String>,
    pub config: UrlConfig,
    /// Whether the resource policy grants `lambda:InvokeFunctionUrl` to
    /// everyone for auth type NONE; unsigned calls need it.
    pub public: bool,
}

impl Control {
    /// Looks up a function URL by its id; `None` when no URL has that id.
    pub async fn function_url(&self, url_id: &str) -> Result<Option<UrlTarget>> {
        let Some((name, key)) = self.meta.function_url(url_id).await? else {
            return Ok(None);
        };
        let Some(f) = self.meta.get_function(&name).await? else {
            return Ok(None);
        };
        let Some(config) = f.url_configs.get(&key).filter(|u| u.url_id == url_id).cloned() else {
            return Ok(None);
        };
        let qualifier = (!key.is_empty()).then_some(key);
        let public = f.policy.iter().any(|s| s.qualifier == qualifier && grants_public_url(s));
        Ok(Some(UrlTarget { function: name, qualifier, config, public }))
    }
}

/// An `Allow` of `lambda:InvokeFunctionUrl` (or a wildcard covering it) to
/// principal `*`, conditioned on `lambda:FunctionUrlAuthType` = `NONE`: what
/// `add-permission --function-url-auth-type NONE` writes, and what AWS
/// requires before it serves a URL to unsigned callers.
fn grants_public_url(s: &Statement) -> bool {
    let j = &s.json;
    let action_ok = match &j["Action"] {
        serde_json::Value::String(a) => covers(a),
        serde_json::Value::Array(list) => list.iter().filter_map(|a| a.as_str()).any(covers),
        _ => false,
    };
    let principal_ok = j["Principal"] == "*" || j["Principal"]["AWS"] == "*";
    let condition_ok = j["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"] == "NONE";
    j["Effect"] == "Allow" && action_ok && principal_ok && condition_ok
}

fn covers(action: &str) -> bool {
    matches!(action, "lambda:InvokeFunctionUrl" | "lambda:*" | "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(json: serde_json::Value) -> Statement {
        Statement { sid: "s".into(), qualifier: None, json }
    }

    #[test]
    fn only_a_conditioned_public_grant_opens_a_url() {
        let grant = serde_json::json!({
            "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunctionUrl",
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        });
        assert!(grants_public_url(&statement(grant.clone())));
        for (field, value) in [
            ("Action", serde_json::json!("lambda:InvokeFunction")),
            ("Principal", serde_json::json!({"AWS": "123456789012"})),
            ("Effect", serde_json::json!("Deny")),
            ("Condition", serde_json::json!({"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}})),
        ] {
            let mut s = grant.clone();
            s[field] = value;
            assert!(!grants_public_url(&statement(s)), "{field}");
        }
    }
}
