//! What event sources ask of the Lambda side: whether a function's resource
//! policy lets a service invoke it for a source (as AWS checks when a
//! trigger is configured), and a nudge for the asynchronous dispatcher when
//! a source has queued events in the outbox.

use nimbus_core::function::Statement;

use crate::*;

impl Control {
    /// Whether `function_arn` names an existing function (or alias) whose
    /// policy lets `service` (e.g. `s3.amazonaws.com`) invoke it for
    /// `source_arn`, honouring `AWS:SourceArn` and `AWS:SourceAccount`.
    pub async fn service_may_invoke(&self, function_arn: &str, service: &str, source_arn: &str) -> bool {
        let Ok(r) = self.parse_ref(function_arn, None) else {
            return false;
        };
        let Ok(f) = self.function(&r.name).await else {
            return false;
        };
        let key = r.qualifier.as_ref().map(ToString::to_string).filter(|q| q != nimbus_core::function::LATEST);
        if let Some(alias) = &key {
            if !f.aliases.contains_key(alias) && alias.parse::<u64>().is_err() {
                return false;
            }
        }
        let account = &self.account().id;
        f.policy.iter().filter(|s| s.qualifier == key).any(|s| grants(s, service, source_arn, account))
    }

    /// Events were queued for asynchronous delivery.
    pub fn wake_async(&self) {
        self.async_wake.notify_one();
    }
}

fn grants(s: &Statement, service: &str, source_arn: &str, account: &str) -> bool {
    let j = &s.json;
    let action = |a: &serde_json::Value| matches!(a.as_str(), Some("lambda:InvokeFunction" | "lambda:*" | "*"));
    let action_ok = match &j["Action"] {
        serde_json::Value::Array(list) => list.iter().any(action),
        a => action(a),
    };
    let principal_ok = j["Principal"] == "*" || j["Principal"]["Service"] == service;
    let source_ok = j["Condition"]["ArnLike"]["AWS:SourceArn"].as_str().is_none_or(|p| arn_like(p, source_arn));
    let account_ok = j["Condition"]["StringEquals"]["AWS:SourceAccount"].as_str().is_none_or(|a| a == account);
    j["Effect"] == "Allow" && action_ok && principal_ok && source_ok && account_ok
}

/// IAM's `ArnLike`: `*` matches any run of characters, `?` any one.
fn arn_like(pattern: &str, arn: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_grant_honours_its_conditions() {
        let s = |json: serde_json::Value| Statement { sid: "s".into(), qualifier: None, json };
        let grant = serde_json::json!({
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction",
            "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::photos-*"},
                          "StringEquals": {"AWS:SourceAccount": "123456789012"}},
        });
        assert!(grants(&s(grant.clone()), "s3.amazonaws.com", "arn:aws:s3:::photos-raw", "123456789012"));
        assert!(!grants(&s(grant.clone()), "s3.amazonaws.com", "arn:aws:s3:::docs", "123456789012"));
        assert!(!grants(&s(grant.clone()), "s3.amazonaws.com", "arn:aws:s3:::photos-raw", "999999999999"));
        assert!(!grants(&s(grant), "sqs.amazonaws.com", "arn:aws:s3:::photos-raw", "123456789012"));
        assert!(arn_like("arn:aws:s3:::b?", "arn:aws:s3:::b1") && !arn_like("arn:aws:s3:::b?", "arn:aws:s3:::b12"));
    }
}
